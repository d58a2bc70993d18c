"""The correlator: a pure state machine over one partition's normalized events.

One instance per Kafka partition, no Kafka import, an injected clock (epoch ms). The runtime
calls :meth:`Correlator.process` per event and :meth:`Correlator.expire` per poll, then writes
:meth:`Correlator.drain_changes` to the changelog in the same transaction as the outcomes;
:meth:`Correlator.restore` rebuilds the state from that changelog after a rebalance.

Per event: a few dict lookups, one heap push when an operation's deadline moves, and one
outcome dict when something ends. No copies of the event.

Rules for messy streams, beyond the table in :mod:`consumer.correlation.transitions`:

- Duplicates. Inside an open operation, a repeated phase with the same time is dropped. After an
  operation finished, a marker remembers it (``done_ttl_ms``, at most ``max_done``): on a key with
  a vendor event id everything later on that key is dropped; on a key without one, a
  notification at or before the operation's last time is a straggler and is dropped, a later one
  starts the next operation. Single notifications are remembered by their exact time.
- Timeouts run on the processing clock from the last notification (see ``config.py``), so a
  quiet partition times out and a replay of old events does not. ``expire`` emits them.
- Clock skew: an end before its start never gives a negative duration. Within
  ``skew_tolerance_ms`` (or always, with a vendor event id) the duration is clamped to 0 and the
  skew reported in ``attributes["vmevents.clock_skew_ms"]``; further back, without an event id,
  the end belongs to an earlier operation whose start was lost and is emitted alone.
- Bounded memory: at most ``max_pending`` open operations; a new one evicts the one due first,
  emitted as if its deadline had passed (``timed_out``, or its held end), flagged
  ``vmevents.evicted``. Never dropped silently.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from typing import Any, NamedTuple

from consumer.correlation.config import CorrelatorConfig
from consumer.correlation.outcome import ATTR_CLOCK_SKEW, ATTR_EVICTED, Outcome, OutcomeKind
from consumer.correlation.state import DoneMarker, OpState, PendingOp
from consumer.correlation.store import StateStore
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
_NOTICE, _START, _END = Input.NOTICE, Input.START, Input.END


class Correlator:
    """Pairs the notifications of each operation into one :class:`Outcome`. See module doc."""

    def __init__(self, config: CorrelatorConfig, clock: Clock) -> None:
        self.config = config
        self._clock = clock
        self._timeouts = dict(config.timeouts)  # a plain dict: faster than the read-only view
        self._default_timeout = config.default_timeout_ms
        self.counters: Counter[str] = Counter()
        """Anomalies seen (duplicate, straggler, superseded, clock_skew, evicted, ...) for metrics."""
        self._store = StateStore(self.counters)
        self._pending = self._store.pending
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
        return len(self._pending)

    # -- public API ------------------------------------------------------------------------

    def process(self, event: InstanceEvent) -> list[Outcome]:
        """Take one notification; return the outcomes it completes (usually zero or one)."""
        now = self._clock()
        out: list[Outcome] = []
        if event["operation"] == LIFECYCLE_CODE and event["current_state"] is not None:
            self._lifecycle(event, now, out)
            return out
        phase = event["phase"]
        role = _PHASE_INPUT.get(phase) if phase is not None else None
        if role is None:
            self._single(event, now, out, event["operation"], None)
            return out
        inp, end_kind = role
        code = event["vendor_event_code"]
        shared = _SHARED_KEYS.get(code)  # two vendor codes telling one operation
        eid = event["vendor_event_id"] if shared is None else None
        if eid is None:
            key = f"{event['vendor']}|{event['instance_id']}|{shared or code}"
        else:
            key = f"{event['vendor']}|{event['instance_id']}|{code}|{eid}"
        if inp is _START:
            when = event["start_time"]
        elif inp is _NOTICE:
            when = None
        else:
            when = event["end_time"]
        if when is None:
            when = event["event_time"]
        self._step(_new_step(Step, (key, eid is not None, inp, when, end_kind, event["operation"],
                                    None, None)), event, now, out)
        return out

    def expire(self, now_ms: int | None = None) -> list[Outcome]:
        """Emit what is due at ``now_ms`` (default: the clock) and forget expired markers."""
        now = self._clock() if now_ms is None else now_ms
        out: list[Outcome] = []
        for op in self._store.due(now):
            self._expire_op(op, now, out, evicted=False)
        self._store.expire_markers(now)
        return out

    def drain_changes(self) -> list[tuple[str, bytes | None]]:
        """Changelog writes since the last call, one per key (latest state or a tombstone).

        Keys are ``p|<operation key>`` (open operation) and ``d|<operation key>`` (finished
        marker); values are JSON (see :mod:`consumer.correlation.state`).
        """
        return self._store.drain()

    def restore(self, key: str, value: bytes | None) -> None:
        """Apply one changelog record (in log order; the last write wins, None deletes).

        Produces no changes to drain. A record that cannot be read is skipped and counted
        (``restore_skipped``): one corrupt record must not keep a partition from starting.
        """
        self._store.restore(key, value)

    def snapshot(self) -> dict[str, dict[str, Any]]:
        """Changelog key -> decoded state of everything held (for tests and debugging)."""
        return self._store.snapshot()

    # -- system events ---------------------------------------------------------------------

    def _step(self, s: Step, event: InstanceEvent, now: int, out: list[Outcome]) -> None:
        key = s.key
        op = self._pending.get(key)
        marker = self._done.get(key)
        if marker is not None and marker.expires > now and self._finished(s, op, marker):
            return
        state = op.state if op is not None else _NONE
        self._dispatch[(state, s.input)](s, op, event, now, out)

    def _finished(self, s: Step, op: PendingOp | None, marker: DoneMarker) -> bool:
        """Whether ``s`` belongs to an operation that already has its outcome (drop it)."""
        if marker.by_id or s.when <= marker.last:
            self.counters["straggler"] += 1
            return True
        if marker.open_end and op is None and s.input is _END:
            # The late end of an operation that timed out: its outcome is out; note the end
            # so its duplicates are recognised too.
            self.counters["late_end"] += 1
            self._store.touch_marker(s.key)
            marker.last = s.when
            marker.open_end = False
            return True
        return False

    def _take(self, s: Step, op: PendingOp | None, event: InstanceEvent, now: int,
              out: list[Outcome]) -> PendingOp:
        """The open operation of ``s.key`` with ``event`` absorbed, opened if there is none."""
        if op is None:
            if len(self._pending) >= self.config.max_pending:
                self._evict(now, out)
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
        self._arm(op, s.when, now)

    def _begin(self, s: Step, op: PendingOp | None, event: InstanceEvent, now: int,
               out: list[Outcome]) -> None:
        op = self._take(s, op, event, now, out)
        op.state = _STARTED
        op.start_at = s.when
        self._arm(op, s.when, now)

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
            self._arm(op, s.when, now)
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
            self._finish_end(op, s, vendor_start, now, out)
            return
        op.state = _ENDED
        op.end_at = s.when
        op.end_kind = s.end_kind
        self._arm(op, s.when, now)

    def _emit_final(self, s: Step, op: PendingOp | None, event: InstanceEvent, now: int,
                    out: list[Outcome]) -> None:
        op = self._take(s, op, event, now, out)
        start = event["start_time"]
        self._finish_end(op, s, op.start_at if start is None else start, now, out)

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
            self._finish_end(op, s, start, now, out)
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
            op = self._pending.get(base + name)
            if op is not None and op.state is _STARTED and (
                    best is None or (op.start_at or 0) > (best.start_at or 0)):
                best = op
        if best is None or (best.from_state or "").lower() == new_state:
            return None
        return best.key[len(base):]

    def _lifecycle_straggler(self, base: str, when: int, now: int) -> bool:
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
                evicted: bool = False) -> None:
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
                    out: list[Outcome]) -> None:
        assert s.end_kind is not None
        self._finish(op, s.end_kind, start, s.when, now, out)

    def _expire_op(self, op: PendingOp, now: int, out: list[Outcome], evicted: bool) -> None:
        if op.state is _ENDED:
            self._orphan(op, now, out, evicted=evicted)
        else:
            self.counters["timed_out"] += 1
            self._finish(op, "timed_out", op.start_at, None, now, out,
                         timeout_ms=op.timeout_ms, evicted=evicted)

    def _evict(self, now: int, out: list[Outcome]) -> None:
        """Make room for one operation: the one due first ends now, as its deadline would."""
        op = self._store.first_due()
        if op is not None:
            self.counters["evicted"] += 1
            self._expire_op(op, now, out, evicted=True)

    def _finish(self, op: PendingOp, kind: OutcomeKind, started: int | None,
                finished: int | None, now: int, out: list[Outcome], *,
                timeout_ms: int | None = None, evicted: bool = False,
                last: int | None = None) -> None:
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
            attrs = {**attrs, ATTR_EVICTED: "max_pending"}
        out.append({
            "outcome": kind, "operation": op.operation, "vendor_event_code": op.code,
            "vendor": op.vendor, "known": op.known, "region": op.region,
            "account_id": op.account_id, "instance_id": op.instance_id,
            "vendor_event_id": op.vendor_event_id, "started_at": started,
            "finished_at": finished, "start_known": started is not None,
            "duration_ms": duration, "scheduled_at": notice, "not_before": op.not_before,
            "lead_time_ms": lead, "timeout_ms": timeout_ms, "from_state": op.from_state,
            "to_state": op.to_state, "decided_at": now, "notification_ids": op.nids,
            "sources": op.sources, "attributes": attrs or {},
        })
        high = op.last_when if last is None or last < op.last_when else last
        self._remember(op.key, op.by_id, high, finished is None and kind in _OPEN_ENDED, now)

    # -- bookkeeping -----------------------------------------------------------------------

    def _arm(self, op: PendingOp, when: int, now: int) -> None:
        """Set ``op``'s deadline from now (processing time), by its state."""
        cfg = self.config
        if op.state is _STARTED:
            delay = self._timeouts.get(op.operation, self._default_timeout)
        elif op.state is _ENDED:
            delay = cfg.orphan_end_grace_ms
        elif op.not_before is not None:  # announced: wait until notBefore, then the timeout
            delay = max(op.not_before - when, 0) + self._timeouts.get(op.operation,
                                                                      self._default_timeout)
        else:
            delay = cfg.notice_timeout_ms
        op.timeout_ms = delay
        self._store.schedule(op, now + delay)

    def _remember(self, key: str, by_id: bool, last: int, open_end: bool, now: int) -> None:
        old = self._done.get(key)
        if old is not None and old.expires > now and old.last > last:  # a live marker
            last = old.last
        marker = DoneMarker(last, open_end, by_id, now + self.config.done_ttl_ms)
        self._store.remember(key, marker, self.config.max_done)


_OPEN_ENDED: frozenset[str] = frozenset({"timed_out", "superseded"})
"""Outcomes of operations that ended without an end notification: one may still arrive."""
