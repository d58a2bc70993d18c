"""The normalize stage against a real broker: exactly-once across SIGKILL, DLQ, aborts, registry."""

from __future__ import annotations

import contextlib
import signal
import threading
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Message

from consumer import synthetic
from consumer.app import normalize_loop
from consumer.config import Settings, load_settings
from consumer.errors import KafkaRuntimeError
from consumer.http import Health
from consumer.metrics import Metrics
from consumer.serde import Decoder, load_schemas
from tests.integration.kafkatools import (
    committed_total,
    create_topics,
    headers_of,
    produce,
    read_all,
    stage_env,
    start_stage,
    unique,
)
from tests.seeds import SEEDS

pytestmark = pytest.mark.kafka

BAD = [b"{not json", b"[1, 2, 3]", b'{"hello": "world"}',
       b'{"eventAction": "SystemFailure.Reboot", "eventTime": "yesterday", "instanceId": "i-1"}']


def wait_for(predicate: Any, timeout: float, what: str, proc: Any = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"stage exited with {proc.returncode} while waiting for {what}")
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def raw_stream(n_ops: int) -> list[bytes]:
    """Synthetic pairs with a bad record every 50th and the 36 seed payloads mixed in."""
    values = synthetic.stream(synthetic.operations(n_ops, instances=300))
    mixed: list[bytes] = []
    for i, v in enumerate(values):
        mixed.append(v)
        if i % 50 == 0:
            mixed.append(BAD[(i // 50) % len(BAD)])
    mixed.extend(s.raw for s in SEEDS)
    return mixed


def coordinates(normalized: Sequence[Message], dlq: Sequence[Message]) -> Counter[tuple[int, int]]:
    decoder = Decoder(load_schemas(load_settings({}).schema_dir))
    seen: Counter[tuple[int, int]] = Counter()
    for m in normalized:
        src = decoder.decode(m.value())["source"]
        seen[(src["partition"], src["offset"])] += 1
    for m in dlq:
        h = headers_of(m)
        seen[(int(h["vmevents.dlq.source.partition"]), int(h["vmevents.dlq.source.offset"]))] += 1
    return seen


@pytest.mark.apache_kafka
def test_every_raw_record_lands_exactly_once_after_sigkill(kafka_stack: Any, tmp_path: Path) -> None:
    bootstrap = kafka_stack.bootstrap
    raw, out, dlq = unique("raw"), unique("normalized"), unique("dlq")
    group = unique("normalize")
    create_topics(bootstrap, {raw: 3, out: 3, dlq: 1})
    values = raw_stream(12_000)
    total = produce(bootstrap, raw, values)
    env = stage_env(bootstrap, VMEVENTS_RAW_TOPICS=raw, VMEVENTS_NORMALIZED_TOPIC=out,
                    VMEVENTS_DLQ_TOPIC=dlq, VMEVENTS_NORMALIZE_GROUP=group,
                    VMEVENTS_TRANSACTIONAL_ID=unique("txn"), VMEVENTS_BATCH_SIZE="300")
    log = tmp_path / "stage.log"
    kills = 0
    for threshold in (total // 5, total // 2):
        proc = start_stage("normalize", env, log)
        wait_for(lambda t=threshold: committed_total(bootstrap, group, raw) >= t, 120,
                 f"{threshold} committed", proc)
        proc.send_signal(signal.SIGKILL)  # mid-stream: no chance to finish its transaction
        proc.wait(10)
        kills += 1
    proc = start_stage("normalize", env, log)
    wait_for(lambda: committed_total(bootstrap, group, raw) >= total, 180, "all committed", proc)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(60) == 0, log.read_text()[-3000:]

    bad_count = sum(1 for v in values if v in BAD)
    normalized = read_all(bootstrap, [out], expected=total - bad_count)
    dead = read_all(bootstrap, [dlq], expected=bad_count)
    seen = coordinates(normalized, dead)
    raw_records = read_all(bootstrap, [raw], expected=total, isolation="read_uncommitted")
    expected = Counter((m.partition(), m.offset()) for m in raw_records)
    assert len(raw_records) == total
    duplicates = {k: n for k, n in seen.items() if n > 1}
    missing = set(expected) - set(seen)
    assert not duplicates, f"{len(duplicates)} raw records were output twice after {kills} kills"
    assert not missing, f"{len(missing)} raw records were lost after {kills} kills"
    assert seen == expected
    assert len(dead) == bad_count
    assert "stage started" in log.read_text()


def in_process_stage(bootstrap: str, values: list[bytes], **env: str) -> tuple[Settings, str, str, str]:
    """Fresh raw/normalized/DLQ topics with ``values`` on the raw one, and settings to run on them."""
    raw, out, dlq = unique("raw"), unique("normalized"), unique("dlq")
    create_topics(bootstrap, {raw: 1, out: 1, dlq: 1})
    produce(bootstrap, raw, values, keyed=True)
    settings = load_settings(stage_env(
        bootstrap, VMEVENTS_RAW_TOPICS=raw, VMEVENTS_NORMALIZED_TOPIC=out, VMEVENTS_DLQ_TOPIC=dlq,
        VMEVENTS_NORMALIZE_GROUP=unique("g"), VMEVENTS_TRANSACTIONAL_ID=unique("txn"), **env))
    return settings, raw, out, dlq


@pytest.mark.apache_kafka
def test_dlq_keeps_the_original_bytes_and_says_why(kafka_stack: Any) -> None:
    bootstrap = kafka_stack.bootstrap
    big = b'{"detail": {"eventAction": "StateChange", "pad": "' + b"x" * 5000 + b'"}}'
    inputs = [*BAD, big, SEEDS[1].raw]
    settings, raw, out, dlq = in_process_stage(bootstrap, inputs, VMEVENTS_MAX_MESSAGE_BYTES="4096")
    metrics = Metrics()
    run_in_thread(normalize_loop(settings, metrics, Health()),
                  lambda: committed_total(bootstrap, settings.normalize_group, raw) >= len(inputs))
    dead = read_all(bootstrap, [dlq], expected=5)
    assert [m.value() for m in dead] == [*BAD, big]
    reasons = [headers_of(m)["vmevents.dlq.reason"] for m in dead]
    assert reasons == ["malformed_json", "not_an_object", "unknown_vendor", "invalid_event", "too_large"]
    first = headers_of(dead[0])
    assert first["vmevents.dlq.source.topic"] == raw
    assert first["vmevents.dlq.source.partition"] == "0"
    assert first["vmevents.dlq.source.offset"] == "0"
    assert first["vmevents.dlq.exception"] == "MalformedJson"
    assert first["vmevents.dlq.stage"] == "normalize"
    assert first["vmevents.dlq.error"]
    assert dead[0].key() == b"0"
    assert len(read_all(bootstrap, [out], expected=1)) == 1
    assert metrics.registry.get_sample_value("vmevents_dlq_total", {"reason": "too_large"}) == 1
    assert metrics.registry.get_sample_value(
        "vmevents_events_total",
        {"stage": "normalize", "vendor": "jdcloud", "operation": "failure.delete", "phase": "executing"}) == 1


@contextlib.contextmanager
def running(loop: Any) -> Iterator[list[BaseException]]:
    """The stage loop on a thread while the block runs; yields what it raised (if anything)."""
    stop = threading.Event()
    errors: list[BaseException] = []

    def target() -> None:
        try:
            loop.run(stop)
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    try:
        yield errors
    finally:
        stop.set()
        thread.join(60)


def run_in_thread(loop: Any, done: Any, timeout: float = 120) -> None:
    with running(loop) as errors:
        wait_for(lambda: done() or bool(errors), timeout, "the stage to finish")
    assert not errors, errors


class AbortOnce:
    """Wraps a processor: the first batch emits its output, then fails as an abortable error."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.stage = inner.stage
        self.failed = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def process(self, messages: Sequence[Message], emit: Any) -> None:
        self.inner.process(messages, emit)
        if messages and not self.failed:
            self.failed = len(messages)
            # Give librdkafka time to send the batch: the aborted records must really be on the
            # log (abort purges what is still queued locally), or the test would prove nothing.
            time.sleep(1.0)
            raise KafkaRuntimeError("injected", txn_requires_abort=True)


@pytest.mark.apache_kafka
def test_aborted_transaction_is_invisible_to_read_committed(kafka_stack: Any) -> None:
    bootstrap = kafka_stack.bootstrap
    values = [s.raw for s in SEEDS]
    settings, raw, out, _ = in_process_stage(bootstrap, values)
    metrics = Metrics()
    loop = normalize_loop(settings, metrics, Health())
    wrapped = AbortOnce(loop.processor)
    loop.processor = wrapped
    run_in_thread(loop, lambda: committed_total(bootstrap, settings.normalize_group, raw) >= len(values))
    assert wrapped.failed > 0
    assert metrics.registry.get_sample_value("vmevents_transaction_aborts_total", {"stage": "normalize"}) == 1
    committed = read_all(bootstrap, [out], expected=len(values))
    everything = read_all(bootstrap, [out], isolation="read_uncommitted",
                          expected=len(values) + wrapped.failed)
    assert len(committed) == len(values)
    assert len(everything) == len(values) + wrapped.failed  # the aborted copy is on the log...
    offsets = Counter(Decoder(load_schemas(settings.schema_dir)).decode(m.value())["source"]["offset"]
                      for m in committed)
    assert offsets == Counter(range(len(values)))  # ...but read_committed sees each record once


@pytest.mark.registry
def test_registry_framed_records_decode_with_confluents_avro_deserializer(kafka_stack: Any) -> None:
    from confluent_kafka.schema_registry import SchemaRegistryClient
    from confluent_kafka.schema_registry.avro import AvroDeserializer
    from confluent_kafka.serialization import MessageField, SerializationContext

    bootstrap = kafka_stack.bootstrap
    values = [s.raw for s in SEEDS]
    settings, raw, out, _ = in_process_stage(bootstrap, values, SCHEMA_REGISTRY_URL=kafka_stack.registry_url)
    run_in_thread(normalize_loop(settings, Metrics(), Health()),
                  lambda: committed_total(bootstrap, settings.normalize_group, raw) >= len(values))
    records = read_all(bootstrap, [out], expected=len(values))
    assert len(records) == len(values)
    deserialize = AvroDeserializer(SchemaRegistryClient({"url": kafka_stack.registry_url,
                                                         "timeout": 10}))
    decoded = [deserialize(m.value(), SerializationContext(out, MessageField.VALUE)) for m in records]
    assert all(m.value()[:1] == b"\x00" for m in records)
    by_offset = {d["source"]["offset"]: d for d in decoded}
    reboot = by_offset[3]  # the JD SystemFailure.Reboot Executing snippet
    assert reboot["vendor"] == "jdcloud"
    assert reboot["instance_id"] == "i-bc4****9oh"
    assert reboot["vendor_event_code"] == "SystemFailure.Reboot"
    assert reboot["operation"] == "failure.reboot"
    assert reboot["phase"] == "executing"
    assert reboot["event_time"].isoformat() == "2021-02-24T22:44:06+00:00"
    assert {d["vendor"] for d in decoded} == {"jdcloud", "aliyun"}
    keys = {m.key() for m in records}
    assert b"jdcloud:i-bc4****9oh" in keys
