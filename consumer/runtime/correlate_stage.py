"""Stage ``correlate``: normalized events in, operation outcomes out, pending state in a changelog.

One pure :class:`~consumer.correlator.Correlator` per assigned input partition. Its changelog
writes go to the same partition number of the compacted changelog topic, in the same transaction
as the outcomes and the input offsets, so the state on the changelog always matches the committed
input position.

Rebalance protocol:

1. Assign: for the new partitions, read the changelog partitions from the beginning up to the
   last stable offset (read_committed) into fresh correlators; readiness is false meanwhile and
   the restore time is a metric.
2. Revoke / lost: drop those correlators. Nothing to commit: the loop never has a transaction open
   while the consumer serves rebalance callbacks.
3. Abort: each correlator rolls back the keys the aborted batch changed to their values at the
   last commit point (:meth:`~consumer.correlator.Correlator.rollback`); nothing is re-read. A
   commit point is taken when the next batch starts: reaching it means the previous
   transaction committed (an abort calls ``on_abort`` first).
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any

import structlog
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, Message, TopicPartition

from consumer.config import Settings
from consumer.correlator import UNKNOWN_OPERATION, Correlator, CorrelatorConfig, Outcome
from consumer.metrics import Metrics
from consumer.model import InstanceEvent
from consumer.runtime.loop import Emit
from consumer.serde import Decoder, Encoder, SerdeError

log = structlog.get_logger(__name__)

STAGE = "correlate"


def outcome_topic(settings: Settings, outcome: Outcome) -> str:
    """``failure.reboot.completed`` (plus the configured prefix), or the single topic.

    Unknown vendor codes go to ``unknown.<outcome>``: the set of topics stays the one the topics
    Job creates (:func:`consumer.correlator.outcome_operations`).
    """
    if settings.outcome_single_topic:
        return settings.outcome_single_topic
    operation = outcome["operation"] if outcome["known"] else UNKNOWN_OPERATION
    return f"{settings.outcome_topic_prefix}{operation}.{outcome['outcome']}"


def wall_clock_ms() -> int:
    return time.time_ns() // 1_000_000


class CorrelateProcessor:
    stage = STAGE

    def __init__(self, settings: Settings, config: CorrelatorConfig, decoder: Decoder,
                 encoder_for: Callable[[str], Encoder], metrics: Metrics,
                 clock: Callable[[], int] = wall_clock_ms,
                 heartbeat: Callable[[], None] = lambda: None) -> None:
        """``encoder_for(topic)`` is called once per outcome topic (it may create the topic and
        register the schema under the topic's subject); its encoder is reused after that."""
        self.settings = settings
        self.config = config
        self.decoder = decoder
        self.encoder_for = encoder_for
        self.metrics = metrics
        self.clock = clock
        self.heartbeat = heartbeat
        self.correlators: dict[int, Correlator] = {}
        self._encoders: dict[str, Encoder] = {}
        self._routes: dict[tuple[str, str], tuple[str, Encoder]] = {}

    # -- rebalance -------------------------------------------------------------------------

    def on_assign(self, consumer: Consumer, partitions: Sequence[TopicPartition]) -> None:
        self._restore([p.partition for p in partitions])

    def on_revoke(self, partitions: Sequence[TopicPartition]) -> None:
        for p in partitions:
            self.correlators.pop(p.partition, None)
            self.metrics.pending.labels(str(p.partition)).set(0)

    def on_abort(self, consumer: Consumer) -> None:
        """Undo the aborted batch in memory: only the correlators and keys it touched."""
        rolled: dict[int, int] = {}
        for p, correlator in self.correlators.items():
            if correlator.touched:
                rolled[p] = correlator.rollback()
                self._export_state(p, correlator)
        log.info("aborted batch rolled back", partitions=sorted(rolled),
                 keys=sum(rolled.values()))

    def _restore(self, partitions: list[int]) -> None:
        started = time.perf_counter()
        fresh = {p: Correlator(self.config, self.clock) for p in partitions}
        records = read_changelog(self.settings, partitions, fresh, self.heartbeat)
        self.correlators.update(fresh)
        elapsed = time.perf_counter() - started
        self.metrics.restore_duration.observe(elapsed)
        self.metrics.restored_records.inc(records)
        for p, c in fresh.items():
            self.metrics.pending.labels(str(p)).set(c.pending_count)
        log.info("state restored", partitions=partitions, records=records,
                 seconds=round(elapsed, 3),
                 pending=sum(c.pending_count for c in fresh.values()))

    # -- processing ------------------------------------------------------------------------

    def process(self, messages: Sequence[Message], emit: Emit) -> None:
        for held in self.correlators.values():  # the previous batch committed
            held.commit_point()
        decode = self.decoder.decode
        touched: set[int] = set()
        outcomes: list[Outcome] = []
        undecodable = 0
        for msg in messages:
            partition = msg.partition() or 0  # never None for a consumed record
            correlator = self.correlators.get(partition)
            if correlator is None:  # revoked between consume and process: not ours any more
                continue
            try:
                event: InstanceEvent = decode(msg.value() or b"")  # type: ignore[assignment]
            except SerdeError as exc:
                undecodable += 1
                log.error("undecodable normalized record", error=str(exc), topic=msg.topic(),
                          partition=partition, offset=msg.offset())
                continue
            outcomes.extend(correlator.process(event))
            touched.add(partition)
        if undecodable:
            self.metrics.dlq.labels("undecodable").inc(undecodable)
        self._emit_outcomes(outcomes, emit)
        self._emit_changes(touched, emit)

    def tick(self, emit: Emit) -> None:
        now = self.clock()
        outcomes: list[Outcome] = []
        for correlator in self.correlators.values():
            outcomes.extend(correlator.expire(now))
        self._emit_outcomes(outcomes, emit)
        self._emit_changes(set(self.correlators), emit)

    def _emit_outcomes(self, outcomes: list[Outcome], emit: Emit) -> None:
        if not outcomes:
            return
        m = self.metrics
        routes = self._routes
        kinds: Counter[tuple[str, str, str, str]] = Counter()
        timeouts: Counter[tuple[str, str]] = Counter()
        # Observations grouped by series, each in order: one labels() lookup per series and batch.
        durations: dict[tuple[str, str, str], list[float]] = {}
        leads: dict[tuple[str, str], list[float]] = {}
        for o in outcomes:
            vendor: str = o["vendor"]
            kind: str = o["outcome"]
            op = o["operation"] if o["known"] else UNKNOWN_OPERATION
            route = routes.get((op, kind))  # the topic depends on these two only
            if route is None:
                route = routes[(op, kind)] = self._route(o)
            topic, encode = route
            emit(topic, f"{vendor}:{o['instance_id']}".encode(), encode(o), None, -1)
            kinds[(vendor, op, kind, "true" if o["after_timeout"] else "false")] += 1
            if kind == "timed_out":
                timeouts[(vendor, op)] += 1
            duration = o.get("duration_ms")
            if kind == "completed" and duration is not None:
                durations.setdefault((vendor, op, o.get("region") or "unknown"), []).append(
                    duration / 1000.0)
            lead = o.get("lead_time_ms")
            if lead is not None:
                leads.setdefault((vendor, op), []).append(lead / 1000.0)
        for series, seconds in durations.items():
            observe = m.operation_duration.labels(*series).observe
            for value in seconds:
                observe(value)
        for pair, seconds in leads.items():
            observe = m.lead_time.labels(*pair).observe
            for value in seconds:
                observe(value)
        for labels, n in kinds.items():
            m.outcomes.labels(*labels).inc(n)
        for (vendor, op), n in timeouts.items():
            m.timeouts.labels(vendor, op).inc(n)

    def _route(self, outcome: Outcome) -> tuple[str, Encoder]:
        """The topic of an outcome and its encoder (created once per topic)."""
        topic = outcome_topic(self.settings, outcome)
        encode = self._encoders.get(topic)
        if encode is None:
            encode = self._encoders[topic] = self.encoder_for(topic)
        return topic, encode

    def _emit_changes(self, partitions: set[int], emit: Emit) -> None:
        topic = self.settings.changelog_topic
        anomalies = self.metrics.anomalies
        late = self.metrics.late_notifications
        for p in partitions:
            correlator = self.correlators[p]
            for key, value in correlator.drain_changes():
                emit(topic, key.encode(), value, None, p)
            self._export_state(p, correlator)
            if correlator.counters:  # the correlator counts; the shell exports and resets
                for kind, n in correlator.counters.items():
                    anomalies.labels(kind).inc(n)
                correlator.counters.clear()
            if correlator.late:
                for (vendor, op, known), n in correlator.late.items():
                    late.labels(vendor, op if known else UNKNOWN_OPERATION).inc(n)
                correlator.late.clear()

    def _export_state(self, p: int, correlator: Correlator) -> None:
        """Gauges of one partition's correlator: open operations, buffer, watermark."""
        label = str(p)
        self.metrics.pending.labels(label).set(correlator.pending_count)
        self.metrics.buffered.labels(label).set(correlator.buffered_count)
        watermark = correlator.watermark
        if watermark is not None:
            self.metrics.watermark.labels(label).set(watermark / 1000.0)


def read_changelog(settings: Settings, partitions: list[int], correlators: dict[int, Correlator],
                   heartbeat: Callable[[], None] = lambda: None) -> int:
    """Replay committed changelog records of ``partitions`` into ``correlators``; returns the count.

    ``heartbeat`` runs between fetches so a long restore does not look like a stalled loop to the
    liveness probe; progress is logged every few seconds.
    """
    if not partitions:
        return 0
    conf: dict[str, Any] = {
        **settings.kafka_common(),
        "group.id": f"{settings.correlate_group}-restore",
        "enable.auto.commit": False,
        "isolation.level": "read_committed",
        "enable.partition.eof": True,
        "fetch.wait.max.ms": 10,
    }
    restorer = Consumer(conf)
    count = 0
    try:
        tps = []
        for p in partitions:
            low, high = restorer.get_watermark_offsets(
                TopicPartition(settings.changelog_topic, p), timeout=30, cached=False)
            if high > low:
                tps.append(TopicPartition(settings.changelog_topic, p, OFFSET_BEGINNING))
        if not tps:
            return 0
        restorer.assign(tps)
        open_partitions = {tp.partition for tp in tps}
        started = last_report = time.monotonic()
        while open_partitions:
            heartbeat()
            if time.monotonic() - last_report > 5:
                last_report = time.monotonic()
                log.info("restoring", records=count, seconds=round(last_report - started),
                         partitions_left=sorted(open_partitions))
            for msg in restorer.consume(10_000, 1.0):
                err = msg.error()
                if err is not None:
                    if err.code() == KafkaError._PARTITION_EOF:
                        open_partitions.discard(msg.partition())
                        continue
                    raise RuntimeError(f"changelog read failed: {err.str()}")
                key = msg.key()
                if key is not None:
                    correlators[msg.partition() or 0].restore(key.decode(), msg.value())
                    count += 1
    finally:
        restorer.close()
    return count
