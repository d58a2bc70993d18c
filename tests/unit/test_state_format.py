"""The open-operation changelog value: format 2 round-trips, format 1 still restores.

``tests/fixtures/changelog-format1.jsonl`` is a changelog written by the last format-1 version
(see the script beside it): restoring it must give the same open operations, markers, buffered
notifications and watermark, and the operations must then complete as they would have.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from consumer.correlation.objects import OpState, PendingOp
from consumer.correlation.state.codec import (
    PENDING_FORMAT,
    check_pending,
    decode_pending,
    encode_pending,
    pending_deadline,
)
from consumer.correlator import Correlator, CorrelatorConfig, Outcome
from consumer.normalization import Normalizer
from tests.seeds import SEEDS

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "changelog-format1.jsonl"
NOW = 1_615_000_000_000  # the processing time the fixture was written at

text = st.text(min_size=1, max_size=40)
opt_text = st.none() | text
opt_time = st.none() | st.integers(946_684_800_000, 4_102_444_800_000)


@st.composite
def pending_ops(draw: st.DrawFn) -> PendingOp:
    op = PendingOp.__new__(PendingOp)
    op.vendor = draw(st.sampled_from(["jdcloud", "aliyun", "aws", "gcp"]))
    op.instance_id = draw(text)  # may hold "|": cut from the key by length, not by splitting
    op.code = draw(st.sampled_from(["SystemFailure.Reboot", "SystemMaintenance.Reboot",
                                    "Some.Unknown|Code", "StateChange"]) | text)
    op.operation = draw(st.sampled_from(["failure.reboot", "maintenance.reboot", "x.y"]))
    op.vendor_event_id = draw(opt_text)
    in_key = draw(st.booleans())
    if in_key:
        op.key = f"{op.vendor}|{op.instance_id}|{op.code}"
        if op.vendor_event_id is not None:
            op.key += f"|{op.vendor_event_id}"
    else:
        op.key = draw(text)
    op.by_id = draw(st.booleans())
    op.known = draw(st.booleans())
    op.state = draw(st.sampled_from(list(OpState)))
    op.region, op.account_id = draw(opt_text), draw(opt_text)
    op.notice_at, op.not_before = draw(opt_time), draw(opt_time)
    op.start_at, op.end_at = draw(opt_time), draw(opt_time)
    op.end_kind = draw(st.sampled_from([None, "completed", "failed", "avoided", "canceled"]))
    op.from_state, op.to_state = draw(opt_text), draw(opt_text)
    op.last_when = draw(st.integers(0, 2**62))
    op.deadline = draw(st.integers(-(2**62), 2**62))
    op.timeout_ms = draw(st.integers(0, 2**40))
    op.nids = draw(st.lists(text, max_size=3))
    op.sources = [{"topic": t, "partition": p, "offset": o} for t, p, o in draw(st.lists(
        st.tuples(text, st.integers(0, 1000), st.integers(0, 2**62)), max_size=3))]
    op.attributes = draw(st.dictionaries(text, text, max_size=3))
    return op


def format1(op: PendingOp) -> bytes:
    """What format 1 wrote: the operation's fields as a JSON object with ``"v": 1``."""
    return orjson.dumps({"v": 1, **op.as_dict()})


@settings(max_examples=300, deadline=None)
@given(pending_ops())
def test_format2_round_trips_every_field(op: PendingOp) -> None:
    value = encode_pending(op)
    assert value[0] == PENDING_FORMAT
    assert pending_deadline(value) == op.deadline
    assert check_pending(op.key, value) is value
    assert decode_pending(op.key, value).as_dict() == op.as_dict()


@settings(max_examples=200, deadline=None)
@given(pending_ops())
def test_format1_values_decode_and_convert(op: PendingOp) -> None:
    old = format1(op)
    assert decode_pending(op.key, old).as_dict() == op.as_dict()
    assert pending_deadline(old) == op.deadline
    converted = check_pending(op.key, old)
    assert converted[0] == PENDING_FORMAT
    assert decode_pending(op.key, converted).as_dict() == op.as_dict()


def test_key_parts_are_not_repeated_in_the_value() -> None:
    op = PendingOp.__new__(PendingOp)
    values = {"vendor": "aliyun", "instance_id": "i-bp1ecr0000000001go2go",
              "code": "SystemMaintenance.Reboot", "vendor_event_id": "e-bp11trd0000000001um2"}
    for name, value in values.items():
        setattr(op, name, value)
    op.key = "aliyun|i-bp1ecr0000000001go2go|SystemMaintenance.Reboot|e-bp11trd0000000001um2"
    op.operation, op.known, op.by_id, op.state = "maintenance.reboot", True, True, OpState.ANNOUNCED
    op.region = op.account_id = op.start_at = op.end_at = op.end_kind = None
    op.from_state = op.to_state = None
    op.notice_at, op.not_before = 1_554_783_506_000, 1_555_030_861_000
    op.last_when, op.deadline, op.timeout_ms = 1_554_783_506_922, 1_555_030_861_000, 0
    op.nids, op.sources, op.attributes = [], [], {}
    value = encode_pending(op)
    for part in (*values.values(), "maintenance.reboot"):
        assert part.encode() not in value
    assert decode_pending(op.key, value).as_dict() == op.as_dict()


def test_a_value_corrupt_past_its_head_is_skipped_and_tombstoned() -> None:
    """Restore checks only the head (a million values must take seconds): a value corrupt past
    it is found when its operation is next touched, then dropped, counted and tombstoned."""
    key = "jdcloud|i-l16****r0v|InstanceExpiration.Stop"
    corr = Correlator(CorrelatorConfig(allowed_lateness_ms=60_000), lambda: NOW)
    good = dict(fixture_records())["p|" + key]
    assert good is not None
    corr.restore("p|" + key, encode_pending(decode_pending(key, good))[:30] + b"not json")
    assert corr.pending_count == 1
    assert corr.pending_operations() == []  # listing skips what it cannot read
    out: list[Outcome] = []
    for ev in seed_events("jd_expiration_stop_executed"):
        out += corr.process(ev)
    out += corr.flush()  # the end is applied: it finds the corrupt value
    assert corr.counters["restore_skipped"] == 1
    assert out == []  # the end alone waits for its start (grace), held as an operation
    assert [op["state"] for op in corr.pending_operations()] == ["ended"]
    written = dict(corr.drain_changes())["p|" + key]  # the readable value replaces the corrupt
    assert written is not None
    assert decode_pending(key, written).state is OpState.ENDED


def format1_sample() -> bytes:
    for line in FIXTURE.read_text().splitlines():
        record = orjson.loads(line)
        if record["key"].startswith("p|") and record["value"] is not None:
            return str(record["value"]).encode()
    raise AssertionError("the fixture has no open operation")


# -- the upgrade --------------------------------------------------------------------------------


def fixture_records() -> list[tuple[str, bytes | None]]:
    out: list[tuple[str, bytes | None]] = []
    for line in FIXTURE.read_text().splitlines():
        record: dict[str, Any] = orjson.loads(line)
        value = record["value"]
        out.append((record["key"], None if value is None else value.encode()))
    return out


def restored() -> Correlator:
    corr = Correlator(CorrelatorConfig(allowed_lateness_ms=60_000), lambda: NOW)
    for key, value in fixture_records():
        corr.restore(key, value)
    return corr


def seed_events(name: str) -> list[Any]:
    seed = next(s for s in SEEDS if s.name == name)
    return Normalizer().normalize_all(seed.raw, NOW)


def test_a_format1_changelog_restores_everything_it_held() -> None:
    records = fixture_records()
    assert {k[:2] for k, _ in records} == {"p|", "d|", "b|", "w|"}
    corr = restored()
    assert corr.counters["restore_skipped"] == 0
    snap = corr.snapshot()
    kinds = Counter(k[:2] for k in snap)
    assert kinds == {"p|": 5, "b|": 3, "d|": 1, "w|": 1}
    assert snap["w|"] == {"max": 1_614_255_219_000, "w": 1_614_255_159_000}
    ali = snap["p|aliyun|i-bp1ecr********5go2go|SystemMaintenance.Reboot|e-bp11trd********pqum2"]
    assert ali["state"] == "announced"
    assert ali["not_before"] == 1_555_030_861_000
    assert ali["operation"] == "maintenance.reboot"
    for key, value in records:  # every open operation the log still holds, field for field
        if key.startswith("p|") and key in snap:
            old = orjson.loads(value or b"{}")
            assert {k: v for k, v in old.items() if k != "v"} == snap[key]


def test_a_format1_changelog_completes_after_the_upgrade() -> None:
    corr = restored()
    out: list[Outcome] = []
    ends = ["jd_expiration_stop_executed", "jd_expiration_delete_executed",
            "jd_arrearage_stop_executed", "jd_arrearage_delete_executed",
            "jd_system_failure_delete_executed",
            "jd_system_failure_reboot_executed"]  # a redelivery of what the marker holds
    for name in ends:
        for ev in seed_events(name):
            out += corr.process(ev)
    out += corr.flush()
    done = {o["vendor_event_code"]: o for o in out}
    assert len(out) == len(done), out
    assert set(done) == {"InstanceExpiration.Stop", "InstanceExpiration.Delete",
                         "AccountArrearage.Stop", "AccountArrearage.Delete",
                         "SystemFailure.Delete", "CreateImage"}
    for code, outcome in done.items():
        start = next(e for n in SEED_NAMES[code] for e in seed_events(n[0]))
        end = next(e for n in SEED_NAMES[code] for e in seed_events(n[1]))
        assert outcome["outcome"] == "completed", outcome
        assert outcome["duration_ms"] == end["event_time"] - start["event_time"]
    assert corr.pending_count == 1  # the Alibaba maintenance, announced for later
    assert all(k.startswith("p|") and v is not None and v[0] == PENDING_FORMAT
               for k, v in corr.drain_changes() if k.startswith("p|") and v is not None)


SEED_NAMES = {
    "InstanceExpiration.Stop": [("jd_expiration_stop_executing", "jd_expiration_stop_executed")],
    "InstanceExpiration.Delete": [("jd_expiration_delete_executing",
                                   "jd_expiration_delete_executed")],
    "AccountArrearage.Stop": [("jd_arrearage_stop_executing", "jd_arrearage_stop_executed")],
    "AccountArrearage.Delete": [("jd_arrearage_delete_executing", "jd_arrearage_delete_executed")],
    "SystemFailure.Delete": [("jd_system_failure_delete_executing",
                              "jd_system_failure_delete_executed")],
    "CreateImage": [("jd_create_image_executing", "jd_create_image_executed")],
}
