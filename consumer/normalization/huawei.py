"""Huawei Cloud ECS events from Cloud Eye (CES, ``SYS.ECS``) -> InstanceEvents.

Shape (CES "Querying Details of an Event"): ``event_id`` (per notification: it cannot pair),
``event_name``, ``event_source`` ``SYS.ECS``, ``time`` ms since the epoch, ``detail{content (a
JSON string), resource_id, resource_name, event_state normal|warning|incident, event_level,
event_type, sub_event_type OPS|PLAN, dimensions}``. The instance is ``resource_id`` (in the
documentation the ``dimensions`` id differs from it and repeats across servers). Delivered
directly, or as the JSON string ``message`` of an SMN HTTP(S) notification
(``{"type": "Notification", "message": ...}``).

Codes: planned events ``<type>_<state>`` (``instance_redeploy_scheduled``,
``localdisk_recovery_executing``) -> code ``<type>``, status the state; ``startAutoRecovery`` /
``endAutoRecovery`` / ``faultAutoRecovery`` -> ``autoRecovery`` executing / executed / failed;
``liveMigrationStarted|Completed|Failed`` -> ``liveMigration``. Each operation has one code, so
the correlator pairs its notifications per resource in time order. The rest are single notices
under their own name; an unknown name is normalized mechanically.
"""

from __future__ import annotations

from typing import Final

import orjson

from consumer.errors import InvalidEvent, OutOfScope, UnknownVendor
from consumer.model import InstanceEvent, Phase
from consumer.normalization.fields import (
    JsonObject,
    TimeParse,
    attr_value,
    build,
    embedded_json,
    epoch_or_time,
    required_object,
    required_text,
    text,
)
from consumer.normalization.operations import phase_of

SOURCE: Final = "SYS.ECS"
SOURCE_CES: Final = "huawei.ces"
SOURCE_SMN: Final = "huawei.smn"

_PLANNED: Final = ("instance_redeploy", "instance_migrate", "instance_resize", "instance_reboot",
                   "instance_stop", "localdisk_recovery")
_AUTO_RECOVERY: Final[dict[str, Phase]] = {"start": "executing", "end": "executed",
                                           "fault": "failed"}
_LIVE_MIGRATION: Final = "liveMigration"
_DETAIL_MAPPED: Final = frozenset({"resource_id", "event_level", "content"})


def split_name(name: str) -> tuple[str, str | None, Phase | None]:
    """(code, status, phase) of a CES event name (module doc)."""
    for planned in _PLANNED:
        if name.startswith(planned + "_"):
            state = name[len(planned) + 1:]
            return planned, state, phase_of(state)
    if name.endswith("AutoRecovery"):
        verb = name[: -len("AutoRecovery")]
        if verb in _AUTO_RECOVERY:
            return "autoRecovery", verb, _AUTO_RECOVERY[verb]
    if name.startswith(_LIVE_MIGRATION) and name != _LIVE_MIGRATION:
        state = name[len(_LIVE_MIGRATION):]
        return _LIVE_MIGRATION, state, phase_of(state)
    return name, None, None


def adapt_ces(obj: JsonObject, parse_time: TimeParse,
              received_ms: int | None = None) -> list[InstanceEvent]:
    """A Cloud Eye event as the CES API and its forwarders give it."""
    return [_adapt(obj, parse_time, SOURCE_CES, {})]


def adapt_smn(obj: JsonObject, parse_time: TimeParse,
              received_ms: int | None = None) -> list[InstanceEvent]:
    """An SMN HTTP(S) notification whose ``message`` is a Cloud Eye event as a JSON string."""
    inner = embedded_json(obj, "message", "huawei", "SMN")
    if type(inner) is not dict or inner.get("event_source") != SOURCE:
        raise UnknownVendor("huawei: an SMN notification whose message is not a SYS.ECS event")
    attributes = {f"smn.{key}": kept for key in ("message_id", "topic_urn", "timestamp", "subject")
                  if (kept := attr_value(obj.get(key))) is not None}
    return [_adapt(inner, parse_time, SOURCE_SMN, attributes)]


def _adapt(obj: JsonObject, parse_time: TimeParse, source_format: str,
           attributes: dict[str, str]) -> InstanceEvent:
    where = "huawei: "
    if obj.get("event_source") != SOURCE:
        raise OutOfScope(f"huawei: event source {str(obj.get('event_source'))[:40]!r} is not "
                         "SYS.ECS", vendor="huawei")
    name = required_text(obj.get("event_name"), "event_name", where)
    detail = required_object(obj, "detail", where)
    instance = required_text(detail.get("resource_id"), "resource_id", "huawei: detail.")
    event_time = epoch_or_time(obj.get("time"), "time", where, parse_time)
    if event_time is None:
        raise InvalidEvent(f"{where}time is required")
    code, status, phase = split_name(name)
    attributes["event_name"] = name
    for key, value in detail.items():
        if key not in _DETAIL_MAPPED and (kept := attr_value(value)) is not None:
            attributes[key] = kept
    content = detail.get("content")
    if type(content) is str and content:
        attributes["content"] = content
        try:
            parsed = orjson.loads(content)
        except orjson.JSONDecodeError:
            parsed = None
        if type(parsed) is dict:
            for key, value in parsed.items():
                if (kept := attr_value(value)) is not None:
                    attributes.setdefault(f"content.{key}", kept)
    event = build("huawei", source_format, code, "event_name", where, instance, event_time,
                  status, attributes)
    event["phase"] = phase
    if "content.not_before" in attributes:
        event["not_before"] = epoch_or_time(attributes["content.not_before"], "not_before",
                                            "huawei: detail.content.", parse_time)
    event["level"] = text(detail.get("event_level"), "event_level", "huawei: detail.")
    event["notification_id"] = text(obj.get("event_id"), "event_id", where)
    return event
