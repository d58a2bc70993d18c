"""Consumer lag and freshness on a real broker: lag rises with a backlog and falls back to 0."""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from typing import Any

import pytest
from confluent_kafka import Message

from consumer.app import normalize_loop
from consumer.config import load_settings
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


def test_lag_rises_with_a_backlog_and_falls_to_zero(kafka_stack: Any) -> None:
    bootstrap = kafka_stack.bootstrap
    raw, out, dlq = unique("raw"), unique("normalized"), unique("dlq")
    create_topics(bootstrap, {raw: 2, out: 1, dlq: 1})
    settings = load_settings(stage_env(
        bootstrap, VMEVENTS_RAW_TOPICS=raw, VMEVENTS_NORMALIZED_TOPIC=out, VMEVENTS_DLQ_TOPIC=dlq,
        VMEVENTS_NORMALIZE_GROUP=unique("g"), VMEVENTS_TRANSACTIONAL_ID=unique("txn"),
        VMEVENTS_BATCH_SIZE="10"))
    metrics = Metrics()
    throttled = Throttled(normalize_loop(settings, metrics, Health()).processor)
    loop = StageLoop(settings, throttled, [raw], settings.normalize_group, metrics, Health(),
                     consumer_extra={"statistics.interval.ms": 300})
    stop = threading.Event()
    errors: list[BaseException] = []

    def run() -> None:
        try:
            loop.run(stop)
        except BaseException as exc:
            errors.append(exc)

    def lag() -> float | None:
        values = [metrics.registry.get_sample_value(
            "vmevents_consumer_lag", {"stage": "normalize", "topic": raw, "partition": str(p)})
            for p in (0, 1)]
        return None if None in values else sum(v for v in values if v is not None)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    try:
        wait_for(lambda: lag() == 0 or bool(errors), 60, "a first lag sample of 0")
        backlog = 1200
        produce(bootstrap, raw, [SEEDS[i % len(SEEDS)].raw for i in range(backlog)], keyed=True)
        peak = [0.0]

        def backlogged() -> bool:
            peak[0] = max(peak[0], lag() or 0)
            return peak[0] >= backlog / 2 or bool(errors)

        wait_for(backlogged, 30, "lag to rise with the backlog")
        throttled.release.set()
        wait_for(lambda: lag() == 0 or bool(errors), 60, "lag to fall back to 0")
    finally:
        stop.set()
        thread.join(60)
    assert not errors, errors
    print(f"lag: peak {peak[0]:.0f} of a {backlog}-record backlog, then 0")
    assert backlog / 2 <= peak[0] <= backlog
    age = metrics.registry.get_sample_value("vmevents_event_age_seconds", {"stage": "normalize"})
    assert age is not None
    assert 0 <= age < 120
