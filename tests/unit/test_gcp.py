"""GCP: the notes' hostError entry, the Pub/Sub push envelope, first/last phases, every mapped
method, and what is out of scope. Expected values written by hand from the payloads."""

from __future__ import annotations

import base64
import calendar
import copy
from datetime import datetime
from typing import Any

import orjson
import pytest

from consumer.errors import InvalidEvent, OutOfScope, UnknownVendor
from consumer.model import InstanceEvent
from consumer.normalization import Normalizer
from tests.vendor_samples import GCP_HOST_ERROR

N = Normalizer()

T_HOST_ERROR = 1656598043102  # 2022-06-30T14:07:23.102868Z, truncated to the millisecond
OPERATION_ID = "systemevent-1656598023967-5e2aac8c11261-3553f149-42656705"

EXPECTED: dict[str, Any] = {
    "vendor": "gcp", "instance_id": "2074079198322937303",
    "vendor_event_code": "compute.instances.hostError", "operation": "failure.reboot",
    "known": True, "phase": "executing", "vendor_status": "Instance terminated by Compute Engine.",
    "event_time": T_HOST_ERROR, "region": "us-east1", "account_id": "skilled-adapter-452",
    "notification_id": "fjpkr2e6yi26", "vendor_event_id": OPERATION_ID, "level": "INFO",
    "previous_state": None, "current_state": None, "publish_time": None, "not_before": None,
    "start_time": None, "end_time": None, "source_format": "gcp.logentry",
    "attributes": {
        "instance_name": "longevity-10gb-3h-master-db-node-fac7b27a-0-6", "zone": "us-east1-d",
        "operation.first": "true", "operation.last": "true",
        "operation.producer": "compute.instances.hostError",
        "logName": "projects/skilled-adapter-452/logs/cloudaudit.googleapis.com%2Fsystem_event",
        "receiveTimestamp": "2022-06-30T14:07:23.983450844Z",
    },
}


def test_hand_computed_time_matches_the_standard_library() -> None:
    seconds = calendar.timegm(datetime(2022, 6, 30, 14, 7, 23).timetuple())
    assert seconds * 1000 + 102 == T_HOST_ERROR


def one(obj: object) -> InstanceEvent:
    [event] = N.normalize_obj(obj)
    return event


def push(entry: dict[str, Any]) -> dict[str, Any]:
    return {"message": {"data": base64.b64encode(orjson.dumps(entry)).decode(),
                        "messageId": "2070443601311540", "publishTime": "2022-06-30T14:07:24.5Z",
                        "attributes": {}},
            "subscription": "projects/skilled-adapter-452/subscriptions/vmevents-push"}


def entry(**changes: Any) -> dict[str, Any]:
    obj = copy.deepcopy(GCP_HOST_ERROR.obj)
    for key, value in changes.items():
        section, _, field = key.partition("__")
        if field:
            obj[section][field] = value
        else:
            obj[key] = value
    return obj


def test_host_error_of_the_notes() -> None:
    assert N.normalize_all(GCP_HOST_ERROR.raw) == [EXPECTED]


def test_pubsub_push_is_the_same_event_with_the_message_kept() -> None:
    assert one(push(GCP_HOST_ERROR.obj)) == EXPECTED | {
        "source_format": "gcp.pubsub_push",
        "attributes": EXPECTED["attributes"] | {
            "pubsub.messageId": "2070443601311540", "pubsub.publishTime": "2022-06-30T14:07:24.5Z",
            "pubsub.subscription": "projects/skilled-adapter-452/subscriptions/vmevents-push"},
    }


@pytest.mark.parametrize(("method", "operation", "alone"), [
    ("compute.instances.hostError", "failure.reboot", "executing"),
    ("compute.instances.automaticRestart", "failure.reboot", "executed"),
    ("compute.instances.migrateOnHostMaintenance", "maintenance.live_migration", None),
    ("compute.instances.terminateOnHostMaintenance", "maintenance.terminate", None),
    ("compute.instances.preempted", "preemptible.interruption", None),
    ("compute.instances.upcomingMaintenance", "maintenance.host", None),
])
def test_every_mapped_method_as_one_entry(method: str, operation: str, alone: str | None) -> None:
    event = one(entry(protoPayload__methodName=method))
    assert (event["vendor_event_code"], event["operation"], event["known"], event["phase"]) == (
        method, operation, True, alone)


@pytest.mark.parametrize(("method", "first", "last", "phase"), [
    ("compute.instances.migrateOnHostMaintenance", True, False, "executing"),
    ("compute.instances.migrateOnHostMaintenance", False, False, "executing"),
    ("compute.instances.migrateOnHostMaintenance", False, True, "executed"),
    ("compute.instances.upcomingMaintenance", True, False, "scheduled"),
    ("compute.instances.upcomingMaintenance", False, False, "executing"),
    ("compute.instances.upcomingMaintenance", False, True, "executed"),
])
def test_first_and_last_give_the_phase_of_a_long_operation(method: str, first: bool, last: bool,
                                                           phase: str) -> None:
    obj = entry(protoPayload__methodName=method)
    obj["operation"].update(first=first, last=last)
    event = one(obj)
    assert event["phase"] == phase
    assert event["vendor_event_id"] == OPERATION_ID  # one key for all entries of the operation


def test_entry_without_operation_is_one_observation() -> None:
    obj = entry(protoPayload__methodName="compute.instances.preempted")
    del obj["operation"]
    event = one(obj)
    assert (event["phase"], event["vendor_event_id"]) == (None, None)


def test_other_compute_method_on_an_instance_is_normalized_mechanically() -> None:
    event = one(entry(protoPayload__methodName="compute.instances.guestTerminate"))
    assert (event["known"], event["vendor_event_code"]) == (False, "compute.instances.guestTerminate")
    assert event["operation"] == "compute.instances.guest_terminate"


@pytest.mark.parametrize("obj", [
    entry(protoPayload__serviceName="storage.googleapis.com",
          resource={"type": "gcs_bucket", "labels": {"bucket_name": "b", "project_id": "p"}}),
    entry(resource={"type": "gce_disk", "labels": {"disk_id": "1", "project_id": "p",
                                                   "zone": "us-east1-d"}}),
], ids=["cloud-storage", "disk"])
def test_other_services_and_resources_are_out_of_scope(obj: dict[str, Any]) -> None:
    with pytest.raises(OutOfScope) as info:
        N.normalize_obj(obj)
    assert (info.value.reason, info.value.vendor) == ("out_of_scope", "gcp")
    with pytest.raises(OutOfScope):
        N.normalize_obj(push(obj))


@pytest.mark.parametrize(("obj", "error", "match"), [
    (entry(timestamp=None), InvalidEvent, "timestamp is required"),
    (entry(timestamp="yesterday"), InvalidEvent, "timestamp: not a timestamp"),
    (entry(resource={"type": "gce_instance", "labels": {"zone": "us-east1-d"}}), InvalidEvent,
     "instance_id is required"),
    (entry(protoPayload__methodName=7), InvalidEvent, "methodName must be a string"),
    ({"message": {"data": "%%%"}, "subscription": "s"}, UnknownVendor, "not a base64 JSON"),
    ({"message": {"data": base64.b64encode(b'{"a": 1}').decode()}, "subscription": "s"},
     UnknownVendor, "not a Cloud Audit Logs LogEntry"),
])
def test_bad_gcp_payloads_name_the_field(obj: dict[str, Any], error: type[Exception],
                                         match: str) -> None:
    with pytest.raises(error, match=match):
        N.normalize_obj(obj)


def test_zone_without_a_dash_is_its_own_region() -> None:
    obj = entry()
    obj["resource"]["labels"]["zone"] = "global"
    assert one(obj)["region"] == "global"
