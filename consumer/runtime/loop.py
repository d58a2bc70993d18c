"""The batch loop every stage runs: consume a batch, process it, commit it, in one transaction.

Exactly-once commit protocol (EOS v2, KIP-447), per batch:

1. ``consume(batch_size, timeout)``: rebalance callbacks run here, never inside a transaction.
   The alignment buffers what was consumed and hands over, merged by record timestamp across
   partitions, what may be processed now (:mod:`consumer.runtime.alignment`).
2. ``begin_transaction()``.
3. The processor produces its outputs (and changelog writes) for the batch, plus any timer output.
4. ``send_offsets_to_transaction(offsets, consumer_group_metadata())``: the offsets after the
   records processed (not the position: records consumed but still held by the alignment are
   read again after a crash) join the same transaction, fenced by the group generation.
5. ``commit_transaction()``. A retriable error retries the commit; an abortable one aborts,
   rewinds the consumer to the last committed offsets and tells the processor to drop what the
   batch did in memory; anything else is fatal and stops the process.

At-least-once (the opt-out): produce, ``flush()``, fail on any delivery error, then commit the
offsets synchronously. A crash between the flush and the commit re-delivers the batch.
"""

from __future__ import annotations

import contextlib
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
from consumer.runtime.alignment import ConsumerAlignment
from consumer.runtime.clients import consumer_conf, producer_conf, wrap

log = structlog.get_logger(__name__)

TICK_SECONDS = 1.0
"""How often timer work runs on an idle partition set (a quiet partition still times out)."""
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


class StageLoop:
    """Runs one processor as a member of one consumer group until ``stop`` is set."""

    def __init__(self, settings: Settings, processor: Processor, topics: Sequence[str],
                 group: str, metrics: Metrics, health: Health,
                 consumer_extra: dict[str, Any] | None = None) -> None:
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
        self._stop = threading.Event()
        self._transient_failures = 0
        self._transient_since = 0.0
        # Records go to the processor merged by timestamp across partitions (alignment.py).
        self.align = ConsumerAlignment(
            settings.max_idle_ms, max(1000, settings.batch_size),
            metrics.alignment_idle_expired.labels(self.stage).inc)

    # -- callbacks -------------------------------------------------------------------------

    def _on_delivery(self, err: KafkaError | None, msg: Message) -> None:
        if err is not None and self._delivery_error is None:
            self._delivery_error = err

    def _on_stats(self, raw: str) -> None:
        stats = orjson.loads(raw)
        gauge = self.metrics.consumer_lag
        for topic, tstats in stats.get("topics", {}).items():
            for pid, pstats in tstats.get("partitions", {}).items():
                lag = pstats.get("consumer_lag", -1)
                if pid != "-1" and lag >= 0:
                    gauge.labels(self.stage, topic, pid).set(lag)

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self.metrics.rebalances.labels(self.stage, "assign").inc()
        self.health.ready = False
        self.health.reason = "restoring"
        self.metrics.ready.labels(self.stage).set(0)
        log.info("partitions assigned", stage=self.stage,
                 partitions=[f"{p.topic}[{p.partition}]" for p in partitions])
        self.processor.on_assign(consumer, partitions)
        self.align.assign(partitions)
        self.health.ready = True
        self.metrics.ready.labels(self.stage).set(1)

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self.metrics.rebalances.labels(self.stage, "revoke").inc()
        log.info("partitions revoked", stage=self.stage,
                 partitions=[f"{p.topic}[{p.partition}]" for p in partitions])
        self.processor.on_revoke(partitions)
        self.align.revoke(consumer, partitions)
        for p in partitions:
            with contextlib.suppress(KeyError):  # no lag reported yet for that partition
                self.metrics.consumer_lag.remove(self.stage, p.topic, str(p.partition))

    # -- the loop --------------------------------------------------------------------------

    def run(self, stop: threading.Event) -> None:
        # What exists now lives as long as the process: out of every collection from here on.
        # Young collections wait for 50k new objects, more than one batch allocates, instead
        # of 700 (every ~100 correlator events, GC was ~15% of its time; now ~1.5%).
        gc.freeze()
        gc.set_threshold(50_000)
        self._stop = stop
        s = self.settings
        conf = consumer_conf(s, self.group, stats_cb=self._on_stats,
                             logger=kafka_logger("consumer"), **self._consumer_extra)
        txn_id = s.transactional_id_for(self.group) if self.eos else None
        producer = Producer(producer_conf(s, txn_id, on_delivery=self._on_delivery,
                                          logger=kafka_logger("producer")))
        consumer = Consumer(conf)
        try:
            if self.eos:
                self._init_transactions(producer)
            consumer.subscribe(self.topics, on_assign=self._on_assign,
                               on_revoke=self._on_revoke, on_lost=self._on_revoke)
            self.health.reason = "waiting for partition assignment"
            log.info("stage started", stage=self.stage, group=self.group, topics=self.topics,
                     guarantee=s.guarantee, transactional_id=txn_id)
            timeout = s.batch_timeout_ms / 1000.0
            while not stop.is_set():
                self.health.tick()
                messages = consumer.consume(s.batch_size, timeout)
                records = self.align.next_batch(consumer, self._drop_errors(messages),
                                                s.batch_size)
                self._run_batch(consumer, producer, records)
        finally:
            self.health.ready = False
            self.health.reason = "shutting down"
            self.metrics.ready.labels(self.stage).set(0)
            log.info("stage stopping: leaving group and flushing", stage=self.stage)
            try:
                consumer.close()
            finally:
                producer.flush(10)

    def _init_transactions(self, producer: Producer) -> None:
        deadline = time.monotonic() + 60
        while True:
            try:
                producer.init_transactions(30)
                return
            except KafkaException as exc:
                err = wrap(exc, "init_transactions")
                if not err.retriable or time.monotonic() > deadline:
                    raise err from None
                log.warning("init_transactions retrying", error=str(err))

    def _drop_errors(self, messages: list[Message]) -> list[Message]:
        records = []
        for m in messages:
            err = m.error()
            if err is None:
                records.append(m)
            elif err.fatal():
                raise wrap(KafkaException(err), "consumer")
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
                        produce(topic, value, key, headers=headers)
                    elif partition >= 0:
                        produce(topic, value, key, partition)
                    else:
                        produce(topic, value, key)
                    return
                except BufferError:
                    poll(0.05)  # local queue full: let librdkafka drain it

        return emit

    def _run_batch(self, consumer: Consumer, producer: Producer, records: list[Message]) -> None:
        started = time.perf_counter()
        if not records and started - self._last_tick < TICK_SECONDS:
            return  # nothing consumed and no timer due: no empty transaction
        self._last_tick = started
        emit = self._emitter(producer)
        if self.eos:
            producer.begin_transaction()
            try:
                self.processor.process(records, emit)
                self.processor.tick(emit)
                t0 = time.perf_counter()
                self._commit_transaction(consumer, producer)
                self.metrics.transaction_duration.labels(self.stage).observe(
                    time.perf_counter() - t0)
            except TransientError as exc:  # before KafkaRuntimeError: RegistryUnavailable is both
                self._abort(consumer, producer, exc)
                self._back_off(exc)
                return
            except KafkaRuntimeError as exc:
                if not exc.txn_requires_abort:
                    raise
                self._abort(consumer, producer, exc)
                return
        else:
            try:
                self.processor.process(records, emit)
                self.processor.tick(emit)
            except TransientError as exc:
                self._rewind(consumer)
                self.processor.on_abort(consumer)
                self._back_off(exc)
                return
            self._flush_and_commit(consumer, producer, records)
        if self._transient_failures:
            self._recovered()
        if records:
            self.metrics.batch_duration.labels(self.stage).observe(time.perf_counter() - started)
            self.metrics.batch_size.labels(self.stage).observe(len(records))
            self.metrics.last_event.labels(self.stage).set(time.time())

    def _commit_transaction(self, consumer: Consumer, producer: Producer) -> None:
        tmo = self.settings.transaction_timeout_ms / 1000.0
        try:
            offsets = self.align.offsets()  # of the records processed, not position()
            if offsets:
                producer.send_offsets_to_transaction(
                    offsets, consumer.consumer_group_metadata(), tmo)
        except KafkaException as exc:
            raise wrap(exc, "send_offsets_to_transaction") from None
        for attempt in range(5):
            try:
                producer.commit_transaction(tmo)
                return
            except KafkaException as exc:
                err = wrap(exc, "commit_transaction")
                if err.retriable and attempt < 4:
                    log.warning("commit retrying", stage=self.stage, error=str(err))
                    continue
                raise err from None

    def _abort(self, consumer: Consumer, producer: Producer,
               exc: KafkaRuntimeError | TransientError) -> None:
        log.warning("transaction aborted; rewinding to committed offsets",
                    stage=self.stage, error=str(exc))
        self.metrics.transaction_aborts.labels(self.stage).inc()
        try:
            producer.abort_transaction(self.settings.transaction_timeout_ms / 1000.0)
        except KafkaException as abort_exc:
            raise wrap(abort_exc, "abort_transaction") from None
        self._rewind(consumer)
        self.processor.on_abort(consumer)

    def _back_off(self, exc: TransientError) -> None:
        """A dependency is down: not ready, wait (doubling, capped), then the batch is redone.

        Liveness keeps ticking: the loop is waiting on purpose, not stuck. Logged once per outage.
        """
        self._transient_failures += 1
        if self._transient_failures == 1:
            self._transient_since = time.monotonic()
            log.warning("dependency unavailable: batch aborted, retrying with backoff",
                        stage=self.stage, error=str(exc))
        self.health.ready = False
        self.health.reason = f"retrying: {exc}"
        self.metrics.ready.labels(self.stage).set(0)
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
        self.health.ready = True
        self.metrics.ready.labels(self.stage).set(1)

    def _rewind(self, consumer: Consumer) -> None:
        self.align.drop(consumer)
        assignment = consumer.assignment()
        if not assignment:
            return
        for tp in consumer.committed(assignment, timeout=30):
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
        offsets = self.align.offsets()
        if offsets:
            try:
                consumer.commit(offsets=offsets, asynchronous=False)
            except KafkaException as exc:
                raise wrap(exc, "commit offsets") from None
