"""The correlator's state: open operations and markers of finished ones, and their changelog form.

Changelog values are JSON (orjson), not Avro. The changelog is private to this service (only the
correlator that wrote a partition's state ever reads it back), so it is not a contract that needs
a registry; JSON is self-describing, lets a new field be added by reading it with ``.get`` and a
default, costs no schema lookup on restore, and can be read with any console consumer when
debugging a stuck operation. ``v`` is the format version.

Changelog keys: ``p|<key>`` holds an open operation, ``d|<key>`` a finished-operation marker,
``b|<t>|<rank>|<digest>`` a notification waiting in the reorder buffer (see
:func:`encode_notification`), and ``w|`` the partition's event-time watermark.
"""

from __future__ import annotations

from enum import Enum
from typing import Any, Final, cast

import orjson

from consumer.correlation.outcome import OutcomeKind
from consumer.model import InstanceEvent, SourceRef, Vendor

FORMAT_VERSION: Final = 1
PENDING_PREFIX: Final = "p|"
DONE_PREFIX: Final = "d|"
BUFFER_PREFIX: Final = "b|"
WATERMARK_KEY: Final = "w|"
MAX_SPANS: Final = 4
"""Finished operations remembered per key (their time spans), to tell stragglers of each from
a late older operation."""
MAX_REFS: Final = 16
"""At most this many notification ids and source coordinates are kept per operation."""
_NO_ATTRIBUTES: Final[dict[str, str]] = {}
"""Shared empty map: never mutated (attributes are replaced, not updated)."""


class OpState(Enum):
    """Where an open operation stands. ``NONE`` (no open operation) is the table's start row."""

    NONE = "none"
    ANNOUNCED = "announced"  # Scheduled or Inquiring seen, not started
    STARTED = "started"  # Executing (or an opening state change) seen, no end yet
    ENDED = "ended"  # an end seen without its start: held for the grace window

    # Members are singletons, so identity hashing is exact; Enum's own __hash__ hashes the name
    # in Python, and (state, input) is looked up once per event.
    __hash__ = object.__hash__


_NONE: Final = OpState.NONE  # a global: reading the member off the enum class costs ~1k instructions
_STATE_VALUES: Final = {state: state.value for state in OpState}
"""``OpState.value`` without the enum's Python-level property, once per changelog write."""


class PendingOp:
    """One open operation. Mutable, owned by the correlator; ``slots`` keep it small and fast."""

    __slots__ = (
        "account_id", "attributes", "by_id", "code", "deadline", "end_at", "end_kind",
        "from_state", "instance_id", "key", "known", "last_when", "nids", "not_before",
        "notice_at", "operation", "region", "sources", "start_at", "state", "timeout_ms",
        "to_state", "vendor", "vendor_event_id",
    )

    def __init__(self, key: str, event: InstanceEvent, operation: str, by_id: bool,
                 when: int) -> None:
        self.key = key
        self.by_id = by_id
        self.state = _NONE
        self.vendor: Vendor = event["vendor"]
        self.instance_id = event["instance_id"]
        self.code = event["vendor_event_code"]
        self.operation = operation
        self.known = event["known"]
        self.region = event["region"]
        self.account_id = event["account_id"]
        self.vendor_event_id = event["vendor_event_id"]
        self.notice_at: int | None = None
        self.not_before: int | None = None
        self.start_at: int | None = None
        self.end_at: int | None = None
        self.end_kind: OutcomeKind | None = None
        self.from_state: str | None = None
        self.to_state: str | None = None
        self.last_when = when
        self.deadline = 0
        self.timeout_ms = 0
        self.nids: list[str] = []
        self.sources: list[SourceRef] = []
        self.attributes: dict[str, str] = _NO_ATTRIBUTES

    def absorb(self, event: InstanceEvent, when: int) -> None:
        """Take what one more notification adds: ids, coordinates, attributes, notice times.

        Attributes are shared with the event until a second notification brings more (events
        are never mutated after normalization), so the common case copies nothing.
        """
        attrs = event["attributes"]
        if attrs:
            self.attributes = {**self.attributes, **attrs} if self.attributes else attrs
        nid, nids = event["notification_id"], self.nids
        if nid is not None and nid not in nids and len(nids) < MAX_REFS:
            nids.append(nid)
        src, sources = event.get("source"), self.sources
        if src is not None and len(sources) < MAX_REFS:
            sources.append(src)
        if when > self.last_when:  # noqa: PLR1730 - max() costs ~1k instructions per event more
            self.last_when = when
        if self.region is None:
            self.region = event["region"]
        if self.account_id is None:
            self.account_id = event["account_id"]
        nb = event["not_before"]
        if nb is not None:  # a reschedule repeats the notice with a new notBefore: latest wins
            self.not_before = nb
            if self.notice_at is None:
                self.notice_at = event["publish_time"]

    def encode(self) -> bytes:
        return orjson.dumps({
            "v": FORMAT_VERSION, "state": _STATE_VALUES[self.state], "by_id": self.by_id,
            "vendor": self.vendor, "instance_id": self.instance_id, "code": self.code,
            "operation": self.operation, "known": self.known, "region": self.region,
            "account_id": self.account_id, "vendor_event_id": self.vendor_event_id,
            "notice_at": self.notice_at, "not_before": self.not_before,
            "start_at": self.start_at, "end_at": self.end_at, "end_kind": self.end_kind,
            "from_state": self.from_state, "to_state": self.to_state,
            "last_when": self.last_when, "deadline": self.deadline,
            "timeout_ms": self.timeout_ms, "nids": self.nids, "sources": self.sources,
            "attributes": self.attributes,
        })

    @classmethod
    def decode(cls, key: str, value: bytes) -> PendingOp:
        d: dict[str, Any] = orjson.loads(value)
        op = cls.__new__(cls)
        op.key = key
        op.state = OpState(d["state"])
        op.by_id = d["by_id"]
        op.vendor = d["vendor"]
        op.instance_id = d["instance_id"]
        op.code = d["code"]
        op.operation = d["operation"]
        op.known = d.get("known", True)
        op.region = d.get("region")
        op.account_id = d.get("account_id")
        op.vendor_event_id = d.get("vendor_event_id")
        op.notice_at = d.get("notice_at")
        op.not_before = d.get("not_before")
        op.start_at = d.get("start_at")
        op.end_at = d.get("end_at")
        op.end_kind = cast("OutcomeKind | None", d.get("end_kind"))
        op.from_state = d.get("from_state")
        op.to_state = d.get("to_state")
        op.last_when = d["last_when"]
        op.deadline = d["deadline"]
        op.timeout_ms = d.get("timeout_ms", 0)
        op.nids = d.get("nids", [])
        op.sources = d.get("sources", [])
        op.attributes = d.get("attributes", {})
        return op

    def as_dict(self) -> dict[str, Any]:
        """Plain view for tests and debugging (the changelog form, decoded)."""
        out: dict[str, Any] = orjson.loads(self.encode())
        return out


class DoneMarker:
    """Memory of a finished operation, so late duplicates and stragglers produce nothing.

    ``first`` and ``last`` are the earliest and latest vendor times of the operation; ``older``
    holds the (first, last) spans of up to ``MAX_SPANS - 1`` operations finished before it on the
    key. On a key without a vendor event id, a notification inside a span is a straggler of that
    operation; one outside every span belongs to another operation that arrived late, and is
    applied. ``open_end`` says it finished
    without an end notification (timed_out, superseded, evicted), so one later end on the same
    key is that operation's late end: ``start``, ``notice`` and ``from_state`` are kept for the
    outcome that end completes. ``by_id``: the key holds a vendor event id (or is a single
    notification's exact key), so anything on it belongs to the finished operation. ``expires``
    is in event time (compared with the watermark).
    """

    __slots__ = ("by_id", "expires", "first", "from_state", "last", "notice", "older", "open_end",
                 "start")

    def __init__(self, first: int, last: int, open_end: bool, by_id: bool, expires: int,
                 start: int | None = None, notice: int | None = None,
                 from_state: str | None = None, older: tuple[int, ...] = ()) -> None:
        self.first = first
        self.last = last
        self.older = older
        self.open_end = open_end
        self.by_id = by_id
        self.expires = expires
        self.start = start
        self.notice = notice
        self.from_state = from_state

    def copy(self) -> DoneMarker:
        return DoneMarker(self.first, self.last, self.open_end, self.by_id, self.expires,
                          self.start, self.notice, self.from_state, self.older)

    def covers(self, when: int, slack: int) -> bool:
        """Whether ``when`` falls inside a remembered operation (its start ``slack`` early)."""
        if self.first - slack <= when <= self.last:
            return True
        older = self.older
        return any(older[i] - slack <= when <= older[i + 1] for i in range(0, len(older), 2))

    def spans(self) -> tuple[int, ...]:
        """Every remembered span, flat, newest first."""
        return (self.first, self.last, *self.older)

    def encode(self) -> bytes:
        d: dict[str, Any] = {"v": FORMAT_VERSION, "first": self.first, "last": self.last,
                             "open_end": self.open_end, "by_id": self.by_id,
                             "expires": self.expires}
        if self.open_end:  # only an operation without its end needs what its late end completes
            d["start"], d["notice"], d["from_state"] = self.start, self.notice, self.from_state
        if self.older:
            d["older"] = self.older
        return orjson.dumps(d)

    @classmethod
    def decode(cls, value: bytes) -> DoneMarker:
        d: dict[str, Any] = orjson.loads(value)
        return cls(d.get("first", d["last"]), d["last"], d.get("open_end", False),
                   d.get("by_id", False), d["expires"], d.get("start"), d.get("notice"),
                   d.get("from_state"), tuple(d.get("older", ())))

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = orjson.loads(self.encode())
        del out["v"]
        if "older" in out:
            out["older"] = tuple(out["older"])
        return out


# -- the reorder buffer's notifications ------------------------------------------------------

_FIELDS: Final = (
    "vendor", "instance_id", "vendor_event_code", "operation", "known", "phase", "event_time",
    "region", "account_id", "notification_id", "vendor_event_id", "previous_state",
    "current_state", "publish_time", "not_before", "start_time", "end_time", "attributes",
)
"""What the correlator reads of a notification, in the order of its compact encoding.
``vendor_status``, ``level`` and ``source_format`` are not read by the correlator: not stored."""


def notification_core(event: InstanceEvent) -> bytes:
    """The notification without its Kafka coordinates: what makes two deliveries one notification
    (its digest is the buffer's tiebreak, so a redelivery lands on the same entry)."""
    return orjson.dumps([event[name] for name in _FIELDS])


def encode_notification(core: bytes, event: InstanceEvent) -> bytes:
    """A JSON array: the fields of ``_FIELDS`` then ``source`` (times as ints, ~200 bytes)."""
    src = event.get("source")
    if src is None:
        return core[:-1] + b",null]"
    return core[:-1] + b"," + orjson.dumps(src) + b"]"


def decode_notification(value: bytes) -> InstanceEvent:
    values: list[Any] = orjson.loads(value)
    event: dict[str, Any] = dict(zip(_FIELDS, values, strict=False))
    event["source"] = values[len(_FIELDS)]
    event["vendor_status"] = event["level"] = None
    event["source_format"] = ""
    return cast("InstanceEvent", event)
