"""``vmevents tail`` on a real broker: both Avro wire formats, DLQ headers, read_committed, filters,
start positions and --follow."""

from __future__ import annotations

import io
import os
import subprocess
import sys
import time
from typing import Any

import orjson
import pytest
from confluent_kafka import Producer

from consumer.config import Settings, load_settings
from consumer.normalization import Normalizer
from consumer.runtime.clients import value_encoder
from consumer.serde import load_schemas
from consumer.tail import TailOptions, parse_time, tail
from tests.integration.kafkatools import ROOT, create_topics, stage_env, unique
from tests.seeds import SEEDS

pytestmark = pytest.mark.kafka

T0 = parse_time("2026-01-01T00:00:00Z")


def events() -> list[dict[str, Any]]:
    normalizer = Normalizer()
    return [normalizer.normalize(s.raw) for s in SEEDS]


def settings_for(kafka: Any, registry: bool = False) -> Settings:
    env = stage_env(kafka.bootstrap)
    if registry:
        env["SCHEMA_REGISTRY_URL"] = kafka.registry_url
    return load_settings(env)


def lines(settings: Settings, options: TailOptions) -> list[dict[str, Any]]:
    out = io.BytesIO()
    tail(settings, options, out)
    return [orjson.loads(line) for line in out.getvalue().splitlines()]


@pytest.mark.apache_kafka
def test_single_object_records_decode_committed_only_with_iso_times_and_filters(kafka_stack: Any) -> None:
    settings = settings_for(kafka_stack)
    topic = unique("normalized")
    create_topics(kafka_stack.bootstrap, {topic: 2})
    encode = value_encoder(settings, load_schemas(settings.schema_dir)["InstanceEvent"], topic)
    evs = events()
    producer = Producer({"bootstrap.servers": kafka_stack.bootstrap,
                         "transactional.id": unique("txn")})
    producer.init_transactions(30)
    producer.begin_transaction()
    for i, e in enumerate(evs):
        producer.produce(topic, encode(e), f"{e['vendor']}:{e['instance_id']}".encode(),
                         partition=i % 2, timestamp=T0 + i * 1000)
    producer.commit_transaction(30)
    producer.begin_transaction()
    producer.produce(topic, encode(evs[0]), b"aborted", partition=0, timestamp=T0)
    producer.flush(30)
    producer.abort_transaction(30)

    everything = lines(settings, TailOptions([topic]))
    assert len(everything) == len(evs)  # the aborted record is not there
    assert b"aborted" not in orjson.dumps(everything)
    reboot = next(r for r in everything if r["value"]["vendor_event_code"] == "SystemFailure.Reboot"
                  and r["value"]["phase"] == "executing")
    assert reboot["value"]["event_time"] == "2021-02-24T22:44:06Z"
    assert reboot["key"] == "jdcloud:i-bc4****9oh"
    assert reboot["topic"] == topic
    assert reboot["timestamp"].startswith("2026-01-01T00:00:")

    aliyun = lines(settings, TailOptions([topic], filters={"vendor": frozenset({"aliyun"})}))
    assert len(aliyun) == sum(e["vendor"] == "aliyun" for e in evs) > 0
    one = lines(settings, TailOptions([topic], filters={
        "instance": frozenset({"i-bc4****9oh"}), "operation": frozenset({"failure.reboot"})}))
    assert {r["value"]["phase"] for r in one} == {"executing", "executed"}
    assert len(lines(settings, TailOptions([topic], limit=3))) == 3

    since = lines(settings, TailOptions([topic], start=T0 + 30_000))
    assert sorted(r["offset"] for r in since) == sorted(
        i // 2 for i in range(30, len(evs)))  # the records from the 31st on, on both partitions
    assert lines(settings, TailOptions([topic], start="end")) == []  # nothing new, not following


@pytest.mark.registry
def test_confluent_framed_outcomes_and_dlq_headers(kafka_stack: Any) -> None:
    from consumer.correlator import Correlator, CorrelatorConfig

    settings = settings_for(kafka_stack, registry=True)
    outcomes_topic, dlq = unique("failure.reboot.completed"), unique("dlq")
    create_topics(kafka_stack.bootstrap, {outcomes_topic: 1, dlq: 1})
    correlator = Correlator(CorrelatorConfig.from_spec(""), clock=lambda: 0)
    outcomes = [o for e in events() for o in correlator.process(e) if o["outcome"] == "completed"]
    assert outcomes
    encode = value_encoder(settings, load_schemas(settings.schema_dir)["OperationOutcome"],
                           outcomes_topic)
    producer = Producer({"bootstrap.servers": kafka_stack.bootstrap})
    for o in outcomes:
        producer.produce(outcomes_topic, encode(o), f"{o['vendor']}:{o['instance_id']}".encode())
    producer.produce(dlq, b"{not json", b"k", headers=[
        ("vmevents.dlq.reason", b"malformed_json"), ("vmevents.dlq.source.offset", b"7")])
    assert producer.flush(30) == 0

    got = lines(settings, TailOptions([outcomes_topic, dlq]))
    framed = [r for r in got if r["topic"] == outcomes_topic]
    assert len(framed) == len(outcomes)
    reboot = next(r["value"] for r in framed if r["value"]["operation"] == "failure.reboot")
    assert reboot["outcome"] == "completed"
    assert reboot["started_at"] == "2021-02-24T22:44:06Z"
    assert isinstance(reboot["duration_ms"], int)
    [dead] = [r for r in got if r["topic"] == dlq]
    assert dead["value"] == "{not json"
    assert dead["headers"] == {"vmevents.dlq.reason": "malformed_json",
                               "vmevents.dlq.source.offset": "7"}
    assert dead["key"] == "k"


def test_follow_from_the_end_prints_what_arrives_and_stops_at_max(kafka_stack: Any) -> None:
    topic = unique("dlq")
    create_topics(kafka_stack.bootstrap, {topic: 1})
    producer = Producer({"bootstrap.servers": kafka_stack.bootstrap})
    producer.produce(topic, b'{"old": true}')
    assert producer.flush(30) == 0
    env = {k: v for k, v in os.environ.items() if not k.startswith(("VMEVENTS_", "KAFKA_"))}
    env["KAFKA_BOOTSTRAP_SERVERS"] = kafka_stack.bootstrap
    proc = subprocess.Popen(
        [sys.executable, "-m", "consumer.cli", "tail", topic, "--from-end", "--max", "1"],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 60
        while proc.poll() is None and time.monotonic() < deadline:
            producer.produce(topic, b'{"new": true}')  # until the reader, once assigned, sees one
            producer.flush(10)
            time.sleep(0.5)
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err
    [line] = out.splitlines()
    assert orjson.loads(line)["value"] == {"new": True}
