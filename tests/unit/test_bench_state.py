"""The pure helpers of ``make bench-state`` and the burst it feeds the correlator."""

from __future__ import annotations

import io
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from consumer import synthetic
from consumer.bench_state import format_table, read_changes, status_kib, write_changes
from consumer.normalization import Normalizer

changes = st.lists(st.tuples(st.text(max_size=40), st.none() | st.binary(max_size=200)),
                   max_size=30)


@given(changes)
def test_changelog_file_round_trip(records: list[tuple[str, bytes | None]]) -> None:
    buf = io.BytesIO()
    assert write_changes(buf, records) == len(records)
    buf.seek(0)
    assert list(read_changes(buf)) == [(k.encode(), v) for k, v in records]


def test_tombstone_and_empty_value_stay_apart() -> None:
    buf = io.BytesIO()
    write_changes(buf, [("p|a", None), ("p|b", b"")])
    buf.seek(0)
    assert list(read_changes(buf)) == [(b"p|a", None), (b"p|b", b"")]


@pytest.mark.parametrize("cut", [3, 10])  # inside the header; inside the value
def test_truncated_changelog_file_is_an_error(cut: int) -> None:
    buf = io.BytesIO()
    write_changes(buf, [("k", b"value")])
    with pytest.raises(ValueError, match="truncated"):
        list(read_changes(io.BytesIO(buf.getvalue()[:-cut])))


STATUS = "Name:\tpython\nVmPeak:\t  900000 kB\nVmHWM:\t  512000 kB\nVmRSS:\t  400100 kB\n"


def test_status_fields_in_kib() -> None:
    assert status_kib(STATUS, "VmRSS") == 400_100
    assert status_kib(STATUS, "VmHWM") == 512_000
    with pytest.raises(ValueError, match="VmSwap"):
        status_kib(STATUS, "VmSwap")


def test_table_columns_align() -> None:
    lines = format_table(("notices", "burst/s"), [("a", "1,000"), ("longer name", "5")]).split("\n")
    assert lines == ["notices      burst/s", "a              1,000", "longer name        5"]


@pytest.mark.parametrize("event_id", [True, False])
def test_fleet_burst_opens_one_operation_per_instance(event_id: bool) -> None:
    base = datetime(2026, 6, 1, tzinfo=UTC)
    events = [Normalizer().normalize(raw)
              for raw in synthetic.fleet_burst(50, event_id=event_id, base=base)]
    assert len({e["instance_id"] for e in events}) == 50
    assert all(base.timestamp() * 1000 <= e["event_time"] < base.timestamp() * 1000 + 60_000
               for e in events)
    if event_id:
        assert {(e["vendor"], e["phase"]) for e in events} == {("aliyun", "scheduled")}
        assert len({e["vendor_event_id"] for e in events}) == 50
        not_before = int((base + timedelta(days=3)).timestamp() * 1000)
        assert {e["not_before"] for e in events} == {not_before}
    else:
        assert {(e["vendor"], e["phase"], e["vendor_event_id"]) for e in events} == {
            ("jdcloud", "executing", None)}
