"""Consumer lag and freshness of one stage, from librdkafka's statistics and the records processed.

librdkafka's own ``consumer_lag`` is the end offset minus the consumer's *committed* offset. The
stages commit their input offsets through the producer (``send_offsets_to_transaction``), which the
consumer never learns about, so that figure stays -1 for ever under exactly-once. The lag here is
the end offset minus the position the application has consumed up to:

- end: ``ls_offset`` (last stable offset) under ``read_committed``, else ``hi_offset``;
- position: ``app_offset`` (next offset the application will get); before the first record of a
  partition reaches the application, the committed offset it resumes from, else the log start.

A statistics callback (every ``statistics.interval.ms``, 15 s by default) sets
``vmevents_consumer_lag{stage,topic,partition}`` for the partitions this member has assigned.
Freshness, ``vmevents_event_age_seconds{stage}``, is how old the newest record of the last batch
was when the batch was processed (its Kafka timestamp against the wall clock).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from confluent_kafka import TIMESTAMP_NOT_AVAILABLE, Message

from consumer.metrics import Metrics

PartitionLag = dict[tuple[str, int], int]


def partition_lags(stats: Mapping[str, Any], *, read_committed: bool = True) -> PartitionLag:
    """``{(topic, partition): lag}`` for every partition the consumer fetches (pure)."""
    end_key = "ls_offset" if read_committed else "hi_offset"
    lags: PartitionLag = {}
    for topic, tstats in stats.get("topics", {}).items():
        for pid, p in tstats.get("partitions", {}).items():
            if pid == "-1" or p.get("fetch_state") in (None, "none", "stopped", "stopping"):
                continue  # the unassigned-messages pseudo partition, or one we do not fetch
            end = p.get(end_key, -1)
            if end < 0:
                continue  # no watermark from the broker yet
            position = p.get("app_offset", -1)
            if position < 0:
                position = p.get("committed_offset", -1)
            if position < 0:
                position = p.get("lo_offset", -1)
            if position < 0:
                continue
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

    def assign(self, partitions: Iterable[tuple[str, int]]) -> None:
        self.assigned.update(partitions)

    def revoke(self, partitions: Iterable[tuple[str, int]]) -> None:
        gauge = self.metrics.consumer_lag
        for topic, partition in partitions:
            self.assigned.discard((topic, partition))
            with contextlib.suppress(KeyError):  # no statistics arrived for it yet
                gauge.remove(self.stage, topic, str(partition))

    def on_stats(self, stats: Mapping[str, Any]) -> None:
        gauge = self.metrics.consumer_lag
        for (topic, partition), lag in partition_lags(
                stats, read_committed=self.read_committed).items():
            if (topic, partition) in self.assigned:
                gauge.labels(self.stage, topic, str(partition)).set(lag)

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
