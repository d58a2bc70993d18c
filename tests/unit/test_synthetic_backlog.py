"""The messy backlog generator: deterministic, partitions in order and drifting, and its ground
truth (one outcome per operation) is what ``vmevents correlate`` finds in it."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
import pytest

from consumer.normalization import Normalizer
from consumer.synthetic import messy_backlog
from tests.unit.test_correlate_offline import _clean_env, correlate  # noqa: F401  (fixture)

BASE = datetime(2026, 3, 1, tzinfo=UTC)


def test_deterministic_from_the_seed() -> None:
    assert messy_backlog(instances=50, base=BASE) == messy_backlog(instances=50, base=BASE)
    assert messy_backlog(instances=50, base=BASE) != messy_backlog(instances=50, seed=1, base=BASE)


def test_partitions_in_delivery_order_drifting_a_minute_apart() -> None:
    backlog = messy_backlog(instances=300, base=BASE)
    normalizer = Normalizer()
    offsets: dict[int, set[int]] = {}
    last: dict[int, int] = {}
    for partition, ts, raw in backlog.records:
        assert ts >= last.get(partition, 0)
        last[partition] = ts
        event_time = normalizer.normalize_all(raw)[0]["event_time"]
        offsets.setdefault(partition, set()).add((ts - event_time) // 60_000)
    assert sorted(last) == list(range(6))
    # An original at event time + k minutes; a duplicated end up to two minutes after that.
    assert all(k in found and found <= {k, k + 1, k + 2} for k, found in offsets.items())


def test_every_operation_once_offline(tmp_path: Path,
                                      capsysbinary: pytest.CaptureFixture[bytes]) -> None:
    backlog = messy_backlog(instances=300, base=BASE, drift=timedelta(minutes=3))
    path = tmp_path / "raw.jsonl"
    backlog.write_jsonl(path)
    out, err = correlate(path, capsysbinary)
    assert err == []
    assert len(out) == backlog.operations >= 2 * 300
    outcomes = Counter(f"{o['vendor']} {o['operation']} {o['outcome']}"
                       for o in map(orjson.loads, out))
    assert outcomes["aliyun lifecycle.stop completed"] == dict(backlog.kinds)["aliyun lifecycle.stop"]
    assert {"completed", "failed", "canceled", "avoided"} <= {k.split()[-1] for k in outcomes}
    copies = Counter(raw for _, _, raw in backlog.records)
    assert set(copies.values()) == {1, 2}  # some ends delivered twice


def test_one_notification_id_per_notification() -> None:
    records = {raw for _, _, raw in messy_backlog(instances=300, base=BASE).records}
    ids = Counter(orjson.loads(raw)["id"] for raw in records)
    assert ids.most_common(1)[0][1] == 1
