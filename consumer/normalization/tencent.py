"""Tencent Cloud CVM events from EventBridge -> InstanceEvents.

Envelope (CloudEvents-like, ``source`` ``cvm.cloud.tencent``): ``type``
``cvm:ErrorEvent:<Name>`` or ``cvm:OperationEvent:<Name>``, ``subject`` the instance (``ins-...``;
a doc sample spells it ``subjuect``, another uses a placeholder, so ``data.instanceId`` wins
when it is an ``ins-`` id), ``time`` ms since the epoch as a number or a string (the field table
says ``timer``), ``region`` (``ap-guangzhou``), ``status`` ``1`` abnormal / ``0`` resolved / ``-``,
``data{appId, instanceId, projectId, dimensions, additionalMsg}``.

Names come in two spellings (``PingUnreachable``, ``ping_unreachable``): snake case is read as
its CamelCase form. The repair families (InstanceRunningRisks, InstanceRunningAbnormally,
InstanceDiskError, InstanceNetworkError, with or without ``Instance``) end in their phase
(``Inquiring|Executing|Executed|Avoided|Canceled``): the code is the family, the suffix its
status. PingUnreachable pairs by status (1 -> executing, 0 -> executed); the other names are
single notices with the status kept. An unknown name is normalized mechanically.
"""

from __future__ import annotations

from typing import Final

from consumer.errors import InvalidEvent, OutOfScope
from consumer.model import InstanceEvent, Phase
from consumer.normalization.fields import (
    JsonObject,
    TimeParse,
    attr_value,
    build,
    epoch_or_time,
    required_text,
    text,
)
from consumer.normalization.operations import phase_of

SOURCE: Final = "cvm.cloud.tencent"
SOURCE_EVENTBRIDGE: Final = "tencent.eventbridge"

_TYPE_PREFIXES: Final = ("cvm:ErrorEvent:", "cvm:OperationEvent:")
_FAMILIES: Final = ("RunningRisks", "RunningAbnormally", "DiskError", "NetworkError")
_SUFFIXES: Final = ("Inquiring", "Executing", "Executed", "Avoided", "Canceled")
_STATUS_PHASES: Final[dict[str, dict[str, Phase]]] = {
    "PingUnreachable": {"1": "executing", "0": "executed"},
}
_MAPPED: Final = frozenset({"instanceId", "appId"})


def event_name(kind: str) -> str:
    """``cvm:ErrorEvent:ping_unreachable`` -> ``PingUnreachable``; CamelCase names unchanged."""
    name = kind
    for prefix in _TYPE_PREFIXES:
        if kind.startswith(prefix):
            name = kind[len(prefix):]
            break
    if "_" in name or name.islower():
        name = "".join(word.capitalize() for word in name.split("_") if word)
    return name


def split_family(name: str) -> tuple[str, str | None]:
    """(code, status) of a repair-family name; (name, None) for any other."""
    for suffix in _SUFFIXES:
        if name.endswith(suffix):
            family = name[: -len(suffix)]
            bare = family.removeprefix("Instance")
            if bare in _FAMILIES:
                return "Instance" + bare, suffix
    return name, None


def adapt_eventbridge(obj: JsonObject, parse_time: TimeParse,
                      received_ms: int | None = None) -> list[InstanceEvent]:
    """A CVM event as an EventBridge target (CKafka, SCF, a webhook) receives it."""
    where = "tencent: "
    kind = required_text(obj.get("type"), "type", where)
    if not kind.startswith("cvm:"):
        raise OutOfScope(f"tencent: event type {kind[:80]!r} is not a CVM instance event",
                         vendor="tencent")
    data = obj.get("data")
    data = data if type(data) is dict else {}
    from_data = text(data.get("instanceId"), "instanceId", "tencent: data.")
    subject = text(obj.get("subject") or obj.get("subjuect"), "subject", where)
    instance = from_data if from_data is not None and from_data.startswith("ins-") else \
        subject or from_data
    if instance is None:
        raise InvalidEvent("tencent: subject or data.instanceId is required")
    time_key = "time" if "time" in obj else "timer"
    event_time = epoch_or_time(obj.get(time_key), time_key, where, parse_time)
    if event_time is None:
        raise InvalidEvent(f"{where}time is required")
    status = attr_value(obj.get("status"))
    code, suffix = split_family(event_name(kind))
    attributes: dict[str, str] = {"type": kind}
    for key, value in data.items():
        if key not in _MAPPED and (kept := attr_value(value)) is not None:
            attributes[key] = kept
    if status is not None:
        attributes["status"] = status
    event = build("tencent", SOURCE_EVENTBRIDGE, code, "type", where, instance, event_time,
                  suffix or status, attributes)
    if suffix is not None:
        event["phase"] = phase_of(suffix)
    else:
        event["phase"] = _STATUS_PHASES.get(code, {}).get(status or "")
    event["region"] = text(obj.get("region"), "region", where)
    event["account_id"] = attr_value(data.get("appId"))
    event["notification_id"] = text(obj.get("id"), "id", where)
    return [event]
