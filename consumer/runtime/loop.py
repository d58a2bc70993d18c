"""The batch loop every stage runs: consume a batch, process it, commit it, in one transaction.

Exactly-once commit protocol (EOS v2, KIP-447), per batch:

1. ``consume(batch_size, timeout)``: rebalance callbacks run here, never inside a transaction.
2. ``begin_transaction()``.
3. The processor produces its outputs (and changelog writes) for the batch, plus any timer output.
4. ``send_offsets_to_transaction(position(assignment), consumer_group_metadata())``: the input
   offsets join the same transaction, fenced by the group generation.
5. ``commit_transaction()``. A retriable error retries the commit; an abortable one aborts,
   rewinds the consumer to the last committed offsets and tells the processor to drop what the
   batch did in memory; anything else is fatal and stops the process.

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
from consumer.errors import KafkaRuntimeError
from consumer.http import Health
from consumer.logs import kafka_logger
from consumer.metrics import Metrics
from consumer.runtime.clients import consumer_conf, producer_conf, wrap
from consumer.runtime.lag import LagMonitor

log = structlog.get_logger(__name__)

TICK_SECONDS = 1.0
"""How often timer work runs on an idle partition set (a quiet partition still times out)."""

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
        self.lag = LagMonitor(metrics, self.stage)

    # -- callbacks -------------------------------------------------------------------------

    def _on_delivery(self, err: KafkaError | None, msg: Message) -> None:
        if err is not None and self._delivery_error is None:
            self._delivery_error = err

    def _on_stats(self, raw: str) -> None:
        self.lag.on_stats(orjson.loads(raw))

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self.metrics.rebalances.labels(self.stage, "assign").inc()
        self.health.ready = False
        self.health.reason = "restoring"
        self.metrics.ready.labels(self.stage).set(0)
        self.lag.assign(consumer, partitions)
        log.info("partitions assigned", stage=self.stage,
                 partitions=[f"{p.topic}[{p.partition}]" for p in partitions])
        self.processor.on_assign(consumer, partitions)
        self.health.ready = True
        self.metrics.ready.labels(self.stage).set(1)

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self.metrics.rebalances.labels(self.stage, "revoke").inc()
        log.info("partitions revoked", stage=self.stage,
                 partitions=[f"{p.topic}[{p.partition}]" for p in partitions])
        self.processor.on_revoke(partitions)
        self.lag.revoke(partitions)

    # -- the loop --------------------------------------------------------------------------

    def run(self, stop: threading.Event) -> None:
        # What exists now lives as long as the process: out of every collection from here on.
        # Young collections wait for 50k new objects, more than one batch allocates, instead
        # of 700 (every ~100 correlator events, GC was ~15% of its time; now ~1.5%).
        gc.freeze()
        gc.set_threshold(50_000)
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
                records = self._drop_errors(messages)
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
            except KafkaRuntimeError as exc:
                if not exc.txn_requires_abort:
                    raise
                self._abort(consumer, producer, exc)
                return
        else:
            self.processor.process(records, emit)
            self.processor.tick(emit)
            self._flush_and_commit(consumer, producer, records)
        if records:
            self.metrics.batch_duration.labels(self.stage).observe(time.perf_counter() - started)
            self.metrics.batch_size.labels(self.stage).observe(len(records))
            self.metrics.last_event.labels(self.stage).set(time.time())
            self.lag.on_batch(records)

    def _commit_transaction(self, consumer: Consumer, producer: Producer) -> None:
        tmo = self.settings.transaction_timeout_ms / 1000.0
        try:
            assignment = consumer.assignment()
            if assignment:
                producer.send_offsets_to_transaction(
                    consumer.position(assignment), consumer.consumer_group_metadata(), tmo)
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

    def _abort(self, consumer: Consumer, producer: Producer, exc: KafkaRuntimeError) -> None:
        log.warning("transaction aborted; rewinding to committed offsets",
                    stage=self.stage, error=str(exc))
        self.metrics.transaction_aborts.labels(self.stage).inc()
        try:
            producer.abort_transaction(self.settings.transaction_timeout_ms / 1000.0)
        except KafkaException as abort_exc:
            raise wrap(abort_exc, "abort_transaction") from None
        self._rewind(consumer)
        self.processor.on_abort(consumer)

    def _rewind(self, consumer: Consumer) -> None:
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
        offsets = [tp for tp in consumer.position(consumer.assignment()) if tp.offset >= 0]
        if offsets:
            try:
                consumer.commit(offsets=offsets, asynchronous=False)
            except KafkaException as exc:
                raise wrap(exc, "commit offsets") from None
