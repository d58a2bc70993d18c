"""A six-partition backlog through both stages: read aligned, it stays in event-time order.

Thousands of generated operations (JD and Alibaba pairs) are produced BEFORE the stages start,
under random keys across 6 raw partitions, each record stamped with its delivery time (event
time plus up to a minute of jitter, one instance's notifications kept in order). Read partition
after partition, as a consumer catching up hands them over, one instance's events would reach
the normalized topic hours apart; aligned by record timestamp they come out in delivery order.
The derived topics must then equal the offline ``vmevents correlate`` of the same events in
delivery order, record for record.
"""

from __future__ import annotations

import subprocess
import sys
import uuid
from collections import Counter, defaultdict
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest
from confluent_kafka import Message

from consumer import synthetic
from consumer.config import load_settings
from consumer.jsonout import timestamp_fields, to_json_line
from consumer.serde import Decoder, load_schemas
from tests.integration.kafkatools import (
    ROOT,
    create_topics,
    produce,
    read_all,
    stage_env,
    start_stage,
    unique,
)
from tests.integration.test_correlate_stage import outcome_topics
from tests.integration.test_normalize_stage import wait_for

pytestmark = [pytest.mark.kafka, pytest.mark.apache_kafka]

OPS = 2500
PARTITIONS = 6
JITTER_MS = 60_000
# Fields that say when or from where online, not what happened: decided_at is the processing
# clock online and the newest event time offline; sources name Kafka offsets only online.
PROCESSING_FIELDS = ("decided_at", "sources")


def backwards_jumps(records: list[Message], decoder: Decoder) -> list[int]:
    """Per record, how far its event time lies before the newest one earlier in its partition."""
    by_partition: dict[int, list[Message]] = defaultdict(list)
    for m in records:
        by_partition[m.partition() or 0].append(m)
    jumps = []
    for msgs in by_partition.values():
        newest = 0
        for m in sorted(msgs, key=lambda m: m.offset() or 0):
            t = decoder.decode(m.value() or b"")["event_time"]
            jumps.append(max(0, newest - t))
            newest = max(newest, t)
    return jumps


def comparable(outcome: dict[str, Any], ts_fields: frozenset[str]) -> bytes:
    """One outcome as offline JSON, without the processing fields."""
    record = orjson.loads(to_json_line(outcome, ts_fields))
    for name in PROCESSING_FIELDS:
        record.pop(name, None)
    return orjson.dumps(record, option=orjson.OPT_SORT_KEYS)


def test_six_partition_backlog_stays_in_event_time_order(kafka_stack: Any, tmp_path: Path) -> None:
    bootstrap = kafka_stack.bootstrap
    raw, normalized, dlq, changelog = unique("raw"), unique("normalized"), unique("dlq"), unique("changelog")
    prefix = f"{unique('out')}."
    create_topics(bootstrap, {raw: PARTITIONS, normalized: PARTITIONS, dlq: 1})
    create_topics(bootstrap, {changelog: PARTITIONS}, {"cleanup.policy": "compact"})
    # Recent event times: record timestamps older than the topic's retention would be deleted.
    base = datetime.now(UTC).replace(microsecond=0) - timedelta(days=1)
    ops = synthetic.operations(OPS, instances=400, seed=5, base=base)
    deliveries = synthetic.delivered(ops, max_jitter_ms=JITTER_MS)
    produce(bootstrap, raw, [(uuid.uuid4().bytes, value, at) for at, value in deliveries])

    common = {"VMEVENTS_RAW_TOPICS": raw, "VMEVENTS_NORMALIZED_TOPIC": normalized,
              "VMEVENTS_DLQ_TOPIC": dlq, "VMEVENTS_CHANGELOG_TOPIC": changelog,
              "VMEVENTS_OUTCOME_TOPIC_PREFIX": prefix,
              "VMEVENTS_NORMALIZE_GROUP": unique("norm"), "VMEVENTS_CORRELATE_GROUP": unique("corr"),
              # A quiet partition releases the reorder buffer after this much processing time.
              "VMEVENTS_CORRELATE_ALLOWED_LATENESS": "20s"}
    log = tmp_path / "stages.log"
    stages = [start_stage(stage, stage_env(bootstrap, **common,
                                           VMEVENTS_TRANSACTIONAL_ID=unique(f"txn-{stage}")), log)
              for stage in ("normalize", "correlate")]

    raw_file = tmp_path / "raw.jsonl"
    raw_file.write_bytes(b"\n".join(value for _, value in deliveries) + b"\n")
    offline = subprocess.run([sys.executable, "-m", "consumer.cli", "correlate", str(raw_file)],
                             capture_output=True, check=True, cwd=ROOT, timeout=120)
    schemas = load_schemas(load_settings({}).schema_dir)
    ts_fields = timestamp_fields(schemas["OperationOutcome"].raw)
    expected = Counter(comparable(orjson.loads(line), ts_fields)
                       for line in offline.stdout.splitlines())
    assert sum(expected.values()) == OPS  # every generated operation, once

    decoder = Decoder(schemas)
    online: Counter[bytes] = Counter()
    try:
        def all_outcomes_seen() -> bool:
            topics = outcome_topics(bootstrap, prefix)
            records = read_all(bootstrap, topics, settle=1, timeout=20) if topics else []
            online.clear()
            online.update(comparable(decoder.decode(m.value() or b""), ts_fields) for m in records)
            return sum(online.values()) >= OPS

        wait_for(all_outcomes_seen, 120, f"{OPS} outcomes", stages[1])
        normalized_records = read_all(bootstrap, [normalized], expected=2 * OPS, settle=1)
        all_outcomes_seen()  # again: a duplicate would have arrived by now
    finally:
        for proc in stages:
            proc.terminate()
        for proc in stages:
            proc.wait(60)

    jumps = sorted(backwards_jumps(normalized_records, decoder))
    worst, p99 = jumps[-1], jumps[int(len(jumps) * 0.99)]
    print(f"\n{normalized}: {len(jumps)} records; event-time backwards jump per partition: "
          f"max {worst / 1000:.1f} s, p99 {p99 / 1000:.1f} s")
    assert len(jumps) == 2 * OPS
    # Released in delivery order, so disorder in event time is at most the delivery jitter.
    assert worst <= JITTER_MS, f"max backwards jump {worst} ms"
    assert [p.returncode for p in stages] == [0, 0], log.read_text()[-3000:]
    assert online == expected
