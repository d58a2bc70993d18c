"""Stage ``normalize``: raw vendor JSON in, InstanceEvent (keyed by instance) or DLQ out."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

import structlog
from confluent_kafka import Consumer, Message, TopicPartition

from consumer.errors import OutOfScope, RejectedEvent
from consumer.metrics import Metrics
from consumer.model import SourceRef, event_key
from consumer.normalization import Normalizer
from consumer.runtime.loop import Emit, Headers
from consumer.serde import Encoder

log = structlog.get_logger(__name__)

STAGE = "normalize"


def dlq_headers(exc: Exception, reason: str, msg: Message) -> Headers:
    """Why and where from, as ``vmevents.dlq.*`` headers (see avro/DeadLetter.md)."""
    _, ts = msg.timestamp()
    return [
        ("vmevents.dlq.reason", reason.encode()),
        ("vmevents.dlq.error", str(exc)[:1024].encode("utf-8", "replace")),
        ("vmevents.dlq.exception", type(exc).__name__.encode()),
        ("vmevents.dlq.stage", STAGE.encode()),
        ("vmevents.dlq.source.topic", (msg.topic() or "").encode()),
        ("vmevents.dlq.source.partition", str(msg.partition()).encode()),
        ("vmevents.dlq.source.offset", str(msg.offset()).encode()),
        ("vmevents.dlq.source.timestamp", str(ts).encode()),
    ]


class NormalizeProcessor:
    """Pure normalizer plus Avro encoding; stateless, so rebalances and aborts need no work."""

    stage = STAGE

    def __init__(self, normalizer: Normalizer, encode: Encoder, normalized_topic: str,
                 dlq_topic: str, metrics: Metrics) -> None:
        self.normalizer = normalizer
        self.encode = encode
        self.normalized_topic = normalized_topic
        self.dlq_topic = dlq_topic
        self.metrics = metrics

    def on_assign(self, consumer: Consumer, partitions: Sequence[TopicPartition]) -> None:
        return

    def on_revoke(self, partitions: Sequence[TopicPartition]) -> None:
        return

    def on_abort(self, consumer: Consumer) -> None:
        return

    def tick(self, emit: Emit) -> None:
        return

    def process(self, messages: Sequence[Message], emit: Emit) -> None:
        normalize = self.normalizer.normalize_all
        encode = self.encode
        out_topic = self.normalized_topic
        labels: list[tuple[str, str, str]] = []  # counted once per batch, in C
        unknown: Counter[str] = Counter()
        rejected: Counter[str] = Counter()
        skipped: Counter[tuple[str, str]] = Counter()
        for msg in messages:
            raw = msg.value() or b""
            try:
                events = normalize(raw, msg.timestamp()[1])
            except OutOfScope as exc:  # a known vendor, not an instance: counted, not an error
                skipped[exc.vendor, exc.reason] += 1
                continue
            except RejectedEvent as exc:
                rejected[exc.reason] += 1
                emit(self.dlq_topic, msg.key(), msg.value(), dlq_headers(exc, exc.reason, msg), -1)
                log.debug("rejected", reason=exc.reason, error=str(exc), topic=msg.topic(),
                          partition=msg.partition(), offset=msg.offset())
                continue
            source: SourceRef = {"topic": msg.topic() or "", "partition": msg.partition() or 0,
                                 "offset": msg.offset() or 0}
            for event in events:
                event["source"] = source
            try:
                values = [encode(event) for event in events]
            except (ValueError, TypeError, OverflowError) as exc:  # an adapter bug, not the input's
                rejected["encoding"] += 1
                emit(self.dlq_topic, msg.key(), msg.value(), dlq_headers(exc, "encoding", msg), -1)
                log.error("encoding failed", error=str(exc), topic=msg.topic(),
                          partition=msg.partition(), offset=msg.offset())
                continue
            for event, value in zip(events, values, strict=True):
                emit(out_topic, event_key(event).encode(), value, None, -1)
                if event["known"]:
                    labels.append((event["vendor"], event["operation"], event["phase"] or "none"))
                else:  # unknown codes share one label value so label cardinality stays bounded
                    labels.append((event["vendor"], "unknown", event["phase"] or "none"))
                    unknown[event["vendor"]] += 1
        m = self.metrics
        for (vendor, operation, phase), n in Counter(labels).items():
            m.events.labels(STAGE, vendor, operation, phase).inc(n)
        for vendor, n in unknown.items():
            m.unknown_codes.labels(vendor).inc(n)
        for reason, n in rejected.items():
            m.dlq.labels(reason).inc(n)
        for (vendor, reason), n in skipped.items():
            m.skipped.labels(vendor, reason).inc(n)
