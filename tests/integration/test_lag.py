"""Consumer lag and freshness on a real broker: lag rises with a backlog and falls back to 0."""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from typing import Any

import pytest
from confluent_kafka import Message

from consumer.app import normalize_loop
from consumer.config import Settings, load_settings
from consumer.http import Health
from consumer.metrics import Metrics
from consumer.runtime.loop import Emit, StageLoop
from tests.integration.kafkatools import create_topics, produce, stage_env, unique
from tests.integration.test_normalize_stage import wait_for
from tests.seeds import SEEDS

pytestmark = pytest.mark.apache_kafka


class Throttled:
    """A processor that takes its time per batch until ``release`` is set: a backlog builds."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.stage = inner.stage
        self.release = threading.Event()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def process(self, messages: Sequence[Message], emit: Emit) -> None:
        if messages and not self.release.is_set():
            time.sleep(0.1)
        self.inner.process(messages, emit)


class Running:
    """A throttled normalize stage in a thread, with its lag samples at hand."""

    def __init__(self, settings: Settings, raw: str) -> None:
        self.metrics = Metrics()
        self.raw = raw
        self.throttled = Throttled(normalize_loop(settings, self.metrics, Health()).processor)
        loop = StageLoop(settings, self.throttled, [raw], settings.normalize_group, self.metrics,
                         Health(), consumer_extra={"statistics.interval.ms": 300})
        self.stop = threading.Event()
        self.errors: list[BaseException] = []

        def run() -> None:
            try:
                loop.run(self.stop)
            except BaseException as exc:
                self.errors.append(exc)

        self.thread = threading.Thread(target=run, daemon=True)
        self.thread.start()

    def lag(self) -> float | None:
        """Total lag over both partitions; None until both have a sample."""
        values = [self.metrics.registry.get_sample_value(
            "vmevents_consumer_lag", {"stage": "normalize", "topic": self.raw, "partition": str(p)})
            for p in (0, 1)]
        return None if None in values else sum(v for v in values if v is not None)

    def wait_peak(self, at_least: float) -> float:
        """Wait until the lag reaches ``at_least``; the highest sample seen."""
        peak = [0.0]

        def reached() -> bool:
            peak[0] = max(peak[0], self.lag() or 0)
            return peak[0] >= at_least or bool(self.errors)

        wait_for(reached, 30, f"lag to rise to {at_least}")
        return peak[0]

    def close(self) -> None:
        self.stop.set()
        self.thread.join(60)
        assert not self.errors, self.errors


def seeds(n: int) -> list[bytes]:
    return [SEEDS[i % len(SEEDS)].raw for i in range(n)]


def test_lag_rises_with_a_backlog_and_falls_to_zero(kafka_stack: Any) -> None:
    bootstrap = kafka_stack.bootstrap
    raw, out, dlq = unique("raw"), unique("normalized"), unique("dlq")
    create_topics(bootstrap, {raw: 2, out: 1, dlq: 1})
    settings = load_settings(stage_env(
        bootstrap, VMEVENTS_RAW_TOPICS=raw, VMEVENTS_NORMALIZED_TOPIC=out, VMEVENTS_DLQ_TOPIC=dlq,
        VMEVENTS_NORMALIZE_GROUP=unique("g"), VMEVENTS_TRANSACTIONAL_ID=unique("txn"),
        VMEVENTS_BATCH_SIZE="10"))
    stage = Running(settings, raw)
    try:
        wait_for(lambda: stage.lag() == 0 or bool(stage.errors), 60, "a first lag sample of 0")
        backlog = 1200
        produce(bootstrap, raw, seeds(backlog), keyed=True)
        peak = stage.wait_peak(backlog / 2)
        stage.throttled.release.set()
        wait_for(lambda: stage.lag() == 0 or bool(stage.errors), 60, "lag to fall back to 0")
    finally:
        stage.close()
    print(f"lag: peak {peak:.0f} of a {backlog}-record backlog, then 0")
    assert backlog / 2 <= peak <= backlog
    age = stage.metrics.registry.get_sample_value("vmevents_event_age_seconds",
                                                  {"stage": "normalize"})
    assert age is not None
    assert 0 <= age < 120
    assert stage.lag() is None  # revoked at shutdown: no stale series left behind

    # A restart on a backlog: the lag counts from the committed offsets, not the log start.
    second = 400
    produce(bootstrap, raw, seeds(second), keyed=True)
    restarted = Running(settings, raw)
    try:
        peak = restarted.wait_peak(second / 2)
        restarted.throttled.release.set()
        wait_for(lambda: restarted.lag() == 0 or bool(restarted.errors), 60, "lag back to 0")
    finally:
        restarted.close()
    print(f"lag after a restart: peak {peak:.0f} of {second} new records")
    assert second / 2 <= peak <= second
