"""What every vendor module shares: field checks, the event builder, the checks on the result.

A vendor module exposes ``adapt_*(obj, parse_time, received_ms) -> list[InstanceEvent]`` per
envelope it understands (one raw record may name several instances, hence a list).
``parse_time`` is injected (:meth:`TimeParser.parse`) so the configured local zone reaches JD's
zone-less times without globals; ``received_ms`` is when the record arrived (its Kafka
timestamp), the event time of last resort. Adapters raise
:class:`consumer.errors.InvalidEvent` naming the offending field, or
:class:`consumer.errors.OutOfScope`; the normalizer turns anything else they might raise into
InvalidEvent. Types are checked strictly, because a wrong type is a producer bug the DLQ should
name.

This is the hot path: :func:`text` and :func:`build` are the one way to read a string field and
to make an event; the other helpers are the slow paths that decide between "absent" (None) and
"wrong" (InvalidEvent). :func:`check_event` is applied by the normalizer to every event any
adapter returns, so no vendor module can let an undecodable time or a hostile identifier through.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Set
from operator import itemgetter
from typing import Final, NoReturn, TypeAlias

import orjson

from consumer.errors import InvalidEvent, InvalidTime, RejectedEvent, UnknownVendor
from consumer.model import InstanceEvent, Vendor
from consumer.normalization.operations import OPERATIONS, STATUS_PHASES, mechanical_operation, phase_of
from consumer.normalization.timeparse import TimeFormatError, TimeRangeError

JsonObject: TypeAlias = dict[str, object]
TimeParse: TypeAlias = Callable[[str], int]
Adapter: TypeAlias = Callable[[JsonObject, TimeParse, "int | None"], list[InstanceEvent]]

MAX_CODE_LENGTH: Final = 128


def absent(value: object, key: str, where: str, expected: str = "a string") -> str | None:
    """Slow path of an optional field that is not a non-empty string: None when it is null or
    ``""``, InvalidEvent naming the field otherwise. (Typed ``str | None`` so that callers can
    assign it where the field would have been.)"""
    if value is None or value == "":
        return None
    raise InvalidEvent(f"{where}{key} must be {expected}, got {type(value).__name__}")


def absent_time(value: object, key: str, where: str) -> int | None:
    """:func:`absent` for a timestamp field."""
    absent(value, key, where, "a timestamp string")
    return None


def required(value: object, key: str, where: str, expected: str = "a string") -> NoReturn:
    """Slow path of a required field that is not what it must be."""
    if value is None or value == "":
        raise InvalidEvent(f"{where}{key} is required")
    raise InvalidEvent(f"{where}{key} must be {expected}, got {type(value).__name__}")


def required_object(obj: JsonObject, key: str, where: str) -> JsonObject:
    """``obj[key]``, which must be a JSON object."""
    value = obj.get(key)
    if type(value) is dict:
        return value
    required(value, key, where, "an object")


def time_or_none(value: object, key: str, where: str, parse: TimeParse) -> int | None:
    """Epoch ms of an optional timestamp field; None when null or empty."""
    if type(value) is str and value:
        try:
            return parse(value)
        except TimeRangeError as exc:
            raise InvalidTime(f"{where}{key}: {exc}") from None
        except TimeFormatError as exc:
            raise InvalidEvent(f"{where}{key}: {exc}") from None
    return absent_time(value, key, where)


def epoch_or_time(value: object, key: str, where: str, parse: TimeParse) -> int | None:
    """An optional time that is milliseconds since the epoch (a number or a string of digits,
    as Tencent and Huawei send) or a timestamp string; None when null or empty."""
    if type(value) is str and value.isdigit():
        value = int(value)
    if type(value) is int:
        if not MIN_EVENT_TIME_MS <= value <= _LATEST_EPOCH_MS:
            raise InvalidTime(f"{where}{key}: {value} ms since the epoch is out of range")
        return value
    return time_or_none(value, key, where, parse)


_LATEST_EPOCH_MS: Final = 4_102_444_800_000  # 2100-01-01: far beyond any event, inside Avro


def unknown_operation(code: str, key: str, where: str) -> str:
    """Operation name for a code the table does not know (known=False). A code is a short
    dotted word; anything longer than MAX_CODE_LENGTH is garbage, and would otherwise become an
    unbounded operation name and metrics label."""
    if len(code) > MAX_CODE_LENGTH:
        raise InvalidEvent(f"{where}{key} is not an event code ({len(code)} characters, at "
                           f"most {MAX_CODE_LENGTH})")
    return mechanical_operation(code)


def bad_time(obj: JsonObject, keys: Iterable[str], where: str,
             exc: TimeFormatError) -> RejectedEvent:
    """The InvalidEvent for a TimeFormatError raised while parsing several fields at once:
    finds which of ``keys`` held the offending text, so the DLQ still names the field."""
    kind = InvalidTime if isinstance(exc, TimeRangeError) else InvalidEvent
    for key in keys:
        if obj.get(key) == exc.text:
            return kind(f"{where}{key}: {exc}")
    return kind(f"{where.rstrip('. ')}: {exc}")


def attr_value(value: object) -> str | None:
    """A JSON value as an attribute string: strings verbatim, scalars in JSON spelling, objects
    and arrays as compact JSON (kept, not lost); None for null."""
    if type(value) is str:
        return value
    if value is None:
        return None
    return _encode(value)


def _encode(value: object) -> str:
    if value is True:
        return "true"
    if value is False:
        return "false"
    if type(value) is int or type(value) is float:
        return str(value)
    return orjson.dumps(value).decode()


ExtrasCopier: TypeAlias = Callable[[JsonObject, dict[str, str]], None]

MAX_KEY_PLANS: Final = 256


def extras_copier(mapped: Set[str]) -> ExtrasCopier:
    """A function ``copy(obj, into)`` that copies every field of ``obj`` not in ``mapped`` into
    the attribute map ``into``, in the payload's own order (so the same input always encodes to
    the same bytes).

    It remembers which keys are extra per key sequence: the payloads of one envelope share
    their keys, so the hot path loops over the few extra keys only (over nothing when every
    key is mapped) instead of testing every key. The memo is cleared when full, so odd payloads
    cannot grow it."""
    plans: dict[tuple[str, ...], tuple[str, ...]] = {}
    recall = plans.get

    def copy(obj: JsonObject, into: dict[str, str]) -> None:
        keys = tuple(obj)
        plan = recall(keys)
        if plan is None:
            plan = tuple(key for key in keys if key not in mapped)
            if len(plans) >= MAX_KEY_PLANS:
                plans.clear()
            plans[keys] = plan
        for key in plan:
            value = obj[key]
            if type(value) is str:
                into[key] = value
            elif value is not None:
                into[key] = _encode(value)

    return copy


def embedded_json(obj: JsonObject, key: str, vendor: str, envelope: str) -> object:
    """The document a notification envelope carries as a JSON string (SNS ``Message``, SMN
    ``message``). Not JSON: UnknownVendor, the envelope alone says nothing of an instance."""
    message = required_text(obj.get(key), key, f"{vendor}: {envelope} ")
    try:
        return orjson.loads(message)
    except orjson.JSONDecodeError:
        raise UnknownVendor(f"{vendor}: an {envelope} notification whose {key} is not JSON") from None


def text(value: object, key: str, where: str) -> str | None:
    """An optional string field: the string, None when null or ``""``, InvalidEvent otherwise."""
    if type(value) is str and value:
        return value
    return absent(value, key, where)


def required_text(value: object, key: str, where: str) -> str:
    """A required string field."""
    if type(value) is str and value:
        return value
    required(value, key, where)


_spec_of = OPERATIONS.get
_phase_of_status = STATUS_PHASES.get


def build(vendor: Vendor, source_format: str, code: str, code_key: str, where: str,
          instance_id: str, event_time: int, status: str | None,
          attributes: dict[str, str]) -> InstanceEvent:
    """A new event: the operation looked up from ``code`` (mechanical when the table does not
    know it), the phase from ``status`` in the vendors' shared vocabulary, every optional field
    None. The vendor module then sets what its payload has (``event["region"] = ...``)."""
    spec = _spec_of(code)
    return {
        "vendor": vendor,
        "instance_id": instance_id,
        "vendor_event_code": code,
        "operation": spec.operation if spec is not None else unknown_operation(code, code_key,
                                                                                where),
        "known": spec is not None,
        "phase": ((_phase_of_status(status) or phase_of(status)) if status is not None
                  else None),  # the vendors' spelling in one lookup, else any case
        "vendor_status": status,
        "event_time": event_time,
        "region": None,
        "account_id": None,
        "notification_id": None,
        "vendor_event_id": None,
        "level": None,
        "previous_state": None,
        "current_state": None,
        "publish_time": None,
        "not_before": None,
        "start_time": None,
        "end_time": None,
        "source_format": source_format,
        "attributes": attributes,
    }


ATTR_TIME_SOURCE: Final = "vmevents.event_time_source"
"""Attribute set when the payload carries no event time and the arrival time stands in: its
value says which (``record_timestamp``: the Kafka record's; ``read_time``: when it was read)."""


def arrival_time(received_ms: int | None, attributes: dict[str, str]) -> int:
    """The event time of a payload that has none: the record's timestamp, else the clock now;
    the attributes say which, so nobody mistakes it for the vendor's time."""
    if received_ms is not None and received_ms > 0:
        attributes[ATTR_TIME_SOURCE] = "record_timestamp"
        return received_ms
    attributes[ATTR_TIME_SOURCE] = "read_time"
    return time.time_ns() // 1_000_000


# -- checks on every event, whatever the vendor --------------------------------------------

MAX_ID_LENGTH: Final = 128
MIN_EVENT_TIME_MS: Final = 946_684_800_000  # 2000-01-01T00:00:00Z
MAX_FUTURE_MS: Final = 366 * 86_400_000
_ID_FIELDS: Final = ("notification_id", "vendor_event_id", "account_id", "region")


def bad_identifier(value: str) -> str | None:
    """Why ``value`` cannot be an identifier, or None when it can: at most 128 characters, not
    blank, nothing unprintable (``str.isprintable`` refuses control, bidi and other format
    characters, which would let a payload rewrite a terminal or a dashboard)."""
    if 0 < len(value) <= MAX_ID_LENGTH and value.isprintable() and not value.isspace():
        return None
    if len(value) > MAX_ID_LENGTH:
        return f"is {len(value)} characters long (at most {MAX_ID_LENGTH})"
    if not value.strip():
        return "is blank"
    return "holds control or format characters"


IDENTIFIERS: Final = ("instance_id", "vendor_event_code", *_ID_FIELDS)
_get_ids: Final = itemgetter(*IDENTIFIERS)
_FAST_JOINED_LENGTH: Final = MAX_ID_LENGTH + len(IDENTIFIERS) - 1  # all short, with separators


def check_event(event: InstanceEvent, lowest: int, highest: int) -> None:
    """Raise InvalidEvent for an identifier no consumer should have to handle, and InvalidTime
    for an event time outside ``[lowest, highest]`` (epoch ms). The other times come from the
    vendors' strings, which the :class:`TimeParser` bounds alike; together, what passes decodes
    with any Avro reader and the shipped schemas.

    The common case is one string of all identifiers and a few C calls on it; the exact check
    (:func:`bad_identifier`) runs only when that fails or the string is long.
    """
    a, b, c, d, e, f = _get_ids(event)
    joined = f"{a}|{b}|{c}|{d}|{e}|{f}"  # None shows as "None": a valid identifier
    if not (len(joined) <= _FAST_JOINED_LENGTH and joined.isprintable() and " " not in joined):
        _check_identifiers(event)
    when = event["event_time"]
    if not lowest <= when <= highest:
        raise InvalidTime(f"{event['vendor']}: event_time {_shown(when)} is outside the accepted "
                          f"range {_shown(lowest)} .. {_shown(highest)}")


def _check_identifiers(event: InstanceEvent) -> None:
    for key in IDENTIFIERS:
        value = event[key]
        why = bad_identifier(value) if isinstance(value, str) else None
        if why is not None:
            raise InvalidEvent(f"{event['vendor']}: {key} {why}")


def _shown(ms: int) -> str:
    from consumer.jsonout import iso_ms

    try:
        return iso_ms(ms)
    except (ValueError, OverflowError, OSError):
        return f"{ms} ms since the epoch"
