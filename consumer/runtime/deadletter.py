"""Dead letters: a rejected input record, as the DLQ record that says why (avro/DeadLetter.md).

Every stage sends what it cannot process here, never nowhere: the original key, value and headers
plus ``vmevents.dlq.*`` headers. A record that would not fit the DLQ topic (its
``max.message.bytes``, or the producer's ``message.max.bytes``) is cut to fit, and headers give the
original size and SHA-256, so the DLQ write itself can never fail on size and stop the stage.
The error header is redacted (:mod:`consumer.redact`) like every log line: the DLQ is read by
more people than the stage's configuration is.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

import structlog
from confluent_kafka import KafkaException, Message
from confluent_kafka.admin import ConfigResource, ResourceType  # type: ignore[attr-defined]

from consumer.config import Settings
from consumer.metrics import Metrics
from consumer.redact import redact
from consumer.runtime.clients import admin_client, producer_conf
from consumer.runtime.loop import Emit, Headers

log = structlog.get_logger(__name__)

KAFKA_DEFAULT_MAX_MESSAGE_BYTES = 1_048_588
"""Kafka's default ``message.max.bytes`` / ``max.message.bytes``: the fallback when unreadable."""

RECORD_OVERHEAD = 512
"""Bytes reserved per record for the batch header, varints, timestamps and attributes."""

ERROR_HEADER_LIMIT = 1024


def record_size(key: bytes | None, value: bytes | None, headers: Headers) -> int:
    """What one record weighs against a size limit, headers included (a safe upper bound)."""
    size = RECORD_OVERHEAD + len(key or b"") + len(value or b"")
    for name, hvalue in headers:
        size += len(name.encode()) + len(hvalue or b"") + 10
    return size


def usable_bytes(limit: int) -> int:
    """Of a broker's size limit, what one record may use.

    LZ4 and the other codecs can grow incompressible data (LZ4 by up to 1/255 + 16 bytes), and the
    broker checks the compressed batch.
    """
    return limit - limit // 255 - 64


@dataclass(frozen=True)
class DeadLetter:
    """One DLQ record: ``emit``-ready key, value and headers."""

    key: bytes | None
    value: bytes | None
    headers: Headers
    truncated: bool


def dead_letter(msg: Message, *, stage: str, reason: str, error: BaseException,
                limit: int) -> DeadLetter:
    """The DLQ record for ``msg``: original key, value and headers, then ``vmevents.dlq.*``.

    The original headers of a re-driven record include its ``vmevents.redrive.*`` audit headers,
    so a record that fails again after ``vmevents dlq redrive`` is recognised, not looped.

    ``limit`` is the most bytes the DLQ topic and the producer accept for one record. Over it,
    the original headers are dropped first, then the key and value are cut so that the record
    fits; ``vmevents.dlq.truncated`` and the original size and SHA-256 say so.
    """
    key, value = msg.key(), msg.value()
    original: Headers = list(msg.headers() or [])  # type: ignore[arg-type]
    _, ts = msg.timestamp()
    ours: Headers = [
        ("vmevents.dlq.reason", reason.encode()),
        ("vmevents.dlq.error",
         _clip(redact(str(error)), ERROR_HEADER_LIMIT).encode("utf-8", "replace")),
        ("vmevents.dlq.exception", type(error).__name__.encode()),
        ("vmevents.dlq.stage", stage.encode()),
        ("vmevents.dlq.source.topic", (msg.topic() or "").encode()),
        ("vmevents.dlq.source.partition", str(msg.partition()).encode()),
        ("vmevents.dlq.source.offset", str(msg.offset()).encode()),
        ("vmevents.dlq.source.timestamp", str(ts).encode()),
    ]
    budget = usable_bytes(limit)
    if record_size(key, value, [*original, *ours]) <= budget:
        return DeadLetter(key, value, [*original, *ours], truncated=False)
    size_headers: Headers = [
        ("vmevents.dlq.truncated", b"true"),
        ("vmevents.dlq.original.size", str(len(value or b"")).encode()),
        ("vmevents.dlq.original.sha256", hashlib.sha256(value or b"").hexdigest().encode()),
        ("vmevents.dlq.original.key.size", str(len(key or b"")).encode()),
        ("vmevents.dlq.original.headers", str(len(original)).encode()),
    ]
    # The original headers are the first thing to go, except a re-drive's audit trail
    # (``vmevents.redrive.*``), which tells ``vmevents dlq`` that this record failed again.
    redrive = [(k, v) for k, v in original if k.startswith("vmevents.redrive.")]
    headers = [*ours, *size_headers, *redrive]
    room = budget - record_size(None, None, headers)
    if room < 0:
        raise ValueError(f"a DLQ limit of {limit} bytes cannot hold the DLQ headers")
    cut_key = key[: min(len(key), room // 2)] if key is not None else None
    room -= len(cut_key or b"")
    cut_value = value[:room] if value is not None else None
    return DeadLetter(cut_key, cut_value, headers, truncated=True)


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


class DeadLetters:
    """A stage's DLQ writer: sizes records to the DLQ topic and counts each input record once.

    ``vmevents_dlq_total`` counts records, not attempts: an aborted batch is processed again,
    so a record is counted only when its offset is past the highest one counted for its partition.
    """

    def __init__(self, topic: str, stage: str, limit: int, metrics: Metrics) -> None:
        self.topic = topic
        self.stage = stage
        self.limit = limit
        self.metrics = metrics
        self._counted: dict[tuple[str, int], int] = {}

    def send(self, emit: Emit, msg: Message, reason: str, error: BaseException) -> DeadLetter:
        letter = dead_letter(msg, stage=self.stage, reason=reason, error=error, limit=self.limit)
        emit(self.topic, letter.key, letter.value, letter.headers, -1)
        if letter.truncated:
            log.warning("dead letter truncated to fit the DLQ topic", stage=self.stage,
                        reason=reason, size=len(msg.value() or b""), limit=self.limit,
                        topic=msg.topic(), partition=msg.partition(), offset=msg.offset())
        return letter

    def count(self, messages: Sequence[Message], reasons: Sequence[str]) -> None:
        """Count the batch's dead letters (``reasons[i]`` for ``messages[i]``), each offset once."""
        fresh: Counter[str] = Counter()
        counted = self._counted
        for msg, reason in zip(messages, reasons, strict=True):
            tp = (msg.topic() or "", msg.partition() or 0)
            offset = msg.offset() or 0
            if offset > counted.get(tp, -1):
                counted[tp] = offset
                fresh[reason] += 1
        for reason, n in fresh.items():
            self.metrics.dlq.labels(reason).inc(n)


def topic_max_message_bytes(settings: Settings, topic: str, timeout: float = 15) -> int:
    """The broker's size limit for one record batch on ``topic``.

    The topic's ``max.message.bytes`` (which reports the broker default when the topic does not
    override it), or Kafka's default when the topic cannot be described (missing, no
    DescribeConfigs permission, or no answer within ``timeout``: a slow or absent broker at
    start must not stop the stage, which then waits for it like any outage).
    """
    resource = ConfigResource(ResourceType.TOPIC, topic)
    try:
        futures = admin_client(settings).describe_configs([resource], request_timeout=timeout)
        entries = futures[resource].result(timeout)
        return int(entries["max.message.bytes"].value)
    except TimeoutError:
        log.warning("topic limits not described in time: Kafka's default assumed", topic=topic,
                    assumed_bytes=KAFKA_DEFAULT_MAX_MESSAGE_BYTES, timeout_seconds=timeout)
        return KAFKA_DEFAULT_MAX_MESSAGE_BYTES
    except (KafkaException, KeyError, ValueError, TypeError):
        return KAFKA_DEFAULT_MAX_MESSAGE_BYTES


def max_record_bytes(settings: Settings, topic: str) -> int:
    """Bytes one record may take on ``topic``: the smaller of its limit and the producer's."""
    producer_max = int(producer_conf(settings, None)["message.max.bytes"])
    return min(topic_max_message_bytes(settings, topic), producer_max)
