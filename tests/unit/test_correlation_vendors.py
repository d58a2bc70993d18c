"""AWS and GCP notifications through the normalizer into the correlator: the sequences issue #9
names (Health scheduled -> open -> closed, an EC2 stop/start, a GCE hostError followed by
automaticRestart), with lead times and durations subtracted by hand from the payloads' times.
"""

from __future__ import annotations

import copy
from typing import Any

import orjson

from consumer.correlator import Correlator, CorrelatorConfig, Outcome
from consumer.normalization import Normalizer
from tests.vendor_samples import AWS_HEALTH_SCHEDULED, AWS_STATE_CHANGE, GCP_HOST_ERROR

N = Normalizer()
MIN = 60_000

# Hand conversions (UTC): 2026-01-27T01:43:21Z = 1769478201 s, 2026-01-27T01:00:00Z =
# 1769475600 s; the rest by adding minutes to those.
T_NOTICE = 1_769_478_201_000  # the Health event's envelope time: the announcement
T_START = T_NOTICE + 14 * 24 * 60 * MIN  # two weeks later (Tue, 10 Feb 2026 01:43:21 GMT)
T_END = T_START + 25 * MIN


def feed(payloads: list[dict[str, Any]]) -> list[Outcome]:
    """Every payload normalized and processed in order; the clock is the newest event time, and
    at the end the watermark passes everything (what waits in the reorder buffer is decided)."""
    clock = [0]
    correlator = Correlator(CorrelatorConfig(), clock=lambda: clock[0])
    outcomes: list[Outcome] = []
    for payload in payloads:
        for event in N.normalize_all(orjson.dumps(payload)):
            clock[0] = max(clock[0], event["event_time"])
            outcomes += correlator.process(event)
    return outcomes + correlator.flush()


def health(time: str, status: str, **detail: Any) -> dict[str, Any]:
    obj = copy.deepcopy(AWS_HEALTH_SCHEDULED.obj)
    obj["time"] = time
    obj["detail"].update(statusCode=status, startTime="Tue, 10 Feb 2026 01:43:21 GMT", **detail)
    return obj


def test_aws_health_scheduled_open_closed_gives_lead_time_and_duration() -> None:
    outcomes = feed([
        health("2026-01-27T01:43:21Z", "upcoming"),
        health("2026-01-28T09:00:00Z", "open"),  # announced, start still ahead: a notice
        health("2026-02-10T01:43:30Z", "open"),  # past its start: executing since startTime
        health("2026-02-10T02:08:40Z", "closed", endTime="Tue, 10 Feb 2026 02:08:21 GMT"),
    ])
    assert len(outcomes) == 1
    [done] = outcomes
    assert (done["outcome"], done["operation"], done["vendor"], done["instance_id"]) == (
        "completed", "maintenance.retirement", "aws", "i-1234567890abcdef0")
    assert (done["scheduled_at"], done["started_at"], done["finished_at"]) == (
        T_NOTICE, T_START, T_END)
    assert done["lead_time_ms"] == 14 * 24 * 60 * MIN
    assert done["duration_ms"] == 25 * MIN
    assert done["not_before"] == T_START


def test_aws_health_for_two_instances_is_two_operations() -> None:
    entities = [{"entityValue": "i-0aaa0000000000001"}, {"entityValue": "i-0bbb0000000000002"}]
    outcomes = feed([
        health("2026-02-10T01:43:30Z", "open", affectedEntities=entities),
        health("2026-02-10T02:08:40Z", "closed", endTime="Tue, 10 Feb 2026 02:08:21 GMT",
               affectedEntities=entities),
    ])
    assert sorted((o["instance_id"], o["duration_ms"]) for o in outcomes) == [
        ("i-0aaa0000000000001", 25 * MIN), ("i-0bbb0000000000002", 25 * MIN)]


def state(time: str, value: str) -> dict[str, Any]:
    obj = copy.deepcopy(AWS_STATE_CHANGE.obj)
    obj["time"] = time
    obj["detail"]["state"] = value
    return obj


def test_ec2_stop_then_start_lifecycle() -> None:
    outcomes = feed([
        state("2021-11-11T21:29:54Z", "stopping"),
        state("2021-11-11T21:30:40Z", "stopped"),  # 46 s after stopping
        state("2021-11-11T22:00:00Z", "pending"),
        state("2021-11-11T22:00:19Z", "running"),  # 19 s after pending
    ])
    assert [(o["operation"], o["outcome"], o["duration_ms"], o["from_state"], o["to_state"])
            for o in outcomes] == [
        ("lifecycle.stop", "completed", 46_000, "stopping", "stopped"),
        ("lifecycle.start", "completed", 19_000, "starting", "running"),
    ]
    assert {o["instance_id"] for o in outcomes} == {"i-abcd1111"}


def test_ec2_termination_is_a_delete() -> None:
    outcomes = feed([state("2021-11-11T21:29:54Z", "shutting-down"),
                     state("2021-11-11T21:31:00Z", "terminated")])
    assert [(o["operation"], o["outcome"], o["duration_ms"]) for o in outcomes] == [
        ("lifecycle.delete", "completed", 66_000)]


def gce(method: str, timestamp: str, operation_id: str) -> dict[str, Any]:
    obj = copy.deepcopy(GCP_HOST_ERROR.obj)
    obj["protoPayload"]["methodName"] = method
    obj["timestamp"] = timestamp
    obj["operation"].update(id=operation_id, producer=method)
    return obj


def test_gcp_host_error_then_automatic_restart_is_one_failure_reboot() -> None:
    outcomes = feed([
        gce("compute.instances.hostError", "2022-06-30T14:07:23.102868Z",
            "systemevent-1656598023967-5e2aac8c11261-3553f149-42656705"),
        gce("compute.instances.automaticRestart", "2022-06-30T14:08:05.502Z",
            "systemevent-1656598085502-5e2aac8c11262-aaaa0000-1"),
    ])
    assert len(outcomes) == 1
    [reboot] = outcomes
    assert (reboot["outcome"], reboot["operation"], reboot["vendor"]) == (
        "completed", "failure.reboot", "gcp")
    assert (reboot["started_at"], reboot["finished_at"]) == (1_656_598_043_102, 1_656_598_085_502)
    assert reboot["duration_ms"] == 42_400
    assert reboot["region"] == "us-east1"


def test_gcp_restart_delivered_before_its_host_error_still_pairs() -> None:
    outcomes = feed([
        gce("compute.instances.automaticRestart", "2022-06-30T14:08:05.502Z", "op-2"),
        gce("compute.instances.hostError", "2022-06-30T14:07:23.102868Z", "op-1"),
    ])
    assert [(o["outcome"], o["duration_ms"]) for o in outcomes] == [("completed", 42_400)]
