"""Alibaba Cloud ECS instance event notifications -> InstanceEvent.

Two envelopes carry the same event body:

- CloudMonitor (``ver``, ``id``, ``product: ECS``, ``resourceId`` ARN, ``level``, ``name``,
  ``userId``, ``eventTime``, ``regionId``, ``content``), ``name`` being
  ``<resource>:<EventType>[:<Status>]``, e.g. ``Instance:SystemMaintenance.Reboot:Scheduled``.
- EventBridge, CloudEvents 1.0 (``specversion``, ``id``, ``source: acs.ecs``,
  ``type: ecs:Instance:<EventType>[:<Status>]``, ``subject`` ARN, ``time``,
  ``aliyunaccountid``, ``aliyunregionid``, ``aliyuneventbusname``, ...), ``data`` holding what
  CloudMonitor puts in ``content``.

Quirks handled: the status in the body (``eventStatus``, or live migration's ``status``) wins
over the suffix of ``name``/``type`` - the document's Avoided example still says ``:Scheduled``
in its name; the event type in the body (``eventType``) wins over the name likewise. Account,
region and instance fall back to the ARN (``acs:ecs:<region>:<account>:instance/<id>``) when the
envelope omits them. The body's own time fields are typed: publishTime, notBefore, and one
start/end pair whichever spelling the event uses (executeStartTime/executeFinishTime, live
migration startTime/endTime, burstable intervalStart/intervalEnd).
"""

from __future__ import annotations

from typing import Final

from consumer.errors import InvalidEvent
from consumer.model import InstanceEvent
from consumer.operations import lookup, mechanical_operation, phase_of
from consumer.vendors import (
    JsonObject,
    TimeParse,
    copy_extras,
    opt_str,
    opt_time,
    req_obj,
    req_str,
)

SOURCE_CLOUDMONITOR: Final = "aliyun.cloudmonitor"
SOURCE_EVENTBRIDGE: Final = "aliyun.eventbridge"

_BODY_MAPPED: Final = frozenset({
    "eventId", "eventType", "eventStatus", "status", "instanceId", "resourceId", "state",
    "publishTime", "notBefore", "executeStartTime", "executeFinishTime",
    "startTime", "endTime", "intervalStart", "intervalEnd",
})
# Format markers (product, specversion, source) are implied by source_format; ``name``,
# ``instanceName``, ``type``, ``subject`` and the other aliyun* fields stay attributes.
_CLOUDMONITOR_MAPPED: Final = frozenset({
    "id", "product", "resourceId", "level", "userId", "eventTime", "regionId", "content",
})
_EVENTBRIDGE_MAPPED: Final = frozenset({
    "id", "source", "specversion", "time", "data", "aliyunaccountid", "aliyunregionid",
})


def adapt_cloudmonitor(obj: JsonObject, parse_time: TimeParse) -> InstanceEvent:
    """A CloudMonitor notification (the document's format)."""
    where = "aliyun: "
    content = req_obj(obj, "content", where)
    name_code, name_status = _split_name(req_str(obj, "name", where), 0)
    event_time = opt_time(obj, "eventTime", where, parse_time)
    if event_time is None:
        raise InvalidEvent("aliyun: eventTime is required")
    attributes: dict[str, str] = {}
    copy_extras(obj, _CLOUDMONITOR_MAPPED, attributes)
    return _adapt(
        content, "aliyun: content.", parse_time, name_code, name_status, event_time,
        region=opt_str(obj, "regionId", where),
        account=opt_str(obj, "userId", where),
        arn=opt_str(obj, "resourceId", where),
        notification_id=opt_str(obj, "id", where),
        level=opt_str(obj, "level", where),
        attributes=attributes,
        source_format=SOURCE_CLOUDMONITOR,
    )


def adapt_eventbridge(obj: JsonObject, parse_time: TimeParse) -> InstanceEvent:
    """An EventBridge CloudEvent from source ``acs.ecs``."""
    where = "aliyun: "
    data = req_obj(obj, "data", where)
    # type is ecs:<Resource>:<EventType>[:<Status>]; skip the service prefix.
    type_code, type_status = _split_name(req_str(obj, "type", where), 1)
    event_time = opt_time(obj, "time", where, parse_time)
    if event_time is None:
        raise InvalidEvent("aliyun: time is required")
    attributes: dict[str, str] = {}
    copy_extras(obj, _EVENTBRIDGE_MAPPED, attributes)
    return _adapt(
        data, "aliyun: data.", parse_time, type_code, type_status, event_time,
        region=opt_str(obj, "aliyunregionid", where),
        account=opt_str(obj, "aliyunaccountid", where),
        arn=opt_str(obj, "subject", where),
        notification_id=opt_str(obj, "id", where),
        level=None,
        attributes=attributes,
        source_format=SOURCE_EVENTBRIDGE,
    )


def _split_name(name: str, skip: int) -> tuple[str | None, str | None]:
    """(event code, status suffix) of ``Instance:Code[:Status]`` after ``skip`` prefixes."""
    parts = name.split(":", skip + 2)
    if len(parts) == 1:  # a bare code, no resource prefix
        return parts[0], None
    code = parts[skip + 1] if len(parts) > skip + 1 else None
    status = parts[skip + 2] if len(parts) > skip + 2 else None
    return code or None, status or None


def _adapt(body: JsonObject, where: str, parse_time: TimeParse, name_code: str | None,
           name_status: str | None, event_time: int, *, region: str | None,
           account: str | None, arn: str | None, notification_id: str | None,
           level: str | None, attributes: dict[str, str], source_format: str) -> InstanceEvent:
    code = opt_str(body, "eventType", where) or name_code
    if code is None:
        raise InvalidEvent(f"{where}eventType is required (and the name carries no code)")
    spec = lookup(code)
    status = (opt_str(body, "eventStatus", where) or opt_str(body, "status", where)
              or name_status)

    instance_id = opt_str(body, "instanceId", where) or opt_str(body, "resourceId", where)
    if instance_id is None or region is None or account is None:
        arn_region, arn_account, arn_instance = split_arn(arn)
        instance_id = instance_id or arn_instance
        region = region or arn_region
        account = account or arn_account
    if instance_id is None:
        raise InvalidEvent(f"{where}instanceId is required (and no instance ARN to fall back on)")

    start = opt_time(body, "executeStartTime", where, parse_time)
    if start is None:
        start = opt_time(body, "startTime", where, parse_time)
        if start is None:
            start = opt_time(body, "intervalStart", where, parse_time)
    end = opt_time(body, "executeFinishTime", where, parse_time)
    if end is None:
        end = opt_time(body, "endTime", where, parse_time)
        if end is None:
            end = opt_time(body, "intervalEnd", where, parse_time)

    copy_extras(body, _BODY_MAPPED, attributes)
    return {
        "vendor": "aliyun",
        "instance_id": instance_id,
        "vendor_event_code": code,
        "operation": spec.operation if spec is not None else mechanical_operation(code),
        "known": spec is not None,
        "phase": phase_of(status) if status is not None else None,
        "vendor_status": status,
        "event_time": event_time,
        "region": region,
        "account_id": account,
        "notification_id": notification_id,
        "vendor_event_id": opt_str(body, "eventId", where),
        "level": level,
        "previous_state": None,
        "current_state": opt_str(body, "state", where),
        "publish_time": opt_time(body, "publishTime", where, parse_time),
        "not_before": opt_time(body, "notBefore", where, parse_time),
        "start_time": start,
        "end_time": end,
        "source_format": source_format,
        "attributes": attributes,
    }


def split_arn(arn: str | None) -> tuple[str | None, str | None, str | None]:
    """(region, account, instance id) of an ECS ARN; Nones for what it does not say.

    Accepts ``acs:ecs:<region>:<account>:instance/<id>`` and the EventBridge subject spelling
    ``acs.ecs:<region>:<account>:instance/<id>``.
    """
    if not arn:
        return None, None, None
    parts = arn.split(":", 4)
    if parts[0] == "acs" and len(parts) == 5:
        region, account, resource = parts[2], parts[3], parts[4]
    elif parts[0].startswith("acs.") and len(parts) >= 4:
        region, account, resource = parts[1], parts[2], ":".join(parts[3:])
    else:
        return None, None, None
    kind, _, ident = resource.partition("/")
    instance = ident if kind == "instance" and ident else None
    return region or None, account or None, instance
