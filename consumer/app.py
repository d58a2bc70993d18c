"""Wires settings, the pure core and the Kafka shell into a running stage.

One function per stage builds its processor; ``run_stage`` does what every stage needs around it:
fail fast on an unreachable broker, create topics, serve /metrics and probes, stop on SIGTERM
within a bound (:mod:`consumer.signals`).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import structlog

from consumer.config import Settings
from consumer.correlator import correlator_config
from consumer.errors import KafkaRuntimeError
from consumer.http import Health, HealthServer
from consumer.metrics import Metrics
from consumer.normalization import Normalizer
from consumer.runtime.clients import (
    check_reachable,
    ensure_topics,
    partition_count,
    registry_fetcher,
    topic_exists,
    value_encoder,
)
from consumer.runtime.correlate_stage import CorrelateProcessor
from consumer.runtime.deadletter import DeadLetters, max_record_bytes
from consumer.runtime.loop import StageLoop
from consumer.runtime.normalize_stage import NormalizeProcessor
from consumer.serde import Decoder, Encoder, load_schemas
from consumer.signals import force_exit, receive_signals

log = structlog.get_logger(__name__)

DLQ_RETENTION_MS = str(14 * 24 * 3600 * 1000)


def normalize_loop(settings: Settings, metrics: Metrics, health: Health) -> StageLoop:
    schemas = load_schemas(settings.schema_dir)
    if settings.create_topics:
        ensure_topics(settings, {t: {} for t in settings.raw_topics})
        ensure_topics(settings, {settings.normalized_topic: {},
                                 settings.dlq_topic: {"retention.ms": DLQ_RETENTION_MS}})
    encode = value_encoder(settings, schemas["InstanceEvent"], settings.normalized_topic)
    processor = NormalizeProcessor(
        Normalizer(default_timezone=settings.default_timezone,
                   max_payload_bytes=settings.max_message_bytes,
                   min_event_time_ms=settings.min_event_time_ms,
                   max_future_ms=settings.max_future_days * 86_400_000),
        encode, settings.normalized_topic,
        DeadLetters(settings.dlq_topic, "normalize",
                    max_record_bytes(settings, settings.dlq_topic), metrics),
        metrics, max_record_bytes(settings, settings.normalized_topic),
        normalized_partitions=partition_count(settings, settings.normalized_topic))
    return StageLoop(settings, processor, settings.raw_topics, settings.normalize_group,
                     metrics, health)


def lazy_encoder(make: Callable[[], Encoder]) -> Encoder:
    """An encoder whose schema is registered on first use: inside a batch, where a registry
    outage is a TransientError the loop waits out, not a failed start."""
    held: list[Encoder] = []

    def encode(record: Any) -> bytes:
        if not held:
            held.append(make())
        return held[0](record)

    return encode


def correlate_loop(settings: Settings, metrics: Metrics, health: Health) -> StageLoop:
    schemas = load_schemas(settings.schema_dir)
    if settings.create_topics:
        ensure_topics(settings, {settings.normalized_topic: {},
                                 settings.dlq_topic: {"retention.ms": DLQ_RETENTION_MS}})
        # Same partition count as the input: changelog partition N holds input partition N's state.
        ensure_topics(settings, {settings.changelog_topic: {"cleanup.policy": "compact"}},
                      partitions=partition_count(settings, settings.normalized_topic))
        if settings.open_operations_topic:
            ensure_topics(settings, {settings.open_operations_topic: {"cleanup.policy": "compact"}})
    elif settings.open_operations_topic and not topic_exists(settings,
                                                             settings.open_operations_topic):
        raise KafkaRuntimeError(
            f"open-operations topic {settings.open_operations_topic} does not exist and "
            "VMEVENTS_CREATE_TOPICS=false: create it (compacted; the chart's topics Job does), "
            "or set VMEVENTS_OPEN_OPERATIONS_TOPIC= (empty) to turn the view off", fatal=True)
    open_encoder = (lazy_encoder(lambda: value_encoder(settings, schemas["OpenOperation"],
                                                       settings.open_operations_topic))
                    if settings.open_operations_topic else None)
    outcome_schema = schemas["OperationOutcome"]

    def encoder_for(topic: str) -> Encoder:
        if settings.create_topics:
            try:  # mid-batch: bounded like any client call
                ensure_topics(settings, {topic: {}},
                              timeout=min(settings.kafka_call_timeout_ms / 1000.0, 5.0))
            except KafkaRuntimeError as exc:  # the broker away or restarting: redo the batch later
                raise KafkaRuntimeError(str(exc), code=exc.code, retriable=True,
                                        txn_requires_abort=True) from None
        elif not topic_exists(settings, topic):
            # Producing to it would fail every transaction after message.timeout.ms; say why now.
            raise KafkaRuntimeError(
                f"outcome topic {topic} does not exist and VMEVENTS_CREATE_TOPICS=false: "
                "create it (the chart's topics Job does) or enable topic creation", fatal=True)
        return value_encoder(settings, outcome_schema, topic)

    processor = CorrelateProcessor(
        settings, correlator_config(settings),
        Decoder(schemas, registry_fetcher(settings), expect="InstanceEvent"), encoder_for, metrics,
        heartbeat=health.tick,
        dead_letters=DeadLetters(settings.dlq_topic, "correlate",
                                 max_record_bytes(settings, settings.dlq_topic), metrics),
        open_encoder=open_encoder)
    # Each input partition has its own correlator: the interleaving across partitions changes no
    # answer, so the stage never waits for an empty partition while merging them (order within
    # an instance comes from the normalize stage's progress marks, see consumer.runtime.marks).
    return StageLoop(settings, processor, [settings.normalized_topic], settings.correlate_group,
                     metrics, health, max_idle_ms=0)


LOOPS: dict[str, Callable[[Settings, Metrics, Health], StageLoop]] = {
    "normalize": normalize_loop,
    "correlate": correlate_loop,
}


def run_stage(stage: str, settings: Settings, stop: threading.Event | None = None) -> None:
    """Run one stage until SIGTERM/SIGINT (or ``stop``); raises on fatal errors.

    On the main thread signals go to a dedicated thread first, before any client starts a
    thread. A client call left stuck inside librdkafka would block the interpreter's teardown
    (destroying its client waits for it), so then the process ends with ``os._exit``.
    """
    stop = stop or threading.Event()
    owns_process = threading.current_thread() is threading.main_thread()
    if owns_process:
        receive_signals(stop, settings.shutdown_timeout_s)
    check_reachable(settings)
    metrics = Metrics()
    health = Health()
    server = HealthServer(metrics.registry, health, settings.metrics_host,
                          settings.metrics_port).start()
    log.info("http server listening", stage=stage,
             metrics=f"http://127.0.0.1:{server.port}/metrics")
    loop = LOOPS[stage](settings, metrics, health)
    try:
        loop.run(stop)
    except Exception as exc:  # any error: with a call stuck, teardown itself would hang
        if owns_process and loop.txn is not None and loop.txn.stuck:
            log.error("stage failed with client calls stuck inside librdkafka",
                      error=f"{type(exc).__name__}: {exc}")
            force_exit(1)
        raise
    finally:
        server.stop()
    if owns_process and loop.stuck_calls:
        force_exit(0)
