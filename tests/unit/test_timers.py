"""Timers against a model: whatever the adds, moves and drops, keys come out in (time, key)
order, each live key exactly once, and nothing due later than asked is opened."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from consumer.correlation.state.timers import Timers

keys = st.sampled_from([f"k{i}" for i in range(12)])
times = st.integers(0, 5_000)
steps = st.lists(st.one_of(
    st.tuples(st.just("set"), keys, times),
    st.tuples(st.just("drop"), keys, st.just(0)),
    st.tuples(st.just("due"), st.just(""), times),
), max_size=80)


@settings(max_examples=400, deadline=None)
@given(steps, st.sampled_from([1, 7, 1000]))
def test_timers_follow_the_model(script: list[tuple[str, str, int]], width: int) -> None:
    held: dict[str, int] = {}
    timers = Timers(held.get, width)
    for action, key, t in script:
        if action == "set":
            held[key] = t
            timers.add(key, t)
        elif action == "drop":
            held.pop(key, None)
        else:
            expected = sorted((v, k) for k, v in held.items() if v <= t)
            got = []
            while timers.peek(t) is not None:
                due = timers.peek(t)
                k = timers.pop()
                assert held[k] == due
                got.append((due, k))
                del held[k]  # the owner drops what came due
            assert got == expected
        timers.compact(len(held), lambda: list(held.items()))
    rest = []
    while timers.peek() is not None:
        k = timers.pop()
        rest.append((held.pop(k), k))
    assert rest == sorted(rest)
    assert held == {}


def test_buckets_past_the_asked_time_are_not_opened() -> None:
    asked: list[str] = []
    held = {f"k{i}": 10_000 + i for i in range(1000)}

    def time_of(key: str) -> int | None:
        asked.append(key)
        return held.get(key)

    timers = Timers(time_of, 1000)
    for k, t in held.items():
        timers.add(k, t)
    assert timers.peek(9_999) is None
    assert asked == []  # a burst due later is not sorted now
    assert timers.peek(10_000) == 10_000
    assert len(asked) == 1001  # its bucket is ordered once it can hold something due (+ head)


def test_stale_entries_are_compacted_away() -> None:
    held: dict[str, int] = {}
    timers = Timers(held.get, 1000)
    for i in range(10_000):  # one key moved ten thousand times
        held["k"] = i * 1000
        timers.add("k", i * 1000)
        timers.compact(len(held), lambda: list(held.items()))
    assert timers.entries <= 2 * len(held) + 1024 + 1
    assert timers.peek() == 9_999_000
