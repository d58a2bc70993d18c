"""Client configuration, topic creation and the registry: everything that knows librdkafka names."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import Any

import structlog
from confluent_kafka import KafkaError, KafkaException, Producer
from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]

from consumer.config import Settings
from consumer.errors import KafkaRuntimeError, RegistryUnavailable, TransientError
from consumer.logs import kafka_logger
from consumer.serde import (
    AvroSchema,
    Encoder,
    SerdeError,
    confluent_encoder,
    single_object_encoder,
)

log = structlog.get_logger(__name__)


def wrap(exc: KafkaException, what: str) -> KafkaRuntimeError:
    """Turn a KafkaException into ours so callers see ``code``, ``retriable`` and ``fatal``."""
    err = exc.args[0] if exc.args else None
    if isinstance(err, KafkaError):
        return KafkaRuntimeError(
            f"{what}: {err.str()}", code=err.code(), retriable=err.retriable(),
            fatal=err.fatal(), txn_requires_abort=err.txn_requires_abort())
    return KafkaRuntimeError(f"{what}: {exc}")


def admin_client(settings: Settings, **extra: Any) -> AdminClient:
    """An admin client whose librdkafka logs go through our logging, not raw to stderr."""
    conf: dict[str, Any] = {**settings.kafka_common(), "logger": kafka_logger("admin"), **extra}
    return AdminClient(conf)


def consumer_conf(settings: Settings, group: str, **extra: Any) -> dict[str, Any]:
    conf: dict[str, Any] = {
        **settings.kafka_common(),
        "group.id": group,
        "enable.auto.commit": False,
        "enable.auto.offset.store": False,
        "auto.offset.reset": "earliest",
        # Inputs come from transactional producers (ours or a bridge's): never read aborted data.
        "isolation.level": "read_committed",
        "session.timeout.ms": 10_000,
        "heartbeat.interval.ms": 1_000,
        "max.poll.interval.ms": max(300_000, settings.transaction_timeout_ms * 2),
        # Keep the local queue ahead of the loop: a batch should come from memory, not wait on a
        # fetch after every transaction commit (measured: 29k -> 94k records/s passthrough).
        "fetch.min.bytes": 1,
        "fetch.wait.max.ms": 20,
        "max.partition.fetch.bytes": 8 * 1024 * 1024,
        "fetch.max.bytes": 64 * 1024 * 1024,
        "queued.min.messages": 100_000,
        "statistics.interval.ms": 15_000,
    }
    conf.update(extra)
    return conf


def producer_conf(settings: Settings, transactional_id: str | None, **extra: Any) -> dict[str, Any]:
    conf: dict[str, Any] = {
        **settings.kafka_common(),
        "enable.idempotence": True,
        "acks": "all",
        "linger.ms": 5,
        "batch.size": 1_000_000,
        "queue.buffering.max.messages": 1_000_000,
        "queue.buffering.max.kbytes": 1_048_576,
        "message.max.bytes": max(1_000_000, settings.max_message_bytes + 65_536),
        "compression.type": "lz4",
        "delivery.report.only.error": True,
    }
    if transactional_id:
        conf["transactional.id"] = transactional_id
        conf["transaction.timeout.ms"] = settings.transaction_timeout_ms
        # A transaction begun right after a commit is refused (CONCURRENT_TRANSACTIONS) until
        # the broker has written the previous one's markers, a few ms; with the default 100 ms
        # backoff every batch paid that wait (a commit took 30-40 ms here, 5-10 ms with this).
        conf["retry.backoff.ms"] = 10
        conf["retry.backoff.max.ms"] = 250
    for key in ("statistics.interval.ms",):
        conf.pop(key, None)
    conf.update(extra)
    return conf


def ensure_topics(settings: Settings, topics: Mapping[str, Mapping[str, str]],
                  partitions: int | None = None, timeout: float = 30.0) -> None:
    """Create missing topics (name -> topic configs); existing ones are left as they are.

    ``timeout`` bounds each request (a stage creating a topic mid-batch passes a short one).
    """
    admin = admin_client(settings)
    try:
        existing = set(admin.list_topics(timeout=min(timeout, 15)).topics)
    except KafkaException as exc:
        raise wrap(exc, f"cannot reach Kafka at {settings.bootstrap_servers}") from None
    new = [
        NewTopic(name, num_partitions=partitions or settings.topic_partitions,
                 replication_factor=settings.topic_replication_factor, config=dict(cfg))
        for name, cfg in topics.items() if name not in existing
    ]
    if not new:
        return
    for name, future in admin.create_topics(new, operation_timeout=timeout,
                                            request_timeout=timeout).items():
        try:
            future.result()
            log.info("topic created", topic=name)
        except KafkaException as exc:
            if exc.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
                raise wrap(exc, f"cannot create topic {name}") from None


def topic_exists(settings: Settings, topic: str) -> bool:
    """Asked without naming the topic: a metadata request for one topic makes a broker with
    ``auto.create.topics.enable`` (Kafka's default) create it, with default configs."""
    try:
        meta = admin_client(settings).list_topics(timeout=15).topics.get(topic)
    except KafkaException as exc:
        raise wrap(exc, f"cannot describe topic {topic}") from None
    return meta is not None and meta.error is None and bool(meta.partitions)


def partition_count(settings: Settings, topic: str) -> int:
    admin = admin_client(settings)
    try:
        meta = admin.list_topics(topic, timeout=15).topics.get(topic)
    except KafkaException as exc:
        raise wrap(exc, f"cannot describe topic {topic}") from None
    if meta is None or meta.error is not None or not meta.partitions:
        raise KafkaRuntimeError(f"topic {topic} does not exist")
    return len(meta.partitions)


def check_reachable(settings: Settings, timeout: float = 10.0) -> None:
    """Fail at start with one line when no broker answers, instead of retrying forever."""
    admin = admin_client(settings, **{"socket.connection.setup.timeout.ms": 5000})
    try:
        admin.list_topics(timeout=timeout)
    except KafkaException as exc:
        raise wrap(exc, f"no Kafka broker answers at {settings.bootstrap_servers}") from None


def produce_all(settings: Settings, topic: str, values: Iterable[bytes], total: int,
                label: str, *, first_timestamp_ms: int = 0) -> int:
    """Produce raw values with a progress line; returns how many were not delivered.

    With ``first_timestamp_ms``, the i-th record is stamped ``first_timestamp_ms + i``: the
    order of ``values`` survives a reader that merges partitions by timestamp (alignment.py),
    which records produced within the same millisecond would not give it.
    """
    from consumer.progress import Progress

    producer = Producer({**settings.kafka_common(), "linger.ms": 20, "batch.size": 1_000_000,
                         "enable.idempotence": True, "compression.type": "lz4",
                         "queue.buffering.max.messages": 1_000_000,
                         "logger": kafka_logger("producer")})
    progress = Progress(label, total=total)
    step = 1 if first_timestamp_ms else 0
    for i, value in enumerate(values):
        while True:
            try:
                producer.produce(topic, value, timestamp=first_timestamp_ms + i * step)
                break
            except BufferError:
                producer.poll(0.05)  # local queue full: let librdkafka drain it
        progress.advance()
    left = int(producer.flush(120))
    progress.close()
    return left


def value_encoder(settings: Settings, schema: AvroSchema, topic: str) -> Encoder:
    """Confluent framing when a registry is configured (schema registered once), else single-object."""
    if not settings.schema_registry_url:
        return single_object_encoder(schema)
    from confluent_kafka.schema_registry import Schema, SchemaRegistryClient
    from confluent_kafka.schema_registry.error import SchemaRegistryError

    client = SchemaRegistryClient(registry_conf(settings))
    subject = f"{topic}-value"
    where = f"{schema.name} under {subject} in the schema registry at {settings.schema_registry_url}"
    try:
        schema_id = client.register_schema(subject, Schema(json.dumps(schema.raw), "AVRO"))
    except SchemaRegistryError as exc:
        if exc.http_status_code in (409, 422):  # incompatible or invalid: retrying cannot help
            raise KafkaRuntimeError(f"cannot register {where}: {exc}", fatal=True) from None
        raise RegistryUnavailable(f"cannot register {where}: {exc}") from None
    except Exception as exc:  # httpx's ConnectError, timeouts, TLS, a proxy's HTML page
        raise RegistryUnavailable(
            f"cannot register {where}: {type(exc).__name__}: {exc}") from None
    log.info("schema registered", subject=subject, schema_id=schema_id)
    return confluent_encoder(schema, schema_id)


def registry_conf(settings: Settings) -> dict[str, Any]:
    # The client waits forever on a silent registry unless told otherwise.
    conf: dict[str, Any] = {"url": settings.schema_registry_url or "", "timeout": 10}
    if settings.schema_registry_auth:
        conf["basic.auth.user.info"] = settings.schema_registry_auth
    return conf


def registry_fetcher(settings: Settings) -> Any:
    """``schema_id -> schema dict`` for :class:`consumer.serde.Decoder`, or None without a registry."""
    if not settings.schema_registry_url:
        return None
    from confluent_kafka.schema_registry import SchemaRegistryClient
    from confluent_kafka.schema_registry.error import SchemaRegistryError

    client = SchemaRegistryClient(registry_conf(settings))
    where = settings.schema_registry_url

    def fetch(schema_id: int) -> dict[str, Any]:
        """Only a registry answering "no such schema" (404) makes the record undecodable (a
        dead letter). Anything else (unreachable, 5xx, 401/403 after a credential rotation) is
        not the record's fault: TransientError, and the batch is retried later."""
        try:
            schema = client.get_schema(schema_id)
        except SchemaRegistryError as exc:
            if exc.http_status_code == 404:
                raise SerdeError(f"schema id {schema_id} is not in the registry: {exc}") from None
            raise TransientError(f"schema registry at {where} failed to return schema id "
                                 f"{schema_id}: {exc}") from None
        except Exception as exc:  # httpx's ConnectError, timeouts, TLS, a proxy's HTML page
            raise TransientError(f"schema registry at {where} gave no answer for schema id "
                                 f"{schema_id}: {type(exc).__name__}: {exc}") from None
        try:
            return dict(json.loads(schema.schema_str or "{}"))
        except (ValueError, TypeError) as exc:
            raise SerdeError(f"schema id {schema_id} is not JSON: {exc}") from None

    return fetch

