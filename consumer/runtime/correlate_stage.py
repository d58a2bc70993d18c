"""Stage ``correlate``: normalized events in, operation outcomes out, pending state in a changelog.

One pure :class:`~consumer.correlator.Correlator` per assigned input partition. Its changelog
writes go to the same partition number of the compacted changelog topic, in the same transaction
as the outcomes and the input offsets, so the state on the changelog always matches the committed
input position.

Rebalance protocol:

1. Assign (inside the rebalance callback, so kept cheap): pause the new input partitions and
   note them for restoring.
2. Restore (on the loop, between batches, a slice at a time so the loop keeps polling and the
   other partitions keep flowing): read their changelog partitions from the beginning up to the
   last stable offset (read_committed) into fresh correlators; resume each input partition as
   soon as its state is complete. Readiness is false meanwhile and the restore time is a metric.
3. Revoke / lost: drop those correlators and any restore in progress for them. Nothing to
   commit: the loop never has a transaction open while the consumer serves rebalance callbacks.
4. Budget: whenever the partitions held change (assign, revoke), each correlator gets an even
   share of the process's state budget (:func:`partition_budget`); restoring ones get theirs
   before their first record, so a restore larger than the budget evicts instead of growing.
5. Abort: each correlator rolls back the keys the aborted batch changed to their values at the
   last commit point (:meth:`~consumer.correlator.Correlator.rollback`); nothing is re-read. A
   commit point is taken when the next batch starts: reaching it means the previous
   transaction committed (an abort calls ``on_abort`` first).
"""

from __future__ import annotations

import math
import time
from collections import Counter
from collections.abc import Callable, Sequence

import structlog
from confluent_kafka import (
    OFFSET_BEGINNING,
    Consumer,
    KafkaError,
    KafkaException,
    Message,
    TopicPartition,
)

from consumer.config import Settings
from consumer.correlator import (
    UNKNOWN_OPERATION,
    Correlator,
    CorrelatorConfig,
    OpenGauges,
    Outcome,
)
from consumer.metrics import Metrics
from consumer.model import InstanceEvent
from consumer.runtime.alignment import Partition
from consumer.runtime.deadletter import KAFKA_DEFAULT_MAX_MESSAGE_BYTES, DeadLetters
from consumer.runtime.loop import Emit
from consumer.runtime.marks import read_mark
from consumer.serde import Decoder, Encoder, SerdeError

log = structlog.get_logger(__name__)

STAGE = "correlate"

RESTORE_SLICE_SECONDS = 0.25
"""How long one restore step reads before the loop polls its consumer again."""


def outcome_topic(settings: Settings, outcome: Outcome) -> str:
    """``failure.reboot.completed`` (plus the configured prefix), or the single topic.

    Unknown vendor codes go to ``unknown.<outcome>``: the set of topics stays the one the topics
    Job creates (:func:`consumer.correlator.outcome_operations`).
    """
    if settings.outcome_single_topic:
        return settings.outcome_single_topic
    operation = outcome["operation"] if outcome["known"] else UNKNOWN_OPERATION
    return f"{settings.outcome_topic_prefix}{operation}.{outcome['outcome']}"


def partition_budget(total: int | None, partitions: int) -> int | None:
    """One partition's share of the process's state budget (None: no byte cap).

    An even split over the partitions the process holds, restoring ones included: the shares
    never add up to more than the total, whichever partitions fill up. Keys are spread by hash,
    so partitions fill alike; a skewed one evicts before the process is full.
    """
    if total is None or partitions <= 0:
        return total
    return total // partitions


def wall_clock_ms() -> int:
    return time.time_ns() // 1_000_000


class CorrelateProcessor:
    stage = STAGE

    def __init__(self, settings: Settings, config: CorrelatorConfig, decoder: Decoder,
                 encoder_for: Callable[[str], Encoder], metrics: Metrics,
                 clock: Callable[[], int] = wall_clock_ms,
                 heartbeat: Callable[[], None] = lambda: None,
                 dead_letters: DeadLetters | None = None,
                 open_encoder: Encoder | None = None) -> None:
        """``encoder_for(topic)`` is called once per outcome topic (it may create the topic and
        register the schema under the topic's subject); its encoder is reused after that.
        Undecodable input goes to ``dead_letters`` (by default the DLQ topic, sized to Kafka's
        default limit). ``open_encoder`` encodes ``OpenOperation`` for the open-operations
        topic; None (or the topic setting empty): that topic is not written, the gauges are."""
        self.settings = settings
        self.config = config
        self.decoder = decoder
        self.encoder_for = encoder_for
        self.metrics = metrics
        self.clock = clock
        self.heartbeat = heartbeat
        self.dead_letters = dead_letters or DeadLetters(
            settings.dlq_topic, STAGE, KAFKA_DEFAULT_MAX_MESSAGE_BYTES, metrics)
        self.correlators: dict[int, Correlator] = {}
        self._encoders: dict[str, Encoder] = {}
        self._routes: dict[tuple[str, str], tuple[str, Encoder]] = {}
        self._to_restore: dict[int, TopicPartition] = {}  # paused input partitions
        self._restoring: ChangelogRestore | None = None
        self.open_topic = settings.open_operations_topic if open_encoder is not None else ""
        self.open_encoder = open_encoder
        self.open_gauges = OpenGauges()
        metrics.next_scheduled_start.set_function(self._next_start_seconds)
        budget = settings.correlate_state_budget
        self.state_budget = budget.max_bytes
        metrics.state_budget.set(budget.max_bytes or 0)
        log.info("correlator state budget", budget_bytes=budget.max_bytes, source=budget.source,
                 max_pending_per_partition=settings.correlate_max_pending)

    # -- rebalance -------------------------------------------------------------------------

    def on_assign(self, consumer: Consumer, partitions: Sequence[TopicPartition]) -> None:
        consumer.pause(list(partitions))
        for tp in partitions:
            self._to_restore[tp.partition] = TopicPartition(tp.topic, tp.partition)
        self._cancel_restore()  # restarted by restore() over all partitions still to do
        self._share_budget()

    def on_revoke(self, partitions: Sequence[TopicPartition]) -> None:
        for p in partitions:
            self.correlators.pop(p.partition, None)
            self.metrics.pending.labels(str(p.partition)).set(0)
            self.metrics.state_bytes.labels(str(p.partition)).set(0)
            if self._to_restore.pop(p.partition, None) is not None:
                self._cancel_restore()
        self._share_budget()
        self._export_open()

    def restore(self, consumer: Consumer) -> bool:
        """Advance the restore of paused partitions by about a quarter second; resume the done."""
        if not self._to_restore:
            return True
        if self._restoring is None:
            self._restoring = ChangelogRestore(self.settings, {
                p: Correlator(self.config, self.clock) for p in sorted(self._to_restore)})
            self._share_budget()  # before the first record: a restore over budget evicts
        session = self._restoring
        done = session.step(RESTORE_SLICE_SECONDS)
        for p in (session.correlators.keys() - session.finished) | done:  # the rest are live
            self.metrics.state_bytes.labels(str(p)).set(session.correlators[p].state_bytes)
        for p in done:
            correlator = session.correlators[p]
            self.correlators[p] = correlator
            self.metrics.pending.labels(str(p)).set(correlator.pending_count)
            consumer.resume([self._to_restore.pop(p)])
        if done:
            self._export_open()
        if self._to_restore:
            return False
        self._finish_restore(session)
        self._restoring = None
        return True

    def _share_budget(self) -> None:
        """Give every correlator held, live or restoring, its share of the process budget."""
        held = set(self.correlators) | set(self._to_restore)
        share = partition_budget(self.state_budget, len(held))
        restoring = self._restoring.correlators if self._restoring is not None else {}
        for correlator in {**restoring, **self.correlators}.values():  # a restored one is in both
            correlator.set_state_budget(share)

    def _cancel_restore(self) -> None:
        if self._restoring is not None:
            self._restoring.close()
            self._restoring = None

    def _finish_restore(self, session: ChangelogRestore) -> None:
        session.close()
        elapsed = time.perf_counter() - session.started
        self.metrics.restore_duration.observe(elapsed)
        self.metrics.restored_records.inc(session.records)
        log.info("state restored", partitions=sorted(session.correlators), records=session.records,
                 seconds=round(elapsed, 3),
                 pending=sum(c.pending_count for c in session.correlators.values()))

    def on_resume(self) -> None:
        """After a broker outage: the time the stage could not read is not quiet time, or a
        long outage would make every waiting notification late (see Correlator.resume)."""
        for correlator in self.correlators.values():
            correlator.resume()

    def report_progress(self, caught_up: Callable[[], dict[Partition, bool]], emit: Emit) -> None:
        return  # nothing downstream waits for this stage's progress

    def on_abort(self, consumer: Consumer) -> None:
        """Undo the aborted batch in memory: only the correlators and keys it touched."""
        rolled: dict[int, int] = {}
        for p, correlator in self.correlators.items():
            if correlator.touched:
                rolled[p] = correlator.rollback()
                self._export_state(p, correlator)
        self._export_open()  # what the aborted batch wrote to the open topic is gone with it
        log.info("aborted batch rolled back", partitions=sorted(rolled),
                 keys=sum(rolled.values()))

    # -- processing ------------------------------------------------------------------------

    def process(self, messages: Sequence[Message], emit: Emit) -> None:
        """Raises TransientError (the registry is down) for the loop to retry the batch later."""
        for held in self.correlators.values():  # the previous batch committed
            held.commit_point()
        decode = self.decoder.decode
        touched: set[int] = set()
        outcomes: list[Outcome] = []
        undecodable: list[Message] = []
        for msg in messages:
            partition = msg.partition() or 0  # never None for a consumed record
            correlator = self.correlators.get(partition)
            if correlator is None:  # revoked between consume and process: not ours any more
                continue
            if msg.value() is None:
                entries = read_mark(msg.headers())
                if entries is not None:  # upstream progress, see consumer.runtime.marks
                    outcomes.extend(correlator.progress(entries))
                    touched.add(partition)
                    continue
            try:
                event: InstanceEvent = decode(msg.value() or b"")  # type: ignore[assignment]
            except SerdeError as exc:
                self.dead_letters.send(emit, msg, "undecodable", exc)
                undecodable.append(msg)
                log.error("undecodable normalized record sent to the DLQ", error=str(exc),
                          topic=msg.topic(), partition=partition, offset=msg.offset())
                continue
            outcomes.extend(correlator.process(event))
            touched.add(partition)
        if undecodable:
            self.dead_letters.count(undecodable, ["undecodable"] * len(undecodable))
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
        durations: dict[tuple[str, str, str | None], list[float]] = {}
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
                durations.setdefault((vendor, op, o.get("region")), []).append(duration / 1000.0)
            lead = o.get("lead_time_ms")
            if lead is not None:
                leads.setdefault((vendor, op), []).append(lead / 1000.0)
        # Payload values become labels only through the caps (consumer.metrics.CappedLabels).
        for series, seconds in durations.items():
            observe = m.operation_duration.labels(*m.duration_labels(*series)).observe
            for value in seconds:
                observe(value)
        for pair, seconds in leads.items():
            observe = m.lead_time.labels(*m.operation_labels(*pair)).observe
            for value in seconds:
                observe(value)
        for (vendor, op, kind, after_timeout), n in kinds.items():
            m.outcomes.labels(*m.operation_labels(vendor, op), kind, after_timeout).inc(n)
        for (vendor, op), n in timeouts.items():
            m.timeouts.labels(*m.operation_labels(vendor, op)).inc(n)

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
        open_topic, encode_open = self.open_topic, self.open_encoder
        now = self.clock()
        opened_any = False
        view = encode_open is not None and bool(open_topic)
        for p in partitions:
            correlator = self.correlators[p]
            changes = correlator.drain_changes(now if view else None)
            for key, value in changes:
                emit(topic, key.encode(), value, None, p)
            # The open-operations topic, from the same drain: committed together. Its records
            # are only made when the topic is written.
            if view:
                assert encode_open is not None
                for op_key, record in correlator.open_changes():
                    emit(open_topic, op_key.encode(),
                         None if record is None else encode_open(record), None, -1)
            opened_any = opened_any or correlator.open_changed
            self._export_state(p, correlator)
            if correlator.counters:  # the correlator counts; the shell exports and resets
                for kind, n in correlator.counters.items():
                    anomalies.labels(kind).inc(n)
                correlator.counters.clear()
            if correlator.late:
                for (vendor, op, known), n in correlator.late.items():
                    late.labels(*self.metrics.operation_labels(
                        vendor, op if known else UNKNOWN_OPERATION)).inc(n)
                correlator.late.clear()
        if opened_any:
            self._export_open()

    def _export_open(self) -> None:
        """``vmevents_open_operations`` from the correlators' counts (a handful of label sets)."""
        m = self.metrics
        self.open_gauges.update(self.correlators.values(), self.clock())
        totals: Counter[tuple[str, ...]] = Counter()
        for series, n in self.open_gauges.counts.items():
            totals[m.event_labels(*series)] += n
        for labels, n in totals.items():
            m.open_operations.labels(*labels).set(n)

    def _next_start_seconds(self) -> float:
        """Called when /metrics is scraped (another thread: reads what the loop replaced)."""
        now = self.clock()
        start = self.open_gauges.next_start(now)
        return math.nan if start is None else (start - now) / 1000.0

    def _export_state(self, p: int, correlator: Correlator) -> None:
        """Gauges of one partition's correlator: open operations, state bytes, buffer, watermark."""
        label = str(p)
        self.metrics.pending.labels(label).set(correlator.pending_count)
        self.metrics.state_bytes.labels(label).set(correlator.state_bytes)
        self.metrics.buffered.labels(label).set(correlator.buffered_count)
        watermark = correlator.watermark
        if watermark is not None:
            self.metrics.watermark.labels(label).set(watermark / 1000.0)
        self.metrics.frontier_lag.labels(label).set(correlator.frontier_lag / 1000.0)


class ChangelogRestore:
    """Replays committed changelog records of some partitions into fresh correlators, in slices.

    Each :meth:`step` reads for a bounded time, so the caller can keep serving its consumer. A
    broker that is away only delays it: failed lookups are retried on the next step.
    """

    def __init__(self, settings: Settings, correlators: dict[int, Correlator]) -> None:
        """``correlators``: input partition -> the (empty) correlator its changelog partition
        restores into; each goes live when :meth:`step` reports its partition done."""
        self.settings = settings
        self.correlators = correlators
        self.finished: set[int] = set()
        self.records = 0
        self.started = time.perf_counter()
        self._last_report = time.monotonic()
        self._reading: set[int] | None = None  # None until the watermarks are known
        self._consumer = Consumer({
            **settings.kafka_common(),
            "group.id": f"{settings.correlate_group}-restore",
            "enable.auto.commit": False,
            "isolation.level": "read_committed",
            "enable.partition.eof": True,
            "fetch.wait.max.ms": 10,
            # Bigger fetches, a smaller prefetch queue: a million small records arrive in few
            # round trips, and what waits in the client stays small beside the state.
            "max.partition.fetch.bytes": 4 * 1024 * 1024,
            "queued.max.messages.kbytes": 16 * 1024,
        })

    def step(self, seconds: float) -> set[int]:
        """Read for about ``seconds``; returns the partitions completed by this step."""
        before = set(self.finished)
        if self._reading is None and not self._start():
            return set()
        reading = self._reading or set()
        deadline = time.monotonic() + seconds
        restore = {p: c.restore for p, c in self.correlators.items()}
        consume = self._consumer.consume
        while reading and time.monotonic() < deadline:
            messages = consume(10_000, min(seconds, 0.2))
            records = len(messages)
            for msg in messages:  # the hot loop of a restore: nothing here that can wait
                key = msg.key()
                if key is not None:
                    restore[msg.partition()](key.decode(), msg.value())  # type: ignore[index]
                    continue
                err = msg.error()
                records -= 1
                if err is None:
                    continue
                if err.code() == KafkaError._PARTITION_EOF:
                    reading.discard(msg.partition() or 0)
                    self.finished.add(msg.partition() or 0)
                elif err.fatal():
                    raise RuntimeError(f"changelog read failed: {err.str()}")
            self.records += records
        if reading and time.monotonic() - self._last_report > 5:
            self._last_report = time.monotonic()
            log.info("restoring", records=self.records,
                     seconds=round(time.perf_counter() - self.started),
                     partitions_left=sorted(reading))
        return self.finished - before

    def _start(self) -> bool:
        """Assign the non-empty changelog partitions; False when the broker did not answer."""
        topic = self.settings.changelog_topic
        tps = []
        try:
            for p in self.correlators:
                low, high = self._consumer.get_watermark_offsets(
                    TopicPartition(topic, p), timeout=10, cached=False)
                if high > low:
                    tps.append(TopicPartition(topic, p, OFFSET_BEGINNING))
        except KafkaException as exc:
            log.debug("changelog watermarks unavailable, retrying", error=str(exc))
            return False
        self._reading = {tp.partition for tp in tps}
        self.finished.update(set(self.correlators) - self._reading)
        if tps:
            self._consumer.assign(tps)
        return True

    def close(self) -> None:
        self._consumer.close()
