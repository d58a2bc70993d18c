"""The correlator's state store: open operations, finished-operation markers, the reorder buffer,
the watermark, and the changelog.

Every change goes through this class so the changelog can never miss one: the first time a key
changes after a drain it is noted (with whether the changelog holds a value for it), and
:meth:`StateStore.drain` writes each noted key once, with its state at drain time. A key created
and dropped between two drains writes nothing (a notification buffered and released inside one
batch costs no changelog record).

Rollback: the first time a key changes after a commit point, its pre-image (the value the
committed changelog holds) is kept; :meth:`StateStore.rollback` puts those back, so an aborted
transaction costs what its batch touched, not a re-read of the changelog.
:meth:`StateStore.commit_point` forgets them once the batch's transaction committed.

Deadlines, marker expiries and the buffer are heaps with lazy deletion: a moved deadline pushes
a new entry and the stale one is skipped when popped (it no longer matches the held value). Ties
break on the key, so the order never depends on insertion order and a restored store behaves
exactly as the one that wrote the changelog.
"""

from __future__ import annotations

from collections import Counter
from heapq import heapify, heappop, heappush
from typing import Any, Final

import orjson

from consumer.correlation.state import (
    BUFFER_PREFIX,
    DONE_PREFIX,
    PENDING_PREFIX,
    WATERMARK_KEY,
    DoneMarker,
    PendingOp,
    decode_notification,
)
from consumer.model import InstanceEvent

_SLACK = 1024
"""Heaps are rebuilt from the live entries when stale ones outnumber them by this much."""

NO_TIME: Final = -(2**62)
"""The watermark of a partition that has seen no event yet."""

Meta = tuple[int, int, int | None]
"""(max event time seen, watermark, processing time when the max last advanced)."""


class StateStore:
    def __init__(self, counters: Counter[str]) -> None:
        self.pending: dict[str, PendingOp] = {}
        self.done: dict[str, DoneMarker] = {}
        self.buffer: dict[str, bytes] = {}
        """Buffered notifications: ``<t>|<rank>|<digest>`` -> compact encoding."""
        self.max_time = NO_TIME
        self.watermark = NO_TIME
        self.anchor: int | None = None
        """Processing time when ``max_time`` last advanced (not persisted: after a restore the
        processing-time advance starts again from the first call)."""
        self._deadlines: list[tuple[int, str]] = []
        self._expiries: list[tuple[int, str]] = []
        self._order: list[tuple[int, int, str]] = []  # (t, rank, buffer id)
        # key -> whether the changelog holds a value for it; one map per prefix (no string
        # concatenation per change)
        self._dirty_pending: dict[str, bool] = {}
        self._dirty_done: dict[str, bool] = {}
        self._dirty_buffer: dict[str, bool] = {}
        self._dirty_meta = False
        # pre-images since the last commit point (None: the key held nothing)
        self._pre_pending: dict[str, PendingOp | bytes | None] = {}
        """An operation changed in place is kept encoded (cheaper than a copy, rarely read)."""
        self._pre_done: dict[str, DoneMarker | None] = {}
        self._pre_buffer: dict[str, bytes | None] = {}
        self._pre_meta: Meta | None = None
        self._counters = counters

    # -- open operations -------------------------------------------------------------------

    def add(self, op: PendingOp) -> None:
        key = op.key
        if key not in self._dirty_pending:
            self._dirty_pending[key] = False
        if key not in self._pre_pending:
            self._pre_pending[key] = None
        self.pending[key] = op

    def changing(self, op: PendingOp) -> None:
        """Call before modifying a held operation."""
        key = op.key
        if key not in self._dirty_pending:
            self._dirty_pending[key] = True
        if key not in self._pre_pending:
            self._pre_pending[key] = op.encode()

    def discard(self, op: PendingOp) -> None:
        """Drop ``op`` if it is the one held for its key (detached operations are not)."""
        key = op.key
        if self.pending.get(key) is op:
            if key not in self._dirty_pending:
                self._dirty_pending[key] = True
            if key not in self._pre_pending:
                self._pre_pending[key] = op  # not changed after this: no copy needed
            del self.pending[key]

    def schedule(self, op: PendingOp, deadline: int) -> None:
        op.deadline = deadline
        heappush(self._deadlines, (deadline, op.key))
        if len(self._deadlines) > 2 * len(self.pending) + _SLACK:
            self._deadlines = [(o.deadline, k) for k, o in self.pending.items()]
            heapify(self._deadlines)

    def next_deadline(self) -> int | None:
        """The earliest deadline of a held operation (stale heap entries are dropped)."""
        heap = self._deadlines
        while heap:
            deadline, key = heap[0]
            op = self.pending.get(key)
            if op is not None and op.deadline == deadline:
                return deadline
            heappop(heap)
        return None

    def first_due(self) -> PendingOp | None:
        """The held operation with the earliest deadline, taken off the heap (expiry, eviction).
        The caller must discard it before asking again."""
        heap = self._deadlines
        while heap:
            deadline, key = heappop(heap)
            op = self.pending.get(key)
            if op is not None and op.deadline == deadline:
                return op
        return None

    # -- finished-operation markers --------------------------------------------------------

    def live_marker(self, key: str, now: int) -> DoneMarker | None:
        marker = self.done.get(key)
        return marker if marker is not None and marker.expires > now else None

    def remember(self, key: str, marker: DoneMarker, max_done: int) -> None:
        """Hold ``marker`` for ``key``; beyond ``max_done`` markers the soonest to expire goes."""
        done = self.done
        if key not in self._dirty_done:
            self._dirty_done[key] = key in done
        if key not in self._pre_done:
            self._pre_done[key] = done.get(key)  # replaced, never changed in place: no copy
        done[key] = marker
        self._push_expiry(marker.expires, key)
        while len(done) > max_done and self._expiries:
            expires, victim = heappop(self._expiries)
            held = self.done.get(victim)
            if held is not None and held.expires == expires:
                self._counters["done_evicted"] += 1
                self._forget(victim)

    def expire_markers(self, now: int) -> None:
        heap = self._expiries
        while heap and heap[0][0] <= now:
            expires, key = heappop(heap)
            marker = self.done.get(key)
            if marker is not None and marker.expires == expires:
                self._forget(key)

    def _forget(self, key: str) -> None:
        if key not in self._dirty_done:
            self._dirty_done[key] = True
        if key not in self._pre_done:
            self._pre_done[key] = self.done[key]
        del self.done[key]

    def _push_expiry(self, expires: int, key: str) -> None:
        heappush(self._expiries, (expires, key))
        if len(self._expiries) > 2 * len(self.done) + _SLACK:
            self._expiries = [(m.expires, k) for k, m in self.done.items()]
            heapify(self._expiries)

    # -- the reorder buffer and the watermark ----------------------------------------------

    def buffer_add(self, t: int, rank: int, digest: str, value: bytes) -> bool:
        """Buffer a notification; False when the same notification is already buffered."""
        bid = f"{t}|{rank}|{digest}"
        if bid in self.buffer:
            return False
        if bid not in self._dirty_buffer:
            self._dirty_buffer[bid] = False
        if bid not in self._pre_buffer:
            self._pre_buffer[bid] = None
        self.buffer[bid] = value
        heappush(self._order, (t, rank, bid))
        return True

    def buffer_head(self) -> int | None:
        """Event time of the next notification to release."""
        heap = self._order
        while heap:
            if heap[0][2] in self.buffer:
                return heap[0][0]
            heappop(heap)
        return None

    def buffer_pop(self) -> tuple[int, InstanceEvent]:
        """The next notification in release order; call after :meth:`buffer_head` said one is."""
        t, _, bid = heappop(self._order)
        value = self.buffer.pop(bid)
        if bid not in self._dirty_buffer:
            self._dirty_buffer[bid] = True
        if bid not in self._pre_buffer:
            self._pre_buffer[bid] = value
        return t, decode_notification(value)

    def _meta_changing(self) -> None:
        self._dirty_meta = True
        if self._pre_meta is None:
            self._pre_meta = (self.max_time, self.watermark, self.anchor)

    def see(self, t: int, now: int) -> None:
        """A notification of event time ``t`` arrived at processing time ``now``."""
        if t > self.max_time:
            self._meta_changing()
            self.max_time = t
            self.anchor = now

    def set_watermark(self, w: int) -> None:
        if w > self.watermark:
            self._meta_changing()
            self.watermark = w

    def resume(self) -> None:
        """Restart the processing-time advance of the watermark from the next call."""
        self.anchor = None

    def state_bytes(self) -> int:
        """Estimated bytes held (see :meth:`Correlator.state_bytes`)."""
        return 1400 * len(self.pending) + 450 * len(self.buffer) + 300 * len(self.done)

    # -- commit points -----------------------------------------------------------------------

    @property
    def touched(self) -> bool:
        """Whether anything changed since the last commit point."""
        return bool(self._pre_pending or self._pre_done or self._pre_buffer
                    or self._pre_meta is not None)

    def commit_point(self) -> None:
        """The changes so far are committed: forget their pre-images."""
        if self.touched:
            self._pre_pending = {}
            self._pre_done = {}
            self._pre_buffer = {}
            self._pre_meta = None

    def rollback(self) -> int:
        """Put back every key changed since the last commit point; returns how many."""
        n = 0
        for key, pre in self._pre_pending.items():
            n += 1
            if pre is None:
                self.pending.pop(key, None)
            else:
                op = PendingOp.decode(key, pre) if isinstance(pre, bytes) else pre
                self.pending[key] = op
                heappush(self._deadlines, (op.deadline, key))
        for key, marker in self._pre_done.items():
            n += 1
            if marker is None:
                self.done.pop(key, None)
            else:
                self.done[key] = marker
                heappush(self._expiries, (marker.expires, key))
        for bid, value in self._pre_buffer.items():
            n += 1
            if value is None:
                self.buffer.pop(bid, None)
            else:
                self.buffer[bid] = value
                t, rank, _ = bid.split("|", 2)
                heappush(self._order, (int(t), int(rank), bid))
        if self._pre_meta is not None:
            n += 1
            self.max_time, self.watermark, self.anchor = self._pre_meta
        self._pre_pending, self._pre_done, self._pre_buffer = {}, {}, {}
        self._pre_meta = None
        # What the aborted transaction wrote is gone; memory now matches the committed log.
        self._dirty_pending, self._dirty_done, self._dirty_buffer = {}, {}, {}
        self._dirty_meta = False
        return n

    # -- changelog -------------------------------------------------------------------------

    def drain(self) -> list[tuple[str, bytes | None]]:
        out: list[tuple[str, bytes | None]] = []
        holders: tuple[tuple[str, dict[str, bool], dict[str, PendingOp] | dict[str, DoneMarker]],
                       ...] = ((PENDING_PREFIX, self._dirty_pending, self.pending),
                               (DONE_PREFIX, self._dirty_done, self.done))
        for prefix, dirty, held in holders:
            for key, stored in dirty.items():
                holder = held.get(key)
                if holder is not None:
                    out.append((prefix + key, holder.encode()))
                elif stored:
                    out.append((prefix + key, None))
        buffer = self.buffer
        for bid, stored in self._dirty_buffer.items():
            value = buffer.get(bid)
            if value is not None:
                out.append((BUFFER_PREFIX + bid, value))
            elif stored:
                out.append((BUFFER_PREFIX + bid, None))
        if self._dirty_meta:
            out.append((WATERMARK_KEY, orjson.dumps({"max": self.max_time, "w": self.watermark})))
        self._dirty_pending = {}
        self._dirty_done = {}
        self._dirty_buffer = {}
        self._dirty_meta = False
        return out

    def restore(self, ckey: str, value: bytes | None) -> None:
        key = ckey[2:]
        try:
            if ckey.startswith(PENDING_PREFIX):
                if value is None:
                    self.pending.pop(key, None)
                    return
                op = PendingOp.decode(key, value)
                self.pending[key] = op
                self.schedule(op, op.deadline)
            elif ckey.startswith(DONE_PREFIX):
                if value is None:
                    self.done.pop(key, None)
                    return
                marker = DoneMarker.decode(value)
                self.done[key] = marker
                self._push_expiry(marker.expires, key)
            elif ckey.startswith(BUFFER_PREFIX):
                if value is None:
                    self.buffer.pop(key, None)
                    return
                t, rank, _ = key.split("|", 2)
                order = (int(t), int(rank), key)
                decode_notification(value)  # an unreadable entry is skipped here, not at release
                self.buffer[key] = value
                heappush(self._order, order)
            elif ckey == WATERMARK_KEY and value is not None:
                d = orjson.loads(value)
                self.max_time, self.watermark = int(d["max"]), int(d["w"])
                self.anchor = None
            else:
                self._counters["restore_skipped"] += 1
        except (orjson.JSONDecodeError, KeyError, ValueError, TypeError, IndexError):
            self._counters["restore_skipped"] += 1

    def snapshot(self) -> dict[str, dict[str, Any]]:
        snap: dict[str, dict[str, Any]] = {
            PENDING_PREFIX + k: op.as_dict() for k, op in self.pending.items()}
        snap.update({DONE_PREFIX + k: m.as_dict() for k, m in self.done.items()})
        snap.update({BUFFER_PREFIX + k: dict(decode_notification(v))
                     for k, v in self.buffer.items()})
        if self.max_time != NO_TIME:
            snap[WATERMARK_KEY] = {"max": self.max_time, "w": self.watermark}
        return snap
