"""``vmevents agent azure`` against a local IMDS replay server and a local ingest stand-in
(tests/imds_replay.py): Microsoft's documented flows are forwarded once per change, with the
VM's identity and observation time, survive delivery failures in order, normalize, and end by
absence as they should; approval is opt-in and follows the hook."""

from __future__ import annotations

import os
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Mapping
from typing import Any

import orjson
import pytest
from prometheus_client import CollectorRegistry

from consumer.agent.azure import (
    IMDS_BASE,
    Agent,
    AgentConfig,
    HttpSink,
    Imds,
    envelope,
)
from consumer.correlation.absence import replay
from consumer.errors import ConfigError
from consumer.normalization import Normalizer
from tests.imds_replay import (
    COMPUTE,
    FREEZE_FLOW,
    REBOOT_CANCELED_FLOW,
    SUBSCRIPTION,
    ImdsReplay,
    Ingest,
    doc,
    event,
    serve,
)

T0 = 1_775_945_000.0  # 2026-04-11T22:03:20Z
TOKEN = "s3cret-token"
VM = f"{SUBSCRIPTION}/mc_fleet/aks-nodepool1-0"


class Clock:
    """Seconds that move only when a test moves them: one poll is one second."""

    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> float:
        return self.now


def agent_for(base: str, clock: Clock, **config: Any) -> Agent:
    settings = AgentConfig(delivery="http", imds_url=base, http_url=f"{base}/ingest/azure",
                           http_token=TOKEN, backoff_initial_s=1.0, backoff_max_s=4.0, **config)
    return Agent(settings, Imds(base, 5.0), HttpSink(settings.http_url, TOKEN, 5.0),
                 registry=CollectorRegistry(), clock=clock)


def run_flow(agent: Agent, clock: Clock, polls: int) -> None:
    for _ in range(polls):
        agent.step()
        clock.now += 1.0


def test_the_freeze_flow_is_forwarded_once_per_change_with_identity_and_time() -> None:
    imds, ingest, clock = ImdsReplay(FREEZE_FLOW), Ingest(), Clock()
    with serve(imds, ingest) as base:
        agent = agent_for(base, clock)
        run_flow(agent, clock, len(FREEZE_FLOW) + 2)
    sent = [orjson.loads(b) for b in ingest.bodies]
    assert [s["document"]["DocumentIncarnation"] for s in sent] == [1, 2, 3, 4]
    assert set(ingest.authorizations) == {f"Bearer {TOKEN}"}
    assert all(s["vmeventsEnvelope"] == "azure.scheduledevents" and s["version"] == 1
               for s in sent)
    assert sent[0]["vm"]["resourceId"] == COMPUTE["resourceId"]
    assert "osType" not in sent[0]["vm"]  # only the identity fields
    assert [s["observedAt"] for s in sent] == [
        "2026-04-11T22:03:20.000Z", "2026-04-11T22:03:22.000Z", "2026-04-11T22:03:24.000Z",
        "2026-04-11T22:03:26.000Z"]
    assert imds.refused == 0  # Metadata header and api-version on every call
    assert imds.approvals == []  # approval is off by default


def normalized_ends(bodies: list[bytes]) -> tuple[list[Any], list[Any]]:
    normalizer = Normalizer()
    events = [e for body in bodies for e in normalizer.normalize_all(body)]
    return events, replay(events)


def test_forwarded_flows_normalize_and_end_by_absence() -> None:
    for flow, expected in ((FREEZE_FLOW, ("F1", "executed", "maintenance.live_migration")),
                           (REBOOT_CANCELED_FLOW, ("R1", "canceled", "maintenance.reboot"))):
        ingest, clock = Ingest(), Clock()
        with serve(ImdsReplay(flow), ingest) as base:
            run_flow(agent_for(base, clock), clock, len(flow) + 1)
        events, ends = normalized_ends(ingest.bodies)
        assert {e["instance_id"] for e in events} == {VM}
        [end] = ends
        assert (end["vendor_event_id"], end["phase"], end["operation"]) == expected
    assert end["start_time"] is None  # the canceled reboot never started
    freeze_ingest, clock = Ingest(), Clock()
    with serve(ImdsReplay(FREEZE_FLOW), freeze_ingest) as base:
        run_flow(agent_for(base, clock), clock, len(FREEZE_FLOW))
    [freeze] = normalized_ends(freeze_ingest.bodies)[1]
    assert freeze["end_time"] - freeze["start_time"] == 2000  # Started seen 2 s before it left


def test_delivery_failures_back_off_and_lose_nothing() -> None:
    imds, ingest, clock = ImdsReplay(FREEZE_FLOW), Ingest(fail=3), Clock()
    with serve(imds, ingest) as base:
        agent = agent_for(base, clock)
        run_flow(agent, clock, len(FREEZE_FLOW) + 12)
    sent = [orjson.loads(b)["document"]["DocumentIncarnation"] for b in ingest.bodies]
    assert sent == [1, 2, 3, 4]  # all of them, in order, each once
    assert agent.metrics.delivery_failures._value.get() == 3
    assert len(agent.outbox) == 0


def test_a_target_that_stays_down_keeps_the_documents() -> None:
    imds, ingest, clock = ImdsReplay(FREEZE_FLOW), Ingest(fail=10**6), Clock()
    with serve(imds, ingest) as base:
        agent = agent_for(base, clock, outbox_max=3)
        run_flow(agent, clock, len(FREEZE_FLOW) + 2)
    assert [orjson.loads(b)["document"]["DocumentIncarnation"] for b in agent.outbox] == [2, 3, 4]
    assert agent.metrics.dropped._value.get() == 1  # the bound, counted


def test_imds_without_the_metadata_header_is_refused_by_the_replay_server() -> None:
    imds = ImdsReplay(FREEZE_FLOW)
    with serve(imds) as base:
        with pytest.raises(urllib.error.HTTPError) as info:
            urllib.request.urlopen(f"{base}/metadata/scheduledevents?api-version=2020-07-01")
        assert info.value.code == 400
        assert Imds(base).scheduled_events() == FREEZE_FLOW[0]
    assert imds.refused == 1


def test_imds_unavailable_is_retried_not_fatal() -> None:
    clock = Clock()
    agent = agent_for("http://127.0.0.1:9", clock)  # nothing listens on the discard port
    agent.step()
    assert agent.identity is None
    assert agent.metrics.polls.labels("error")._value.get() == 1


def hook_recorder(code: int) -> tuple[list[Mapping[str, str]], Any]:
    calls: list[Mapping[str, str]] = []

    def run(argv: tuple[str, ...], env: Mapping[str, str], timeout: float) -> int:
        calls.append(dict(env))
        return code

    return calls, run


def test_approval_follows_a_successful_hook_once_per_event() -> None:
    flow = [doc(1, event("R1", "Reboot", "Scheduled"), event("F1", "Freeze", "Scheduled"),
                event("O1", "Reboot", "Scheduled", resources=["other-vm"]))] * 3
    imds, clock = ImdsReplay(flow), Clock()
    with serve(imds, Ingest()) as base:
        agent = agent_for(base, clock, approve_hook=(sys.executable, "-c", "pass"))
        run_flow(agent, clock, 3)
    # Freeze is not approved by default; another VM's event is its own agent's business
    assert imds.approvals == [{"StartRequests": [{"EventId": "R1"}]}]
    assert agent.metrics.approvals.labels("ok")._value.get() == 1


def test_a_failing_hook_approves_nothing() -> None:
    flow = [doc(1, event("R1", "Reboot", "Scheduled"))] * 3
    imds, clock = ImdsReplay(flow), Clock()
    calls, run_hook = hook_recorder(1)
    with serve(imds, Ingest()) as base:
        settings = AgentConfig(delivery="http", imds_url=base, http_url=f"{base}/ingest/azure",
                               http_token=TOKEN, approve_hook=("drain",))
        agent = Agent(settings, Imds(base), HttpSink(settings.http_url, TOKEN),
                      clock=clock, run_hook=run_hook)
        run_flow(agent, clock, 3)
    assert imds.approvals == []
    assert calls[0]["VMEVENTS_EVENT_ID"] == "R1"
    assert len(calls) == 1  # retried after 30 s, not every poll


def test_the_real_hook_runs_with_the_event_in_its_environment(tmp_path: Any) -> None:
    out = tmp_path / "seen"
    flow = [doc(1, event("R1", "Reboot", "Scheduled"))]
    imds, clock = ImdsReplay(flow), Clock()
    script = f"import os; open({str(out)!r}, 'w').write(os.environ['VMEVENTS_EVENT_ID'])"
    with serve(imds, Ingest()) as base:
        run_flow(agent_for(base, clock, approve_hook=(sys.executable, "-c", script)), clock, 1)
    assert out.read_text() == "R1"
    assert imds.approvals == [{"StartRequests": [{"EventId": "R1"}]}]


def test_envelope_round_trips_through_the_adapter() -> None:
    identity = {k: str(COMPUTE[k]) for k in ("vmId", "name", "resourceId", "subscriptionId",
                                              "resourceGroupName", "location", "vmScaleSetName")}
    raw = envelope(identity, doc(5, event("F1", "Freeze", "Started")), 1_775_945_000_123)
    [normalized] = Normalizer().normalize_all(raw)
    assert (normalized["instance_id"], normalized["event_time"], normalized["phase"]) == (
        VM, 1_775_945_000_123, "executing")


def env(**values: str) -> dict[str, str]:
    return {f"VMEVENTS_AGENT_{k.upper()}": v for k, v in values.items()}


def test_config_defaults_and_errors() -> None:
    config = AgentConfig.from_env({}, "vm.events.raw")
    assert (config.delivery, config.imds_url, config.poll_interval_s, config.topic) == (
        "kafka", IMDS_BASE, 1.0, "vm.events.raw")
    assert config.approve_hook == ()  # approval off
    with pytest.raises(ConfigError, match="needs VMEVENTS_AGENT_HTTP_URL") as info:
        AgentConfig.from_env(env(delivery="http", poll_interval_s="x"), "raw")
    assert "POLL_INTERVAL_S='x' is not a number" in str(info.value)
    with pytest.raises(ConfigError, match="must be kafka or http"):
        AgentConfig.from_env(env(delivery="carrier-pigeon"), "raw")
    with pytest.raises(ConfigError, match="must start with http"):
        AgentConfig.from_env(env(imds_url="169.254.169.254"), "raw")


def test_token_from_a_file(tmp_path: Any) -> None:
    path = tmp_path / "token"
    path.write_text(f"{TOKEN}\n")
    config = AgentConfig.from_env(env(delivery="http", http_url="https://ingest.example/azure",
                                      http_token_file=str(path)), "raw")
    assert config.http_token == TOKEN


def test_cli_stops_at_start_on_a_config_error_with_one_line() -> None:
    result = subprocess.run([sys.executable, "-m", "consumer.cli", "agent", "azure"],
                            env={**os.environ, "VMEVENTS_AGENT_DELIVERY": "http"},
                            capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("vmevents: configuration error: VMEVENTS_AGENT_DELIVERY=http")
