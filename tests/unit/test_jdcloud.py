"""JD Cloud VM: every example payload of the document, expectations written by hand.

Times: JD's zone-less ``eventTime`` is Asia/Shanghai (UTC+8, no DST since 1991), so the UTC
instant is 8 hours earlier; the epoch milliseconds were computed by hand from
2021-01-01T00:00:00Z = 1609459200 s and checked against the standard library below.
"""

from __future__ import annotations

import calendar
from datetime import datetime
from typing import Any

import pytest

from consumer.errors import InvalidEvent
from consumer.model import InstanceEvent
from consumer.normalization import Normalizer, jdcloud
from consumer.normalization.timeparse import TimeParser
from tests.seeds import BY_NAME, JD_SEEDS

N = Normalizer()


def one(obj: object) -> InstanceEvent:
    """The one event of a parsed payload (the normalizer returns a list)."""
    [event] = N.normalize_obj(obj)
    return event
BY_ENVELOPE = "jd_envelope_state_change_running"

# name -> (instance_id, eventAction, operation, phase, eventState,
#          event_time ms, the same instant in UTC, previous_state, current_state, attributes)
EXPECTED: dict[str, tuple[Any, ...]] = {
    "jd_system_failure_delete_executing": (
        "i-ai0****net", "SystemFailure.Delete", "failure.delete", "executing", "Executing",
        1614255215000, "2021-02-25T12:13:35Z", None, None, {}),
    "jd_system_failure_delete_executed": (
        "i-ai0****net", "SystemFailure.Delete", "failure.delete", "executed", "Executed",
        1614255219000, "2021-02-25T12:13:39Z", None, None, {}),
    "jd_system_failure_reboot_executing": (
        "i-bc4****9oh", "SystemFailure.Reboot", "failure.reboot", "executing", "Executing",
        1614206646000, "2021-02-24T22:44:06Z", None, None, {}),
    "jd_system_failure_reboot_executed": (
        "i-bc4****9oh", "SystemFailure.Reboot", "failure.reboot", "executed", "Executed",
        1614206666000, "2021-02-24T22:44:26Z", None, None, {}),
    "jd_system_failure_fault": (
        "i-qj7****e7m", "SystemFailure.Fault", "failure.fault", None, None,
        1614217887000, "2021-02-25T01:51:27Z", None, None, {}),
    "jd_local_disk_failure_fault": (
        "i-qj7****e7m", "SystemException.LocalDiskFailure.Fault", "failure.local_disk_fault",
        None, None, 1614217887000, "2021-02-25T01:51:27Z", None, None, {}),
    "jd_gpu_failure_fault": (
        "i-qj7****e7m", "SystemFailure.GPUFailure.Fault", "failure.gpu_fault", None, None,
        1614217887000, "2021-02-25T01:51:27Z", None, None, {"gpuSerial": "gpu-serial:1:2:3"}),
    "jd_removed_from_ag": (
        "i-qj7****e7m", "SystemFailure.RemovedFromAg", "failure.removed_from_ag", None, None,
        1614217887000, "2021-02-25T01:51:27Z", None, None, {}),
    "jd_redeploy": (
        "i-qj7****e7m", "SystemFailure.ReDeploy", "failure.redeploy", None, None,
        1677635487000, "2023-03-01T01:51:27Z", None, None, {}),
    "jd_isolate_local_disk": (
        "i-qj7****e7m", "SystemMaintenance.IsolateLocalDisk", "maintenance.isolate_local_disk",
        None, None, 1677635487000, "2023-03-01T01:51:27Z", None, None, {}),
    "jd_expiration_stop_executing": (
        "i-l16****r0v", "InstanceExpiration.Stop", "expiration.stop", "executing", "Executing",
        1614222014000, "2021-02-25T03:00:14Z", None, None, {}),
    "jd_expiration_stop_executed": (
        "i-l16****r0v", "InstanceExpiration.Stop", "expiration.stop", "executed", "Executed",
        1614222020000, "2021-02-25T03:00:20Z", None, None, {}),
    "jd_expiration_delete_executing": (
        "i-l16****r0v", "InstanceExpiration.Delete", "expiration.delete", "executing",
        "Executing", 1614222014000, "2021-02-25T03:00:14Z", None, None, {}),
    "jd_expiration_delete_executed": (
        "i-l16****r0v", "InstanceExpiration.Delete", "expiration.delete", "executed", "Executed",
        1614222020000, "2021-02-25T03:00:20Z", None, None, {}),
    "jd_arrearage_stop_executing": (
        "i-l16****r0v", "AccountArrearage.Stop", "arrearage.stop", "executing", "Executing",
        1614222014000, "2021-02-25T03:00:14Z", None, None, {}),
    "jd_arrearage_stop_executed": (
        "i-l16****r0v", "AccountArrearage.Stop", "arrearage.stop", "executed", "Executed",
        1614222020000, "2021-02-25T03:00:20Z", None, None, {}),
    "jd_arrearage_delete_executing": (
        "i-l16****r0v", "AccountArrearage.Delete", "arrearage.delete", "executing", "Executing",
        1614222014000, "2021-02-25T03:00:14Z", None, None, {}),
    "jd_arrearage_delete_executed": (
        "i-l16****r0v", "AccountArrearage.Delete", "arrearage.delete", "executed", "Executed",
        1614222020000, "2021-02-25T03:00:20Z", None, None, {}),
    "jd_state_change_create_pending": (
        "i-x0r****q2b", "StateChange", "lifecycle.state_change", None, None,
        1614222030000, "2021-02-25T03:00:30Z", None, "pending", {}),
    "jd_state_change_create_running": (
        "i-x0r****q2b", "StateChange", "lifecycle.state_change", None, None,
        1614222052000, "2021-02-25T03:00:52Z", "pending", "running", {}),
    "jd_state_change_create_failed_pending": (
        "i-mob****hpa", "StateChange", "lifecycle.state_change", None, None,
        1614340518000, "2021-02-26T11:55:18Z", None, "pending", {}),
    "jd_state_change_create_failed_error": (
        "i-mob****hpa", "StateChange", "lifecycle.state_change", None, None,
        1614340539000, "2021-02-26T11:55:39Z", "pending", "error", {}),
    "jd_state_change_delete_deleting": (
        "i-5kh****v3b", "StateChange", "lifecycle.state_change", None, None,
        1616150534000, "2021-03-19T10:42:14Z", "stopped", "deleting", {}),
    "jd_state_change_delete_terminated": (
        "i-5kh****v3b", "StateChange", "lifecycle.state_change", None, None,
        1616150536000, "2021-03-19T10:42:16Z", "deleting", "terminated", {}),
    "jd_create_image_executing": (
        "i-ai0****net", "CreateImage", "image.create", "executing", "Executing",
        1614255215000, "2021-02-25T12:13:35Z", None, None, {}),
    "jd_create_image_executed": (
        "i-ai0****net", "CreateImage", "image.create", "executed", "Executed",
        1614255219000, "2021-02-25T12:13:39Z", None, None, {}),
}


def utc_ms(iso: str) -> int:
    return calendar.timegm(datetime.strptime(iso, "%Y-%m-%dT%H:%M:%SZ").timetuple()) * 1000


def test_every_detail_snippet_has_an_expectation() -> None:
    assert sorted(EXPECTED) == sorted(s.name for s in JD_SEEDS if s.name != BY_ENVELOPE)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_hand_computed_times_match_the_standard_library(name: str) -> None:
    ms, iso = EXPECTED[name][5], EXPECTED[name][6]
    assert utc_ms(iso) == ms


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_detail_snippet(name: str) -> None:
    (instance, code, operation, phase, status, ms, _iso, previous, current,
     attributes) = EXPECTED[name]
    assert N.normalize(BY_NAME[name].raw) == {
        "vendor": "jdcloud",
        "instance_id": instance,
        "vendor_event_code": code,
        "operation": operation,
        "known": True,
        "phase": phase,
        "vendor_status": status,
        "event_time": ms,
        "region": None,  # the detail form carries neither region nor account
        "account_id": None,
        "notification_id": None,
        "vendor_event_id": None,
        "level": None,
        "previous_state": previous,
        "current_state": current,
        "publish_time": None,
        "not_before": None,
        "start_time": None,
        "end_time": None,
        "source_format": "jdcloud.detail",
        "attributes": attributes,
    }


def test_envelope_example() -> None:
    assert N.normalize(BY_NAME[BY_ENVELOPE].raw) == {
        "vendor": "jdcloud",
        "instance_id": "i-eiu****bqp",  # detail wins over resources[0] ("i-eiuciglbqp")
        "vendor_event_code": "StateChange",
        "operation": "lifecycle.state_change",
        "known": True,
        "phase": None,
        "vendor_status": None,
        "event_time": 1616038838000,  # 2021-03-18 11:40:38 +08:00 = 2021-03-18T03:40:38Z
        "region": "cn-east-1",
        "account_id": "iaasdevops",
        "notification_id": "1xo6n4os********6g2d5721f2",
        "vendor_event_id": None,
        "level": None,
        "previous_state": "pending",
        "current_state": "running",
        "publish_time": None,
        "not_before": None,
        "start_time": None,
        "end_time": None,
        "source_format": "jdcloud.envelope",
        "attributes": {
            "detailType": "StatusNotification",
            "resources": '["i-eiuciglbqp"]',
            "time": "2021-03-18T11:49:46+0800",
            "version": "",
        },
    }
    assert utc_ms("2021-03-18T03:40:38Z") == 1616038838000


def envelope(detail: dict[str, Any], **top: Any) -> dict[str, Any]:
    obj: dict[str, Any] = {
        "detail": detail, "detailType": "StatusNotification", "id": "n-1", "pin": "acct",
        "region": "cn-north-1", "resources": ["i-from-resources"], "source": "jcloud.vm",
        "time": "2021-03-18T11:49:46+0800", "version": "0",
    }
    obj.update(top)
    return obj


def test_envelope_around_a_paired_event() -> None:
    event = one(envelope(BY_NAME["jd_system_failure_reboot_executed"].obj))
    assert (event["operation"], event["phase"], event["event_time"]) == (
        "failure.reboot", "executed", 1614206666000)
    assert (event["region"], event["account_id"], event["notification_id"]) == (
        "cn-north-1", "acct", "n-1")
    assert event["source_format"] == "jdcloud.envelope"


def test_instance_falls_back_to_resources() -> None:
    detail = {"eventAction": "SystemFailure.Fault", "eventTime": "2021-02-25 09:51:27"}
    assert one(envelope(detail))["instance_id"] == "i-from-resources"


def test_event_time_falls_back_to_envelope_time() -> None:
    detail = {"eventAction": "SystemFailure.Fault", "instanceId": "i-1"}
    event = one(envelope(detail))
    assert event["event_time"] == 1616039386000  # 2021-03-18T03:49:46Z


def test_garbage_event_time_does_not_fall_back() -> None:
    detail = {"eventAction": "SystemFailure.Fault", "instanceId": "i-1", "eventTime": "soon"}
    with pytest.raises(InvalidEvent, match=r"detail\.eventTime"):
        one(envelope(detail))


def test_missing_instance_everywhere_is_invalid() -> None:
    detail = {"eventAction": "SystemFailure.Fault", "eventTime": "2021-02-25 09:51:27"}
    with pytest.raises(InvalidEvent, match="instanceId is required"):
        one(envelope(detail, resources=[]))
    with pytest.raises(InvalidEvent, match="instanceId is required"):
        one(envelope(detail, resources=[42]))


def test_envelope_without_detail_is_invalid() -> None:
    with pytest.raises(InvalidEvent, match="detail is required"):
        one({"source": "jcloud.vm", "id": "x"})
    with pytest.raises(InvalidEvent, match="detail must be an object"):
        one({"source": "jcloud.vm", "detail": "StateChange"})


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("instanceId", 12345, "instanceId must be a string, got int"),
        ("eventAction", ["x"], "eventAction must be a string, got list"),
        ("eventAction", "", "eventAction is required"),
        ("eventTime", 1614255215, "eventTime must be a timestamp string, got int"),
        ("eventTime", "2021-02-30 10:00:00", "eventTime: not a timestamp"),
        ("eventState", True, "eventState must be a string, got bool"),
        ("instanceCurrentState", {}, "instanceCurrentState must be a string, got dict"),
    ],
)
def test_wrong_types_are_invalid(field: str, value: Any, message: str) -> None:
    obj = BY_NAME["jd_state_change_create_running"].obj | {field: value}
    with pytest.raises(InvalidEvent, match=message):
        one(obj)


def test_unknown_action_is_mechanical_and_flagged() -> None:
    event = one({"eventAction": "SystemMaintenance.FooBar", "eventState": "Executing",
                             "eventTime": "2021-02-25 20:13:35", "instanceId": "i-1"})
    assert (event["vendor_event_code"], event["operation"], event["known"], event["phase"]) == (
        "SystemMaintenance.FooBar", "system_maintenance.foo_bar", False, "executing")


def test_unknown_state_keeps_vendor_status() -> None:
    obj = BY_NAME["jd_create_image_executed"].obj | {"eventState": "Failed"}
    assert (one(obj)["phase"], one(obj)["vendor_status"]) == (
        "failed", "Failed")
    obj["eventState"] = "Paused"
    assert (one(obj)["phase"], one(obj)["vendor_status"]) == (
        None, "Paused")


def test_extra_detail_fields_are_kept_as_strings() -> None:
    obj = BY_NAME["jd_gpu_failure_fault"].obj | {"gpuCount": 8, "flags": {"a": [1, None]},
                                                 "ok": False, "gone": None}
    assert one(obj)["attributes"] == {
        "gpuSerial": "gpu-serial:1:2:3", "gpuCount": "8", "flags": '{"a":[1,null]}',
        "ok": "false"}


def test_adapter_is_pure_and_takes_the_zone_from_its_parser() -> None:
    obj = BY_NAME["jd_system_failure_reboot_executing"].obj
    assert jdcloud.adapt_detail(obj, TimeParser("UTC"))[0]["event_time"] == utc_ms(
        "2021-02-25T06:44:06Z")
    assert obj == BY_NAME["jd_system_failure_reboot_executing"].obj  # input not mutated
