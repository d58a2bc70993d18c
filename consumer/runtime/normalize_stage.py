"""Stage ``normalize``: raw vendor JSON in, InstanceEvent (keyed by instance) or DLQ out.

Whatever a raw record holds (null, empty, binary, any size the broker accepts), it ends in the
normalized topic or in the DLQ: rejections, encoding failures and outputs too large for the
normalized topic are dead letters, sized to fit the DLQ topic (:mod:`consumer.runtime.deadletter`).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence

import structlog
from confluent_kafka import Consumer, Message, TopicPartition

from consumer.correlator import notification_time
from consumer.errors import OutOfScope, PayloadTooLarge, RejectedEvent
from consumer.metrics import Metrics
from consumer.model import SourceRef, event_key
from consumer.normalization import Normalizer
from consumer.runtime.alignment import Partition
from consumer.runtime.deadletter import DeadLetters, record_size, usable_bytes
from consumer.runtime.loop import Emit
from consumer.runtime.marks import NOTHING_YET, ProgressMarks
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
                 dead_letters: DeadLetters, metrics: Metrics, max_output_bytes: int,
                 normalized_partitions: int = 0) -> None:
        """``normalized_partitions``: the partitions of the normalized topic, each of which
        gets the progress marks (0: none are written, for a reader that needs none)."""
        self.normalizer = normalizer
        self.encode = encode
        self.normalized_topic = normalized_topic
        self.dead_letters = dead_letters
        self.metrics = metrics
        self.output_budget = usable_bytes(max_output_bytes)
        self.marks = ProgressMarks(normalized_topic, normalized_partitions)

    def on_assign(self, consumer: Consumer, partitions: Sequence[TopicPartition]) -> None:
        self.marks.assigned((p.topic, p.partition) for p in partitions)

    def on_revoke(self, partitions: Sequence[TopicPartition]) -> None:
        self.marks.forget((p.topic, p.partition) for p in partitions)

    def on_abort(self, consumer: Consumer) -> None:
        self.marks.rollback()

    def report_progress(self, caught_up: Callable[[], dict[Partition, bool]], emit: Emit) -> None:
        if self.marks.partitions:
            self.metrics.progress_marks.inc(self.marks.emit(caught_up, emit))

    def restore(self, consumer: Consumer) -> bool:
        return True

    def tick(self, emit: Emit) -> None:
        return

    def on_resume(self) -> None:
        return

    def process(self, messages: Sequence[Message], emit: Emit) -> None:
        normalize = self.normalizer.normalize_all
        encode = self.encode
        out_topic = self.normalized_topic
        budget = self.output_budget
        saw = self.marks.saw
        if self.marks.partitions:
            self.metrics.progress_marks.inc(self.marks.announce(emit))
        labels: list[tuple[str | None, str, str]] = []  # counted once per batch, in C
        unknown: Counter[str] = Counter()
        skipped: Counter[tuple[str, str]] = Counter()
        dead: list[Message] = []
        reasons: list[str] = []

        def reject(msg: Message, reason: str, exc: Exception) -> None:
            self.dead_letters.send(emit, msg, reason, exc)
            dead.append(msg)
            reasons.append(reason)

        for msg in messages:
            raw = msg.value() or b""
            try:
                events = normalize(raw, msg.timestamp()[1])
            except OutOfScope as exc:  # a known vendor, not an instance: counted, not an error
                skipped[exc.vendor, exc.reason] += 1
                continue
            except RejectedEvent as exc:
                reject(msg, exc.reason, exc)
                log.debug("rejected", reason=exc.reason, error=str(exc), topic=msg.topic(),
                          partition=msg.partition(), offset=msg.offset())
                continue
            source: SourceRef = {"topic": msg.topic() or "", "partition": msg.partition() or 0,
                                 "offset": msg.offset() or 0}
            newest = NOTHING_YET
            for event in events:
                event["source"] = source
                t = notification_time(event)
                newest = max(newest, t)
            saw((source["topic"], source["partition"]), newest)
            try:
                values = [encode(event) for event in events]
            except (ValueError, TypeError, OverflowError) as exc:  # an adapter bug, not the input's
                reject(msg, "encoding", exc)
                log.error("encoding failed", error=str(exc), topic=msg.topic(),
                          partition=msg.partition(), offset=msg.offset())
                continue
            keys = [event_key(event).encode() for event in events]
            too_big = max(record_size(k, v, []) for k, v in zip(keys, values, strict=True))
            if too_big > budget:  # all of a record's events go, or none: it is one DLQ record
                reject(msg, "too_large", PayloadTooLarge(
                    f"normalized event of {too_big} bytes exceeds what {out_topic} accepts "
                    f"({budget} bytes)"))
                continue
            for event, key, value in zip(events, keys, values, strict=True):
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
        for (vendor, reason), n in skipped.items():
            m.skipped.labels(*m.vendor_labels(vendor), reason).inc(n)
        if dead:
            self.dead_letters.count(dead, reasons)
