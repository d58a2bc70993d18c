"""The correlator: a pure state machine over one partition's normalized events, in event time.

One instance per Kafka partition, no Kafka import, an injected processing clock (epoch ms). The
runtime calls :meth:`Correlator.process` per event and :meth:`Correlator.expire` per poll, then
writes :meth:`Correlator.drain_changes` to the changelog in the same transaction as the outcomes;
:meth:`Correlator.restore` rebuilds the state from that changelog after a rebalance;
:meth:`Correlator.rollback` undoes a batch whose transaction aborted (only the keys it touched)
and :meth:`Correlator.commit_point` marks the last committed batch.

Event time, not arrival order
-----------------------------

Each notification has one time: the vendor time of its role (start time of a start, end time of
an end, event time otherwise). The partition has one clock, its **watermark**::

    W = max(W, min(T_max + (now - t_arrival), F) - L)

``T_max`` is the newest notification time seen (on the partition, or reported by the progress of
any raw partition), ``t_arrival`` the processing time when ``T_max`` last advanced, ``L`` the
allowed lateness (``allowed_lateness_ms``, 10 min) and ``F`` the **upstream frontier**: the
oldest newest-time of the raw partitions the normalize stage has not caught up on (see
:mod:`consumer.runtime.marks`; no bound when all are caught up, or offline). On a quiet
partition ``W`` advances with processing time; it never passes a raw partition still behind.

- **At once.** Two operations of one code on one instance do not overlap, so while a key's
  notifications arrive in order, deciding each on arrival gives what event-time order gives: an
  in-order pair is decided in the call that brings its end, and a start opens its operation
  (and its open-operations record) in the call that brings it. Notifications with a vendor
  event id (the key names one operation) and single ones are always applied on arrival.
- **Evidence of disorder** (:meth:`Correlator._disorder`), for a notification without an id, on
  its order key (the operation's key, or an instance's whole lifecycle): it is older than an
  operation its key has reported (``contradicts_decision``), or older than what an open
  operation holds, or a second start while one is open (``out_of_order``), or a new state alone
  that closes nothing open (``unpaired_state``). Then it, and every later notification of the
  key, waits in the **reorder buffer** until ``W`` passes it, and is released in a total order
  that does not depend on arrival: time, then a rank (ends, then notices and singles, then
  starts), then a digest of the notification. The allowed lateness bounds the disorder tolerated;
  it is not a delay on in-order answers.
- **The frontier.** A notification later than ``F`` waits (``...|f`` in the buffer) until every
  raw partition has been normalized past it, then goes through the rule above: several
  normalize processes at different paces, restarts and backlogs cannot show the correlator an
  instance's notifications out of order.
- **Contradictions.** A notification older than a decision already emitted cannot change that
  decision: it is applied by the rules below when released (usually a straggler of the reported
  operation) and counted, so a pairing that differs from time order never passes silently.
- **Deadlines in event time.** An operation's deadline is its last notification's time plus its
  timeout; it fires when ``W`` passes it, interleaved in time order with the buffer's releases.
  Offline and online agree, and a replay times out exactly as the live stream did.
- **Late notifications** (time ``<= W`` on arrival) are still applied, directly, by the rules
  below, which handle any order; they are counted (``late``), never dropped silently. The waits
  they start (an end's grace for its start, a start's timeout) count from ``W``, not from their
  own time, which ``W`` has already passed.
- **Late completions.** An operation past its deadline is emitted ``timed_out`` (the alert). Its
  end, arriving within ``late_end_horizon_ms`` (7 d), is emitted as its real outcome with start,
  finish and duration and ``after_timeout=true``; a duplicate of that end is a straggler.

The buffer is state: each buffered notification is a changelog record (``b|<t>|<rank>|<digest>``,
a compact JSON array, see :mod:`consumer.correlation.state`), and ``W`` with the upstream progress
is one (``w|``), written with input or with a decision: an idle partition writes nothing, and a
restart derives the quiet-time advance again from ``T_max``.

Rules for messy streams, beyond the table in :mod:`consumer.correlation.transitions`:

- Duplicates. A notification already buffered is dropped (same digest). Inside an open
  operation, a repeated phase with the same time is dropped. After an operation finished, a
  marker remembers it (``done_ttl_ms`` of event time, at most ``max_done``): on a key with a
  vendor event id everything later on that key is dropped; on a key without one, a notification
  at or before the operation's last time is a straggler and is dropped, a later one starts the
  next operation. Single notifications are remembered by their exact time. A marker made by a
  late notification lives from the watermark, not from that notification's own time (which the
  watermark has passed: the marker would be forgotten at once).
- Two ends at one time. An end that carries its own start (live migration's startTime, Alibaba's
  executeStartTime), at the time of an end already reported for its operation, is a duplicate
  when it tells the same outcome; one that tells another (``accomplished`` and ``failed``) is
  reported as well, with its own times, and counted ``conflicting_end``: both, whichever came
  first, so online and offline agree. (Ends without their own start still pair first come.)
- Clock skew: an end before its start never gives a negative duration. Within
  ``skew_tolerance_ms`` (or always, with a vendor event id) the duration is clamped to 0 and the
  skew reported in ``attributes["vmevents.clock_skew_ms"]``; further back, without an event id,
  the end belongs to an earlier operation whose start was lost and is emitted alone.
- Bounded memory: at most ``max_pending`` open operations, and at most the state budget in
  bytes (:meth:`Correlator.set_state_budget`, estimated by :attr:`Correlator.state_bytes`). Past
  either, the operation due first ends as if its deadline had passed (``timed_out``, or its held
  end), flagged ``vmevents.evicted`` with the limit that made room (``max_pending`` or
  ``max_state_bytes``); its late end is still reported. With no open operation left to end,
  buffered notifications are applied before the watermark reaches them, then the markers that
  expire first are forgotten (plain ones, ``done_ttl_ms``, before open-end ones, which live the
  late-end horizon). An open-end marker forgotten so (or under ``max_done``) is counted
  ``late_end_forgotten``: its operation's late end is then reported as an end alone, without
  ``after_timeout``. Never dropped silently.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable
from typing import Any, Final

from consumer.correlation.absence import AbsenceTracker
from consumer.correlation.config import CorrelatorConfig
from consumer.correlation.objects import OpState
from consumer.correlation.openops import OpenRecord, open_record
from consumer.correlation.ordering import OPENERS, RANK_START, order_key, place
from consumer.correlation.outcome import Outcome
from consumer.correlation.rules import LIMIT_STATE_BYTES, Rules
from consumer.correlation.state import HOT_OP_BYTES, NO_TIME, StateStore
from consumer.correlation.transitions import LIFECYCLE_OPS
from consumer.model import InstanceEvent
from consumer.normalization.azure import DOCUMENT_CODE

Clock = Callable[[], int]

AZURE: Final = "azure"

_STARTED = OpState.STARTED

LateKey = tuple[str, str, bool]
"""(vendor, operation, known) of a late notification, for the runtime's metric labels."""

PENDING_TIME_FIELDS: Final = frozenset({"scheduled_at", "not_before", "started_at", "ended_at",
                                        "last_notification_at", "deadline"})
"""Times in :meth:`Correlator.pending_operations` records (epoch ms; the CLI prints ISO-8601)."""

RELEASE_LIMIT = 50_000
"""Buffered notifications released and deadlines fired by one advance of the watermark."""

KEEP_HOT = 5_000
"""Operations a batch changed that stay objects after its drain (about 1.5 KB each instead of
a few hundred bytes: at most a quarter of a state budget), so the end that follows its start a
batch or two later finds it without decoding."""


class Correlator:
    """Pairs the notifications of each operation into one :class:`Outcome`. See module doc."""

    def __init__(self, config: CorrelatorConfig, clock: Clock) -> None:
        """A correlator with an empty state; :meth:`restore` fills it from a changelog."""
        self.config = config
        self._clock = clock
        self._lateness = config.allowed_lateness_ms
        self._seen_w = NO_TIME  # the watermark of the last call (kept or not)
        self.counters: Counter[str] = Counter()
        """Anomalies seen (duplicate, straggler, superseded, clock_skew, evicted, late,
        late_completion, ...) for metrics."""
        self.late: Counter[LateKey] = Counter()
        """Notifications that arrived behind the watermark, by (vendor, operation, known)."""
        self._absence = AbsenceTracker()
        self._store = StateStore(self.counters, self._absence)
        self._rules = Rules(config, self._store, self.counters)
        self._held: Counter[str] | None = Counter()
        """Order key -> its notifications in the reorder buffer (None: to count again)."""
        self._budget: int | None = None
        self._done = self._store.done

    @property
    def pending_count(self) -> int:
        return self._store.pending_count

    @property
    def state_bytes(self) -> int:
        """Estimated memory held by this partition's state (open operations, buffered
        notifications, finished-operation markers), in bytes: what the state budget limits."""
        return self._store.state_bytes()

    def set_state_budget(self, max_bytes: int | None) -> None:
        """Cap :attr:`state_bytes` (None: no byte cap, only ``max_pending``). Over it, the
        operations due first end as ``timed_out`` with ``vmevents.evicted``, never dropped."""
        self._budget = max_bytes

    @property
    def buffered_count(self) -> int:
        """Notifications waiting in the reorder buffer: for the watermark (keys that showed
        disorder) or for the upstream frontier."""
        return len(self._store.reorder)

    @property
    def frontier_lag(self) -> int:
        """Newest notification time minus the upstream frontier, in ms (0: no raw partition
        is behind): how long the slowest upstream partition holds decisions back."""
        st = self._store
        frontier = st.clock.frontier()
        if frontier is None or st.clock.max_time == NO_TIME or frontier >= st.clock.max_time:
            return 0
        return st.clock.max_time - max(frontier, st.clock.watermark)

    @property
    def watermark(self) -> int | None:
        """Event time up to which everything is decided (None before the first event), as of
        the last call."""
        w = max(self._store.clock.watermark, self._seen_w)
        return None if w == NO_TIME else w

    # -- public API ------------------------------------------------------------------------

    def process(self, event: InstanceEvent) -> list[Outcome]:
        """Take one notification; return the outcomes that are decided now (zero or more)."""
        now = self._rules.wall = self._clock()
        out: list[Outcome] = []
        if event["vendor"] == AZURE:
            # An Azure Scheduled Events document ends the events missing from it: their ends
            # are notifications like any other (the Event Grid path sends them explicitly).
            for end in self._absence.observe(event):
                self._admit(end, now, out)
            if event["vendor_event_code"] == DOCUMENT_CODE:
                self._keep_budget(out)
                return out  # a document naming no event of its VM: nothing else to decide
        self._admit(event, now, out)
        self._keep_budget(out)
        return out

    def _admit(self, event: InstanceEvent, now: int, out: list[Outcome]) -> None:
        """Decide when ``event`` is applied: now (late, with an id, or its key consistent), or
        after the upstream frontier or the watermark passes it."""
        st = self._store
        t, rank, at_once = place(event)
        st.clock.see(t, now)
        self._advance(self._watermark_at(now), out, keep=True)
        if t <= st.clock.watermark:
            self.counters["late"] += 1
            self.late[(event["vendor"], event["operation"], event["known"])] += 1
            # Its waits (grace for its start, timeout for its end) count from the watermark,
            # as if it had come in time: its partner is usually right behind it.
            self._rules.floor = st.clock.watermark
            try:
                self._rules.apply(event, t, out)
            finally:
                self._rules.floor = NO_TIME
            self._advance(st.clock.watermark, out)
        elif (frontier := st.clock.frontier()) is not None and t > frontier:
            # An upstream partition has not been normalized this far yet: what it holds may
            # come before this notification (with a vendor event id too: a notice whose time
            # the outcome reports). Wait for it, not for the watermark.
            if not st.reorder.add(t, rank, event, waiting=True):
                self.counters["duplicate"] += 1
        elif at_once:
            self._rules.apply(event, t, out)
        else:
            self._arrive(event, t, rank, out)

    def progress(self, entries: Iterable[tuple[str, int, bool]]) -> list[Outcome]:
        """Upstream progress, one mark's ``(raw partition, newest, caught_up)`` entries: the
        normalize stage has read each raw partition up to notifications of time ``newest``
        (``caught_up``: to its end). Notifications waiting for that are decided now, once per
        mark; the watermark never passes a partition still behind."""
        now = self._rules.wall = self._clock()
        out: list[Outcome] = []
        st = self._store
        changed = False
        for source, newest, caught_up in entries:
            if st.clock.progress(source, newest, caught_up):
                st.clock.see(newest, now)  # the stream's time is the newest over every raw partition
                changed = True
        if changed:
            self._release_waiting(out)
            self._advance(self._watermark_at(now), out, keep=True)
        return out

    def _release_waiting(self, out: list[Outcome], limit: int | None = None) -> None:
        """Notifications the frontier has passed, in time order, as if they arrived now."""
        st = self._store
        left = RELEASE_LIMIT if limit is None else limit
        frontier = st.clock.frontier()
        while left > 0 and st.reorder.waiting_head(frontier) is not None:
            left -= 1
            t, event = st.reorder.pop(waiting=True)
            if event is None:
                continue
            _, rank, at_once = place(event)
            if at_once or t <= st.clock.watermark:  # (the watermark passed it meanwhile: as late)
                self._rules.apply(event, t, out)
            else:
                self._arrive(event, t, rank, out)

    def _arrive(self, event: InstanceEvent, t: int, rank: int, out: list[Outcome]) -> None:
        """A notification without a vendor event id, in time: decided at once when its key is
        consistent, else held in the reorder buffer until the watermark passes it."""
        key = order_key(event)
        held = self._held_keys()
        disorder = self._disorder(event, key, t, rank)
        if disorder is None and held[key] == 0:
            self._rules.apply(event, t, out)
            return
        if not self._store.reorder.add(t, rank, event):
            self.counters["duplicate"] += 1
            return
        held[key] += 1
        self.counters["reordered"] += 1
        if disorder is not None:
            self.counters[disorder] += 1

    def _held_keys(self) -> Counter[str]:
        """Order key -> notifications of it in the reorder buffer (made again after a restore
        or a rollback, from the buffer itself)."""
        held = self._held
        if held is None:
            held = self._held = Counter()
            for event in self._store.reorder.buffered():
                held[order_key(event)] += 1
        return held

    def _disorder(self, event: InstanceEvent, key: str, t: int, rank: int) -> str | None:
        """None when deciding ``event`` now gives what event-time order gives: it is no older
        than anything its key has decided or holds, and it opens nothing while the same
        operation is open (a second opener means a missing end may still come). Otherwise the
        evidence: ``contradicts_decision`` (older than an outcome its key emitted),
        ``out_of_order`` or ``unpaired_state``."""
        store = self._store
        cur = event["current_state"]
        if key.endswith("|"):  # an instance's lifecycle: the operations of every state
            names: tuple[str, ...] = LIFECYCLE_OPS
            opening = OPENERS.get(cur.lower()) if cur is not None else None
        else:
            names = ("",)
            opening = "" if rank == RANK_START else None
        for name in names:
            marker = self._done.get(key + name)
            if marker is not None and t <= marker.last:
                if t in marker.spans():
                    return None  # a redelivery of an end of a reported operation: a straggler
                # Inside an operation already reported: in time order it would have been part
                # of that decision.
                return "contradicts_decision"
            op = store.get(key + name)
            if op is not None and (t < op.last_when or (
                    name == opening and op.state is _STARTED and t != op.start_at)):
                return "out_of_order"
        if (opening is None and key.endswith("|") and event["previous_state"] is None
                and cur is not None and self._rules.open_lifecycle(key, cur.lower()) is None):
            # A new state alone (Alibaba names no previous one) that closes nothing open would
            # be reported on its own at once; the change that opened it may still come. It
            # waits, as an end without its start would in its grace window.
            return "unpaired_state"
        return None

    def expire(self, now_ms: int | None = None) -> list[Outcome]:
        """Advance the watermark to processing time ``now_ms`` (default: the clock): release
        the buffered notifications and fire the deadlines it passes, forget expired markers."""
        now = self._rules.wall = self._clock() if now_ms is None else now_ms
        out: list[Outcome] = []
        self._release_waiting(out)  # what one release could not take (RELEASE_LIMIT)
        self._advance(self._watermark_at(now), out)
        self._keep_budget(out)  # a restored state can be over a budget made smaller
        return out

    def flush(self) -> list[Outcome]:
        """End of input (offline): the watermark moves to the newest event time, as on a quiet
        partition once the allowed lateness has passed: everything buffered is released and
        what is due by then times out. Later operations stay pending."""
        self._rules.wall = self._clock()
        out: list[Outcome] = []
        st = self._store
        for end in self._absence.flush():
            self._admit(end, self._rules.wall, out)
        for source, (newest, _) in list(st.clock.sources.items()):
            st.clock.progress(source, newest, True)
        self._release_waiting(out, limit=1 << 62)
        if st.clock.max_time != NO_TIME:
            self._advance(max(st.clock.max_time, st.clock.watermark), out, limit=1 << 62, keep=True)
        return out

    def resume(self) -> None:
        """The partition was not read for a while (restored, reassigned, broker away): the
        processing-time advance of the watermark restarts from the next call instead of
        counting that time as quiet."""
        self._store.clock.resume()

    def commit_point(self) -> None:
        """Everything drained so far is committed: an abort now rolls back to here."""
        self._store.commit_point()

    def rollback(self) -> int:
        """Undo every change since the last commit point (the aborted batch): open operations,
        markers, buffered notifications and the watermark get their committed values back.
        Returns the number of keys restored; nothing is left to drain."""
        self._held = None
        return self._store.rollback()

    @property
    def touched(self) -> bool:
        """Whether anything changed since the last commit point."""
        return self._store.touched

    def drain_changes(self, view_at: int | None = None) -> list[tuple[str, bytes | None]]:
        """Changelog writes since the last call, one per key (latest state or a tombstone),
        opaque to the caller (see :mod:`consumer.correlation.state.codec`). With ``view_at``
        (processing time), the open-operations records of the same writes are made too, for
        :meth:`open_changes`."""
        budget = self._budget
        keep = KEEP_HOT if budget is None else min(KEEP_HOT, budget // 4 // HOT_OP_BYTES)
        return self._store.drain(view_at, keep)

    @property
    def open_changed(self) -> bool:
        """Whether the last :meth:`drain_changes` opened, changed or closed an operation."""
        return self._store.open_changed

    def open_changes(self) -> list[tuple[str, OpenRecord | None]]:
        """The open-operations records of the last :meth:`drain_changes` that asked for them
        (``view_at``): (operation key, ``OpenOperation``, or None for one that closed), to
        commit with it. Handed over once."""
        opened, self._store.opened = self._store.opened, []
        return opened

    def restore(self, key: str, value: bytes | None) -> None:
        """Apply one changelog record (in log order; the last write wins, None deletes).

        Produces no changes to drain. A record that cannot be read is skipped and counted
        (``restore_skipped``): one corrupt record must not keep a partition from starting.
        """
        self._held = None
        self._store.restore(key, value)

    def snapshot(self) -> dict[str, dict[str, Any]]:
        """Changelog key -> decoded state of everything held (for tests and debugging)."""
        return self._store.snapshot()

    def open_operations(self, now: int) -> list[tuple[str, OpenRecord]]:
        """(operation key, ``OpenOperation``) of every held operation: the open-operations view
        of the current state, as the drains so far wrote it (after a restore or a rollback)."""
        return [(op.key, open_record(op, now)) for op in self._store.ops()]

    def open_counts(self) -> Counter[tuple[str, str, str]]:
        """Open operations by (vendor, operation, state) as of the last drain: kept by the
        drains, counted once after a restore or a rollback. Read, do not change."""
        return self._store.open_series()

    def open_starts(self) -> Counter[int]:
        """notBefore -> announced operations waiting for it, as of the last drain."""
        return self._store.open_starts()

    def pending_operations(self) -> list[dict[str, Any]]:
        """Open operations in words a user reads (times in :data:`PENDING_TIME_FIELDS`)."""
        return [{
            "status": "pending", "state": op.state.value, "operation": op.operation,
            "vendor": op.vendor, "instance_id": op.instance_id, "vendor_event_code": op.code,
            "vendor_event_id": op.vendor_event_id, "region": op.region,
            "scheduled_at": op.notice_at, "not_before": op.not_before, "started_at": op.start_at,
            "ended_at": op.end_at, "from_state": op.from_state,
            "last_notification_at": op.last_when, "deadline": op.deadline,
            "notification_ids": op.nids,
        } for op in sorted(self._store.ops(), key=lambda o: (o.deadline, o.key))]

    # -- event time ------------------------------------------------------------------------

    def _watermark_at(self, now: int) -> int:
        st = self._store
        if st.clock.max_time == NO_TIME:
            return st.clock.watermark
        anchor = st.clock.anchor
        if anchor is None:  # restored or resumed: quiet time counts from here
            st.clock.anchor = anchor = now
        idle = now - anchor if now > anchor else 0
        w = st.clock.max_time + idle
        frontier = st.clock.frontier()
        if frontier is not None and frontier < w:
            w = frontier  # a raw partition still behind may hold older notifications
        w -= self._lateness
        w = max(w, st.clock.watermark)
        self._seen_w = w
        return w

    def _advance(self, w: int, out: list[Outcome], limit: int | None = None, *,
                 keep: bool = False) -> None:
        """Move the watermark to ``w``: buffered notifications and deadlines up to it, merged
        in time order (a notification at a deadline's time goes first).

        The store keeps (and the changelog gets) the new watermark only when it decided
        something, or with ``keep`` (input arrived): a quiet partition's advance that releases
        nothing writes nothing, and a restart derives it again from the newest time kept.

        At most ``limit`` (default :data:`RELEASE_LIMIT`) of them: then the watermark stops
        just before the next one and the following call goes on, in the same order. A jump over
        a burst (a quiet partition after a million notices) becomes several batches, each a
        transaction of bounded size, instead of one that holds everything at once.
        """
        st = self._store
        limit = RELEASE_LIMIT if limit is None else limit
        left = limit
        while True:
            head = st.reorder.head(w)
            due = st.next_deadline(w)
            if head is None and due is None:
                break
            if left <= 0:
                times = [t for t in (head, due) if t is not None]
                w = min(times) - 1
                break
            left -= 1
            if head is not None and (due is None or head <= due):
                self._release(out)
            else:
                op = st.first_due()
                assert op is not None
                self._rules.expire_op(op, op.deadline, out, evicted=None)
        if st.expire_markers(w) or keep or left < limit:
            st.clock.set_watermark(w)

    # -- system events ---------------------------------------------------------------------

    # -- lifecycle -------------------------------------------------------------------------

    # -- single notifications --------------------------------------------------------------

    # -- endings ---------------------------------------------------------------------------

    def _release(self, out: list[Outcome]) -> None:
        """Apply the next buffered notification (one that cannot be read is dropped, counted)."""
        t, event = self._store.reorder.pop()
        if event is not None:
            held = self._held
            if held is not None:
                key = order_key(event)
                if held[key] <= 1:
                    del held[key]
                else:
                    held[key] -= 1
            self._rules.apply(event, t, out)

    def _keep_budget(self, out: list[Outcome]) -> None:
        budget = self._budget
        if budget is not None and self._store.state_bytes() > budget:
            self._shrink(budget, out)

    def _shrink(self, budget: int, out: list[Outcome]) -> None:
        """Bring the state under ``budget`` bytes, with some headroom so a burst does not pay
        for this on every notification: end the operations due first; with none open, apply
        buffered notifications early; markers go last (only duplicates could come of that).
        Markers holding more than half the budget go first, or evicting would not help."""
        st = self._store
        target = budget - budget // 16
        now = st.clock.max_time if st.clock.max_time > st.clock.watermark else st.clock.watermark
        self.counters["over_budget"] += 1
        while st.state_bytes() > target:
            if st.marker_bytes() > budget // 2 and st.forget_first():
                self.counters["done_evicted"] += 1
            elif self._rules.evict(now, out, LIMIT_STATE_BYTES):
                continue
            elif st.reorder.head() is not None:
                self.counters["released_early"] += 1
                self._release(out)
            elif st.reorder.waiting_head() is not None:
                self.counters["released_early"] += 1
                t, event = st.reorder.pop(waiting=True)
                if event is not None:
                    self._rules.apply(event, t, out)
            elif st.forget_first():
                self.counters["done_evicted"] += 1
            else:
                break

    # -- bookkeeping -----------------------------------------------------------------------
