"""Alibaba Cloud ECS instance event notifications -> InstanceEvent.

Two envelopes carry the same event body:

- CloudMonitor (``ver``, ``id``, ``product: ECS``, ``resourceId`` ARN, ``level``, ``name``,
  ``userId``, ``eventTime``, ``regionId``, ``content``), ``name`` being
  ``<resource>:<EventType>[:<Status>]``, e.g. ``Instance:SystemMaintenance.Reboot:Scheduled``.
- EventBridge, CloudEvents 1.0 (``specversion``, ``id``, ``source: acs.ecs``,
  ``type: ecs:Instance:<EventType>[:<Status>]``, ``subject`` ARN, ``time``,
  ``aliyunaccountid``, ``aliyunregionid``, ``aliyuneventbusname``, ...), ``data`` holding what
  CloudMonitor puts in ``content``.

Block storage events (``Disk:<Code>:<Status>``, e.g. ``Disk:Stalled:Executing``) are instance
events when they name the instance the disk is attached to (``content.ecsInstanceId``; the ARN
is the disk's): the code is ``Disk:<Code>``, disk id and device stay attributes; the end of a
Stalled event repeats the name ``...:Executing`` and adds ``executeFinishTime``, which makes it
the executed phase. A disk event naming no instance is out of scope.

Events about another resource that name no instance (``Snapshot:CreateSnapshotCompleted``,
whose ``resourceId`` is the snapshot's ARN) are out of scope too: valid ECS events, skipped and
counted, not dead-lettered. Only an ``Instance:`` event without an instance is invalid.

CloudMonitor's debug-subscription shape (``SendDryRunSystemEvent``, the console's "debug" button)
has no ``ver``, ``id``, ``userId`` or ``eventTime``: the event time is then the record's arrival
(see :func:`consumer.normalization.fields.arrival_time`) and ``source_format`` says
``aliyun.cloudmonitor_debug``.

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

from consumer.errors import InvalidEvent, OutOfScope
from consumer.model import InstanceEvent
from consumer.normalization.fields import (
    ExtrasCopier,
    JsonObject,
    TimeParse,
    absent,
    absent_time,
    arrival_time,
    bad_time,
    build,
    extras_copier,
    required,
    required_object,
    text,
    time_or_none,
)
from consumer.normalization.timeparse import TimeFormatError

SOURCE_CLOUDMONITOR: Final = "aliyun.cloudmonitor"
SOURCE_CLOUDMONITOR_DEBUG: Final = "aliyun.cloudmonitor_debug"
SOURCE_EVENTBRIDGE: Final = "aliyun.eventbridge"

_TIME_FIELDS: Final = ("publishTime", "notBefore", "executeStartTime", "executeFinishTime",
                       "startTime", "endTime", "intervalStart", "intervalEnd")
_BODY_MAPPED: Final = frozenset({
    "eventId", "eventType", "eventStatus", "status", "instanceId", "resourceId", "state",
    "ecsInstanceId", *_TIME_FIELDS,
})
_START_END: Final = frozenset(_TIME_FIELDS[2:])
# Format markers (product, specversion, source) are implied by source_format; ``name``,
# ``instanceName``, ``type``, ``subject`` and the other aliyun* fields stay attributes.
_CLOUDMONITOR_MAPPED: Final = frozenset({
    "id", "product", "resourceId", "level", "userId", "eventTime", "regionId", "content",
})
_EVENTBRIDGE_MAPPED: Final = frozenset({
    "id", "source", "specversion", "time", "data", "aliyunaccountid", "aliyunregionid",
})
_copy_body_extras = extras_copier(_BODY_MAPPED)
_copy_cloudmonitor_extras = extras_copier(_CLOUDMONITOR_MAPPED)
_copy_eventbridge_extras = extras_copier(_EVENTBRIDGE_MAPPED)


def adapt_cloudmonitor(obj: JsonObject, parse_time: TimeParse,
                       received_ms: int | None = None) -> list[InstanceEvent]:
    """A CloudMonitor notification (the document's format, or the debug-subscription shape)."""
    return _adapt(obj, required_object(obj, "content", "aliyun: "), "aliyun: content.",
                  parse_time, received_ms, name_key="name", prefixes=0, time_key="eventTime",
                  region_key="regionId", account_key="userId", arn_key="resourceId",
                  level_key="level", copy_extras=_copy_cloudmonitor_extras,
                  source_format=SOURCE_CLOUDMONITOR)


def adapt_eventbridge(obj: JsonObject, parse_time: TimeParse,
                      received_ms: int | None = None) -> list[InstanceEvent]:
    """An EventBridge CloudEvent from source ``acs.ecs``; ``type`` is ecs:<Resource>:<Code>."""
    return _adapt(obj, required_object(obj, "data", "aliyun: "), "aliyun: data.",
                  parse_time, received_ms, name_key="type", prefixes=1, time_key="time",
                  region_key="aliyunregionid", account_key="aliyunaccountid",
                  arn_key="subject", level_key=None, copy_extras=_copy_eventbridge_extras,
                  source_format=SOURCE_EVENTBRIDGE)


def _adapt(top: JsonObject, body: JsonObject, where: str, parse_time: TimeParse,
           received_ms: int | None, *, name_key: str, prefixes: int, time_key: str,
           region_key: str, account_key: str, arn_key: str, level_key: str | None,
           copy_extras: ExtrasCopier, source_format: str) -> list[InstanceEvent]:
    """Both envelopes: ``top`` is the envelope, ``body`` its content/data; keys name fields."""
    outer = "aliyun: "
    name = v if type(v := top.get(name_key)) is str and v else required(v, name_key, outer)
    region = v if type(v := top.get(region_key)) is str and v else absent(v, region_key, outer)
    account = v if type(v := top.get(account_key)) is str and v else absent(v, account_key,
                                                                            outer)
    note = v if type(v := top.get("id")) is str and v else absent(v, "id", outer)
    level = top.get(level_key) if level_key is not None else None
    if type(level) is not str or not level:
        level = absent(level, "level", outer)
    attributes: dict[str, str] = {}
    event_time = time_or_none(top.get(time_key), time_key, outer, parse_time)
    if event_time is None:
        if "ver" in top or "id" in top or level_key is None:
            raise InvalidEvent(f"{outer}{time_key} is required")
        event_time = arrival_time(received_ms, attributes)  # the debug-subscription shape
        source_format = SOURCE_CLOUDMONITOR_DEBUG

    get = body.get
    code = v if type(v := get("eventType")) is str and v else absent(v, "eventType", where)
    status = v if type(v := get("eventStatus")) is str and v else absent(v, "eventStatus", where)
    event_id = v if type(v := get("eventId")) is str and v else absent(v, "eventId", where)
    state = v if type(v := get("state")) is str and v else absent(v, "state", where)
    instance_id = v if type(v := get("instanceId")) is str and v else absent(v, "instanceId",
                                                                             where)
    disk = name.startswith("Disk:", len("ecs:") if prefixes else 0)
    if disk:
        instance_id = text(get("ecsInstanceId"), "ecsInstanceId", where)
        if instance_id is None:
            raise OutOfScope(f"{outer}block storage event {name!r} names no instance",
                             vendor="aliyun")
    if code is None or status is None:
        # The body's eventType/eventStatus win over Instance:<Code>:<Status>; fall back on it.
        name_code, name_status = _split_name(name, prefixes)
        code = code or name_code
        if code is None:
            raise InvalidEvent(f"{where}eventType is required (and {name_key} carries no code)")
        if status is None:
            # live migration's status (started/accomplished/failed); the debug shape's own
            status = (text(get("status"), "status", where) or name_status
                      or text(top.get("status"), "status", outer))
    if disk:
        code = "Disk:" + code

    if instance_id is None:
        # StateChange names the instance resourceId
        instance_id = text(get("resourceId"), "resourceId", where)
    if instance_id is None or region is None or account is None:
        arn = text(top.get(arn_key), arn_key, outer)
        arn_region, arn_account, arn_instance = split_arn(arn)
        instance_id = instance_id or arn_instance
        region = region or arn_region
        account = account or arn_account
        if instance_id is None:
            resource = _resource_of(name, prefixes) or _arn_resource(arn)
            if resource is not None and resource.lower() != "instance":
                raise OutOfScope(f"{outer}{name!r} is about a {resource.lower()}, not an "
                                 "instance", vendor="aliyun")
            raise InvalidEvent(f"{where}instanceId is required (and no instance ARN in "
                               f"{arn_key})")

    # Absent fields (None) skip the call that would only say so.
    try:
        publish, not_before = get("publishTime"), get("notBefore")
        if type(publish) is str and publish:
            publish = parse_time(publish)
        elif publish is not None:
            publish = absent_time(publish, "publishTime", where)
        if type(not_before) is str and not_before:
            not_before = parse_time(not_before)
        elif not_before is not None:
            not_before = absent_time(not_before, "notBefore", where)
        start: int | None = None
        end: int | None = None
        if not body.keys().isdisjoint(_START_END):  # most notifications carry neither
            # One start/end pair, spelt per event: system events, live migration, burstable.
            given = get("executeStartTime") or get("startTime") or get("intervalStart")
            start = parse_time(given) if type(given) is str else absent_time(
                given, "executeStartTime/startTime/intervalStart", where)
            given = get("executeFinishTime") or get("endTime") or get("intervalEnd")
            end = parse_time(given) if type(given) is str else absent_time(
                given, "executeFinishTime/endTime/intervalEnd", where)
    except TimeFormatError as exc:
        raise bad_time(body, _TIME_FIELDS, where, exc) from None

    copy_extras(top, attributes)
    _copy_body_extras(body, attributes)
    event = build("aliyun", source_format, code, "eventType", where, instance_id, event_time,
                  status, attributes)
    if disk and end is not None and event["phase"] == "executing":
        event["phase"] = "executed"  # a Stalled event ends as ...:Executing + executeFinishTime
    event["region"] = region
    event["account_id"] = account
    event["notification_id"] = note
    event["vendor_event_id"] = event_id
    event["level"] = level
    event["current_state"] = state
    event["publish_time"] = publish
    event["not_before"] = not_before
    event["start_time"] = start
    event["end_time"] = end
    return [event]




def _split_name(name: str, prefixes: int) -> tuple[str | None, str | None]:
    """(event code, status suffix) of ``[svc:]Instance:Code[:Status]``, after ``prefixes``."""
    parts = name.split(":", prefixes + 2)
    if len(parts) == 1:  # a bare code, no resource prefix
        return parts[0], None
    code = parts[prefixes + 1] if len(parts) > prefixes + 1 else None
    status = parts[prefixes + 2] if len(parts) > prefixes + 2 else None
    return code or None, status or None


def _resource_of(name: str, prefixes: int) -> str | None:
    """The resource kind ``name`` starts with (``Instance``, ``Disk``, ``Snapshot``), if any."""
    parts = name.split(":", prefixes + 1)
    return parts[prefixes] or None if len(parts) > prefixes + 1 else None


def _arn_resource(arn: str | None) -> str | None:
    """The resource kind of an ECS ARN (``instance``, ``snapshot``, ...), if it has one."""
    if not arn:
        return None
    kind, slash, _ = arn.rpartition(":")[2].partition("/")
    return kind or None if slash else None


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
