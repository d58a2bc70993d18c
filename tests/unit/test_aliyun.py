"""Alibaba ECS: the document's 9 CloudMonitor examples, EventBridge envelopes, fallbacks, quirks.

Expected epoch milliseconds were computed by hand (2019-01-01T00:00:00Z = 1546300800 s,
2018-01-01T00:00:00Z = 1514764800 s) and are checked against the standard library below.
"""

from __future__ import annotations

import calendar
import copy
import time
from datetime import datetime
from typing import Any

import orjson
import pytest

from consumer.errors import InvalidEvent, OutOfScope, UnknownVendor
from consumer.model import InstanceEvent
from consumer.normalization import Normalizer
from consumer.normalization.aliyun import split_arn
from tests.seeds import ALIYUN_SEEDS, BY_NAME
from tests.vendor_samples import ALIYUN_DEBUG, ALIYUN_DISK_STALLED_START

N = Normalizer()


def one(obj: object) -> InstanceEvent:
    """The one event of a parsed payload (the normalizer returns a list)."""
    [event] = N.normalize_obj(obj)
    return event

INSTANCE = "i-bp1ecr********5go2go"
ACCOUNT = "169070********30"
NOTE_MASKED = "2256A988-0B26-4E2B-820A-8A********E5"
NOTE_FULL = "2256A988-0B26-4E2B-820A-8A0580D0B8E5"

# Hand-computed instants, each with its UTC spelling for the standard-library check.
T_0409_EVENT = (1554783506922, "2019-04-09T04:18:26.922Z")  # 20190409T121826.922+0800
T_0409_PUBLISH = (1554783506000, "2019-04-09T04:18:26Z")
T_0412_NOT_BEFORE = (1555030861000, "2019-04-12T01:01:01Z")
T_0410_EVENT = (1554883261922, "2019-04-10T08:01:01.922Z")  # 20190410T160101.922+0800
T_0410_EXECUTE = (1554883261000, "2019-04-10T08:01:01Z")
T_LM_START_EVENT = (1528421137922, "2018-06-08T01:25:37.922Z")  # 20180608T092537.922+0800
T_LM_END_EVENT = (1528421145922, "2018-06-08T01:25:45.922Z")  # 20180608T092545.922+0800
T_LM_START = (1528421137000, "2018-06-08T01:25:37Z")
T_LM_END = (1528421145000, "2018-06-08T01:25:45Z")
T_INTERVAL_START = (1573470000000, "2019-11-11T11:00:00Z")
T_INTERVAL_END = (1573473600000, "2019-11-11T12:00:00Z")
HAND_TIMES = [T_0409_EVENT, T_0409_PUBLISH, T_0412_NOT_BEFORE, T_0410_EVENT, T_0410_EXECUTE,
              T_LM_START_EVENT, T_LM_END_EVENT, T_LM_START, T_LM_END, T_INTERVAL_START,
              T_INTERVAL_END]


def stdlib_ms(iso: str) -> int:
    base, _, frac = iso.rstrip("Z").partition(".")
    seconds = calendar.timegm(datetime.strptime(base, "%Y-%m-%dT%H:%M:%S").timetuple())
    return seconds * 1000 + int((frac or "0").ljust(3, "0"))


@pytest.mark.parametrize(("ms", "iso"), HAND_TIMES)
def test_hand_computed_times_match_the_standard_library(ms: int, iso: str) -> None:
    assert stdlib_ms(iso) == ms


def expected(**fields: Any) -> dict[str, Any]:
    """The common shape of the document's CloudMonitor examples, overridden per example."""
    base: dict[str, Any] = {
        "vendor": "aliyun", "instance_id": INSTANCE, "known": True, "phase": None,
        "vendor_status": None, "event_time": T_0409_EVENT[0], "region": "cn-hangzhou",
        "account_id": ACCOUNT, "notification_id": NOTE_MASKED, "vendor_event_id": None,
        "level": "INFO", "previous_state": None, "current_state": None, "publish_time": None,
        "not_before": None, "start_time": None, "end_time": None,
        "source_format": "aliyun.cloudmonitor",
    }
    base.update(fields)
    return base


LM_HOSTS = {"instanceName": "instance-event-subscription",
            "sourceDedicatedHostId": "dh-2ze3lm********t8nr82",
            "destinationDedicatedHostId": "dh-2ze3lm********t8nr83"}

EXPECTED: dict[str, dict[str, Any]] = {
    "ali_maintenance_reboot_scheduled": expected(
        vendor_event_code="SystemMaintenance.Reboot", operation="maintenance.reboot",
        phase="scheduled", vendor_status="Scheduled", level="CRITICAL",
        vendor_event_id="e-bp11trd********pqum2", publish_time=T_0409_PUBLISH[0],
        not_before=T_0412_NOT_BEFORE[0],
        attributes={"ver": "1.0", "name": "Instance:SystemMaintenance.Reboot:Scheduled"}),
    # The name still says :Scheduled; content.eventStatus (Avoided) wins. The document masks
    # the eventId differently here (e-bp11trdr...qum2) than in the Scheduled example.
    "ali_maintenance_reboot_avoided": expected(
        vendor_event_code="SystemMaintenance.Reboot", operation="maintenance.reboot",
        phase="avoided", vendor_status="Avoided", level="CRITICAL",
        event_time=T_0410_EVENT[0], vendor_event_id="e-bp11trdr********qum2",
        publish_time=T_0409_PUBLISH[0], not_before=T_0412_NOT_BEFORE[0],
        start_time=T_0410_EXECUTE[0], end_time=T_0410_EXECUTE[0],
        attributes={"ver": "1.0", "name": "Instance:SystemMaintenance.Reboot:Scheduled"}),
    "ali_state_change_running": expected(
        vendor_event_code="StateChange", operation="lifecycle.state_change",
        current_state="Running",
        attributes={"ver": "1.0", "name": "Instance:StateChange",
                    "resourceType": "ALIYUN::ECS::Instance"}),
    "ali_preemptible_interruption": expected(
        vendor_event_code="PreemptibleInstanceInterruption",
        operation="preemptible.interruption",
        attributes={"ver": "1.0", "name": "Instance:PreemptibleInstanceInterruption",
                    "action": "delete"}),
    "ali_live_migration_started": expected(
        vendor_event_code="LiveMigrationAcrossDDH", operation="migration.live_across_ddh",
        phase="executing", vendor_status="started", event_time=T_LM_START_EVENT[0],
        notification_id=NOTE_FULL, start_time=T_LM_START[0],
        attributes={"ver": "1.0", "name": "Instance:LiveMigrationAcrossDDH", **LM_HOSTS}),
    "ali_live_migration_accomplished": expected(
        vendor_event_code="LiveMigrationAcrossDDH", operation="migration.live_across_ddh",
        phase="executed", vendor_status="accomplished", event_time=T_LM_END_EVENT[0],
        notification_id=NOTE_FULL, start_time=T_LM_START[0], end_time=T_LM_END[0],
        attributes={"ver": "1.0", "name": "Instance:LiveMigrationAcrossDDH", **LM_HOSTS}),
    "ali_live_migration_failed": expected(
        vendor_event_code="LiveMigrationAcrossDDH", operation="migration.live_across_ddh",
        phase="failed", vendor_status="failed", event_time=T_LM_END_EVENT[0],
        notification_id=NOTE_FULL, start_time=T_LM_START[0], end_time=T_LM_END[0],
        attributes={"ver": "1.0", "name": "Instance:LiveMigrationAcrossDDH", **LM_HOSTS}),
    "ali_performance_mode_change": expected(
        vendor_event_code="PerformanceModeChange",
        operation="burstable.performance_mode_change", notification_id=NOTE_FULL,
        attributes={"ver": "1.0", "name": "Instance:PerformanceModeChange",
                    "creditSpecification": "Unlimited", "operator": "System"}),
    "ali_burstable_restricted": expected(
        vendor_event_code="BurstablePerformanceRestricted",
        operation="burstable.performance_restricted", notification_id=NOTE_FULL,
        start_time=T_INTERVAL_START[0], end_time=T_INTERVAL_END[0],
        attributes={"ver": "1.0", "name": "Instance:BurstablePerformanceRestricted"}),
}


def test_every_example_has_an_expectation() -> None:
    assert sorted(EXPECTED) == sorted(s.name for s in ALIYUN_SEEDS)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_document_example(name: str) -> None:
    assert N.normalize(BY_NAME[name].raw) == EXPECTED[name]


# --- the appendix: every notification name is known and maps to its phase ---

APPENDIX_NAMES = [
    "Instance:SystemMaintenance.Reboot:Scheduled", "Instance:SystemMaintenance.Reboot:Executing",
    "Instance:SystemMaintenance.Reboot:Executed", "Instance:SystemMaintenance.Reboot:Avoided",
    "Instance:SystemMaintenance.Reboot:Canceled", "Instance:SystemMaintenance.Reboot:Failed",
    "Instance:SystemFailure.Reboot:Executing", "Instance:SystemFailure.Reboot:Executed",
    "Instance:InstanceFailure.Reboot:Executing", "Instance:InstanceFailure.Reboot:Executed",
    "Instance:SystemMaintenance.Redeploy:Scheduled",
    "Instance:SystemMaintenance.Redeploy:Executing",
    "Instance:SystemMaintenance.Redeploy:Executed", "Instance:SystemMaintenance.Redeploy:Avoided",
    "Instance:SystemMaintenance.Redeploy:Canceled",
    "Instance:SystemFailure.Redeploy:Scheduled", "Instance:SystemFailure.Redeploy:Executing",
    "Instance:SystemFailure.Redeploy:Executed", "Instance:SystemFailure.Redeploy:Avoided",
    "Instance:SystemFailure.Redeploy:Canceled",
    "Instance:SystemMaintenance.RebootAndIsolateErrorDisk:Inquiring",
    "Instance:SystemMaintenance.RebootAndIsolateErrorDisk:Executing",
    "Instance:SystemMaintenance.RebootAndIsolateErrorDisk:Executed",
    "Instance:SystemMaintenance.RebootAndIsolateErrorDisk:Avoided",
    "Instance:SystemMaintenance.RebootAndIsolateErrorDisk:Canceled",
    "Instance:SystemMaintenance.RebootAndReInitErrorDisk:Inquiring",
    "Instance:SystemMaintenance.RebootAndReInitErrorDisk:Executing",
    "Instance:SystemMaintenance.RebootAndReInitErrorDisk:Executed",
    "Instance:SystemMaintenance.RebootAndReInitErrorDisk:Avoided",
    "Instance:SystemMaintenance.RebootAndReInitErrorDisk:Canceled",
    "Instance:SystemFailure.Delete:Executing", "Instance:SystemFailure.Delete:Executed",
    "Instance:SystemFailure.Delete:Avoided",
]
APPENDIX_OPERATIONS = {
    "SystemMaintenance.Reboot": "maintenance.reboot",
    "SystemFailure.Reboot": "failure.reboot",
    "InstanceFailure.Reboot": "instance_failure.reboot",
    "SystemMaintenance.Redeploy": "maintenance.redeploy",
    "SystemFailure.Redeploy": "failure.redeploy",
    "SystemMaintenance.RebootAndIsolateErrorDisk": "maintenance.reboot_isolate_error_disk",
    "SystemMaintenance.RebootAndReInitErrorDisk": "maintenance.reboot_reinit_error_disk",
    "SystemFailure.Delete": "failure.delete",
}


def system_event(name: str, **content: Any) -> dict[str, Any]:
    obj = copy.deepcopy(BY_NAME["ali_maintenance_reboot_scheduled"].obj)
    obj["name"] = name
    del obj["content"]["eventType"], obj["content"]["eventStatus"]
    obj["content"].update(content)
    return obj


@pytest.mark.parametrize("name", APPENDIX_NAMES)
def test_appendix_name_alone(name: str) -> None:
    """Without eventType/eventStatus in content, the name says what it is."""
    _, code, status = name.split(":")
    event = one(system_event(name))
    assert (event["vendor_event_code"], event["operation"], event["known"]) == (
        code, APPENDIX_OPERATIONS[code], True)
    assert (event["phase"], event["vendor_status"]) == (status.lower(), status)


@pytest.mark.parametrize("name", APPENDIX_NAMES)
def test_appendix_name_with_content(name: str) -> None:
    _, code, status = name.split(":")
    event = one(system_event(name, eventType=code, eventStatus=status,
                                         executeStartTime="2019-04-12T01:01:01Z",
                                         executeFinishTime="2019-04-12T01:03:01Z"))
    assert (event["operation"], event["phase"]) == (APPENDIX_OPERATIONS[code], status.lower())
    assert (event["start_time"], event["end_time"]) == (T_0412_NOT_BEFORE[0],
                                                        T_0412_NOT_BEFORE[0] + 120_000)


def test_content_event_type_wins_over_name() -> None:
    obj = system_event("Instance:SystemMaintenance.Reboot:Executing",
                       eventType="SystemFailure.Redeploy", eventStatus="Executed")
    event = one(obj)
    assert (event["vendor_event_code"], event["phase"]) == ("SystemFailure.Redeploy", "executed")


def test_undocumented_status_of_a_known_code_keeps_its_phase() -> None:
    event = one(system_event("Instance:SystemFailure.Reboot:Scheduled"))
    assert (event["known"], event["phase"], event["vendor_status"]) == (
        True, "scheduled", "Scheduled")


def test_unknown_status_is_null_phase_with_vendor_status() -> None:
    event = one(system_event("Instance:SystemMaintenance.Reboot:Paused"))
    assert (event["phase"], event["vendor_status"]) == (None, "Paused")


def test_unknown_event_type_is_mechanical() -> None:
    event = one(system_event("Instance:SystemMaintenance.Stop:Scheduled"))
    assert (event["vendor_event_code"], event["operation"], event["known"], event["phase"]) == (
        "SystemMaintenance.Stop", "system_maintenance.stop", False, "scheduled")


def test_account_region_instance_fall_back_to_the_arn() -> None:
    obj = BY_NAME["ali_performance_mode_change"].obj
    del obj["userId"], obj["regionId"], obj["content"]["instanceId"]
    event = one(obj)
    assert (event["account_id"], event["region"], event["instance_id"]) == (
        ACCOUNT, "cn-hangzhou", INSTANCE)


def test_state_change_instance_comes_from_content_resource_id() -> None:
    obj = BY_NAME["ali_state_change_running"].obj
    obj["content"]["resourceId"] = "i-other"
    obj["content"]["state"] = "Stopping"
    event = one(obj)
    assert (event["instance_id"], event["current_state"]) == ("i-other", "Stopping")


def test_no_instance_anywhere_is_invalid() -> None:
    obj = BY_NAME["ali_preemptible_interruption"].obj
    del obj["content"]["instanceId"]
    obj["resourceId"] = "acs:ecs:cn-hangzhou:1:disk/d-1"
    with pytest.raises(InvalidEvent, match="instanceId is required"):
        one(obj)


@pytest.mark.parametrize(
    ("path", "value", "message"),
    [
        (("content", "instanceId"), 42, "content.instanceId must be a string, got int"),
        (("content", "publishTime"), "yesterday", "content.publishTime: not a timestamp"),
        (("content", "notBefore"), 1555030861, "content.notBefore must be a timestamp string"),
        (("eventTime",), "20190409T25", "eventTime: not a timestamp"),
        (("eventTime",), None, "eventTime is required"),
        (("name",), 7, "name must be a string, got int"),
        (("content",), [], "content must be an object, got list"),
        (("userId",), 169070, "userId must be a string, got int"),
    ],
)
def test_wrong_types_are_invalid(path: tuple[str, ...], value: Any, message: str) -> None:
    obj = BY_NAME["ali_maintenance_reboot_scheduled"].obj
    target = obj
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    with pytest.raises(InvalidEvent, match=message):
        one(obj)


def test_other_products_are_not_ours() -> None:
    obj = BY_NAME["ali_state_change_running"].obj | {"product": "RDS"}
    with pytest.raises(UnknownVendor, match="RDS"):
        one(obj)


@pytest.mark.parametrize(
    ("arn", "parts"),
    [
        (f"acs:ecs:cn-hangzhou:{ACCOUNT}:instance/{INSTANCE}", ("cn-hangzhou", ACCOUNT, INSTANCE)),
        (f"acs.ecs:cn-hangzhou:{ACCOUNT}:instance/{INSTANCE}", ("cn-hangzhou", ACCOUNT, INSTANCE)),
        ("acs:ecs:cn-hangzhou:1:disk/d-1", ("cn-hangzhou", "1", None)),
        ("acs:ecs::1:instance/i-1", (None, "1", "i-1")),
        ("acs:ecs:cn-hangzhou:1:instance/", ("cn-hangzhou", "1", None)),
        ("i-bp1", (None, None, None)),
        ("", (None, None, None)),
        (None, (None, None, None)),
    ],
)
def test_split_arn(arn: str | None, parts: tuple[str | None, ...]) -> None:
    assert split_arn(arn) == parts


# --- EventBridge (CloudEvents 1.0, source acs.ecs): data holds what CloudMonitor calls content

def eventbridge(type_: str, data: dict[str, Any], **top: Any) -> dict[str, Any]:
    obj: dict[str, Any] = {
        "datacontenttype": "application/json;charset=utf-8",
        "aliyunaccountid": ACCOUNT,
        "aliyunpublishtime": "2019-04-10T16:01:02.011PRC",
        "data": data,
        "subject": f"acs:ecs:cn-hangzhou:{ACCOUNT}:instance/{INSTANCE}",
        "aliyunoriginalaccountid": ACCOUNT,
        "source": "acs.ecs",
        "type": type_,
        "aliyunpublishaddr": "172.25.XX.XX",
        "specversion": "1.0",
        "aliyuneventbusname": "default",
        "id": "45ef4dewdwe1-7c35-447a-bd93-fab****",
        "time": "2019-04-10T16:01:01.922+08:00",
        "aliyunregionid": "cn-hangzhou",
    }
    obj.update(top)
    return obj


EB_ATTRIBUTES = {
    "datacontenttype": "application/json;charset=utf-8",
    "aliyunpublishtime": "2019-04-10T16:01:02.011PRC",
    "subject": f"acs:ecs:cn-hangzhou:{ACCOUNT}:instance/{INSTANCE}",
    "aliyunoriginalaccountid": ACCOUNT,
    "aliyunpublishaddr": "172.25.XX.XX",
    "aliyuneventbusname": "default",
}

REBOOT_EXECUTED_DATA = {
    "eventId": "e-bp11trd********pqum2",
    "publishTime": "2019-04-09T04:18:26Z",
    "notBefore": "2019-04-12T01:01:01Z",
    "instanceId": INSTANCE,
    "eventType": "SystemMaintenance.Reboot",
    "eventStatus": "Executed",
    "executeStartTime": "2019-04-10T08:01:01Z",
    "executeFinishTime": "2019-04-10T08:03:01Z",
}


def test_eventbridge_system_event_with_status_in_type() -> None:
    obj = eventbridge("ecs:Instance:SystemMaintenance.Reboot:Executed", REBOOT_EXECUTED_DATA)
    assert one(obj) == {
        "vendor": "aliyun",
        "instance_id": INSTANCE,
        "vendor_event_code": "SystemMaintenance.Reboot",
        "operation": "maintenance.reboot",
        "known": True,
        "phase": "executed",
        "vendor_status": "Executed",
        "event_time": T_0410_EVENT[0],  # 2019-04-10T16:01:01.922+08:00
        "region": "cn-hangzhou",
        "account_id": ACCOUNT,
        "notification_id": "45ef4dewdwe1-7c35-447a-bd93-fab****",
        "vendor_event_id": "e-bp11trd********pqum2",
        "level": None,
        "previous_state": None,
        "current_state": None,
        "publish_time": T_0409_PUBLISH[0],
        "not_before": T_0412_NOT_BEFORE[0],
        "start_time": T_0410_EXECUTE[0],
        "end_time": T_0410_EXECUTE[0] + 120_000,  # 08:03:01Z
        "source_format": "aliyun.eventbridge",
        "attributes": EB_ATTRIBUTES | {"type": "ecs:Instance:SystemMaintenance.Reboot:Executed"},
    }


def test_eventbridge_system_event_type_without_status() -> None:
    """EventBridge's own event type list spells system events without the status suffix."""
    data = REBOOT_EXECUTED_DATA | {"eventType": "SystemFailure.Reboot", "eventStatus": "Executing"}
    event = one(eventbridge("ecs:Instance:SystemFailure.Reboot", data))
    assert (event["operation"], event["phase"], event["vendor_status"]) == (
        "failure.reboot", "executing", "Executing")


def test_eventbridge_status_in_data_wins_over_type_suffix() -> None:
    data = REBOOT_EXECUTED_DATA | {"eventStatus": "Avoided"}
    event = one(eventbridge("ecs:Instance:SystemMaintenance.Reboot:Scheduled", data))
    assert event["phase"] == "avoided"


def test_eventbridge_code_from_type_when_data_has_none() -> None:
    data = {k: v for k, v in REBOOT_EXECUTED_DATA.items() if k not in ("eventType", "eventStatus")}
    event = one(eventbridge("ecs:Instance:SystemMaintenance.Redeploy:Canceled", data))
    assert (event["operation"], event["phase"]) == ("maintenance.redeploy", "canceled")


def test_eventbridge_state_change() -> None:
    data = {"resourceId": INSTANCE, "resourceType": "ALIYUN::ECS::Instance", "state": "Running"}
    obj = eventbridge("ecs:Instance:StateChange", data, time="2019-04-09T04:18:26.922Z")
    assert one(obj) == {
        "vendor": "aliyun", "instance_id": INSTANCE, "vendor_event_code": "StateChange",
        "operation": "lifecycle.state_change", "known": True, "phase": None,
        "vendor_status": None, "event_time": T_0409_EVENT[0], "region": "cn-hangzhou",
        "account_id": ACCOUNT, "notification_id": "45ef4dewdwe1-7c35-447a-bd93-fab****",
        "vendor_event_id": None, "level": None, "previous_state": None,
        "current_state": "Running", "publish_time": None, "not_before": None,
        "start_time": None, "end_time": None, "source_format": "aliyun.eventbridge",
        "attributes": EB_ATTRIBUTES | {"type": "ecs:Instance:StateChange",
                                       "resourceType": "ALIYUN::ECS::Instance"},
    }


def test_eventbridge_live_migration_and_burstable() -> None:
    lm = BY_NAME["ali_live_migration_accomplished"].obj["content"]
    event = one(eventbridge("ecs:Instance:LiveMigrationAcrossDDH", lm))
    assert (event["phase"], event["start_time"], event["end_time"]) == (
        "executed", T_LM_START[0], T_LM_END[0])
    assert event["attributes"]["destinationDedicatedHostId"] == "dh-2ze3lm********t8nr83"
    burst = BY_NAME["ali_burstable_restricted"].obj["content"]
    event = one(eventbridge("ecs:Instance:BurstablePerformanceRestricted", burst))
    assert (event["operation"], event["start_time"], event["end_time"]) == (
        "burstable.performance_restricted", T_INTERVAL_START[0], T_INTERVAL_END[0])


def test_eventbridge_subject_fallbacks() -> None:
    data = {"resourceType": "ALIYUN::ECS::Instance", "state": "Stopped"}
    obj = eventbridge("ecs:Instance:StateChange", data,
                      subject=f"acs.ecs:cn-beijing:{ACCOUNT}:instance/i-2ze")
    del obj["aliyunaccountid"], obj["aliyunregionid"]
    event = one(obj)
    assert (event["instance_id"], event["region"], event["account_id"]) == (
        "i-2ze", "cn-beijing", ACCOUNT)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"data": None}, "data is required"),
        ({"data": "x"}, "data must be an object"),
        ({"time": None}, "time is required"),
        ({"time": "2019-04-10"}, "time: not a timestamp"),
        ({"type": "ecs:Instance"}, "eventType is required"),
        ({"aliyunaccountid": 1}, "aliyunaccountid must be a string"),
    ],
)
def test_eventbridge_invalid(change: dict[str, Any], message: str) -> None:
    data = {"resourceId": INSTANCE, "state": "Running"}
    obj = eventbridge("ecs:Instance:StateChange", data) | change
    with pytest.raises(InvalidEvent, match=message):
        one(obj)


def test_eventbridge_from_another_service_is_not_ours() -> None:
    obj = eventbridge("oss:ObjectCreated:PutObject", {}, source="acs.oss")
    with pytest.raises(UnknownVendor, match=r"acs\.oss"):
        one(obj)


# --- block storage events and the debug-subscription shape (issue #9) ---

T_DISK_EVENT = 1554854461922  # 20190410T080101.922+0800 = 2019-04-10T00:01:01.922Z
T_DISK_START = 1554858061000  # 2019-04-10T01:01:01Z
T_DISK_FINISH = 1554858181000  # 2019-04-10T01:03:01Z


def test_disk_times_match_the_standard_library() -> None:
    assert stdlib_ms("2019-04-10T00:01:01.922Z") == T_DISK_EVENT
    assert stdlib_ms("2019-04-10T01:01:01Z") == T_DISK_START
    assert stdlib_ms("2019-04-10T01:03:01Z") == T_DISK_FINISH


DISK_EXPECTED: dict[str, Any] = {
    "vendor": "aliyun", "instance_id": INSTANCE, "vendor_event_code": "Disk:Stalled",
    "operation": "disk.stalled", "known": True, "phase": "executing",
    "vendor_status": "Executing", "event_time": T_DISK_EVENT, "region": "cn-hangzhou",
    "account_id": ACCOUNT, "notification_id": NOTE_MASKED,
    "vendor_event_id": "e-t4navn7********6x5no", "level": "CRITICAL", "previous_state": None,
    "current_state": None, "publish_time": None, "not_before": None, "start_time": T_DISK_START,
    "end_time": None, "source_format": "aliyun.cloudmonitor",
    "attributes": {"name": "Disk:Stalled:Executing", "diskId": "d-t4ndyqve********n4ds",
                   "device": "/dev/xvdb", "ecsInstanceName": "ecs-instance-name"},
}


def test_disk_stalled_names_the_instance_it_is_attached_to() -> None:
    assert N.normalize_all(ALIYUN_DISK_STALLED_START.raw) == [DISK_EXPECTED]


def test_disk_stalled_end_repeats_executing_and_adds_the_finish_time() -> None:
    obj = ALIYUN_DISK_STALLED_START.obj
    obj["eventTime"] = "20190410T080301.922+0800"
    obj["content"]["executeFinishTime"] = "2019-04-10T01:03:01Z"
    event = one(obj)
    assert (event["phase"], event["vendor_status"], event["start_time"], event["end_time"]) == (
        "executed", "Executing", T_DISK_START, T_DISK_FINISH)


def test_disk_event_through_eventbridge() -> None:
    data = ALIYUN_DISK_STALLED_START.obj["content"]
    event = one(eventbridge("ecs:Disk:Stalled", data))
    assert (event["instance_id"], event["vendor_event_code"], event["operation"]) == (
        INSTANCE, "Disk:Stalled", "disk.stalled")


def test_disk_event_naming_no_instance_is_out_of_scope() -> None:
    obj = ALIYUN_DISK_STALLED_START.obj
    del obj["content"]["ecsInstanceId"]
    with pytest.raises(OutOfScope, match="names no instance") as info:
        N.normalize_obj(obj)
    assert info.value.vendor == "aliyun"


def test_debug_subscription_shape_takes_the_record_timestamp() -> None:
    events = N.normalize_all(ALIYUN_DEBUG.raw, received_ms=1767225600000)
    assert events == [{
        "vendor": "aliyun", "instance_id": INSTANCE, "vendor_event_code": "SystemFailure.Reboot",
        "operation": "failure.reboot", "known": True, "phase": "executing",
        "vendor_status": "Executing", "event_time": 1767225600000, "region": "cn-hangzhou",
        "account_id": "173651113438****", "notification_id": None, "vendor_event_id": None,
        "level": "CRITICAL", "previous_state": None, "current_state": None,
        "publish_time": None, "not_before": None, "start_time": None, "end_time": None,
        "source_format": "aliyun.cloudmonitor_debug",
        "attributes": {"vmevents.event_time_source": "record_timestamp",
                       "instanceName": "instanceName",
                       "name": "Instance:SystemFailure.Reboot:Executing", "status": "Executing"},
    }]


def test_debug_subscription_shape_offline_takes_the_read_time() -> None:
    normalizer = Normalizer(clock=lambda: 1767225600000)
    before = time.time_ns() // 1_000_000
    [event] = normalizer.normalize_all(ALIYUN_DEBUG.raw)
    after = time.time_ns() // 1_000_000
    assert before <= event["event_time"] <= after
    assert event["attributes"]["vmevents.event_time_source"] == "read_time"


def test_debug_shape_status_falls_back_to_the_top_level_status() -> None:
    obj = ALIYUN_DEBUG.obj
    obj["name"] = "Instance:SystemFailure.Reboot"
    del obj["content"]["eventStatus"]
    assert one(obj)["vendor_status"] == "Executing"


def test_documented_shape_without_event_time_is_still_invalid() -> None:
    obj = BY_NAME["ali_state_change_running"].obj
    del obj["eventTime"]
    with pytest.raises(InvalidEvent, match="eventTime is required"):
        N.normalize_obj(obj)


SNAPSHOT_COMPLETED: dict[str, Any] = {
    # ECS's "Snapshot event notifications" page, CloudMonitor format, as published.
    "ver": "1.0",
    "id": "2256A988-0B26-4E2B-820A-8A********E5",
    "product": "ECS",
    "resourceId": f"acs:ecs:cn-hangzhou:{ACCOUNT}:snapshot/s-bp1fis********b859b3",
    "level": "INFO",
    "name": "Snapshot:CreateSnapshotCompleted",
    "userId": ACCOUNT,
    "eventTime": "20190409T121826.922+0800",
    "regionId": "cn-hangzhou",
    "content": {
        "result": "accomplished",
        "snapshotId": "s-bp1fis********b859b3",
        "snapshotName": "test-snapshot",
        "snapshotType": "user",
        "diskId": "d-bp1bwa********9ol4mi",
        "startTime": "2019-04-22T08:36:09Z",
        "endTime": "2019-04-22T08:37:11Z",
    },
}


@pytest.mark.parametrize("obj", [
    SNAPSHOT_COMPLETED,
    eventbridge("ecs:Snapshot:CreateSnapshotCompleted", SNAPSHOT_COMPLETED["content"],
                subject=SNAPSHOT_COMPLETED["resourceId"]),
], ids=["cloudmonitor", "eventbridge"])
def test_snapshot_completed_is_out_of_scope_not_invalid(obj: dict[str, Any]) -> None:
    with pytest.raises(OutOfScope, match="about a snapshot") as info:
        N.normalize_all(orjson.dumps(obj))
    assert (info.value.reason, info.value.vendor) == ("out_of_scope", "aliyun")


def test_an_instance_event_naming_no_instance_is_still_invalid() -> None:
    obj = copy.deepcopy(SNAPSHOT_COMPLETED)
    obj["name"] = "Instance:SystemFailure.Reboot:Executing"
    obj["resourceId"] = f"acs:ecs:cn-hangzhou:{ACCOUNT}:instance/"
    with pytest.raises(InvalidEvent, match="instanceId is required"):
        N.normalize_obj(obj)
