"""Wires settings, the pure core and the Kafka shell into a running stage.

One function per stage builds its processor; ``run_stage`` does what every stage needs around it:
fail fast on an unreachable broker, create topics, serve /metrics and probes, stop on SIGTERM.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable
from types import FrameType

import structlog

from consumer.config import Settings
from consumer.correlator import correlator_config
from consumer.errors import KafkaRuntimeError
from consumer.http import Health, HealthServer
from consumer.metrics import Metrics
from consumer.normalize import Normalizer
from consumer.runtime.clients import (
    check_reachable,
    ensure_topics,
    partition_count,
    registry_fetcher,
    topic_exists,
    value_encoder,
)
from consumer.runtime.correlate_stage import CorrelateProcessor
from consumer.runtime.loop import StageLoop
from consumer.runtime.normalize_stage import NormalizeProcessor
from consumer.serde import Decoder, Encoder, load_schemas

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
                   max_payload_bytes=settings.max_message_bytes),
        encode, settings.normalized_topic, settings.dlq_topic, metrics)
    return StageLoop(settings, processor, settings.raw_topics, settings.normalize_group,
                     metrics, health)


def correlate_loop(settings: Settings, metrics: Metrics, health: Health) -> StageLoop:
    schemas = load_schemas(settings.schema_dir)
    if settings.create_topics:
        ensure_topics(settings, {settings.normalized_topic: {}})
        # Same partition count as the input: changelog partition N holds input partition N's state.
        ensure_topics(settings, {settings.changelog_topic: {"cleanup.policy": "compact"}},
                      partitions=partition_count(settings, settings.normalized_topic))
    outcome_schema = schemas["OperationOutcome"]

    def encoder_for(topic: str) -> Encoder:
        if settings.create_topics:
            ensure_topics(settings, {topic: {}})
        elif not topic_exists(settings, topic):
            # Producing to it would fail every transaction after message.timeout.ms; say why now.
            raise KafkaRuntimeError(
                f"outcome topic {topic} does not exist and VMEVENTS_CREATE_TOPICS=false: "
                "create it (the chart's topics Job does) or enable topic creation", fatal=True)
        return value_encoder(settings, outcome_schema, topic)

    processor = CorrelateProcessor(
        settings, correlator_config(settings),
        Decoder(schemas, registry_fetcher(settings)), encoder_for, metrics,
        heartbeat=health.tick)
    return StageLoop(settings, processor, [settings.normalized_topic], settings.correlate_group,
                     metrics, health)


LOOPS: dict[str, Callable[[Settings, Metrics, Health], StageLoop]] = {
    "normalize": normalize_loop,
    "correlate": correlate_loop,
}


def run_stage(stage: str, settings: Settings, stop: threading.Event | None = None) -> None:
    """Run one stage until SIGTERM/SIGINT (or ``stop``); raises on fatal errors."""
    stop = stop or threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        log.info("signal received, finishing the current batch", signal=signal.Signals(signum).name)
        stop.set()

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, on_signal)
        signal.signal(signal.SIGINT, on_signal)
    check_reachable(settings)
    metrics = Metrics()
    health = Health()
    server = HealthServer(metrics.registry, health, settings.metrics_host,
                          settings.metrics_port).start()
    log.info("http server listening", stage=stage,
             metrics=f"http://127.0.0.1:{server.port}/metrics")
    try:
        LOOPS[stage](settings, metrics, health).run(stop)
    finally:
        server.stop()
