"""Progress marks through the repartition, and the correlator's upstream frontier (issue #15).

The normalize side writes a mark only when a raw partition's progress changed, announces newly
assigned partitions as behind before their first records, and says everything again after an
abort. The correlator holds a notification later than a raw partition still behind, releases it
when that partition's progress passes it, never lets the watermark pass such a partition, and
an idle correlator writes nothing.
"""

from __future__ import annotations

from typing import Any

from consumer.correlation.config import CorrelatorConfig
from consumer.correlation.engine import Correlator
from consumer.model import InstanceEvent
from consumer.runtime.marks import (
    MARK_HEADER,
    MARK_KEY,
    NOTHING_YET,
    ProgressMarks,
    encode_mark,
    read_mark,
)

SEC = 1_000
MIN = 60 * SEC
HOUR_MS = 60 * MIN
BASE = 1_767_225_600_000
P0, P1 = ("raw", 0), ("raw", 1)


class Sink:
    def __init__(self) -> None:
        self.records: list[tuple[str, bytes | None, bytes | None, Any, int]] = []

    def __call__(self, topic: str, key: bytes | None, value: bytes | None, headers: Any = None,
                 partition: int = -1) -> None:
        self.records.append((topic, key, value, headers, partition))

    def marks(self) -> list[list[tuple[str, int, bool]] | None]:
        return [read_mark(h) for _, _, _, h, _ in self.records]


def test_a_mark_goes_to_every_normalized_partition_only_when_progress_changed() -> None:
    marks, sink = ProgressMarks("norm", 3), Sink()
    marks.saw(P0, BASE)
    marks.saw(P0, BASE - SEC)  # older: the newest stays
    assert marks.emit(lambda: {P0: False, P1: True}, sink) == 3
    assert [(t, k, v, p) for t, k, v, _, p in sink.records] == [
        ("norm", MARK_KEY, None, 0), ("norm", MARK_KEY, None, 1), ("norm", MARK_KEY, None, 2)]
    assert sink.marks()[0] == [("raw:0", BASE, False), ("raw:1", NOTHING_YET, True)]
    sink.records.clear()
    assert marks.emit(lambda: {P0: False, P1: True}, sink) == 0  # idle: nothing written
    marks.saw(P0, BASE + SEC)
    assert marks.emit(lambda: {P0: True, P1: True}, sink) == 3
    assert sink.marks()[0] == [("raw:0", BASE + SEC, True)]  # only what changed


def test_assigned_partitions_are_announced_behind_before_their_records() -> None:
    marks, sink = ProgressMarks("norm", 2), Sink()
    marks.assigned([P0, P1])
    assert marks.announce(sink) == 2
    assert sink.marks()[0] == [("raw:0", NOTHING_YET, False), ("raw:1", NOTHING_YET, False)]
    assert marks.announce(sink) == 0
    sink.records.clear()
    assert marks.emit(lambda: {P0: True, P1: True}, sink) == 2
    marks.rollback()  # the batch aborted: its marks are gone, say everything again
    assert marks.announce(sink) == 2
    assert marks.emit(lambda: {P0: True, P1: True}, sink) == 2


def test_read_mark_ignores_what_is_not_a_mark() -> None:
    assert read_mark(None) is None
    assert read_mark([("other", b"[]")]) is None
    assert read_mark([(MARK_HEADER, b"not json")]) is None
    assert read_mark([(MARK_HEADER, encode_mark([("raw:3", 5, True)]))]) == [("raw:3", 5, True)]


def jd(phase: str, when: int, inst: str = "i-1") -> InstanceEvent:
    return {  # type: ignore[return-value]
        "vendor": "jdcloud", "instance_id": inst, "vendor_event_code": "SystemFailure.Reboot",
        "operation": "failure.reboot", "known": True, "phase": phase, "vendor_status": None,
        "event_time": when, "region": "r1", "account_id": "a", "notification_id": None,
        "vendor_event_id": None, "level": None, "previous_state": None, "current_state": None,
        "publish_time": None, "not_before": None, "start_time": None, "end_time": None,
        "source_format": "", "attributes": {},
    }


def test_a_notification_beyond_a_partition_still_behind_waits_for_it() -> None:
    now = [BASE]
    corr = Correlator(CorrelatorConfig(), lambda: now[0])
    assert corr.progress([("raw:0", BASE + 10 * SEC, False)]) == []
    assert corr.progress([("raw:1", BASE, False)]) == []
    assert corr.process(jd("executing", BASE + 5 * SEC)) == []
    assert corr.process(jd("executed", BASE + 9 * SEC)) == []
    assert (corr.pending_count, corr.buffered_count) == (0, 2)  # both wait for raw:1
    # raw:1 reaches the start only: the start is decided (opened), the end still waits.
    assert corr.progress([("raw:1", BASE + 6 * SEC, False)]) == []
    assert (corr.pending_count, corr.buffered_count) == (1, 1)
    [o] = corr.progress([("raw:1", BASE + 6 * SEC, True)])
    assert (o["outcome"], o["duration_ms"]) == ("completed", 4 * SEC)
    assert (corr.pending_count, corr.buffered_count) == (0, 0)


def test_the_watermark_never_passes_a_partition_still_behind() -> None:
    now = [BASE]
    corr = Correlator(CorrelatorConfig(allowed_lateness_ms=MIN), lambda: now[0])
    corr.progress([("raw:0", BASE, False)])
    corr.process(jd("executed", BASE + HOUR_MS))
    now[0] += 10 * HOUR_MS  # a long quiet time: raw:0 still behind holds the watermark
    corr.expire()
    assert corr.watermark == BASE - MIN
    corr.progress([("raw:0", BASE + HOUR_MS, True)])
    corr.expire()
    assert corr.watermark is not None
    assert corr.watermark > BASE + HOUR_MS


def test_an_idle_correlator_writes_nothing_after_its_last_decision() -> None:
    now = [BASE]
    corr = Correlator(CorrelatorConfig(), lambda: now[0])
    corr.process(jd("executing", BASE))
    [o] = corr.process(jd("executed", BASE + 20 * SEC))  # decided at once
    assert o["duration_ms"] == 20 * SEC
    assert corr.drain_changes() != []
    for _ in range(120):  # two idle minutes of one-second ticks
        now[0] += SEC
        assert corr.expire() == []
        assert corr.drain_changes() == []
