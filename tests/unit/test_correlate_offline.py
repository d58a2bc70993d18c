"""``vmevents correlate FILE``: the whole input is correlated in event-time order.

The sample's 500 operations all complete, whatever the order of the lines (issue #8 measured
264 differing records for a six-partition backlog and 173-195 for shuffles before).
"""

from __future__ import annotations

import random
from pathlib import Path

import orjson
import pytest

from consumer import cli

SAMPLE = Path(__file__).resolve().parents[2] / "deploy" / "local" / "samples" / \
    "synthetic-events.jsonl"


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    for name in list(os.environ):
        if name.startswith(("VMEVENTS_", "KAFKA_", "SCHEMA_REGISTRY_")):
            monkeypatch.delenv(name)


def correlate(path: Path, capsysbinary: pytest.CaptureFixture[bytes]) -> tuple[list[bytes],
                                                                              list[bytes]]:
    assert cli.main(["correlate", str(path)]) == 0
    captured = capsysbinary.readouterr()
    return captured.out.splitlines(), captured.err.splitlines()


def six_partitions_one_after_another(lines: list[bytes]) -> list[bytes]:
    """A backlog of six partitions (records spread round-robin) read one partition at a time."""
    return [line for p in range(6) for line in lines[p::6]]


def shuffled(lines: list[bytes], seed: int) -> list[bytes]:
    out = list(lines)
    random.Random(seed).shuffle(out)
    return out


def test_sample_output_does_not_depend_on_line_order(
        tmp_path: Path, capsysbinary: pytest.CaptureFixture[bytes]) -> None:
    lines = SAMPLE.read_bytes().splitlines()
    reference, err = correlate(SAMPLE, capsysbinary)
    assert err == []
    outcomes = [orjson.loads(line) for line in reference]
    assert len(outcomes) == 500
    assert {o["outcome"] for o in outcomes} == {"completed"}
    assert all(o["start_known"] and o["duration_ms"] > 0 and not o["after_timeout"]
               for o in outcomes)
    orders = {"six partitions": six_partitions_one_after_another(lines),
              "reversed": lines[::-1],
              **{f"shuffle {seed}": shuffled(lines, seed) for seed in (1, 2, 3)}}
    for name, order in orders.items():
        path = tmp_path / f"{name}.jsonl"
        path.write_bytes(b"\n".join(order) + b"\n")
        out, err = correlate(path, capsysbinary)
        assert err == [], name
        differing = set(out) ^ set(reference)
        assert (len(out), len(differing)) == (500, 0), name
        assert out == reference, name  # the very same bytes, in the same order


def jd_reboot(state: str, local_time: str, seq: int) -> bytes:
    return orjson.dumps({
        "detail": {"eventAction": "SystemFailure.Reboot", "eventState": state,
                   "eventTime": local_time, "instanceId": "i-slow"},
        "detailType": "StatusNotification", "id": f"jd-{seq}", "pin": "devops",
        "region": "cn-north-1", "resources": ["i-slow"], "source": "jcloud.vm",
        "time": local_time.replace(" ", "T") + "+0800", "version": ""})


def test_reboot_of_47_minutes_is_timed_out_then_completed(
        tmp_path: Path, capsysbinary: pytest.CaptureFixture[bytes]) -> None:
    path = tmp_path / "slow.jsonl"
    path.write_bytes(jd_reboot("Executed", "2026-01-01 08:47:00", 2) + b"\n"
                     + jd_reboot("Executing", "2026-01-01 08:00:00", 1) + b"\n")
    out, err = correlate(path, capsysbinary)
    assert err == []
    records = [orjson.loads(line) for line in out]
    assert [(o["outcome"], o["after_timeout"], o["duration_ms"]) for o in records] == [
        ("timed_out", False, None), ("completed", True, 2_820_000)]
    done = records[1]
    assert (done["started_at"], done["finished_at"]) == ("2026-01-01T00:00:00Z",
                                                         "2026-01-01T00:47:00Z")


def test_pending_operations_are_listed_readably(
        tmp_path: Path, capsysbinary: pytest.CaptureFixture[bytes]) -> None:
    path = tmp_path / "open.jsonl"
    path.write_bytes(jd_reboot("Executing", "2026-01-01 08:00:00", 1) + b"\n{broken\n")
    out, err = correlate(path, capsysbinary)
    assert out == []
    rejected, pending, summary = err
    assert orjson.loads(rejected)["line"] == 2
    op = orjson.loads(pending)
    assert op["status"] == "pending"
    assert (op["operation"], op["vendor"], op["instance_id"], op["state"]) == (
        "failure.reboot", "jdcloud", "i-slow", "started")
    assert op["started_at"] == "2026-01-01T00:00:00Z"
    assert op["deadline"] == "2026-01-01T00:30:00Z"
    assert op["notification_ids"] == ["jd-1"]
    assert summary == b"vmevents: 1 operation still pending at the end of the input"
