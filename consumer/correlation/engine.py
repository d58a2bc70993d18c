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
  expire first are forgotten. Never dropped silently.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable
from hashlib import blake2b
from typing import Any, NamedTuple

from consumer.correlation.config import CorrelatorConfig
from consumer.correlation.openops import OpenRecord, open_record
from consumer.correlation.outcome import ATTR_CLOCK_SKEW, ATTR_EVICTED, Outcome, OutcomeKind
from consumer.correlation.state import (
    END_BITS,
    MAX_SPANS,
    DoneMarker,
    OpState,
    PendingOp,
    decode_notification,
    encode_notification,
    notification_core,
)
from consumer.correlation.store import DECODE_ERRORS, NO_TIME, WAITING, StateStore
from consumer.correlation.transitions import (
    CODE_PAIRS,
    LIFECYCLE_CODE,
    LIFECYCLE_OPS,
    OPENERS,
    PHASE_INPUT,
    SINGLE_STATES,
    STATE_CHANGE,
    TRANSITIONS,
    Action,
    Input,
    close_lifecycle,
)
from consumer.model import InstanceEvent

Clock = Callable[[], int]

# Plain dicts of the read-only tables: a mappingproxy's get is a slower call, once per event.
_PHASE_INPUT = dict(PHASE_INPUT)
_OPENERS = dict(OPENERS)
_SINGLE_STATES = dict(SINGLE_STATES)
_SHARED_KEYS = {**{opener: opener for opener in CODE_PAIRS},
                **{closer: opener for opener, closer in CODE_PAIRS.items()}}


class Step(NamedTuple):
    """One notification's meaning for one operation key."""

    key: str
    by_id: bool
    input: Input
    when: int  # vendor time of this notification's role: start, end or notice time
    end_kind: OutcomeKind | None
    operation: str
    from_state: str | None = None
    to_state: str | None = None


Handler = Callable[[Step, "PendingOp | None", InstanceEvent, int, list[Outcome]], None]

_new_step = tuple.__new__
"""``_new_step(Step, fields)`` builds a Step without NamedTuple's Python-level ``__new__``."""

# Enum members as module constants: ``OpState.STARTED`` read off the class goes through the
# enum metaclass's attribute hook (~1k instructions in Python 3.11), a global costs ~50.
_NONE, _ANNOUNCED, _STARTED, _ENDED = OpState.NONE, OpState.ANNOUNCED, OpState.STARTED, OpState.ENDED
_NOTICE, _START, _END, _FINAL = Input.NOTICE, Input.START, Input.END, Input.FINAL

# Release order among notifications of the same time: an end closes its operation before the
# next one on the key opens at the same second; notices and singles in between.
_RANK_END, _RANK_NOTICE, _RANK_START = 0, 1, 2
_ROLE_RANK = {_END: _RANK_END, _FINAL: _RANK_END, _NOTICE: _RANK_NOTICE, _START: _RANK_START}

LateKey = tuple[str, str, bool]
"""(vendor, operation, known) of a late notification, for the runtime's metric labels."""

PENDING_TIME_FIELDS = frozenset({"scheduled_at", "not_before", "started_at", "ended_at",
                                 "last_notification_at", "deadline"})
"""Times in :meth:`Correlator.pending_operations` records (epoch ms; the CLI prints ISO-8601)."""


def release_key(event: InstanceEvent) -> tuple[int, int, str]:
    """The reorder buffer's total order of a notification: (time of its role, rank, digest).

    The offline command sorts its whole input by this key, which is the order the buffer
    releases notifications in online.
    """
    t, rank, _ = _place(event)
    return t, rank, _digest(notification_core(event))


def _digest(core: bytes) -> str:
    return blake2b(core, digest_size=8).hexdigest()


def _place(event: InstanceEvent) -> tuple[int, int, bool]:
    """(time of the notification's role, release rank, whether it is applied on arrival)."""
    if event["operation"] == LIFECYCLE_CODE and event["current_state"] is not None:
        opens = event["current_state"].lower() in _OPENERS
        return event["event_time"], _RANK_START if opens else _RANK_END, False
    phase = event["phase"]
    role = _PHASE_INPUT.get(phase) if phase is not None else None
    if role is None:
        return event["event_time"], _RANK_NOTICE, True
    inp = role[0]
    return _role_time(event, inp), _ROLE_RANK[inp], event["vendor_event_id"] is not None


def _role_time(event: InstanceEvent, inp: Input) -> int:
    """The vendor time of a notification's role: its start, its end, else its event time."""
    if inp is _NOTICE:
        return event["event_time"]
    when = event["start_time"] if inp is _START else event["end_time"]
    return event["event_time"] if when is None else when


def _order_key(event: InstanceEvent) -> str:
    """The key whose notifications must be applied in time order: an operation without a
    vendor event id, or (ending in ``|``) an instance's lifecycle, whose state changes open and
    close the operations of several states."""
    code = event["vendor_event_code"]
    base = f"{event['vendor']}|{event['instance_id']}|"
    if event["operation"] == LIFECYCLE_CODE and event["current_state"] is not None:
        return f"{base}{code}|"
    return base + _SHARED_KEYS.get(code, code)


def notification_time(event: InstanceEvent) -> int:
    """The time the correlator orders a notification by (its role's vendor time): what the
    normalize stage reports as its progress through a raw partition."""
    return _place(event)[0]


class Correlator:
    """Pairs the notifications of each operation into one :class:`Outcome`. See module doc."""

    def __init__(self, config: CorrelatorConfig, clock: Clock) -> None:
        self.config = config
        self._clock = clock
        self._timeouts = dict(config.timeouts)  # a plain dict: faster than the read-only view
        self._default_timeout = config.default_timeout_ms
        self._lateness = config.allowed_lateness_ms
        self._wall = 0  # processing time of the current call: decided_at of what it emits
        self._floor = NO_TIME  # while a late notification is applied: the watermark
        self._seen_w = NO_TIME  # the watermark of the last call (kept or not)
        self.counters: Counter[str] = Counter()
        """Anomalies seen (duplicate, straggler, superseded, clock_skew, evicted, late,
        late_completion, ...) for metrics."""
        self.late: Counter[LateKey] = Counter()
        """Notifications that arrived behind the watermark, by (vendor, operation, known)."""
        self._store = StateStore(self.counters)
        self._held: Counter[str] | None = Counter()
        """Order key -> its notifications in the reorder buffer (None: to count again)."""
        self._budget: int | None = None
        self._done = self._store.done
        self._handlers: dict[Action, Handler] = {
            Action.ANNOUNCE: self._renotice,
            Action.RENOTICE: self._renotice,
            Action.BEGIN: self._begin,
            Action.RESTART: self._restart,
            Action.HOLD_END: self._hold_end,
            Action.EMIT_FINAL: self._emit_final,
            Action.PAIR: self._pair,
            Action.REEND: self._reend,
        }
        self._dispatch = {pair: self._handlers[action] for pair, action in TRANSITIONS.items()}

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
        return len(self._store.buffer)

    @property
    def frontier_lag(self) -> int:
        """Newest notification time minus the upstream frontier, in ms (0: no raw partition
        is behind): how long the slowest upstream partition holds decisions back."""
        st = self._store
        frontier = st.frontier()
        if frontier is None or st.max_time == NO_TIME or frontier >= st.max_time:
            return 0
        return st.max_time - max(frontier, st.watermark)

    @property
    def watermark(self) -> int | None:
        """Event time up to which everything is decided (None before the first event), as of
        the last call."""
        w = max(self._store.watermark, self._seen_w)
        return None if w == NO_TIME else w

    # -- public API ------------------------------------------------------------------------

    def process(self, event: InstanceEvent) -> list[Outcome]:
        """Take one notification; return the outcomes that are decided now (zero or more)."""
        now = self._wall = self._clock()
        out: list[Outcome] = []
        st = self._store
        t, rank, at_once = _place(event)
        st.see(t, now)
        self._advance(self._watermark_at(now), out, keep=True)
        if t <= st.watermark:
            self.counters["late"] += 1
            self.late[(event["vendor"], event["operation"], event["known"])] += 1
            # Its waits (grace for its start, timeout for its end) count from the watermark,
            # as if it had come in time: its partner is usually right behind it.
            self._floor = st.watermark
            try:
                self._apply(event, t, out)
            finally:
                self._floor = NO_TIME
            self._advance(st.watermark, out)
        elif (frontier := st.frontier()) is not None and t > frontier:
            # An upstream partition has not been normalized this far yet: what it holds may
            # come before this notification (with a vendor event id too: a notice whose time
            # the outcome reports). Wait for it, not for the watermark.
            core = notification_core(event)
            if not st.buffer_add(t, rank, _digest(core), encode_notification(core, event),
                                 waiting=True):
                self.counters["duplicate"] += 1
        elif at_once:
            self._apply(event, t, out)
        else:
            self._arrive(event, t, rank, out)
        self._keep_budget(out)
        return out

    def progress(self, entries: Iterable[tuple[str, int, bool]]) -> list[Outcome]:
        """Upstream progress, one mark's ``(raw partition, newest, caught_up)`` entries: the
        normalize stage has read each raw partition up to notifications of time ``newest``
        (``caught_up``: to its end). Notifications waiting for that are decided now, once per
        mark; the watermark never passes a partition still behind."""
        now = self._wall = self._clock()
        out: list[Outcome] = []
        st = self._store
        changed = False
        for source, newest, caught_up in entries:
            if st.progress(source, newest, caught_up):
                st.see(newest, now)  # the stream's time is the newest over every raw partition
                changed = True
        if changed:
            self._release_waiting(out)
            self._advance(self._watermark_at(now), out, keep=True)
        return out

    def _release_waiting(self, out: list[Outcome], limit: int | None = None) -> None:
        """Notifications the frontier has passed, in time order, as if they arrived now."""
        st = self._store
        left = RELEASE_LIMIT if limit is None else limit
        frontier = st.frontier()
        while left > 0 and st.waiting_head(frontier) is not None:
            left -= 1
            t, event = st.buffer_pop(waiting=True)
            if event is None:
                continue
            _, rank, at_once = _place(event)
            if at_once or t <= st.watermark:  # (the watermark passed it meanwhile: as late)
                self._apply(event, t, out)
            else:
                self._arrive(event, t, rank, out)

    def _arrive(self, event: InstanceEvent, t: int, rank: int, out: list[Outcome]) -> None:
        """A notification without a vendor event id, in time: decided at once when its key is
        consistent, else held in the reorder buffer until the watermark passes it."""
        key = _order_key(event)
        held = self._held_keys()
        disorder = self._disorder(event, key, t, rank)
        if disorder is None and held[key] == 0:
            self._apply(event, t, out)
            return
        core = notification_core(event)
        if not self._store.buffer_add(t, rank, _digest(core), encode_notification(core, event)):
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
            for bid, value in self._store.buffer.items():
                if bid.endswith(WAITING):
                    continue
                try:
                    held[_order_key(decode_notification(value))] += 1
                except DECODE_ERRORS:
                    continue
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
            opening = _OPENERS.get(cur.lower()) if cur is not None else None
        else:
            names = ("",)
            opening = "" if rank == _RANK_START else None
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
                and cur is not None and self._open_lifecycle(key, cur.lower()) is None):
            # A new state alone (Alibaba names no previous one) that closes nothing open would
            # be reported on its own at once; the change that opened it may still come. It
            # waits, as an end without its start would in its grace window.
            return "unpaired_state"
        return None

    def expire(self, now_ms: int | None = None) -> list[Outcome]:
        """Advance the watermark to processing time ``now_ms`` (default: the clock): release
        the buffered notifications and fire the deadlines it passes, forget expired markers."""
        now = self._wall = self._clock() if now_ms is None else now_ms
        out: list[Outcome] = []
        self._release_waiting(out)  # what one release could not take (RELEASE_LIMIT)
        self._advance(self._watermark_at(now), out)
        self._keep_budget(out)  # a restored state can be over a budget made smaller
        return out

    def flush(self) -> list[Outcome]:
        """End of input (offline): the watermark moves to the newest event time, as on a quiet
        partition once the allowed lateness has passed: everything buffered is released and
        what is due by then times out. Later operations stay pending."""
        self._wall = self._clock()
        out: list[Outcome] = []
        st = self._store
        for source, (newest, _) in list(st.sources.items()):
            st.progress(source, newest, True)
        self._release_waiting(out, limit=1 << 62)
        if st.max_time != NO_TIME:
            self._advance(max(st.max_time, st.watermark), out, limit=1 << 62, keep=True)
        return out

    def resume(self) -> None:
        """The partition was not read for a while (restored, reassigned, broker away): the
        processing-time advance of the watermark restarts from the next call instead of
        counting that time as quiet."""
        self._store.resume()

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

    def drain_changes(self) -> list[tuple[str, bytes | None]]:
        """Changelog writes since the last call, one per key (latest state or a tombstone).

        Keys are ``p|<operation key>`` (open operation), ``d|<operation key>`` (finished
        marker), ``b|<t>|<rank>|<digest>`` (buffered notification) and ``w|`` (watermark);
        values are JSON (see :mod:`consumer.correlation.state`).
        """
        return self._store.drain()

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
        return [(op.key, open_record(op.as_dict(), now)) for op in self._store.ops()]

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
        if st.max_time == NO_TIME:
            return st.watermark
        anchor = st.anchor
        if anchor is None:  # restored or resumed: quiet time counts from here
            st.anchor = anchor = now
        idle = now - anchor if now > anchor else 0
        w = st.max_time + idle
        frontier = st.frontier()
        if frontier is not None and frontier < w:
            w = frontier  # a raw partition still behind may hold older notifications
        w -= self._lateness
        w = max(w, st.watermark)
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
            head = st.buffer_head(w)
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
                self._expire_op(op, op.deadline, out, evicted=None)
        if st.expire_markers(w) or keep or left < limit:
            st.set_watermark(w)

    def _apply(self, event: InstanceEvent, now: int, out: list[Outcome]) -> None:
        """Run one notification through the state machine at event time ``now``."""
        self._store.cool(HOT_LIMIT)  # no operation is held here: a safe point
        if event["operation"] == LIFECYCLE_CODE and event["current_state"] is not None:
            self._lifecycle(event, now, out)
            return
        phase = event["phase"]
        role = _PHASE_INPUT.get(phase) if phase is not None else None
        if role is None:
            self._single(event, now, out, event["operation"], None)
            return
        inp, end_kind = role
        code = event["vendor_event_code"]
        shared = _SHARED_KEYS.get(code)  # two vendor codes telling one operation
        eid = event["vendor_event_id"] if shared is None else None
        if eid is None:
            key = f"{event['vendor']}|{event['instance_id']}|{shared or code}"
        else:
            key = f"{event['vendor']}|{event['instance_id']}|{code}|{eid}"
        self._step(_new_step(Step, (key, eid is not None, inp, _role_time(event, inp), end_kind,
                                    event["operation"], None, None)), event, now, out)

    # -- system events ---------------------------------------------------------------------

    def _step(self, s: Step, event: InstanceEvent, now: int, out: list[Outcome]) -> None:
        key = s.key
        op = self._store.get(key)
        if op is not None and op.deadline < now:
            # Applied at once, ahead of the watermark: the deadline came first in event time,
            # as it would have on release.
            self._expire_op(op, op.deadline, out, evicted=None)
            op = None
        marker = self._done.get(key)
        if marker is not None and marker.expires > now and self._finished(s, op, marker, event,
                                                                          now, out):
            return
        state = op.state if op is not None else _NONE
        self._dispatch[(state, s.input)](s, op, event, now, out)

    def _finished(self, s: Step, op: PendingOp | None, marker: DoneMarker,
                  event: InstanceEvent, now: int, out: list[Outcome]) -> bool:
        """Whether ``s`` belongs to an operation that already has its outcome: a straggler
        (dropped), or the late end of one that timed out (its real outcome is emitted)."""
        if (marker.open_end and op is None and (s.input is _END or s.input is _FINAL)
                and (marker.by_id or s.when > marker.last)):
            self._late_completion(s, marker, event, now, out)
            return True
        if marker.ends and s.when == marker.last and event["start_time"] is not None and (
                s.input is _END or s.input is _FINAL):
            # An end that carries its own start, at the time of an end of the same kind already
            # reported: a duplicate; of another kind: the vendor's other account of the same
            # operation, reported as well (so both are, whichever came first).
            assert s.end_kind is not None
            bit = END_BITS[s.end_kind]
            if marker.ends & bit:
                self.counters["duplicate"] += 1
            else:
                self.counters["conflicting_end"] += 1
                self._finish(self._alone(s, event), s.end_kind, event["start_time"], s.when, now,
                             out, ends=bit)
            return True
        if marker.by_id:
            self.counters["straggler"] += 1
            return True
        if s.when <= marker.last:
            if marker.covers(s.when, self.config.skew_tolerance_ms):
                self.counters["straggler"] += 1
                return True
            self.counters["older_operation"] += 1  # arrived after a newer one: still applied
        return False

    def _late_completion(self, s: Step, marker: DoneMarker, event: InstanceEvent, now: int,
                         out: list[Outcome]) -> None:
        """The end of an operation already reported ``timed_out``: its real outcome, once (the
        marker then holds the end, so a duplicate of it is a straggler)."""
        self.counters["late_completion"] += 1
        op = self._alone(s, event)
        op.notice_at = marker.notice
        if op.from_state is None:
            op.from_state = marker.from_state
        vendor_start = event["start_time"]
        start = marker.start if vendor_start is None else vendor_start
        assert s.end_kind is not None
        self._finish(op, s.end_kind, start, s.when, now, out, after_timeout=True)

    def _take(self, s: Step, op: PendingOp | None, event: InstanceEvent, now: int,
              out: list[Outcome]) -> PendingOp:
        """The open operation of ``s.key`` with ``event`` absorbed, opened if there is none."""
        if op is None:
            if self._store.pending_count >= self.config.max_pending:
                self._evict(now, out, LIMIT_PENDING)
            op = PendingOp(s.key, event, s.operation, s.by_id, s.when)
            self._store.add(op)
        else:
            self._store.changing(op)
        op.absorb(event, s.when)
        if s.from_state is not None and op.from_state is None:
            op.from_state = s.from_state
        return op

    def _renotice(self, s: Step, op: PendingOp | None, event: InstanceEvent, now: int,
                  out: list[Outcome]) -> None:
        """ANNOUNCE / RENOTICE: keep the earliest announcement time and the latest notBefore."""
        op = self._take(s, op, event, now, out)
        notice = event["publish_time"]
        if notice is None:
            notice = event["event_time"]
        if op.notice_at is None or notice < op.notice_at:
            op.notice_at = notice
        if op.state is _NONE:
            op.state = _ANNOUNCED
        self._arm(op)

    def _begin(self, s: Step, op: PendingOp | None, event: InstanceEvent, now: int,
               out: list[Outcome]) -> None:
        op = self._take(s, op, event, now, out)
        op.state = _STARTED
        op.start_at = s.when
        self._arm(op)

    def _restart(self, s: Step, op: PendingOp | None, event: InstanceEvent, now: int,
                 out: list[Outcome]) -> None:
        """A second start while started: duplicate, same operation, or a newer operation."""
        assert op is not None
        start = op.start_at
        assert start is not None
        if s.when == start:
            self.counters["duplicate"] += 1
        elif op.by_id:  # the vendor's id says it is the same operation: keep the earliest start
            op = self._take(s, op, event, now, out)
            op.start_at = min(s.when, start)
            self._arm(op)
        elif s.when > start:
            self.counters["superseded"] += 1
            self._finish(op, "superseded", start, None, now, out, last=s.when - 1)
            self._begin(s, None, event, now, out)
        else:  # the late start of an older operation whose end was lost
            self.counters["superseded"] += 1
            self._finish(self._alone(s, event), "superseded", s.when, None, now, out)

    def _hold_end(self, s: Step, op: PendingOp | None, event: InstanceEvent, now: int,
                  out: list[Outcome]) -> None:
        op = self._take(s, op, event, now, out)
        op.operation = s.operation
        op.to_state = s.to_state
        vendor_start = event["start_time"]
        if vendor_start is not None:  # the end record gives its own start: complete already
            self._finish_end(op, s, vendor_start, now, out, own=True)
            return
        op.state = _ENDED
        op.end_at = s.when
        op.end_kind = s.end_kind
        self._arm(op)

    def _emit_final(self, s: Step, op: PendingOp | None, event: InstanceEvent, now: int,
                    out: list[Outcome]) -> None:
        op = self._take(s, op, event, now, out)
        start = event["start_time"]
        self._finish_end(op, s, op.start_at if start is None else start, now, out,
                         own=start is not None)

    def _pair(self, s: Step, op: PendingOp | None, event: InstanceEvent, now: int,
              out: list[Outcome]) -> None:
        """A start meets its end, whichever came first."""
        assert op is not None
        tolerance = self.config.skew_tolerance_ms
        if op.state is _STARTED:  # the end arrives
            assert op.start_at is not None
            vendor_start = event["start_time"]
            start = op.start_at if vendor_start is None else vendor_start
            if not op.by_id and s.when < start - tolerance:
                self._orphan(self._alone(s, event), now, out)  # an earlier operation's end
                return
            op = self._take(s, op, event, now, out)
            op.operation = s.operation
            op.to_state = s.to_state
            self._finish_end(op, s, start, now, out, own=vendor_start is not None)
            return
        end_at, end_kind = op.end_at, op.end_kind  # ENDED: the start arrives
        assert end_at is not None
        assert end_kind is not None
        if not op.by_id and s.when > end_at + tolerance:
            # The held end belongs to an earlier operation; this start opens the next one.
            self._orphan(op, now, out)
            self._begin(s, None, event, now, out)
            return
        op = self._take(s, op, event, now, out)
        op.start_at = s.when
        self._finish(op, end_kind, s.when, end_at, now, out)

    def _reend(self, s: Step, op: PendingOp | None, event: InstanceEvent, now: int,
               out: list[Outcome]) -> None:
        """An end while an end is held (no start yet)."""
        assert op is not None
        assert op.end_at is not None
        if s.when == op.end_at and s.end_kind == op.end_kind:
            self.counters["duplicate"] += 1
        elif op.by_id:
            self.counters["conflicting_end"] += 1  # the first end the vendor sent stands
        elif s.when > op.end_at:  # the held end was an earlier operation's, start lost
            self._orphan(op, now, out)
            self._dispatch[(_NONE, s.input)](s, None, event, now, out)
        else:  # this end is an earlier operation's, start lost
            self._orphan(self._alone(s, event), now, out)

    # -- lifecycle -------------------------------------------------------------------------

    def _lifecycle(self, event: InstanceEvent, now: int, out: list[Outcome]) -> None:
        """A state change closes the lifecycle operation of the state it leaves and opens the
        one of the state it enters; one that does neither is observed on its own."""
        cur = event["current_state"]
        assert cur is not None
        cur_l = cur.lower()
        prev = event["previous_state"]
        when = event["event_time"]
        base = f"{event['vendor']}|{event['instance_id']}|{event['vendor_event_code']}|"
        if prev is not None:
            closing = _OPENERS.get(prev.lower())
        else:  # the vendor names only the new state: the previous one is what we hold open
            if self._lifecycle_straggler(base, when, now):
                return
            closing = self._open_lifecycle(base, cur_l)
        handled = False
        if closing is not None:
            kind, name = close_lifecycle(closing, cur_l)
            self._step(Step(base + closing, False, _END, when, kind, name, prev, cur),
                       event, now, out)
            handled = True
        opening = _OPENERS.get(cur_l)
        if opening is not None:
            self._step(Step(base + opening, False, _START, when, None, opening, cur),
                       event, now, out)
            handled = True
        single = _SINGLE_STATES.get(cur_l)
        if single is not None or not handled:
            self._single(event, now, out, single or STATE_CHANGE, cur)

    def _open_lifecycle(self, base: str, new_state: str) -> str | None:
        """The lifecycle operation open for the instance (latest started), unless ``new_state``
        is the state that opened it (a repeat is not a transition)."""
        best: PendingOp | None = None
        for name in LIFECYCLE_OPS:
            op = self._store.get(base + name)
            if op is not None and op.state is _STARTED and (
                    best is None or (op.start_at or 0) > (best.start_at or 0)):
                best = op
        if best is None:
            return self._timed_out_lifecycle(base, new_state)
        if (best.from_state or "").lower() == new_state:
            return None
        return best.key[len(base):]

    def _timed_out_lifecycle(self, base: str, new_state: str) -> str | None:
        """The lifecycle operation of the instance that timed out most recently and whose end
        has not come yet: a state change that leaves its state is that late end."""
        best: tuple[int, str] | None = None
        for name in LIFECYCLE_OPS:
            marker = self._done.get(base + name)
            if (marker is not None and marker.open_end
                    and (marker.from_state or "").lower() != new_state
                    and (best is None or marker.last > best[0])):
                best = (marker.last, name)
        return None if best is None else best[1]

    def _lifecycle_straggler(self, base: str, when: int, now: int) -> bool:
        """A new-state-only change at or before a reported transition of the instance: a
        redelivery, or one that arrived beyond the lateness after a later one. Without its
        previous state it cannot be placed either way, so it is dropped (counted ``late`` when
        late, and ``straggler``)."""
        for name in LIFECYCLE_OPS:
            marker = self._store.live_marker(base + name, now)
            if marker is not None and when <= marker.last:
                self.counters["straggler"] += 1
                return True
        return False

    # -- single notifications --------------------------------------------------------------

    def _single(self, event: InstanceEvent, now: int, out: list[Outcome], operation: str,
                state: str | None) -> None:
        """A notification that is an operation on its own: emitted at once, deduplicated by
        its exact time (two faults of one instance at different times are two faults)."""
        when = event["event_time"]
        key = (f"{event['vendor']}|{event['instance_id']}|{event['vendor_event_code']}|"
               f"{event['vendor_event_id'] or ''}@{when}|{state or ''}")
        if self._store.live_marker(key, now) is not None:
            self.counters["duplicate"] += 1
            return
        op = PendingOp(key, event, operation, True, when)
        op.absorb(event, when)
        op.from_state = event["previous_state"]
        op.to_state = state
        start, end = event["start_time"], event["end_time"]
        kind: OutcomeKind = "completed" if start is not None and end is not None else "observed"
        self._finish(op, kind, when if start is None else start, end, now, out)

    # -- endings ---------------------------------------------------------------------------

    def _alone(self, s: Step, event: InstanceEvent) -> PendingOp:
        """A detached operation made of this one notification (not held in the state)."""
        op = PendingOp(s.key, event, s.operation, s.by_id, s.when)
        op.absorb(event, s.when)
        op.from_state = s.from_state
        op.to_state = s.to_state
        op.end_at = s.when
        op.end_kind = s.end_kind
        return op

    def _orphan(self, op: PendingOp, now: int, out: list[Outcome], *,
                evicted: str | None = None) -> None:
        """Emit an end whose start never came: no start, no duration, rather than wrong ones.

        Its start, if it shows up after all, is at most ``skew_tolerance_ms`` after the end, so
        the marker covers that much more: the late start is recognised, not taken for a new
        operation that would then time out.
        """
        assert op.end_at is not None
        assert op.end_kind is not None
        self.counters["orphan_end"] += 1
        self._finish(op, op.end_kind, None, op.end_at, now, out, evicted=evicted,
                     last=op.end_at + self.config.skew_tolerance_ms)

    def _finish_end(self, op: PendingOp, s: Step, start: int | None, now: int,
                    out: list[Outcome], *, own: bool = False) -> None:
        """Emit ``op`` ended by ``s``; ``own``: the end carries its own start (remembered, so
        another such end at the same time is told from a duplicate)."""
        assert s.end_kind is not None
        self._finish(op, s.end_kind, start, s.when, now, out,
                     ends=END_BITS[s.end_kind] if own else 0)

    def _expire_op(self, op: PendingOp, now: int, out: list[Outcome], evicted: str | None) -> None:
        if op.state is _ENDED:
            self._orphan(op, now, out, evicted=evicted)
        else:
            self.counters["timed_out"] += 1
            self._finish(op, "timed_out", op.start_at, None, now, out,
                         timeout_ms=op.timeout_ms, evicted=evicted)

    def _evict(self, now: int, out: list[Outcome], limit: str) -> bool:
        """Make room: the operation due first ends now, as its deadline would. False when
        there is none."""
        op = self._store.first_due()
        if op is None:
            return False
        self.counters["evicted"] += 1
        self._expire_op(op, now, out, evicted=limit)
        return True

    def _release(self, out: list[Outcome]) -> None:
        """Apply the next buffered notification (one that cannot be read is dropped, counted)."""
        t, event = self._store.buffer_pop()
        if event is not None:
            held = self._held
            if held is not None:
                key = _order_key(event)
                if held[key] <= 1:
                    del held[key]
                else:
                    held[key] -= 1
            self._apply(event, t, out)

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
        now = st.max_time if st.max_time > st.watermark else st.watermark
        self.counters["over_budget"] += 1
        while st.state_bytes() > target:
            if st.marker_bytes() > budget // 2 and st.forget_first():
                self.counters["done_evicted"] += 1
            elif self._evict(now, out, LIMIT_STATE_BYTES):
                continue
            elif st.buffer_head() is not None:
                self.counters["released_early"] += 1
                self._release(out)
            elif st.waiting_head() is not None:
                self.counters["released_early"] += 1
                t, event = st.buffer_pop(waiting=True)
                if event is not None:
                    self._apply(event, t, out)
            elif st.forget_first():
                self.counters["done_evicted"] += 1
            else:
                break

    def _finish(self, op: PendingOp, kind: OutcomeKind, started: int | None,
                finished: int | None, now: int, out: list[Outcome], *,
                timeout_ms: int | None = None, evicted: str | None = None,
                last: int | None = None, after_timeout: bool = False, ends: int = 0) -> None:
        """Emit ``op``'s outcome, drop it from the open set, remember it as finished."""
        self._store.discard(op)
        attrs = op.attributes
        duration = None
        if started is not None and finished is not None:
            duration = finished - started
            if duration < 0:
                self.counters["clock_skew"] += 1
                attrs = {**attrs, ATTR_CLOCK_SKEW: str(-duration)}
                duration = 0
        notice = op.notice_at
        lead = None
        if notice is not None and started is not None:
            lead = started - notice if started > notice else 0
        if evicted:
            attrs = {**attrs, ATTR_EVICTED: evicted}
        out.append({
            "outcome": kind, "operation": op.operation, "vendor_event_code": op.code,
            "vendor": op.vendor, "known": op.known, "region": op.region,
            "account_id": op.account_id, "instance_id": op.instance_id,
            "vendor_event_id": op.vendor_event_id, "started_at": started,
            "finished_at": finished, "start_known": started is not None,
            "duration_ms": duration, "scheduled_at": notice, "not_before": op.not_before,
            "lead_time_ms": lead, "timeout_ms": timeout_ms, "from_state": op.from_state,
            "to_state": op.to_state, "decided_at": self._wall,
            "after_timeout": after_timeout, "notification_ids": op.nids,
            "sources": op.sources, "attributes": attrs or {},
        })
        high = op.last_when if last is None or last < op.last_when else last
        # An end whose start never came covers everything before it: a start arriving after it
        # was reported is its own, most likely, not another operation's.
        first = started if started is not None else NO_TIME if finished is not None else high
        if finished is None and kind in _OPEN_ENDED:
            self._remember(op.key, op.by_id, first, high, now, open_end=True, start=started,
                           notice=notice, from_state=op.from_state)
        else:
            self._remember(op.key, op.by_id, first, high, now, ends=ends)

    # -- bookkeeping -----------------------------------------------------------------------

    def _arm(self, op: PendingOp) -> None:
        """Set ``op``'s deadline (event time) from its latest notification, by its state: the
        same whatever order its notifications came in."""
        cfg = self.config
        last = op.last_when if op.last_when > self._floor else self._floor
        if op.state is _STARTED:
            delay = self._timeouts.get(op.operation, self._default_timeout)
        elif op.state is _ENDED:
            delay = cfg.orphan_end_grace_ms
        elif op.not_before is not None:  # announced: wait until notBefore, then the timeout
            delay = max(op.not_before - last, 0) + self._timeouts.get(op.operation,
                                                                      self._default_timeout)
        else:
            delay = cfg.notice_timeout_ms
        op.timeout_ms = delay
        self._store.schedule(op, last + delay)

    def _remember(self, key: str, by_id: bool, first: int, last: int, now: int, *,
                  open_end: bool = False, start: int | None = None, notice: int | None = None,
                  from_state: str | None = None, ends: int = 0) -> None:
        """Mark ``key`` finished. One that ended without its end is remembered for the late-end
        horizon, with what its late end's outcome needs. A live marker's span is kept too.

        The marker lives from ``now``, the notification's time, or from the watermark when a
        late notification finished the operation: a marker that expired behind the watermark
        at once would let the next straggler of that operation (a redelivery, or its start
        after an end that carried its own) open or report it a second time.
        """
        cfg = self.config
        old = self._done.get(key)
        older: tuple[int, ...] = ()
        if old is not None and old.expires > now:
            if (first, last) == (old.first, old.last):
                older, ends = old.older, ends | old.ends
            else:
                spans = sorted(zip(*[iter((first, last, *old.spans()))] * 2, strict=True),
                               key=lambda span: span[1], reverse=True)[:MAX_SPANS]
                newest = spans[0][1]
                ends = (ends if last == newest else 0) | (old.ends if old.last == newest else 0)
                (first, last), rest = spans[0], spans[1:]
                older = tuple(t for span in rest for t in span)
        since = now if now > self._floor else self._floor
        if open_end:
            ttl = max(cfg.done_ttl_ms, cfg.late_end_horizon_ms)
            marker = DoneMarker(first, last, True, by_id, since + ttl, start, notice, from_state,
                                older)
        else:
            marker = DoneMarker(first, last, False, by_id, since + cfg.done_ttl_ms, older=older,
                                ends=ends)
        self._store.remember(key, marker, cfg.max_done)


RELEASE_LIMIT = 50_000
"""Buffered notifications released and deadlines fired by one advance of the watermark."""

HOT_LIMIT = 10_000
"""Operations a batch may hold as objects (about 1.5 KB each) before they are encoded back."""

LIMIT_PENDING = "max_pending"
LIMIT_STATE_BYTES = "max_state_bytes"
"""Values of the ``vmevents.evicted`` attribute: the limit that made the operation end early."""

_OPEN_ENDED: frozenset[str] = frozenset({"timed_out", "superseded"})
"""Outcomes of operations that ended without an end notification: one may still arrive."""
