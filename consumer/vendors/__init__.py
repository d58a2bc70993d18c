"""Vendor adapters: pure functions from a parsed JSON object to a canonical InstanceEvent.

Each vendor module exposes ``adapt_*(obj, parse_time) -> InstanceEvent`` per envelope it
understands. ``parse_time`` is injected (:meth:`consumer.timeparse.TimeParser.parse`) so the
configured local zone reaches JD's zone-less times without globals. Adapters raise
:class:`consumer.errors.InvalidEvent` naming the offending field; the normalizer turns anything
else they might raise into InvalidEvent too. Types are checked strictly, because a wrong type is
a producer bug the DLQ should name.

This is the hot path, so adapters read fields with ``dict.get`` and test the common case
inline (``type(v) is str and v``); the helpers here are the slow paths that decide between
"absent" (None) and "wrong" (InvalidEvent), and the attribute copier.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Set
from typing import Final, NoReturn, TypeAlias

import orjson

from consumer.errors import InvalidEvent
from consumer.model import InstanceEvent
from consumer.operations import mechanical_operation
from consumer.timeparse import TimeFormatError

JsonObject: TypeAlias = dict[str, object]
TimeParse: TypeAlias = Callable[[str], int]
Adapter: TypeAlias = Callable[[JsonObject, TimeParse], InstanceEvent]

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
        except TimeFormatError as exc:
            raise InvalidEvent(f"{where}{key}: {exc}") from None
    return absent_time(value, key, where)


def unknown_operation(code: str, key: str, where: str) -> str:
    """Operation name for a code the table does not know (known=False). A code is a short
    dotted word; anything longer than MAX_CODE_LENGTH is garbage, and would otherwise become an
    unbounded operation name and metrics label."""
    if len(code) > MAX_CODE_LENGTH:
        raise InvalidEvent(f"{where}{key} is not an event code ({len(code)} characters, at "
                           f"most {MAX_CODE_LENGTH})")
    return mechanical_operation(code)


def bad_time(obj: JsonObject, keys: Iterable[str], where: str,
             exc: TimeFormatError) -> InvalidEvent:
    """The InvalidEvent for a TimeFormatError raised while parsing several fields at once:
    finds which of ``keys`` held the offending text, so the DLQ still names the field."""
    for key in keys:
        if obj.get(key) == exc.text:
            return InvalidEvent(f"{where}{key}: {exc}")
    return InvalidEvent(f"{where.rstrip('. ')}: {exc}")


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
