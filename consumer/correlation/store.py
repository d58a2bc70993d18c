"""The correlator's state store: open operations, finished-operation markers, and the changelog.

Every change goes through this class so the changelog can never miss one: the first time a key
changes after a drain it is noted (with whether the changelog holds a value for it), and
:meth:`StateStore.drain` writes each noted key once, with its state at drain time. A key created
and dropped between two drains writes nothing.

Deadlines and marker expiries are heaps of ``(time, key)`` with lazy deletion: a moved deadline
pushes a new entry and the stale one is skipped when popped (it no longer matches the held
value). Ties break on the key, so the order of expiry never depends on insertion order and a
restored store behaves exactly as the one that wrote the changelog.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from heapq import heapify, heappop, heappush
from typing import Any

import orjson

from consumer.correlation.state import DONE_PREFIX, PENDING_PREFIX, DoneMarker, PendingOp

_SLACK = 1024
"""Heaps are rebuilt from the live entries when stale ones outnumber them by this much."""


class StateStore:
    def __init__(self, counters: Counter[str]) -> None:
        self.pending: dict[str, PendingOp] = {}
        self.done: dict[str, DoneMarker] = {}
        self._deadlines: list[tuple[int, str]] = []
        self._expiries: list[tuple[int, str]] = []
        # key -> whether the changelog holds a value for it; one map per prefix (no string
        # concatenation per change)
        self._dirty_pending: dict[str, bool] = {}
        self._dirty_done: dict[str, bool] = {}
        self._counters = counters

    # -- open operations -------------------------------------------------------------------

    def add(self, op: PendingOp) -> None:
        key = op.key
        if key not in self._dirty_pending:
            self._dirty_pending[key] = False
        self.pending[key] = op

    def changing(self, op: PendingOp) -> None:
        """Call before modifying a held operation."""
        if op.key not in self._dirty_pending:
            self._dirty_pending[op.key] = True

    def discard(self, op: PendingOp) -> None:
        """Drop ``op`` if it is the one held for its key (detached operations are not)."""
        key = op.key
        if self.pending.get(key) is op:
            if key not in self._dirty_pending:
                self._dirty_pending[key] = True
            del self.pending[key]

    def schedule(self, op: PendingOp, deadline: int) -> None:
        op.deadline = deadline
        heappush(self._deadlines, (deadline, op.key))
        if len(self._deadlines) > 2 * len(self.pending) + _SLACK:
            self._deadlines = [(o.deadline, k) for k, o in self.pending.items()]
            heapify(self._deadlines)

    def due(self, now: int) -> Iterator[PendingOp]:
        """Held operations whose deadline is at or before ``now``, earliest first. The caller
        must discard each one it is given before asking for the next."""
        heap = self._deadlines
        while heap and heap[0][0] <= now:
            deadline, key = heappop(heap)
            op = self.pending.get(key)
            if op is not None and op.deadline == deadline:
                yield op

    def first_due(self) -> PendingOp | None:
        """The held operation with the earliest deadline, taken off the heap (for eviction)."""
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
        done[key] = marker
        self._push_expiry(marker.expires, key)
        while len(done) > max_done and self._expiries:
            expires, victim = heappop(self._expiries)
            held = self.done.get(victim)
            if held is not None and held.expires == expires:
                self._counters["done_evicted"] += 1
                self._forget(victim)

    def touch_marker(self, key: str) -> None:
        """Call before modifying a held marker."""
        if key not in self._dirty_done:
            self._dirty_done[key] = True

    def expire_markers(self, now: int) -> None:
        heap = self._expiries
        while heap and heap[0][0] <= now:
            expires, key = heappop(heap)
            marker = self.done.get(key)
            if marker is not None and marker.expires == expires:
                self._forget(key)

    def _forget(self, key: str) -> None:
        self.touch_marker(key)
        del self.done[key]

    def _push_expiry(self, expires: int, key: str) -> None:
        heappush(self._expiries, (expires, key))
        if len(self._expiries) > 2 * len(self.done) + _SLACK:
            self._expiries = [(m.expires, k) for k, m in self.done.items()]
            heapify(self._expiries)

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
        self._dirty_pending = {}
        self._dirty_done = {}
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
            else:
                self._counters["restore_skipped"] += 1
        except (orjson.JSONDecodeError, KeyError, ValueError, TypeError):
            self._counters["restore_skipped"] += 1

    def snapshot(self) -> dict[str, dict[str, Any]]:
        snap: dict[str, dict[str, Any]] = {
            PENDING_PREFIX + k: op.as_dict() for k, op in self.pending.items()}
        snap.update({DONE_PREFIX + k: m.as_dict() for k, m in self.done.items()})
        return snap
