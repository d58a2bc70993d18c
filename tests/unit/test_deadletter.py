"""Dead letters: whatever the input record, its DLQ copy fits the DLQ topic and says what it was."""

from __future__ import annotations

import hashlib
import socket

from confluent_kafka import Message
from hypothesis import given, settings
from hypothesis import strategies as st

from consumer.config import load_settings
from consumer.errors import InvalidEvent, MalformedJson
from consumer.metrics import Metrics
from consumer.redact import REDACTOR
from consumer.runtime.deadletter import (
    KAFKA_DEFAULT_MAX_MESSAGE_BYTES,
    DeadLetters,
    dead_letter,
    record_size,
    topic_max_message_bytes,
    usable_bytes,
)

LIMIT = 1_048_588  # Kafka's default max.message.bytes


def message(value: bytes | None, key: bytes | None = b"k", headers: list | None = None,
            offset: int = 7, partition: int = 2) -> Message:
    return Message(topic="vm.events.raw", partition=partition, offset=offset, key=key, value=value,
                   headers=headers, timestamp=(1, 1_700_000_000_000))


def test_a_small_record_is_kept_byte_for_byte_with_its_headers() -> None:
    msg = message(b"{not json", headers=[("trace", b"abc")])
    letter = dead_letter(msg, stage="normalize", reason="malformed_json",
                         error=MalformedJson("not valid JSON"), limit=LIMIT)
    headers = dict(letter.headers)
    assert not letter.truncated
    assert (letter.key, letter.value) == (b"k", b"{not json")
    assert letter.headers[0] == ("trace", b"abc")  # the original headers come first
    assert headers["vmevents.dlq.reason"] == b"malformed_json"
    assert headers["vmevents.dlq.stage"] == b"normalize"
    assert headers["vmevents.dlq.source.topic"] == b"vm.events.raw"
    assert headers["vmevents.dlq.source.partition"] == b"2"
    assert headers["vmevents.dlq.source.offset"] == b"7"
    assert "vmevents.dlq.truncated" not in headers


def test_the_error_header_is_redacted() -> None:
    """An exception message may echo a registry URL or a configuration; the DLQ must not."""
    REDACTOR.add(["dlq-registered-S3CRET"])
    error = InvalidEvent("cannot normalize: registry http://alice:pw-in-url@registry:8081 said "
                         "no; conf sasl.password=hunter2-in-text, key dlq-registered-S3CRET")
    letter = dead_letter(message(b"{}"), stage="normalize", reason="invalid_event", error=error,
                         limit=LIMIT)
    header = dict(letter.headers)["vmevents.dlq.error"].decode()
    for secret in ("pw-in-url", "hunter2-in-text", "dlq-registered-S3CRET"):
        assert secret not in header
    assert header == ("cannot normalize: registry http://alice:***@registry:8081 said no; "
                      "conf sasl.password=***, key ***")


def test_a_record_too_large_for_the_dlq_is_cut_and_says_so() -> None:
    value = bytes(range(256)) * 8000  # 2 MB
    letter = dead_letter(message(value, headers=[("big", b"x" * 5000)]), stage="normalize",
                         reason="too_large", error=ValueError("too large"), limit=LIMIT)
    headers = dict(letter.headers)
    assert letter.truncated
    assert record_size(letter.key, letter.value, letter.headers) <= usable_bytes(LIMIT)
    assert letter.value is not None
    assert value.startswith(letter.value)
    assert len(letter.value) > 1_000_000  # as much of the original as fits
    assert headers["vmevents.dlq.truncated"] == b"true"
    assert headers["vmevents.dlq.original.size"] == str(len(value)).encode()
    assert headers["vmevents.dlq.original.sha256"] == hashlib.sha256(value).hexdigest().encode()
    assert headers["vmevents.dlq.original.headers"] == b"1"
    assert "big" not in headers
    assert headers["vmevents.dlq.source.offset"] == b"7"


@settings(max_examples=60, deadline=None)
@given(key=st.one_of(st.none(), st.binary(max_size=3000)),
       value=st.one_of(st.none(), st.binary(max_size=6000)),
       headers=st.lists(st.tuples(st.text(max_size=20), st.one_of(st.none(), st.binary(max_size=900))),
                        max_size=5),
       limit=st.integers(min_value=2500, max_value=8000))
def test_every_dead_letter_fits_its_limit_and_keeps_a_prefix(
        key: bytes | None, value: bytes | None, headers: list, limit: int) -> None:
    letter = dead_letter(message(value, key, headers or None), stage="correlate",
                         reason="undecodable", error=ValueError("x" * 5000), limit=limit)
    assert record_size(letter.key, letter.value, letter.headers) <= usable_bytes(limit)
    assert (letter.value or b"") == (value or b"")[: len(letter.value or b"")]
    assert (letter.key or b"") == (key or b"")[: len(letter.key or b"")]
    ours = dict(letter.headers)
    assert letter.truncated == ("vmevents.dlq.truncated" in ours)
    if letter.truncated:
        assert ours["vmevents.dlq.original.sha256"] == hashlib.sha256(value or b"").hexdigest().encode()
        assert ours["vmevents.dlq.original.size"] == str(len(value or b"")).encode()
    else:
        assert (letter.key, letter.value) == (key, value)
        assert letter.headers[: len(headers)] == headers


def test_an_aborted_and_retried_batch_counts_each_record_once() -> None:
    metrics = Metrics()
    letters = DeadLetters("dlq", "normalize", LIMIT, metrics)
    batch = [message(b"x", offset=o, partition=p) for p in (0, 1) for o in (3, 4)]
    letters.count(batch, ["malformed_json"] * 4)
    letters.count(batch, ["malformed_json"] * 4)  # the same batch after an abort and rewind
    letters.count([*batch[1:2], message(b"x", offset=5, partition=0)], ["malformed_json"] * 2)
    assert metrics.registry.get_sample_value("vmevents_dlq_total", {"reason": "malformed_json"}) == 5


def test_a_broker_that_does_not_answer_gives_kafkas_default_limit() -> None:
    """At start the stage asks the broker for the topic's limit; no answer in time is not a
    crash (the loop then waits for the broker like for any outage)."""
    with socket.socket() as silent:  # accepts connections, never answers a request
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        port = silent.getsockname()[1]
        for bootstrap in (f"127.0.0.1:{port}", "127.0.0.1:9"):  # silent, then nobody there
            settings = load_settings({"KAFKA_BOOTSTRAP_SERVERS": bootstrap})
            assert topic_max_message_bytes(settings, "vm.events.dlq", timeout=0.5) == (
                KAFKA_DEFAULT_MAX_MESSAGE_BYTES)
