"""Properties of the correlator on generated messy streams.

Many operations of every shape (JD Executing/Executed, Alibaba Scheduled..Executed/Avoided/
Canceled with eventIds, live migration, JD lifecycle, faults, burstable intervals) across
instances, then delivered at least once, in any order, with some notifications lost. Whatever the
stream:

- no operation gets two outcomes, except the real outcome (``after_timeout``) that follows its
  ``timed_out`` alert;
- no duration or lead time is negative, and a duration with a known start is the true one;
- at every moment each operation that was heard of is pending, buffered or has its outcome,
  and the pending set stays within ``max_pending``;
- after the clock runs past every timeout, every operation heard of has exactly one outcome;
- a correlator restored from the changelog continues exactly like one that never stopped.

Operations without a vendor event id get an instance of their own: two overlapping operations of
one code on one instance without an id cannot be told apart by anyone (see transitions.py).
Alibaba's current-state-only lifecycle needs the first delivery of each state in order (or
within the allowed lateness), so it is tested separately with late duplicates only. Streams here
are disordered far beyond the allowed lateness (days); ``test_correlator_event_time.py`` checks
that within it the outcomes do not depend on arrival order at all.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from consumer.correlation import rules
from consumer.correlator import Correlator, CorrelatorConfig, Outcome
from consumer.model import InstanceEvent

MIN = 60_000
HOUR = 60 * MIN
DAY = 24 * HOUR
BASE = 1_614_206_646_000  # 2021-02-24T22:44:06Z
CLOCK0 = 1_700_000_000_000

OpKey = tuple[str, str, str, str | None]


def event(**fields: Any) -> InstanceEvent:
    base: dict[str, Any] = {
        "vendor": "jdcloud", "instance_id": "", "vendor_event_code": "", "operation": "",
        "known": True, "phase": None, "vendor_status": None, "event_time": 0, "region": "r1",
        "account_id": "acct", "notification_id": None, "vendor_event_id": None, "level": None,
        "previous_state": None, "current_state": None, "publish_time": None,
        "not_before": None, "start_time": None, "end_time": None, "source_format": "",
        "attributes": {},
    }
    base.update(fields)
    return base  # type: ignore[return-value]


@dataclass
class Op:
    """One generated operation: its notifications and what the correlator should find."""

    key: OpKey
    events: list[InstanceEvent] = field(default_factory=list)
    duration: int | None = None
    lead: int | None = None  # expected lead_time_ms when started_at is known
    end_has_start: bool = False  # the end record carries the start: it is never unknown


def _jd_pair(i: int, start: int, dur: int) -> Op:
    """``dur`` may be slightly negative: the two notifications' clocks disagree."""
    code, inst = "SystemFailure.Reboot", f"i-jd{i}"
    op = Op(("jdcloud", inst, code, None), duration=max(dur, 0))
    for phase, t in (("executing", start), ("executed", start + dur)):
        op.events.append(event(instance_id=inst, vendor_event_code=code,
                               operation="failure.reboot", phase=phase, event_time=t))
    return op


def _jd_create(i: int, start: int, dur: int, fails: bool) -> Op:
    inst = f"i-lc{i}"
    op = Op(("jdcloud", inst, "StateChange", None), duration=dur)
    for prev, cur, t in ((None, "pending", start),
                         ("pending", "error" if fails else "running", start + dur)):
        op.events.append(event(instance_id=inst, vendor_event_code="StateChange",
                               operation="lifecycle.state_change", event_time=t,
                               previous_state=prev, current_state=cur))
    return op


def _ali_system(i: int, start: int, dur: int, ending: str, notice: int | None,
                instance: int) -> Op:
    code, eid, inst = "SystemMaintenance.Reboot", f"e-{i}", f"i-ali{instance}"
    op = Op(("aliyun", inst, code, eid), duration=dur, end_has_start=True)
    common: dict[str, Any] = {"vendor": "aliyun", "instance_id": inst, "vendor_event_code": code,
                              "operation": "maintenance.reboot", "vendor_event_id": eid}
    if notice is not None:
        common |= {"publish_time": start - notice, "not_before": start}
        op.lead = notice
        op.events.append(event(phase="scheduled", event_time=start - notice, **common))
    end = start + dur
    if ending == "executed":
        op.events.append(event(phase="executing", event_time=start, start_time=start, **common))
        op.events.append(event(phase="executed", event_time=end, start_time=start,
                               end_time=end, **common))
    else:  # avoided / canceled: executeStartTime and executeFinishTime, no Executing
        op.events.append(event(phase=ending, event_time=end, start_time=start, end_time=end,
                               **common))
    return op


def _live_migration(i: int, start: int, dur: int, ending: str) -> Op:
    code, inst = "LiveMigrationAcrossDDH", f"i-lm{i}"
    op = Op(("aliyun", inst, code, None), duration=dur, end_has_start=True)
    common: dict[str, Any] = {"vendor": "aliyun", "instance_id": inst, "vendor_event_code": code,
                              "operation": "migration.live_across_ddh", "start_time": start}
    op.events.append(event(phase="executing", event_time=start, **common))
    op.events.append(event(phase=ending, event_time=start + dur, end_time=start + dur, **common))
    return op


def _single(i: int, start: int, dur: int, interval: bool) -> Op:
    inst = f"i-s{i}"
    if interval:
        code = "BurstablePerformanceRestricted"
        op = Op(("aliyun", inst, code, None), duration=dur)
        op.events.append(event(vendor="aliyun", instance_id=inst, vendor_event_code=code,
                               operation="burstable.performance_restricted", event_time=start,
                               start_time=start, end_time=start + dur))
        return op
    code = "SystemFailure.Fault"
    op = Op(("jdcloud", inst, code, None))
    op.events.append(event(instance_id=inst, vendor_event_code=code, operation="failure.fault",
                           event_time=start))
    return op


@st.composite
def operations(draw: st.DrawFn) -> list[Op]:
    ops: list[Op] = []
    for i in range(draw(st.integers(1, 30))):
        start = BASE + draw(st.integers(0, 3 * DAY))
        dur = draw(st.integers(0, 2 * HOUR))
        shape = draw(st.sampled_from(["jd_pair", "jd_create", "ali", "live", "single"]))
        if shape == "jd_pair":
            skew = draw(st.sampled_from([0, 0, 0, 1_000, 30_000, 60_000]))
            ops.append(_jd_pair(i, start, dur - skew))
        elif shape == "jd_create":
            ops.append(_jd_create(i, start, dur, draw(st.booleans())))
        elif shape == "ali":
            ending = draw(st.sampled_from(["executed", "avoided", "canceled"]))
            notice = draw(st.none() | st.integers(0, 5 * DAY))
            ops.append(_ali_system(i, start, dur, ending, notice, draw(st.integers(0, 3))))
        elif shape == "live":
            ops.append(_live_migration(i, start, dur, draw(st.sampled_from(["executed",
                                                                             "failed"]))))
        else:
            ops.append(_single(i, start, dur, draw(st.booleans())))
    for n, e in enumerate(e for op in ops for e in op.events):
        e["notification_id"] = f"n{n}"
    return ops


@dataclass
class Scenario:
    ops: list[Op]
    stream: list[tuple[int, InstanceEvent]]  # (operation index, notification)
    gaps: list[int]  # processing-clock advance before each delivery
    max_pending: int


@st.composite
def scenarios(draw: st.DrawFn) -> Scenario:
    ops = draw(operations())
    delivered: list[tuple[int, InstanceEvent]] = []
    for idx, op in enumerate(ops):
        for e in op.events:
            copies = draw(st.sampled_from([0, 1, 1, 1, 1, 2, 3]))  # lost, once, redelivered
            delivered.extend([(idx, e)] * copies)
    stream = draw(st.permutations(delivered))
    stream = stream[:draw(st.integers(len(stream) * 3 // 4, len(stream)))]  # cut short
    gaps = draw(st.lists(st.integers(0, 4 * MIN), min_size=len(stream), max_size=len(stream)))
    return Scenario(ops, stream, gaps, draw(st.sampled_from([1, 3, 10_000])))


def config(max_pending: int) -> CorrelatorConfig:
    # Markers outlive the test's clock, so every late duplicate is recognised.
    return CorrelatorConfig(max_pending=max_pending, done_ttl_ms=365 * DAY)


def op_key(o: Outcome) -> OpKey:
    return (o["vendor"], o["instance_id"], o["vendor_event_code"], o["vendor_event_id"])


class Run:
    """Drives one correlator through a scenario and checks the invariants as it goes."""

    def __init__(self, sc: Scenario) -> None:
        self.sc = sc
        self.now = CLOCK0
        self.corr = Correlator(config(sc.max_pending), lambda: self.now)
        self.index = {op.key: i for i, op in enumerate(sc.ops)}
        self.outcomes: dict[int, list[Outcome]] = {}
        self.heard: set[int] = set()

    def take(self, outs: list[Outcome]) -> None:
        for o in outs:
            idx = self.index[op_key(o)]
            seen = self.outcomes.setdefault(idx, [])
            seen.append(o)
            kinds = [(x["outcome"], x["after_timeout"]) for x in seen]
            assert len(seen) == 1 or (len(seen) == 2 and kinds[0] == ("timed_out", False)
                                      and kinds[1][1]), kinds
            check_outcome(o, self.sc.ops[idx])

    def deliver(self, idx: int, e: InstanceEvent, gap: int) -> None:
        self.now += gap
        self.take(self.corr.expire())
        self.heard.add(idx)
        self.take(self.corr.process(e))
        assert self.corr.pending_count <= self.sc.max_pending
        waiting = len(self.heard - self.outcomes.keys())
        assert waiting <= self.corr.pending_count + self.corr.buffered_count

    def finish(self) -> None:
        self.now += 400 * DAY
        self.take(self.corr.expire())
        assert (self.corr.pending_count, self.corr.buffered_count) == (0, 0)
        assert self.outcomes.keys() == self.heard


def check_outcome(o: Outcome, op: Op) -> None:
    for name in ("duration_ms", "lead_time_ms"):
        value = o[name]
        assert value is None or value >= 0, (name, o)
    ended = o["outcome"] in ("completed", "failed", "avoided", "canceled")
    if ended and op.end_has_start:
        assert o["start_known"], (o, op)
    if ended and o["start_known"]:
        assert o["duration_ms"] == op.duration, (o, op)
        if op.lead is not None and o["scheduled_at"] is not None:
            assert o["lead_time_ms"] == op.lead
    if o["duration_ms"] is not None:
        assert o["start_known"]


@settings(max_examples=250, deadline=None)
@given(scenarios())
def test_messy_streams(sc: Scenario) -> None:
    run = Run(sc)
    for (idx, e), gap in zip(sc.stream, sc.gaps, strict=True):
        run.deliver(idx, e, gap)
    run.finish()


@settings(max_examples=200, deadline=None)
@given(scenarios(), st.data())
def test_changelog_restore_is_equivalent(sc: Scenario, data: st.DataObject) -> None:
    """Prefix, drain, restore a fresh correlator from the log, continue: same outcomes as one
    correlator that never stopped (and was told to ``resume`` where the other restarted, since
    time a partition was not read is not quiet time). Drains happen at random batch
    boundaries, several restarts may happen, and the log is replayed uncompacted."""
    steps = list(zip(sc.stream, sc.gaps, strict=True))
    restarts = set(data.draw(st.lists(st.integers(0, len(steps)), max_size=3)))
    drains = set(data.draw(st.lists(st.integers(0, len(steps)), max_size=10))) | restarts

    def replay(interrupted: bool) -> tuple[list[Outcome], dict[str, Any]]:
        now = [CLOCK0]
        corr = Correlator(config(sc.max_pending), lambda: now[0])
        log: list[tuple[str, bytes | None]] = []
        outs: list[Outcome] = []
        for i, ((_, e), gap) in enumerate(steps):
            if interrupted and i in drains:
                log.extend(corr.drain_changes())
            if interrupted and i in restarts:
                corr = Correlator(config(sc.max_pending), lambda: now[0])
                for key, value in log:
                    corr.restore(key, value)
                assert corr.drain_changes() == []
            elif i in restarts:
                corr.resume()
            now[0] += gap
            outs.extend(corr.expire())
            outs.extend(corr.process(e))
        now[0] += 400 * DAY
        outs.extend(corr.expire())
        return outs, corr.snapshot()

    assert replay(interrupted=True) == replay(interrupted=False)


@settings(max_examples=100, deadline=None)
@given(st.data())
def test_compacted_changelog_restores_the_same_state(data: st.DataObject) -> None:
    """A compacted changelog (last value per key, tombstones gone) rebuilds the same state."""
    sc = data.draw(scenarios())
    now = [CLOCK0]
    corr = Correlator(config(sc.max_pending), lambda: now[0])
    compacted: dict[str, bytes] = {}
    for (_, e), gap in zip(sc.stream, sc.gaps, strict=True):
        now[0] += gap
        corr.expire()
        corr.process(e)
        if data.draw(st.booleans()):
            for key, value in corr.drain_changes():
                if value is None:
                    compacted.pop(key, None)
                else:
                    compacted[key] = value
    for key, value in corr.drain_changes():
        if value is None:
            compacted.pop(key, None)
        else:
            compacted[key] = value
    fresh = Correlator(config(sc.max_pending), lambda: now[0])
    for key, value in compacted.items():
        fresh.restore(key, value)
    assert fresh.snapshot() == corr.snapshot()
    assert fresh.pending_count == corr.pending_count


CYCLES: dict[tuple[str, ...], list[str]] = {
    ("Stopping", "Stopped", "Starting", "Running"): ["lifecycle.stop", "lifecycle.start"],
    ("Stopping", "Running"): ["lifecycle.restart"],
    ("Stopping", "Starting", "Running"): ["lifecycle.stop", "lifecycle.start"],
}


@st.composite
def alibaba_cycles(draw: st.DrawFn) -> tuple[list[InstanceEvent], list[tuple[str, str]]]:
    """Start/stop cycles of a few Alibaba instances: first deliveries in order, each duplicate
    delivered anywhere after its original. Returns the stream and the expected operations."""
    firsts: list[InstanceEvent] = []
    expected: list[tuple[str, str]] = []
    for inst in range(draw(st.integers(1, 4))):
        t = BASE + inst
        states = ["Starting", "Running"]
        ops = ["lifecycle.start"]
        for _ in range(draw(st.integers(0, 5))):
            cycle = draw(st.sampled_from(sorted(CYCLES)))
            states += cycle
            ops += CYCLES[cycle]
        expected += [(f"i-{inst}", op) for op in ops]
        for s in states:
            t += draw(st.integers(1_000, HOUR))
            firsts.append(event(vendor="aliyun", instance_id=f"i-{inst}",
                                vendor_event_code="StateChange",
                                operation="lifecycle.state_change", event_time=t,
                                current_state=s))
    firsts.sort(key=lambda e: e["event_time"])
    stream = list(firsts)
    for e in firsts:
        if draw(st.booleans()):
            stream.insert(draw(st.integers(stream.index(e) + 1, len(stream))), e)
    return stream, expected


@settings(max_examples=150, deadline=None)
@given(alibaba_cycles())
def test_alibaba_lifecycle_in_order_with_late_duplicates(
        case: tuple[list[InstanceEvent], list[tuple[str, str]]]) -> None:
    stream, expected = case
    now = [CLOCK0]
    corr = Correlator(CorrelatorConfig(done_ttl_ms=365 * DAY), lambda: now[0])
    outs: list[Outcome] = []
    for e in stream:
        now[0] += 1_000
        outs.extend(corr.process(e))
    outs.extend(corr.flush())
    assert corr.pending_count == 0  # every instance ends Running
    # A transition slower than its timeout (30 min) is reported timed_out, then completed.
    alerts = [o for o in outs if o["outcome"] == "timed_out"]
    ends = [o for o in outs if o["outcome"] != "timed_out"]
    assert all(o["outcome"] == "completed" and (o["duration_ms"] or 0) > 0 for o in ends)
    assert sorted((o["instance_id"], o["operation"]) for o in ends) == sorted(expected)
    assert sorted((o["instance_id"], o["started_at"]) for o in alerts) == sorted(
        (o["instance_id"], o["started_at"]) for o in ends if o["after_timeout"])


@settings(max_examples=150, deadline=None)
@given(scenarios(), st.data())
def test_rollback_undoes_exactly_the_aborted_batch(sc: Scenario, data: st.DataObject) -> None:
    """Batches, some aborted: the aborted attempt's outcomes and changelog writes are thrown
    away (as the transaction is), the correlator rolls back, the batch is redone. Outcomes, the
    changelog and the final state equal a run where nothing aborted."""
    steps = list(zip(sc.stream, sc.gaps, strict=True))
    cuts = sorted(set(data.draw(st.lists(st.integers(0, len(steps)), max_size=8))))
    batches = [steps[a:b] for a, b in zip([0, *cuts], [*cuts, len(steps)], strict=True)]
    aborted = data.draw(st.lists(st.booleans(), min_size=len(batches), max_size=len(batches)))

    def replay(with_aborts: bool) -> tuple[list[Outcome], dict[str, bytes | None], Any]:
        now = [CLOCK0]
        corr = Correlator(config(sc.max_pending), lambda: now[0])
        outs: list[Outcome] = []
        log: dict[str, bytes | None] = {}
        for batch, abort in zip(batches, aborted, strict=True):
            for attempt in (True, False) if with_aborts and abort else (False,):
                start = now[0]
                corr.commit_point()
                got: list[Outcome] = []
                for (_, e), gap in batch:
                    now[0] += gap
                    got.extend(corr.expire())
                    got.extend(corr.process(e))
                writes = corr.drain_changes()
                if attempt:  # the transaction aborts: nothing of it survives but the clock
                    assert corr.rollback() >= 0
                    assert corr.drain_changes() == []
                    now[0] = start
                    continue
                outs.extend(got)
                log.update(writes)
        return outs, log, corr.snapshot()

    assert replay(with_aborts=True) == replay(with_aborts=False)


@settings(max_examples=150, deadline=None)
@given(scenarios(), st.data())
def test_cooling_operations_mid_batch_changes_nothing(sc: Scenario, data: st.DataObject) -> None:
    """Operations a batch holds as objects are encoded back when there are too many (a
    watermark jump releasing a burst): outcomes, changelog and restored state are the same as
    when they stay objects until the drain."""
    steps = list(zip(sc.stream, sc.gaps, strict=True))
    drains = set(data.draw(st.lists(st.integers(0, len(steps)), max_size=6)))
    aborts = set(data.draw(st.lists(st.integers(0, len(steps)), max_size=2)))

    def run(hot_limit: int) -> tuple[list[Outcome], list[tuple[str, bytes | None]],
                                     dict[str, Any], dict[str, Any]]:
        saved, rules.HOT_LIMIT = rules.HOT_LIMIT, hot_limit
        try:
            now = [CLOCK0]
            corr = Correlator(config(sc.max_pending), lambda: now[0])
            log: list[tuple[str, bytes | None]] = []
            outs: list[Outcome] = []
            for i, ((_, e), gap) in enumerate(steps):
                if i in drains:
                    changes = corr.drain_changes()
                    if i in aborts:
                        corr.rollback()
                    else:
                        log.extend(changes)
                        corr.commit_point()
                now[0] += gap
                outs.extend(corr.expire())
                outs.extend(corr.process(e))
            log.extend(corr.drain_changes())
            restored = Correlator(config(sc.max_pending), lambda: now[0])
            for key, value in log:
                restored.restore(key, value)
            return outs, log, corr.snapshot(), restored.snapshot()
        finally:
            rules.HOT_LIMIT = saved

    cooled, held = run(0), run(1_000_000)
    assert cooled[0] == held[0]
    assert cooled[2] == held[2] == cooled[3]
    assert dict(cooled[1]) == dict(held[1])
