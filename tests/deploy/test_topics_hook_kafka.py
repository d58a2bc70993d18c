"""The chart's topics hook script against a real broker (the session's Apache Kafka).

deploy/helm/vmevents/files/create_topics.py runs in the vmevents image as a pre-install /
pre-upgrade Job; here it runs with the project's Python and the test broker, through its command
line (environment in, exit status out) exactly as the Job runs it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import KafkaStack

SCRIPT = Path(__file__).resolve().parents[2] / "deploy/helm/vmevents/files/create_topics.py"

pytestmark = pytest.mark.apache_kafka  # topic configs are read back; Tansu keeps none


def _run(spec: dict[str, Any], tmp_path: Path, bootstrap: str) -> subprocess.CompletedProcess[str]:
    path = tmp_path / "topics.json"
    path.write_text(json.dumps(spec), encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if not k.startswith("KAFKA_")}
    env.update({"KAFKA_BOOTSTRAP_SERVERS": bootstrap, "KAFKA_CLIENT_ID": "vmevents-topics-test"})
    return subprocess.run([sys.executable, str(SCRIPT), str(path)], capture_output=True, text=True,
                          env=env, timeout=120, check=False)


def _describe(kafka_stack: KafkaStack, names: list[str]) -> dict[str, tuple[int, dict[str, str]]]:
    from confluent_kafka.admin import AdminClient, ConfigResource, ResourceType

    admin = AdminClient(kafka_stack.client_config())
    meta = admin.list_topics(timeout=30).topics
    out = {}
    for name in names:
        res = ConfigResource(ResourceType.TOPIC, name)
        configs = admin.describe_configs([res])[res].result(30)
        out[name] = (len(meta[name].partitions), {k: v.value for k, v in configs.items()})
    return out


def test_hook_creates_topics_then_is_idempotent_and_refuses_a_mismatch(
        kafka_stack: KafkaStack, tmp_path: Path) -> None:
    n = kafka_stack.unique_name
    raw, normalized, dlq, changelog, outcomes = n("raw"), n("norm"), n("dlq"), n("chg"), n("out")
    spec: dict[str, Any] = {
        "replicationFactor": 1, "minInsyncReplicas": 1, "onPartitionMismatch": "fail",
        "raw": [{"name": raw, "partitions": 2, "create": True,
                 "config": {"retention.ms": "604800000"}}],
        "normalized": {"name": normalized, "partitions": 3, "config": {"retention.ms": "86400000"}},
        "dlq": {"name": dlq, "partitions": 1, "config": {"retention.ms": "1209600000"}},
        "changelog": {"name": changelog, "config": {"cleanup.policy": "compact",
                                                    "min.compaction.lag.ms": "3600000"}},
        "outcomes": {"singleTopic": outcomes, "partitions": 2},
    }
    first = _run(spec, tmp_path, kafka_stack.bootstrap)
    assert first.returncode == 0, first.stdout + first.stderr
    assert first.stdout.count('"topic created"') == 5

    got = _describe(kafka_stack, [raw, normalized, dlq, changelog, outcomes])
    assert got[raw][0] == 2
    assert got[normalized] == (3, got[normalized][1])
    assert got[normalized][1]["retention.ms"] == "86400000"
    assert got[dlq][1]["retention.ms"] == "1209600000"
    assert got[changelog][0] == 3  # always the normalized topic's partition count
    assert got[changelog][1]["cleanup.policy"] == "compact"
    assert got[changelog][1]["min.compaction.lag.ms"] == "3600000"
    assert got[outcomes][0] == 2

    again = _run(spec, tmp_path, kafka_stack.bootstrap)  # every helm upgrade runs it again
    assert again.returncode == 0, again.stdout + again.stderr
    assert '"topic created"' not in again.stdout

    spec["normalized"]["partitions"] = 6  # the values no longer describe the cluster
    wrong = _run(spec, tmp_path, kafka_stack.bootstrap)
    assert wrong.returncode == 1
    assert f"topic {normalized} has 3 partitions, the values say 6" in wrong.stdout
    assert f"topic {changelog} has 3 partitions, the values say 6" in wrong.stdout
