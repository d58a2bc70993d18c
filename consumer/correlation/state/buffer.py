"""The reorder buffer: notifications waiting for the watermark, or for the upstream frontier.

Part of the state layer: each entry is a changelog record ``b|<t>|<rank>|<digest>`` (waiting for
the watermark: a key that showed disorder) or ``b|<t>|<rank>|<digest>|f`` (waiting for the
upstream frontier), its value the notification's compact encoding
(:func:`~consumer.correlation.state.codec.encode_notification`). Changes are noted like the
store's (one write per id per drain, a pre-image for rollback). Entries are released in
(time, rank, digest) order, whatever order they were added or restored in.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from typing import Any, Final

from consumer.correlation.state.codec import (
    BUFFER_PREFIX,
    DECODE_ERRORS,
    decode_notification,
    encode_notification,
    notification_core,
    notification_digest,
)
from consumer.correlation.state.timers import Timers
from consumer.model import InstanceEvent

ENTRY_BYTES: Final = 130
"""Memory of a buffered notification beyond its id's and value's lengths."""

WAITING: Final = "|f"
"""Suffix of a buffered notification's id that waits for the upstream frontier, not for the
watermark: released as soon as every raw partition has been normalized past its time."""


class ReorderBuffer:
    def __init__(self, counters: Counter[str]) -> None:
        self.entries: dict[str, bytes] = {}
        self.bytes = 0
        """Estimated memory of the entries."""
        self._counters = counters
        self._order = Timers(self._released_at)
        self._waiting = Timers(self._released_at)
        self._dirty: dict[str, bool] = {}  # id -> whether the changelog holds a value for it
        self._pre: dict[str, bytes | None] = {}  # pre-images since the last commit point

    def __len__(self) -> int:
        return len(self.entries)

    def add(self, t: int, rank: int, event: InstanceEvent, *, waiting: bool = False) -> bool:
        """Buffer a notification until the watermark passes it (``waiting``: until the upstream
        frontier does), released in (``t``, ``rank``, digest) order; False when the same
        notification is already buffered."""
        core = notification_core(event)
        bid = f"{t}|{rank}|{notification_digest(core)}{WAITING if waiting else ''}"
        if bid in self.entries:
            return False
        if bid not in self._dirty:
            self._dirty[bid] = False
        if bid not in self._pre:
            self._pre[bid] = None
        self.put(bid, encode_notification(core, event))
        return True

    def put(self, bid: str, value: bytes) -> None:
        """Hold ``value`` under ``bid`` as it is (a restore: read when released)."""
        t = _bid_time(bid)  # before any change: a restored id that is not one raises
        old = self.entries.get(bid)
        if old is not None:
            self.bytes -= len(old) + len(bid) + ENTRY_BYTES
        self.entries[bid] = value
        self.bytes += len(value) + len(bid) + ENTRY_BYTES
        (self._waiting if bid.endswith(WAITING) else self._order).add(bid, t)
        self._compact()

    def drop(self, bid: str) -> bytes | None:
        value = self.entries.pop(bid, None)
        if value is not None:
            self.bytes -= len(value) + len(bid) + ENTRY_BYTES
            # A restore reads a burst's entries, then their tombstones: the timers must not keep
            # a million released ids alive.
            self._compact()
        return value

    def _compact(self) -> None:
        self._order.compact(len(self.entries), self._ordered_times)
        self._waiting.compact(len(self.entries), self._waiting_times)

    def _released_at(self, bid: str) -> int | None:
        """Release time of a buffered notification. Within one time the id orders by rank
        (one digit) then digest, the release order."""
        return _bid_time(bid) if bid in self.entries else None

    def _ordered_times(self) -> Iterator[tuple[str, int]]:
        return self._times(False)

    def _waiting_times(self) -> Iterator[tuple[str, int]]:
        return self._times(True)

    def _times(self, waiting: bool) -> Iterator[tuple[str, int]]:
        for bid in self.entries:
            if bid.endswith(WAITING) is waiting:
                yield bid, _bid_time(bid)

    def buffered(self) -> Iterator[InstanceEvent]:
        """The notifications waiting for the watermark (not those waiting for the frontier),
        decoded; one that cannot be read is left out."""
        for bid, value in self.entries.items():
            if not bid.endswith(WAITING):
                try:
                    yield decode_notification(value)
                except DECODE_ERRORS:
                    continue

    def head(self, until: int | None = None) -> int | None:
        """Event time of the next notification the watermark releases, if at most ``until``."""
        return self._order.peek(until)

    def waiting_head(self, until: int | None = None) -> int | None:
        """Event time of the next notification the frontier releases, if at most ``until``."""
        return self._waiting.peek(until)

    def pop(self, *, waiting: bool = False) -> tuple[int, InstanceEvent | None]:
        """The next notification in release order; call after :meth:`head` (or, with
        ``waiting``, :meth:`waiting_head`) said one is. None: its restored value could not be
        read (counted ``restore_skipped``, dropped)."""
        bid = (self._waiting if waiting else self._order).pop()
        value = self.drop(bid)
        assert value is not None
        if bid not in self._dirty:
            self._dirty[bid] = True
        if bid not in self._pre:
            self._pre[bid] = value
        try:
            event: InstanceEvent | None = decode_notification(value)
        except DECODE_ERRORS:
            self._counters["restore_skipped"] += 1
            event = None
        return _bid_time(bid), event

    # -- as part of the state ------------------------------------------------------------------

    @property
    def touched(self) -> bool:
        return bool(self._pre)

    def commit_point(self) -> None:
        if self._pre:
            self._pre = {}

    def rollback(self) -> int:
        """Back to the last commit point; returns how many entries were put back."""
        n = 0
        for bid, value in self._pre.items():
            n += 1
            self.drop(bid)
            if value is not None:
                self.put(bid, value)
        self._pre, self._dirty = {}, {}
        return n

    def drain(self, out: list[tuple[str, bytes | None]]) -> None:
        """Append the changelog writes since the last drain to ``out``."""
        entries = self.entries
        for bid, stored in self._dirty.items():
            entry = entries.get(bid)
            if entry is not None:
                out.append((BUFFER_PREFIX + bid, entry))
            elif stored:
                out.append((BUFFER_PREFIX + bid, None))
        self._dirty = {}

    def snapshot(self) -> dict[str, dict[str, Any]]:
        return {BUFFER_PREFIX + k: dict(decode_notification(v)) for k, v in self.entries.items()}


def _bid_time(bid: str) -> int:
    """The release time a buffered notification's id starts with."""
    return int(bid[:bid.index("|")])
