"""``make bench-state``: what N pending operations cost the correlate stage (issue #11's budgets).

For each kind of notification (``--variant``), one run of N notices, one per distinct instance:

- ``id``: Alibaba ``SystemMaintenance.Reboot`` Scheduled with an ``eventId`` and a ``notBefore``
  three days ahead: decided on arrival, straight into the open operations.
- ``noid``: JD Cloud ``SystemFailure.Reboot`` Executing, without an event id: each waits in the
  reorder buffer until the watermark passes it (here: the clock jumps past the allowed lateness
  at the end of the burst), then opens its operation.

Three figures per kind:

1. **Burst**: notices/s a :class:`~consumer.correlator.Correlator` absorbs, counting only the
   correlator's work per batch as the stage does it (``commit_point``, ``process`` each event,
   ``drain_changes``, ``expire``, ``drain_changes``), plus the final release (one bounded
   ``expire`` and drain per batch, as the stage's ticks do it). Events are built
   with the real normalizer before each batch's timing starts.
2. **State**: RSS growth of that same fresh process from just before the burst to after it
   (``gc.collect()`` both times), divided by N; beside it the correlator's own ``state_bytes``
   estimate divided by N, and the burst's peak (VmHWM over the same baseline) divided by N.
3. **Restore**: every changelog record the burst drained, in order, written to a one-partition
   compacted topic with the stage's producer settings (transactions of 10,000 records), then
   restored in a fresh process by the stage's :class:`ChangelogRestore`: seconds from its
   construction until the partition is done, records/s, and the peak RSS growth (VmHWM over the
   baseline before construction) and the growth left after it, divided by N.

``docs/benchmarks.md`` says what each column means and holds the figures measured.

Each measuring process is pinned to one CPU, librdkafka's threads included. The broker is the
one ``KAFKA_BOOTSTRAP_SERVERS`` names, else the local stack started and stopped here.
"""

from __future__ import annotations

import argparse
import gc
import itertools
import multiprocessing as mp
import os
import struct
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import BinaryIO, ParamSpec, TypeVar

from consumer.bench import ROOT, local_broker, pin_to_cpu
from consumer.config import Settings, load_settings
from consumer.correlator import CorrelatorConfig, correlator_config
from consumer.errors import ConfigError
from consumer.logs import configure
from consumer.progress import Progress

VARIANTS = {"id": "aliyun Scheduled, event id", "noid": "jdcloud Executing, no id"}
STACK_STATE = ROOT / ".bench" / "state-stack"
TRANSACTION_RECORDS = 10_000
RESTORE_LIMIT_SECONDS = 900.0

_RECORD = struct.Struct("<Ii")  # key length, value length (-1: tombstone)

P = ParamSpec("P")
R = TypeVar("R")


# -- pure helpers ----------------------------------------------------------------------------

def write_changes(out: BinaryIO, changes: Iterable[tuple[str, bytes | None]]) -> int:
    """Append changelog writes to a file (length-prefixed, tombstones kept); returns how many."""
    n = 0
    for key, value in changes:
        k = key.encode()
        out.write(_RECORD.pack(len(k), -1 if value is None else len(value)))
        out.write(k)
        if value is not None:
            out.write(value)
        n += 1
    return n


def read_changes(src: BinaryIO) -> Iterator[tuple[bytes, bytes | None]]:
    """The records :func:`write_changes` wrote, in order; a truncated file is an error."""
    while head := src.read(_RECORD.size):
        if len(head) < _RECORD.size:
            raise ValueError("changelog file truncated in a record header")
        klen, vlen = _RECORD.unpack(head)
        key = src.read(klen)
        value = None if vlen < 0 else src.read(vlen)
        if len(key) < klen or (value is not None and len(value) < vlen):
            raise ValueError("changelog file truncated in a record")
        yield key, value


def status_kib(status: str, field: str) -> int:
    """A ``kB`` field of ``/proc/<pid>/status`` (``VmRSS``, ``VmHWM``) in KiB."""
    for line in status.splitlines():
        name, _, rest = line.partition(":")
        if name == field:
            return int(rest.split()[0])
    raise ValueError(f"{field} not in the process status")


def rss_bytes() -> int:
    """Resident set size of this process now."""
    return status_kib(Path("/proc/self/status").read_text(), "VmRSS") * 1024


def peak_rss_bytes() -> int:
    """The highest resident set size this process has had (since its exec)."""
    return status_kib(Path("/proc/self/status").read_text(), "VmHWM") * 1024


def per_op(n_bytes: int, ops: int) -> float:
    return n_bytes / ops if ops else 0.0


def format_table(header: Sequence[str], rows: Iterable[Sequence[str]]) -> str:
    """Columns as wide as their widest cell; the first left-aligned, the others right."""
    table = [list(header), *(list(r) for r in rows)]
    widths = [max(len(row[i]) for row in table) for i in range(len(header))]
    return "\n".join(
        "  ".join(cell.ljust(w) if i == 0 else cell.rjust(w)
                  for i, (cell, w) in enumerate(zip(row, widths, strict=True)))
        for row in table)


# -- measuring processes ---------------------------------------------------------------------

def in_fresh_process(fn: Callable[P, R], *args: P.args, **kwargs: P.kwargs) -> R:
    """``fn(*args)`` in a new spawned interpreter: nothing of this process's memory is in it."""
    with ProcessPoolExecutor(1, mp_context=mp.get_context("spawn")) as pool:
        return pool.submit(fn, *args, **kwargs).result()


def _measuring_process(cpu: int) -> None:
    """One CPU, warnings only (the progress line says how far it is), and the correlate stage's
    garbage-collector settings (consumer.runtime.loop)."""
    pin_to_cpu(cpu)
    configure("console", "warning")
    gc.freeze()
    gc.set_threshold(50_000)


@dataclass(frozen=True)
class Burst:
    seconds: float  # inside the correlator only
    rss_growth: int  # steady state: after the burst, buffer released, committed
    peak_growth: int  # during the burst (buffered notifications and open operations at once)
    state_bytes: int
    pending: int
    buffered: int
    outcomes: int
    records: int


def state_config(settings: Settings, ops: int) -> CorrelatorConfig:
    """The stage's correlator configuration, its pending cap raised to hold ``ops``: the
    benchmark measures what the state costs, not the eviction that caps it."""
    config = correlator_config(settings)
    return replace(config, max_pending=max(config.max_pending, ops))


def run_burst(variant: str, ops: int, batch: int, settings: Settings, path: str,
              cpu: int) -> Burst:
    """Absorb the burst into one correlator; the drained changelog goes to ``path``."""
    from consumer import synthetic
    from consumer.correlator import Correlator
    from consumer.model import InstanceEvent
    from consumer.normalization import Normalizer

    _measuring_process(cpu)
    config = state_config(settings, ops)
    start_ms = time.time_ns() // 1_000_000
    now = [start_ms]
    correlator = Correlator(config, lambda: now[0])
    normalizer = Normalizer()
    base = datetime.fromtimestamp(start_ms / 1000, UTC) - timedelta(minutes=1)
    raws = synthetic.fleet_burst(ops, event_id=variant == "id", base=base)
    progress = Progress(f"burst {variant}", total=ops)
    seconds, outcomes, records = 0.0, 0, 0
    gc.collect()
    before = rss_bytes()
    with open(path, "wb") as out:
        for offset in itertools.count(0, batch):
            events: list[InstanceEvent] = []
            for raw in itertools.islice(raws, batch):
                event = normalizer.normalize(raw)
                event["source"] = {"topic": "vm.events.raw", "partition": 0,
                                   "offset": offset + len(events)}
                events.append(event)
            if not events:
                break
            t0 = time.perf_counter()
            correlator.commit_point()
            for event in events:
                outcomes += len(correlator.process(event))
            changes = correlator.drain_changes()
            outcomes += len(correlator.expire(now[0]))
            changes += correlator.drain_changes()
            seconds += time.perf_counter() - t0
            records += write_changes(out, changes)
            progress.advance(len(events))
        del events, changes
        now[0] = start_ms + config.allowed_lateness_ms + 1_000  # the buffer's wait is over
        while correlator.buffered_count:  # the stage's ticks: one bounded release per batch
            t0 = time.perf_counter()
            correlator.commit_point()
            outcomes += len(correlator.expire(now[0]))
            changes = correlator.drain_changes()
            correlator.commit_point()  # that transaction committed: nothing kept for a rollback
            seconds += time.perf_counter() - t0
            records += write_changes(out, changes)
            del changes
    progress.close()
    peak = peak_rss_bytes()
    gc.collect()
    return Burst(seconds, rss_bytes() - before, peak - before, correlator.state_bytes,
                 correlator.pending_count, correlator.buffered_count, outcomes, records)


@dataclass(frozen=True)
class Restore:
    seconds: float
    records: int
    pending: int
    buffered: int
    peak_growth: int
    rss_growth: int  # after the restore, the consumer closed


def run_restore(settings: Settings, ops: int, total: int, cpu: int) -> Restore:
    """Restore changelog partition 0 the way the stage does; time it and watch the RSS."""
    from consumer.correlator import Correlator
    from consumer.runtime.correlate_stage import ChangelogRestore, wall_clock_ms

    _measuring_process(cpu)
    config = state_config(settings, ops)
    gc.collect()
    before = rss_bytes()
    progress = Progress("restore", total=total)
    started = time.perf_counter()
    session = ChangelogRestore(settings, {0: Correlator(config, wall_clock_ms)})
    try:
        while not session.step(0.25):
            progress.done = session.records
            progress.advance(0)
            if time.perf_counter() - started > RESTORE_LIMIT_SECONDS:
                raise SystemExit(f"bench-state: restore not done after {RESTORE_LIMIT_SECONDS:.0f}"
                                 f" s ({session.records} of {total} records read)")
        seconds = time.perf_counter() - started
    finally:
        session.close()
    progress.done = session.records
    progress.close()
    correlator = session.correlators[0]
    peak = peak_rss_bytes()
    gc.collect()
    return Restore(seconds, session.records, correlator.pending_count, correlator.buffered_count,
                   peak - before, rss_bytes() - before)


# -- the changelog topic ---------------------------------------------------------------------

def produce_changelog(settings: Settings, path: str, total: int, transactional_id: str) -> None:
    """The recorded changelog onto partition 0 of a compacted topic, as the stage writes it:
    its producer settings, in transactions (so the restore reads past commit markers)."""
    from confluent_kafka import Producer

    from consumer.logs import kafka_logger
    from consumer.runtime.clients import ensure_topics, producer_conf

    topic = settings.changelog_topic
    ensure_topics(settings, {topic: {"cleanup.policy": "compact"}}, partitions=1)
    producer = Producer(producer_conf(settings, transactional_id,
                                      logger=kafka_logger("producer")))
    producer.init_transactions(30)
    progress = Progress(f"produce {topic}", total=total)
    with open(path, "rb") as src:
        for chunk in iter(lambda: list(itertools.islice(read_changes(src), TRANSACTION_RECORDS)),
                          []):
            producer.begin_transaction()
            for key, value in chunk:
                while True:
                    try:
                        producer.produce(topic, value, key, partition=0)
                        break
                    except BufferError:
                        producer.poll(0.05)
            producer.commit_transaction(120)
            progress.advance(len(chunk))
    progress.close()


# -- the run ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class Result:
    variant: str
    burst: Burst
    restore: Restore


def measure(variant: str, args: argparse.Namespace, base: Settings, run: str,
            cpu: int) -> Result:
    settings = replace(base, changelog_topic=f"bench.{run}.{variant}.changelog",
                       correlate_group=f"bench-{run}-{variant}")
    with tempfile.TemporaryDirectory(prefix="vmevents-bench-state-") as tmp:
        path = os.path.join(tmp, "changelog.bin")
        burst = in_fresh_process(run_burst, variant, args.ops, args.batch, settings, path, cpu)
        produce_changelog(settings, path, burst.records, f"bench-{run}-{variant}")
    restore = in_fresh_process(run_restore, settings, args.ops, burst.records, cpu)
    expected = (args.ops, 0, 0, burst.records, args.ops, 0)
    got = (burst.pending, burst.buffered, burst.outcomes, restore.records, restore.pending,
           restore.buffered)
    if got != expected:  # the figures would not be about N pending operations
        sys.stderr.write(f"bench-state {variant}: (pending, buffered, outcomes) after the burst, "
                         f"(records, pending, buffered) after the restore: {got}, expected "
                         f"{expected}\n")
    return Result(variant, burst, restore)


def report(results: list[Result], ops: int, batch: int) -> str:
    header = ("notices", "burst/s", "burst peak B/op", "RSS B/op", "est. B/op", "changelog rec",
              "restore s", "restore rec/s", "restore peak B/op", "restored B/op", "pending after")
    rows = []
    for r in results:
        b, s = r.burst, r.restore
        rows.append((VARIANTS[r.variant], f"{ops / b.seconds:,.0f}",
                     f"{per_op(b.peak_growth, ops):,.0f}",
                     f"{per_op(b.rss_growth, ops):,.0f}", f"{per_op(b.state_bytes, ops):,.0f}",
                     f"{b.records:,}", f"{s.seconds:.2f}", f"{s.records / s.seconds:,.0f}",
                     f"{per_op(s.peak_growth, ops):,.0f}", f"{per_op(s.rss_growth, ops):,.0f}",
                     f"{s.pending:,}"))
    title = (f"vmevents bench-state: {ops:,} pending operations per run, drained every {batch} "
             f"events, one CPU per measuring process")
    return f"{title}\n{format_table(header, rows)}"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m consumer.bench_state", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ops", type=int, default=1_000_000,
                        help="pending operations (notices in the burst) per run")
    parser.add_argument("--batch", type=int, default=500,
                        help="events between two drains of the changelog (one stage batch)")
    parser.add_argument("--variant", choices=(*VARIANTS, "both"), default="both")
    args = parser.parse_args(argv)
    if args.ops < 1 or args.batch < 1:
        parser.error("--ops and --batch must be at least 1")
    try:
        load_settings()  # a bad variable is one line now, not a traceback after the broker start
    except ConfigError as exc:
        print(f"bench-state: {exc}", file=sys.stderr)
        return 2
    configure("console", "warning")
    variants = list(VARIANTS) if args.variant == "both" else [args.variant]
    cpus = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else [0]
    run = uuid.uuid4().hex[:8]
    with local_broker(STACK_STATE, registry=False):
        base = load_settings()  # with the started broker's address
        results = [measure(v, args, base, run, cpus[0]) for v in variants]
    print()
    print(report(results, args.ops, args.batch))
    return 0


if __name__ == "__main__":
    sys.exit(main())
