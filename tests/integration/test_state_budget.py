"""The correlate stage under a state budget far below the state it is offered, on real Kafka.

12,000 maintenance reboots start and never finish (Alibaba notifications with an event id, so
each is applied on arrival). The first half goes to a stage without a byte cap, which builds the
state and stops; the second half goes to a stage restarted with the smallest budget accepted
(256Ki, a few hundred operations), which first restores the whole first half from the changelog.
That stage must stay up and ready, keep its state within the budget by evicting operations as
``timed_out`` with ``vmevents.evicted``, and lose nothing: every started operation is either in
an evicted outcome or still open (the compacted open-operations topic and the pending gauge),
never both, never neither.
"""

from __future__ import annotations

import signal
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from consumer.config import load_settings
from consumer.serde import Decoder, load_schemas, single_object_encoder
from tests.integration.kafkatools import (
    committed_total,
    create_topics,
    produce,
    read_all,
    stage_env,
    start_stage,
    unique,
)
from tests.integration.test_broker_faults import ReadinessWatch, log_events
from tests.integration.test_correlate_stage import outcome_topics
from tests.integration.test_normalize_stage import wait_for
from tests.integration.test_open_operations_topic import event, materialize

pytestmark = [pytest.mark.kafka, pytest.mark.apache_kafka]

OPS = 12_000
BUDGET = 256 * 1024  # "256Ki": the smallest budget the stage accepts
LATENESS_S = 2


def http_port(log: Path) -> int | None:
    for e in log_events(log):
        if e.get("event") == "http server listening":
            return int(str(e["metrics"]).split(":")[2].split("/")[0])
    return None


def state_bytes(metrics: dict[str, dict[str, float]]) -> float:
    return sum(metrics.get("vmevents_correlate_state_bytes", {}).values())


def scrape(port: int) -> dict[str, dict[str, float]]:
    """Samples by name, then by partition label ("" for series without one)."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    out: dict[str, dict[str, float]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            label = sample.labels.get("partition", sample.labels.get("kind", ""))
            out.setdefault(sample.name, {})[label] = sample.value
    return out


@pytest.mark.timeout(300)
def test_a_budget_far_below_the_state_evicts_and_loses_nothing(kafka_stack: Any,
                                                                tmp_path: Path) -> None:
    bootstrap = kafka_stack.bootstrap
    normalized, dlq, changelog, open_topic = (unique("normalized"), unique("dlq"),
                                              unique("changelog"), unique("open"))
    prefix = f"{unique('out')}."
    create_topics(bootstrap, {normalized: 3, dlq: 1})
    create_topics(bootstrap, {changelog: 3, open_topic: 3}, {"cleanup.policy": "compact"})
    schemas = load_schemas(load_settings({}).schema_dir)
    encode = single_object_encoder(schemas["InstanceEvent"])
    decoder = Decoder(schemas)

    started = int(time.time() * 1000) - 60_000  # maintenance reboots time out after 6 h
    instances = [f"i-{n:05d}" for n in range(OPS)]
    records = [(f"aliyun:{i}".encode(),
                encode(event(i, "executing", started, start_time=started)))
               for i in instances]
    group = unique("corr")
    common = {"VMEVENTS_NORMALIZED_TOPIC": normalized, "VMEVENTS_DLQ_TOPIC": dlq,
              "VMEVENTS_CHANGELOG_TOPIC": changelog, "VMEVENTS_OPEN_OPERATIONS_TOPIC": open_topic,
              "VMEVENTS_OUTCOME_TOPIC_PREFIX": prefix, "VMEVENTS_CORRELATE_GROUP": group,
              "VMEVENTS_BATCH_SIZE": "500",
              "VMEVENTS_CORRELATE_ALLOWED_LATENESS": f"{LATENESS_S}s"}

    # 1. Without a byte cap: half the operations open, their state on the changelog.
    log1 = tmp_path / "uncapped.log"
    first = start_stage("correlate", stage_env(
        bootstrap, **common, VMEVENTS_TRANSACTIONAL_ID=unique("txn"),
        VMEVENTS_CORRELATE_MAX_STATE_BYTES="off"), log1)
    try:
        produce(bootstrap, normalized, records[:OPS // 2])
        wait_for(lambda: committed_total(bootstrap, group, normalized) >= OPS // 2, 90,
                 "the first half committed", first)
        wait_for(lambda: http_port(log1) is not None, 30, "the metrics port", first)
        port1 = http_port(log1)
        assert port1 is not None
        wait_for(lambda: sum(scrape(port1).get("vmevents_pending_operations", {}).values())
                 == OPS // 2, 30, "every operation of the first half pending", first)
        uncapped = scrape(port1)
    finally:
        first.send_signal(signal.SIGTERM)
        first.wait(60)
    assert first.returncode == 0, log1.read_text()[-3000:]
    uncapped_bytes = sum(uncapped["vmevents_correlate_state_bytes"].values())
    assert uncapped["vmevents_correlate_state_budget_bytes"][""] == 0  # no byte cap
    assert uncapped_bytes > 4 * BUDGET, "the offered state must be far above the budget"

    # 2. Restarted with the budget: it restores more than fits, then gets the second half.
    log2 = tmp_path / "capped.log"
    second = start_stage("correlate", stage_env(
        bootstrap, **common, VMEVENTS_TRANSACTIONAL_ID=unique("txn"),
        VMEVENTS_CORRELATE_MAX_STATE_BYTES="256Ki"), log2)
    watch = ReadinessWatch(log2).start(second)
    outcomes: list[dict[str, Any]] = []
    still_open: set[str] = set()
    metrics: dict[str, dict[str, float]] = {}
    try:
        wait_for(lambda: watch.seen[-1:] == [200], 60, "ready after the restore", second)
        port2 = http_port(log2)
        assert port2 is not None
        # The restore read several times the budget: it evicted rather than held it all.
        wait_for(lambda: state_bytes(scrape(port2)) <= BUDGET, 15,
                 "the restored state within its budget", second)
        produce(bootstrap, normalized, records[OPS // 2:])
        wait_for(lambda: committed_total(bootstrap, group, normalized) >= OPS, 90,
                 "the second half committed", second)
        time.sleep(LATENESS_S + 1)  # past the allowed lateness and a tick

        def settled() -> bool:
            metrics.update(scrape(port2))
            topics = outcome_topics(bootstrap, prefix)
            outcomes[:] = [decoder.decode(m.value()) for m in
                           (read_all(bootstrap, topics, settle=1, timeout=30) if topics else [])]
            still_open.clear()
            still_open.update(r["instance_id"]
                              for r in materialize(bootstrap, open_topic, decoder).values())
            return len(outcomes) + len(still_open) >= OPS and state_bytes(metrics) <= BUDGET

        try:
            wait_for(settled, 60, "the state within its budget, every operation accounted for",
                     second)
        finally:
            print(f"uncapped state: {OPS // 2} pending, {uncapped_bytes} bytes estimated; "
                  f"capped: {len(still_open)} open, {len(outcomes)} outcomes, "
                  f"{state_bytes(metrics)} bytes estimated (budget {BUDGET})")
        assert second.poll() is None, "the stage must stay up"
        assert watch.seen[-1] == 200
        # once ready it never went unready: no crash, no restart, no stall
        assert watch.seen.count(200) == 1, watch.seen
    finally:
        watch.stop()
        second.send_signal(signal.SIGTERM)
        second.wait(60)
    assert second.returncode == 0, log2.read_text()[-3000:]

    starts = [e for e in log_events(log2) if e.get("event") == "correlator state budget"]
    assert [(e["budget_bytes"], e["source"]) for e in starts] == [
        (BUDGET, "VMEVENTS_CORRELATE_MAX_STATE_BYTES")]
    assert metrics["vmevents_correlate_state_budget_bytes"][""] == BUDGET
    assert state_bytes(metrics) <= BUDGET

    evicted = [o["instance_id"] for o in outcomes]
    assert {(o["outcome"], o["attributes"].get("vmevents.evicted")) for o in outcomes} == {
        ("timed_out", "max_state_bytes")}
    assert len(evicted) == len(set(evicted)), "an operation evicted twice"
    assert not set(evicted) & still_open, "an operation both evicted and open"
    assert set(evicted) | still_open == set(instances), "operations lost"
    assert sum(metrics["vmevents_pending_operations"].values()) == len(still_open)
    assert sum(n for kind, n in metrics["vmevents_correlator_anomalies_total"].items()
               if kind.startswith("evicted")) == len(evicted)
