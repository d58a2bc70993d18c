"""The bridge to Kafka: produce, and resolve an asyncio future when the broker acknowledged.

An idempotent producer with ``acks=all``. ``message.timeout.ms`` is the ack timeout, shorter
than every channel's own timeout (EventBridge's 5 s is the tightest), so the delivery report
itself decides the answer: delivered -> 2xx; not delivered in time (broker away or slow) -> 503,
and librdkafka gives up on the record (a record already in flight when the report fails may
still land: a redelivery then writes it twice, which the notification id identifies downstream,
see the README).

While the broker is known to be away (a delivery failed, or librdkafka reports every broker
down) nothing is produced: requests are answered 503 at once, and a metadata probe every
0.5 s brings readiness back once every partition of the topic has a leader. So records are not
queued during an outage to land after their request was refused.

The producer is polled on the event loop itself, by a timer callback: every 1 ms while
deliveries are outstanding, else every 50 ms (a write brings the next poll forward). Delivery
callbacks resolve their futures directly, with no second Python thread contending for the GIL on
the hot path. Only the
blocking metadata probe has a thread.
"""

from __future__ import annotations

import asyncio
import threading
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
BUSY_POLL_S = 0.001
IDLE_POLL_S = 0.05
TOO_LARGE = frozenset({KafkaError.MSG_SIZE_TOO_LARGE})


class RawWriter:
    """Writes records to one topic; ``await write(...)`` returns once all are acknowledged."""

    def __init__(self, settings: Settings, topic: str, *, ack_timeout_ms: int, linger_ms: int,
                 on_ready: Callable[[bool], None] = lambda ready: None,
                 on_tick: Callable[[], None] = lambda: None,
                 extra: dict[str, Any] | None = None) -> None:
        conf = producer_conf(settings, None, **{
            "linger.ms": linger_ms,
            "delivery.report.only.error": False,
            "message.timeout.ms": ack_timeout_ms,
            "request.timeout.ms": max(1000, min(ack_timeout_ms, 30_000)),
            "queue.buffering.max.messages": 200_000,
            "socket.connection.setup.timeout.ms": 3000,
            "reconnect.backoff.max.ms": 1000,
            "error_cb": self._on_error,
            "logger": kafka_logger("ingest-producer"),
            **(extra or {}),
        })
        self.topic = topic
        self._producer = Producer(conf)
        self._on_ready = on_ready
        self._on_tick = on_tick
        self._outstanding = 0
        self._stop = threading.Event()
        self._prober = threading.Thread(target=self._probe_loop, name="ingest-probe", daemon=True)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._busy = False
        self.ready = False

    def start(self) -> None:
        """Start polling on the running loop, and the readiness probe."""
        self._loop = asyncio.get_running_loop()
        self._timer = self._loop.call_later(0, self._tick)
        self._prober.start()

    async def write(self, values: Sequence[bytes], headers: Headers, *, key: bytes | None,
                    timestamp_ms: int) -> None:
        """Produce every value and wait for every acknowledgement; Unavailable if any fails."""
        if not self.ready:
            # Fail fast while the broker is away: nothing is queued that could land after the
            # 503 (a redelivery would then write it twice), and the vendor hears at once.
            raise Unavailable("broker_unavailable", "the broker is not acknowledging records")
        loop = asyncio.get_running_loop()
        futures: list[asyncio.Future[None]] = []
        for value in values:
            fut: asyncio.Future[None] = loop.create_future()
            try:
                self._producer.produce(self.topic, value, key, on_delivery=self._reporter(fut),
                                       timestamp=timestamp_ms, headers=headers)
            except BufferError:
                raise Unavailable("queue_full", "the producer's queue is full") from None
            except KafkaException as exc:
                err = exc.args[0] if exc.args else None
                if isinstance(err, KafkaError) and err.code() in TOO_LARGE:
                    raise Refused("too_large", err.str(), status=413) from None
                raise Unavailable("produce_failed", str(err or exc)) from None
            self._outstanding += 1
            futures.append(fut)
        if not self._busy and self._timer is not None:
            # Idle polling is every 50 ms: poll again 1 ms from now for these acks.
            self._timer.cancel()
            self._busy = True
            self._timer = loop.call_later(BUSY_POLL_S, self._tick)
        # librdkafka reports every record within message.timeout.ms, success or not.
        for fut in futures:
            await fut

    def _reporter(self, fut: asyncio.Future[None]) -> Callable[[KafkaError | None, Any], None]:
        def report(err: KafkaError | None, msg: Any) -> None:
            self._outstanding -= 1
            if fut.done():
                return
            if err is None:
                fut.set_result(None)
            elif err.code() in TOO_LARGE:
                fut.set_exception(Refused("too_large", err.str(), status=413))
            else:
                fut.set_exception(Unavailable("not_acknowledged", err.str()))
                self._set_ready(False, err.str())
        return report

    def _tick(self) -> None:
        """Serve delivery reports, then come back in 1 ms while acks are awaited, else 50 ms."""
        if self._stop.is_set() or self._loop is None:
            return
        self._producer.poll(0)
        self._on_tick()  # the loop is turning: liveness
        self._busy = self._outstanding > 0
        self._timer = self._loop.call_later(BUSY_POLL_S if self._busy else IDLE_POLL_S, self._tick)

    def _probe_loop(self) -> None:
        while not self._stop.wait(PROBE_INTERVAL_S):
            if not self.ready:
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

    def _on_error(self, err: KafkaError) -> None:
        # Not _TRANSPORT: a broker closing an idle connection is reported so, and one broker of
        # several going away is librdkafka's to route around; failed deliveries say the rest.
        if err.code() == KafkaError._ALL_BROKERS_DOWN:
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
        """Deliver what is queued (at most ``timeout_s``), stop; returns records left behind."""
        self._stop.set()
        if self._timer is not None:
            self._timer.cancel()
        left = int(self._producer.flush(timeout_s))
        if self._prober.is_alive():
            self._prober.join(2.0)
        return left

