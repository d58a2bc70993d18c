"""The pure parts of ``make bench-latency``: percentiles, the produce plan, matching records to
pairs, and the notifications it writes (normalized by the real normalizer)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from consumer.bench_latency import (
    END,
    START,
    Matched,
    RunResult,
    match,
    notification,
    percentile,
    plan,
    record_key,
    table,
)
from consumer.normalization import Normalizer


def test_percentile_nearest_rank() -> None:
    values = [float(v) for v in range(1, 101)]  # 1..100
    assert percentile(values, 50) == 50.0
    assert percentile(values, 99) == 99.0
    assert percentile(values, 100) == 100.0
    assert percentile([7.0], 50) == 7.0
    assert percentile([7.0], 99) == 7.0
    assert percentile([3.0, 1.0, 2.0], 50) == 2.0  # unsorted input
    assert percentile([1.0, 2.0, 3.0, 4.0], 99) == 4.0
    assert percentile([], 50) is None


@pytest.mark.parametrize("p", [0, -1, 100.5])
def test_percentile_refuses_out_of_range(p: float) -> None:
    with pytest.raises(ValueError, match="not in"):
        percentile([1.0], p)


@given(st.lists(st.floats(min_value=0, max_value=1e6), min_size=1),
       st.floats(min_value=0.01, max_value=100))
def test_percentile_is_a_value_with_enough_at_or_below(values: list[float], p: float) -> None:
    got = percentile(values, p)
    assert got in values
    assert sum(v <= got for v in values) >= p / 100 * len(values)
    assert sum(v < got for v in values) < p / 100 * len(values)


def test_plan_order_and_count() -> None:
    steps = list(plan(rate=2.0, pairs=3, gap=0.75))
    assert steps == [(0.0, 0, START), (0.5, 1, START), (0.75, 0, END), (1.0, 2, START),
                     (1.25, 1, END), (1.75, 2, END)]


def test_plan_same_moment_by_pair_then_start_first() -> None:
    assert list(plan(rate=1.0, pairs=2, gap=1.0)) == [
        (0.0, 0, START), (1.0, 0, END), (1.0, 1, START), (2.0, 1, END)]
    assert list(plan(rate=1.0, pairs=2, gap=0.0)) == [
        (0.0, 0, START), (0.0, 0, END), (1.0, 1, START), (1.0, 1, END)]


@given(st.floats(min_value=1, max_value=5000), st.integers(min_value=0, max_value=300),
       st.floats(min_value=0, max_value=5))
def test_plan_every_pair_once_start_first(rate: float, pairs: int, gap: float) -> None:
    steps = list(plan(rate, pairs, gap))
    assert [s[0] for s in steps] == sorted(s[0] for s in steps)
    assert sorted((i, role) for _, i, role in steps) == sorted(
        [(i, START) for i in range(pairs)] + [(i, END) for i in range(pairs)])
    position = {(i, role): n for n, (_, i, role) in enumerate(steps)}
    assert all(position[(i, START)] < position[(i, END)] for i in range(pairs))


def test_match_latencies_missing_and_never_open() -> None:
    measured = [("aliyun", "i-1"), ("aliyun", "i-2"), ("aliyun", "i-3"), ("aliyun", "i-4")]
    sent = {("aliyun", f"i-{n}", role): float(n) for n in range(1, 5) for role in (START, END)}
    seen = {
        ("aliyun", "i-1", START): 1.25, ("aliyun", "i-1", END): 1.5,  # both
        ("aliyun", "i-2", END): 2.125,                                 # decided in one batch
        ("aliyun", "i-3", START): 3.5,                                 # open, no outcome yet
        ("aliyun", "i-9", END): 9.0, ("aliyun", "i-9", START): 8.0,    # not measured (warm-up)
    }
    m = match(measured, sent, seen)
    assert m.outcome_ms == [500.0, 125.0]
    assert m.open_ms == [250.0, 500.0]
    assert m.never_open == 1  # i-2
    assert m.missing_opens == 1  # i-4
    assert m.missing_outcomes == 2  # i-3, i-4


def test_match_nothing_read_is_all_missing() -> None:
    measured = [("jdcloud", f"i-{n}") for n in range(5)]
    sent = {(v, i, role): 0.0 for v, i in measured for role in (START, END)}
    m = match(measured, sent, {})
    assert (m.missing_outcomes, m.missing_opens, m.never_open) == (5, 5, 0)
    assert m.outcome_ms == m.open_ms == []


def test_record_key() -> None:
    value = {"vendor": "jdcloud", "instance_id": "i-jd1", "outcome": "completed"}
    assert record_key("bench.x.failure.reboot.completed", value,
                      "bench.x.failure.reboot.completed") == ("jdcloud", "i-jd1", END)
    assert record_key("bench.x.operations.open", value,
                      "bench.x.failure.reboot.completed") == ("jdcloud", "i-jd1", START)


@pytest.mark.parametrize("vendor", ["jdcloud", "aliyun"])
def test_notifications_normalize_to_the_pair(vendor: str) -> None:
    normalizer = Normalizer()
    start = datetime(2026, 12, 7, 10, 0, 0, tzinfo=UTC)
    end = start + timedelta(seconds=2)
    opened = normalizer.normalize_all(notification(vendor, START, "i-x1", start, start, "r1", 4))
    closed = normalizer.normalize_all(notification(vendor, END, "i-x1", end, start, "r1", 4))
    assert len(opened) == len(closed) == 1
    for event, phase, when in ((opened[0], "executing", start), (closed[0], "executed", end)):
        assert event["vendor"] == vendor
        assert event["instance_id"] == "i-x1"
        assert event["operation"] == "failure.reboot"
        assert event["phase"] == phase
        assert event["event_time"] == int(when.timestamp() * 1000)
        assert event["vendor_event_id"] == (None if vendor == "jdcloud" else "e-r1-0000004")


def test_table_shows_missing_percentiles_as_dashes() -> None:
    text = table([RunResult("jdcloud", 200.0, 4000, 199.8, Matched(missing_outcomes=4000,
                                                                    missing_opens=4000),
                            0, 0.0, 10.0, 3.25)])
    header, row = text.splitlines()
    assert header.split()[:3] == ["vendor", "pairs/s", "pairs"]
    assert row.split() == ["jdcloud", "200", "4,000", "200", "0", "-", "-", "0", "-", "-", "0",
                           "4,000", "4,000", "0", "3.2"]
