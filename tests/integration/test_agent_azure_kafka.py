"""``vmevents agent azure`` delivering through its idempotent acks=all producer to a real broker:
a Freeze flow and a canceled Reboot flow replayed by local IMDS servers, normalized by the
normalize stage, then the correlate stage (which ends them by absence itself): the outcomes are
read from the derived topics."""

from __future__ import annotations

from typing import Any

import pytest
from confluent_kafka import Consumer, TopicPartition
from prometheus_client import CollectorRegistry

from consumer.agent.azure import Agent, AgentConfig, Imds, KafkaSink
from consumer.app import correlate_loop, normalize_loop
from consumer.config import load_settings
from consumer.http import Health
from consumer.metrics import Metrics
from consumer.serde import Decoder, load_schemas
from tests.imds_replay import COMPUTE, FREEZE_FLOW, REBOOT_CANCELED_FLOW, ImdsReplay, serve
from tests.integration.kafkatools import committed_total, read_all, stage_env, unique
from tests.integration.test_normalize_stage import in_process_stage, run_in_thread

pytestmark = pytest.mark.kafka

T0 = 1_775_945_000.0


@pytest.mark.apache_kafka
def test_agent_flows_through_kafka_end_by_absence(kafka_stack: Any) -> None:
    bootstrap = kafka_stack.bootstrap
    settings, raw, out, _ = in_process_stage(bootstrap, [])
    sent = 0
    for name, flow in (("node-freeze", FREEZE_FLOW), ("node-reboot", REBOOT_CANCELED_FLOW)):
        imds = ImdsReplay([{**d, "Events": [{**e, "Resources": [name]} for e in d["Events"]]}
                           for d in flow], {**COMPUTE, "name": name})
        now = [T0]
        sink = KafkaSink.from_settings(settings, raw)
        with serve(imds) as base:
            agent = Agent(AgentConfig(imds_url=base, topic=raw), Imds(base), sink,
                          registry=CollectorRegistry(), clock=lambda now=now: now[0])
            for _ in range(len(flow)):
                agent.step()
                now[0] += 1.0
        sink.close()
        assert not agent.outbox
        sent += int(agent.metrics.forwarded._value.get())
    assert sent == 4 + 3

    run_in_thread(normalize_loop(settings, Metrics(), Health()),
                  lambda: committed_total(bootstrap, settings.normalize_group, raw) >= sent)
    # The correlate stage itself, on the normalized topic: the derived topics are the answer.
    prefix = f"{unique('derived')}."
    corr_settings = load_settings(stage_env(
        bootstrap, VMEVENTS_NORMALIZED_TOPIC=out, VMEVENTS_DLQ_TOPIC=unique("dlq"),
        VMEVENTS_CHANGELOG_TOPIC=unique("changelog"), VMEVENTS_OUTCOME_TOPIC_PREFIX=prefix,
        VMEVENTS_OPEN_OPERATIONS_TOPIC=unique("open"), VMEVENTS_CORRELATE_GROUP=unique("g"),
        VMEVENTS_TRANSACTIONAL_ID=unique("txn")))
    end = end_offset(bootstrap, out)
    run_in_thread(correlate_loop(corr_settings, Metrics(), Health()),
                  lambda: committed_total(bootstrap, corr_settings.correlate_group, out) >= end)
    completed = f"{prefix}maintenance.live_migration.completed"
    canceled = f"{prefix}maintenance.reboot.canceled"
    decoder = Decoder(load_schemas(settings.schema_dir))
    outcomes = [decoder.decode(m.value()) for m in read_all(bootstrap, [completed, canceled],
                                                              expected=2)]
    got = sorted((o["instance_id"].rsplit("/", 1)[-1], o["operation"], o["outcome"],
                  o["duration_ms"]) for o in outcomes)
    assert got == [("node-freeze", "maintenance.live_migration", "completed", 2000),
                   ("node-reboot", "maintenance.reboot", "canceled", None)]


def end_offset(bootstrap: str, topic: str) -> int:
    """The end of a one-partition topic (its records and the stages' marks and markers)."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": unique("end")})
    try:
        return int(consumer.get_watermark_offsets(TopicPartition(topic, 0), timeout=10)[1])
    finally:
        consumer.close()
