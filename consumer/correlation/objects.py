"""The plain objects the correlator works on: open operations and finished-operation markers.

They know nothing of how they are stored: :mod:`consumer.correlation.state` owns their changelog
form, the hot and cold copies and the byte estimate. ``slots`` keep them small and fast: a batch
holds tens of thousands of them.
"""

from __future__ import annotations

from enum import Enum
from typing import Any, Final

from consumer.correlation.outcome import OutcomeKind
from consumer.model import InstanceEvent, SourceRef, Vendor

MAX_SPANS: Final = 4
"""Finished operations remembered per key (their time spans), to tell stragglers of each from
a late older operation."""
MAX_REFS: Final = 16
"""At most this many notification ids and source coordinates are kept per operation."""
NO_ATTRIBUTES: Final[dict[str, str]] = {}
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
STATE_VALUES: Final = {state: state.value for state in OpState}
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
        self.attributes: dict[str, str] = NO_ATTRIBUTES

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

    def as_dict(self) -> dict[str, Any]:
        """Plain view for the open-operations topic, tests and debugging."""
        return {
            "state": STATE_VALUES[self.state], "by_id": self.by_id,
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

    def as_dict(self) -> dict[str, Any]:
        """Plain view for tests and debugging (what the changelog value holds)."""
        out: dict[str, Any] = {"first": self.first, "last": self.last,
                               "open_end": self.open_end, "by_id": self.by_id,
                               "expires": self.expires}
        if self.open_end:
            out["start"], out["notice"], out["from_state"] = self.start, self.notice, self.from_state
        if self.older:
            out["older"] = self.older
        if self.ends:
            out["ends"] = self.ends
        return out


Series = tuple[str, str, str]
"""(vendor, operation, state) of an open operation: what the open-operations gauges count."""
Tally = tuple[Series, int | None]
"""An open operation's series, and the notBefore it waits for when it is announced."""


def tally(op: PendingOp) -> Tally:
    return ((op.vendor, op.operation, STATE_VALUES[op.state]),
            op.not_before if op.state is OpState.ANNOUNCED else None)
