"""At once, then silence (issue #15).

With the production lateness (10 min), in-order JD Cloud pairs (no vendor event id) and Alibaba
pairs (with one) come out on ``failure.reboot.completed`` as soon as their end is processed: the
test would time out if they waited for the watermark. Then, with nothing coming in, neither stage
writes anything for a quiet minute: the end offsets of the changelog, the normalized topic, the
open-operations topic and the outcome topics (transaction markers included) do not move.
"""

from __future__ import annotations

import random
import signal
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Consumer, TopicPartition
from confluent_kafka.admin import AdminClient

from consumer.synthetic import aliyun_notification, jd_notification
from tests.integration.kafkatools import (
    fresh_stage_topics,
    produce,
    read_all,
    stage_env,
    start_stage,
    unique,
)
from tests.integration.test_correlate_stage import outcome_topics

pytestmark = [pytest.mark.kafka, pytest.mark.apache_kafka]

PAIRS = 40  # of each vendor
PARTITIONS = 3
QUIET_S = 60.0


def end_offsets(bootstrap: str, topics: list[str]) -> dict[tuple[str, int], int]:
    """High watermark of every partition of ``topics``: records and transaction markers."""
    meta = AdminClient({"bootstrap.servers": bootstrap}).list_topics(timeout=10).topics
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": unique("ends")})
    try:
        return {(t, p): consumer.get_watermark_offsets(TopicPartition(t, p), timeout=10)[1]
                for t in topics for p in meta[t].partitions}
    finally:
        consumer.close()


def test_pairs_decided_at_once_then_an_idle_stage_writes_nothing(kafka_stack: Any,
                                                                 tmp_path: Path) -> None:
    bootstrap = kafka_stack.bootstrap
    common = fresh_stage_topics(bootstrap, PARTITIONS)
    raw, prefix = common["VMEVENTS_RAW_TOPICS"], common["VMEVENTS_OUTCOME_TOPIC_PREFIX"]
    log = tmp_path / "stages.log"
    stages = [start_stage(stage, stage_env(bootstrap, **common), log)
              for stage in ("normalize", "correlate")]
    try:
        # Current times, each pair in order, spread over the raw partitions as a bridge would.
        rng = random.Random(15)
        now = datetime.now(UTC).replace(microsecond=0)
        records: list[tuple[bytes | None, bytes, int, int]] = []
        for i in range(PAIRS):
            start, end = now + timedelta(seconds=i), now + timedelta(seconds=i + 20)
            jd_start = jd_notification("SystemFailure.Reboot", "Executing", f"i-jd{i}", start,
                                       "cn-north-1", 2 * i)
            jd_end = jd_notification("SystemFailure.Reboot", "Executed", f"i-jd{i}", end,
                                     "cn-north-1", 2 * i + 1)
            ali_start = aliyun_notification("SystemFailure.Reboot", "Executing", f"i-al{i}",
                                            start, start, "cn-hangzhou", 2 * i, f"e-{i}")
            ali_end = aliyun_notification("SystemFailure.Reboot", "Executed", f"i-al{i}", end,
                                          start, "cn-hangzhou", 2 * i + 1, f"e-{i}")
            for value, when in ((jd_start, start), (ali_start, start)):
                records.append((None, value, int(when.timestamp() * 1000),
                                rng.randrange(PARTITIONS)))
            for value, when in ((jd_end, end), (ali_end, end)):
                records.append((None, value, int(when.timestamp() * 1000),
                                rng.randrange(PARTITIONS)))
        produce(bootstrap, raw, [r for r in records if b"Executing" in r[1]])
        produce(bootstrap, raw, [r for r in records if b"Executed" in r[1]])

        # Decided at once: every pair on the outcome topic long before the 10 min lateness.
        deadline = time.monotonic() + 90
        outcomes: list[Any] = []
        while len(outcomes) < 2 * PAIRS:
            assert time.monotonic() < deadline, f"{len(outcomes)} of {2 * PAIRS} decided"
            for proc in stages:
                assert proc.poll() is None, log.read_text()[-3000:]
            topics = outcome_topics(bootstrap, prefix)
            outcomes = read_all(bootstrap, topics, expected=2 * PAIRS, settle=0.5,
                                timeout=3) if topics else []
        assert {m.topic() for m in outcomes} == {f"{prefix}failure.reboot.completed"}
        assert len(outcomes) == 2 * PAIRS

        # Then silence: nothing written by either stage over a quiet minute.
        time.sleep(3)  # the batch that wrote the last outcome has committed its marker
        watched = [common["VMEVENTS_CHANGELOG_TOPIC"], common["VMEVENTS_NORMALIZED_TOPIC"],
                   common["VMEVENTS_OPEN_OPERATIONS_TOPIC"], *outcome_topics(bootstrap, prefix)]
        before = end_offsets(bootstrap, watched)
        time.sleep(QUIET_S)
        after = end_offsets(bootstrap, watched)
        moved = {tp: (before[tp], n) for tp, n in after.items() if before.get(tp) != n}
        assert moved == {}, f"an idle stage wrote: {moved}"
        for proc in stages:
            assert proc.poll() is None, log.read_text()[-3000:]
    finally:
        for proc in stages:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        codes = [proc.wait(60) for proc in stages]
    assert codes == [0, 0], log.read_text()[-3000:]
