"""The correlator's state store: open operations, finished-operation markers, the reorder buffer,
the watermark, and the changelog.

Every change goes through this class so the changelog can never miss one: the first time a key
changes after a drain it is noted (with whether the changelog holds a value for it), and
:meth:`StateStore.drain` writes each noted key once, with its state at drain time. A key created
and dropped between two drains writes nothing (a notification buffered and released inside one
batch costs no changelog record).

Hot and cold: between batches an open operation is held as its changelog value (``cold``, a
few hundred bytes, see :mod:`consumer.correlation.state.codec`); :meth:`StateStore.get` turns
the ones a batch touches into :class:`PendingOp` objects (``pending``), and the drain that
writes them to the changelog puts them back in their new encoded form, except up to
``keep_hot`` of those the batch changed: an end usually follows its start within a batch or
two, and then finds its operation without decoding it. Restoring is storing the changelog's
values as they are.

Rollback: the first time a key changes after a commit point, its pre-image (the value the
committed changelog holds) is kept; :meth:`StateStore.rollback` puts those back, so an aborted
transaction costs what its batch touched, not a re-read of the changelog.
:meth:`StateStore.commit_point` forgets them once the batch's transaction committed.

Deadlines, marker expiries and the buffer's release order are :class:`Timers`: an entry whose
time moved is skipped when it comes up. Ties break on the key, so the order never depends on
insertion order and a restored store behaves exactly as the one that wrote the changelog.

Sizes: :meth:`StateStore.state_bytes` estimates the memory held, from the encoded sizes and
per-entry costs measured with tracemalloc (``tests/unit/test_correlator_budget.py`` keeps them
honest).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from typing import Any, Final

import orjson

from consumer.correlation.absence import AbsenceTracker
from consumer.correlation.objects import DoneMarker, PendingOp, Series, Tally, tally
from consumer.correlation.openops import OpenRecord, open_record
from consumer.correlation.state.buffer import ReorderBuffer
from consumer.correlation.state.census import OpenCensus
from consumer.correlation.state.clock import EventClock
from consumer.correlation.state.codec import (
    ABSENCE_PREFIX,
    BUFFER_PREFIX,
    CURRENT_PENDING,
    DECODE_ERRORS,
    DONE_PREFIX,
    PENDING_HEAD_BYTES,
    PENDING_PREFIX,
    WATERMARK_KEY,
    check_pending,
    decode_marker,
    decode_pending,
    encode_marker,
    encode_pending,
    pending_deadline,
)
from consumer.correlation.state.timers import Timers

COLD_ENTRY_BYTES: Final = 120
"""Memory of a cold open operation beyond its key's and value's lengths (two object headers,
the dict slot, the timer slot)."""
HOT_OP_BYTES: Final = 1700
"""Memory of an open operation a batch holds as an object, key and what it keeps of its
notifications included (an Alibaba notice's; less for most)."""
KEPT_HOT_FACTOR: Final = 7
"""Memory of an operation kept hot after its drain, per byte of its committed value and key:
the object, the value it was written as, what it keeps of its notifications (measured with
tracemalloc: 6.8 to 7.2 for JD and Alibaba operations)."""
MARKER_ENTRY_BYTES: Final = 250
"""Memory of a finished-operation marker beyond its key's length (the marker, its ints, the
dict slot, the expiry timer's slot)."""

class StateStore:
    def __init__(self, counters: Counter[str], absence: AbsenceTracker | None = None) -> None:
        """``absence``: the completion-by-absence tracker whose per-VM state this store writes,
        restores and rolls back with the rest (``a|<vm>``)."""
        self.pending: dict[str, PendingOp] = {}
        """Open operations a batch is working on, as objects (``hot``)."""
        self.cold: dict[str, bytes] = {}
        """Every other open operation, as its changelog value."""
        self.done: dict[str, DoneMarker] = {}
        self.reorder = ReorderBuffer(counters)
        self.absence = absence
        self._absence_log: dict[str, bytes] = {}
        """Every tracked VM's state as the changelog holds it: a rollback puts back these."""
        self._absence_pre: dict[str, bytes | None] = {}
        self.clock = EventClock()
        self._thawed: dict[str, bytes] = {}
        """Cold values of the hot operations (their committed form until the next drain)."""
        self._thawed_tally: dict[str, Tally] = {}
        self._census = OpenCensus()
        """Open operations by series and announced ones by notBefore, as of the last drain."""
        self._cold_bytes = 0
        self._kept: dict[str, int] = {}
        """Operations kept hot by the last drain and still held -> their estimated bytes."""
        self._kept_bytes = 0
        self._marker_bytes = 0
        self._deadlines = Timers(self._deadline_of)
        self._deadlines_restored = True
        """False while restored operations wait to be scheduled."""
        self._expiries = Timers(self._expiry_of)
        # key -> whether the changelog holds a value for it; one map per prefix (no string
        # concatenation per change)
        self._dirty_pending: dict[str, bool] = {}
        self._dirty_done: dict[str, bool] = {}
        # pre-images since the last commit point (None: the key held nothing)
        self._pre_pending: dict[str, PendingOp | bytes | None] = {}
        self._pre_done: dict[str, DoneMarker | None] = {}
        self._counters = counters
        self.opened: list[tuple[str, OpenRecord | None]] = []
        """The open-operations records of the last drain asked for them (see :meth:`drain`)."""
        self.open_changed = False
        """Whether the last drain wrote an open operation (or its removal)."""

    # -- sizes -----------------------------------------------------------------------------

    @property
    def pending_count(self) -> int:
        return len(self.pending) + len(self.cold)

    def state_bytes(self) -> int:
        """Estimated bytes held: open operations, buffered notifications, markers."""
        kept = self._kept
        return (self._cold_bytes + self._kept_bytes + HOT_OP_BYTES * (len(self.pending) - len(kept))
                + self.reorder.bytes
                + self.marker_bytes())

    def marker_bytes(self) -> int:
        return self._marker_bytes

    # -- open operations -------------------------------------------------------------------

    def get(self, key: str) -> PendingOp | None:
        """The open operation of ``key``, as an object (taken out of its cold form)."""
        op = self.pending.get(key)
        if op is not None:
            return op
        value = self.cold.get(key)
        return None if value is None else self._thaw(key, value)

    def _thaw(self, key: str, value: bytes) -> PendingOp | None:
        self._cold_pop(key)
        try:
            op = decode_pending(key, value)
        except DECODE_ERRORS:
            # Restore only checks the head: a value corrupt past it is dropped here, counted,
            # and tombstoned by the next drain, rather than stopping the partition.
            self._counters["restore_skipped"] += 1
            if key not in self._dirty_pending:
                self._dirty_pending[key] = True
            if key not in self._pre_pending:
                self._pre_pending[key] = value
            return None
        self._thawed.setdefault(key, value)  # a value cooled earlier in the batch is not it
        self._thawed_tally.setdefault(key, tally(op))
        self.pending[key] = op
        return op

    def cool(self, limit: int) -> None:
        """Put the hot operations back in their encoded form if there are more than ``limit``
        (a watermark jump can release a million buffered notifications in one batch). Only
        where the caller holds no operation; the drain still writes them."""
        pending = self.pending
        if len(pending) > limit:
            for key, op in pending.items():
                self._cold_put(key, encode_pending(op))
            pending.clear()
            self._unkeep_all()

    def _unkeep(self, key: str) -> None:
        cost = self._kept.pop(key, None)
        if cost is not None:
            self._kept_bytes -= cost

    def _unkeep_all(self) -> None:
        self._kept = {}
        self._kept_bytes = 0

    def _cold_put(self, key: str, value: bytes) -> None:
        old = self.cold.get(key)
        if old is not None:
            self._cold_bytes -= len(old) + len(key) + COLD_ENTRY_BYTES
        self.cold[key] = value
        self._cold_bytes += len(value) + len(key) + COLD_ENTRY_BYTES

    def _cold_pop(self, key: str) -> None:
        old = self.cold.pop(key, None)
        if old is not None:
            self._cold_bytes -= len(old) + len(key) + COLD_ENTRY_BYTES

    def ops(self) -> Iterator[PendingOp]:
        """Every open operation (cold ones decoded for the caller, not thawed)."""
        yield from self.pending.values()
        for key, value in self.cold.items():
            try:
                yield decode_pending(key, value)
            except DECODE_ERRORS:
                continue

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
            pre = self._thawed.get(key)
            self._pre_pending[key] = encode_pending(op) if pre is None else pre

    def discard(self, op: PendingOp) -> None:
        """Drop ``op`` if it is the one held for its key (detached operations are not)."""
        key = op.key
        if self.pending.get(key) is op:
            if key not in self._dirty_pending:
                self._dirty_pending[key] = True
            if key not in self._pre_pending:
                pre = self._thawed.get(key)
                self._pre_pending[key] = op if pre is None else pre  # op is not changed after
            del self.pending[key]
            self._unkeep(key)
            self._thawed.pop(key, None)
            self._deadlines.compact(self.pending_count, self._all_deadlines)

    def schedule(self, op: PendingOp, deadline: int) -> None:
        op.deadline = deadline
        self._due().add(op.key, deadline)
        self._deadlines.compact(self.pending_count, self._all_deadlines)

    def _deadline_of(self, key: str) -> int | None:
        op = self.pending.get(key)
        if op is not None:
            return op.deadline
        value = self.cold.get(key)
        return None if value is None else pending_deadline(value)

    def _all_deadlines(self) -> Iterator[tuple[str, int]]:
        for key, op in self.pending.items():
            yield key, op.deadline
        for key, value in self.cold.items():
            yield key, pending_deadline(value)

    def _due(self) -> Timers:
        """The deadlines, every held operation scheduled (after a restore: once, when first
        needed, not per changelog record)."""
        if not self._deadlines_restored:
            self._deadlines.reset()
            for key, t in self._all_deadlines():
                self._deadlines.add(key, t)
            self._deadlines_restored = True
        return self._deadlines

    def next_deadline(self, until: int | None = None) -> int | None:
        """The earliest deadline of a held operation, if it is at most ``until``."""
        return self._due().peek(until)

    def first_due(self) -> PendingOp | None:
        """The held operation with the earliest deadline, taken off the timers (expiry,
        eviction). The caller must discard it before asking again."""
        due = self._due()
        while due.peek() is not None:
            op = self.get(due.pop())
            if op is not None:
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
        self._done_put(key, marker)
        self._push_expiry(marker.expires, key)
        while len(done) > max_done and self.forget_first():
            self._counters["done_evicted"] += 1

    def forget_first(self) -> bool:
        """Forget the marker that expires first; False when there is none. Forgetting an
        open-end marker before its expiry is counted ``late_end_forgotten``: that operation's
        late end can no longer be reported with ``after_timeout``."""
        if self._expiries.peek() is None:
            return False
        key = self._expiries.pop()
        if self.done[key].open_end:
            self._counters["late_end_forgotten"] += 1
        self._forget(key)
        return True

    def expire_markers(self, now: int) -> bool:
        """Forget the markers expired by event time ``now``; whether there were any."""
        expiries = self._expiries
        forgot = False
        while expiries.peek(now) is not None:
            self._forget(expiries.pop())
            forgot = True
        return forgot

    def _done_put(self, key: str, marker: DoneMarker) -> None:
        if key not in self.done:
            self._marker_bytes += len(key) + MARKER_ENTRY_BYTES
        self.done[key] = marker

    def _done_pop(self, key: str) -> None:
        if self.done.pop(key, None) is not None:
            self._marker_bytes -= len(key) + MARKER_ENTRY_BYTES

    def _expiry_of(self, key: str) -> int | None:
        marker = self.done.get(key)
        return None if marker is None else marker.expires

    def _forget(self, key: str) -> None:
        if key not in self._dirty_done:
            self._dirty_done[key] = True
        if key not in self._pre_done:
            self._pre_done[key] = self.done[key]
        self._done_pop(key)
        self._expiries.compact(len(self.done), self._all_expiries)

    def _push_expiry(self, expires: int, key: str) -> None:
        self._expiries.add(key, expires)
        self._expiries.compact(len(self.done), self._all_expiries)

    def _all_expiries(self) -> Iterator[tuple[str, int]]:
        for key, marker in self.done.items():
            yield key, marker.expires

    # -- commit points -----------------------------------------------------------------------

    @property
    def touched(self) -> bool:
        """Whether anything changed since the last commit point."""
        return bool(self._pre_pending or self._pre_done or self.reorder.touched
                    or self._absence_pre
                    or self.clock.touched)

    def commit_point(self) -> None:
        """The changes so far are committed: forget their pre-images."""
        if self.touched:
            self._pre_pending = {}
            self._pre_done = {}
            self.reorder.commit_point()
            self._absence_pre = {}
            self.clock.commit_point()

    def rollback(self) -> int:
        """Put back every key changed since the last commit point; returns how many."""
        n = 0
        for key, pre in self._pre_pending.items():
            n += 1
            self.pending.pop(key, None)
            self._unkeep(key)
            self._thawed.pop(key, None)
            self._thawed_tally.pop(key, None)
            self._cold_pop(key)
            if isinstance(pre, bytes):
                self._cold_put(key, pre)
                self._deadlines.add(key, pending_deadline(pre))
            elif pre is not None:
                self.pending[key] = pre
                self._deadlines.add(key, pre.deadline)
        for key, marker in self._pre_done.items():
            n += 1
            if marker is None:
                self._done_pop(key)
            else:
                self._done_put(key, marker)
                self._expiries.add(key, marker.expires)
        n += self.reorder.rollback()
        n += self._rollback_absence()
        if self.clock.rollback():
            n += 1
        self._pre_pending, self._pre_done = {}, {}
        self._census.forget()
        # What the aborted transaction wrote is gone; memory now matches the committed log.
        self._dirty_pending, self._dirty_done = {}, {}
        return n

    # -- changelog -------------------------------------------------------------------------

    def drain(self, view_at: int | None = None,
              keep_hot: int = 0) -> list[tuple[str, bytes | None]]:
        """The changelog writes since the last drain.

        Up to ``keep_hot`` of the operations this batch changed stay objects (an end usually
        follows its start within a few batches: it then finds its operation without decoding
        it); every other operation goes cold, in its committed form. With ``view_at``
        (processing time), :attr:`opened` gets the open-operations records of the same writes,
        made from the operation objects at hand (a value is decoded only for an operation
        encoded earlier in the batch), so the view and the changelog agree."""
        out: list[tuple[str, bytes | None]] = []
        opened: list[tuple[str, OpenRecord | None]] = []
        view = view_at is not None
        pending, cold, cold_put = self.pending, self.cold, self._cold_put
        thawed, tallies = self._thawed, self._thawed_tally
        self._census.count_changes(self._dirty_pending, tallies, pending, cold)
        hot: dict[str, PendingOp] = {}
        hot_values: dict[str, bytes] = {}
        for key, stored in self._dirty_pending.items():
            op = pending.pop(key, None)
            if op is not None:
                value = encode_pending(op)
                if len(hot) < keep_hot:
                    hot[key] = op
                    hot_values[key] = value
                else:
                    cold_put(key, value)
                out.append((PENDING_PREFIX + key, value))
                if view:
                    opened.append((key, open_record(op, view_at)))  # type: ignore[arg-type]
            elif key in cold:  # cooled during the batch
                out.append((PENDING_PREFIX + key, cold[key]))
                if view:
                    opened.append((key, open_record(decode_pending(key, cold[key]),
                                                    view_at)))  # type: ignore[arg-type]
            elif stored:
                out.append((PENDING_PREFIX + key, None))
                if view:
                    opened.append((key, None))
        self.opened = opened
        self.open_changed = bool(out)  # only open operations' writes so far
        for key, op in pending.items():  # read but not changed: their value is the one thawed
            before = thawed.get(key)
            cold_put(key, encode_pending(op) if before is None else before)
        # The operations kept hot: their committed form is what was just written.
        self.pending = hot
        self._kept = {key: KEPT_HOT_FACTOR * (len(value) + len(key))
                      for key, value in hot_values.items()}
        self._kept_bytes = sum(self._kept.values())
        self._thawed = hot_values
        self._thawed_tally = {key: tally(op) for key, op in hot.items()}
        done = self.done
        for key, stored in self._dirty_done.items():
            marker = done.get(key)
            if marker is not None:
                out.append((DONE_PREFIX + key, encode_marker(marker)))
            elif stored:
                out.append((DONE_PREFIX + key, None))
        self.reorder.drain(out)
        self._drain_absence(out)
        meta = self.clock.drain()
        if meta is not None:
            out.append((WATERMARK_KEY, meta))
        self._dirty_pending = {}
        self._dirty_done = {}
        return out

    def restore(self, ckey: str, value: bytes | None) -> None:
        key = ckey[2:]
        try:
            if ckey.startswith(PENDING_PREFIX):
                # The hot path of a restore: a million of these must take seconds. The value
                # is held as read; counts and deadlines are made once, when next asked for.
                self._census.forget()
                if value is None:
                    self._cold_pop(key)
                    return
                if value[:1] != CURRENT_PENDING or len(value) <= PENDING_HEAD_BYTES:
                    value = check_pending(key, value)  # converted, or raises: skipped
                self._cold_put(key, value)
                self._deadlines_restored = False
            elif ckey.startswith(DONE_PREFIX):
                if value is None:
                    self._done_pop(key)
                    self._expiries.compact(len(self.done), self._all_expiries)
                    return
                marker = decode_marker(value)
                self._done_put(key, marker)
                self._expiries.add(key, marker.expires)
            elif ckey.startswith(BUFFER_PREFIX):
                if value is None:
                    self.reorder.drop(key)
                    return
                if value[:1] != b"[":
                    raise ValueError("not a buffered notification")
                self.reorder.put(key, value)  # read when released: a burst restores quickly
            elif ckey == WATERMARK_KEY and value is not None:
                self.clock.restore(value)
            elif ckey.startswith(ABSENCE_PREFIX) and self.absence is not None:
                self.absence.restore({key: None if value is None else orjson.loads(value)})
                if value is None:
                    self._absence_log.pop(key, None)
                else:
                    self._absence_log[key] = value
            else:
                self._counters["restore_skipped"] += 1
        except DECODE_ERRORS:
            self._counters["restore_skipped"] += 1

    # -- completion by absence -----------------------------------------------------------------

    def _drain_absence(self, out: list[tuple[str, bytes | None]]) -> None:
        if self.absence is None:
            return
        log, pre = self._absence_log, self._absence_pre
        for vm, state in self.absence.drain_changes():
            if vm not in pre:
                pre[vm] = log.get(vm)
            if state is None:
                log.pop(vm, None)
                out.append((ABSENCE_PREFIX + vm, None))
            else:
                value = log[vm] = orjson.dumps(state)
                out.append((ABSENCE_PREFIX + vm, value))

    def _rollback_absence(self) -> int:
        """The tracked VMs changed since the commit point (drained or not) get the state the
        changelog holds back."""
        if self.absence is None:
            return 0
        pre, log = self._absence_pre, self._absence_log
        for vm, _ in self.absence.drain_changes():  # changed after the last drain
            if vm not in pre:
                pre[vm] = log.get(vm)
        for vm, value in pre.items():
            if value is None:
                log.pop(vm, None)
            else:
                log[vm] = value
        self.absence.restore({vm: None if v is None else orjson.loads(v) for vm, v in pre.items()})
        self.absence.drain_changes()  # the restore itself is not a change to write
        n, self._absence_pre = len(pre), {}
        return n

    # -- what is open, counted ----------------------------------------------------------------

    def open_series(self) -> Counter[Series]:
        """Open operations by (vendor, operation, state), as of the last drain."""
        return self._census.series(self._held_values())

    def open_starts(self) -> Counter[int]:
        """notBefore -> announced operations waiting for it, as of the last drain."""
        return self._census.starts(self._held_values())

    def _held_values(self) -> Iterator[tuple[str, bytes]]:
        yield from self.cold.items()
        yield from self._thawed.items()  # the hot ones, as the last drain left them

    def snapshot(self) -> dict[str, dict[str, Any]]:
        snap: dict[str, dict[str, Any]] = {PENDING_PREFIX + op.key: op.as_dict()
                                           for op in self.ops()}
        snap.update({DONE_PREFIX + k: m.as_dict() for k, m in self.done.items()})
        snap.update(self.reorder.snapshot())
        if self.absence is not None:
            snap.update({ABSENCE_PREFIX + vm: state
                         for vm, state in self.absence.snapshot().items()})
        meta = self.clock.snapshot()
        if meta is not None:
            snap[WATERMARK_KEY] = meta
        return snap

