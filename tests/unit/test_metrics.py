"""Payload values as labels: validated and capped, so hostile input cannot grow /metrics."""

from __future__ import annotations

import urllib.request
from typing import Any

from confluent_kafka import Message
from hypothesis import given
from hypothesis import strategies as st

from consumer import synthetic
from consumer.config import load_settings
from consumer.correlator import Correlator, CorrelatorConfig
from consumer.http import Health, HealthServer
from consumer.metrics import OTHER, UNKNOWN, CappedLabels, LabelCap, Metrics
from consumer.normalization import Normalizer
from consumer.runtime.correlate_stage import CorrelateProcessor
from consumer.serde import Decoder, load_schemas, single_object_encoder

REGIONS = 10_000
SERIES_CAP = 5_000
"""Far below what 10,000 regions gave before the caps (16 series per region and operation)."""


def test_a_label_cap_keeps_the_first_values_and_puts_the_rest_under_other() -> None:
    cap = LabelCap(3)
    assert [cap(v) for v in ("cn-north-1", "us-east-1", "eu-west-1", "ap-south-1")] == [
        "cn-north-1", "us-east-1", "eu-west-1", OTHER]
    assert cap("us-east-1") == "us-east-1"  # kept values stay themselves
    assert cap(None) == cap("") == UNKNOWN


@given(st.text(max_size=80))
def test_a_label_value_is_short_and_plain_or_it_is_other(value: str) -> None:
    label = LabelCap(1000)(value)
    assert label in (value, OTHER, UNKNOWN)
    assert len(label) <= 64
    assert label.isascii()
    assert label.isprintable()


def test_a_family_holds_at_most_its_label_sets() -> None:
    vendor, region = LabelCap(10), LabelCap(10)
    labels = CappedLabels((vendor, region), max_sets=5)
    seen = {labels(f"v{i % 3}", f"r{i}") for i in range(100)}
    assert len(seen) == 6  # five kept sets and the all-other one
    assert (OTHER, OTHER) in seen


def test_ten_thousand_payload_regions_leave_metrics_under_the_cap() -> None:
    schemas = load_schemas(load_settings({}).schema_dir)
    encode = single_object_encoder(schemas["InstanceEvent"])
    normalizer = Normalizer()
    messages = []
    ops = synthetic.operations(REGIONS, instances=REGIONS, seed=5)
    for i, op in enumerate(ops):
        for raw in op.raw:
            event: Any = normalizer.normalize(raw)
            event["region"] = f"region-{i}"  # what a noisy or hostile producer can send
            event["source"] = {"topic": "in", "partition": 0, "offset": len(messages)}
            messages.append(Message(topic="in", partition=0, offset=len(messages),
                                    value=encode(event)))
    metrics = Metrics()
    outcome_encoder = single_object_encoder(schemas["OperationOutcome"])
    now = [max(op.started_ms + op.duration_ms for op in ops)]
    processor = CorrelateProcessor(load_settings({}), CorrelatorConfig(), Decoder(schemas),
                                   lambda topic: outcome_encoder, metrics, clock=lambda: now[0])
    processor.correlators[0] = Correlator(processor.config, processor.clock)
    emitted: list[str] = []
    processor.process(messages, lambda topic, *rest: emitted.append(topic))
    now[0] += processor.config.allowed_lateness_ms + 1  # quiet for longer than the lateness:
    processor.tick(lambda topic, *rest: emitted.append(topic))  # the reorder buffer is released
    assert sum(1 for t in emitted if t.endswith(".completed")) == REGIONS

    server = HealthServer(metrics.registry, Health(), "127.0.0.1", 0).start()
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{server.port}/metrics", timeout=10) as r:
            body = r.read().decode()
    finally:
        server.stop()
    series = [line for line in body.splitlines() if line and not line.startswith("#")]
    durations = [s for s in series if s.startswith("vmevents_operation_duration_seconds_count")]
    print(f"/metrics after {REGIONS} distinct regions: {len(series)} series, {len(body)} bytes")
    assert len(series) < SERIES_CAP
    assert sum(1 for s in durations if 'region="other"' in s) >= 1
    assert any('region="region-' in s for s in durations)  # the first regions seen keep their name
    total = sum(float(s.rsplit(" ", 1)[1]) for s in durations)
    assert total == REGIONS  # every duration is still observed, under its region or other
