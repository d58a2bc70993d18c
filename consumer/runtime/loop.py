"""The batch loop every stage runs: consume a batch, process it, commit it, in one transaction.

Exactly-once commit protocol (EOS v2, KIP-447), per batch:

1. ``consume(batch_size, timeout)``: rebalance callbacks run here, never inside a transaction.
   The alignment buffers what was consumed and hands over, merged by record timestamp across
   partitions, what may be processed now (:mod:`consumer.runtime.alignment`).
2. ``begin_transaction()``.
3. The processor produces its outputs (and changelog writes) for the batch, plus any timer output.
4. ``send_offsets_to_transaction(offsets, consumer_group_metadata())``: the offsets of the
   records processed (not the position: records consumed but still held by the alignment are
   not committed) join the same transaction, fenced by the group generation.
5. ``commit_transaction()``. Steps 4 and 5 run under a deadline and follow the client's error
   triage (:mod:`consumer.runtime.transactions`): retriable errors are retried with backoff while
   the broker is away; an abortable one aborts; a fatal one, or a call stuck past its deadline,
   replaces the producer. Either way the consumer is rewound to the last committed offsets, the
   processor drops what the batch did in memory, and the batch is redone.

A :class:`~consumer.errors.TransientError` from the processor (a registry that is down) aborts
and redoes the batch after a doubling backoff, with readiness false meanwhile.

Broker outages: the loop keeps going (readiness false, one log line each way, see
:mod:`consumer.runtime.outage`), so liveness fails only when the loop itself is stuck.

At-least-once (the opt-out): produce, ``flush()``, fail on any delivery error, then commit the
offsets synchronously. A crash between the flush and the commit re-delivers the batch.
"""

from __future__ import annotations

import gc
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any, Protocol

import orjson
import structlog
from confluent_kafka import (
    OFFSET_BEGINNING,
    Consumer,
    KafkaError,
    KafkaException,
    Message,
    Producer,
    TopicPartition,
)

from consumer.config import Settings
from consumer.errors import KafkaRuntimeError, TransientError
from consumer.http import Health
from consumer.logs import kafka_logger
from consumer.metrics import Metrics
from consumer.runtime.alignment import ConsumerAlignment, Partition
from consumer.runtime.clients import consumer_conf, producer_conf, wrap
from consumer.runtime.deadline import CallOverran, Stopping, call_with_deadline
from consumer.runtime.lag import LagMonitor
from consumer.runtime.outage import Outage, quiet_connection_failures
from consumer.runtime.transactions import (
    MAX_BACKOFF_SECONDS,
    UNREACHABLE,
    BatchLost,
    TransactionalProducer,
)

log = structlog.get_logger(__name__)

TICK_SECONDS = 1.0
"""How often timer work runs on an idle partition set (a quiet partition still times out)."""

PROBE_AFTER_SECONDS = 2.0
PROBE_TIMEOUT_SECONDS = 1.0
"""An idle stage asks the broker for a partition's end offset every 2 s: a broker outage shows
in readiness (and the log) even when no transaction needs the broker."""

BACKOFF_MAX_SECONDS = 30.0
"""Longest wait before a batch is retried after a TransientError (doubling from 0.5 s)."""

Headers = list[tuple[str, str | bytes | None]]
Emit = Callable[[str, bytes | None, bytes | None, Headers | None, int], None]
"""``emit(topic, key, value, headers, partition)``; partition -1 lets the partitioner choose."""


class Processor(Protocol):
    """What a stage plugs into the loop. All methods run on the loop's thread."""

    stage: str

    def on_assign(self, consumer: Consumer, partitions: Sequence[TopicPartition]) -> None: ...

    def on_revoke(self, partitions: Sequence[TopicPartition]) -> None: ...

    def process(self, messages: Sequence[Message], emit: Emit) -> None: ...

    def tick(self, emit: Emit) -> None:
        """Timer work (timeouts) that produces output without any input record."""

    def on_abort(self, consumer: Consumer) -> None:
        """Forget the in-memory effects of an aborted batch."""

    def on_resume(self) -> None:
        """The stage was stalled (broker unreachable, a dependency down) and runs again: the
        stall was not quiet input (event-time watermarks must not count it as such)."""

    def report_progress(self, caught_up: Callable[[], dict[Partition, bool]], emit: Emit) -> None:
        """At the end of a batch: say how far the input is read (``caught_up()``: each assigned
        input partition, whether everything in it up to its end is processed)."""

    def restore(self, consumer: Consumer) -> bool:
        """A slice of state restoration for partitions assigned (and paused) by ``on_assign``.

        Runs on the loop between batches, never inside a rebalance callback; True when nothing
        is left to restore.
        """


class StageLoop:
    """Runs one processor as a member of one consumer group until ``stop`` is set."""

    def __init__(self, settings: Settings, processor: Processor, topics: Sequence[str],
                 group: str, metrics: Metrics, health: Health,
                 consumer_extra: dict[str, Any] | None = None,
                 max_idle_ms: int | None = None,
                 producer_factory: Callable[[dict[str, Any]], Producer] = Producer) -> None:
        self.settings = settings
        self.processor = processor
        self.topics = list(topics)
        self.group = group
        self.metrics = metrics
        self.health = health
        self.stage = processor.stage
        self.eos = settings.guarantee == "exactly_once"
        self._consumer_extra = consumer_extra or {}
        self._delivery_error: KafkaError | None = None
        self._last_tick = 0.0
        self.producer_factory = producer_factory
        self.outage = Outage(self.stage, self._update_ready)
        self._lost_in_row = 0
        self._suspect: str | None = None  # a client said the brokers are down; not checked yet
        self._assigned = False
        self._restoring = False
        self.txn: TransactionalProducer | None = None
        self.stuck_calls = 0  # client calls left inside librdkafka at shutdown (see app.run_stage)
        self._stop = threading.Event()
        self._transient_failures = 0
        self._transient_since = 0.0
        self._transient_error = ""
        self._stalled = False
        self._sent: list[TopicPartition] = []  # the offsets of the transaction being committed
        # Records go to the processor merged by timestamp across partitions (alignment.py).
        self.align = ConsumerAlignment(
            settings.max_idle_ms if max_idle_ms is None else max_idle_ms,
            max(1000, settings.batch_size),
            metrics.alignment_idle_expired.labels(self.stage).inc)
        self.lag = LagMonitor(metrics, self.stage)

    # -- callbacks -------------------------------------------------------------------------

    def _on_delivery(self, err: KafkaError | None, msg: Message) -> None:
        if err is not None and self._delivery_error is None:
            self._delivery_error = err

    def _on_stats(self, raw: str) -> None:
        self.lag.on_stats(orjson.loads(raw))

    def _on_error(self, err: KafkaError) -> None:
        """librdkafka's client-level errors (``error_cb``): all brokers down may be an outage.

        Only "may": these are queued and served by the next consume(), possibly long after the
        fact (a loop waiting on a transactional call does not consume), so the loop asks the
        broker before it declares an outage.
        """
        if err.code() == KafkaError._ALL_BROKERS_DOWN:
            self._suspect = err.str()
        elif err.code() in UNREACHABLE:
            log.debug("client error", stage=self.stage, error=err.str())
        else:
            log.warning("client error", stage=self.stage, error=err.str(), fatal=err.fatal())

    def _update_ready(self) -> None:
        """Ready: partitions assigned, their state restored, and the brokers reachable."""
        stalled = self.outage.active or bool(self._transient_failures)
        if self._stalled and not stalled:
            self.processor.on_resume()
        self._stalled = stalled
        if self.outage.active:
            ready, reason = False, "broker unreachable"
        elif self._transient_failures:
            ready, reason = False, f"retrying: {self._transient_error}"
        elif self._restoring:
            ready, reason = False, "restoring state"
        elif not self._assigned:
            ready, reason = False, "waiting for partition assignment"
        else:
            ready, reason = True, "ready"
        self.health.reason = reason
        self.health.ready = ready
        self.metrics.ready.labels(self.stage).set(1 if ready else 0)

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        """Cheap by design: the processor pauses what it must restore; the loop restores it."""
        self.metrics.rebalances.labels(self.stage, "assign").inc()
        self.lag.assign(consumer, partitions)
        log.info("partitions assigned", stage=self.stage,
                 partitions=[f"{p.topic}[{p.partition}]" for p in partitions])
        consumer.assign(partitions)  # before on_assign, so the processor can pause them
        self.processor.on_assign(consumer, partitions)
        self.align.assign(partitions)
        self._assigned = True
        self._restoring = True
        self._update_ready()

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self.metrics.rebalances.labels(self.stage, "revoke").inc()
        log.info("partitions revoked", stage=self.stage,
                 partitions=[f"{p.topic}[{p.partition}]" for p in partitions])
        self.processor.on_revoke(partitions)
        self.align.revoke(consumer, partitions)
        self.lag.revoke(partitions)

    # -- the loop --------------------------------------------------------------------------

    def run(self, stop: threading.Event) -> None:
        # What exists now lives as long as the process: out of every collection from here on.
        # Young collections wait for 50k new objects, more than one batch allocates, instead
        # of 700 (every ~100 correlator events, GC was ~15% of its time; now ~1.5%).
        gc.freeze()
        gc.set_threshold(50_000)
        s = self.settings
        self._stop = stop
        call_timeout = s.kafka_call_timeout_ms / 1000.0
        conf = consumer_conf(s, self.group, stats_cb=self._on_stats, error_cb=self._on_error,
                             logger=quiet_connection_failures(kafka_logger("consumer")),
                             **self._consumer_extra)
        txn_id = s.transactional_id_for(self.group) if self.eos else None
        pconf = producer_conf(s, txn_id, on_delivery=self._on_delivery, error_cb=self._on_error,
                              logger=quiet_connection_failures(kafka_logger("producer")))
        txn = self.txn = TransactionalProducer(
            pconf, stage=self.stage, call_timeout=call_timeout, metrics=self.metrics,
            outage=self.outage, stop=stop, heartbeat=self.health.tick,
            factory=self.producer_factory)
        consumer = Consumer(conf)
        try:
            if self.eos:
                txn.init()
            consumer.subscribe(self.topics, on_assign=self._on_assign,
                               on_revoke=self._on_revoke, on_lost=self._on_revoke)
            self._update_ready()
            log.info("stage started", stage=self.stage, group=self.group, topics=self.topics,
                     guarantee=s.guarantee, transactional_id=txn_id)
            timeout = s.batch_timeout_ms / 1000.0
            while not stop.is_set():
                self.health.tick()
                messages = self._consume(consumer, s.batch_size, timeout)
                if self._restoring:
                    self._restoring = not self.processor.restore(consumer)
                    if not self._restoring:
                        self._update_ready()
                records = self.align.next_batch(consumer, self._drop_errors(messages),
                                                s.batch_size)
                if self._suspect is not None or (
                        time.monotonic() - self.outage.last_contact > PROBE_AFTER_SECONDS):
                    self._probe(consumer)
                self._run_batch(consumer, txn, records)
        except Stopping:
            log.info("stop requested while waiting for the broker", stage=self.stage)
        finally:
            self._shutdown(consumer, txn, call_timeout)

    @staticmethod
    def _consume(consumer: Consumer, limit: int, timeout: float) -> list[Message]:
        """What the client holds now, up to ``limit``; only when it holds nothing, wait up to
        ``timeout`` for the first record and take it with whatever came along.

        ``consume(n, timeout)`` alone waits the whole timeout unless ``n`` records arrive, a
        delay on every answer at live rates; this way a record is processed as soon as it is
        here, and the batch grows by itself while the previous transaction commits (a backlog
        still comes in full batches)."""
        messages: list[Message] = consumer.consume(limit, 0)
        if messages:
            return messages
        first = consumer.poll(timeout)
        if first is None:
            return []
        return [first, *consumer.consume(limit - 1, 0)] if limit > 1 else [first]

    def _shutdown(self, consumer: Consumer, txn: TransactionalProducer, call_timeout: float) -> None:
        """Leave the group and say what became of the last transaction; every step is bounded."""
        self.health.ready = False
        self.health.reason = "shutting down"
        self.metrics.ready.labels(self.stage).set(0)
        log.info("stage stopping: leaving group", stage=self.stage)
        if self.eos:
            txn.abandon_open(min(call_timeout, 5.0))
        stuck = len(txn.stuck)
        try:
            call_with_deadline(consumer.close, min(call_timeout, 10.0), "consumer close")
        except CallOverran as exc:
            stuck += 1
            log.warning("left without leaving the group: the broker expires the membership",
                        stage=self.stage, error=str(exc))
        if not self.eos:
            txn.producer.flush(min(call_timeout, 10.0))
        self.stuck_calls = stuck
        log.info("stage stopped", stage=self.stage, last_transaction=txn.last,
                 stuck_client_calls=stuck)

    def _probe(self, consumer: Consumer) -> None:
        """Ask the broker, after a client's report that it is down or when no committed
        transaction has shown for a while that it is there (an idle stage)."""
        suspect, self._suspect = self._suspect, None
        try:  # a request the client cannot answer from its metadata cache
            consumer.get_watermark_offsets(TopicPartition(self.topics[0], 0),
                                           timeout=PROBE_TIMEOUT_SECONDS, cached=False)
        except KafkaException as exc:
            self.outage.down(suspect or str(exc))
            return
        self.outage.contact()

    def _drop_errors(self, messages: list[Message]) -> list[Message]:
        records = []
        for m in messages:
            err = m.error()
            if err is None:
                records.append(m)
            elif err.fatal():
                raise wrap(KafkaException(err), "consumer")
            elif err.code() in UNREACHABLE:
                self._suspect = err.str()
            elif err.code() != KafkaError._PARTITION_EOF:
                log.warning("consumer error", stage=self.stage, error=err.str(),
                            topic=m.topic(), partition=m.partition())
        return records

    def _emitter(self, producer: Producer) -> Emit:
        produce = producer.produce
        poll = producer.poll

        def emit(topic: str, key: bytes | None, value: bytes | None,
                 headers: Headers | None = None, partition: int = -1) -> None:
            while True:
                try:
                    if headers is not None:
                        if partition >= 0:
                            produce(topic, value, key, partition, headers=headers)
                        else:
                            produce(topic, value, key, headers=headers)
                    elif partition >= 0:
                        produce(topic, value, key, partition)
                    else:
                        produce(topic, value, key)
                    return
                except BufferError:
                    poll(0.05)  # local queue full: let librdkafka drain it

        return emit

    def _run_batch(self, consumer: Consumer, txn: TransactionalProducer,
                   records: list[Message]) -> None:
        started = time.perf_counter()
        if not records and started - self._last_tick < TICK_SECONDS:
            return  # nothing consumed and no timer due: no empty transaction
        self._last_tick = started
        emit = self._emitter(txn.producer)
        if self.eos:
            try:
                txn.begin()
                try:
                    self.processor.process(records, emit)
                    self.processor.tick(emit)
                    self.processor.report_progress(lambda: self.align.caught_up(consumer), emit)
                except KafkaException as exc:  # produce() refused: the transaction is in error
                    err = wrap(exc, "produce")
                    txn.fail(err)
                    raise BatchLost(str(err)) from None
                except TransientError as exc:  # before KafkaRuntimeError: RegistryUnavailable is both
                    txn.fail(KafkaRuntimeError(str(exc), txn_requires_abort=True))
                    self._rewind(consumer, txn)
                    self.processor.on_abort(consumer)
                    self._back_off(exc)
                    return
                except KafkaRuntimeError as exc:
                    if not exc.txn_requires_abort:
                        raise
                    txn.fail(exc)
                    raise BatchLost(str(exc)) from None
                t0 = time.perf_counter()
                self._sent = []
                txn.commit(lambda: self._offsets(consumer))
                self.lag.committed(self._sent)
                self.metrics.transaction_duration.labels(self.stage).observe(
                    time.perf_counter() - t0)
            except BatchLost:
                self._rewind(consumer, txn)
                self.processor.on_abort(consumer)
                self._lost_in_row += 1  # back off, so a failure that persists is no busy loop
                txn.pause(min(0.05 * 2 ** self._lost_in_row, MAX_BACKOFF_SECONDS))
                return
            self._lost_in_row = 0
        else:
            try:
                self.processor.process(records, emit)
                self.processor.tick(emit)
                self.processor.report_progress(lambda: self.align.caught_up(consumer), emit)
            except TransientError as exc:
                self._rewind(consumer, txn)
                self.processor.on_abort(consumer)
                self._back_off(exc)
                return
            self._flush_and_commit(consumer, txn.producer, records)
        if self._transient_failures:
            self._recovered()
        if records:
            self.metrics.batch_duration.labels(self.stage).observe(time.perf_counter() - started)
            self.metrics.batch_size.labels(self.stage).observe(len(records))
            self.metrics.last_event.labels(self.stage).set(time.time())
            self.lag.on_batch(records)

    def _offsets(self, consumer: Consumer) -> tuple[list[TopicPartition], Any] | None:
        """What step 4 sends: the offsets of the records processed, fenced by the group generation."""
        offsets = self._sent = self.align.offsets(consumer)
        return (offsets, consumer.consumer_group_metadata()) if offsets else None

    def _back_off(self, exc: TransientError) -> None:
        """A dependency is down: not ready, wait (doubling, capped), then the batch is redone.

        Liveness keeps ticking: the loop is waiting on purpose, not stuck. Logged once per outage.
        """
        self._transient_failures += 1
        self._transient_error = str(exc)
        if self._transient_failures == 1:
            self._transient_since = time.monotonic()
            log.warning("dependency unavailable: batch aborted, retrying with backoff",
                        stage=self.stage, error=str(exc))
        self._update_ready()
        delay = min(BACKOFF_MAX_SECONDS, 0.5 * 2 ** min(self._transient_failures - 1, 16))
        deadline = time.monotonic() + delay
        while not self._stop.is_set() and (left := deadline - time.monotonic()) > 0:
            self.health.tick()
            self._stop.wait(min(1.0, left))

    def _recovered(self) -> None:
        log.info("dependency available again", stage=self.stage,
                 attempts=self._transient_failures,
                 seconds=round(time.monotonic() - self._transient_since, 1))
        self._transient_failures = 0
        self._update_ready()

    def _rewind(self, consumer: Consumer, txn: TransactionalProducer) -> None:
        """Seek every assigned partition back to its committed offset (retried while unreachable)."""
        self.align.drop(consumer)
        assignment = consumer.assignment()
        if not assignment:
            return
        tmo = self.settings.kafka_call_timeout_ms / 1000.0
        try:
            committed = txn.call("committed offsets",
                                 lambda: consumer.committed(assignment, timeout=tmo))
        except CallOverran as exc:
            raise KafkaRuntimeError(f"{exc}: exiting so the orchestrator restarts the process",
                                    fatal=True) from None
        for tp in committed:
            if tp.offset < 0:
                tp.offset = OFFSET_BEGINNING
            consumer.seek(tp)

    def _flush_and_commit(self, consumer: Consumer, producer: Producer,
                          records: list[Message]) -> None:
        remaining = producer.flush(self.settings.transaction_timeout_ms / 1000.0)
        if remaining or self._delivery_error is not None:
            err = self._delivery_error
            raise KafkaRuntimeError(
                f"delivery failed ({remaining} undelivered): {err.str() if err else 'timeout'}")
        if not records:
            return
        offsets = self.align.offsets(consumer)
        if offsets:
            try:
                consumer.commit(offsets=offsets, asynchronous=False)
            except KafkaException as exc:
                raise wrap(exc, "commit offsets") from None
            self.lag.committed(offsets)
