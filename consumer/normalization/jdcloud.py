"""JD Cloud VM (云主机) event notifications -> InstanceEvent.

Two shapes arrive: the CloudEvents-style envelope of JD's cloud events service
(``detail``, ``detailType``, ``id``, ``pin``, ``region``, ``resources``, ``source: jcloud.vm``,
``time``, ``version``) and the bare ``detail`` (``eventAction``, ``eventState``, ``eventTime``,
``instanceId``, ...) that SMS/mail-style forwarders pass on, without region or account.

JD quirks handled here: ``eventTime`` is local time without a zone (the parser's configured
zone, Asia/Shanghai by default); the envelope ``time`` is a different instant (when the
notification was sent), kept as an attribute and used only when ``eventTime`` is missing;
``instanceLastState`` is ``""`` for the first state of a new instance (-> null); the document's
envelope example masks ``detail.instanceId`` but not ``resources`` - detail wins, as the
document's detail sections are the per-event contract.
"""

from __future__ import annotations

from typing import Final

from consumer.errors import InvalidEvent
from consumer.model import InstanceEvent
from consumer.normalization.fields import (
    JsonObject,
    TimeParse,
    absent,
    build,
    extras_copier,
    required,
    required_object,
    time_or_none,
)

SOURCE_ENVELOPE: Final = "jdcloud.envelope"
SOURCE_DETAIL: Final = "jdcloud.detail"

# Fields mapped to typed InstanceEvent fields; everything else goes to attributes verbatim.
_DETAIL_MAPPED: Final = frozenset({
    "eventAction", "eventState", "eventTime", "instanceId",
    "instanceLastState", "instanceCurrentState",
})
# ``source`` is the format marker (always jcloud.vm); ``time`` and ``resources`` stay attributes.
_ENVELOPE_MAPPED: Final = frozenset({"detail", "id", "pin", "region", "source"})
_copy_detail_extras = extras_copier(_DETAIL_MAPPED)
_copy_envelope_extras = extras_copier(_ENVELOPE_MAPPED)


def adapt_envelope(obj: JsonObject, parse_time: TimeParse,
                   received_ms: int | None = None) -> list[InstanceEvent]:
    """The full cloud events envelope; ``detail`` holds the event."""
    where = "jdcloud: "
    detail = required_object(obj, "detail", where)
    region = v if type(v := obj.get("region")) is str and v else absent(v, "region", where)
    pin = v if type(v := obj.get("pin")) is str and v else absent(v, "pin", where)
    note = v if type(v := obj.get("id")) is str and v else absent(v, "id", where)
    attributes: dict[str, str] = {}
    _copy_envelope_extras(obj, attributes)
    event = _adapt(detail, "jdcloud: detail.", parse_time, attributes, obj)
    event["region"] = region
    event["account_id"] = pin
    event["notification_id"] = note
    event["source_format"] = SOURCE_ENVELOPE
    return [event]


def adapt_detail(obj: JsonObject, parse_time: TimeParse,
                 received_ms: int | None = None) -> list[InstanceEvent]:
    """The bare event detail, as forwarded without the envelope."""
    return [_adapt(obj, "jdcloud: ", parse_time, {}, None)]


def _adapt(detail: JsonObject, where: str, parse_time: TimeParse, attributes: dict[str, str],
           envelope: JsonObject | None) -> InstanceEvent:
    get = detail.get
    code = v if type(v := get("eventAction")) is str and v else required(v, "eventAction", where)
    state = v if type(v := get("eventState")) is str and v else absent(v, "eventState", where)
    instance_id = v if type(v := get("instanceId")) is str and v else absent(v, "instanceId",
                                                                             where)
    if instance_id is None:
        if envelope is not None:
            instance_id = _first_resource(envelope)
        if instance_id is None:
            raise InvalidEvent(f"{where}instanceId is required")

    event_time = time_or_none(get("eventTime"), "eventTime", where, parse_time)
    if event_time is None:
        if envelope is not None:
            event_time = time_or_none(envelope.get("time"), "time", "jdcloud: ", parse_time)
        if event_time is None:
            raise InvalidEvent(f"{where}eventTime is required")

    _copy_detail_extras(detail, attributes)
    event = build("jdcloud", SOURCE_DETAIL, code, "eventAction", where, instance_id, event_time,
                  state, attributes)
    last, current = get("instanceLastState"), get("instanceCurrentState")
    event["previous_state"] = last if type(last) is str and last else absent(
        last, "instanceLastState", where)
    event["current_state"] = current if type(current) is str and current else absent(
        current, "instanceCurrentState", where)
    return event


def _first_resource(envelope: JsonObject) -> str | None:
    resources = envelope.get("resources")
    if type(resources) is list and resources:
        first = resources[0]
        if type(first) is str and first:
            return first
    return None
