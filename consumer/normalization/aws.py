"""AWS EC2 instance events (EventBridge, directly or through SNS) -> InstanceEvents.

Envelope: EventBridge's ``id``, ``detail-type``, ``source``, ``account``, ``time``, ``region``,
``resources``, ``detail`` (``version`` may be missing), delivered to any target; or the same
event as a JSON string in the ``Message`` of an SNS notification (``source_format`` aws.sns).

- ``aws.health`` with ``detail.service`` EC2: one event per affected instance: an
  ``entityValue`` that is ``i-...`` or an instance ARN; when no entity names one, the instances
  in ``resources`` (backup events carry them only there). Code ``eventTypeCode``, event id
  ``eventArn``, ``not_before`` the planned ``startTime``, ``end_time`` ``endTime``. Phase: upcoming
  -> scheduled; open -> scheduled while ``startTime`` is after the event's ``time``, executing
  once it is not (``start_time`` is then the vendor's start); closed -> executed; no
  ``statusCode`` (the older shape) counts as open.
- ``aws.ec2``: code = ``detail-type``, the instance ``detail.instance-id`` (or ``instance_id``,
  or the one instance ARN in ``resources`` when the detail names none). Spot interruption
  warnings and rebalance recommendations are single notices (``instance-action`` kept).
  State-change notifications feed the lifecycle correlation: EC2 has no ``starting`` or
  ``deleting`` state, its ``pending`` comes before a start as before a launch and
  ``shutting-down`` before ``terminated``, so ``current_state`` speaks the canonical lifecycle
  vocabulary (pending -> starting, shutting-down -> deleting; the rest as sent) and
  ``vendor_status`` keeps EC2's word. pending -> running is then a start, stopping -> stopped a
  stop, shutting-down -> terminated a delete.

Anything else from AWS (another service's Health event, a public issue naming no instance, an
EBS notice) is out of scope: skipped and counted, not dead-lettered.
"""

from __future__ import annotations

from typing import Final

from consumer.errors import InvalidEvent, OutOfScope, UnknownVendor
from consumer.model import InstanceEvent, Phase
from consumer.normalization.fields import (
    JsonObject,
    TimeParse,
    attr_value,
    build,
    embedded_json,
    extras_copier,
    required_object,
    required_text,
    text,
    time_or_none,
)

SOURCE_EVENTBRIDGE: Final = "aws.eventbridge"
SOURCE_SNS: Final = "aws.sns"

STATE_CHANGE: Final = "EC2 Instance State-change Notification"
_LIFECYCLE_STATES: Final = {"pending": "starting", "shutting-down": "deleting"}
_HEALTH_PHASES: Final[dict[str, Phase]] = {"upcoming": "scheduled", "closed": "executed"}

_ENVELOPE_MAPPED: Final = frozenset({"id", "account", "time", "region", "detail", "resources"})
_HEALTH_MAPPED: Final = frozenset({
    "eventArn", "eventTypeCode", "startTime", "endTime", "statusCode", "eventRegion",
    "affectedEntities", "service",
})
_EC2_MAPPED: Final = frozenset({"instance-id", "instance_id", "state"})
_SNS_KEPT: Final = ("MessageId", "TopicArn", "Subject", "Timestamp")
_copy_envelope = extras_copier(_ENVELOPE_MAPPED)
_copy_health = extras_copier(_HEALTH_MAPPED)
_copy_ec2 = extras_copier(_EC2_MAPPED)


def adapt_eventbridge(obj: JsonObject, parse_time: TimeParse,
                      received_ms: int | None = None) -> list[InstanceEvent]:
    """An EventBridge event as any target receives it."""
    return _adapt(obj, parse_time, SOURCE_EVENTBRIDGE, {})


def adapt_sns(obj: JsonObject, parse_time: TimeParse,
              received_ms: int | None = None) -> list[InstanceEvent]:
    """An SNS notification whose ``Message`` is an EventBridge event, as a JSON string."""
    inner = embedded_json(obj, "Message", "aws", "SNS")
    if type(inner) is not dict or type(inner.get("source")) is not str or \
            not inner["source"].startswith("aws.") or "detail-type" not in inner:
        raise UnknownVendor("aws: an SNS notification whose Message is not an EventBridge event")
    attributes = {f"sns.{key}": value for key in _SNS_KEPT
                  if (value := attr_value(obj.get(key))) is not None}
    return _adapt(inner, parse_time, SOURCE_SNS, attributes)


def _adapt(obj: JsonObject, parse_time: TimeParse, source_format: str,
           attributes: dict[str, str]) -> list[InstanceEvent]:
    where = "aws: "
    source = required_text(obj.get("source"), "source", where)
    detail_type = required_text(obj.get("detail-type"), "detail-type", where)
    detail = required_object(obj, "detail", where)
    event_time = time_or_none(obj.get("time"), "time", where, parse_time)
    if event_time is None:
        raise InvalidEvent(f"{where}time is required")
    region = text(obj.get("region"), "region", where)
    account = text(obj.get("account"), "account", where)
    note = text(obj.get("id"), "id", where)
    _copy_envelope(obj, attributes)
    if source == "aws.health":
        events = _health(obj, detail, event_time, parse_time, source_format, attributes)
    elif source == "aws.ec2" and (instance := _ec2_instance(detail, obj.get("resources"))):
        events = [_ec2(detail, instance, detail_type, event_time, source_format, attributes)]
    else:
        raise OutOfScope(f"{where}{source} {detail_type!r} is not about an EC2 instance",
                         vendor="aws")
    for event in events:
        event["region"] = region or event["region"]  # Health: else detail.eventRegion
        event["account_id"] = account
        event["notification_id"] = note
    return events


def _ec2_instance(detail: JsonObject, resources: object) -> str | None:
    """The instance an ``aws.ec2`` event is about: ``detail.instance-id``, its snake-case
    spelling ``instance_id`` (met in SDK-built payloads), else the one instance ARN in
    ``resources``; None when it names none (an EBS notice). Several there and none in the
    detail is ambiguous: invalid, not guessed."""
    for key in ("instance-id", "instance_id"):
        if key in detail:
            return required_text(detail[key], key, "aws: detail.")
    named = {i for r in resources if (i := instance_of(r))} if type(resources) is list else set()
    if len(named) > 1:
        raise InvalidEvent(f"aws: resources name {len(named)} instances and detail none")
    return named.pop() if named else None


def _ec2(detail: JsonObject, instance: str, detail_type: str, event_time: int,
         source_format: str, attributes: dict[str, str]) -> InstanceEvent:
    where = "aws: detail."
    _copy_ec2(detail, attributes)
    event = build("aws", source_format, detail_type, "detail-type", "aws: ", instance,
                  event_time, None, attributes)
    if detail_type == STATE_CHANGE:
        state = required_text(detail.get("state"), "state", where)
        event["vendor_status"] = state
        event["current_state"] = _LIFECYCLE_STATES.get(state, state)
    elif "state" in detail:
        attributes["state"] = attr_value(detail["state"]) or ""
    return event


def _health(obj: JsonObject, detail: JsonObject, event_time: int, parse_time: TimeParse,
            source_format: str, attributes: dict[str, str]) -> list[InstanceEvent]:
    where = "aws: detail."
    service = text(detail.get("service"), "service", where)
    if service != "EC2":
        raise OutOfScope(f"aws: a Health event of service {service!r}, not EC2", vendor="aws")
    code = required_text(detail.get("eventTypeCode"), "eventTypeCode", where)
    status = text(detail.get("statusCode"), "statusCode", where)
    start = time_or_none(detail.get("startTime"), "startTime", where, parse_time)
    end = time_or_none(detail.get("endTime"), "endTime", where, parse_time)
    instances = _instances(detail, obj.get("resources"))
    if not instances:
        raise OutOfScope(f"aws: Health event {code} names no EC2 instance", vendor="aws")
    phase: Phase = _HEALTH_PHASES.get(status or "open") or (
        "scheduled" if start is not None and start > event_time else "executing")
    _copy_health(detail, attributes)
    region = text(detail.get("eventRegion"), "eventRegion", where)
    arn = text(detail.get("eventArn"), "eventArn", where)
    events = []
    for instance, entity in instances:
        attrs = dict(attributes)
        if entity is not None:
            for key, value in entity.items():
                kept = attr_value(value)
                if kept is not None:
                    attrs[f"entity.{key}"] = kept
        event = build("aws", source_format, code, "eventTypeCode", where, instance, event_time,
                      status, attrs)
        event["phase"] = phase
        event["region"] = region
        event["vendor_event_id"] = arn
        event["not_before"] = start
        event["start_time"] = start if phase != "scheduled" else None
        event["end_time"] = end
        events.append(event)
    return events


def _instances(detail: JsonObject, resources: object) -> list[tuple[str, JsonObject | None]]:
    """(instance id, its affected entity) of every instance the event names, each once."""
    found: dict[str, JsonObject | None] = {}
    entities = detail.get("affectedEntities")
    if type(entities) is list:
        for entity in entities:
            if type(entity) is dict:
                instance = instance_of(entity.get("entityValue"))
                if instance is not None and instance not in found:
                    found[instance] = entity
    if not found and type(resources) is list:
        for resource in resources:
            instance = instance_of(resource)
            if instance is not None and instance not in found:
                found[instance] = None
    return list(found.items())


def instance_of(value: object) -> str | None:
    """The instance id in ``i-...`` or an EC2 instance ARN
    (``arn:aws:ec2:<region>:<account>:instance/i-...``; Spot warnings spell it
    ``arn:aws:ec2:<zone>:instance/i-...``); None for anything else."""
    if type(value) is not str:
        return None
    if value.startswith("arn:"):
        parts = value.split(":")
        if len(parts) < 5 or parts[2] != "ec2" or not parts[-1].startswith("instance/"):
            return None
        value = parts[-1][len("instance/"):]
    return value if value.startswith("i-") and len(value) > 2 else None
