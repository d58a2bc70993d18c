"""The normalize stage's processing, without a broker: every input record has exactly one place."""

from __future__ import annotations

from typing import Any

from confluent_kafka import Message
from hypothesis import given, settings
from hypothesis import strategies as st

from consumer.config import load_settings
from consumer.metrics import Metrics
from consumer.normalization import Normalizer
from consumer.runtime.deadletter import DeadLetters, record_size, usable_bytes
from consumer.runtime.normalize_stage import NormalizeProcessor
from consumer.serde import load_schemas, single_object_encoder
from tests.seeds import SEEDS

DLQ_LIMIT = 4096


def processor(metrics: Metrics, max_output_bytes: int = 1_048_588) -> NormalizeProcessor:
    schemas = load_schemas(load_settings({}).schema_dir)
    return NormalizeProcessor(
        Normalizer(max_payload_bytes=2048), single_object_encoder(schemas["InstanceEvent"]),
        "out", DeadLetters("dlq", "normalize", DLQ_LIMIT, metrics), metrics, max_output_bytes)


values = st.one_of(
    st.none(), st.binary(max_size=6000), st.sampled_from([s.raw for s in SEEDS]),
    st.recursive(st.just(b"1"), lambda inner: st.builds(lambda v: b"[" + v + b"]", inner),
                 max_leaves=3000))


@settings(max_examples=150, deadline=None)
@given(st.lists(values, max_size=20))
def test_every_record_goes_to_the_output_or_the_dlq_once_and_fits(batch: list[bytes | None]) -> None:
    metrics = Metrics()
    messages = [Message(topic="raw", partition=0, offset=i, key=b"k", value=v)
                for i, v in enumerate(batch)]
    sent: list[tuple[str, Any, Any, Any]] = []
    processor(metrics).process(messages, lambda topic, key, value, headers, p: sent.append(
        (topic, key, value, headers)))
    assert len(sent) == len(batch)
    dead = [s for s in sent if s[0] == "dlq"]
    for _, key, value, headers in dead:
        assert record_size(key, value, headers) <= usable_bytes(DLQ_LIMIT)
    counted = sum(metrics.registry.get_sample_value("vmevents_dlq_total", {"reason": r}) or 0
                  for r in ("malformed_json", "not_an_object", "unknown_vendor", "invalid_event",
                            "too_large", "encoding"))
    assert counted == len(dead)


def test_an_event_too_large_for_the_normalized_topic_is_a_dead_letter() -> None:
    metrics = Metrics()
    sent: list[tuple[str, Any]] = []
    raw = SEEDS[1].raw
    processor(metrics, max_output_bytes=600).process(
        [Message(topic="raw", partition=0, offset=0, value=raw)],
        lambda topic, key, value, headers, p: sent.append((topic, dict(headers or []))))
    [(topic, headers)] = sent
    assert topic == "dlq"
    assert headers["vmevents.dlq.reason"] == b"too_large"
    assert b"exceeds what out accepts" in headers["vmevents.dlq.error"]
