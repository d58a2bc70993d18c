"""The correlator's state machine: one notification applied to its operation, at event time.

:class:`Rules` pairs starts with ends by the table in :mod:`consumer.correlation.transitions`
and the rules for messy streams described in :mod:`consumer.correlation.engine` (duplicates,
stragglers, late completions, clock skew, lifecycles, single notifications, eviction). It
decides *what* a notification means; the engine decides *when* it is applied (at once, or from
the reorder buffer). It works on the plain objects of :mod:`consumer.correlation.objects`
through the state layer (:class:`~consumer.correlation.state.StateStore`).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from typing import Final, NamedTuple

from consumer.correlation.config import CorrelatorConfig
from consumer.correlation.objects import END_BITS, MAX_SPANS, DoneMarker, OpState, PendingOp
from consumer.correlation.ordering import OPENERS, PHASE_INPUT, SHARED_KEYS, role_time
from consumer.correlation.outcome import ATTR_CLOCK_SKEW, ATTR_EVICTED, Outcome, OutcomeKind
from consumer.correlation.state import NO_TIME, StateStore
from consumer.correlation.transitions import (
    LIFECYCLE_CODE,
    LIFECYCLE_OPS,
    SINGLE_STATES,
    STATE_CHANGE,
    TRANSITIONS,
    Action,
    Input,
    close_lifecycle,
)
from consumer.model import InstanceEvent

_SINGLE_STATES = dict(SINGLE_STATES)  # a plain dict: a mappingproxy's get is a slower call


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

HOT_LIMIT = 10_000
"""Operations a batch may hold as objects (about 1.5 KB each) before they are encoded back."""

LIMIT_PENDING: Final = "max_pending"
LIMIT_STATE_BYTES: Final = "max_state_bytes"
"""Values of the ``vmevents.evicted`` attribute: the limit that made the operation end early."""

_OPEN_ENDED: Final = frozenset({"timed_out", "superseded"})
"""Outcomes of operations that ended without an end notification: one may still arrive."""


class Rules:
    """The state machine over one partition's state. ``wall`` is the processing time of the
    current call (``decided_at`` of what it emits); ``floor``, while a late notification is
    applied, the watermark its waits count from."""

    def __init__(self, config: CorrelatorConfig, store: StateStore, counters: Counter[str]) -> None:
        self.config = config
        self.counters = counters
        self.wall = 0
        self.floor = NO_TIME
        self._timeouts = dict(config.timeouts)  # a plain dict: faster than the read-only view
        self._default_timeout = config.default_timeout_ms
        self._store = store
        self._done = store.done
        handlers: dict[Action, Handler] = {
            Action.ANNOUNCE: self._renotice,
            Action.RENOTICE: self._renotice,
            Action.BEGIN: self._begin,
            Action.RESTART: self._restart,
            Action.HOLD_END: self._hold_end,
            Action.EMIT_FINAL: self._emit_final,
            Action.PAIR: self._pair,
            Action.REEND: self._reend,
        }
        self._dispatch = {pair: handlers[action] for pair, action in TRANSITIONS.items()}

    def apply(self, event: InstanceEvent, now: int, out: list[Outcome]) -> None:
        """Run one notification through the state machine at event time ``now``."""
        self._store.cool(HOT_LIMIT)  # no operation is held here: a safe point
        if event["operation"] == LIFECYCLE_CODE and event["current_state"] is not None:
            self._lifecycle(event, now, out)
            return
        phase = event["phase"]
        role = PHASE_INPUT.get(phase) if phase is not None else None
        if role is None:
            self._single(event, now, out, event["operation"], None)
            return
        inp, end_kind = role
        code = event["vendor_event_code"]
        shared = SHARED_KEYS.get(code)  # two vendor codes telling one operation
        eid = event["vendor_event_id"] if shared is None else None
        if eid is None:
            key = f"{event['vendor']}|{event['instance_id']}|{shared or code}"
        else:
            key = f"{event['vendor']}|{event['instance_id']}|{code}|{eid}"
        self._step(_new_step(Step, (key, eid is not None, inp, role_time(event, inp), end_kind,
                                    event["operation"], None, None)), event, now, out)

    def _step(self, s: Step, event: InstanceEvent, now: int, out: list[Outcome]) -> None:
        key = s.key
        op = self._store.get(key)
        if op is not None and op.deadline < now:
            # Applied at once, ahead of the watermark: the deadline came first in event time,
            # as it would have on release.
            self.expire_op(op, op.deadline, out, evicted=None)
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
                self.evict(now, out, LIMIT_PENDING)
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
            closing = OPENERS.get(prev.lower())
        else:  # the vendor names only the new state: the previous one is what we hold open
            if self._lifecycle_straggler(base, when, now):
                return
            closing = self.open_lifecycle(base, cur_l)
        handled = False
        if closing is not None:
            kind, name = close_lifecycle(closing, cur_l)
            self._step(Step(base + closing, False, _END, when, kind, name, prev, cur),
                       event, now, out)
            handled = True
        opening = OPENERS.get(cur_l)
        if opening is not None:
            self._step(Step(base + opening, False, _START, when, None, opening, cur),
                       event, now, out)
            handled = True
        single = _SINGLE_STATES.get(cur_l)
        if single is not None or not handled:
            self._single(event, now, out, single or STATE_CHANGE, cur)

    def open_lifecycle(self, base: str, new_state: str) -> str | None:
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

    def expire_op(self, op: PendingOp, now: int, out: list[Outcome], evicted: str | None) -> None:
        if op.state is _ENDED:
            self._orphan(op, now, out, evicted=evicted)
        else:
            self.counters["timed_out"] += 1
            self._finish(op, "timed_out", op.start_at, None, now, out,
                         timeout_ms=op.timeout_ms, evicted=evicted)

    def evict(self, now: int, out: list[Outcome], limit: str) -> bool:
        """Make room: the operation due first ends now, as its deadline would. False when
        there is none."""
        op = self._store.first_due()
        if op is None:
            return False
        self.counters["evicted"] += 1
        self.expire_op(op, now, out, evicted=limit)
        return True

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
            "to_state": op.to_state, "decided_at": self.wall,
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

    def _arm(self, op: PendingOp) -> None:
        """Set ``op``'s deadline (event time) from its latest notification, by its state: the
        same whatever order its notifications came in."""
        cfg = self.config
        last = op.last_when if op.last_when > self.floor else self.floor
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
        since = now if now > self.floor else self.floor
        if open_end:
            ttl = max(cfg.done_ttl_ms, cfg.late_end_horizon_ms)
            marker = DoneMarker(first, last, True, by_id, since + ttl, start, notice, from_state,
                                older)
        else:
            marker = DoneMarker(first, last, False, by_id, since + cfg.done_ttl_ms, older=older,
                                ends=ends)
        self._store.remember(key, marker, cfg.max_done)
