"""Poison records through real Kafka: no input can stop a stage, and none is lost.

Each stage runs in-process (tests/integration/test_normalize_stage.py's ``run_in_thread``) on fresh
topics holding valid records with poison between them. Every input must end exactly once in the
stage's output or in the DLQ (read_committed), the DLQ copy saying what it was, and the valid
records around the poison must be processed.
"""

from __future__ import annotations

import hashlib
import random
import struct
import threading
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from confluent_kafka import Producer

from consumer import synthetic
from consumer.app import correlate_loop, normalize_loop
from consumer.config import Settings, load_settings
from consumer.http import Health
from consumer.metrics import Metrics
from consumer.normalization import Normalizer
from consumer.runtime.clients import registry_fetcher, value_encoder
from consumer.serde import Decoder, load_schemas, single_object_encoder
from tests.integration.kafkatools import (
    committed_total,
    create_topics,
    headers_of,
    produce,
    read_all,
    stage_env,
    unique,
)
from tests.integration.test_correlate_stage import outcome_topics
from tests.integration.test_normalize_stage import (
    AbortOnce,
    coordinates,
    run_in_thread,
    running,
    wait_for,
)
from tests.seeds import SEEDS

pytestmark = [pytest.mark.kafka, pytest.mark.apache_kafka]

MB = 1_000_000
KAFKA_DEFAULT_LIMIT = 1_048_588


def raw_poison() -> dict[str, bytes | None]:
    rng = random.Random(7)
    return {
        "2 MB incompressible": rng.randbytes(2 * MB),
        "1.1 MB incompressible": rng.randbytes(1_100_000),
        "null": None,
        "empty": b"",
        "binary": bytes(range(256)) * 4,
        "deeply nested array": b"[" * 100_000 + b"]" * 100_000,
        "deeply nested object": b'{"detail": ' * 5000 + b"1" + b"}" * 5000,
    }


@pytest.mark.timeout(180)
def test_no_raw_record_stops_the_normalize_stage(kafka_stack: Any) -> None:
    bootstrap = kafka_stack.bootstrap
    raw, out, dlq = unique("raw"), unique("normalized"), unique("dlq")
    create_topics(bootstrap, {raw: 1}, {"max.message.bytes": str(3 * MB)})  # accepts 2 MB
    create_topics(bootstrap, {out: 1, dlq: 1})  # the broker's default limit
    poison = raw_poison()
    valid = [s.raw for s in SEEDS]
    values: list[bytes | None] = []
    for i, v in enumerate(valid):  # a valid record on each side of every poison record
        values.append(v)
        if i < len(poison):
            values.append(list(poison.values())[i])
    produce(bootstrap, raw, [(str(i).encode(), v) for i, v in enumerate(values)],
            config={"message.max.bytes": 3 * MB})
    settings = load_settings(stage_env(
        bootstrap, VMEVENTS_RAW_TOPICS=raw, VMEVENTS_NORMALIZED_TOPIC=out, VMEVENTS_DLQ_TOPIC=dlq,
        VMEVENTS_NORMALIZE_GROUP=unique("g"), VMEVENTS_TRANSACTIONAL_ID=unique("txn"),
        VMEVENTS_BATCH_SIZE="4"))
    metrics = Metrics()
    loop = normalize_loop(settings, metrics, Health())
    loop.processor = wrapped = AbortOnce(loop.processor)  # the first batch is aborted and redone
    run_in_thread(loop, lambda: committed_total(bootstrap, settings.normalize_group, raw) >= len(values))

    normalized = read_all(bootstrap, [out], expected=len(valid))
    dead = read_all(bootstrap, [dlq], expected=len(poison))
    assert wrapped.failed > 0
    assert coordinates(normalized, dead) == Counter((0, offset) for offset in range(len(values)))
    assert len(normalized) == len(valid)
    by_offset = {int(headers_of(m)["vmevents.dlq.source.offset"]): m for m in dead}
    assert sorted(by_offset) == [2 * i + 1 for i in range(len(poison))]
    for i, (name, original) in enumerate(poison.items()):
        msg = by_offset[2 * i + 1]
        h = headers_of(msg)
        assert h["vmevents.dlq.stage"] == "normalize", name
        assert msg.key() == str(2 * i + 1).encode(), name
        if original is not None and len(original) > KAFKA_DEFAULT_LIMIT - 8192:
            assert h["vmevents.dlq.reason"] == "too_large", name
            assert h["vmevents.dlq.truncated"] == "true", name
            assert h["vmevents.dlq.original.size"] == str(len(original)), name
            assert h["vmevents.dlq.original.sha256"] == hashlib.sha256(original).hexdigest(), name
            assert original.startswith(msg.value()), name
            assert len(msg.value()) > len(original) // 3, name  # as much as fits, not nothing
        else:
            assert msg.value() == original, name
            assert "vmevents.dlq.truncated" not in h, name
            assert h["vmevents.dlq.reason"] in ("malformed_json", "not_an_object",
                                                "unknown_vendor", "invalid_event"), name
    counted = sum(metrics.registry.get_sample_value("vmevents_dlq_total", {"reason": r}) or 0
                  for r in ("too_large", "malformed_json", "not_an_object", "unknown_vendor",
                            "invalid_event"))
    assert counted == len(poison)  # records, not attempts: the aborted batch counts once


def correlate_settings(kafka_stack: Any, registry_url: str) -> tuple[Settings, str, str, str]:
    """Fresh normalized/DLQ/changelog topics and settings for an in-process correlate stage."""
    bootstrap = kafka_stack.bootstrap
    normalized, dlq, changelog = unique("normalized"), unique("dlq"), unique("changelog")
    prefix = f"{unique('out')}."
    create_topics(bootstrap, {normalized: 1, dlq: 1})
    create_topics(bootstrap, {changelog: 1}, {"cleanup.policy": "compact"})
    settings = load_settings(stage_env(
        bootstrap, VMEVENTS_NORMALIZED_TOPIC=normalized, VMEVENTS_DLQ_TOPIC=dlq,
        VMEVENTS_CHANGELOG_TOPIC=changelog, VMEVENTS_OUTCOME_TOPIC_PREFIX=prefix,
        VMEVENTS_CORRELATE_GROUP=unique("corr"), VMEVENTS_TRANSACTIONAL_ID=unique("txn"),
        VMEVENTS_BATCH_SIZE="3", SCHEMA_REGISTRY_URL=registry_url,
        # the reorder buffer is released after 1 s of quiet, not the production 10 min
        VMEVENTS_CORRELATE_ALLOWED_LATENESS="1s"))
    return settings, normalized, dlq, prefix


def normalized_records(settings: Settings, n_ops: int,
                       framing: str = "confluent") -> list[tuple[bytes, bytes]]:
    """``n_ops`` completed operations as InstanceEvents, keyed by instance; Confluent-framed
    (the schema registered now) or single-object."""
    schemas = load_schemas(settings.schema_dir)
    encode = (value_encoder(settings, schemas["InstanceEvent"], settings.normalized_topic)
              if framing == "confluent" else single_object_encoder(schemas["InstanceEvent"]))
    normalizer = Normalizer()
    records = []
    for key, raw in synthetic.keyed_stream(synthetic.operations(n_ops, instances=n_ops)):
        event: Any = normalizer.normalize(raw)
        event["source"] = {"topic": "raw", "partition": 0, "offset": len(records)}
        records.append((key, encode(event)))
    return records


def produce_with_headers(bootstrap: str, topic: str,
                         records: list[tuple[bytes | None, bytes | None]]) -> None:
    producer = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True})
    for i, (key, value) in enumerate(records):
        producer.produce(topic, value, key, headers=[("trace-id", f"t-{i}".encode())])
    assert producer.flush(30) == 0


def outcomes_of(bootstrap: str, prefix: str, expected: int, settings: Settings) -> list[dict[str, Any]]:
    decoder = Decoder(load_schemas(settings.schema_dir), registry_fetcher(settings))
    records = read_all(bootstrap, outcome_topics(bootstrap, prefix), expected=expected)
    return [decoder.decode(m.value()) for m in records]


@pytest.mark.registry
@pytest.mark.timeout(180)
def test_undecodable_correlate_input_goes_to_the_dlq_with_its_bytes_and_headers(kafka_stack: Any) -> None:
    bootstrap = kafka_stack.bootstrap
    settings, normalized, dlq, prefix = correlate_settings(kafka_stack, kafka_stack.registry_url)
    good = normalized_records(settings, 4)
    schemas = load_schemas(settings.schema_dir)
    foreign = value_encoder(settings, schemas["DeadLetter"], unique("foreign"))(
        {"reason": "r", "error": "e", "exception": "X", "stage": "normalize", "source_topic": "t",
         "source_partition": 0, "source_offset": 1, "source_timestamp": None, "payload": b""})
    body = good[0][1]
    poison: dict[str, bytes | None] = {
        "unknown schema id": b"\x00" + struct.pack(">I", 987_654) + body[5:],
        "truncated body": body[: len(body) // 2],
        "bad magic byte": b"\x07" + body[1:],
        "wrong schema": foreign,
        "null": None,
    }
    records: list[tuple[bytes | None, bytes | None]] = []
    for i, (key, value) in enumerate(good):
        records.append((key, value))
        if i < len(poison):
            records.append((f"poison-{i}".encode(), list(poison.values())[i]))
    produce_with_headers(bootstrap, normalized, records)
    metrics = Metrics()
    run_in_thread(correlate_loop(settings, metrics, Health()),
                  lambda: committed_total(bootstrap, settings.correlate_group, normalized) >= len(records))

    dead = read_all(bootstrap, [dlq], expected=len(poison))
    outcomes = outcomes_of(bootstrap, prefix, 4, settings)
    assert Counter(o["outcome"] for o in outcomes) == {"completed": 4}
    assert len({(o["instance_id"], o["started_at"]) for o in outcomes}) == 4  # each exactly once
    assert len(dead) == len(poison)
    for i, (name, original) in enumerate(poison.items()):
        offset = 2 * i + 1
        [msg] = [m for m in dead if headers_of(m)["vmevents.dlq.source.offset"] == str(offset)]
        h = headers_of(msg)
        assert msg.value() == original, name
        assert msg.key() == f"poison-{i}".encode(), name
        assert h["trace-id"] == f"t-{offset}", name  # the original headers travel along
        assert h["vmevents.dlq.stage"] == "correlate", name
        assert h["vmevents.dlq.reason"] == "undecodable", name
        assert h["vmevents.dlq.source.topic"] == normalized, name
        assert h["vmevents.dlq.exception"] == "SerdeError", name
    assert "987654" in headers_of(dead[0])["vmevents.dlq.error"]
    assert metrics.registry.get_sample_value("vmevents_dlq_total", {"reason": "undecodable"}) == len(poison)


class FlakyRegistry:
    """An HTTP proxy in front of the real registry that answers 503 while ``down`` is set."""

    def __init__(self, upstream: str) -> None:
        self.down = threading.Event()
        self.refused = 0
        proxy = self
        origin = upstream.split("/apis/", 1)[0]

        class Handler(BaseHTTPRequestHandler):
            def _forward(self) -> None:
                if proxy.down.is_set():
                    proxy.refused += 1
                    self._reply(503, b'{"error_code": 50301, "message": "unavailable"}')
                    return
                length = int(self.headers.get("Content-Length") or 0)
                request = urllib.request.Request(
                    origin + self.path, data=self.rfile.read(length) if length else None,
                    method=self.command,
                    headers={k: v for k, v in self.headers.items()
                             if k.lower() in ("content-type", "accept")})
                try:
                    with urllib.request.urlopen(request, timeout=10) as answer:
                        self._reply(answer.status, answer.read())
                except urllib.error.HTTPError as exc:
                    self._reply(exc.code, exc.read())

            do_GET = do_POST = do_PUT = _forward

            def _reply(self, code: int, body: bytes) -> None:
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:
                return

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        port = self.server.server_address[1]
        self.url = f"http://127.0.0.1:{port}/apis/{upstream.split('/apis/', 1)[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


@pytest.fixture
def flaky_registry(kafka_stack: Any) -> Iterator[FlakyRegistry]:
    registry = FlakyRegistry(kafka_stack.registry_url)
    yield registry
    registry.server.shutdown()
    registry.server.server_close()


@pytest.mark.registry
@pytest.mark.timeout(180)
@pytest.mark.parametrize("framing", ["confluent", "single-object"])
def test_a_registry_outage_is_waited_out_not_dead_lettered(kafka_stack: Any, framing: str,
                                                           flaky_registry: FlakyRegistry) -> None:
    """Confluent-framed input meets the outage decoding (schema lookup); single-object input
    decodes without the registry and meets it registering the outcome schema."""
    bootstrap = kafka_stack.bootstrap
    settings, normalized, dlq, prefix = correlate_settings(kafka_stack, flaky_registry.url)
    records = normalized_records(settings, 3, framing)  # registered while the registry is up
    produce(bootstrap, normalized, records)
    flaky_registry.down.set()
    health = Health()
    metrics = Metrics()
    with running(correlate_loop(settings, metrics, health)) as errors:
        wait_for(lambda: health.reason.startswith("retrying") or bool(errors), 60,
                 "the stage to back off")
        assert not errors, errors
        assert not health.ready
        assert "schema registry" in health.reason
        assert committed_total(bootstrap, settings.correlate_group, normalized) < len(records)
        flaky_registry.down.clear()
        wait_for(lambda: committed_total(bootstrap, settings.correlate_group, normalized)
                 >= len(records) or bool(errors), 90, "the stage to catch up")
        wait_for(lambda: health.ready, 10, "readiness to come back")
        outcomes = outcomes_of(bootstrap, prefix, 3, settings)  # while the stage runs
    assert not errors, errors
    assert flaky_registry.refused > 0
    assert Counter(o["outcome"] for o in outcomes) == {"completed": 3}
    assert read_all(bootstrap, [dlq], settle=1) == []
    assert metrics.registry.get_sample_value("vmevents_dlq_total", {"reason": "undecodable"}) == 0
    assert (metrics.registry.get_sample_value("vmevents_transaction_aborts_total",
                                              {"stage": "correlate"}) or 0) >= 1
