"""The timestamp-aligned chooser without Kafka: order, bounded memory, no stall, offsets."""

from __future__ import annotations

import random
from dataclasses import dataclass

from hypothesis import given, settings
from hypothesis import strategies as st

from consumer.runtime.alignment import Aligner, Partition


@dataclass(frozen=True)
class Rec:
    """Just what the aligner reads of a consumed record."""

    topic_: str
    partition_: int
    offset_: int
    ts: int

    def topic(self) -> str:
        return self.topic_

    def partition(self) -> int:
        return self.partition_

    def offset(self) -> int:
        return self.offset_

    def timestamp(self) -> tuple[int, int]:
        return (1, self.ts)


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def partition_logs(draw_ts: list[list[int]], *, sort: bool = True) -> dict[Partition, list[Rec]]:
    logs = {}
    for p, stamps in enumerate(draw_ts):
        ordered = sorted(stamps) if sort else stamps
        logs[("raw", p)] = [Rec("raw", p, off, ts) for off, ts in enumerate(ordered)]
    return logs


timestamps = st.lists(st.lists(st.integers(0, 50), max_size=40), min_size=1, max_size=6)


class Consumer:
    """A simulated consumer over ``logs``: fetches chunks of partitions in a random order,
    honours pause/resume, and knows each partition's position and end (the high watermark)."""

    def __init__(self, logs: dict[Partition, list[Rec]], rng: random.Random) -> None:
        self.logs = logs
        self.position = dict.fromkeys(logs, 0)
        self.paused: set[Partition] = set()
        self.rng = rng

    def may_have_data(self, key: Partition) -> bool:
        return self.position[key] < len(self.logs[key])

    def consume(self, max_records: int) -> list[Rec]:
        open_ = [k for k in self.logs if k not in self.paused and self.may_have_data(k)]
        out: list[Rec] = []
        for key in self.rng.sample(open_, self.rng.randint(0, len(open_))):
            n = self.rng.randint(1, max_records)
            pos = self.position[key]
            out.extend(self.logs[key][pos:pos + n])
            self.position[key] = min(pos + n, len(self.logs[key]))
        return out


def run(logs: dict[Partition, list[Rec]], seed: int, *, max_buffered: int = 8,
        batch: int = 5, limit: int = 7) -> tuple[list[Rec], int]:
    """Drive an aligner with a simulated consumer until everything is released.

    The clock never moves, so the idle bound never ends a wait: the order is the aligner's alone.
    Returns the released records and the most records ever buffered.
    """
    aligner: Aligner[Rec] = Aligner(max_idle_ms=1000, max_buffered=max_buffered, clock=Clock())
    aligner.assign(logs)
    consumer = Consumer(logs, random.Random(seed))
    total = sum(len(v) for v in logs.values())
    out: list[Rec] = []
    peak = 0
    for _ in range(10 * total + 100):
        if len(out) == total:
            break
        consumer.paused.update(aligner.add(consumer.consume(batch)))
        peak = max(peak, aligner.buffered)
        released, resume = aligner.release(limit, consumer.may_have_data)
        consumer.paused.difference_update(resume)
        out.extend(released)
    else:
        raise AssertionError(f"stalled: {len(out)} of {total} released, {aligner.buffered} buffered")
    return out, peak


@settings(max_examples=300, deadline=None)
@given(timestamps, st.integers(0, 10_000))
def test_releases_the_exact_timestamp_merge_whatever_the_fetch_order(
        stamps: list[list[int]], seed: int) -> None:
    logs = partition_logs(stamps)
    out, _ = run(logs, seed)
    expected = sorted((r for log in logs.values() for r in log),
                      key=lambda r: (r.ts, r.partition_, r.offset_))
    assert out == expected  # deterministic: the same for every fetch interleaving


@settings(max_examples=300, deadline=None)
@given(timestamps, st.integers(0, 10_000), st.integers(2, 12), st.integers(1, 10))
def test_memory_stays_bounded_and_nothing_stalls(stamps: list[list[int]], seed: int,
                                                 max_buffered: int, batch: int) -> None:
    """Unsorted partitions too: every record once, each partition in offset order."""
    logs = partition_logs(stamps, sort=False)
    out, peak = run(logs, seed, max_buffered=max_buffered, batch=batch)
    assert sorted(out, key=lambda r: (r.partition_, r.offset_)) == [
        r for log in logs.values() for r in log]
    for key in logs:
        offsets = [r.offset_ for r in out if (r.topic_, r.partition_) == key]
        assert offsets == sorted(offsets)
    # A partition is paused once over the bound; it overshoots by one consumed chunk at most.
    assert peak <= len(logs) * (max_buffered + batch)


def test_an_empty_partition_that_may_have_data_is_waited_for_at_most_the_idle_bound() -> None:
    clock = Clock()
    aligner: Aligner[Rec] = Aligner(max_idle_ms=500, max_buffered=100, clock=clock)
    aligner.assign([("raw", 0), ("raw", 1)])
    aligner.add([Rec("raw", 0, 0, 10), Rec("raw", 0, 1, 20)])
    behind = {("raw", 0): False, ("raw", 1): True}
    assert aligner.release(10, behind.__getitem__) == ([], [])
    clock.now = 0.499
    assert aligner.release(10, behind.__getitem__) == ([], [])
    clock.now = 0.5
    released, _ = aligner.release(10, behind.__getitem__)
    assert [r.ts for r in released] == [10, 20]
    assert aligner.idle_expired == 1
    aligner.release(10, behind.__getitem__)
    assert aligner.idle_expired == 1  # counted once per waiting spell
    # Data arriving for the slow partition ends that wait; its next empty spell waits again.
    aligner.add([Rec("raw", 1, 0, 5), Rec("raw", 0, 2, 30)])
    released, _ = aligner.release(10, behind.__getitem__)
    assert [r.ts for r in released] == [5]
    clock.now = 0.9
    assert aligner.release(10, behind.__getitem__) == ([], [])


def test_a_caught_up_partition_never_blocks() -> None:
    aligner: Aligner[Rec] = Aligner(max_idle_ms=60_000, max_buffered=100, clock=Clock())
    aligner.assign([("raw", p) for p in range(6)])
    aligner.add([Rec("raw", 3, 7, 100)])
    released, _ = aligner.release(10, lambda key: False)
    assert released == [Rec("raw", 3, 7, 100)]


def test_offsets_are_those_of_released_records_and_drop_forgets_them() -> None:
    aligner: Aligner[Rec] = Aligner(max_idle_ms=0, max_buffered=100, clock=Clock())
    aligner.assign([("a", 0), ("b", 0)])
    aligner.add([Rec("a", 0, 10, 1), Rec("a", 0, 11, 5), Rec("b", 0, 40, 3)])
    released, _ = aligner.release(2, lambda key: False)
    assert [(r.topic_, r.offset_) for r in released] == [("a", 10), ("b", 40)]
    assert sorted(aligner.take_offsets()) == [("a", 0, 11), ("b", 0, 41)]
    assert aligner.take_offsets() == []  # handed out once, with one transaction
    assert aligner.buffered == 1
    aligner.release(1, lambda key: False)
    aligner.drop()  # an abort: the released-but-uncommitted offset goes too
    assert aligner.take_offsets() == []
    assert aligner.buffered == 0


def test_revoke_drops_the_partition_and_reports_it_paused() -> None:
    aligner: Aligner[Rec] = Aligner(max_idle_ms=0, max_buffered=2, clock=Clock())
    aligner.assign([("a", 0), ("a", 1)])
    assert aligner.add([Rec("a", 0, i, i) for i in range(3)]) == [("a", 0)]
    assert aligner.revoke([("a", 0)]) == [("a", 0)]
    assert aligner.buffered == 0
    aligner.add([Rec("a", 1, 0, 9)])
    released, _ = aligner.release(10, lambda key: True)  # ("a", 0) is not ours: no wait for it
    assert [r.offset_ for r in released] == [0]


def test_a_record_without_timestamp_keeps_its_place_in_its_partition() -> None:
    aligner: Aligner[Rec] = Aligner(max_idle_ms=0, max_buffered=100, clock=Clock())
    aligner.assign([("a", 0), ("a", 1)])
    aligner.add([Rec("a", 0, 0, 10), Rec("a", 0, 1, -1), Rec("a", 0, 2, 30), Rec("a", 1, 0, 20)])
    released, _ = aligner.release(10, lambda key: False)
    assert [(r.partition_, r.offset_) for r in released] == [(0, 0), (0, 1), (1, 0), (0, 2)]


def test_a_single_partition_bypasses_the_buffer_with_the_same_result() -> None:
    records = [Rec("a", 0, i, ts) for i, ts in enumerate([5, 3, 9])]
    merged: Aligner[Rec] = Aligner(max_idle_ms=0, max_buffered=100, clock=Clock())
    merged.assign([("a", 0)])
    merged.add(records)
    assert merged.release(10, lambda key: False) == (records, [])
    direct: Aligner[Rec] = Aligner(max_idle_ms=0, max_buffered=100, clock=Clock())
    direct.assign([("a", 0)])
    assert direct.bypass(records, 10)
    assert direct.take_offsets() == merged.take_offsets() == [("a", 0, 3)]
    assert not direct.bypass(records, 2)  # over the limit: buffered, released in two batches
    direct.assign([("a", 1)])
    assert not direct.bypass(records, 10)  # two partitions: merged
