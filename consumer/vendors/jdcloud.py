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
from consumer.operations import OPERATIONS, STATUS_PHASES, phase_of
from consumer.vendors import (
    JsonObject,
    TimeParse,
    absent,
    extras_copier,
    required,
    required_object,
    time_or_none,
    unknown_operation,
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
_spec_of = OPERATIONS.get
_phase_of_status = STATUS_PHASES.get
_copy_detail_extras = extras_copier(_DETAIL_MAPPED)
_copy_envelope_extras = extras_copier(_ENVELOPE_MAPPED)


def adapt_envelope(obj: JsonObject, parse_time: TimeParse) -> InstanceEvent:
    """The full cloud events envelope; ``detail`` holds the event."""
    where = "jdcloud: "
    detail = required_object(obj, "detail", where)
    region, pin, note = obj.get("region"), obj.get("pin"), obj.get("id")
    if type(region) is not str or not region:
        region = absent(region, "region", where)
    if type(pin) is not str or not pin:
        pin = absent(pin, "pin", where)
    if type(note) is not str or not note:
        note = absent(note, "id", where)
    attributes: dict[str, str] = {}
    _copy_envelope_extras(obj, attributes)
    event = _adapt(detail, "jdcloud: detail.", parse_time, attributes, obj)
    event["region"] = region
    event["account_id"] = pin
    event["notification_id"] = note
    event["source_format"] = SOURCE_ENVELOPE
    return event


def adapt_detail(obj: JsonObject, parse_time: TimeParse) -> InstanceEvent:
    """The bare event detail, as forwarded without the envelope."""
    return _adapt(obj, "jdcloud: ", parse_time, {}, None)


def _adapt(detail: JsonObject, where: str, parse_time: TimeParse, attributes: dict[str, str],
           envelope: JsonObject | None) -> InstanceEvent:
    get = detail.get
    code, state, instance_id = get("eventAction"), get("eventState"), get("instanceId")
    last, current = get("instanceLastState"), get("instanceCurrentState")
    if type(code) is not str or not code:
        required(code, "eventAction", where)
    if type(state) is not str or not state:
        state = absent(state, "eventState", where)
    if type(last) is not str or not last:
        last = absent(last, "instanceLastState", where)
    if type(current) is not str or not current:
        current = absent(current, "instanceCurrentState", where)
    if type(instance_id) is not str or not instance_id:
        instance_id = absent(instance_id, "instanceId", where)
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
    spec = _spec_of(code)
    return {
        "vendor": "jdcloud",
        "instance_id": instance_id,
        "vendor_event_code": code,
        "operation": (spec.operation if spec is not None
                      else unknown_operation(code, "eventAction", where)),
        "known": spec is not None,
        "phase": ((_phase_of_status(state) or phase_of(state)) if state is not None
                  else None),  # the vendors' spelling in one lookup, else any case
        "vendor_status": state,
        "event_time": event_time,
        "region": None,
        "account_id": None,
        "notification_id": None,
        "vendor_event_id": None,
        "level": None,
        "previous_state": last,
        "current_state": current,
        "publish_time": None,
        "not_before": None,
        "start_time": None,
        "end_time": None,
        "source_format": SOURCE_DETAIL,
        "attributes": attributes,
    }


def _first_resource(envelope: JsonObject) -> str | None:
    resources = envelope.get("resources")
    if type(resources) is list and resources:
        first = resources[0]
        if type(first) is str and first:
            return first
    return None
