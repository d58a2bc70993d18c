"""The bridge to Kafka: produce, and resolve an asyncio future when the broker acknowledged.

An idempotent producer with ``acks=all``. ``message.timeout.ms`` is the ack timeout, shorter
than every channel's own timeout (EventBridge's 5 s is the tightest), so the delivery report
itself decides the answer: delivered -> 2xx; not delivered in time (broker away or slow) -> 503,
and librdkafka gives up on the record, which was then never written (a record already in
flight when the report fails may still land: a redelivery then writes it twice, which the
normalized stream's notification id identifies, see the README).

While the broker is known to be away (a delivery failed, or librdkafka reports every broker
down) nothing is produced: requests are answered 503 at once, and a metadata probe every
0.5 s brings readiness back once every partition of the topic has a leader. So records are not
queued during an outage to land after their request was refused; only a record in flight at
the moment the broker went away can (a broker that persisted it but did not answer).

One thread polls the producer; the delivery reports of one poll are handed to the event loop in
one ``call_soon_threadsafe`` (not one wake-up per record).
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

import structlog
from confluent_kafka import KafkaError, KafkaException, Producer

from consumer.config import Settings
from consumer.ingest.request import Refused, Unavailable
from consumer.logs import kafka_logger
from consumer.runtime.clients import producer_conf

log = structlog.get_logger(__name__)

Headers = list[tuple[str, str | bytes | None]]
PROBE_INTERVAL_S = 0.5
TOO_LARGE = frozenset({KafkaError.MSG_SIZE_TOO_LARGE})


class RawWriter:
    """Writes records to one topic; ``await write(...)`` returns once all are acknowledged."""

    def __init__(self, settings: Settings, topic: str, *, ack_timeout_ms: int, linger_ms: int,
                 on_ready: Callable[[bool], None] = lambda ready: None,
                 extra: dict[str, Any] | None = None) -> None:
        conf = producer_conf(settings, None, **{
            "linger.ms": linger_ms,
            "batch.size": 1_000_000,
            "delivery.report.only.error": False,
            "message.timeout.ms": ack_timeout_ms,
            "request.timeout.ms": max(1000, min(ack_timeout_ms, 30_000)),
            "compression.type": "lz4",
            "queue.buffering.max.messages": 200_000,
            "socket.connection.setup.timeout.ms": 3000,
            "reconnect.backoff.max.ms": 1000,
            "error_cb": self._on_error,
            "logger": kafka_logger("ingest-producer"),
            **(extra or {}),
        })
        self.topic = topic
        self.ack_timeout_s = ack_timeout_ms / 1000.0
        self._producer = Producer(conf)
        self._on_ready = on_ready
        self._loop: asyncio.AbstractEventLoop | None = None
        self._done: list[tuple[asyncio.Future[None], KafkaError | None]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, name="ingest-producer", daemon=True)
        self.ready = False
        self._last_probe = 0.0

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._thread.start()

    async def write(self, values: Sequence[bytes], headers: Headers, *, key: bytes | None,
                    timestamp_ms: int) -> None:
        """Produce every value and wait for every acknowledgement; Unavailable if any fails."""
        loop = self._loop
        assert loop is not None, "start() first"
        if not self.ready:
            # Fail fast while the broker is away: nothing is queued that could land after the
            # 503 (a redelivery would then write it twice), and the vendor hears at once.
            raise Unavailable("broker_unavailable", "the broker is not acknowledging records")
        futures: list[asyncio.Future[None]] = []
        for value in values:
            fut: asyncio.Future[None] = loop.create_future()

            def report(err: KafkaError | None, msg: Any, fut: asyncio.Future[None] = fut) -> None:
                # Runs in the poll thread, which also swaps the list: look it up now, never
                # append to a list captured at produce time (it may be handed over already).
                self._done.append((fut, err))

            try:
                self._producer.produce(self.topic, value, key, on_delivery=report,
                                       timestamp=timestamp_ms, headers=headers)
            except BufferError:
                raise Unavailable("queue_full", "the producer's queue is full") from None
            except KafkaException as exc:
                err = exc.args[0] if exc.args else None
                if isinstance(err, KafkaError) and err.code() in TOO_LARGE:
                    raise Refused("too_large", err.str(), status=413) from None
                raise Unavailable("produce_failed", str(err or exc)) from None
            futures.append(fut)
        try:
            # The delivery report comes within message.timeout.ms; the margin covers the poll.
            await asyncio.wait_for(asyncio.gather(*futures), self.ack_timeout_s + 2.0)
        except TimeoutError:
            raise Unavailable("ack_timeout", "no delivery report in time") from None

    def _poll(self) -> None:
        producer = self._producer
        loop = self._loop
        assert loop is not None
        while not self._stop.is_set():
            producer.poll(0.005)
            if self._done:
                batch, self._done = self._done, []
                try:
                    loop.call_soon_threadsafe(self._resolve, batch)
                except RuntimeError:
                    return  # the loop is closed: shutting down
            now = time.monotonic()
            if not self.ready and now - self._last_probe > PROBE_INTERVAL_S:
                self._last_probe = now
                self._probe()

    def _probe(self) -> None:
        """Readiness comes (back) when the broker answers a metadata request for our topic and
        every partition of it has a leader."""
        try:
            meta = self._producer.list_topics(self.topic, timeout=1.0).topics.get(self.topic)
        except KafkaException:
            return
        if (meta is not None and meta.error is None and meta.partitions
                and all(p.leader >= 0 for p in meta.partitions.values())):
            self._set_ready(True)

    def _resolve(self, batch: list[tuple[asyncio.Future[None], KafkaError | None]]) -> None:
        failed = None
        for fut, err in batch:
            if fut.done():
                continue
            if err is None:
                fut.set_result(None)
            elif err.code() in TOO_LARGE:
                fut.set_exception(Refused("too_large", err.str(), status=413))
            else:
                failed = err
                fut.set_exception(Unavailable("not_acknowledged", err.str()))
        if failed is not None:
            self._set_ready(False, failed.str())

    def _on_error(self, err: KafkaError) -> None:
        if err.code() in (KafkaError._ALL_BROKERS_DOWN, KafkaError._TRANSPORT):
            self._set_ready(False, err.str())
        elif err.fatal():
            log.error("producer fatal error", error=err.str())
            self._set_ready(False, err.str())

    def _set_ready(self, ready: bool, why: str = "") -> None:
        if ready != self.ready:
            self.ready = ready
            if ready:
                log.info("broker available", topic=self.topic)
            else:
                log.warning("broker unavailable", topic=self.topic, error=why)
            self._on_ready(ready)

    def close(self, timeout_s: float) -> int:
        """Deliver what is queued (at most ``timeout_s``), stop polling; records left behind."""
        left = int(self._producer.flush(timeout_s))
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(2.0)
        return left
