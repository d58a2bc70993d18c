"""Lag from librdkafka statistics: the fields it reads, the partitions it skips."""

from __future__ import annotations

from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from consumer.metrics import Metrics
from consumer.runtime.lag import LagMonitor, partition_lags

INVALID = -1001  # librdkafka's "no offset"


def part(**fields: Any) -> dict[str, Any]:
    base = {"fetch_state": "active", "app_offset": INVALID, "committed_offset": INVALID,
            "lo_offset": 0, "hi_offset": 0, "ls_offset": 0, "consumer_lag": -1}
    return {**base, **fields}


def stats(partitions: dict[str, dict[str, Any]], topic: str = "raw") -> dict[str, Any]:
    return {"topics": {topic: {"partitions": partitions}}}


def test_lag_is_the_end_minus_the_consumed_position_not_librdkafkas_committed_lag() -> None:
    s = stats({
        "0": part(app_offset=40, ls_offset=100, hi_offset=120),
        "1": part(app_offset=7, ls_offset=7, hi_offset=7),
        "-1": part(fetch_state="none"),
    })
    assert partition_lags(s) == {("raw", 0): 60, ("raw", 1): 0}
    assert partition_lags(s, read_committed=False) == {("raw", 0): 80, ("raw", 1): 0}


def test_before_the_first_record_the_position_is_the_committed_offset_or_the_log_start() -> None:
    s = stats({
        "0": part(committed_offset=30, lo_offset=10, ls_offset=50),
        "1": part(lo_offset=10, ls_offset=50),
        "2": part(ls_offset=INVALID),  # no watermark yet: no sample rather than a wrong one
        "3": part(fetch_state="offset-query", ls_offset=50),
        "4": part(fetch_state="none", ls_offset=50),
    })
    assert partition_lags(s) == {("raw", 0): 20, ("raw", 1): 40, ("raw", 3): 50}


@given(st.integers(0, 10**12), st.integers(0, 10**6), st.integers(0, 10**6))
def test_lag_is_never_negative(position: int, end_delta: int, back: int) -> None:
    end = max(0, position + end_delta - back)
    lags = partition_lags(stats({"0": part(app_offset=position, ls_offset=end)}))
    assert lags == {("raw", 0): max(0, end - position)}


def test_only_assigned_partitions_are_exported_and_revoked_ones_disappear() -> None:
    metrics = Metrics()
    monitor = LagMonitor(metrics, "normalize")
    monitor.assign([("raw", 0)])
    monitor.on_stats(stats({"0": part(app_offset=5, ls_offset=9), "1": part(app_offset=0, ls_offset=3)}))

    def sample(p: int) -> float | None:
        return metrics.registry.get_sample_value(
            "vmevents_consumer_lag", {"stage": "normalize", "topic": "raw", "partition": str(p)})

    assert sample(0) == 4
    assert sample(1) is None
    monitor.revoke([("raw", 0), ("raw", 1)])
    assert sample(0) is None
