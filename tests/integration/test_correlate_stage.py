"""The correlate stage against real Kafka: SIGKILLs, a consumer joining and leaving, read_committed.

Thousands of generated operations go through both stages. The correlate consumer is killed with
SIGKILL several times mid-stream and restarted (its pending state comes back from the changelog),
and a second consumer joins and later leaves the group (rebalances). A read_committed reader of
the derived topics must then see every operation exactly once, with the durations that the
offline ``vmevents correlate`` computes for the same input and that the generator knows.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import orjson
import pytest
from confluent_kafka.admin import AdminClient

from consumer import synthetic
from consumer.config import load_settings
from consumer.serde import Decoder, load_schemas
from tests.integration.kafkatools import (
    ROOT,
    committed_total,
    create_topics,
    produce,
    read_all,
    stage_env,
    start_stage,
    unique,
)
from tests.integration.test_normalize_stage import wait_for

pytestmark = [pytest.mark.kafka, pytest.mark.apache_kafka]

OPS = 3000


def outcome_topics(bootstrap: str, prefix: str) -> list[str]:
    return sorted(t for t in AdminClient({"bootstrap.servers": bootstrap}).list_topics(timeout=10).topics
                  if t.startswith(prefix))


def op_key(o: dict[str, Any]) -> tuple[str, str, str]:
    return (o["vendor"], o["instance_id"], o["vendor_event_code"])


def test_every_operation_exactly_once_through_kills_and_rebalances(kafka_stack: Any, tmp_path: Path) -> None:
    bootstrap = kafka_stack.bootstrap
    raw, normalized, dlq, changelog = unique("raw"), unique("normalized"), unique("dlq"), unique("changelog")
    prefix = f"{unique('out')}."
    create_topics(bootstrap, {raw: 4, normalized: 4, dlq: 1})
    create_topics(bootstrap, {changelog: 4}, {"cleanup.policy": "compact"})
    ops = synthetic.operations(OPS, instances=400, seed=3)
    keyed = synthetic.keyed_stream(ops, late_start=0.1)  # keyed by instance, 10% Executed first
    values = [value for _, value in keyed]
    produce(bootstrap, raw, keyed)

    common = {"VMEVENTS_RAW_TOPICS": raw, "VMEVENTS_NORMALIZED_TOPIC": normalized,
              "VMEVENTS_DLQ_TOPIC": dlq, "VMEVENTS_CHANGELOG_TOPIC": changelog,
              "VMEVENTS_OUTCOME_TOPIC_PREFIX": prefix,
              "VMEVENTS_NORMALIZE_GROUP": unique("norm"), "VMEVENTS_CORRELATE_GROUP": unique("corr"),
              "VMEVENTS_BATCH_SIZE": "200",
              # A quiet partition releases its last pairs this long after the last arrival.
              "VMEVENTS_CORRELATE_ALLOWED_LATENESS": "20s"}
    env_norm = stage_env(bootstrap, **common, VMEVENTS_TRANSACTIONAL_ID=unique("txn-n"))
    env_a = stage_env(bootstrap, **common, VMEVENTS_TRANSACTIONAL_ID=unique("txn-a"))
    env_b = stage_env(bootstrap, **common, VMEVENTS_TRANSACTIONAL_ID=unique("txn-b"))
    group = common["VMEVENTS_CORRELATE_GROUP"]
    log = tmp_path / "stages.log"

    normalize = start_stage("normalize", env_norm, log)
    correlate = start_stage("correlate", env_a, log)
    second = None
    try:
        kills = 0
        for fraction in (0.15, 0.35, 0.55):
            target = int(len(values) * fraction)
            wait_for(lambda t=target: committed_total(bootstrap, group, normalized) >= t, 180,
                     f"{target} normalized records committed by correlate", correlate)
            if fraction == 0.35:
                second = start_stage("correlate", env_b, log)  # joins: the group rebalances
            correlate.send_signal(signal.SIGKILL)
            correlate.wait(10)
            kills += 1
            correlate = start_stage("correlate", env_a, log)
        target = int(len(values) * 0.75)
        wait_for(lambda: committed_total(bootstrap, group, normalized) >= target, 180, "75%", correlate)
        assert second is not None
        # Running, its signals handled (a fast run reaches 75% before a loaded machine has
        # started it: SIGTERM then found the interpreter still importing).
        txn_b = env_b["VMEVENTS_TRANSACTIONAL_ID"]
        wait_for(lambda: any('"stage started"' in line and txn_b in line
                             for line in log.read_text().splitlines()), 120,
                 "the second correlate process started", second)
        second.send_signal(signal.SIGTERM)  # leaves gracefully: another rebalance
        assert second.wait(60) == 0
        decoder = Decoder(load_schemas(load_settings({}).schema_dir))
        outcomes: list[dict[str, Any]] = []

        def all_outcomes_seen() -> bool:
            topics = outcome_topics(bootstrap, prefix)
            records = read_all(bootstrap, topics, settle=2, timeout=30) if topics else []
            outcomes[:] = [decoder.decode(m.value()) for m in records]
            return sum(o["outcome"] != "timed_out" for o in outcomes) >= OPS

        try:
            wait_for(all_outcomes_seen, 240, f"{OPS} outcomes", correlate)
        except AssertionError as exc:
            kinds = Counter(o["outcome"] for o in outcomes)
            raise AssertionError(f"{exc}: saw {len(outcomes)} {dict(kinds)}; "
                                 f"{log.read_text()[-4000:]}") from None
        time.sleep(3)  # anything extra (a duplicate) would arrive now
        all_outcomes_seen()
    finally:
        for proc in (normalize, correlate, second):
            if proc is not None and proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in (normalize, correlate, second):
            if proc is not None:
                proc.wait(60)
    assert normalize.returncode == 0
    assert correlate.returncode == 0, log.read_text()[-3000:]

    # The raw partitions are read in no particular order, so the normalized stream can be out of
    # order by more than the allowed lateness: an operation may then be alerted timed_out before
    # its end arrives, and its real outcome follows (after_timeout). That is one operation.
    kinds = Counter((o["outcome"], o["after_timeout"]) for o in outcomes)
    finals = [o for o in outcomes if o["outcome"] != "timed_out"]
    alerts = Counter((op_key(o), o["started_at"]) for o in outcomes if o["outcome"] == "timed_out")
    counts = Counter((op_key(o), o["started_at"]) for o in finals)
    duplicates = [k for k, n in counts.items() if n > 1]
    assert not duplicates, f"{len(duplicates)} operations emitted twice after {kills} kills: {kinds}"
    assert len(finals) == OPS, kinds
    assert {o["outcome"] for o in finals} == {"completed"}, kinds
    late = Counter((op_key(o), o["started_at"]) for o in finals if o["after_timeout"])
    assert alerts == late, kinds
    topics = outcome_topics(bootstrap, prefix)
    assert f"{prefix}failure.reboot.completed" in topics

    truth = {(op.vendor, op.instance_id, op.code, op.started_ms): op.duration_ms for op in ops}
    online = {(*op_key(o), o["started_at"]): o["duration_ms"] for o in finals}
    assert online == truth

    raw_file = tmp_path / "raw.jsonl"
    raw_file.write_bytes(b"\n".join(values) + b"\n")
    offline = subprocess.run([sys.executable, "-m", "consumer.cli", "correlate", str(raw_file)],
                             capture_output=True, check=True, cwd=ROOT, timeout=120)
    offline_outcomes = [orjson.loads(line) for line in offline.stdout.splitlines()]
    assert len(offline_outcomes) == OPS
    offline_durations = Counter((o["vendor"], o["instance_id"], o["vendor_event_code"], o["duration_ms"])
                                for o in offline_outcomes)
    online_durations = Counter((*op_key(o), o["duration_ms"]) for o in finals)
    assert online_durations == offline_durations
    text = log.read_text()
    assert "state restored" in text
    assert text.count("partitions assigned") >= 5
