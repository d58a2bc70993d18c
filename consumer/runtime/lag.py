"""Consumer lag and freshness of one stage, from librdkafka's statistics and the records processed.

librdkafka's own ``consumer_lag`` is the end offset minus the consumer's *committed* offset. The
stages commit their input offsets through the producer (``send_offsets_to_transaction``), which the
consumer never learns about, so that figure stays -1 for ever under exactly-once. The lag here is
the end offset minus the position the application has consumed up to:

- end: ``ls_offset`` (last stable offset) under ``read_committed``, else ``hi_offset``;
- position: the offset the stage last committed for the partition, i.e. what it has processed
  (records consumed but still held by the timestamp alignment are not processed: librdkafka's
  ``app_offset`` counts them); before its first commit, the group's committed offset read at
  assignment, where consumption resumes, or the log start where nothing is committed (the
  stages' ``auto.offset.reset=earliest``); failing both, ``app_offset``. A partition with none
  of these has no sample rather than a guessed one.

A statistics callback (every ``statistics.interval.ms``, 15 s by default) sets
``vmevents_consumer_lag{stage,topic,partition}`` for the partitions this member has assigned.
Freshness, ``vmevents_event_age_seconds{stage}``, is how old the newest record of the last batch
was when the batch was processed (its Kafka timestamp against the wall clock).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import structlog
from confluent_kafka import (
    TIMESTAMP_NOT_AVAILABLE,
    Consumer,
    KafkaException,
    Message,
    TopicPartition,
)

from consumer.metrics import Metrics

log = structlog.get_logger(__name__)

PartitionLag = dict[tuple[str, int], int]
FROM_START = -1
"""A resume position: nothing committed, so consumption starts at the log start."""


def partition_lags(stats: Mapping[str, Any], *, read_committed: bool = True,
                   resume: Mapping[tuple[str, int], int] | None = None,
                   processed: Mapping[tuple[str, int], int] | None = None) -> PartitionLag:
    """``{(topic, partition): lag}`` for every partition the consumer fetches (pure).

    ``processed``: the offset the stage last committed per partition. ``resume``: the committed
    offset of each partition at assignment (or :data:`FROM_START`), the position until the
    stage commits one of its own.
    """
    resume = resume or {}
    processed = processed or {}
    end_key = "ls_offset" if read_committed else "hi_offset"
    lags: PartitionLag = {}
    for topic, tstats in stats.get("topics", {}).items():
        for pid, p in tstats.get("partitions", {}).items():
            if pid == "-1" or p.get("fetch_state") != "active":
                continue  # the unassigned-messages pseudo partition, or not fetching (yet)
            end = p.get(end_key, -1)
            key = (topic, int(pid))
            position = processed.get(key, -1)
            if position < 0:
                start = resume.get(key)
                if start == FROM_START:
                    position = p.get("lo_offset", -1)
                elif start is not None:
                    position = start
                else:
                    position = p.get("app_offset", -1)
            if end < 0 or position < 0:
                continue  # no watermark from the broker, or no position, yet
            lags[(topic, int(pid))] = max(0, end - position)
    return lags


class LagMonitor:
    """Feeds a stage's lag and freshness gauges; both hooks run on the stage loop's thread."""

    def __init__(self, metrics: Metrics, stage: str, *, read_committed: bool = True,
                 clock: Callable[[], float] = time.time) -> None:
        self.metrics = metrics
        self.stage = stage
        self.read_committed = read_committed
        self.clock = clock
        self.assigned: set[tuple[str, int]] = set()
        self.resume: dict[tuple[str, int], int] = {}
        self.processed: dict[tuple[str, int], int] = {}

    def assign(self, consumer: Consumer, partitions: Sequence[TopicPartition]) -> None:
        """Note the new partitions and where they resume (one committed-offsets request)."""
        self.assigned.update((tp.topic, tp.partition) for tp in partitions)
        try:
            committed = consumer.committed(list(partitions), timeout=10)  # bounded: a callback
        except KafkaException as exc:
            log.warning("committed offsets unknown: lag from the first record on",
                        stage=self.stage, error=str(exc))
            return
        for tp in committed:
            if tp.error is None:
                self.resume[(tp.topic, tp.partition)] = max(tp.offset, FROM_START)

    def revoke(self, partitions: Sequence[TopicPartition]) -> None:
        gauge = self.metrics.consumer_lag
        for tp in partitions:
            self.assigned.discard((tp.topic, tp.partition))
            self.resume.pop((tp.topic, tp.partition), None)
            self.processed.pop((tp.topic, tp.partition), None)
            with contextlib.suppress(KeyError):  # no statistics arrived for it yet
                gauge.remove(self.stage, tp.topic, str(tp.partition))

    def on_stats(self, stats: Mapping[str, Any]) -> None:
        gauge = self.metrics.consumer_lag
        for (topic, partition), lag in partition_lags(
                stats, read_committed=self.read_committed, resume=self.resume,
                processed=self.processed).items():
            if (topic, partition) in self.assigned:
                gauge.labels(self.stage, topic, str(partition)).set(lag)

    def committed(self, offsets: Sequence[TopicPartition]) -> None:
        """The offsets a batch's commit carried: where the stage's processing stands."""
        for tp in offsets:
            if tp.offset >= 0:
                self.processed[(tp.topic, tp.partition)] = tp.offset

    def on_batch(self, records: Sequence[Message]) -> None:
        """Age of the newest record of a processed batch, in seconds (0 when from the future)."""
        newest = -1
        for m in records:
            kind, ts = m.timestamp()
            if kind != TIMESTAMP_NOT_AVAILABLE and ts > newest:
                newest = ts
        if newest >= 0:
            age = max(0.0, self.clock() - newest / 1000.0)
            self.metrics.event_age.labels(self.stage).set(age)
