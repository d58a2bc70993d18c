"""The AsyncAPI document: valid for the AsyncAPI project's parser, complete for the app's topics.

The parser (npm packages, pinned in deploy/tools/install.sh) is installed by
`bash deploy/tools/install.sh asyncapi`, which `make deploy-check` runs; CI (CI=true) fails
instead of skipping when it is missing.
"""

from __future__ import annotations

import copy
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "deploy" / "check"))
import deploycheck as dc  # noqa: E402  (deploy/check is not a package)

PARSER = dc.find_tool("asyncapi")
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
needs_parser = pytest.mark.skipif(
    PARSER is None and not IN_CI,
    reason="the AsyncAPI parser is not installed: run `bash deploy/tools/install.sh asyncapi`")


def document() -> dict[str, Any]:
    doc: dict[str, Any] = yaml.safe_load(dc.ASYNCAPI.read_text(encoding="utf-8"))
    return doc


def validate(doc: dict[str, Any], tmp_path: Path) -> subprocess.CompletedProcess[str]:
    """Validate a variant of the document from beside the real one, so its $refs resolve."""
    path = dc.ASYNCAPI.parent / f".{tmp_path.name}.asyncapi.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False), encoding="utf-8")
    try:
        return dc.run(["node", str(dc.HERE / "asyncapi_validate.cjs"), dc.need_tool("asyncapi"),
                       str(path)])
    finally:
        path.unlink()


@needs_parser
def test_the_shipped_document_passes_the_contract_step() -> None:
    assert dc.step_contract() == []


@needs_parser
def test_the_parser_rejects_a_broken_document_and_a_missing_schema(tmp_path: Path) -> None:
    doc = document()
    broken = copy.deepcopy(doc)
    broken["operations"]["consumeRaw"]["action"] = "publish"  # AsyncAPI 2 wording
    result = validate(broken, tmp_path)
    assert result.returncode == 1
    assert '"action" property must be equal to one of the allowed values' in result.stdout
    missing = copy.deepcopy(doc)
    missing["components"]["messages"]["InstanceEvent"]["payload"]["schema"]["$ref"] = \
        "../avro/Missing.avsc"
    result = validate(missing, tmp_path)
    assert result.returncode == 1
    assert "Missing.avsc" in result.stdout


def test_every_topic_of_the_app_is_a_channel() -> None:
    doc = document()
    assert dc.contract_topics(doc) == []
    del doc["channels"]["deadLetters"]
    assert dc.contract_topics(doc) == [
        "docs/asyncapi.yaml: no channel for the DLQ topic vm.events.dlq"]


def test_payload_schemas_are_the_shipped_avro_files() -> None:
    messages = document()["components"]["messages"]
    refs = {name: m["payload"]["schema"]["$ref"] for name, m in messages.items()
            if isinstance(m.get("payload"), dict) and "schemaFormat" in m["payload"]}
    assert refs == {"InstanceEvent": "../avro/InstanceEvent.avsc",
                    "OperationOutcome": "../avro/OperationOutcome.avsc",
                    "OpenOperation": "../avro/OpenOperation.avsc"}
    for ref in refs.values():
        assert (dc.ASYNCAPI.parent / ref).is_file()
