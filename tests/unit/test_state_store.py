"""The state layer on its own (no correlator): drain, rollback, restore, the byte estimate, and
changelogs written by earlier versions.

``tests/fixtures/changelog-format2.jsonl`` is a changelog as the landing before format 3 wrote it
(see its generator); ``changelog-format2.expected.json`` is what that landing restored from it
and decided after. ``changelog-format1.jsonl`` (the landing before that) is read by
``test_state_format.py``.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import orjson
import pytest

from consumer.correlation.objects import DoneMarker, OpState, PendingOp
from consumer.correlation.state import NO_TIME, StateStore, codec
from consumer.correlation.state.codec import (
    CURRENT_PENDING,
    OPERATION_NAMES,
    decode_pending,
    encode_pending,
)
from consumer.correlation.state.store import COLD_ENTRY_BYTES, MARKER_ENTRY_BYTES
from consumer.correlator import Correlator, CorrelatorConfig
from consumer.model import InstanceEvent
from consumer.normalization.operations import OPERATIONS

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
NOW = 1_615_000_000_000

# -- changelogs of earlier versions -----------------------------------------------------------


def format2_records() -> list[tuple[str, bytes | None]]:
    out: list[tuple[str, bytes | None]] = []
    for line in (FIXTURES / "changelog-format2.jsonl").read_text().splitlines():
        record: dict[str, Any] = orjson.loads(line)
        value = record["value_hex"]
        out.append((record["key"], None if value is None else bytes.fromhex(value)))
    return out


def plain(value: Any) -> Any:
    """JSON's view of a value (tuples as lists), to compare with the fixture."""
    return orjson.loads(orjson.dumps(value))


def test_a_format2_changelog_restores_and_decides_as_the_landing_that_wrote_it() -> None:
    records = format2_records()
    assert {k[:2] for k, _ in records} == {"p|", "d|", "b|", "w|"}
    expected = orjson.loads((FIXTURES / "changelog-format2.expected.json").read_bytes())
    corr = Correlator(CorrelatorConfig(allowed_lateness_ms=60_000,
                                       timeouts={"failure.delete": 1_000}), lambda: NOW)
    for key, value in records:
        corr.restore(key, value)
    assert corr.counters["restore_skipped"] == 0
    assert plain(corr.snapshot()) == expected["snapshot"]
    assert plain(corr.flush()) == expected["flush"]
    corr.expire(NOW)
    later = corr.expire(NOW + 30 * 86_400_000)
    assert later, "the fixture's open operations time out"
    assert plain(later) == expected["expire_30d"]
    # What it drains now is format 3.
    written = [v for k, v in corr.drain_changes() if k.startswith("p|") and v is not None]
    assert all(v[:1] == CURRENT_PENDING for v in written)


# -- the value carries its operation ---------------------------------------------------------


def an_op(code: str = "SystemFailure.Reboot", operation: str = "failure.reboot") -> PendingOp:
    event: dict[str, Any] = {
        "vendor": "jdcloud", "instance_id": "i-1", "vendor_event_code": code,
        "operation": operation, "known": True, "region": "cn-north-1", "account_id": None,
        "vendor_event_id": None, "attributes": {}, "notification_id": "n1",
        "source": {"topic": "t", "partition": 0, "offset": 7}, "not_before": None,
        "publish_time": None}
    op = PendingOp(f"jdcloud|i-1|{code}", event, operation, False, NOW)  # type: ignore[arg-type]
    op.absorb(event, NOW)  # type: ignore[arg-type]
    op.state = OpState.STARTED
    op.start_at = NOW
    op.deadline = NOW + 60_000
    return op


def test_operation_names_are_append_only() -> None:
    """A format-3 value holds its operation as an index into OPERATION_NAMES: a name written
    once must keep its index for ever. New names go at the end."""
    as_landed = (
        "arrearage.delete", "arrearage.stop", "burstable.performance_mode_change",
        "burstable.performance_restricted", "disk.error_detected", "disk.stalled",
        "expiration.delete", "expiration.stop", "failure.delete", "failure.fault",
        "failure.gpu_fault", "failure.local_disk_fault", "failure.reboot", "failure.redeploy",
        "failure.removed_from_ag", "image.create", "instance_failure.reboot",
        "lifecycle.state_change", "maintenance.host", "maintenance.isolate_local_disk",
        "maintenance.live_migration", "maintenance.network", "maintenance.power",
        "maintenance.reboot", "maintenance.reboot_isolate_error_disk",
        "maintenance.reboot_reinit_error_disk", "maintenance.redeploy",
        "maintenance.retirement", "maintenance.stop", "maintenance.terminate",
        "migration.live_across_ddh", "preemptible.interruption",
        "preemptible.rebalance_recommendation", "lifecycle.create", "lifecycle.delete",
        "lifecycle.restart", "lifecycle.start", "lifecycle.stop", "unknown")
    assert OPERATION_NAMES[:len(as_landed)] == as_landed
    assert len(set(OPERATION_NAMES)) == len(OPERATION_NAMES)


def test_a_value_restores_its_operation_whatever_the_code_table_says_later(
        monkeypatch: pytest.MonkeyPatch) -> None:
    table_op = an_op()
    custom = an_op(operation="made.up.by.a.newer.version")
    values = [encode_pending(table_op), encode_pending(custom)]
    monkeypatch.delitem(OPERATIONS, "SystemFailure.Reboot")  # the code is gone from the table
    assert decode_pending(table_op.key, values[0]).operation == "failure.reboot"
    assert decode_pending(custom.key, values[1]).operation == "made.up.by.a.newer.version"


def test_a_format2_value_of_a_code_no_longer_in_the_table_restores_as_unknown(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Format 2 left the operation out when it was the table's: with the code gone, the
    restore must not fail; the operation is ``unknown`` (its own outcome topic)."""
    op = an_op()
    v3 = encode_pending(op)
    tail = orjson.loads(v3[27:])
    tail[3] = None  # as format 2 wrote it: the table's operation left out
    v2 = bytes((2,)) + v3[1:27] + orjson.dumps(tail)
    assert decode_pending(op.key, v2).operation == "failure.reboot"
    monkeypatch.delitem(OPERATIONS, "SystemFailure.Reboot")
    assert decode_pending(op.key, v2).operation == "unknown"
    assert codec.pending_tally(op.key, v2)[0] == ("jdcloud", "unknown", "started")


# -- the store without a correlator ---------------------------------------------------------


def drained(store: StateStore) -> dict[str, bytes | None]:
    changes = store.drain()
    keys = [k for k, _ in changes]
    assert len(keys) == len(set(keys)), "each key once per drain"
    return dict(changes)


def test_drain_writes_each_changed_key_once_and_nothing_for_a_key_opened_and_closed() -> None:
    store = StateStore(Counter())
    kept, gone = an_op(), an_op("SystemFailure.Delete", "failure.delete")
    store.add(kept)
    store.schedule(kept, kept.deadline)
    store.add(gone)
    store.discard(gone)  # created and dropped inside one batch
    store.clock.see(NOW, NOW)
    out = drained(store)
    assert set(out) == {"p|" + kept.key, "w|"}
    assert decode_pending(kept.key, out["p|" + kept.key] or b"").as_dict() == kept.as_dict()
    assert drained(store) == {}  # nothing changed since
    op = store.get(kept.key)  # cold again: decoded on demand
    assert op is not None
    store.discard(op)
    assert drained(store) == {"p|" + kept.key: None}


def test_rollback_puts_back_exactly_the_committed_state() -> None:
    store = StateStore(Counter())
    op = an_op()
    store.add(op)
    store.schedule(op, op.deadline)
    store.remember("d|x", DoneMarker(1, 2, False, False, NOW + 1), max_done=10)
    event: InstanceEvent = {"vendor": "jdcloud", "instance_id": "i-2",  # type: ignore[typeddict-item]
                            "vendor_event_code": "C", "operation": "o", "known": True,
                            "phase": "executing", "event_time": NOW, "region": None,
                            "account_id": None, "notification_id": None,
                            "vendor_event_id": None, "previous_state": None,
                            "current_state": None, "publish_time": None, "not_before": None,
                            "start_time": None, "end_time": None, "attributes": {},
                            "source": None}
    store.reorder.add(NOW, 2, event)
    store.clock.see(NOW, NOW)
    committed = drained(store)
    store.commit_point()
    before = store.snapshot()
    bytes_before = store.state_bytes()
    # The batch that aborts: change the operation, replace the marker, release the buffer,
    # add new things, move the watermark.
    held = store.get(op.key)
    assert held is not None
    store.changing(held)
    held.state = OpState.ENDED
    store.remember("d|x", DoneMarker(1, 9, False, False, NOW + 5), max_done=10)
    store.remember("d|y", DoneMarker(3, 4, False, False, NOW + 5), max_done=10)
    assert store.reorder.head() == NOW
    store.reorder.pop()
    store.add(an_op("CreateImage", "image.create"))
    store.clock.see(NOW + 10, NOW)
    store.clock.set_watermark(NOW + 5)
    assert store.touched
    assert store.rollback() > 0
    assert store.snapshot() == before
    assert store.state_bytes() == bytes_before
    assert not store.touched
    assert drained(store) == {}  # the log already holds the committed state
    restored = StateStore(Counter())
    for key, value in committed.items():
        restored.restore(key, value)
    assert restored.snapshot() == before


def test_restore_reads_drained_records_into_the_same_state_and_skips_what_it_cannot_read() -> None:
    counters: Counter[str] = Counter()
    store = StateStore(counters)
    for code, operation in [("SystemFailure.Reboot", "failure.reboot"),
                            ("CreateImage", "image.create")]:
        op = an_op(code, operation)
        store.add(op)
        store.schedule(op, op.deadline)
    store.clock.see(NOW, NOW)
    log = list(store.drain())
    other = StateStore(counters)
    for key, value in [*log, ("p|short", b"\x03not an operation"), ("z|what", b"{}")]:
        other.restore(key, value)
    assert counters["restore_skipped"] == 2  # a value corrupt past its head: when first read
    assert other.snapshot() == store.snapshot()
    assert other.next_deadline() == NOW + 60_000
    assert other.open_series() == store.open_series()


def test_the_byte_estimate_moves_by_what_is_held() -> None:
    store = StateStore(Counter())
    assert store.state_bytes() == 0
    op = an_op()
    store.add(op)
    store.drain()  # cold: its encoded value, its key and the entry's cost
    value = encode_pending(op)
    assert store.state_bytes() == len(value) + len(op.key) + COLD_ENTRY_BYTES
    store.remember("k" * 10, DoneMarker(1, 2, False, False, NOW), max_done=10)
    store.remember("k" * 500, DoneMarker(1, 2, False, False, NOW), max_done=10)
    markers = 10 + 500 + 2 * MARKER_ENTRY_BYTES
    assert store.marker_bytes() == markers
    assert store.state_bytes() == len(value) + len(op.key) + COLD_ENTRY_BYTES + markers
    assert store.expire_markers(NOW + 1)
    assert store.marker_bytes() == 0
    assert store.clock.max_time == NO_TIME
