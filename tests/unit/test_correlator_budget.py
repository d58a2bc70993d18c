"""The state budget: a burst far beyond it is absorbed by ending the operations due first, and
nothing is lost; and the byte estimate the budget limits is close to the memory really held."""

from __future__ import annotations

import gc
import tracemalloc
from typing import Any

import pytest

from consumer.correlation.outcome import ATTR_EVICTED
from consumer.correlator import Correlator, CorrelatorConfig, Outcome
from consumer.model import InstanceEvent

BASE = 1_767_225_600_000  # 2026-01-01T00:00:00Z
MIN = 60_000


def event(**fields: Any) -> InstanceEvent:
    base: dict[str, Any] = {
        "vendor": "aliyun", "instance_id": "", "vendor_event_code": "SystemMaintenance.Reboot",
        "operation": "maintenance.reboot", "known": True, "phase": None,
        "vendor_status": None, "event_time": BASE, "region": "cn-hangzhou",
        "account_id": "169070********30", "notification_id": None, "vendor_event_id": None,
        "level": None, "previous_state": None, "current_state": None, "publish_time": None,
        "not_before": None, "start_time": None, "end_time": None, "source_format": "",
        "attributes": {"ver": "1.0"}, "source": None,
    }
    base.update(fields)
    return base  # type: ignore[return-value]


def scheduled(i: int) -> InstanceEvent:
    """An Alibaba maintenance notice (with its eventId: applied on arrival)."""
    return event(instance_id=f"i-bp1ecr{i:010d}go2go", vendor_event_id=f"e-{i:010d}",
                 phase="scheduled", event_time=BASE + i, publish_time=BASE + i,
                 not_before=BASE + 3 * 24 * 60 * MIN, notification_id=f"n-{i:010d}",
                 source={"topic": "vm.events.raw", "partition": 0, "offset": i})


def executed(i: int) -> InstanceEvent:
    return event(instance_id=f"i-bp1ecr{i:010d}go2go", vendor_event_id=f"e-{i:010d}",
                 phase="executed", event_time=BASE + 4 * 24 * 60 * MIN,
                 start_time=BASE + 3 * 24 * 60 * MIN, end_time=BASE + 3 * 24 * 60 * MIN + MIN)


def jd_executing(i: int) -> InstanceEvent:
    """A JD notification (no vendor event id): it waits in the reorder buffer."""
    return event(vendor="jdcloud", instance_id=f"i-{i:08d}", vendor_event_code="SystemFailure.Reboot",
                 operation="failure.reboot", phase="executing", event_time=BASE + i)


def evicted(outcomes: list[Outcome]) -> list[Outcome]:
    return [o for o in outcomes if o["attributes"].get(ATTR_EVICTED) == "max_state_bytes"]


@pytest.mark.parametrize("drain_every", [1, 100])
def test_a_burst_beyond_the_budget_evicts_and_loses_nothing(drain_every: int) -> None:
    n, budget = 3000, 60_000  # room for about a hundred operations and their markers
    corr = Correlator(CorrelatorConfig(), lambda: BASE)
    corr.set_state_budget(budget)
    out: list[Outcome] = []
    for i in range(n):
        out += corr.process(scheduled(i))
        assert corr.state_bytes <= budget
        if i % drain_every == 0:
            corr.drain_changes()
    gone = evicted(out)
    assert len(out) == len(gone)  # nothing else ended
    assert all(o["outcome"] == "timed_out" for o in gone)
    ended = {o["instance_id"] for o in gone}
    held = {op["instance_id"] for op in corr.pending_operations()}
    assert len(gone) == len(ended)
    assert ended.isdisjoint(held)
    assert len(ended) + len(held) == n  # every notice is in an outcome or still pending
    assert 10 < len(held) < 200  # the rest holds markers (and a batch's operations, as objects)
    # The first ones in event time were ended (deadline order), the latest are kept.
    assert max(int(i[8:-5]) for i in ended) < min(int(i[8:-5]) for i in held)
    # Their real ends still get their outcome: flagged as after the timeout while the budget
    # still holds their marker (the markers that expire first make room when it does not).
    late: list[Outcome] = []
    for i in range(n):
        late += corr.process(executed(i))
    completions = [o for o in late if o["outcome"] == "completed"]
    assert {o["instance_id"] for o in completions} == ended | held
    assert len(completions) == n
    assert any(o["after_timeout"] for o in completions)


def test_buffered_notifications_are_applied_early_rather_than_held_past_the_budget() -> None:
    corr = Correlator(CorrelatorConfig(), lambda: BASE)
    corr.set_state_budget(40_000)
    # A raw partition not normalized yet: every notification without an id waits for it.
    assert corr.progress([("vm.events.raw:0", BASE - 1, False)]) == []
    out: list[Outcome] = []
    for i in range(2000):
        out += corr.process(jd_executing(i))
        assert corr.state_bytes <= 40_000
    assert corr.counters["released_early"] > 0
    gone = evicted(out)
    assert len(out) == len(gone)
    held = corr.pending_count + corr.buffered_count
    assert len({o["instance_id"] for o in gone}) + held == 2000


def test_no_budget_no_eviction() -> None:
    corr = Correlator(CorrelatorConfig(), lambda: BASE)
    out = [o for i in range(500) for o in corr.process(scheduled(i))]
    assert out == []
    assert corr.pending_count == 500


def traced_bytes_per_item(build: Any, n: int) -> float:
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        keep = build(n)
        gc.collect()
        after = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    assert keep is not None
    return (after - before) / n


def finished(i: int, pad: int = 0) -> InstanceEvent:
    """A single notification: emitted at once, remembered by a marker (its key ``pad`` longer)."""
    return event(instance_id=f"i-bp1ecr{i:010d}go2go" + "x" * pad, vendor_event_id=f"e-{i:010d}",
                 vendor_event_code="SystemFailure.Fault", operation="failure.fault",
                 event_time=BASE + i)


def finished_long_key(i: int) -> InstanceEvent:
    return finished(i, pad=200)


@pytest.mark.parametrize(("kind", "make"), [("open", scheduled), ("buffered", jd_executing),
                                            ("marker", finished),
                                            ("marker, long key", finished_long_key)])
def test_the_estimate_is_close_to_the_memory_held(kind: str, make: Any) -> None:
    """``state_bytes`` is what the budget limits: it must track real memory, or the budget
    means nothing (tracemalloc counts every Python allocation the state makes). Within 20%,
    as the README says, whatever the length of the keys."""
    n = 20_000
    estimate: list[int] = []

    def build(count: int) -> Correlator:
        # The events are made here and dropped: what the state keeps of them is its memory.
        corr = Correlator(CorrelatorConfig(), lambda: BASE)
        for i in range(count):
            corr.process(make(i))
        corr.drain_changes()  # between batches: the held form
        estimate.append(corr.state_bytes)
        return corr

    traced = traced_bytes_per_item(build, n)
    per_item = estimate[0] / n
    assert 0.8 * traced <= per_item <= 1.2 * traced, (kind, traced, per_item)
