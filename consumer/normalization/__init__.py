"""Normalization: raw vendor record bytes -> canonical InstanceEvents (pure: no Kafka).

``detect`` recognises the vendor and envelope from the payload itself, one module per vendor
(``jdcloud``, ``aliyun``, ``aws``, ``gcp``) maps its fields, ``fields`` holds what they share
(field checks, the event builder, the checks every event passes), ``operations`` is the table
from vendor codes to canonical operations, ``timeparse`` reads the vendors' timestamps.

:class:`Normalizer` is the face the runtime and the CLI use. For any input whatsoever it returns
events or raises a :class:`consumer.errors.RejectedEvent` subclass whose ``reason`` names the
DLQ bucket (:class:`consumer.errors.OutOfScope` is the one that is skipped, not dead-lettered):
a poison record must never take the consumer down. The Kafka runtime sets ``source``
(topic/partition/offset).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import tzinfo
from operator import itemgetter
from typing import Final

import orjson

from consumer.errors import (
    InvalidEvent,
    InvalidTime,
    MalformedJson,
    NotAnObject,
    PayloadTooLarge,
    RejectedEvent,
)
from consumer.model import InstanceEvent
from consumer.normalization.detect import detect
from consumer.normalization.fields import (
    IDENTIFIERS,
    MAX_FUTURE_MS,
    MAX_ID_LENGTH,
    MIN_EVENT_TIME_MS,
    check_event,
)
from consumer.normalization.timeparse import DEFAULT_ZONE, TimeParser

DEFAULT_MAX_PAYLOAD_BYTES: Final = 1 << 20
_identifiers: Final = itemgetter(*IDENTIFIERS)
_SHORT_IDS: Final = MAX_ID_LENGTH + len(IDENTIFIERS) - 1  # every one short enough, separators

Clock = Callable[[], int]


def _wall_ms() -> int:
    return time.time_ns() // 1_000_000


class Normalizer:
    """Raw bytes -> InstanceEvents, configured once per process.

    ``default_timezone`` is the zone of vendor times that carry none (JD's ``eventTime``);
    ``max_payload_bytes`` bounds what is parsed at all (larger records go to the DLQ as
    ``too_large`` before any work is spent on them). Every time of an accepted event lies between
    ``min_event_time_ms`` (default 2000-01-01) and ``max_future_ms`` after ``clock()`` (default a
    year): anything else is rejected ``invalid_time``, so every record downstream decodes.
    """

    __slots__ = ("_clock", "_highest", "_parse_time", "_times", "max_future_ms",
                 "max_payload_bytes", "min_event_time_ms")

    def __init__(self, *, default_timezone: str | tzinfo = DEFAULT_ZONE,
                 max_payload_bytes: int = DEFAULT_MAX_PAYLOAD_BYTES,
                 min_event_time_ms: int = MIN_EVENT_TIME_MS, max_future_ms: int = MAX_FUTURE_MS,
                 clock: Clock = _wall_ms) -> None:
        self._times = TimeParser(default_timezone, earliest_ms=min_event_time_ms,
                                 max_future_ms=max_future_ms, clock=clock)
        self._parse_time = self._times.parse
        self._clock = clock
        self.max_payload_bytes = max_payload_bytes
        self.min_event_time_ms = min_event_time_ms
        self.max_future_ms = max_future_ms
        self._highest = clock() + max_future_ms

    @property
    def default_timezone(self) -> tzinfo:
        return self._times.local_zone

    def normalize_all(self, raw: bytes | bytearray | memoryview,
                      received_ms: int | None = None) -> list[InstanceEvent]:
        """One raw record -> its events (usually one; an AWS Health event naming two instances
        gives two); raises only RejectedEvent subclasses.

        ``received_ms`` is the record's Kafka timestamp: the event time of a payload that has
        none (Alibaba's debug shape). Without it the clock stands in (offline: when the line was
        read); the event's attributes say which.
        """
        try:
            size = len(raw)
        except TypeError:
            raise MalformedJson(f"payload must be bytes, got {type(raw).__name__}") from None
        if size > self.max_payload_bytes:
            raise PayloadTooLarge(f"payload of {size} bytes exceeds the limit of "
                                  f"{self.max_payload_bytes} bytes")
        try:
            obj = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            raise MalformedJson(f"not valid JSON: {exc}") from None
        except Exception as exc:  # e.g. a non-bytes-like argument
            raise MalformedJson(f"not valid JSON: {type(exc).__name__}: {exc}") from None
        # ``normalize_obj`` repeated rather than called, with the common case of ``check_event``
        # inline (all identifiers short, printable and without spaces, the event time in range):
        # two calls less per record on the hot path
        if type(obj) is not dict:
            raise NotAnObject(f"payload must be a JSON object, got {_json_type(obj)}")
        try:
            events = detect(obj)(obj, self._parse_time, received_ms)
            for event in events:
                a, b, c, d, e, f = _identifiers(event)
                joined = f"{a}|{b}|{c}|{d}|{e}|{f}"
                if not (len(joined) <= _SHORT_IDS and joined.isprintable() and " " not in joined
                        and self.min_event_time_ms <= event["event_time"] <= self._highest):
                    self._check(event)
        except RejectedEvent:
            raise
        except Exception as exc:  # a poison record must not crash the stage
            raise InvalidEvent(f"cannot normalize: {type(exc).__name__}: {exc}") from exc
        return events

    def normalize_obj(self, obj: object, received_ms: int | None = None) -> list[InstanceEvent]:
        """An already-parsed JSON value -> its events; raises only RejectedEvent subclasses."""
        if type(obj) is not dict:
            raise NotAnObject(f"payload must be a JSON object, got {_json_type(obj)}")
        try:
            events = detect(obj)(obj, self._parse_time, received_ms)
            for event in events:
                self._check(event)
        except RejectedEvent:
            raise
        except Exception as exc:  # a poison record must not crash the stage
            raise InvalidEvent(f"cannot normalize: {type(exc).__name__}: {exc}") from exc
        return events

    def _check(self, event: InstanceEvent) -> None:
        """:func:`check_event`, against the last bound on future times read from the clock and,
        if the event is beyond it, against a fresh one: the bound only grows, so one that admits
        the event is as good as a fresh one, and the clock is read only when a time comes close
        to it."""
        try:
            check_event(event, self.min_event_time_ms, self._highest)
        except InvalidTime:
            self._highest = self._clock() + self.max_future_ms
            check_event(event, self.min_event_time_ms, self._highest)

    def normalize(self, raw: bytes | bytearray | memoryview,
                  received_ms: int | None = None) -> InstanceEvent:
        """A record that holds exactly one event -> that event (tests, single-event callers).

        A record naming several instances is rejected here rather than cut to its first event:
        callers that can meet AWS Health events use :meth:`normalize_all`.
        """
        events = self.normalize_all(raw, received_ms)
        if len(events) != 1:
            raise InvalidEvent(f"the record holds {len(events)} events; use normalize_all")
        return events[0]


def _json_type(value: object) -> str:
    if isinstance(value, list):
        return "an array"
    if isinstance(value, str):
        return "a string"
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    return type(value).__name__


__all__ = ["DEFAULT_MAX_PAYLOAD_BYTES", "Normalizer", "detect"]
