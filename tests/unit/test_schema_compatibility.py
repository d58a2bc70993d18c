"""Every .avsc reads the data of its last released version (avro/released/), without a registry.

The same rule the registry applies (BACKWARD) is checked by Avro schema resolution on records
that cover every enum symbol and union branch of the released schema; the registry's own
verdict is tests/integration/test_schema_registry_compatibility.py.
"""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest
from fastavro.read import SchemaResolutionError

from tests.schema_compat import AVRO, RELEASED, examples, read_old_with_new, released_pairs


def test_every_schema_has_a_released_version() -> None:
    assert {p.name for p in AVRO.glob("*.avsc")} == {p.name for p in RELEASED.glob("*.avsc")}


@pytest.mark.parametrize(("name", "old", "new"), released_pairs(),
                         ids=lambda v: v if isinstance(v, str) else "")
def test_current_schema_reads_released_data(name: str, old: dict[str, Any], new: dict[str, Any]) -> None:
    records = read_old_with_new(old, new)
    assert len(records) == len(examples(old)) >= 1
    new_fields = {f["name"] for f in new["fields"]} - {f["name"] for f in old["fields"]}
    for record in records:
        assert new_fields <= set(record)  # filled from their defaults


def outcome_schema() -> dict[str, Any]:
    schema: dict[str, Any] = json.loads((RELEASED / "OperationOutcome.avsc").read_text())
    return schema


def test_examples_cover_every_enum_symbol_and_union_branch() -> None:
    old = outcome_schema()
    records = examples(old)
    symbols = next(f["type"]["symbols"] for f in old["fields"] if f["name"] == "outcome")
    assert {r["outcome"] for r in records} == set(symbols)
    assert {r["duration_ms"] is None for r in records} == {True, False}


def test_added_field_with_default_and_added_enum_symbol_are_accepted() -> None:
    old = outcome_schema()
    new = copy.deepcopy(old)
    new["fields"].append({"name": "cloud_account", "type": ["null", "string"], "default": None})
    outcome = next(f for f in new["fields"] if f["name"] == "outcome")
    outcome["type"]["symbols"].append("rolled_back")
    assert all(r["cloud_account"] is None for r in read_old_with_new(old, new))


@pytest.mark.parametrize("change", ["field_without_default", "type_changed", "union_narrowed"])
def test_breaking_changes_are_refused(change: str) -> None:
    old = outcome_schema()
    new = copy.deepcopy(old)
    fields = {f["name"]: f for f in new["fields"]}
    if change == "field_without_default":
        new["fields"].append({"name": "cloud_account", "type": "string"})
    elif change == "type_changed":
        fields["instance_id"]["type"] = "long"
    else:
        fields["duration_ms"]["type"] = "long"
        del fields["duration_ms"]["default"]
    with pytest.raises(SchemaResolutionError):
        read_old_with_new(old, new)
