"""Stage ``normalize``: raw vendor JSON in, InstanceEvent (keyed by instance) or DLQ out.

Whatever a raw record holds (null, empty, binary, any size the broker accepts), it ends in the
normalized topic or in the DLQ: rejections, encoding failures and outputs too large for the
normalized topic are dead letters, sized to fit the DLQ topic (:mod:`consumer.runtime.deadletter`).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

import structlog
from confluent_kafka import Consumer, Message, TopicPartition

from consumer.errors import PayloadTooLarge, RejectedEvent
from consumer.metrics import Metrics
from consumer.model import event_key
from consumer.normalize import Normalizer
from consumer.runtime.deadletter import DeadLetters, record_size, usable_bytes
from consumer.runtime.loop import Emit
from consumer.serde import Encoder

log = structlog.get_logger(__name__)

STAGE = "normalize"


class NormalizeProcessor:
    """Pure normalizer plus Avro encoding; stateless, so rebalances and aborts need no work.

    ``max_output_bytes`` is the most one record may take on the normalized topic (its
    ``max.message.bytes`` and the producer's limit); a larger encoded event is a ``too_large``
    dead letter instead of a produce error that would stop the stage.
    """

    stage = STAGE

    def __init__(self, normalizer: Normalizer, encode: Encoder, normalized_topic: str,
                 dead_letters: DeadLetters, metrics: Metrics, max_output_bytes: int) -> None:
        self.normalizer = normalizer
        self.encode = encode
        self.normalized_topic = normalized_topic
        self.dead_letters = dead_letters
        self.metrics = metrics
        self.output_budget = usable_bytes(max_output_bytes)

    def on_assign(self, consumer: Consumer, partitions: Sequence[TopicPartition]) -> None:
        return

    def on_revoke(self, partitions: Sequence[TopicPartition]) -> None:
        return

    def on_abort(self, consumer: Consumer) -> None:
        return

    def restore(self, consumer: Consumer) -> bool:
        return True

    def tick(self, emit: Emit) -> None:
        return

    def process(self, messages: Sequence[Message], emit: Emit) -> None:
        normalize = self.normalizer.normalize
        encode = self.encode
        out_topic = self.normalized_topic
        budget = self.output_budget
        labels: list[tuple[str | None, str, str]] = []  # counted once per batch, in C
        unknown: Counter[str] = Counter()
        dead: list[Message] = []
        reasons: list[str] = []

        def reject(msg: Message, reason: str, exc: Exception) -> None:
            self.dead_letters.send(emit, msg, reason, exc)
            dead.append(msg)
            reasons.append(reason)

        for msg in messages:
            raw = msg.value() or b""
            try:
                event = normalize(raw)
            except RejectedEvent as exc:
                reject(msg, exc.reason, exc)
                log.debug("rejected", reason=exc.reason, error=str(exc), topic=msg.topic(),
                          partition=msg.partition(), offset=msg.offset())
                continue
            event["source"] = {"topic": msg.topic() or "", "partition": msg.partition() or 0,
                               "offset": msg.offset() or 0}
            try:
                value = encode(event)
            except (ValueError, TypeError, OverflowError) as exc:  # an adapter bug, not the input's
                reject(msg, "encoding", exc)
                log.error("encoding failed", error=str(exc), topic=msg.topic(),
                          partition=msg.partition(), offset=msg.offset())
                continue
            key = event_key(event).encode()
            if record_size(key, value, []) > budget:
                reject(msg, "too_large", PayloadTooLarge(
                    f"normalized event of {len(value)} bytes exceeds what {out_topic} accepts "
                    f"({budget} bytes)"))
                continue
            emit(out_topic, key, value, None, -1)
            if event["known"]:
                labels.append((event["vendor"], event["operation"], event["phase"] or "none"))
            else:  # unknown codes share one label value so label cardinality stays bounded
                labels.append((event["vendor"], "unknown", event["phase"] or "none"))
                unknown[event["vendor"]] += 1
        m = self.metrics
        for (vendor, operation, phase), n in Counter(labels).items():
            m.events.labels(STAGE, *m.event_labels(vendor, operation, phase)).inc(n)
        for vendor, n in unknown.items():
            m.unknown_codes.labels(*m.vendor_labels(vendor)).inc(n)
        if dead:
            self.dead_letters.count(dead, reasons)
