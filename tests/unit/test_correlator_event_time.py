"""Event-time correlation: the outcomes are a function of the set of notifications.

Generated streams hold several non-overlapping operations per instance, for both vendors and
every kind: JD Executing/Executed pairs (no vendor event id, envelope times) and lifecycle
StateChanges (previous state named), Alibaba system events with an eventId and
executeStartTime/executeFinishTime (ending executed or failed), scheduled maintenance ending
executed, avoided or canceled, Alibaba StateChange cycles with only the new state, live
migration, and single notifications. Durations reach past the 30 min timeouts, so some
operations are reported ``timed_out`` and then completed ``after_timeout``.

Online, each notification arrives at processing time ``t + jitter``: within the allowed
lateness (jitter < L) the outcome multiset equals the one of the time-ordered stream, and both
match the generator's ground truth. Beyond it, nothing is lost or doubled.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from consumer.correlation import engine
from consumer.correlation.config import DEFAULT_TIMEOUTS
from consumer.correlator import Correlator, CorrelatorConfig, Outcome
from consumer.model import InstanceEvent

SEC = 1_000
MIN = 60 * SEC
HOUR = 60 * MIN
DAY = 24 * HOUR
L = 10 * MIN  # the default allowed lateness
BASE = 1_767_225_600_000  # 2026-01-01T00:00:00Z


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


Expected = tuple[str, str, int | None]  # (operation, outcome, duration_ms)


@dataclass
class Op:
    """One generated operation: its notifications (time-ordered) and the outcomes it should give."""

    events: list[InstanceEvent] = field(default_factory=list)
    expected: list[Expected] = field(default_factory=list)


def _ends(operation: str, kind: str, dur: int) -> list[Expected]:
    """The outcomes of an operation that took ``dur``: an alert first if it overran."""
    if kind in ("completed", "failed") and dur > DEFAULT_TIMEOUTS.get(operation, 6 * HOUR):
        return [(operation, "timed_out", None), (operation, kind, dur)]
    return [(operation, kind, dur)]


def jd_pair(inst: str, code: str, operation: str, s: int, d: int) -> Op:
    common = {"instance_id": inst, "vendor_event_code": code, "operation": operation}
    return Op([event(phase="executing", event_time=s, **common),
               event(phase="executed", event_time=s + d, **common)],
              _ends(operation, "completed", d))


def jd_lifecycle(inst: str, opener: tuple[str | None, str], closer: str, operation: str,
                 kind: str, s: int, d: int) -> Op:
    prev, state = opener
    common = {"instance_id": inst, "vendor_event_code": "StateChange",
              "operation": "lifecycle.state_change"}
    return Op([event(event_time=s, previous_state=prev, current_state=state, **common),
               event(event_time=s + d, previous_state=state, current_state=closer, **common)],
              _ends(operation, kind, d))


def ali_system(inst: str, eid: str, code: str, operation: str, ending: str, s: int, d: int) -> Op:
    common = {"vendor": "aliyun", "instance_id": inst, "vendor_event_code": code,
              "operation": operation, "vendor_event_id": eid}
    kind = "completed" if ending == "executed" else "failed"
    return Op([event(phase="executing", event_time=s, start_time=s, **common),
               event(phase=ending, event_time=s + d, start_time=s, end_time=s + d, **common)],
              _ends(operation, kind, d))


def ali_scheduled(inst: str, eid: str, ending: str, notice: int, s: int, d: int) -> Op:
    common = {"vendor": "aliyun", "instance_id": inst, "vendor_event_code":
              "SystemMaintenance.Reboot", "operation": "maintenance.reboot",
              "vendor_event_id": eid, "publish_time": s - notice, "not_before": s}
    op = Op([event(phase="scheduled", event_time=s - notice, **common)])
    if ending == "executed":
        op.events.append(event(phase="executing", event_time=s, start_time=s, **common))
        op.events.append(event(phase="executed", event_time=s + d, start_time=s, end_time=s + d,
                               **common))
        op.expected = _ends("maintenance.reboot", "completed", d)
    else:  # avoided / canceled: the record carries executeStartTime and executeFinishTime
        op.events.append(event(phase=ending, event_time=s + d, start_time=s, end_time=s + d,
                               **common))
        op.expected = [("maintenance.reboot", ending, d)]
    return op


ALI_CYCLES: dict[str, tuple[list[str], list[str]]] = {
    # states, operations they complete
    "start": (["Starting", "Running"], ["lifecycle.start"]),
    "stop": (["Stopping", "Stopped"], ["lifecycle.stop"]),
    "restart": (["Stopping", "Running"], ["lifecycle.restart"]),
    "stop_start": (["Stopping", "Starting", "Running"], ["lifecycle.stop", "lifecycle.start"]),
}
ALI_TIMEOUT_NAME = {"lifecycle.restart": "lifecycle.stop"}  # a restart is a stop that ran


def ali_cycle(inst: str, cycle: str, s: int, steps: list[int]) -> Op:
    states, operations = ALI_CYCLES[cycle]
    op = Op()
    t = s
    times = [s]
    for step in steps[:len(states) - 1]:
        t += step
        times.append(t)
    for state, when in zip(states, times, strict=True):
        op.events.append(event(vendor="aliyun", instance_id=inst, vendor_event_code="StateChange",
                               operation="lifecycle.state_change", event_time=when,
                               current_state=state))
    for i, name in enumerate(operations):
        dur = times[i + 1] - times[i]
        alerted = ALI_TIMEOUT_NAME.get(name, name)
        if dur > DEFAULT_TIMEOUTS[alerted]:
            op.expected.append((alerted, "timed_out", None))
        op.expected.append((name, "completed", dur))
    return op


def live_migration(inst: str, ending: str, s: int, d: int) -> Op:
    common = {"vendor": "aliyun", "instance_id": inst, "vendor_event_code":
              "LiveMigrationAcrossDDH", "operation": "migration.live_across_ddh",
              "start_time": s}
    return Op([event(phase="executing", event_time=s, **common),
               event(phase=ending, event_time=s + d, end_time=s + d, **common)],
              _ends("migration.live_across_ddh",
                    "completed" if ending == "executed" else "failed", d))


def single(inst: str, vendor: str, s: int) -> Op:
    code, operation = (("SystemFailure.Fault", "failure.fault") if vendor == "jdcloud"
                       else ("PreemptibleInstanceInterruption", "preemptible.interruption"))
    return Op([event(vendor=vendor, instance_id=inst, vendor_event_code=code,
                     operation=operation, event_time=s)], [(operation, "observed", None)])


JD_KINDS = ("pair", "create", "delete", "single")
ALI_KINDS = ("system", "scheduled", "cycle", "live", "single")
JD_PAIRS = (("SystemFailure.Reboot", "failure.reboot"), ("CreateImage", "image.create"),
            ("InstanceExpiration.Stop", "expiration.stop"))


@st.composite
def operations(draw: st.DrawFn) -> list[Op]:
    """A few instances per vendor, each a sequence of non-overlapping operations."""
    ops: list[Op] = []
    durations = st.integers(1 * SEC, 50 * MIN)
    for n in range(draw(st.integers(1, 6))):
        vendor = "jdcloud" if n % 2 == 0 else "aliyun"
        inst = f"i-{vendor[:2]}{n}"
        t = BASE + draw(st.integers(0, HOUR))
        for k in range(draw(st.integers(1, 5))):
            t += draw(st.integers(2 * MIN, 3 * HOUR))  # a gap since the previous one ended
            d = draw(durations)
            if vendor == "jdcloud":
                kind = draw(st.sampled_from(JD_KINDS))
                if kind == "pair":
                    op = jd_pair(inst, *draw(st.sampled_from(JD_PAIRS)), t, d)
                elif kind == "create":
                    fails = draw(st.booleans())
                    op = jd_lifecycle(inst, (None, "pending"), "error" if fails else "running",
                                      "lifecycle.create", "failed" if fails else "completed",
                                      t, d)
                elif kind == "delete":
                    op = jd_lifecycle(inst, ("stopped", "deleting"), "terminated",
                                      "lifecycle.delete", "completed", t, d)
                else:
                    op = single(inst, vendor, t)
            else:
                kind = draw(st.sampled_from(ALI_KINDS))
                eid = f"e-{n}-{k}"
                if kind == "system":
                    code, operation = draw(st.sampled_from(
                        [("SystemFailure.Reboot", "failure.reboot"),
                         ("InstanceFailure.Reboot", "instance_failure.reboot")]))
                    op = ali_system(inst, eid, code, operation,
                                    draw(st.sampled_from(["executed", "failed"])), t, d)
                elif kind == "scheduled":
                    op = ali_scheduled(inst, eid,
                                       draw(st.sampled_from(["executed", "avoided", "canceled"])),
                                       draw(st.integers(0, 2 * DAY)), t, d)
                elif kind == "cycle":
                    cycle = draw(st.sampled_from(sorted(ALI_CYCLES)))
                    steps = draw(st.lists(durations, min_size=2, max_size=2))
                    op = ali_cycle(inst, cycle, t, steps)
                    d = sum(steps[:len(ALI_CYCLES[cycle][0]) - 1])
                elif kind == "live":
                    op = live_migration(inst, draw(st.sampled_from(["executed", "failed"])), t, d)
                else:
                    op = single(inst, vendor, t)
            t += d
            ops.append(op)
    for i, e in enumerate(e for op in ops for e in op.events):
        e["notification_id"] = f"n{i}"
    return ops


def role_time(e: InstanceEvent) -> int:
    """The time the correlator orders a notification by (start of a start, end of an end)."""
    if e["phase"] == "executing" and e["start_time"] is not None:
        return e["start_time"]
    if e["phase"] in ("executed", "failed", "avoided", "canceled") and e["end_time"] is not None:
        return e["end_time"]
    return e["event_time"]


Arrival = tuple[int, InstanceEvent]  # (processing time of arrival, notification)


@st.composite
def deliveries(draw: st.DrawFn, ops: list[Op], max_jitter: int) -> list[Arrival]:
    """Each notification arrives ``jitter`` after its time; some twice (at least once)."""
    out: list[Arrival] = []
    for op in ops:
        for e in op.events:
            for _ in range(draw(st.sampled_from([1, 1, 1, 2]))):
                out.append((role_time(e) + draw(st.integers(0, max_jitter)), e))
    out.sort(key=lambda a: a[0])
    return out


def run(arrivals: list[Arrival], ticks: bool = False, counters: Counter[str] | None = None,
        calls: list[list[Outcome]] | None = None) -> list[Outcome]:
    """One online correlator; the processing clock is the arrival time. ``calls`` gets what
    each arrival's ``process`` call emitted."""
    now = [BASE]
    corr = Correlator(CorrelatorConfig(done_ttl_ms=365 * DAY), lambda: now[0])
    outs: list[Outcome] = []
    for when, e in arrivals:
        if ticks and when > now[0]:
            outs.extend(corr.expire(when - 1))  # the loop's timer between records
        now[0] = max(now[0], when)
        emitted = corr.process(e)
        if calls is not None:
            calls.append(emitted)
        outs.extend(emitted)
    now[0] += 400 * DAY  # a quiet partition: everything is released and times out
    for _ in range(10_000):  # one advance releases at most RELEASE_LIMIT: the loop's next ticks
        outs.extend(corr.expire())
        if (corr.pending_count, corr.buffered_count) == (0, 0):
            break
    assert (corr.pending_count, corr.buffered_count) == (0, 0)
    if counters is not None:
        counters.update(corr.counters)
    return outs


def projection(o: Outcome) -> tuple[Any, ...]:
    """Everything an outcome says about its operation (not when or from which deliveries)."""
    return (o["outcome"], o["after_timeout"], o["operation"], o["vendor"], o["instance_id"],
            o["vendor_event_code"], o["vendor_event_id"], o["started_at"], o["finished_at"],
            o["start_known"], o["duration_ms"], o["scheduled_at"], o["not_before"],
            o["lead_time_ms"], o["timeout_ms"], o["from_state"], o["to_state"])


def expected_outcomes(ops: list[Op]) -> Counter[tuple[str, str, str, int | None]]:
    return Counter((op.events[0]["instance_id"], *x) for op in ops for x in op.expected)


def key_of(e: InstanceEvent) -> tuple[str, str, str]:
    """The key whose notifications the correlator must see in time order (the vendor's id, where
    there is one, only makes the order inside it irrelevant)."""
    return e["vendor"], e["instance_id"], e["vendor_event_code"]


def consistent(arrivals: list[Arrival]) -> list[Arrival]:
    """The same arrival times, each key's notifications taking its times in time order: the
    interleaving across keys (several partitions, several normalize processes) stays disordered,
    each key arrives as its vendor sent it. Every arrival stays within its jitter bound (the
    k-th earliest arrival of a key is no earlier than its k-th notification's time)."""
    slots: dict[tuple[str, str, str], list[int]] = {}
    for when, e in arrivals:
        slots.setdefault(key_of(e), []).append(when)
    ordered: dict[tuple[str, str, str], list[InstanceEvent]] = {}
    for _, e in sorted(arrivals, key=lambda a: (role_time(a[1]), a[1]["notification_id"] or "")):
        ordered.setdefault(key_of(e), []).append(e)
    out = [(when, e) for k, times in slots.items()
           for when, e in zip(sorted(times), ordered[k], strict=True)]
    out.sort(key=lambda a: a[0])
    return out


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_in_order_is_decided_at_once_and_right(data: st.DataObject) -> None:
    """In time order, with or without vendor event ids, every outcome but an alert is emitted by
    the call that processed its last notification (no wait for the watermark), and the answer
    is the generator's ground truth."""
    ops = data.draw(operations())
    arrivals = data.draw(deliveries(ops, 0))
    calls: list[list[Outcome]] = []
    first_seen: dict[str, int] = {}
    for i, (_, e) in enumerate(arrivals):
        first_seen.setdefault(e["notification_id"] or "", i)
    outs = run(arrivals, calls=calls)
    found = Counter((o["instance_id"], o["operation"], o["outcome"], o["duration_ms"])
                    for o in outs)
    assert found == expected_outcomes(ops)
    for i, emitted in enumerate(calls):
        for o in emitted:
            if o["outcome"] != "timed_out":
                assert i == max(first_seen[n] for n in o["notification_ids"]), o
    for o in outs:
        if o["after_timeout"]:
            assert o["start_known"]
            assert o["outcome"] != "timed_out"


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_consistent_keys_in_any_interleaving_give_the_time_ordered_outcomes(
        data: st.DataObject) -> None:
    """Disorder across keys within the allowed lateness, each key in order: exactly the outcomes
    of the time-ordered stream, decided at once."""
    ops = data.draw(operations())
    in_order = run(data.draw(deliveries(ops, 0)))
    counted: Counter[str] = Counter()
    shuffled = run(consistent(data.draw(deliveries(ops, L - 1))),
                   ticks=data.draw(st.booleans()), counters=counted)
    assert Counter(map(projection, shuffled)) == Counter(map(projection, in_order))
    assert counted["contradicts_decision"] == counted["out_of_order"] == 0


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_disorder_within_lateness_is_right_or_counted(data: st.DataObject) -> None:
    """Any disorder within the allowed lateness, inside keys too. A key that shows disorder
    before deciding (a second start while one is open, an end older than what it holds, a new
    state alone that closes nothing) waits for the watermark. The pairing can still differ from
    time order where the disorder could not be seen before a decision (an end whose own start
    and its predecessor's end both come later: ``contradicts_decision``) or where the notification
    that shows it is older than an operation the key has already opened (``out_of_order``): then
    only together with that count, never silently. Nothing is lost or doubled either way."""
    ops = data.draw(operations())
    in_order = run(data.draw(deliveries(ops, 0)))
    arrivals = data.draw(deliveries(ops, L - 1))
    counted: Counter[str] = Counter()
    shuffled = run(arrivals, ticks=data.draw(st.booleans()), counters=counted)
    if Counter(map(projection, shuffled)) != Counter(map(projection, in_order)):
        assert counted["contradicts_decision"] + counted["out_of_order"] > 0
    assert_nothing_lost_or_doubled(ops, arrivals, shuffled, counted)


@settings(max_examples=150, deadline=None)
@given(st.data())
def test_a_watermark_jump_spread_over_many_advances_gives_the_same_outcomes(
        data: st.DataObject) -> None:
    """Each advance of the watermark releases and fires at most RELEASE_LIMIT (so a jump over
    a burst is several bounded batches): with a limit of one, the answer is unchanged, unless
    a key showed disorder (a key still holding notifications waits where the other run decided
    at once, see the engine's doc): then either run may differ from time order, and counts it.
    Nothing is ever lost or doubled."""
    ops = data.draw(operations())
    arrivals = data.draw(deliveries(ops, L - 1))
    ticks = data.draw(st.booleans())
    counted: Counter[str] = Counter()
    unlimited = run(arrivals, ticks=ticks, counters=counted)
    saved, engine.RELEASE_LIMIT = engine.RELEASE_LIMIT, 1
    limited_counted: Counter[str] = Counter()
    try:
        limited = run(arrivals, ticks=ticks, counters=limited_counted)
    finally:
        engine.RELEASE_LIMIT = saved
    if Counter(map(projection, limited)) != Counter(map(projection, unlimited)):
        disorder = counted + limited_counted
        assert disorder["contradicts_decision"] + disorder["out_of_order"] > 0
    assert_nothing_lost_or_doubled(ops, arrivals, limited, limited_counted)


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_disorder_beyond_lateness_loses_and_doubles_nothing(data: st.DataObject) -> None:
    """Notifications up to 6 h late: applied directly by the messy-stream rules and counted.

    No notification is in two outcomes (a state change may be in two: it closes one lifecycle
    operation and opens the next), and every delivery is accounted: its notification is in an
    outcome, or the correlator counted it (straggler or duplicate). Which notifications pair can
    change beyond the lateness for keys without a vendor event id (a start two operations later
    supersedes the first one, and the middle one's notifications are then its stragglers;
    Alibaba's new-state-only lifecycle cannot place a change older than a later one); with an id
    the final outcome is still exactly right (an end that comes after the deadline has passed
    the watermark is a late completion after the alert).
    """
    ops = data.draw(operations())
    arrivals = data.draw(deliveries(ops, 6 * HOUR))
    counted: Counter[str] = Counter()
    outs = run(arrivals, ticks=data.draw(st.booleans()), counters=counted)
    assert_nothing_lost_or_doubled(ops, arrivals, outs, counted)


def assert_nothing_lost_or_doubled(ops: list[Op], arrivals: list[Arrival], outs: list[Outcome],
                                   counted: Counter[str]) -> None:
    state_changes = {e["notification_id"] for op in ops for e in op.events
                     if e["current_state"] is not None}
    claimed: dict[str, list[Outcome]] = {}
    for o in outs:
        for nid in o["notification_ids"]:
            claimed.setdefault(nid, []).append(o)
        assert o["duration_ms"] is None or o["duration_ms"] >= 0
    for nid, claims in claimed.items():
        names = [(o["operation"], o["outcome"]) for o in claims]
        assert len(claims) == 1 or (nid in state_changes and len(claims) == 2
                                    and claims[0]["started_at"] != claims[1]["started_at"]), names
    unclaimed = sum(1 for _, e in arrivals if e["notification_id"] not in claimed)
    assert unclaimed <= counted["straggler"] + counted["duplicate"], "dropped silently"
    for op in ops:
        if op.events[0]["vendor_event_id"] is None:
            continue
        mine = [o for o in outs if o["vendor_event_id"] == op.events[0]["vendor_event_id"]]
        finals = [(o["operation"], o["outcome"], o["duration_ms"]) for o in mine
                  if o["outcome"] != "timed_out"]
        assert finals == [x for x in op.expected if x[1] != "timed_out"]
        alerts = [o for o in mine if o["outcome"] == "timed_out"]
        assert len(alerts) <= 1
        assert not alerts or next(o for o in mine if o["outcome"] != "timed_out")["after_timeout"]


@pytest.mark.parametrize("resumed", [False, True])
def test_a_stall_is_not_quiet_time_after_resume(resumed: bool) -> None:
    """A partition that could not be read (broker away) for longer than the lateness: without
    resume the stall would count as quiet input and release what waits as if nothing else had
    come; after resume the quiet-time clock starts again."""
    now = [BASE]
    corr = Correlator(CorrelatorConfig(), lambda: now[0])
    common: dict[str, Any] = {"vendor": "jdcloud", "instance_id": "i-1",
                              "vendor_event_code": "SystemFailure.Reboot",
                              "operation": "failure.reboot"}
    assert corr.process(event(phase="executed", event_time=BASE + 20 * SEC, **common)) == []
    # Older than the end the key holds: disorder, so it waits for the watermark.
    assert corr.process(event(phase="executing", event_time=BASE, **common)) == []
    assert corr.buffered_count == 1
    now[0] += 3 * L  # the stall
    if resumed:
        corr.resume()
    corr.expire()
    assert corr.buffered_count == (1 if resumed else 0)
    now[0] += L + 1  # quiet for real now
    corr.expire()
    assert corr.buffered_count == 0
