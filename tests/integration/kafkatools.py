"""Small helpers for integration tests: topics, producing, reading everything back, stage processes."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterable, Mapping
from pathlib import Path

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from consumer.runtime.marks import MARK_KEY

ROOT = Path(__file__).resolve().parents[2]


def unique(prefix: str) -> str:
    return f"{prefix}.{uuid.uuid4().hex[:10]}"


def create_topics(bootstrap: str, topics: Mapping[str, int], config: Mapping[str, str] | None = None) -> None:
    admin = AdminClient({"bootstrap.servers": bootstrap})
    futures = admin.create_topics([
        NewTopic(name, num_partitions=n, replication_factor=1, config=dict(config or {}))
        for name, n in topics.items()
    ])
    for future in futures.values():
        future.result(30)


def produce(bootstrap: str, topic: str,
            values: Iterable[bytes | tuple[bytes | None, bytes | None]
                             | tuple[bytes | None, bytes | None, int]
                             | tuple[bytes | None, bytes | None, int, int]], *,
            keyed: bool = False, config: Mapping[str, object] | None = None) -> int:
    """Produce values, ``(key, value)`` pairs, ``(key, value, timestamp ms)`` triples or
    ``(key, value, timestamp ms, partition)``; ``keyed`` keys plain values by their index.

    ``config`` adds producer settings (``message.max.bytes`` for oversized records)."""
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 10, "enable.idempotence": True,
                         **(config or {})})
    n = 0
    for i, item in enumerate(values):
        timestamp = 0  # librdkafka's "now"
        partition = -1  # the partitioner's choice
        if isinstance(item, tuple):
            key, value = item[0], item[1]
            if len(item) >= 3:
                timestamp = item[2]
            if len(item) == 4:
                partition = item[3]
        else:
            key, value = (str(i).encode() if keyed else None), item
        producer.produce(topic, value, key, partition=partition, timestamp=timestamp)
        n += 1
        if n % 10_000 == 0:
            producer.poll(0)
    assert producer.flush(60) == 0
    return n


def read_all(bootstrap: str, topics: list[str], *, expected: int | None = None,
             isolation: str = "read_committed", timeout: float = 120.0,
             settle: float = 3.0, marks: bool = False) -> list[Message]:
    """Read every record of ``topics`` from the start.

    Stops when ``expected`` records were read and nothing more arrived for ``settle`` seconds
    (so an excess, e.g. a duplicate, is seen), or at ``timeout``. The normalize stage's progress
    marks (:mod:`consumer.runtime.marks`) are left out unless ``marks``.
    """
    consumer = Consumer({
        "bootstrap.servers": bootstrap, "group.id": unique("reader"), "enable.auto.commit": False,
        "auto.offset.reset": "earliest", "isolation.level": isolation,
        "topic.metadata.refresh.interval.ms": 1000,
    })
    admin = AdminClient({"bootstrap.servers": bootstrap})
    meta = admin.list_topics(timeout=10).topics
    assign = [TopicPartition(t, p, 0) for t in topics if t in meta for p in meta[t].partitions]
    consumer.assign(assign)
    out: list[Message] = []
    deadline = time.monotonic() + timeout
    last_new = time.monotonic()
    try:
        while time.monotonic() < deadline:
            batch = consumer.consume(5000, 0.5)
            for m in batch:
                err = m.error()
                if err is None:
                    if marks or m.value() is not None or m.key() != MARK_KEY:
                        out.append(m)
                    last_new = time.monotonic()
                elif err.code() != KafkaError._PARTITION_EOF:
                    raise RuntimeError(err.str())
            if expected is not None and len(out) >= expected and time.monotonic() - last_new > settle:
                break
            if expected is None and not batch and time.monotonic() - last_new > settle:
                break
    finally:
        consumer.close()
    return out


def fresh_stage_topics(bootstrap: str, partitions: int) -> dict[str, str]:
    """A fresh set of the stages' topics (raw, normalized, DLQ, compacted changelog and
    open-operations) and groups; returns the settings that name them, for :func:`stage_env`."""
    names = {"VMEVENTS_RAW_TOPICS": unique("raw"), "VMEVENTS_NORMALIZED_TOPIC": unique("normalized"),
             "VMEVENTS_DLQ_TOPIC": unique("dlq"), "VMEVENTS_CHANGELOG_TOPIC": unique("changelog"),
             "VMEVENTS_OPEN_OPERATIONS_TOPIC": unique("open"),
             "VMEVENTS_OUTCOME_TOPIC_PREFIX": f"{unique('out')}.",
             "VMEVENTS_NORMALIZE_GROUP": unique("norm"), "VMEVENTS_CORRELATE_GROUP": unique("corr"),
             "VMEVENTS_TOPIC_PARTITIONS": str(partitions)}
    create_topics(bootstrap, {names["VMEVENTS_RAW_TOPICS"]: partitions,
                              names["VMEVENTS_NORMALIZED_TOPIC"]: partitions,
                              names["VMEVENTS_DLQ_TOPIC"]: 1})
    create_topics(bootstrap, {names["VMEVENTS_CHANGELOG_TOPIC"]: partitions,
                              names["VMEVENTS_OPEN_OPERATIONS_TOPIC"]: partitions},
                  {"cleanup.policy": "compact"})
    return names


def stage_env(bootstrap: str, **overrides: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("VMEVENTS_", "KAFKA_", "SCHEMA_REGISTRY_"))}
    env.update({
        "KAFKA_BOOTSTRAP_SERVERS": bootstrap,
        "VMEVENTS_METRICS_PORT": "0",
        "VMEVENTS_LOG_FORMAT": "json",
        "VMEVENTS_TRANSACTION_TIMEOUT_MS": "10000",
        "VMEVENTS_TOPIC_PARTITIONS": "3",
    })
    env.update(overrides)
    return env


def start_stage(stage: str, env: Mapping[str, str], log_path: Path) -> subprocess.Popen[bytes]:
    log = open(log_path, "ab")  # noqa: SIM115  (owned by the child process for its lifetime)
    return subprocess.Popen([sys.executable, "-m", "consumer.cli", "run", "--stage", stage],
                            env=dict(env), stdout=log, stderr=subprocess.STDOUT, cwd=ROOT)


def committed_total(bootstrap: str, group: str, topic: str) -> int:
    """Sum of the group's committed offsets on ``topic`` (0 where nothing is committed)."""
    admin = AdminClient({"bootstrap.servers": bootstrap})
    partitions = admin.list_topics(topic, timeout=10).topics[topic].partitions
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": group,
                         "enable.auto.commit": False})
    try:
        tps = consumer.committed([TopicPartition(topic, p) for p in partitions], timeout=10)
        return sum(max(tp.offset, 0) for tp in tps)
    except KafkaException as exc:
        if exc.args[0].retriable() or exc.args[0].code() == KafkaError.NOT_COORDINATOR:
            return 0  # the group coordinator is still loading: nothing observable yet
        raise
    finally:
        consumer.close()


def headers_of(msg: Message) -> dict[str, str]:
    return {k: (v or b"").decode() for k, v in (msg.headers() or [])}
