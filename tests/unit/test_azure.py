"""Azure adapters: the agent's Scheduled Events envelope, Event Grid ScheduledEventEmitted and
HealthResources events, Activity Log ResourceHealth records. Expected values by hand from the
samples in tests/vendor_samples.py."""

from __future__ import annotations

import calendar
import copy
from datetime import datetime
from typing import Any

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from consumer.errors import InvalidEvent, OutOfScope
from consumer.model import InstanceEvent
from consumer.normalization import Normalizer
from consumer.normalization.azure import (
    DOCUMENT_ATTRIBUTE,
    DOCUMENT_CODE,
    parse_arm_id,
    vm_key,
)
from consumer.normalization.fields import MAX_ID_LENGTH
from tests.vendor_samples import (
    AZURE_ACTIVITY_LOG,
    AZURE_AVAILABILITY_CHANGED,
    AZURE_RESOURCE_ANNOTATED,
    AZURE_SAMPLES,
    AZURE_SE_AGENT,
    AZURE_SE_EVENT_GRID,
    AZURE_SE_EVENT_GRID_COMPLETED,
    AZURE_SE_IMDS_DOCUMENT,
)

N = Normalizer()
SUB = "8d10da13-8125-4ba9-a717-bf7490507b3d"
WESTNO_0 = f"{SUB}/fleet-rg/westno_0"
DB_01 = f"{SUB}/fleet-rg/db-01"
EVENT_ID = "C7061BAC-AFDC-4513-B24B-AA5F13A16123"


def ms(year: int, month: int, day: int, hour: int, minute: int, second: int,
       milli: int = 0) -> int:
    return calendar.timegm(datetime(year, month, day, hour, minute, second).timetuple()) * 1000 \
        + milli


def events(obj: Any) -> list[InstanceEvent]:
    return N.normalize_obj(obj)


@pytest.mark.parametrize("sample", AZURE_SAMPLES, ids=lambda s: s.name)
def test_every_sample_normalizes_to_azure_events(sample: Any) -> None:
    out = N.normalize_all(sample.raw)
    assert out
    assert all(e["vendor"] == "azure" and e["known"] for e in out)


def test_agent_freeze_scheduled() -> None:
    [event] = events(AZURE_SE_AGENT.obj)
    assert event["instance_id"] == WESTNO_0
    assert event["vendor_event_code"] == "ScheduledEvents.Freeze"
    assert event["operation"] == "maintenance.live_migration"  # the description says so
    assert (event["phase"], event["vendor_status"]) == ("scheduled", "Scheduled")
    assert event["event_time"] == ms(2026, 4, 11, 22, 10, 0, 123)
    assert event["not_before"] == ms(2026, 4, 11, 22, 26, 58)  # "Mon": wrong weekday, ignored
    assert event["vendor_event_id"] == EVENT_ID
    assert (event["region"], event["account_id"]) == ("norwayeast", SUB)
    assert event["source_format"] == "azure.imds_agent"
    assert event["attributes"]["Resources"] == "WestNO_0,WestNO_1"
    assert event["attributes"]["vm.vmId"] == "02aab8a4-74ef-476e-8182-f6d2ba4166a6"
    summary = orjson.loads(event["attributes"][DOCUMENT_ATTRIBUTE])
    assert summary == {"incarnation": 2, "observed": event["event_time"], "events": {
        EVENT_ID: ["Scheduled", "ScheduledEvents.Freeze", "maintenance.live_migration",
                   ms(2026, 4, 11, 22, 26, 58)]}}


def test_event_grid_and_agent_name_the_same_instance_code_and_event() -> None:
    [agent] = events(AZURE_SE_AGENT.obj)
    grid = events(AZURE_SE_EVENT_GRID.obj)
    assert [e["instance_id"] for e in grid] == [WESTNO_0, f"{SUB}/fleet-rg/westno_1"]
    for event in grid:
        assert (event["vendor_event_code"], event["vendor_event_id"], event["operation"]) == (
            agent["vendor_event_code"], agent["vendor_event_id"], agent["operation"])
        assert (event["phase"], event["vendor_status"]) == ("executing", "Started")
        assert event["event_time"] == ms(2026, 4, 11, 22, 27, 1, 123)  # 7 digits, truncated
        assert event["source_format"] == "azure.event_grid"


def test_event_grid_completed_is_executed() -> None:
    [event] = events(AZURE_SE_EVENT_GRID_COMPLETED.obj)
    assert event["instance_id"] == DB_01
    assert (event["operation"], event["phase"], event["vendor_status"]) == (
        "maintenance.reboot", "executed", "Completed")
    assert event["not_before"] is None  # "" once Started


def test_event_grid_canceled_is_canceled() -> None:
    obj = AZURE_SE_EVENT_GRID_COMPLETED.obj
    obj["data"]["resourceInfo"]["properties"]["EventStatus"] = "Canceled"
    [event] = events(obj)
    assert event["phase"] == "canceled"


def test_user_reboot_has_its_own_operation() -> None:
    obj = AZURE_SE_AGENT.obj
    obj["document"]["Events"][0].update(EventType="Reboot", EventSource="User")
    [event] = events(obj)
    assert (event["vendor_event_code"], event["operation"]) == ("ScheduledEvents.User.Reboot",
                                                                "user.reboot")


def test_unknown_event_type_is_normalized_mechanically() -> None:
    obj = AZURE_SE_AGENT.obj
    obj["document"]["Events"][0]["EventType"] = "HibernateSoon"
    [event] = events(obj)
    assert (event["known"], event["operation"]) == (False, "scheduled_events.hibernate_soon")


def test_events_for_other_vms_are_left_to_their_agents() -> None:
    obj = AZURE_SE_AGENT.obj
    obj["vm"]["name"] = "WestNO_7"
    [event] = events(obj)
    assert event["vendor_event_code"] == DOCUMENT_CODE
    assert orjson.loads(event["attributes"][DOCUMENT_ATTRIBUTE])["events"] == {}


def test_an_empty_document_is_one_document_event() -> None:
    obj = AZURE_SE_AGENT.obj
    obj["document"] = {"DocumentIncarnation": 3, "Events": []}
    [event] = events(obj)
    assert (event["vendor_event_code"], event["operation"], event["phase"]) == (
        DOCUMENT_CODE, "scheduled_events.document", None)
    assert orjson.loads(event["attributes"][DOCUMENT_ATTRIBUTE])["incarnation"] == 3


def test_a_bare_document_says_what_is_missing() -> None:
    with pytest.raises(InvalidEvent, match="without the agent's envelope"):
        N.normalize(AZURE_SE_IMDS_DOCUMENT.encode())


@pytest.mark.parametrize(("change", "message"), [
    ({"version": 2}, "version 2 is not supported"),
    ({"observedAt": None}, "observedAt is required"),
    ({"document": {"DocumentIncarnation": "2", "Events": []}}, "DocumentIncarnation"),
    ({"vm": {"name": "x"}}, "subscriptionId is required"),
])
def test_envelope_errors_name_the_field(change: dict[str, Any], message: str) -> None:
    obj = {**AZURE_SE_AGENT.obj, **change}
    with pytest.raises(InvalidEvent, match=message):
        events(obj)


def test_activity_log_batch_keeps_vm_health_records_and_skips_service_health() -> None:
    activated, resolved = events(AZURE_ACTIVITY_LOG.obj)
    assert activated["instance_id"] == resolved["instance_id"] == DB_01  # upper-case id
    assert (activated["vendor_event_code"], activated["operation"]) == (
        "ResourceHealth.Downtime", "health.unavailable")
    assert (activated["phase"], activated["vendor_status"]) == ("executing", "Activated")
    assert (activated["previous_state"], activated["current_state"]) == ("Available",
                                                                         "Unavailable")
    assert activated["attributes"]["details"] == "VirtualMachineHostRebootedForRepair"
    assert (resolved["phase"], resolved["current_state"]) == ("executed", "Available")  # new names
    assert resolved["event_time"] - activated["event_time"] == ms(2026, 4, 12, 3, 41, 15) - ms(
        2026, 4, 12, 3, 30, 5, 181)


def test_a_batch_of_service_health_only_is_out_of_scope() -> None:
    obj = AZURE_ACTIVITY_LOG.obj
    obj["records"] = obj["records"][2:]
    with pytest.raises(OutOfScope):
        events(obj)


def test_availability_status_changed() -> None:
    [event] = events(AZURE_AVAILABILITY_CHANGED.obj)
    assert event["instance_id"] == DB_01
    assert (event["operation"], event["phase"]) == ("health.unavailable", "executing")
    assert (event["previous_state"], event["current_state"]) == ("Available", "Unavailable")
    assert event["event_time"] == ms(2026, 4, 12, 3, 30, 2)  # occurredTime, not delivery time
    assert event["publish_time"] == ms(2026, 4, 12, 3, 30, 9)
    back = AZURE_AVAILABILITY_CHANGED.obj
    back["data"]["resourceInfo"]["properties"].update(previousAvailabilityState="Unavailable",
                                                      availabilityState="Available")
    assert events(back)[0]["phase"] == "executed"


def test_older_shape_without_target_names_the_vm_by_its_status_id() -> None:
    obj = AZURE_AVAILABILITY_CHANGED.obj
    del obj["data"]["resourceInfo"]["properties"]["targetResourceId"]
    assert events(obj)[0]["instance_id"] == DB_01


def test_resource_annotated_host_rebooted_for_repair() -> None:
    [event] = events(AZURE_RESOURCE_ANNOTATED.obj)
    assert (event["vendor_event_code"], event["operation"], event["phase"]) == (
        "VirtualMachineHostRebootedForRepair", "failure.reboot", None)
    assert event["attributes"]["context"] == "Platform Initiated"


@pytest.mark.parametrize(("name", "code", "phase"), [
    ("VirtualMachinePlannedFreezeStarted", "VirtualMachinePlannedFreeze", "executing"),
    ("VirtualMachinePlannedFreezeSucceeded", "VirtualMachinePlannedFreeze", "executed"),
    ("PlannedFreezeFailed", "VirtualMachinePlannedFreeze", "failed"),
    ("LiveMigrationSucceeded", "VirtualMachineLiveMigration", "executed"),
    ("VirtualMachineLiveMigrationFailure", "VirtualMachineLiveMigration", "failed"),
])
def test_annotation_families_pair_under_one_code(name: str, code: str, phase: str) -> None:
    obj = AZURE_RESOURCE_ANNOTATED.obj
    obj["data"]["resourceInfo"]["properties"]["annotationName"] = name
    [event] = events(obj)
    assert (event["vendor_event_code"], event["phase"]) == (code, phase)
    assert event["attributes"]["annotationName"] == name


def test_unprefixed_annotation_names_find_their_row_and_unknown_ones_are_mechanical() -> None:
    obj = AZURE_RESOURCE_ANNOTATED.obj
    obj["data"]["resourceInfo"]["properties"]["annotationName"] = "Preempted"
    assert events(obj)[0]["operation"] == "preemptible.interruption"
    obj["data"]["resourceInfo"]["properties"]["annotationName"] = "SomethingNew"
    [event] = events(obj)
    assert (event["known"], event["operation"]) == (False, "something_new")


def test_other_event_grid_types_and_non_vm_resources_are_out_of_scope() -> None:
    obj = copy.deepcopy(AZURE_AVAILABILITY_CHANGED.obj)
    obj["type"] = "Microsoft.ResourceNotifications.Resources.CreatedOrUpdated"
    with pytest.raises(OutOfScope):
        events(obj)
    obj = AZURE_AVAILABILITY_CHANGED.obj
    obj["data"]["resourceInfo"]["properties"]["targetResourceId"] = (
        f"/subscriptions/{SUB}/resourceGroups/rg/providers/Microsoft.Storage/storageAccounts/s")
    with pytest.raises(OutOfScope):
        events(obj)


def test_arm_ids_of_vms_and_scale_set_vms() -> None:
    assert parse_arm_id(f"/SUBSCRIPTIONS/{SUB.upper()}/RESOURCEGROUPS/RG/PROVIDERS/"
                        "MICROSOFT.COMPUTE/VIRTUALMACHINES/VM1") == (SUB.upper(), "RG", "VM1")
    assert parse_arm_id(f"/subscriptions/{SUB}/resourceGroups/rg/providers/Microsoft.Compute/"
                        "virtualMachineScaleSets/web/virtualMachines/3")[2] == "web_3"
    assert parse_arm_id(f"/subscriptions/{SUB}/resourceGroups/rg")[2] is None
    with pytest.raises(InvalidEvent):
        parse_arm_id("not-an-id")


@given(st.text(min_size=1, max_size=90), st.text(min_size=1, max_size=64))
def test_vm_keys_fit_an_identifier_and_stay_distinct(group: str, name: str) -> None:
    key = vm_key(SUB, group, name)
    assert len(key) <= MAX_ID_LENGTH
    assert key == vm_key(SUB.upper(), group.upper(), name.upper()) or \
        group.upper().lower() != group.lower() or name.upper().lower() != name.lower()
    if len(f"{SUB}/{group}/{name}") <= MAX_ID_LENGTH:
        assert key == f"{SUB}/{group}/{name}".lower()
