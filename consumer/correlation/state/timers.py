"""Keys due at event times, taken in (time, key) order: deadlines, marker expiries, the buffer.

A binary heap of ``(time, key)`` tuples costs about 100 bytes per entry (the tuple, the int,
the slot), as much as a compact open operation itself. Here a key waits in a bucket of
``width`` ms of event time (a minute: a list, 8 bytes per entry, the key string is shared with the
state's dict); the time is not stored but asked of the owner (``time_of``), so an entry whose
owner moved or dropped its time is simply skipped when its bucket comes up. Only the earliest
bucket is ever ordered, and only once the caller asks what is due up to a time inside it: a
burst of a million operations due in the same minute is sorted when that minute comes, not
when the burst arrives.

Ties break on the key, so the order never depends on insertion order and a restored state
fires in exactly the order the state that wrote the changelog would have.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from heapq import heapify, heappop, heappush

_SLACK = 1024
"""Entries may outnumber live keys by this much (plus 2x) before :meth:`compact` rebuilds."""


class Timers:
    def __init__(self, time_of: Callable[[str], int | None], width: int = 60_000) -> None:
        self._time_of = time_of
        self._width = width
        self._buckets: dict[int, list[str]] = {}
        self._order: list[int] = []  # heap of bucket numbers in _buckets
        self._front: list[tuple[int, str]] = []  # heap: every entry of buckets <= _front_bucket
        self._front_bucket: int | None = None
        self.entries = 0
        """Entries held, stale ones included (for :meth:`compact`)."""

    def add(self, key: str, t: int) -> None:
        """``key`` is due at ``t`` (its owner's ``time_of(key)`` now answers ``t``)."""
        self.entries += 1
        b = t // self._width
        if self._front_bucket is not None and b <= self._front_bucket:
            heappush(self._front, (t, key))
            return
        bucket = self._buckets.get(b)
        if bucket is None:
            self._buckets[b] = [key]
            heappush(self._order, b)
        else:
            bucket.append(key)

    def peek(self, until: int | None = None) -> int | None:
        """The earliest time a live key is due, if it is at most ``until`` (None: any time).

        Buckets starting after ``until`` are not opened: nothing in them can be due by then.
        """
        front, time_of = self._front, self._time_of
        while True:
            while front:
                t, key = front[0]
                if time_of(key) == t:
                    return t if until is None or t <= until else None
                heappop(front)
                self.entries -= 1
            if not self._order:
                return None
            b = self._order[0]
            if until is not None and b * self._width > until:
                return None
            heappop(self._order)
            self._open(b)

    def pop(self) -> str:
        """The key :meth:`peek` answered for; its owner must move or drop its time next."""
        self.entries -= 1
        return heappop(self._front)[1]

    def _open(self, b: int) -> None:
        """Order bucket ``b`` into the front (duplicates and stale entries dropped)."""
        keys = self._buckets.pop(b)
        time_of, width, front = self._time_of, self._width, self._front
        live: dict[str, int] = {}
        for key in keys:
            if key not in live:
                t = time_of(key)
                if t is not None and t // width == b:
                    live[key] = t
        self.entries -= len(keys) - len(live)
        front.extend((t, key) for key, t in live.items())  # opened only when the front is empty
        heapify(front)
        self._front_bucket = b

    def compact(self, live: int, items: Callable[[], Iterable[tuple[str, int]]]) -> None:
        """Rebuild from ``items()`` (key, time) when stale entries outnumber ``live`` ones."""
        if self.entries > 2 * live + _SLACK:
            self.reset()
            for key, t in items():
                self.add(key, t)

    def reset(self) -> None:
        self._buckets = {}
        self._order = []
        self._front = []
        self._front_bucket = None
        self.entries = 0
