"""AWS: every payload of the notes file, the SNS and older-shape variations, several instances
per Health event, backup events, lifecycle states, and what is out of scope.

Expected values are written by hand from the payloads; the epoch milliseconds are checked
against the standard library below.
"""

from __future__ import annotations

import base64
import calendar
import copy
from datetime import datetime
from typing import Any

import orjson
import pytest

from consumer.errors import InvalidEvent, InvalidTime, OutOfScope, UnknownVendor
from consumer.model import InstanceEvent
from consumer.normalization import Normalizer
from consumer.normalization.aws import instance_of
from tests.vendor_samples import (
    AWS_HEALTH_OLDER,
    AWS_HEALTH_SCHEDULED,
    AWS_SPOT_WARNING,
    AWS_STATE_CHANGE,
)

N = Normalizer()

T_HEALTH = (1769478201000, "2026-01-27T01:43:21")  # envelope time
T_HEALTH_START = (1787836743000, "2026-08-27T13:19:03")  # Thu, 27 Aug 2026 13:19:03 GMT
T_OLDER = (1465108077000, "2016-06-05T06:27:57")
T_OLDER_START = (1465139409000, "2016-06-05T15:10:09")  # Sat, 05 Jun 2016 15:10:09 GMT
T_STATE = (1636666194000, "2021-11-11T21:29:54")
ARN = "arn:aws:health:us-east-1::event/AWS_EC2_INSTANCE_RETIREMENT_SCHEDULED_90353408594353983"
DESCRIPTION = ('[{"language":"en_US","latestDescription":'
               '"A description of the event will be provided here"}]')


@pytest.mark.parametrize(("ms", "utc"), [T_HEALTH, T_HEALTH_START, T_OLDER, T_OLDER_START,
                                         T_STATE])
def test_hand_computed_times_match_the_standard_library(ms: int, utc: str) -> None:
    assert calendar.timegm(datetime.strptime(utc, "%Y-%m-%dT%H:%M:%S").timetuple()) * 1000 == ms


def one(obj: object) -> InstanceEvent:
    [event] = N.normalize_obj(obj)
    return event


def sns(event: dict[str, Any]) -> dict[str, Any]:
    """The event as an SNS notification delivers it: a JSON string in ``Message``."""
    return {"Type": "Notification", "MessageId": "22b80b92-fdea-4c2c-8f9d-bdfb0c7bf324",
            "TopicArn": "arn:aws:sns:us-east-1:123456789012:ec2-events",
            "Message": orjson.dumps(event).decode(), "Timestamp": "2026-01-27T01:43:22.000Z",
            "SignatureVersion": "1", "Signature": "EXAMPLE"}


HEALTH_EXPECTED: dict[str, Any] = {
    "vendor": "aws", "instance_id": "i-1234567890abcdef0",
    "vendor_event_code": "AWS_EC2_INSTANCE_RETIREMENT_SCHEDULED",
    "operation": "maintenance.retirement", "known": True,
    "phase": "scheduled",  # open, and startTime (Aug) is after the event's time (Jan)
    "vendor_status": "open", "event_time": T_HEALTH[0], "region": "us-east-1",
    "account_id": "123456789012", "notification_id": "7bf73129-1428-4cd3-a780-95db273d1602",
    "vendor_event_id": ARN, "level": None, "previous_state": None, "current_state": None,
    "publish_time": None, "not_before": T_HEALTH_START[0], "start_time": None, "end_time": None,
    "source_format": "aws.eventbridge",
    "attributes": {
        "version": "0", "detail-type": "AWS Health Event", "source": "aws.health",
        "eventTypeCategory": "scheduledChange", "eventScopeCode": "ACCOUNT_SPECIFIC",
        "communicationId": "1234abc01232a4012345678-1",
        "lastUpdatedTime": "Thu, 27 Jan 2026 13:44:13 GMT",
        "eventDescription": DESCRIPTION,
        "eventMetadata": '{"keystring1":"valuestring1","truncated":"true"}',
        "affectedAccount": "123456789012", "page": "1", "totalPages": "1",
        "backupEvent": "false", "personas": '["OPERATIONS"]',
        "actionability": "ACTION_REQUIRED",
        "entity.entityValue": "arn:aws:ec2:us-east-1:123456789012:instance/i-1234567890abcdef0",
        "entity.lastUpdatedTime": "Thu, 26 Jan 2026 19:01:55 GMT", "entity.status": "PENDING",
    },
}


def test_health_scheduled_change_of_the_docs() -> None:
    assert N.normalize_all(AWS_HEALTH_SCHEDULED.raw) == [HEALTH_EXPECTED]


def test_health_through_sns_is_the_same_event_with_the_notification_kept() -> None:
    [event] = N.normalize_all(orjson.dumps(sns(AWS_HEALTH_SCHEDULED.obj)))
    assert event == HEALTH_EXPECTED | {
        "source_format": "aws.sns",
        "attributes": HEALTH_EXPECTED["attributes"] | {
            "sns.MessageId": "22b80b92-fdea-4c2c-8f9d-bdfb0c7bf324",
            "sns.TopicArn": "arn:aws:sns:us-east-1:123456789012:ec2-events",
            "sns.Timestamp": "2026-01-27T01:43:22.000Z"},
    }


def test_health_older_shape_without_status_counts_as_open() -> None:
    assert N.normalize_all(AWS_HEALTH_OLDER.raw) == [{
        "vendor": "aws", "instance_id": "i-12345678",
        "vendor_event_code": "AWS_EC2_DEDICATED_HOST_NETWORK_MAINTENANCE_SCHEDULED",
        "operation": "maintenance.network", "known": True, "phase": "scheduled",
        "vendor_status": None, "event_time": T_OLDER[0], "region": "us-east-1",
        "account_id": "account id", "notification_id": "7fb65329-1628-4cf3-a740-95fg457h1402",
        "vendor_event_id": "arn:aws:health:region::event/id", "level": None,
        "previous_state": None, "current_state": None, "publish_time": None,
        "not_before": T_OLDER_START[0], "start_time": None, "end_time": None,
        "source_format": "aws.eventbridge",
        "attributes": {"version": "0", "detail-type": "AWS Health Event", "source": "aws.health",
                       "eventTypeCategory": "scheduledChange", "eventDescription": DESCRIPTION,
                       "entity.entityValue": "i-12345678",
                       "entity.tags": '{"stage":"prod","app":"my-app"}'},
    }]


def health(**detail: Any) -> dict[str, Any]:
    obj = copy.deepcopy(AWS_HEALTH_SCHEDULED.obj)
    obj["detail"].update(detail)
    return {k: v for k, v in obj.items() if v is not None} | {
        "detail": {k: v for k, v in obj["detail"].items() if v is not None}}


@pytest.mark.parametrize(("status", "start", "phase", "start_time"), [
    ("upcoming", "Thu, 27 Aug 2026 13:19:03 GMT", "scheduled", None),
    ("open", "Thu, 27 Aug 2026 13:19:03 GMT", "scheduled", None),
    ("open", "Tue, 27 Jan 2026 01:00:00 GMT", "executing", 1769475600000),
    ("open", None, "executing", None),
    ("closed", "Tue, 27 Jan 2026 01:00:00 GMT", "executed", 1769475600000),
])
def test_health_phase_follows_status_and_start(status: str, start: str | None, phase: str,
                                               start_time: int | None) -> None:
    event = one(health(statusCode=status, startTime=start))
    assert (event["phase"], event["vendor_status"], event["start_time"]) == (
        phase, status, start_time)


def test_health_end_time_is_kept() -> None:
    event = one(health(statusCode="closed", startTime="Tue, 27 Jan 2026 01:00:00 GMT",
                       endTime="Tue, 27 Jan 2026 01:30:00 GMT"))
    assert (event["start_time"], event["end_time"]) == (1769475600000, 1769477400000)


def test_two_instance_entities_are_two_events() -> None:
    entities = [
        {"entityValue": "i-0aaa0000000000001", "status": "PENDING"},
        {"entityValue": "arn:aws:ec2:us-east-1:123456789012:instance/i-0bbb0000000000002"},
        {"entityValue": "i-0aaa0000000000001"},  # the same instance again: one event
        {"entityValue": "vol-0123456789abcdef0"},  # not an instance
    ]
    events = N.normalize_obj(health(affectedEntities=entities))
    assert [e["instance_id"] for e in events] == ["i-0aaa0000000000001", "i-0bbb0000000000002"]
    assert [e["attributes"].get("entity.status") for e in events] == ["PENDING", None]
    assert {e["vendor_event_id"] for e in events} == {ARN}
    assert events[0]["attributes"] is not events[1]["attributes"]


def test_backup_event_with_the_instance_in_resources_only() -> None:
    obj = health(affectedEntities=None, backupEvent="true")
    obj["resources"] = ["arn:aws:ec2:us-east-1:123456789012:instance/i-0ccc0000000000003"]
    event = one(obj)
    assert event["instance_id"] == "i-0ccc0000000000003"
    assert event["attributes"]["backupEvent"] == "true"
    assert "resources" not in event["attributes"]


def test_entities_win_over_resources() -> None:
    obj = copy.deepcopy(AWS_HEALTH_OLDER.obj)
    obj["resources"] = ["i-99999999"]
    assert one(obj)["instance_id"] == "i-12345678"


def test_region_falls_back_to_event_region() -> None:
    obj = health(eventRegion="eu-west-1")
    del obj["region"]
    assert one(obj)["region"] == "eu-west-1"


@pytest.mark.parametrize("obj", [
    health(service="RDS", eventTypeCode="AWS_RDS_MAINTENANCE_SCHEDULED"),
    health(eventTypeCategory="issue", eventScopeCode="PUBLIC", affectedEntities=[]),
    health(affectedEntities=[{"entityValue": "vol-0123456789abcdef0"}]),
    {"version": "0", "id": "e1", "detail-type": "EBS Volume Notification", "source": "aws.ec2",
     "account": "123456789012", "time": "2026-01-27T01:43:21Z", "region": "us-east-1",
     "resources": ["arn:aws:ec2:us-east-1:123456789012:volume/vol-01234567"],
     "detail": {"event": "createVolume", "result": "available"}},
    {"version": "0", "id": "e2", "detail-type": "RDS DB Instance Event", "source": "aws.rds",
     "account": "123456789012", "time": "2026-01-27T01:43:21Z", "region": "us-east-1",
     "detail": {"EventCategories": ["failover"]}},
], ids=["rds-health", "public-issue", "no-instance-entity", "ebs", "rds"])
def test_other_services_and_events_without_an_instance_are_out_of_scope(
        obj: dict[str, Any]) -> None:
    with pytest.raises(OutOfScope) as info:
        N.normalize_obj(obj)
    assert (info.value.reason, info.value.vendor) == ("out_of_scope", "aws")
    with pytest.raises(OutOfScope):  # through SNS as well
        N.normalize_obj(sns(obj))


def test_spot_warning_of_the_notes_has_an_epoch_zero_time_and_is_rejected_invalid_time() -> None:
    with pytest.raises(InvalidTime, match="time: '1970-01-01T00:00:00Z' is outside") as info:
        N.normalize_all(AWS_SPOT_WARNING.raw)
    assert info.value.reason == "invalid_time"


def test_spot_warning_with_a_real_time() -> None:
    obj = AWS_SPOT_WARNING.obj | {"time": "2021-11-11T21:29:54Z"}
    assert one(obj) == {
        "vendor": "aws", "instance_id": "i-0b662ef9931388ba0",
        "vendor_event_code": "EC2 Spot Instance Interruption Warning",
        "operation": "preemptible.interruption", "known": True, "phase": None,
        "vendor_status": None, "event_time": T_STATE[0], "region": "us-east-1",
        "account_id": "<account_number>", "notification_id": "1e5527d7-bb36-4607-3370-4164db56a40e",
        "vendor_event_id": None, "level": None, "previous_state": None, "current_state": None,
        "publish_time": None, "not_before": None, "start_time": None, "end_time": None,
        "source_format": "aws.eventbridge",
        "attributes": {"version": "0", "detail-type": "EC2 Spot Instance Interruption Warning",
                       "source": "aws.ec2", "instance-action": "terminate"},
    }


def test_rebalance_recommendation() -> None:
    obj = AWS_SPOT_WARNING.obj | {"time": "2021-11-11T21:29:54Z",
                                  "detail-type": "EC2 Instance Rebalance Recommendation",
                                  "detail": {"instance-id": "i-0b662ef9931388ba0"}}
    event = one(obj)
    assert (event["operation"], event["phase"], event["instance_id"]) == (
        "preemptible.rebalance_recommendation", None, "i-0b662ef9931388ba0")


def test_state_change_of_the_docs_without_version() -> None:
    assert one(AWS_STATE_CHANGE.obj) == {
        "vendor": "aws", "instance_id": "i-abcd1111",
        "vendor_event_code": "EC2 Instance State-change Notification",
        "operation": "lifecycle.state_change", "known": True, "phase": None,
        "vendor_status": "pending", "event_time": T_STATE[0], "region": "us-east-1",
        "account_id": "123456789012", "notification_id": "7bf73129-1428-4cd3-a780-95db273d1602",
        "vendor_event_id": None, "level": None, "previous_state": None,
        "current_state": "starting", "publish_time": None, "not_before": None,
        "start_time": None, "end_time": None, "source_format": "aws.eventbridge",
        "attributes": {"detail-type": "EC2 Instance State-change Notification",
                       "source": "aws.ec2"},
    }


@pytest.mark.parametrize(("state", "canonical"), [
    ("pending", "starting"), ("running", "running"), ("stopping", "stopping"),
    ("stopped", "stopped"), ("shutting-down", "deleting"), ("terminated", "terminated"),
])
def test_state_change_speaks_the_lifecycle_vocabulary(state: str, canonical: str) -> None:
    obj = copy.deepcopy(AWS_STATE_CHANGE.obj)
    obj["detail"]["state"] = state
    event = one(obj)
    assert (event["current_state"], event["vendor_status"]) == (canonical, state)


def test_unknown_ec2_detail_type_about_an_instance_is_normalized_mechanically() -> None:
    obj = AWS_SPOT_WARNING.obj | {"time": "2021-11-11T21:29:54Z",
                                  "detail-type": "EC2 Instance Fancy Notice"}
    event = one(obj)
    assert (event["known"], event["vendor_event_code"]) == (False, "EC2 Instance Fancy Notice")
    assert event["operation"]


@pytest.mark.parametrize(("obj", "error", "match"), [
    ({"Type": "Notification", "Message": "not json"}, UnknownVendor, "Message is not JSON"),
    ({"Type": "Notification", "Message": '{"a": 1}'}, UnknownVendor, "not an EventBridge event"),
    ({"Type": "Notification", "Message": 42}, InvalidEvent, "Message must be a string"),
    (AWS_STATE_CHANGE.obj | {"time": None}, InvalidEvent, "time is required"),
    (AWS_STATE_CHANGE.obj | {"detail": []}, InvalidEvent, "detail must be an object"),
    (AWS_STATE_CHANGE.obj | {"detail": {"instance-id": "i-1"}}, InvalidEvent,
     "state is required"),
    (health(eventTypeCode=None), InvalidEvent, "eventTypeCode is required"),
    (health(startTime="someday"), InvalidEvent, "startTime: not a timestamp"),
])
def test_bad_aws_payloads_name_the_field(obj: dict[str, Any], error: type[Exception],
                                         match: str) -> None:
    with pytest.raises(error, match=match):
        N.normalize_obj(obj)


@pytest.mark.parametrize(("value", "instance"), [
    ("i-1234567890abcdef0", "i-1234567890abcdef0"),
    ("arn:aws:ec2:us-east-1:123456789012:instance/i-1234567890abcdef0", "i-1234567890abcdef0"),
    ("arn:aws:ec2:us-east-1b:instance/i-0b662ef9931388ba0", "i-0b662ef9931388ba0"),
    ("arn:aws:ec2:us-east-1:123456789012:volume/vol-1", None),
    ("arn:aws:rds:us-east-1:123456789012:db:mydb", None),
    ("i-", None), ("vol-1", None), (42, None), (None, None),
])
def test_instance_of(value: object, instance: str | None) -> None:
    assert instance_of(value) == instance


def test_sns_message_base64_is_not_accepted_as_json() -> None:
    obj = {"Type": "Notification",
           "Message": base64.b64encode(AWS_STATE_CHANGE.raw).decode()}
    with pytest.raises(UnknownVendor):
        N.normalize_obj(obj)


def snake_case_state_change(**detail: Any) -> dict[str, Any]:
    """The documented state change with the detail's snake-case spelling (SDK-built payloads)."""
    obj = copy.deepcopy(AWS_STATE_CHANGE.obj)
    obj["detail"] = {"instance_id": "i-abcd1111", "state": "running", **detail}
    return obj


def test_state_change_with_a_snake_case_instance_id_is_about_that_instance() -> None:
    for obj in (snake_case_state_change(), sns(snake_case_state_change())):
        [event] = N.normalize_all(orjson.dumps(obj))
        assert (event["instance_id"], event["operation"], event["current_state"]) == (
            "i-abcd1111", "lifecycle.state_change", "running")
        assert "instance_id" not in event["attributes"]


def test_state_change_naming_the_instance_only_in_resources() -> None:
    obj = snake_case_state_change()
    del obj["detail"]["instance_id"]
    assert obj["resources"] == ["arn:aws:ec2:us-east-1:123456789012:instance/i-abcd1111"]
    assert one(obj)["instance_id"] == "i-abcd1111"
    obj["resources"] = [*obj["resources"], "arn:aws:ec2:us-east-1:123456789012:instance/i-2"]
    with pytest.raises(InvalidEvent, match="resources name 2 instances and detail none"):
        one(obj)
