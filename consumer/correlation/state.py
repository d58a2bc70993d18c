"""The correlator's state: open operations and markers of finished ones, and their changelog form.

The changelog is private to this service (only the correlator that wrote a partition's state
ever reads it back), so it is not a contract that needs a registry; its values carry their own
format version and are read with a default for every field added later.

An open operation (``p|<key>``) is written in a compact binary form (format 2, see
:meth:`PendingOp.encode`), and between batches the store keeps it in memory in exactly that
form: a million operations announced by one maintenance notice cost a few hundred bytes each
and restore without decoding, and only the operations a batch touches become objects. Format 1
(a JSON object) is still read, so a state written before the upgrade restores.

Finished-operation markers (``d|``), notifications waiting in the reorder buffer
(``b|<t>|<rank>|<digest>``, see :func:`encode_notification`) and the partition's event-time
watermark (``w|``) are JSON (orjson): small, and readable with any console consumer when
debugging a stuck operation.
"""

from __future__ import annotations

import struct
from enum import Enum
from typing import Any, Final, cast

import orjson

from consumer.correlation.outcome import OutcomeKind
from consumer.model import InstanceEvent, SourceRef, Vendor
from consumer.normalization.operations import OPERATIONS

FORMAT_VERSION: Final = 1
"""Format of the JSON changelog values (markers; open operations before format 2)."""
PENDING_FORMAT: Final = 2
"""Format of an open operation's changelog value: the first byte of :meth:`PendingOp.encode`."""
CURRENT_PENDING: Final = bytes((PENDING_FORMAT,))
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
        """Format 2: a fixed head, then a JSON array of the rest.

        Vendor, instance id, code and vendor event id are usually the key's own parts
        (``vendor|instance|code[|event id]``); then the key is not repeated in the value, only
        the lengths needed to cut it (flag ``_IN_KEY``).

        The head is ``<version:u8><deadline:i64><last_when:i64><timeout_ms:i64><state:u8>
        <flags:u8>`` (little-endian): the deadline sits at a fixed offset so the store can
        schedule a restored operation without decoding it. The array holds the strings, the
        optional times and the lists, in the order :meth:`decode` unpacks, trailing nulls left out (an
        announced operation stops after its notice times). Sources are flattened to
        ``topic, partition, offset`` triples.
        """
        sources = self.sources
        code, eid = self.code, self.vendor_event_id
        flags = (_BY_ID if self.by_id else 0) | (_KNOWN if self.known else 0)
        ident: list[str | int | None] = [self.vendor, self.instance_id, code]
        if self.key == (f"{self.vendor}|{self.instance_id}|{code}" if eid is None
                        else f"{self.vendor}|{self.instance_id}|{code}|{eid}"):
            # The key already holds them: their lengths are enough to cut them out of it.
            flags |= _IN_KEY
            ident = [None, len(self.instance_id), len(code)]
            eid = None
        operation: str | None = self.operation
        spec = OPERATIONS.get(code)
        if spec is not None and spec.operation == operation:
            operation = None  # the table's: not repeated a million times
        tail = [*ident, operation, self.region, self.account_id, self.nids or None,
                [v for src in sources for v in (src["topic"], src["partition"], src["offset"])]
                if sources else None,
                self.notice_at, self.not_before, eid, self.start_at,
                self.attributes or None, self.end_at, self.end_kind, self.from_state,
                self.to_state]
        while tail[-1] is None:
            tail.pop()
        return _HEAD.pack(PENDING_FORMAT, self.deadline, self.last_when, self.timeout_ms,
                          _STATE_INDEX[self.state], flags) + orjson.dumps(tail)

    @classmethod
    def decode(cls, key: str, value: bytes) -> PendingOp:
        """Read format 2, or format 1 (a JSON object, written before the upgrade)."""
        if value[:1] == b"{":
            return cls._decode_v1(key, value)
        version, deadline, last_when, timeout_ms, state, flags = _HEAD.unpack_from(value)
        if version != PENDING_FORMAT:
            raise ValueError(f"unknown open-operation format {version}")
        tail: list[Any] = orjson.loads(memoryview(value)[_HEAD.size:])
        if len(tail) < _TAIL_MIN:
            raise ValueError("open operation without its identity")
        tail.extend([None] * (_TAIL_LEN - len(tail)))
        (vendor, instance_id, code, operation, region, account_id, nids, flat, notice_at,
         not_before, vendor_event_id, start_at, attributes, end_at, end_kind, from_state,
         to_state) = tail
        if flags & _IN_KEY:
            v = key.index("|")
            i = v + 1 + instance_id
            c = i + 1 + code
            vendor, instance_id, code = key[:v], key[v + 1:i], key[i + 1:c]
            vendor_event_id = key[c + 1:] if len(key) > c else None
        if operation is None:
            operation = OPERATIONS[code].operation
        op = cls.__new__(cls)
        op.key = key
        op.state = _STATES[state]
        op.by_id = bool(flags & _BY_ID)
        op.known = bool(flags & _KNOWN)
        op.vendor, op.instance_id, op.code, op.operation = vendor, instance_id, code, operation
        op.region, op.account_id, op.vendor_event_id = region, account_id, vendor_event_id
        op.notice_at, op.not_before, op.start_at, op.end_at = notice_at, not_before, start_at, end_at
        op.end_kind, op.from_state, op.to_state = end_kind, from_state, to_state
        op.last_when, op.deadline, op.timeout_ms = last_when, deadline, timeout_ms
        op.nids = nids or []
        op.sources = [SourceRef(topic=flat[i], partition=flat[i + 1], offset=flat[i + 2])
                      for i in range(0, len(flat), 3)] if flat else []
        op.attributes = attributes or _NO_ATTRIBUTES
        return op

    @classmethod
    def _decode_v1(cls, key: str, value: bytes) -> PendingOp:
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
        op.attributes = d.get("attributes") or _NO_ATTRIBUTES
        return op

    def as_dict(self) -> dict[str, Any]:
        """Plain view for the open-operations topic, tests and debugging."""
        return {
            "state": _STATE_VALUES[self.state], "by_id": self.by_id,
            "vendor": self.vendor, "instance_id": self.instance_id, "code": self.code,
            "operation": self.operation, "known": self.known, "region": self.region,
            "account_id": self.account_id, "vendor_event_id": self.vendor_event_id,
            "notice_at": self.notice_at, "not_before": self.not_before,
            "start_at": self.start_at, "end_at": self.end_at, "end_kind": self.end_kind,
            "from_state": self.from_state, "to_state": self.to_state,
            "last_when": self.last_when, "deadline": self.deadline,
            "timeout_ms": self.timeout_ms, "nids": list(self.nids),
            "sources": [dict(src) for src in self.sources],
            "attributes": dict(self.attributes),
        }


_HEAD: Final = struct.Struct("<BqqqBB")
_STATE: Final = 25  # offsets in the head
_FLAGS: Final = 26
_DEADLINE: Final = struct.Struct("<q")
"""The deadline in a format-2 value, at offset 1."""
_TAIL_LEN: Final = 17
_TAIL_MIN: Final = 3  # vendor, instance id, code (or the lengths that cut them from the key)
_BY_ID: Final = 1
_KNOWN: Final = 2
_IN_KEY: Final = 4
"""Vendor, instance id, code and vendor event id are the operation key's parts: the tail holds
the lengths of the instance id and the code instead."""
_STATES: Final = tuple(OpState)
_STATE_INDEX: Final = {state: i for i, state in enumerate(_STATES)}


Series = tuple[str, str, str]
"""(vendor, operation, state) of an open operation: what the open-operations gauges count."""
Tally = tuple[Series, int | None]
"""An open operation's series, and the notBefore it waits for when it is announced."""


def tally(op: PendingOp) -> Tally:
    return ((op.vendor, op.operation, _STATE_VALUES[op.state]),
            op.not_before if op.state is OpState.ANNOUNCED else None)


def pending_tally(key: str, value: bytes) -> Tally:
    """:func:`tally` of an encoded open operation, read without building the operation (a
    restored million is counted before the partition is ready)."""
    if value[:1] != CURRENT_PENDING:
        return tally(PendingOp.decode(key, value))
    tail: list[Any] = orjson.loads(memoryview(value)[_HEAD.size:])
    vendor, operation = tail[0], tail[3] if len(tail) > 3 else None
    if value[_FLAGS] & _IN_KEY:
        v = key.index("|")
        vendor = key[:v]
        if operation is None:
            i = v + 2 + tail[1]
            operation = OPERATIONS[key[i:i + tail[2]]].operation
    elif operation is None:
        operation = OPERATIONS[tail[2]].operation
    state = _STATES[value[_STATE]]
    announced = state is OpState.ANNOUNCED and len(tail) > 9
    return (vendor, operation, _STATE_VALUES[state]), tail[9] if announced else None


def pending_deadline(value: bytes) -> int:
    """The deadline of an encoded open operation, read without decoding the rest."""
    if value[:1] == b"{":
        deadline: int = orjson.loads(value)["deadline"]
        return deadline
    return cast("int", _DEADLINE.unpack_from(value, 1)[0])


def check_pending(key: str, value: bytes) -> bytes:
    """``value`` in the current format, ready to hold as is (format 1 is converted); raises
    ValueError, KeyError or TypeError for a value that is not an open operation."""
    if value[:1] == CURRENT_PENDING and len(value) > _HEAD.size:
        return value
    return PendingOp.decode(key, value).encode()


def pending_fields(key: str, value: bytes) -> dict[str, Any]:
    """An encoded open operation as :meth:`PendingOp.as_dict` (either format)."""
    return PendingOp.decode(key, value).as_dict()


END_BITS: Final[dict[str, int]] = {"completed": 1, "failed": 2, "avoided": 4, "canceled": 8}
"""An end's outcome as a bit of :attr:`DoneMarker.ends`."""


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
    is in event time (compared with the watermark). ``ends``: the outcomes (bits of
    :data:`END_BITS`) reported at ``last`` by ends that carry their own start, so a second such
    end at that time is told apart from a duplicate: the same outcome is one, another is a
    conflicting end, reported too (see the correlator's rules).
    """

    __slots__ = ("by_id", "ends", "expires", "first", "from_state", "last", "notice", "older",
                 "open_end", "start")

    def __init__(self, first: int, last: int, open_end: bool, by_id: bool, expires: int,
                 start: int | None = None, notice: int | None = None,
                 from_state: str | None = None, older: tuple[int, ...] = (),
                 ends: int = 0) -> None:
        self.first = first
        self.last = last
        self.older = older
        self.open_end = open_end
        self.by_id = by_id
        self.expires = expires
        self.start = start
        self.notice = notice
        self.from_state = from_state
        self.ends = ends

    def copy(self) -> DoneMarker:
        return DoneMarker(self.first, self.last, self.open_end, self.by_id, self.expires,
                          self.start, self.notice, self.from_state, self.older, self.ends)

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
        if self.ends:
            d["ends"] = self.ends
        return orjson.dumps(d)

    @classmethod
    def decode(cls, value: bytes) -> DoneMarker:
        d: dict[str, Any] = orjson.loads(value)
        return cls(d.get("first", d["last"]), d["last"], d.get("open_end", False),
                   d.get("by_id", False), d["expires"], d.get("start"), d.get("notice"),
                   d.get("from_state"), tuple(d.get("older", ())), d.get("ends", 0))

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
