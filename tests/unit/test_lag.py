"""Lag from librdkafka statistics: the fields it reads, the partitions it skips."""

from __future__ import annotations

from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from consumer.runtime.lag import FROM_START, partition_lags

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


def test_before_the_first_record_the_position_is_where_the_group_resumes() -> None:
    s = stats({
        "0": part(lo_offset=10, ls_offset=50),  # committed 30 at assignment
        "1": part(lo_offset=10, ls_offset=50),  # nothing committed: from the log start
        "2": part(lo_offset=10, ls_offset=50),  # committed offsets could not be read
        "3": part(ls_offset=INVALID),  # no watermark yet: no sample rather than a guess
        "4": part(fetch_state="offset-query", ls_offset=50),  # not fetching yet
    })
    resume = {("raw", 0): 30, ("raw", 1): FROM_START, ("raw", 3): 0, ("raw", 4): 0}
    assert partition_lags(s, resume=resume) == {("raw", 0): 20, ("raw", 1): 40}


def test_what_the_stage_committed_wins_over_what_the_client_consumed() -> None:
    # Records consumed but held by the timestamp alignment are not processed: the lag counts them.
    s = stats({"0": part(app_offset=90, ls_offset=100)})
    assert partition_lags(s, resume={("raw", 0): 30}, processed={("raw", 0): 60}) == {("raw", 0): 40}
    assert partition_lags(s, resume={("raw", 0): 30}) == {("raw", 0): 70}


@given(st.integers(0, 10**12), st.integers(0, 10**6), st.integers(0, 10**6))
def test_lag_is_never_negative(position: int, end_delta: int, back: int) -> None:
    end = max(0, position + end_delta - back)
    lags = partition_lags(stats({"0": part(app_offset=position, ls_offset=end)}))
    assert lags == {("raw", 0): max(0, end - position)}
