"""Tencent Cloud CVM (EventBridge) and Huawei Cloud ECS (Cloud Eye SYS.ECS) adapters; expected
values by hand from the samples in tests/vendor_samples.py."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from consumer.errors import InvalidEvent, InvalidTime, OutOfScope, UnknownVendor
from consumer.model import InstanceEvent
from consumer.normalization import Normalizer
from consumer.normalization.huawei import split_name
from consumer.normalization.tencent import event_name, split_family
from tests.vendor_samples import (
    HUAWEI_AUTO_RECOVERY_START,
    HUAWEI_REBOOT_SERVER,
    HUAWEI_REDEPLOY_SCHEDULED,
    HUAWEI_SAMPLES,
    TENCENT_GUEST_REBOOT,
    TENCENT_PING_SNAKE,
    TENCENT_POWER_OFF,
    TENCENT_REPAIR_INQUIRING,
    TENCENT_SAMPLES,
)

N = Normalizer()


def one(obj: Any) -> InstanceEvent:
    [event] = N.normalize_obj(obj)
    return event


@pytest.mark.parametrize("sample", TENCENT_SAMPLES + HUAWEI_SAMPLES, ids=lambda s: s.name)
def test_every_sample_normalizes(sample: Any) -> None:
    [event] = N.normalize_all(sample.raw)
    assert event["vendor"] == sample.vendor
    assert event["known"]


def test_tencent_guest_reboot() -> None:
    event = one(TENCENT_GUEST_REBOOT.obj)
    assert (event["instance_id"], event["vendor_event_code"], event["operation"]) == (
        "ins-qwertyui", "GuestReboot", "guest.reboot")
    assert (event["phase"], event["vendor_status"]) == (None, "1")
    assert event["event_time"] == 1615430559146  # ms epoch, GMT+0
    assert (event["region"], event["account_id"]) == ("ap-guangzhou", "1250000000")
    assert event["notification_id"] == "13a3f42d-7258-4ada-da6d-023a333b4662"
    assert event["source_format"] == "tencent.eventbridge"
    assert orjson.loads(event["attributes"]["additionalMsg"]) == {"IP": "10.0.0.3"}


def test_tencent_snake_case_name_string_time_and_misspelt_subject() -> None:
    event = one(TENCENT_PING_SNAKE.obj)
    assert (event["vendor_event_code"], event["operation"], event["phase"]) == (
        "PingUnreachable", "failure.unreachable", "executed")  # status 0: resolved
    assert event["event_time"] == 1615430600000
    start = TENCENT_PING_SNAKE.obj
    start["status"] = "1"
    assert one(start)["phase"] == "executing"


def test_tencent_repair_family_suffix_is_the_phase_and_placeholder_subject_loses() -> None:
    event = one(TENCENT_REPAIR_INQUIRING.obj)
    assert event["instance_id"] == "ins-asdfghjk"  # data.instanceId over "${instanceId}"
    assert (event["vendor_event_code"], event["operation"]) == ("InstanceRunningRisks",
                                                                "maintenance.repair")
    assert (event["phase"], event["vendor_status"]) == ("inquiring", "Inquiring")


def test_tencent_power_off_and_unknown_names() -> None:
    assert one(TENCENT_POWER_OFF.obj)["operation"] == "lifecycle.power_off"
    obj = TENCENT_GUEST_REBOOT.obj
    obj["type"] = "cvm:ErrorEvent:SomethingNew"
    event = one(obj)
    assert (event["known"], event["operation"]) == (False, "something_new")


@pytest.mark.parametrize(("kind", "name"), [
    ("cvm:ErrorEvent:ping_unreachable", "PingUnreachable"),
    ("cvm:ErrorEvent:PingUnreachable", "PingUnreachable"),
    ("cvm:ErrorEvent:guest_reboot", "GuestReboot"),
    ("cvm:OperationEvent:InstancePowerOn", "InstancePowerOn"),
])
def test_tencent_both_spellings(kind: str, name: str) -> None:
    assert event_name(kind) == name


@pytest.mark.parametrize(("name", "expected"), [
    ("InstanceRunningAbnormallyExecuting", ("InstanceRunningAbnormally", "Executing")),
    ("DiskErrorExecuted", ("InstanceDiskError", "Executed")),
    ("NetworkErrorAvoided", ("InstanceNetworkError", "Avoided")),
    ("InstanceRestarting", ("InstanceRestarting", None)),
])
def test_tencent_families(name: str, expected: tuple[str, str | None]) -> None:
    assert split_family(name) == expected


def test_tencent_other_products_and_bad_times() -> None:
    obj = TENCENT_GUEST_REBOOT.obj
    obj["type"] = "cbs:ErrorEvent:DiskReadonly"
    with pytest.raises(OutOfScope):
        one(obj)
    obj = TENCENT_GUEST_REBOOT.obj
    obj["time"] = 10 ** 20
    with pytest.raises(InvalidTime):
        one(obj)
    obj = TENCENT_GUEST_REBOOT.obj
    del obj["subject"], obj["data"]
    with pytest.raises(InvalidEvent, match="instanceId is required"):
        one(obj)


def test_huawei_reboot_server() -> None:
    event = one(HUAWEI_REBOOT_SERVER.obj)
    assert event["instance_id"] == "ef8dad27-7c8b-4b2a-9b1a-0e6c5d4f3a21"  # resource_id
    assert (event["vendor_event_code"], event["operation"], event["phase"]) == (
        "rebootServer", "user.reboot", None)
    assert event["event_time"] == 1606302400000
    assert event["notification_id"] == "ev1606302402256R6doP5YeZ"
    assert event["vendor_event_id"] is None  # per notification: it cannot pair
    assert event["level"] == "Minor"
    assert event["attributes"]["content.op_svc_userid"] == "e4f0f4b3b5a24d7e8c2c4d1f0b9a8e7d"


def test_huawei_auto_recovery_and_planned_events() -> None:
    start = one(HUAWEI_AUTO_RECOVERY_START.obj)
    assert (start["vendor_event_code"], start["operation"], start["phase"]) == (
        "autoRecovery", "failure.reboot", "executing")
    planned = one(HUAWEI_REDEPLOY_SCHEDULED.obj)
    assert (planned["vendor_event_code"], planned["operation"], planned["phase"]) == (
        "instance_redeploy", "maintenance.redeploy", "scheduled")
    assert planned["not_before"] == 1606464000000  # 2020-11-27T08:00:00Z from content


@pytest.mark.parametrize(("name", "expected"), [
    ("endAutoRecovery", ("autoRecovery", "end", "executed")),
    ("faultAutoRecovery", ("autoRecovery", "fault", "failed")),
    ("liveMigrationStarted", ("liveMigration", "Started", "executing")),
    ("liveMigrationCompleted", ("liveMigration", "Completed", "executed")),
    ("liveMigrationFailed", ("liveMigration", "Failed", "failed")),
    ("instance_migrate_completed", ("instance_migrate", "completed", "executed")),
    ("localdisk_recovery_canceled", ("localdisk_recovery", "canceled", "canceled")),
    ("instance_stop_scheduled", ("instance_stop", "scheduled", "scheduled")),
    ("GPULinkFault", ("GPULinkFault", None, None)),
])
def test_huawei_names(name: str, expected: tuple[str, str | None, str | None]) -> None:
    assert split_name(name) == expected


def test_huawei_through_smn() -> None:
    smn = {"type": "Notification", "message": HUAWEI_REBOOT_SERVER.text,
           "message_id": "9c5c3e5ad7f54c6e", "timestamp": "2020-11-25T11:06:41Z",
           "topic_urn": "urn:smn:cn-north-4:0a1b:ces-events"}
    event = one(smn)
    assert event["source_format"] == "huawei.smn"
    assert event["operation"] == "user.reboot"
    assert event["attributes"]["smn.topic_urn"] == "urn:smn:cn-north-4:0a1b:ces-events"
    with pytest.raises(UnknownVendor):
        one({**smn, "message": "hello"})
