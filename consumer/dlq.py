"""``vmevents dlq``: see what is in the dead letter topic, and re-drive it once a fix is deployed.

``list`` groups the DLQ's records by reason: how many, the first and last of them, an example.

``redrive`` puts a chosen subset (reason, offset range, time range) back on the raw topic each
came from, byte for byte with its key, exactly once:

1. ``init_transactions`` with one transactional id per DLQ topic: a re-drive still running
   elsewhere is fenced and its open transaction aborted, so two runs never both re-drive.
2. Read the ledger ``<dlq topic>.redriven`` (compacted, ``read_committed``): the DLQ offsets
   already re-driven.
3. For each chosen record not in the ledger: in one transaction per batch, produce it to its raw
   topic with ``vmevents.redrive.*`` audit headers and write its ledger entry. A crash aborts both;
   the next run sees neither and re-drives the record then.

Every transactional call goes through :class:`~consumer.runtime.transactions.TransactionalProducer`,
as the stages' do: under a deadline, retried while retriable, aborted (or the producer replaced)
when a batch cannot commit. A batch that did not commit is redone after the ledger is read again,
since while a call of ours hung another run may have fenced us and re-driven some of its records.
A run that is fenced stops with :class:`~consumer.runtime.transactions.Fenced` (exit code 1) and
commits nothing more; what it had not committed is left to whichever run selects it next.

Loops are broken by the audit headers: the normalize stage copies a re-driven record's
``vmevents.redrive.*`` headers onto the DLQ record when it fails again, so a DLQ record with a
redrive count is one that already failed after a re-drive. Those are left alone unless
``--force``.
"""

from __future__ import annotations

import argparse
import sys
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, TextIO

import orjson
import structlog
from confluent_kafka import KafkaException, Message, Producer

from consumer.config import Settings
from consumer.errors import ConfigError, KafkaRuntimeError
from consumer.jsonout import iso_ms
from consumer.logs import kafka_logger
from consumer.metrics import Metrics
from consumer.runtime.clients import ensure_topics, producer_conf, topic_exists, wrap
from consumer.runtime.loop import Headers
from consumer.runtime.outage import Outage
from consumer.runtime.transactions import BatchLost, TransactionalProducer
from consumer.signals import force_exit
from consumer.tail import TailOptions, header_dict, parse_time, read

log = structlog.get_logger(__name__)

REDRIVE = "vmevents.redrive."
BATCH = 500
"""Records per re-drive transaction."""
ATTEMPTS = 3
"""Transactions a batch may lose before the run gives up (a record its topic refuses, say)."""


@dataclass(frozen=True)
class DeadLetter:
    """One DLQ record: where it is, what it holds, and what its headers say about it."""

    partition: int
    offset: int
    timestamp: int
    key: bytes | None
    value: bytes | None
    headers: dict[str, str | None]

    @classmethod
    def from_message(cls, msg: Message) -> DeadLetter:
        return cls(msg.partition() or 0, msg.offset() or 0, msg.timestamp()[1], msg.key(),
                   msg.value(), header_dict(msg))

    @property
    def reason(self) -> str:
        return self.headers.get("vmevents.dlq.reason") or "unknown"

    @property
    def redrive_count(self) -> int:
        """How often this record was re-driven before it landed here again (0: never)."""
        try:
            return int(self.headers.get(f"{REDRIVE}count") or 0)
        except ValueError:
            return 0

    def origin(self) -> tuple[str, str, str]:
        """Where the record first entered the pipeline: kept across re-drives."""
        h = self.headers
        prefix = f"{REDRIVE}source." if h.get(f"{REDRIVE}source.topic") else "vmevents.dlq.source."
        return (h.get(f"{prefix}topic") or "", h.get(f"{prefix}partition") or "",
                h.get(f"{prefix}offset") or "")

    def coordinates(self) -> dict[str, Any]:
        return {"partition": self.partition, "offset": self.offset,
                "timestamp": iso_ms(self.timestamp) if self.timestamp > 0 else None}


def read_dead_letters(settings: Settings, topic: str) -> Iterator[DeadLetter]:
    """Every committed record of the DLQ, oldest first per partition."""
    for msg in read(settings, TailOptions([topic])):
        yield DeadLetter.from_message(msg)


def summarize(letters: Iterable[DeadLetter]) -> list[dict[str, Any]]:
    """One entry per reason, most frequent first; first/last by DLQ write time (pure)."""
    groups: dict[str, tuple[list[int], DeadLetter, DeadLetter]] = {}
    for d in letters:
        entry = groups.get(d.reason)
        if entry is None:
            groups[d.reason] = ([1, int(d.redrive_count > 0)], d, d)
            continue
        counts, first, last = entry
        counts[0] += 1
        counts[1] += d.redrive_count > 0
        if (d.timestamp, d.partition, d.offset) < (first.timestamp, first.partition, first.offset):
            first = d
        if (d.timestamp, d.partition, d.offset) > (last.timestamp, last.partition, last.offset):
            last = d
        groups[d.reason] = (counts, first, last)
    summary = [{"reason": reason, "count": counts[0], "failed_after_redrive": counts[1],
                "first": first.coordinates(), "last": last.coordinates(), "example": _example(first)}
               for reason, (counts, first, last) in groups.items()]
    return sorted(summary, key=lambda g: (-g["count"], g["reason"]))


def _example(d: DeadLetter) -> dict[str, Any]:
    value = (d.value or b"")[:300].decode("utf-8", "replace")
    topic, partition, offset = d.origin()
    return {"error": d.headers.get("vmevents.dlq.error"),
            "source": f"{topic}[{partition}]@{offset}", "value": value}


@dataclass(frozen=True)
class Selection:
    """Which DLQ records a re-drive takes; every given bound must hold (offsets inclusive)."""

    reasons: frozenset[str]
    partition: int | None = None
    from_offset: int | None = None
    to_offset: int | None = None
    since_ms: int | None = None
    until_ms: int | None = None
    force: bool = False

    def skip(self, d: DeadLetter) -> str | None:
        """Why ``d`` is not taken (``None``: take it). Pure."""
        if d.reason not in self.reasons:
            return "other_reason"
        if self.partition is not None and d.partition != self.partition:
            return "out_of_range"
        if self.from_offset is not None and d.offset < self.from_offset:
            return "out_of_range"
        if self.to_offset is not None and d.offset > self.to_offset:
            return "out_of_range"
        if self.since_ms is not None and d.timestamp < self.since_ms:
            return "out_of_range"
        if self.until_ms is not None and d.timestamp > self.until_ms:
            return "out_of_range"
        if d.redrive_count > 0 and not self.force:
            return "failed_after_redrive"
        return None


def audit_headers(d: DeadLetter, dlq_topic: str, now_ms: int) -> Headers:
    """The ``vmevents.redrive.*`` headers of a re-driven record (pure)."""
    topic, partition, offset = d.origin()
    return [(k, v.encode()) for k, v in (
        (f"{REDRIVE}count", str(d.redrive_count + 1)),
        (f"{REDRIVE}reason", d.reason),
        (f"{REDRIVE}dlq.topic", dlq_topic),
        (f"{REDRIVE}dlq.partition", str(d.partition)),
        (f"{REDRIVE}dlq.offset", str(d.offset)),
        (f"{REDRIVE}source.topic", topic),
        (f"{REDRIVE}source.partition", partition),
        (f"{REDRIVE}source.offset", offset),
        (f"{REDRIVE}time", str(now_ms)),
    )]


def ledger_topic(dlq_topic: str) -> str:
    return f"{dlq_topic}.redriven"


def ledger_key(partition: int, offset: int) -> bytes:
    return f"{partition}:{offset}".encode()


def _read_ledger(settings: Settings, topic: str) -> set[bytes]:
    return {m.key() or b"" for m in read(settings, TailOptions([topic])) if m.value() is not None}


@dataclass
class RedriveReport:
    matched: int = 0
    redriven: int = 0
    already_redriven: int = 0
    failed_after_redrive: int = 0
    by_topic: dict[str, int] = field(default_factory=dict)
    stuck_calls: int = 0


def redrive(settings: Settings, selection: Selection, *, to_topic: str | None = None,
            dry_run: bool = False, out: TextIO | None = None) -> RedriveReport:
    """Re-drive the selected DLQ records exactly once (see the module docstring).

    A producer left with a call stuck inside librdkafka cannot be destroyed without blocking
    too: the report counts such calls (``stuck_calls``) so the command line can end the process
    without the interpreter's teardown; an error with such calls ends it here, on the main thread.
    """
    if to_topic is not None and not topic_exists(settings, to_topic):
        # Said at once: a batch for a missing topic would wait out its transaction, ATTEMPTS times.
        raise KafkaRuntimeError(f"--to-topic {to_topic} does not exist")
    txn = None
    if not dry_run:
        _ensure_ledger(settings, ledger_topic(settings.dlq_topic))
        txn = redrive_producer(settings)
    try:
        report = _redrive(settings, selection, txn, to_topic=to_topic, dry_run=dry_run, out=out)
    except Exception as exc:
        if txn is not None and txn.stuck and threading.current_thread() is threading.main_thread():
            log.error("re-drive failed with client calls stuck inside librdkafka",
                      error=f"{type(exc).__name__}: {exc}")
            force_exit(1)
        raise
    report.stuck_calls = len(txn.stuck) if txn is not None else 0
    return report


def _redrive(settings: Settings, selection: Selection, txn: TransactionalProducer | None, *,
             to_topic: str | None, dry_run: bool, out: TextIO | None) -> RedriveReport:
    dlq = settings.dlq_topic
    ledger = ledger_topic(dlq)
    if txn is not None:
        txn.init()  # fences any other run and aborts its open transaction
    done = _read_ledger(settings, ledger) if topic_exists(settings, ledger) else set()
    report = RedriveReport()
    batch: list[tuple[DeadLetter, str]] = []
    for d in read_dead_letters(settings, dlq):
        why = selection.skip(d)
        if why == "failed_after_redrive":
            report.failed_after_redrive += 1
        if why is not None:
            continue
        report.matched += 1
        if ledger_key(d.partition, d.offset) in done:
            report.already_redriven += 1
            continue
        target = to_topic or d.headers.get("vmevents.dlq.source.topic") or settings.raw_topics[0]
        if out is not None and dry_run:
            out.write(orjson.dumps({"would_redrive": d.coordinates(), "to": target,
                                    "reason": d.reason}).decode() + "\n")
        batch.append((d, target))
        if len(batch) >= BATCH:
            done = _commit(txn, batch, settings, report, done)
            batch = []
    _commit(txn, batch, settings, report, done)
    return report


def redrive_producer(settings: Settings) -> TransactionalProducer:
    """The re-drive's producer: one transactional id per DLQ topic, shared by every run, so a
    fenced run stops instead of fencing back (``replace_when_fenced=False``)."""
    conf = producer_conf(settings, f"vmevents-dlq-redrive-{settings.dlq_topic}",
                         logger=kafka_logger("producer"))
    return TransactionalProducer(
        conf, stage="redrive", call_timeout=settings.kafka_call_timeout_ms / 1000.0,
        metrics=Metrics(), outage=Outage("redrive"), stop=threading.Event(),
        heartbeat=lambda: None, replace_when_fenced=False)


def _ensure_ledger(settings: Settings, ledger: str) -> None:
    if settings.create_topics:
        ensure_topics(settings, {ledger: {"cleanup.policy": "compact"}}, partitions=1)
    elif not topic_exists(settings, ledger):
        raise KafkaRuntimeError(f"the re-drive ledger topic {ledger} does not exist and "
                                "VMEVENTS_CREATE_TOPICS=false: create it (compacted)")


def _commit(txn: TransactionalProducer | None, batch: Sequence[tuple[DeadLetter, str]],
            settings: Settings, report: RedriveReport, done: set[bytes]) -> set[bytes]:
    """One transaction: the records on their raw topics and their ledger entries together.

    Redone (up to :data:`ATTEMPTS` times) until it commits, each time without the records the
    ledger, read again, says are re-driven already; returns the ledger as last read.
    """
    pending = list(batch)
    attempt = 0
    while txn is not None and pending:
        try:
            _produce_batch(txn, pending, settings)
            txn.commit(lambda: None)
            break
        except BatchLost as lost:
            attempt += 1
            if attempt >= ATTEMPTS:
                raise KafkaRuntimeError(f"a re-drive batch lost {attempt} transactions in a row "
                                        f"(last: {lost}): nothing of it was re-driven") from None
            done = _read_ledger(settings, ledger_topic(settings.dlq_topic))
            left = [(d, t) for d, t in pending if ledger_key(d.partition, d.offset) not in done]
            report.already_redriven += len(pending) - len(left)
            pending = left
    for _, target in pending:
        report.redriven += 1
        report.by_topic[target] = report.by_topic.get(target, 0) + 1
    return done


def _produce_batch(txn: TransactionalProducer, batch: Sequence[tuple[DeadLetter, str]],
                   settings: Settings) -> None:
    """Begin a transaction and produce the batch into it; a produce error undoes it (BatchLost)."""
    dlq = settings.dlq_topic
    ledger = ledger_topic(dlq)
    now = time.time_ns() // 1_000_000
    txn.begin()
    producer = txn.producer
    try:
        for d, target in batch:
            _produce(producer, target, d.value, d.key, audit_headers(d, dlq, now))
            _produce(producer, ledger, orjson.dumps({"to": target, "at": now}),
                     ledger_key(d.partition, d.offset), None)
    except KafkaException as exc:
        txn.fail(wrap(exc, "produce"))
        raise BatchLost(str(exc)) from None


def _produce(producer: Producer, topic: str, value: bytes | None, key: bytes | None,
             headers: Headers | None) -> None:
    while True:
        try:
            producer.produce(topic, value, key, headers=headers)
            return
        except BufferError:
            producer.poll(0.05)  # local queue full (large records): let librdkafka drain it


# -- command line ------------------------------------------------------------------------------


def add_arguments(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="dlq_command", required=True)
    sub.add_parser("list", help="DLQ records grouped by reason (JSON lines)",
                   description="One JSON line per reason: count, first and last record, an example.")
    rd = sub.add_parser(
        "redrive", help="put chosen DLQ records back on their raw topic, exactly once",
        description="Re-drive DLQ records to the raw topic they came from, once each, with "
                    "vmevents.redrive.* audit headers. Records that already failed after a "
                    "re-drive are skipped unless --force. Runs on one DLQ exclude each other: a "
                    "run that another one fences stops (exit code 1); what it had not committed "
                    "is left to whichever run selects it next.")
    rd.add_argument("--reason", action="append", required=True,
                    help="DLQ reason to re-drive (repeatable), see `vmevents dlq list`")
    rd.add_argument("--partition", type=int, help="only this DLQ partition")
    rd.add_argument("--from-offset", type=int, metavar="N", help="DLQ offsets from N (inclusive)")
    rd.add_argument("--to-offset", type=int, metavar="N", help="DLQ offsets up to N (inclusive)")
    rd.add_argument("--since", metavar="TIME", help="DLQ records written at or after (ISO-8601)")
    rd.add_argument("--until", metavar="TIME", help="DLQ records written at or before (ISO-8601)")
    rd.add_argument("--to-topic", help="re-drive to this topic instead of each record's source")
    rd.add_argument("--force", action="store_true",
                    help="also re-drive records that already failed after a re-drive")
    rd.add_argument("--dry-run", action="store_true", help="print what would be re-driven")


def cmd_dlq(args: argparse.Namespace, settings: Settings) -> int:
    """List the dead letter topic by reason, or re-drive chosen records exactly once."""
    if args.dlq_command == "list":
        for group in summarize(read_dead_letters(settings, settings.dlq_topic)):
            sys.stdout.buffer.write(orjson.dumps(group) + b"\n")
        sys.stdout.buffer.flush()
        return 0
    for flag in ("from_offset", "to_offset"):
        if (value := getattr(args, flag)) is not None and value < 0:
            raise ConfigError(f"--{flag.replace('_', '-')} {value} must be 0 or more")
    selection = Selection(
        reasons=frozenset(args.reason), partition=args.partition,
        from_offset=args.from_offset, to_offset=args.to_offset,
        since_ms=parse_time(args.since) if args.since else None,
        until_ms=parse_time(args.until) if args.until else None, force=args.force)
    report = redrive(settings, selection, to_topic=args.to_topic, dry_run=args.dry_run,
                     out=sys.stdout)
    summary = {"dry_run": args.dry_run, "matched": report.matched,
               "redriven" if not args.dry_run else "would_redrive": report.redriven,
               "already_redriven": report.already_redriven,
               "skipped_failed_after_redrive": report.failed_after_redrive,
               "to": report.by_topic}
    sys.stdout.write(orjson.dumps(summary).decode() + "\n")
    if report.stuck_calls:
        force_exit(0)  # the interpreter's teardown would wait for the stuck calls
    return 0
