"""Late ends and the late-end horizon (issue #18).

An operation past its deadline is reported ``timed_out``; its end, arriving within
``late_end_horizon_ms`` (7 d by default) of that timeout, is reported as its real outcome with
``after_timeout=true``. What carries it across those days is the operation's open-end marker
(see :mod:`consumer.correlation.engine`, "Late completions" and "Bounded memory"). These tests
pin the horizon's two sides, late ends of operations evicted under ``max_pending`` and under the
state budget, and what happens when the budget forgets open-end markers early.

Every case runs for an operation with a vendor event id (Alibaba ``SystemMaintenance.Reboot``
with its eventId; its ends carry executeStartTime) and one without (JD ``SystemFailure.Reboot``).
The partition is quiet between the notifications, polled by :meth:`Correlator.expire` as the
stage does, and notifications are delivered a second after their vendor time.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from consumer.correlation.config import DAY, HOUR, MINUTE, SECOND
from consumer.correlation.outcome import ATTR_EVICTED
from consumer.correlator import Correlator, CorrelatorConfig, Outcome
from consumer.model import InstanceEvent

BASE = 1_767_225_600_000  # 2026-01-01T00:00:00Z
DELAY = SECOND  # processing time runs this far behind vendor time
LATENESS = CorrelatorConfig().allowed_lateness_ms
GRACE = CorrelatorConfig().orphan_end_grace_ms
HORIZON = CorrelatorConfig().late_end_horizon_ms

Make = Callable[..., InstanceEvent]


def event(**fields: Any) -> InstanceEvent:
    base: dict[str, Any] = {
        "vendor": "aliyun", "instance_id": "", "vendor_event_code": "", "operation": "",
        "known": True, "phase": None, "vendor_status": None, "event_time": BASE,
        "region": "cn-hangzhou", "account_id": "169070********30", "notification_id": None,
        "vendor_event_id": None, "level": None, "previous_state": None, "current_state": None,
        "publish_time": None, "not_before": None, "start_time": None, "end_time": None,
        "source_format": "", "attributes": {}, "source": None,
    }
    base.update(fields)
    return base  # type: ignore[return-value]


def ali(i: int, phase: str, t: int, *, start: int | None = None) -> InstanceEvent:
    """Alibaba ``SystemMaintenance.Reboot`` with its eventId (applied on arrival): Executing
    gives executeStartTime; Executed gives executeStartTime (``start``) and executeFinishTime."""
    ends = phase == "executed"
    return event(vendor="aliyun", instance_id=f"i-bp1ecr{i:08d}go2go",
                 vendor_event_code="SystemMaintenance.Reboot", operation="maintenance.reboot",
                 vendor_event_id=f"e-bp11trd{i:08d}", phase=phase, event_time=t,
                 start_time=start if ends else t, end_time=t if ends else None,
                 notification_id=f"n-{phase}-{i}", source_format="aliyun.cloudmonitor")


def jd(i: int, phase: str, t: int, *, start: int | None = None) -> InstanceEvent:
    """JD ``SystemFailure.Reboot``: no vendor event id and no start on the end (``start`` is
    ignored); eventState Executing / Executed."""
    del start
    return event(vendor="jdcloud", instance_id=f"i-bc4{i:08d}9oh", region="cn-east-1",
                 vendor_event_code="SystemFailure.Reboot", operation="failure.reboot",
                 phase=phase, event_time=t, notification_id=f"n-{phase}-{i}",
                 source_format="jdcloud.detail")


VENDORS = [
    pytest.param(ali, 6 * HOUR, id="with_event_id"),
    pytest.param(jd, 30 * MINUTE, id="without_event_id"),
]
"""(event builder, the operation's default timeout)."""


class Clock:
    """Processing time under the test's control."""

    def __init__(self) -> None:
        self.now = BASE + DELAY

    def __call__(self) -> int:
        return self.now


def deliver(corr: Correlator, clock: Clock, e: InstanceEvent) -> list[Outcome]:
    """``e`` as the stage delivers it: a second after its vendor time (never going back)."""
    t = e["end_time"] if e["phase"] == "executed" and e["end_time"] is not None else e["event_time"]
    clock.now = max(clock.now, t + DELAY)
    return corr.process(e)


def quiet(corr: Correlator, clock: Clock, until: int, step: int = HOUR) -> list[Outcome]:
    """A quiet partition polled every ``step`` of processing time up to ``until``."""
    out: list[Outcome] = []
    while clock.now < until:
        clock.now = min(clock.now + step, until)
        out += corr.expire()
    return out


def times_out(corr: Correlator, clock: Clock, make: Make, i: int, t0: int, timeout: int
              ) -> int:
    """Start operation ``i`` at ``t0`` and let it time out; returns its deadline (event time),
    from which the horizon counts."""
    assert deliver(corr, clock, make(i, "executing", t0)) == []
    deadline = t0 + timeout
    # The watermark trails processing time by the lateness (and the delivery delay).
    [alert] = quiet(corr, clock, deadline + LATENESS + DELAY + 1)
    assert (alert["outcome"], alert["started_at"], alert["finished_at"]) == ("timed_out", t0, None)
    assert (alert["after_timeout"], alert["timeout_ms"]) == (False, timeout)
    return deadline


def held_markers(corr: Correlator) -> dict[str, dict[str, Any]]:
    """Finished-operation markers held, by instance id."""
    return {v["key"]: v for v in ({**m, "key": k.split("|")[2]}
                                  for k, m in corr.snapshot().items() if k.startswith("d|"))}


# -- the horizon -------------------------------------------------------------------------------


def test_the_documented_horizon_is_seven_days() -> None:
    assert HORIZON == 7 * DAY


@pytest.mark.parametrize(("make", "timeout"), VENDORS)
def test_an_end_just_inside_the_horizon_completes_after_timeout(make: Make, timeout: int
                                                                ) -> None:
    """The last millisecond of the horizon: the real outcome, with the start the timeout
    reported (JD's end has none of its own) and the duration between them, flagged
    ``after_timeout``. A redelivery of that end is a straggler: nothing."""
    clock = Clock()
    corr = Correlator(CorrelatorConfig(), clock)
    t0 = BASE
    deadline = times_out(corr, clock, make, 1, t0, timeout)
    end = deadline + HORIZON - 1
    assert quiet(corr, clock, end, step=DAY) == []  # a week of polls keeps the marker
    late = deliver(corr, clock, make(1, "executed", end, start=t0))
    [o] = late
    assert (o["outcome"], o["after_timeout"], o["start_known"]) == ("completed", True, True)
    assert (o["started_at"], o["finished_at"], o["duration_ms"]) == (t0, end, end - t0)
    assert o["decided_at"] == clock.now
    assert corr.counters["late_completion"] == 1
    assert corr.pending_count == 0
    # The same end again, at once and after everything it could wait for: nothing.
    assert deliver(corr, clock, make(1, "executed", end, start=t0)) == []
    assert quiet(corr, clock, clock.now + LATENESS + GRACE + HOUR) == []
    assert corr.counters["straggler"] == 1
    assert corr.counters["late_completion"] == 1
    assert corr.pending_count == 0


@pytest.mark.parametrize(("make", "timeout"), VENDORS)
def test_an_end_just_after_the_horizon_is_an_end_alone(make: Make, timeout: int) -> None:
    """The horizon is a documented bound: ``late_end_horizon_ms`` after the timeout the
    operation is forgotten (its marker goes, so memory stays bounded however many operations
    never end). An end at or after it is not dropped (nothing is dropped silently), and cannot
    be tied to the timeout any more: it is reported as an end whose start the correlator never
    saw, without ``after_timeout``. With the vendor's own start (Alibaba's executeStartTime) that
    is a completion with start and duration, at once; without (JD), an orphan completion
    (``start_known=false``, no duration) after the grace window an end alone waits for its start.

    That is what a user should expect: the timed_out alert already went out, a week later the
    end is still reported rather than lost, and nothing claims a link the correlator no longer
    holds (after_timeout would be a guess). Whoever needs a longer link sets
    ``late_end_horizon``. The marker's normal expiry is not an early loss: it is not counted
    ``late_end_forgotten``.
    """
    clock = Clock()
    corr = Correlator(CorrelatorConfig(), clock)
    t0 = BASE
    deadline = times_out(corr, clock, make, 1, t0, timeout)
    end = deadline + HORIZON
    assert quiet(corr, clock, end, step=DAY) == []
    at_once = deliver(corr, clock, make(1, "executed", end, start=t0))
    if make is ali:
        [o] = at_once
        assert (o["started_at"], o["start_known"], o["duration_ms"]) == (t0, True, end - t0)
    else:
        assert at_once == []  # held: its start may still come
        [o] = quiet(corr, clock, end + DELAY + LATENESS + GRACE + 1)
        assert (o["started_at"], o["start_known"], o["duration_ms"]) == (None, False, None)
        assert corr.counters["orphan_end"] == 1
    assert (o["outcome"], o["finished_at"], o["after_timeout"]) == ("completed", end, False)
    assert o["attributes"] == {}
    assert corr.counters["late_completion"] == 0
    # A redelivery of that end is recognised as such, like any reported end's.
    assert deliver(corr, clock, make(1, "executed", end, start=t0)) == []
    assert quiet(corr, clock, clock.now + LATENESS + GRACE + HOUR) == []
    assert corr.pending_count == 0
    assert corr.counters["late_end_forgotten"] == 0


@pytest.mark.parametrize(("make", "timeout"), VENDORS)
def test_the_horizon_is_the_configured_one(make: Make, timeout: int) -> None:
    """The bound is ``late_end_horizon``, not a fixed week: an end 3 d after the timeout is
    inside a 4 d horizon and past a 2 d one."""
    outcomes = []
    for horizon in (4 * DAY, 2 * DAY):
        clock = Clock()
        corr = Correlator(CorrelatorConfig(late_end_horizon_ms=horizon), clock)
        deadline = times_out(corr, clock, make, 1, BASE, timeout)
        end = deadline + 3 * DAY
        quiet(corr, clock, end, step=DAY)
        out = deliver(corr, clock, make(1, "executed", end, start=BASE))
        out += quiet(corr, clock, end + DELAY + LATENESS + GRACE + 1)
        outcomes.append([(o["outcome"], o["after_timeout"]) for o in out])
    assert outcomes == [[("completed", True)], [("completed", False)]]


# -- evicted operations ------------------------------------------------------------------------


@pytest.mark.parametrize("limit", ["max_pending", "max_state_bytes"])
@pytest.mark.parametrize(("make", "timeout"), VENDORS)
def test_the_late_end_of_an_evicted_operation_completes_after_timeout(
        make: Make, timeout: int, limit: str) -> None:
    """An operation ended early to make room (``timed_out``, ``vmevents.evicted``) keeps its
    open-end marker: its end, days later, is its real outcome with ``after_timeout``."""
    clock = Clock()
    corr = Correlator(CorrelatorConfig(max_pending=2 if limit == "max_pending" else 100), clock)
    starts = [BASE + i * MINUTE for i in range(3)]
    out = deliver(corr, clock, make(0, "executing", starts[0]))
    out += deliver(corr, clock, make(1, "executing", starts[1]))
    if limit == "max_state_bytes":
        corr.set_state_budget(corr.state_bytes + 1)  # room for two open operations
    out += deliver(corr, clock, make(2, "executing", starts[2]))
    assert out, "nothing was evicted"
    assert all((o["outcome"], o["attributes"].get(ATTR_EVICTED), o["after_timeout"])
               == ("timed_out", limit, False) for o in out)
    index = {make(i, "executing", 0)["instance_id"]: i for i in range(3)}
    evicted = {index[o["instance_id"]] for o in out}
    assert 0 in evicted  # the operation due first
    assert {o["started_at"] for o in out} == {starts[i] for i in evicted}
    corr.drain_changes()
    # Three days later (past every deadline: the operation left open times out as usual), the
    # evicted operations' ends arrive.
    rest = quiet(corr, clock, BASE + 3 * DAY, step=DAY)
    assert [o["outcome"] for o in rest] == ["timed_out"] * (3 - len(evicted))
    for i in sorted(evicted):
        end = BASE + 3 * DAY + i * MINUTE
        [o] = deliver(corr, clock, make(i, "executed", end, start=starts[i]))
        assert (o["outcome"], o["after_timeout"], o["start_known"]) == ("completed", True, True)
        assert (o["started_at"], o["finished_at"], o["duration_ms"]) == (
            starts[i], end, end - starts[i])
        assert ATTR_EVICTED not in o["attributes"]
    assert corr.counters["late_completion"] == len(evicted)
    assert corr.counters["done_evicted"] == 0
    assert corr.counters["late_end_forgotten"] == 0


# -- markers forgotten early -------------------------------------------------------------------


@pytest.mark.parametrize(("make", "timeout"), VENDORS)
def test_plain_markers_are_forgotten_before_open_end_ones(make: Make, timeout: int) -> None:
    """Under the byte budget, markers are forgotten in expiry order: those of completed
    operations (``done_ttl``, 1 d) before the open-end markers of timed-out ones (the horizon,
    7 d), although they are newer. Only when the budget cannot hold the open-end markers
    either are they forgotten, first to expire first; each is counted ``late_end_forgotten``,
    because that operation's late end then comes out as an end alone: for an end with its own
    start, a completion indistinguishable from a normal one (no ``after_timeout``)."""
    clock = Clock()
    corr = Correlator(CorrelatorConfig(), clock)
    # Four operations time out: open-end markers.
    starts = [BASE + i * MINUTE for i in range(4)]
    for i, t0 in enumerate(starts):
        assert deliver(corr, clock, make(i, "executing", t0)) == []
    alerts = quiet(corr, clock, starts[-1] + timeout + LATENESS + DELAY + 1)
    assert [o["outcome"] for o in alerts] == ["timed_out"] * 4
    # Then eight operations complete in order: plain markers, newer than the open-end ones.
    t = clock.now
    for i in range(100, 108):
        assert deliver(corr, clock, make(i, "executing", t)) == []
        [done] = deliver(corr, clock, make(i, "executed", t + MINUTE, start=t))
        assert (done["outcome"], done["after_timeout"]) == ("completed", False)
        t += 2 * MINUTE
    corr.drain_changes()
    markers = held_markers(corr)
    assert len(markers) == 12
    assert (corr.pending_count, corr.buffered_count) == (0, 0)  # markers only
    open_keys = {k for k, m in markers.items() if m["open_end"]}
    plain_keys = set(markers) - open_keys
    assert len(open_keys) == 4
    per_marker = corr.state_bytes // len(markers)

    # A budget of ten markers: some plain ones must go, no open-end one.
    corr.set_state_budget(10 * per_marker)
    assert corr.expire() == []
    left = held_markers(corr)
    assert open_keys <= set(left)
    assert len(left) < 10
    assert corr.counters["done_evicted"] == 12 - len(left)
    assert corr.counters["late_end_forgotten"] == 0

    # A budget of two markers: every plain one goes, then the open-end ones due first.
    corr.set_state_budget(2 * per_marker + per_marker // 2)
    assert corr.expire() == []
    left = held_markers(corr)
    assert not set(left) & plain_keys
    kept = set(left)
    assert kept
    assert kept < open_keys
    forgotten = open_keys - kept
    # First to expire first: the operations that timed out first.
    assert max(markers[k]["expires"] for k in forgotten) <= min(markers[k]["expires"] for k in kept)
    assert corr.counters["late_end_forgotten"] == len(forgotten)
    corr.set_state_budget(None)

    # Their ends, three days later.
    out: list[Outcome] = []
    end = BASE + 3 * DAY
    for i, t0 in enumerate(starts):
        out += deliver(corr, clock, make(i, "executed", end + i * SECOND, start=t0))
    out += quiet(corr, clock, clock.now + LATENESS + GRACE + HOUR)
    by_instance = {o["instance_id"]: o for o in out}
    assert len(out) == len(by_instance) == 4
    for i, t0 in enumerate(starts):
        o = by_instance[make(i, "executed", end)["instance_id"]]
        assert (o["outcome"], o["finished_at"]) == ("completed", end + i * SECOND)
        if o["instance_id"] in kept:
            assert (o["after_timeout"], o["started_at"]) == (True, t0)
        else:
            assert o["after_timeout"] is False
            # With its own start it reads as a normal completion: only the count tells.
            assert o["started_at"] == (t0 if make is ali else None)
    assert corr.counters["late_completion"] == len(kept)


@pytest.mark.parametrize(("make", "timeout"), VENDORS)
def test_an_open_end_marker_forgotten_under_max_done_is_counted(make: Make, timeout: int
                                                                 ) -> None:
    """``max_done`` forgets the marker due first as the byte budget does: counted the same."""
    clock = Clock()
    corr = Correlator(CorrelatorConfig(max_done=2), clock)
    for i in range(3):
        times_out(corr, clock, make, i, clock.now - DELAY + i * SECOND, timeout)
    assert sorted(held_markers(corr)) == sorted(make(i, "executed", 0)["instance_id"]
                                                for i in (1, 2))
    assert corr.counters["late_end_forgotten"] == 1
    end = clock.now - DELAY + HOUR
    out = deliver(corr, clock, make(0, "executed", end, start=BASE))
    out += quiet(corr, clock, clock.now + LATENESS + GRACE + HOUR)
    assert [(o["outcome"], o["after_timeout"]) for o in out] == [("completed", False)]
