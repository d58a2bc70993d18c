"""The local stack offers what the design relies on: transactions that read_committed readers
honour, and a Confluent-API Schema Registry. If these fail, no other integration test means much.
"""

from __future__ import annotations

import json
import time
import uuid
from typing import Any, cast

import pytest
from confluent_kafka import Consumer, KafkaError, Producer, TopicPartition
from confluent_kafka.schema_registry import Schema, SchemaRegistryClient
from confluent_kafka.schema_registry.avro import AvroDeserializer, AvroSerializer
from confluent_kafka.serialization import MessageField, SerializationContext

from tests.conftest import KafkaStack

pytestmark = pytest.mark.kafka


def _read_to_end(kafka: KafkaStack, topic: str, partitions: int, isolation: str) -> list[bytes]:
    """Every value up to the end of each partition (the last stable offset when read_committed).

    Reading to partition EOF rather than "until N records" is what makes the aborted-records
    assertion meaningful: nothing can still be on its way when we stop.
    """
    settings: dict[str, Any] = {"isolation.level": isolation, "enable.partition.eof": True}
    consumer = Consumer(kafka.consumer_config(**settings))
    consumer.assign([TopicPartition(topic, p, 0) for p in range(partitions)])
    values: list[bytes] = []
    at_eof: set[int] = set()
    deadline = time.monotonic() + 30
    try:
        while len(at_eof) < partitions:
            assert time.monotonic() < deadline, f"no EOF on {topic} after 30s (got {values})"
            message = consumer.poll(0.5)
            if message is None:
                continue
            error = message.error()
            if error is not None:
                assert error.code() == KafkaError._PARTITION_EOF, error.str()
                at_eof.add(cast(int, message.partition()))
                continue
            values.append(cast(bytes, message.value()))
    finally:
        consumer.close()
    return values


def test_produce_and_consume(kafka_stack: KafkaStack) -> None:
    """Plain records survive the trip on either flavor (Tansu included)."""
    topic = kafka_stack.create_topic(partitions=3)
    producer = Producer(kafka_stack.client_config(**{"enable.idempotence": True}))
    sent = [f"plain-{i}".encode() for i in range(9)]
    for value in sent:
        producer.produce(topic, value, key=value)
    assert producer.flush(30) == 0
    assert sorted(_read_to_end(kafka_stack, topic, 3, "read_uncommitted")) == sorted(sent)


@pytest.mark.apache_kafka
def test_read_committed_sees_only_committed_transactions(kafka_stack: KafkaStack) -> None:
    """Exactly-once hinges on this: aborted records are written but never delivered."""
    topic = kafka_stack.create_topic(partitions=2)
    producer = Producer(kafka_stack.client_config(**{"transactional.id": kafka_stack.unique_name("txn")}))
    producer.init_transactions(30)

    producer.begin_transaction()
    for i in range(4):
        producer.produce(topic, f"aborted-{i}".encode(), partition=i % 2)
    producer.flush(30)  # on the log before the abort, so the test is not vacuous
    producer.abort_transaction(30)

    committed = [f"committed-{i}".encode() for i in range(4)]
    producer.begin_transaction()
    for i, value in enumerate(committed):
        producer.produce(topic, value, partition=i % 2)
    producer.commit_transaction(30)

    everything = _read_to_end(kafka_stack, topic, 2, "read_uncommitted")
    assert sum(v.startswith(b"aborted-") for v in everything) == 4
    assert sorted(_read_to_end(kafka_stack, topic, 2, "read_committed")) == sorted(committed)


SCHEMA = {
    "type": "record",
    "name": "StackProbe",
    "namespace": "vmevents.test",
    "fields": [
        {"name": "instance_id", "type": "string"},
        {"name": "duration_ms", "type": ["null", "long"], "default": None},
    ],
}


@pytest.mark.registry
def test_registry_round_trip(kafka_stack: KafkaStack) -> None:
    """Register, fetch back, and frame a record the way Confluent's serializers do."""
    assert kafka_stack.registry_url is not None
    # A request timeout, as the stages set one: the client waits forever on a silent registry.
    with SchemaRegistryClient({"url": kafka_stack.registry_url, "timeout": 10}) as client:
        subject = f"{kafka_stack.unique_name('probe')}-value"

        schema_id = client.register_schema(subject, Schema(json.dumps(SCHEMA), "AVRO"))
        assert json.loads(client.get_schema(schema_id).schema_str) == SCHEMA
        latest = client.get_latest_version(subject)
        assert (latest.schema_id, latest.version) == (schema_id, 1)
        assert subject in client.get_subjects()

        topic = subject.removesuffix("-value")
        ctx = SerializationContext(topic, MessageField.VALUE)
        record = {"instance_id": f"i-{uuid.uuid4().hex[:8]}", "duration_ms": 1234}
        framed = AvroSerializer(client, json.dumps(SCHEMA))(record, ctx)
        assert framed is not None
        assert framed[0] == 0
        assert int.from_bytes(framed[1:5], "big") == schema_id
        assert AvroDeserializer(client)(framed, ctx) == record
