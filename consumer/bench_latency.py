"""``make bench-latency``: how long a notification takes to become an answer (issue #15's figure).

For each vendor (``--vendors``) and rate (``--rates``, pairs/s), one run on fresh topics and
consumer groups, both stages with their default settings (exactly-once, the default allowed
lateness, the open-operations topic written), each in a child process pinned to one CPU as
``make bench`` starts them:

- A producer thread writes raw vendor JSON to the raw topic at a steady rate, round robin over
  its partitions without a key (as a bridge that does not key by instance does), with the
  stages' producer settings (idempotent, acks=all, 5 ms linger). Each pair is one failure reboot
  of its own instance: ``SystemFailure.Reboot`` ``Executing``, then ``--gap`` seconds later its
  ``Executed``. ``jd``: JD Cloud, no vendor event id. ``aliyun``: Alibaba Cloud with an
  ``eventId``. Every notification's event time is the wall-clock time it is produced at, so
  the stream is in order and current.
- A reader thread reads ``failure.reboot.completed`` and ``vm.operations.open`` (both
  ``read_committed``, as a downstream service does) and decodes them as ``vmevents tail`` does
  (single-object or Confluent framing).
- Outcome latency: read time of a pair's outcome minus the time its ``Executed`` was handed to
  the producer. Open latency: read time of the first ``vm.operations.open`` record of the pair's
  operation minus the time its ``Executing`` was handed to the producer. Both on one monotonic
  clock of this process.

A run waits until the stages answer (Alibaba probe pairs, not counted), produces ``--warmup``
seconds of pairs (not counted), then ``--seconds`` of measured pairs, then waits up to
``--drain-seconds`` after the last ``Executed`` for the answers still missing. What has not
arrived by then is reported as missing, not left out of the percentiles silently. A pair with an
outcome and no open record is counted apart (``never open``): the stage decided both of its
notifications in one transaction, and the open-operations view wrote nothing for it.
``docs/benchmarks.md`` says what each column means and holds the figures measured.

The broker is the one ``KAFKA_BOOTSTRAP_SERVERS`` names, else the project's local stack,
started and stopped here.
"""

from __future__ import annotations

import argparse
import heapq
import itertools
import math
import multiprocessing as mp
import os
import sys
import threading
import time
import uuid
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

from confluent_kafka import KafkaError, Producer

from consumer import synthetic
from consumer.bench import local_broker, stage_child
from consumer.bench_state import format_table
from consumer.config import Settings, load_settings
from consumer.logs import configure, kafka_logger
from consumer.progress import Progress

VENDORS = {"jd": "jdcloud", "aliyun": "aliyun"}
"""Command-line name -> the ``vendor`` of the records."""
CODE = "SystemFailure.Reboot"
OPERATION = "failure.reboot"
OUTCOME = "completed"
START, END = "start", "end"
READY_PROBE_SECONDS = 2.0

Key = tuple[str, str, str]
"""``(vendor, instance id, role)``: role :data:`START` (its open record) or :data:`END` (its
outcome)."""


# -- pure helpers ----------------------------------------------------------------------------

def percentile(values: Sequence[float], p: float) -> float | None:
    """The nearest-rank ``p``-th percentile (0 < p <= 100): the smallest value that at least
    ``p`` % of ``values`` are at or below; None for no values."""
    if not 0 < p <= 100:
        raise ValueError(f"percentile {p} is not in (0, 100]")
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(math.ceil(p / 100 * len(ordered)), 1) - 1]


def plan(rate: float, pairs: int, gap: float) -> Iterator[tuple[float, int, str]]:
    """``(seconds from the start, pair index, role)`` of every notification, in due order: pair
    ``i`` starts at ``i / rate`` and ends ``gap`` later. Notifications due at the same moment
    go by pair (an earlier pair's end before a later pair's start), a pair's start before its
    end."""
    starts = ((i / rate, i, 0, START) for i in range(pairs))
    ends = ((i / rate + gap, i, 1, END) for i in range(pairs))
    for due, i, _, role in heapq.merge(starts, ends):
        yield due, i, role


def record_key(topic: str, value: Mapping[str, Any], outcome_topic: str) -> Key:
    """The pair a decoded record answers: an outcome answers the pair's end, an open record its
    start."""
    role = END if topic == outcome_topic else START
    return str(value.get("vendor")), str(value.get("instance_id")), role


@dataclass
class Matched:
    """The measured pairs against what the reader saw."""

    outcome_ms: list[float] = field(default_factory=list)
    open_ms: list[float] = field(default_factory=list)
    missing_outcomes: int = 0
    missing_opens: int = 0
    never_open: int = 0
    """Pairs with an outcome and no open record: the correlate stage decided the Executing and
    the Executed in one transaction, and the open-operations view (what is open after each
    commit) never held the operation; it writes nothing for it, not even a tombstone. Not
    missing, but not in the open percentiles either: the Executing of each took longer than
    the pair's gap to be decided."""


def match(measured: Sequence[tuple[str, str]], sent: Mapping[Key, float],
          seen: Mapping[Key, float]) -> Matched:
    """Latency per measured pair ``(vendor, instance)``: first read time minus produce time, in
    milliseconds, of its outcome and of its open record. A pair without an outcome counts as a
    missing outcome; one with neither an open record nor an outcome as a missing open record
    too, one with only its outcome as :attr:`Matched.never_open`. Records of pairs not
    measured (probes, warm-up) are ignored."""
    result = Matched()
    for vendor, instance in measured:
        end = seen.get((vendor, instance, END))
        if end is None:
            result.missing_outcomes += 1
        else:
            result.outcome_ms.append((end - sent[(vendor, instance, END)]) * 1000.0)
        start = seen.get((vendor, instance, START))
        if start is not None:
            result.open_ms.append((start - sent[(vendor, instance, START)]) * 1000.0)
        elif end is not None:
            result.never_open += 1
        else:
            result.missing_opens += 1
    return result


def ms(value: float | None) -> str:
    return "-" if value is None else f"{value:,.0f}"


# -- producing -------------------------------------------------------------------------------

def instance_id(vendor: str, run: str, i: int) -> str:
    return f"i-{vendor[:2]}{run}{i:07d}"


def notification(vendor: str, role: str, instance: str, when: datetime, started: datetime,
                 run: str, i: int) -> bytes:
    """One raw notification of pair ``i``: JD Cloud without an event id, Alibaba with one."""
    state = "Executing" if role == START else "Executed"
    seq = 2 * i + (role == END)
    if vendor == "jdcloud":
        return synthetic.jd_notification(CODE, state, instance, when,
                                         synthetic.JD_REGIONS[i % 3], seq)
    return synthetic.aliyun_notification(CODE, state, instance, when, started,
                                         synthetic.ALIYUN_REGIONS[i % 3], seq, f"e-{run}-{i:07d}")


class Feeder(threading.Thread):
    """Produces ``warmup + measured`` pairs at ``rate`` pairs/s; records when each notification
    was handed to the producer. Pairs ``warmup`` and later are the measured ones."""

    def __init__(self, producer: Producer, topic: str, partitions: int, vendor: str, run: str,
                 rate: float, warmup: int, measured: int, gap: float) -> None:
        super().__init__(name="bench-latency-feeder", daemon=True)
        self.producer, self.topic, self.partitions = producer, topic, partitions
        self.vendor, self.run_id, self.rate, self.gap = vendor, run, rate, gap
        self.warmup, self.measured = warmup, measured
        self.sent: dict[Key, float] = {}
        self.produced = 0
        self.measure_started = 0.0
        self.measure_ended = 0.0
        self.last_end = 0.0
        self.max_behind = 0.0
        self.error: BaseException | None = None
        self.stop = threading.Event()

    def pairs(self) -> list[tuple[str, str]]:
        return [(self.vendor, instance_id(self.vendor, self.run_id, i))
                for i in range(self.warmup, self.warmup + self.measured)]

    def run(self) -> None:
        try:
            self._feed()
        except BaseException as exc:  # reported by the main thread
            self.error = exc

    def _feed(self) -> None:
        started_at: dict[int, datetime] = {}
        partition = itertools.cycle(range(self.partitions))
        begin = time.perf_counter()
        for due, i, role in plan(self.rate, self.warmup + self.measured, self.gap):
            if self.stop.is_set():
                return
            wait = begin + due - time.perf_counter()
            if wait > 0:
                time.sleep(wait)
            else:
                self.max_behind = max(self.max_behind, -wait)
            instance = instance_id(self.vendor, self.run_id, i)
            when = datetime.now(UTC)
            started = started_at.pop(i, when) if role == END else started_at.setdefault(i, when)
            value = notification(self.vendor, role, instance, when, started, self.run_id, i)
            now = time.perf_counter()
            if role == START and i == self.warmup:
                self.measure_started = now
            if role == START and i == self.warmup + self.measured - 1:
                self.measure_ended = now
            self.sent[(self.vendor, instance, role)] = now
            while True:
                try:
                    self.producer.produce(self.topic, value, partition=next(partition))
                    break
                except BufferError:
                    self.producer.poll(0.01)
            self.producer.poll(0)
            self.produced += 1
        self.last_end = time.perf_counter()
        self.producer.flush(30)


# -- reading ---------------------------------------------------------------------------------

class Reader(threading.Thread):
    """Reads the outcome and open-operations topics from their beginning (read_committed) and
    keeps the first read time of every ``(vendor, instance, role)``."""

    def __init__(self, settings: Settings, outcome_topic: str, open_topic: str) -> None:
        super().__init__(name="bench-latency-reader", daemon=True)
        self.settings, self.outcome_topic, self.open_topic = settings, outcome_topic, open_topic
        self.seen: dict[Key, float] = {}
        self.duplicate_outcomes = 0
        self.open_updates = 0
        self.tombstones = 0
        self.records = 0
        self.error: BaseException | None = None
        self.stop = threading.Event()

    def run(self) -> None:
        try:
            self._read()
        except BaseException as exc:  # reported by the main thread
            self.error = exc

    def _read(self) -> None:
        from consumer.tail import ValueReader, reader_consumer, start_positions

        # The Decoder `vmevents tail` reads our records with (single-object or Confluent
        # framing), without tail's text conversion of timestamps: only vendor and instance count.
        decode = ValueReader(self.settings).decoder.decode
        consumer = reader_consumer(self.settings)
        try:
            consumer.assign(start_positions(self.settings, consumer,
                                            [self.outcome_topic, self.open_topic], "beginning"))
            while not self.stop.is_set():
                messages = consumer.consume(1000, 0.01)  # waits the whole timeout unless full
                read_at = time.perf_counter()
                for msg in messages:
                    err = msg.error()
                    if err is not None:
                        if err.code() == KafkaError._PARTITION_EOF:
                            continue
                        if err.fatal() or err.code() == KafkaError.UNKNOWN_TOPIC_OR_PART:
                            raise RuntimeError(f"reading {msg.topic()}: {err.str()}")
                        continue
                    data = msg.value()
                    self._record(msg.topic() or "", None if data is None else decode(data),
                                 read_at)
        finally:
            consumer.close()

    def _record(self, topic: str, value: Mapping[str, Any] | None, read_at: float) -> None:
        self.records += 1
        if value is None:
            self.tombstones += 1
            return
        answered = record_key(topic, value, self.outcome_topic)
        if answered in self.seen:
            if answered[2] == END:
                self.duplicate_outcomes += 1
            else:
                self.open_updates += 1
            return
        self.seen[answered] = read_at


# -- one run ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class RunResult:
    vendor: str
    rate: float
    pairs: int
    sent_rate: float
    matched: Matched
    duplicate_outcomes: int
    max_behind_s: float
    drained_s: float
    load: float
    """The machine's 1-minute load average when the run ended (the stages, the broker, this
    process and whatever else shares the machine)."""


def _run_settings(base: Settings, run: str) -> Settings:
    """Fresh topics and groups for one run; every other setting as loaded (the defaults)."""
    return replace(base, raw_topics=(f"bench.{run}.raw",),
                   normalized_topic=f"bench.{run}.normalized", dlq_topic=f"bench.{run}.dlq",
                   changelog_topic=f"bench.{run}.changelog", outcome_topic_prefix=f"bench.{run}.",
                   open_operations_topic=f"bench.{run}.operations.open",
                   normalize_group=f"bench-{run}-normalize",
                   correlate_group=f"bench-{run}-correlate")


def _check(procs: Sequence[Any], *threads: Feeder | Reader) -> None:
    for p in procs:
        if not p.is_alive():
            raise SystemExit(f"bench-latency: a stage process ended (exit code {p.exitcode})")
    for t in threads:
        if t.error is not None:
            raise SystemExit(f"bench-latency: {t.name} failed: {t.error!r}")


def _wait_for_topics(settings: Settings, topics: Sequence[str], timeout: float = 30.0) -> None:
    """Until the broker's metadata lists the topics just created (the reader fails on one that
    it does not list yet)."""
    from consumer.runtime.clients import topic_exists

    deadline = time.monotonic() + timeout
    while not all(topic_exists(settings, t) for t in topics):
        if time.monotonic() > deadline:
            raise SystemExit(f"bench-latency: topics {', '.join(topics)} not there after "
                             f"{timeout:.0f} s")
        time.sleep(0.2)


def _wait_ready(producer: Producer, settings: Settings, reader: Reader, procs: Sequence[Any],
                run: str, timeout: float) -> float:
    """Alibaba probe pairs (decided on arrival) until one's outcome is read; returns seconds."""
    topic = settings.raw_topics[0]
    progress = Progress("bench-latency: waiting for the stages")
    started = time.perf_counter()
    probe = 0
    next_probe = started
    while True:
        _check(procs, reader)
        now = time.perf_counter()
        if any(("aliyun", instance_id("aliyun", f"{run}p", k), END) in reader.seen
               for k in range(probe)):
            progress.close()
            return now - started
        if now - started > timeout:
            progress.close()
            raise SystemExit(f"bench-latency: no answer from the stages within {timeout:.0f} s")
        if now >= next_probe:
            instance = instance_id("aliyun", f"{run}p", probe)
            when = datetime.now(UTC)
            for role in (START, END):  # one partition: the end never overtakes its start
                producer.produce(topic, notification("aliyun", role, instance, when, when,
                                                     f"{run}p", probe), partition=0)
            producer.flush(10)
            probe += 1
            progress.advance()
            next_probe = now + READY_PROBE_SECONDS
        time.sleep(0.05)


def measure(base: Settings, vendor: str, rate: float, args: argparse.Namespace,
            cpus: Sequence[int]) -> RunResult:
    from consumer.runtime.clients import ensure_topics, partition_count, producer_conf

    run = uuid.uuid4().hex[:8]
    settings = _run_settings(base, run)
    raw_topic = settings.raw_topics[0]
    outcome_topic = f"{settings.outcome_topic_prefix}{OPERATION}.{OUTCOME}"
    # The reader is assigned before the first answer: the stages would create these topics
    # later (the outcome topic on its first record), with the same settings.
    ensure_topics(settings, {raw_topic: {}, outcome_topic: {}})
    ensure_topics(settings, {settings.open_operations_topic: {"cleanup.policy": "compact"}})
    _wait_for_topics(settings, [raw_topic, outcome_topic, settings.open_operations_topic])
    partitions = partition_count(settings, raw_topic)

    ctx = mp.get_context("spawn")
    stop = ctx.Event()
    procs = []
    shared = []  # held here while the children run: a collected Value is gone for them too
    for kind, cpu in (("normalize", cpus[0]), ("correlate", cpus[-1])):
        counter, first = ctx.Value("q", 0), ctx.Value("d", 0.0)
        shared.append((counter, first))
        p = ctx.Process(target=stage_child, args=(kind, settings, counter, first, stop, cpu))
        p.start()
        procs.append(p)
    reader = Reader(settings, outcome_topic, settings.open_operations_topic)
    reader.start()
    producer = Producer(producer_conf(settings, None, logger=kafka_logger("producer")))
    warmup, measured = round(rate * args.warmup), round(rate * args.seconds)
    feeder = Feeder(producer, raw_topic, partitions, VENDORS[vendor], run, rate, warmup,
                    measured, args.gap)
    label = f"bench-latency {vendor} {rate:g}/s"
    try:
        ready = _wait_ready(producer, settings, reader, procs, run, args.ready_timeout)
        print(f"{label}: stages answering after {ready:.1f} s; {args.warmup:g} s warm-up, "
              f"{args.seconds:g} s measured", file=sys.stderr)
        pairs = feeder.pairs()
        wanted = [(v, i, role) for v, i in pairs for role in (START, END)]
        progress = Progress(f"{label} answers", total=len(wanted))
        feeder.start()
        deadline = math.inf
        while True:
            _check(procs, feeder, reader)
            progress.done = sum(1 for key in wanted if key in reader.seen)
            progress.advance(0)
            if not feeder.is_alive():
                if deadline == math.inf:
                    deadline = feeder.last_end + args.drain_seconds
                if progress.done == len(wanted) or time.perf_counter() >= deadline:
                    break
            time.sleep(0.2)
        drained = time.perf_counter() - feeder.last_end
        seen = dict(reader.seen)  # what came by the deadline; later records do not count
        progress.close()
        print(f"{label}: {feeder.produced:,} notifications produced (probes not counted); "
              f"normalize processed {shared[0][0].value:,} records, correlate "
              f"{shared[1][0].value:,}; {reader.records:,} records read "
              f"({reader.tombstones:,} tombstones)", file=sys.stderr)
    finally:
        feeder.stop.set()
        reader.stop.set()
        stop.set()
        for p in procs:
            p.join(30)
            if p.is_alive():
                p.kill()
        if feeder.ident is not None:  # started
            feeder.join(10)
        reader.join(10)
    span = feeder.measure_ended - feeder.measure_started
    sent_rate = (measured - 1) / span if span > 0 else 0.0
    return RunResult(VENDORS[vendor], rate, measured, sent_rate,
                     match(pairs, feeder.sent, seen), reader.duplicate_outcomes,
                     feeder.max_behind, drained,
                     os.getloadavg()[0] if hasattr(os, "getloadavg") else math.nan)


# -- command line ----------------------------------------------------------------------------

def _numbers(text: str) -> list[float]:
    try:
        values = [float(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a list of numbers") from None
    if not values or any(v <= 0 for v in values):
        raise argparse.ArgumentTypeError(f"{text!r}: give positive numbers, e.g. 200,1000")
    return values


def _vendors(text: str) -> list[str]:
    names = [x.strip() for x in text.split(",") if x.strip()]
    unknown = [n for n in names if n not in VENDORS]
    if not names or unknown:
        raise argparse.ArgumentTypeError(f"{text!r}: vendors are {', '.join(VENDORS)}")
    return names


def table(results: Sequence[RunResult]) -> str:
    header = ("vendor", "pairs/s", "pairs", "sent/s", "outcomes", "out p50 ms", "out p99 ms",
              "opens", "open p50 ms", "open p99 ms", "never open", "missing out", "missing open",
              "dup out", "load")
    rows = []
    for r in results:
        m = r.matched
        rows.append((r.vendor, f"{r.rate:g}", f"{r.pairs:,}", f"{r.sent_rate:,.0f}",
                     f"{len(m.outcome_ms):,}", ms(percentile(m.outcome_ms, 50)),
                     ms(percentile(m.outcome_ms, 99)), f"{len(m.open_ms):,}",
                     ms(percentile(m.open_ms, 50)), ms(percentile(m.open_ms, 99)),
                     f"{m.never_open:,}", f"{m.missing_outcomes:,}", f"{m.missing_opens:,}",
                     f"{r.duplicate_outcomes:,}", f"{r.load:.1f}"))
    return format_table(header, rows)


def replace_args(args: argparse.Namespace, **changes: float) -> argparse.Namespace:
    return argparse.Namespace(**{**vars(args), **changes})


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="vmevents bench-latency", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--vendors", type=_vendors, default=["jd", "aliyun"],
                        help="jd (no event id), aliyun (event id); default jd,aliyun")
    parser.add_argument("--rates", type=_numbers, default=[200.0, 1000.0],
                        help="pairs per second, one run each; default 200,1000")
    parser.add_argument("--seconds", type=float, default=20.0,
                        help="seconds of measured pairs per run (default 20)")
    parser.add_argument("--warmup", type=float, default=5.0,
                        help="seconds of pairs before the measured ones, not counted (default 5)")
    parser.add_argument("--drain-seconds", type=float, default=10.0,
                        help="after the last Executed, how long to wait for missing answers "
                             "(default 10); what has not come by then is reported missing")
    parser.add_argument("--gap", type=float, default=1.5,
                        help="seconds from a pair's Executing to its Executed (default 1.5)")
    parser.add_argument("--ready-timeout", type=float, default=120.0,
                        help="longest wait for the stages' first answer (default 120 s)")
    parser.add_argument("--broker-warmup", type=float, default=20.0,
                        help="seconds of an unmeasured run of the first vendor and rate before "
                             "the measured ones (default 20; 0: none): a broker just started runs "
                             "slower until its JVM has warmed up, and the first run paid for it")
    parser.add_argument("--registry", action="store_true",
                        help="use SCHEMA_REGISTRY_URL (Confluent framing) instead of single-object")
    args = parser.parse_args(argv)
    if args.seconds * min(args.rates) < 1 or args.drain_seconds < 0 or args.gap < 0:
        parser.error("--seconds too short for one pair, or a negative --drain-seconds/--gap")
    configure("console", "warning")
    with local_broker(registry=args.registry):
        base = load_settings()
        if not args.registry:
            base = replace(base, schema_registry_url=None)
        cpus = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else [0]
        if args.broker_warmup > 0:
            print(f"bench-latency: warming the broker up for {args.broker_warmup:g} s "
                  "(not measured)", file=sys.stderr)
            measure(base, args.vendors[0], args.rates[0],
                    replace_args(args, seconds=args.broker_warmup, drain_seconds=0.0), cpus)
        results = []
        for vendor in args.vendors:
            for rate in args.rates:
                results.append(measure(base, vendor, rate, args, cpus))
                print(table(results[-1:]), file=sys.stderr)
    print()
    print(f"vmevents bench-latency: {args.seconds:g} s measured per run after {args.warmup:g} s "
          f"warm-up, Executed {args.gap:g} s after Executing, answers awaited up to "
          f"{args.drain_seconds:g} s after the last Executed; default stage settings "
          f"(allowed lateness {base.correlate_allowed_lateness_ms / 1000:g} s, {base.guarantee}), "
          f"{'registry' if args.registry else 'single-object'} encoding, one CPU per stage")
    print(table(results))
    worst = max(r.max_behind_s for r in results)
    if worst > 0.1:
        print(f"note: the producer fell up to {worst:.2f} s behind its schedule")
    return 0


if __name__ == "__main__":
    sys.exit(main())
