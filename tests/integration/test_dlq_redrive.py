"""DLQ re-drive on a real broker: records a broken build rejected come out exactly once after the
fix, and a record that fails again after a re-drive is not re-driven again unless forced; a run
killed between produce and commit leaves nothing behind, and of two runs racing the fenced one
stops while the other finishes, every record re-driven once."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import orjson
import pytest
from confluent_kafka import Consumer, TopicPartition

from consumer.app import normalize_loop
from consumer.config import Settings
from consumer.dlq import Selection, ledger_topic, read_dead_letters, redrive, summarize
from consumer.errors import InvalidEvent, KafkaRuntimeError
from consumer.http import Health
from consumer.metrics import Metrics
from consumer.model import InstanceEvent
from consumer.normalization import Normalizer
from consumer.serde import Decoder, load_schemas
from tests.integration.kafkatools import (
    ROOT,
    committed_total,
    headers_of,
    read_all,
    stage_env,
    unique,
)
from tests.integration.test_normalize_stage import in_process_stage, run_in_thread
from tests.seeds import SEEDS

pytestmark = pytest.mark.apache_kafka


class AliyunAdapterBug:
    """The broken build: every Alibaba event is rejected as invalid."""

    def __init__(self, inner: Normalizer) -> None:
        self.inner = inner

    def normalize_all(self, raw: bytes, record_time_ms: int | None = None) -> list[InstanceEvent]:
        events = self.inner.normalize_all(raw, record_time_ms)
        if any(event["vendor"] == "aliyun" for event in events):
            raise InvalidEvent("adapter bug: aliyun payload rejected")
        return events


def end_offset(bootstrap: str, topic: str) -> int:
    """The single partition's high watermark (transaction markers take offsets too)."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "watermarks"})
    try:
        return int(consumer.get_watermark_offsets(TopicPartition(topic, 0), timeout=10)[1])
    finally:
        consumer.close()


def run_stage(settings: Settings, raw: str, *, broken: bool = False) -> None:
    """Run the normalize stage until it has committed everything now on the raw topic."""
    loop = normalize_loop(settings, Metrics(), Health())
    if broken:
        loop.processor.normalizer = AliyunAdapterBug(loop.processor.normalizer)  # type: ignore[attr-defined]
    end = end_offset(settings.bootstrap_servers, raw)
    run_in_thread(loop, lambda: committed_total(settings.bootstrap_servers,
                                                settings.normalize_group, raw) >= end)


def test_redrive_after_the_fix_lands_exactly_once_and_repeat_failures_are_not_looped(
        kafka_stack: Any) -> None:
    values = [s.raw for s in SEEDS] + [b"{not json"]
    aliyun = sum(s.vendor == "aliyun" for s in SEEDS)
    settings, raw, out, dlq = in_process_stage(kafka_stack.bootstrap, values)
    run_stage(settings, raw, broken=True)

    groups = {g["reason"]: g for g in summarize(read_dead_letters(settings, dlq))}
    assert {r: g["count"] for r, g in groups.items()} == {"invalid_event": aliyun, "malformed_json": 1}
    rejected = [m.offset() for m in read_all(kafka_stack.bootstrap, [dlq], expected=aliyun + 1, settle=0.5)
                if headers_of(m)["vmevents.dlq.reason"] == "invalid_event"]
    assert groups["invalid_event"]["first"]["offset"] == rejected[0]
    assert groups["invalid_event"]["last"]["offset"] == rejected[-1]
    assert "adapter bug" in groups["invalid_event"]["example"]["error"]
    assert groups["malformed_json"]["example"]["value"] == "{not json"

    # The fix is deployed; the rejected events go back to the raw topic, once.
    report = redrive(settings, Selection(frozenset({"invalid_event"})))
    assert (report.matched, report.redriven, report.by_topic) == (aliyun, aliyun, {raw: aliyun})
    run_stage(settings, raw)
    again = redrive(settings, Selection(frozenset({"invalid_event"})))
    assert (again.redriven, again.already_redriven) == (0, aliyun)

    normalized = read_all(kafka_stack.bootstrap, [out], expected=len(values) - 1)
    decoder = Decoder(load_schemas(settings.schema_dir))
    events = [decoder.decode(m.value()) for m in normalized]
    assert len(events) == len(SEEDS)  # every seed exactly once: JD first time, Alibaba re-driven
    redriven = [e for e in events if e["vendor"] == "aliyun"]
    assert len(redriven) == aliyun
    raw_records = read_all(kafka_stack.bootstrap, [raw], expected=len(values) + aliyun, settle=0.5)
    copies = [m for m in raw_records if "vmevents.redrive.count" in headers_of(m)]
    assert len(copies) == aliyun
    assert sorted(e["source"]["offset"] for e in redriven) == [m.offset() for m in copies]
    first_copy = headers_of(copies[0])
    original = headers_of(read_all(kafka_stack.bootstrap, [dlq], expected=aliyun + 1, settle=0.5)[0])
    assert first_copy["vmevents.redrive.count"] == "1"
    assert first_copy["vmevents.redrive.reason"] == "invalid_event"
    assert first_copy["vmevents.redrive.dlq.topic"] == dlq
    assert first_copy["vmevents.redrive.dlq.offset"] == "0"
    assert first_copy["vmevents.redrive.source.topic"] == raw
    assert first_copy["vmevents.redrive.source.offset"] == original["vmevents.dlq.source.offset"]

    # The malformed record fails again after its re-drive: recognised, not looped.
    assert redrive(settings, Selection(frozenset({"malformed_json"}))).redriven == 1
    total = len(values) + aliyun + 1
    run_stage(settings, raw)
    dead = read_all(kafka_stack.bootstrap, [dlq], expected=aliyun + 2)
    assert len(dead) == aliyun + 2
    failed_again = headers_of(dead[-1])
    assert failed_again["vmevents.dlq.reason"] == "malformed_json"
    assert failed_again["vmevents.redrive.count"] == "1"
    assert failed_again["vmevents.redrive.source.offset"] == str(len(SEEDS))
    groups = {g["reason"]: g for g in summarize(read_dead_letters(settings, dlq))}
    assert groups["malformed_json"]["failed_after_redrive"] == 1
    report = redrive(settings, Selection(frozenset({"malformed_json"})))
    assert (report.redriven, report.already_redriven, report.failed_after_redrive) == (0, 1, 1)

    # Unless asked: through the command line, with the count going up and the origin kept.
    env = {k: v for k, v in os.environ.items() if not k.startswith(("VMEVENTS_", "KAFKA_"))}
    env.update(KAFKA_BOOTSTRAP_SERVERS=kafka_stack.bootstrap, VMEVENTS_DLQ_TOPIC=dlq,
               VMEVENTS_RAW_TOPICS=raw)
    cli = subprocess.run([sys.executable, "-m", "consumer.cli", "dlq", "redrive",
                          "--reason", "malformed_json", "--force"],
                         cwd=ROOT, env=env, capture_output=True, timeout=120, check=False)
    assert cli.returncode == 0, cli.stderr
    summary = orjson.loads(cli.stdout.splitlines()[-1])
    assert summary["redriven"] == 1
    assert summary["already_redriven"] == 1
    last = headers_of(read_all(kafka_stack.bootstrap, [raw], expected=total + 1, settle=0.5)[-1])
    assert last["vmevents.redrive.count"] == "2"
    assert last["vmevents.redrive.source.offset"] == str(len(SEEDS))
    assert last["vmevents.redrive.dlq.offset"] == str(dead[-1].offset())


def test_dry_run_and_ranges_select_without_writing(kafka_stack: Any) -> None:
    values = [b"{bad %d" % i for i in range(6)]
    settings, raw, _, dlq = in_process_stage(kafka_stack.bootstrap, values)
    run_stage(settings, raw)
    sel = Selection(frozenset({"malformed_json"}), from_offset=2, to_offset=4)
    dry = redrive(settings, sel, dry_run=True)
    assert (dry.matched, dry.redriven) == (3, 3)
    assert len(read_all(kafka_stack.bootstrap, [raw], expected=len(values), settle=1)) == len(values)
    assert redrive(settings, sel).redriven == 3
    assert redrive(settings, Selection(frozenset({"malformed_json"}))).redriven == 3  # the rest
    copies = read_all(kafka_stack.bootstrap, [raw], expected=2 * len(values), settle=1)[len(values):]
    assert sorted(int(headers_of(m)["vmevents.redrive.dlq.offset"]) for m in copies) == list(range(6))
    assert dlq == settings.dlq_topic
    with pytest.raises(KafkaRuntimeError, match="does not exist"):  # at once, not per batch
        redrive(settings, Selection(frozenset({"malformed_json"}), force=True),
                to_topic=unique("missing"))


HOOKED_REDRIVE = """
import os, signal, sys, time
from pathlib import Path
from consumer import dlq
from consumer.cli import main
from consumer.runtime.deadline import CallOverran
from consumer.runtime.transactions import TransactionalProducer

dlq.BATCH = 4
commit = TransactionalProducer.commit
calls = []

def second_commit_held(self, offsets):
    calls.append(1)
    if len(calls) == 2:  # the second batch: produced and flushed to the broker, not committed
        self.producer.flush(30)
        mode, marker = sys.argv[1], Path(sys.argv[2])
        marker.with_suffix(".held").touch()
        if mode == "kill":
            os.kill(os.getpid(), signal.SIGKILL)
        deadline = time.monotonic() + 90
        while not marker.with_suffix(".go").exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        if mode == "stuck":  # the commit overruns its deadline, as librdkafka's can
            call = self.call

            def overran(what, fn):
                self.call = call
                raise CallOverran(f"{what} did not return within {self.deadline:.0f}s")

            self.call = overran
    return commit(self, offsets)

TransactionalProducer.commit = second_commit_held
sys.exit(main(["dlq", "redrive", "--reason", "malformed_json"]))
"""
"""``vmevents dlq redrive`` in batches of 4 whose second commit is held: the process SIGKILLs
itself there (``kill``), or waits for ``<marker>.go`` (``hold``), then commits, or then has the
commit overrun its deadline (``stuck``: the one answer a broker cannot be made to give);
``<marker>.held`` says it got there. The hook only stands between our code and the real
commit; the broker is real."""

RECORDS = 12


def hooked_redrive(mode: str, marker: Path, env: dict[str, str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-c", HOOKED_REDRIVE, mode, str(marker)], cwd=ROOT,
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def wait_for(path: Path, proc: subprocess.Popen[bytes], timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert proc.poll() is None or path.exists(), proc.communicate()
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.05)


def dead_letters_of_bad_json(bootstrap: str) -> tuple[Settings, str, str, list[int], dict[str, str]]:
    """RECORDS malformed records dead-lettered by the real stage; the settings and environment
    of a re-drive, and the DLQ offsets."""
    values = [b"{bad %d" % i for i in range(RECORDS)]
    settings, raw, _, dlq = in_process_stage(bootstrap, values)
    run_stage(settings, raw)
    offsets = [m.offset() or 0 for m in read_all(bootstrap, [dlq], expected=RECORDS, settle=0.5)]
    assert len(offsets) == RECORDS
    env = stage_env(bootstrap, VMEVENTS_RAW_TOPICS=raw, VMEVENTS_DLQ_TOPIC=dlq)
    return settings, raw, dlq, offsets, env


def assert_redriven_once(bootstrap: str, raw: str, dlq: str, offsets: list[int]) -> None:
    """read_committed: every DLQ record on the raw topic once, and once in the ledger."""
    copies = [m for m in read_all(bootstrap, [raw], expected=2 * RECORDS, settle=1)
              if "vmevents.redrive.count" in headers_of(m)]
    assert sorted(int(headers_of(m)["vmevents.redrive.dlq.offset"]) for m in copies) == offsets
    ledger = read_all(bootstrap, [ledger_topic(dlq)], expected=RECORDS, settle=0.5)
    assert sorted(m.key() or b"" for m in ledger) == sorted(b"0:%d" % o for o in offsets)


def test_a_redrive_killed_between_produce_and_commit_leaves_nothing_the_next_run_sees(
        kafka_stack: Any, tmp_path: Path) -> None:
    bootstrap = kafka_stack.bootstrap
    settings, raw, dlq, offsets, env = dead_letters_of_bad_json(bootstrap)
    killed = hooked_redrive("kill", tmp_path / "redrive", env)
    assert killed.wait(120) == -9, killed.communicate()
    # The second batch reached the broker (read_uncommitted sees it), and only the first counts.
    uncommitted = read_all(bootstrap, [raw], expected=RECORDS + 8, isolation="read_uncommitted",
                           settle=0.5)
    assert len(uncommitted) == RECORDS + 8
    committed = read_all(bootstrap, [raw], expected=RECORDS + 4, settle=0.5)
    assert len(committed) == RECORDS + 4

    report = redrive(settings, Selection(frozenset({"malformed_json"})))
    assert (report.redriven, report.already_redriven) == (RECORDS - 4, 4)
    assert_redriven_once(bootstrap, raw, dlq, offsets)


def held_while_another_runs(bootstrap: str, mode: str,
                           marker: Path) -> tuple[subprocess.CompletedProcess[bytes], str, str,
                                                  list[int]]:
    """A hooked run held at its second commit while a second run, here, re-drives everything
    the ledger lacks; then the first goes on. The first run's outcome, the raw and DLQ topics,
    and the DLQ offsets."""
    settings, raw, dlq, offsets, env = dead_letters_of_bad_json(bootstrap)
    first = hooked_redrive(mode, marker, env)
    try:
        wait_for(marker.with_suffix(".held"), first)
        # The second run fences the first, aborts its open transaction, and re-drives what the
        # ledger does not have yet: all but the first run's committed batch.
        report = redrive(settings, Selection(frozenset({"malformed_json"})))
        assert (report.redriven, report.already_redriven) == (RECORDS - 4, 4)
        marker.with_suffix(".go").touch()
        out, err = first.communicate(timeout=120)
    finally:
        if first.poll() is None:
            first.kill()
    return subprocess.CompletedProcess(first.args, first.returncode, out, err), raw, dlq, offsets


def test_of_two_redrives_racing_the_fenced_one_stops_and_each_record_goes_once(
        kafka_stack: Any, tmp_path: Path) -> None:
    first, raw, dlq, offsets = held_while_another_runs(kafka_stack.bootstrap, "hold",
                                                       tmp_path / "redrive")
    assert first.returncode == 1, first.stderr
    lines = first.stderr.decode().strip().splitlines()
    assert lines[-1].startswith("vmevents: "), first.stderr
    assert "took over" in lines[-1], first.stderr
    assert b"Traceback" not in first.stderr
    assert b"redriven" not in first.stdout  # it stopped: no summary of a run that did not finish
    assert_redriven_once(kafka_stack.bootstrap, raw, dlq, offsets)


def test_a_redrive_whose_commit_hung_while_another_ran_redoes_only_what_the_ledger_lacks(
        kafka_stack: Any, tmp_path: Path) -> None:
    """Its commit overran while a second run fenced it and re-drove the rest: its new producer
    aborts the old transaction, it reads the ledger again, and re-drives nothing twice."""
    first, raw, dlq, offsets = held_while_another_runs(kafka_stack.bootstrap, "stuck",
                                                       tmp_path / "redrive")
    assert first.returncode == 0, first.stderr
    summary = orjson.loads(first.stdout.splitlines()[-1])
    assert (summary["redriven"], summary["already_redriven"]) == (4, RECORDS - 4), first.stderr
    assert b"producer replaced" in first.stderr
    assert_redriven_once(kafka_stack.bootstrap, raw, dlq, offsets)
