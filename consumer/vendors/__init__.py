"""Vendor adapters: pure functions from a parsed JSON object to a canonical InstanceEvent.

Each vendor module exposes ``adapt_*(obj, parse_time) -> InstanceEvent`` per envelope it
understands. ``parse_time`` is injected (a :class:`consumer.timeparse.TimeParser`) so the
configured local zone reaches JD's zone-less times without globals. Adapters raise
:class:`consumer.errors.InvalidEvent` naming the offending field; the normalizer turns anything
else they might raise into InvalidEvent too. This module holds the small field readers they
share: strict about types, because a wrong type is a producer bug the DLQ should name.
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from typing import TypeAlias

import orjson

from consumer.errors import InvalidEvent
from consumer.model import InstanceEvent
from consumer.timeparse import TimeFormatError

JsonObject: TypeAlias = dict[str, object]
TimeParse: TypeAlias = Callable[[str], int]
Adapter: TypeAlias = Callable[[JsonObject, TimeParse], InstanceEvent]


def _type_error(where: str, key: str, expected: str, value: object) -> InvalidEvent:
    return InvalidEvent(f"{where}{key} must be {expected}, got {type(value).__name__}")


def opt_str(obj: JsonObject, key: str, where: str) -> str | None:
    """``obj[key]`` when it is a non-empty string; None when absent, null or empty."""
    value = obj.get(key)
    if type(value) is str:
        return value or None
    if value is None:
        return None
    raise _type_error(where, key, "a string", value)


def req_str(obj: JsonObject, key: str, where: str) -> str:
    """``obj[key]``, which must be a non-empty string."""
    value = obj.get(key)
    if type(value) is str and value:
        return value
    if value is None or value == "":
        raise InvalidEvent(f"{where}{key} is required")
    raise _type_error(where, key, "a string", value)


def req_obj(obj: JsonObject, key: str, where: str) -> JsonObject:
    """``obj[key]``, which must be a JSON object."""
    value = obj.get(key)
    if type(value) is dict:
        return value
    if value is None:
        raise InvalidEvent(f"{where}{key} is required")
    raise _type_error(where, key, "an object", value)


def opt_time(obj: JsonObject, key: str, where: str, parse: TimeParse) -> int | None:
    """Epoch ms of the timestamp ``obj[key]``; None when absent, null or empty."""
    value = obj.get(key)
    if value is None or value == "":
        return None
    if type(value) is not str:
        raise _type_error(where, key, "a timestamp string", value)
    try:
        return parse(value)
    except TimeFormatError as exc:
        raise InvalidEvent(f"{where}{key}: {exc}") from None


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


def copy_extras(obj: JsonObject, mapped: Collection[str], into: dict[str, str]) -> None:
    """Copy every field of ``obj`` not in ``mapped`` into the attribute map ``into``."""
    for key, value in obj.items():
        if key not in mapped:
            if type(value) is str:
                into[key] = value
            elif value is not None:
                into[key] = _encode(value)
