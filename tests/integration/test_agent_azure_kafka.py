"""``vmevents agent azure`` delivering through its idempotent acks=all producer to a real broker:
a Freeze flow and a canceled Reboot flow replayed by local IMDS servers, normalized by the
normalize stage, then correlated (the correlator ends them by absence itself): the outcomes the
correlate stage puts on the derived topics."""

from __future__ import annotations

from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from consumer.agent.azure import Agent, AgentConfig, Imds, KafkaSink
from consumer.app import normalize_loop
from consumer.correlator import Correlator, CorrelatorConfig, Outcome
from consumer.http import Health
from consumer.metrics import Metrics
from consumer.serde import Decoder, load_schemas
from tests.imds_replay import COMPUTE, FREEZE_FLOW, REBOOT_CANCELED_FLOW, ImdsReplay, serve
from tests.integration.kafkatools import committed_total, read_all
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
    decoder = Decoder(load_schemas(settings.schema_dir))
    events = [decoder.decode(m.value()) for m in read_all(bootstrap, [out], expected=7)]
    clock = [0]
    correlator = Correlator(CorrelatorConfig(), clock=lambda: clock[0])
    outcomes: list[Outcome] = []
    for event in sorted(events, key=lambda e: e["event_time"]):
        clock[0] = max(clock[0], event["event_time"])
        outcomes += correlator.process(event)
    outcomes += correlator.flush()
    got = sorted((o["instance_id"].rsplit("/", 1)[-1], o["operation"], o["outcome"],
                  o["duration_ms"]) for o in outcomes)
    assert got == [("node-freeze", "maintenance.live_migration", "completed", 2000),
                   ("node-reboot", "maintenance.reboot", "canceled", None)]
