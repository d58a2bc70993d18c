"""The open-operations view (``vm.operations.open``) derived from the correlator's changelog drains.

A reader of the compacted topic keeps the last value per key and deletes on a tombstone; the
tests materialize the drained records the same way and compare with what the correlator holds.
"""

from __future__ import annotations

import io
import json
import math
from typing import Any

from confluent_kafka import Message
from fastavro import parse_schema, schemaless_reader, schemaless_writer
from hypothesis import given, settings
from hypothesis import strategies as st

from consumer.config import DEFAULT_SCHEMA_DIR, load_settings
from consumer.correlation.openops import OpenGauges, OpenRecord, open_record
from consumer.correlation.state.codec import PENDING_PREFIX, decode_pending
from consumer.correlator import Correlator, CorrelatorConfig
from consumer.metrics import Metrics
from consumer.model import InstanceEvent
from consumer.runtime.correlate_stage import CorrelateProcessor
from consumer.serde import Decoder, load_schemas, single_object_encoder

SEC = 1_000
MIN = 60 * SEC
BASE = 1_767_225_600_000  # 2026-01-01T00:00:00Z
SCHEMA = parse_schema(json.loads((DEFAULT_SCHEMA_DIR / "OpenOperation.avsc").read_text()))


def event(**fields: Any) -> InstanceEvent:
    base: dict[str, Any] = {
        "vendor": "aliyun", "instance_id": "i-1", "vendor_event_code": "SystemMaintenance.Reboot",
        "operation": "maintenance.reboot", "known": True, "phase": None, "vendor_status": None,
        "event_time": 0, "region": "cn-hangzhou", "account_id": "acct", "notification_id": None,
        "vendor_event_id": None, "level": None, "previous_state": None, "current_state": None,
        "publish_time": None, "not_before": None, "start_time": None, "end_time": None,
        "source_format": "", "attributes": {},
    }
    base.update(fields)
    return base  # type: ignore[return-value]


def scheduled(inst: str, eid: str, t: int, not_before: int) -> InstanceEvent:
    return event(instance_id=inst, vendor_event_id=eid, phase="scheduled", event_time=t,
                 publish_time=t, not_before=not_before)


def executing(inst: str, eid: str, t: int) -> InstanceEvent:
    return event(instance_id=inst, vendor_event_id=eid, phase="executing", event_time=t,
                 start_time=t)


def executed(inst: str, eid: str, s: int, t: int) -> InstanceEvent:
    return event(instance_id=inst, vendor_event_id=eid, phase="executed", event_time=t,
                 start_time=s, end_time=t)


class Reader:
    """A service materializing the compacted topic: last value per key, tombstones delete."""

    def __init__(self) -> None:
        self.open: dict[str, OpenRecord] = {}

    def take(self, records: list[tuple[str, OpenRecord | None]]) -> None:
        for key, record in records:
            if record is None:
                self.open.pop(key, None)
            else:
                buf = io.BytesIO()
                schemaless_writer(buf, SCHEMA, record)  # every record fits the schema
                buf.seek(0)
                self.open[key] = schemaless_reader(buf, SCHEMA, SCHEMA)  # type: ignore[assignment]


def open_changes(corr: Correlator, now: int) -> list[tuple[str, OpenRecord | None]]:
    """The open-operations records of one drain, checked against the changelog it wrote: the
    view is made from the operations, the changelog from their encoding; they must agree."""
    changes = corr.drain_changes(now)
    records = corr.open_changes()
    from_log = [(key[2:], None if value is None else open_record(decode_pending(key[2:], value),
                                                                   now))
                for key, value in changes if key.startswith(PENDING_PREFIX)]
    assert records == from_log
    return records


def drain(corr: Correlator, reader: Reader, now: int = BASE) -> list[tuple[str, OpenRecord | None]]:
    records = open_changes(corr, now)
    reader.take(records)
    return records


def held(corr: Correlator, now: int = BASE) -> dict[str, OpenRecord]:
    return dict(corr.open_operations(now))


def plain(records: dict[str, OpenRecord]) -> dict[str, dict[str, Any]]:
    """Times as epoch ms (the Avro reader gives datetimes), without updated_at."""
    out: dict[str, dict[str, Any]] = {}
    for key, record in records.items():
        out[key] = {k: (int(v.timestamp() * 1000) if hasattr(v, "timestamp") else v)
                    for k, v in record.items() if k != "updated_at"}
    return out


def correlator(clock: list[int], **config: Any) -> Correlator:
    return Correlator(CorrelatorConfig(**config), lambda: clock[0])


def test_open_on_announce_updated_on_start_tombstone_on_end() -> None:
    clock = [BASE]
    corr, reader = correlator(clock), Reader()
    corr.process(scheduled("i-1", "e1", BASE, BASE + 3_600 * SEC))
    [(key, record)] = drain(corr, reader)
    assert record is not None
    assert record["phase"] == "announced"
    assert record["vendor"] == "aliyun"
    assert record["instance_id"] == "i-1"
    assert record["vendor_event_id"] == "e1"
    assert record["operation"] == "maintenance.reboot"
    assert record["scheduled_at"] == BASE
    assert record["not_before"] == BASE + 3_600 * SEC
    assert record["started_at"] is None
    assert record["deadline"] is not None
    assert record["updated_at"] == BASE

    start = BASE + 3_600 * SEC
    corr.process(executing("i-1", "e1", start))
    [(key2, record)] = drain(corr, reader)
    assert key2 == key
    assert record is not None
    assert (record["phase"], record["started_at"]) == ("started", start)
    assert reader.open[key]["phase"] == "started"

    corr.process(executed("i-1", "e1", start, start + 5 * MIN))
    assert drain(corr, reader) == [(key, None)]
    assert reader.open == {} == held(corr)


def test_nothing_is_written_for_an_operation_opened_and_closed_between_drains() -> None:
    corr, reader = correlator([BASE]), Reader()
    corr.process(executing("i-1", "e1", BASE))
    corr.process(executed("i-1", "e1", BASE, BASE + MIN))
    assert drain(corr, reader) == []


def test_timeout_tombstones() -> None:
    clock = [BASE]
    corr = correlator(clock, allowed_lateness_ms=30 * MIN, default_timeout_ms=10 * MIN,
                      timeouts={})
    reader = Reader()
    corr.process(executing("i-1", "e1", BASE))
    corr.process(executing("i-2", "e2", BASE + 20 * MIN))
    drain(corr, reader)
    assert {r["instance_id"] for r in reader.open.values()} == {"i-1", "i-2"}
    outcomes = corr.expire(BASE + 20 * MIN)  # the watermark passes i-1's deadline only
    assert [o["outcome"] for o in outcomes] == ["timed_out"]
    records = drain(corr, reader)
    assert [r for _, r in records] == [None]
    assert {r["instance_id"] for r in reader.open.values()} == {"i-2"}
    assert plain(reader.open) == plain(held(corr))


def test_eviction_tombstones() -> None:
    corr, reader = correlator([BASE], max_pending=2), Reader()
    for i in range(3):
        corr.process(executing(f"i-{i}", f"e{i}", BASE + i * MIN))
    drain(corr, reader)
    assert {r["instance_id"] for r in reader.open.values()} == {"i-1", "i-2"}
    assert plain(reader.open) == plain(held(corr))


def test_end_before_start_is_open_awaiting_its_start() -> None:
    clock = [BASE]
    corr, reader = correlator(clock, allowed_lateness_ms=0), Reader()
    jd = {"vendor": "jdcloud", "vendor_event_code": "SystemFailure.Reboot",
          "operation": "failure.reboot"}
    corr.process(event(instance_id="i-9", phase="executed", event_time=BASE, **jd))
    corr.expire(BASE + SEC)  # released from the reorder buffer
    drain(corr, reader)
    [record] = reader.open.values()
    assert record["phase"] == "ended_awaiting_start"


def test_an_aborted_batch_leaves_no_stale_open_record() -> None:
    corr, reader = correlator([BASE]), Reader()
    corr.process(scheduled("i-1", "e1", BASE, BASE + MIN))
    corr.process(executing("i-2", "e2", BASE))
    drain(corr, reader)  # committed
    corr.commit_point()
    corr.process(executed("i-2", "e2", BASE, BASE + MIN))  # would close i-2
    corr.process(executing("i-3", "e3", BASE))  # would open i-3
    corr.process(executing("i-1", "e1", BASE + MIN))  # would start i-1
    drain(corr, Reader())  # written in the transaction that aborts: never seen by readers
    corr.rollback()
    assert plain(reader.open) == plain(held(corr))
    assert {r["instance_id"]: r["phase"] for r in reader.open.values()} == {
        "i-1": "announced", "i-2": "started"}
    # the retried batch, committed this time
    corr.process(executed("i-2", "e2", BASE, BASE + MIN))
    corr.process(executing("i-1", "e1", BASE + MIN))
    drain(corr, reader)
    corr.commit_point()
    assert plain(reader.open) == plain(held(corr))
    assert {r["instance_id"]: r["phase"] for r in reader.open.values()} == {"i-1": "started"}


Step = tuple[str, int, int, bool]  # (kind, instance, event id, abort the batch after it)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.lists(st.tuples(st.sampled_from(["scheduled", "executing", "executed"]),
                                   st.integers(0, 3), st.integers(0, 2)), max_size=6)
                .map(lambda b: b), max_size=8),
       st.lists(st.booleans(), min_size=8, max_size=8))
def test_materialized_committed_drains_equal_the_held_operations(
        batches: list[list[tuple[str, int, int]]], aborts: list[bool]) -> None:
    clock = [BASE]
    corr, reader = correlator(clock, max_pending=5), Reader()
    gauges = OpenGauges()
    for n, batch in enumerate(batches):
        corr.commit_point()
        for kind, inst, eid in batch:
            clock[0] += SEC
            t = clock[0]
            inst_id, event_id = f"i-{inst}", f"e{inst}-{eid}"
            if kind == "scheduled":
                corr.process(scheduled(inst_id, event_id, t, t + 30 * MIN))
            elif kind == "executing":
                corr.process(executing(inst_id, event_id, t))
            else:
                corr.process(executed(inst_id, event_id, t - MIN, t))
        records = open_changes(corr, clock[0])
        if aborts[n]:
            corr.rollback()
        else:
            reader.take(records)
        gauges.update([corr], clock[0])
        assert plain(reader.open) == plain(held(corr))
        counts = {k: v for k, v in gauges.counts.items() if v}
        expected: dict[tuple[str, str, str], int] = {}
        for r in reader.open.values():
            labels = (r["vendor"], r["operation"], r["phase"])
            expected[labels] = expected.get(labels, 0) + 1
        assert counts == expected


def test_view_counts_and_next_scheduled_start() -> None:
    view = OpenGauges()
    corr = correlator([BASE])
    changelog: dict[str, bytes | None] = {}

    def drained() -> None:
        changelog.update(corr.drain_changes())

    corr.process(scheduled("i-1", "e1", BASE, BASE + 2 * MIN))
    corr.process(scheduled("i-2", "e2", BASE, BASE + 5 * MIN))
    corr.process(scheduled("i-3", "e3", BASE, BASE - MIN))  # overdue: not a future start
    corr.process(executing("i-4", "e4", BASE))
    view.update([corr], BASE)
    assert view.counts == {}  # as of the last drain: nothing drained yet
    drained()
    view.update([corr], BASE)
    assert view.counts[("aliyun", "maintenance.reboot", "announced")] == 3
    assert view.counts[("aliyun", "maintenance.reboot", "started")] == 1
    assert view.next_start(BASE) == BASE + 2 * MIN
    assert view.next_start(BASE + 3 * MIN) == BASE + 5 * MIN
    assert view.next_start(BASE + 5 * MIN) is None
    corr.process(executing("i-1", "e1", BASE + 2 * MIN))
    drained()
    view.update([corr], BASE)
    assert view.counts[("aliyun", "maintenance.reboot", "announced")] == 2
    assert view.next_start(BASE) == BASE + 5 * MIN
    restored = correlator([BASE])  # counted once from the restored state
    for key, value in changelog.items():
        restored.restore(key, value)
    view.update([restored], BASE)
    assert view.counts[("aliyun", "maintenance.reboot", "announced")] == 2
    assert view.counts[("aliyun", "maintenance.reboot", "started")] == 2
    assert view.next_start(BASE) == BASE + 5 * MIN
    view.update([], BASE)  # its partition revoked
    assert set(view.counts.values()) == {0}
    assert view.next_start(BASE) is None


def test_stage_writes_the_view_in_the_batch_and_its_gauges_follow_an_abort() -> None:
    """The correlate stage's processor: records and tombstones on the open topic next to the
    changelog writes of the same batch; gauges from them, back to the committed state on abort."""
    schemas = load_schemas(DEFAULT_SCHEMA_DIR)
    encode = single_object_encoder(schemas["InstanceEvent"])
    decoder = Decoder(schemas)
    settings = load_settings({})
    metrics = Metrics()
    now = [BASE]
    processor = CorrelateProcessor(
        settings, CorrelatorConfig(), decoder,
        lambda topic: single_object_encoder(schemas["OperationOutcome"]), metrics,
        clock=lambda: now[0], open_encoder=single_object_encoder(schemas["OpenOperation"]))
    processor.correlators[0] = Correlator(processor.config, processor.clock)
    offset = [0]

    def batch(*events: InstanceEvent) -> list[tuple[str, bytes, bytes | None]]:
        messages = []
        for e in events:
            messages.append(Message(topic="in", partition=0, offset=offset[0],
                                    value=encode({**e, "source": None})))
            offset[0] += 1
        out: list[tuple[str, bytes, bytes | None]] = []
        processor.process(messages, lambda topic, key, value, *rest: out.append((topic, key, value)))
        return out

    def gauge(phase: str) -> float | None:
        return metrics.registry.get_sample_value(
            "vmevents_open_operations",
            {"vendor": "aliyun", "operation": "maintenance.reboot", "phase": phase})

    out = batch(scheduled("i-1", "e1", BASE, BASE + 10 * MIN), executing("i-2", "e2", BASE))
    opened = {key.decode(): decoder.decode(value) for topic, key, value in out
              if topic == settings.open_operations_topic and value is not None}
    assert {r["instance_id"]: r["phase"] for r in opened.values()} == {
        "i-1": "announced", "i-2": "started"}
    assert {f"p|{k}" for k in opened} <= {
        key.decode() for topic, key, _ in out if topic == settings.changelog_topic}
    assert (gauge("announced"), gauge("started")) == (1, 1)
    assert metrics.registry.get_sample_value("vmevents_next_scheduled_start_seconds") == 600

    out = batch(executed("i-2", "e2", BASE, BASE + MIN), executing("i-1", "e1", BASE + MIN))
    open_writes = [(key, value) for topic, key, value in out
                   if topic == settings.open_operations_topic]
    assert (b"aliyun|i-2|SystemMaintenance.Reboot|e2", None) in open_writes  # the tombstone
    assert (gauge("announced"), gauge("started")) == (0, 1)
    next_start = metrics.registry.get_sample_value("vmevents_next_scheduled_start_seconds")
    assert next_start is not None
    assert math.isnan(next_start)
    processor.on_abort(None)  # type: ignore[arg-type]  # the batch's transaction aborted
    assert (gauge("announced"), gauge("started")) == (1, 1)
    assert metrics.registry.get_sample_value("vmevents_next_scheduled_start_seconds") == 600
