"""``make bench``: events/s of each stage on a real broker, beside the broker's own baseline.

All runs happen in one invocation against one broker so the numbers compare:

- ``raw``: consume and produce the same bytes with the same transactional batch loop and no
  processing; the ceiling the stages are measured against.
- ``normalize``: the normalize stage, raw topic -> normalized topic.
- ``correlate``: the correlate stage over the normalized topic the previous run wrote.
- ``both``: both stages at once, each in its own process, raw -> outcomes.

Each stage runs in a child process pinned to one CPU (librdkafka's threads included), so
"events/s on one core" means exactly that. A run ends when the child has processed and
committed every input record.
"""

from __future__ import annotations

import argparse
import contextlib
import multiprocessing as mp
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from confluent_kafka import Message

from consumer.config import Settings, load_settings
from consumer.progress import Progress

ROOT = Path(__file__).resolve().parent.parent


class _Counting:
    """Wraps a processor: counts processed records into shared memory for the parent."""

    def __init__(self, inner: Any, counter: Any, first: Any) -> None:
        self.inner = inner
        self.stage = inner.stage
        self.counter = counter
        self.first = first

    def on_assign(self, consumer: Any, partitions: Any) -> None:
        self.inner.on_assign(consumer, partitions)

    def on_revoke(self, partitions: Any) -> None:
        self.inner.on_revoke(partitions)

    def on_abort(self, consumer: Any) -> None:
        self.inner.on_abort(consumer)

    def restore(self, consumer: Any) -> bool:
        return bool(self.inner.restore(consumer))

    def on_resume(self) -> None:
        self.inner.on_resume()

    def tick(self, emit: Any) -> None:
        self.inner.tick(emit)

    def report_progress(self, caught_up: Any, emit: Any) -> None:
        self.inner.report_progress(caught_up, emit)

    def process(self, messages: Sequence[Message], emit: Any) -> None:
        if messages and self.first.value == 0.0:
            self.first.value = time.perf_counter()
        self.inner.process(messages, emit)
        # Events only: the normalize stage's progress marks (null values) are not input events.
        self.counter.value += sum(1 for m in messages if m.value() is not None)


class _Passthrough:
    stage = "raw"

    def __init__(self, topic: str) -> None:
        self.topic = topic

    def on_assign(self, consumer: Any, partitions: Any) -> None:
        return

    def on_revoke(self, partitions: Any) -> None:
        return

    def on_abort(self, consumer: Any) -> None:
        return

    def restore(self, consumer: Any) -> bool:
        return True

    def on_resume(self) -> None:
        return

    def tick(self, emit: Any) -> None:
        return

    def report_progress(self, caught_up: Any, emit: Any) -> None:
        return

    def process(self, messages: Sequence[Message], emit: Any) -> None:
        topic = self.topic
        for m in messages:
            emit(topic, m.key(), m.value(), None, -1)


def pin_to_cpu(cpu: int) -> None:
    """Run this process, librdkafka's threads included, on one CPU (where the OS allows it)."""
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {cpu})


def stage_child(kind: str, settings: Settings, counter: Any, first: Any, stop: Any, cpu: int) -> None:
    import threading

    from consumer.app import correlate_loop, normalize_loop
    from consumer.http import Health
    from consumer.logs import configure
    from consumer.metrics import Metrics
    from consumer.runtime.loop import StageLoop

    pin_to_cpu(cpu)
    configure("console", "warning")
    metrics, health = Metrics(), Health()
    if kind == "raw":
        loop = StageLoop(settings, _Passthrough(settings.normalized_topic), settings.raw_topics,
                         settings.normalize_group, metrics, health)
    elif kind == "normalize":
        loop = normalize_loop(settings, metrics, health)
    else:
        loop = correlate_loop(settings, metrics, health)
    loop.processor = _Counting(loop.processor, counter, first)
    event = threading.Event()

    def relay() -> None:  # a multiprocessing Event cannot be passed where threading's is expected
        stop.wait()
        event.set()

    threading.Thread(target=relay, daemon=True).start()
    loop.run(event)


def baseline_child(root: str, kind: str, overrides: dict[str, Any], counter: Any, first: Any,
                   stop: Any, cpu: int) -> None:
    """A stage of another checkout (``root``, see ``--baseline``): its own ``consumer`` package
    replaces this one in the child before anything of it runs, with the same overrides."""
    for name in [m for m in sys.modules if m == "consumer" or m.startswith("consumer.")]:
        del sys.modules[name]
    sys.path.insert(0, root)
    os.chdir(root)
    from consumer.bench import stage_child as their_child
    from consumer.config import load_settings as their_settings

    their_child(kind, replace(their_settings(), **overrides), counter, first, stop, cpu)


def _proc_cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process, every thread included (librdkafka's too)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


Stage = tuple[str, Settings, int]
"""(kind, settings, cpu) of one stage child."""


def _measure(kinds: list[Stage], total: int, label: str,
             baseline: tuple[str, dict[str, Any]] | None = None) -> tuple[float, float]:
    """Start one child per (kind, settings, cpu); wait until the last kind processed ``total``.
    Returns (events/s, events per CPU-second of the last child), both from its first record.
    ``baseline``: (root, overrides) runs the stage of another checkout instead."""
    ctx = mp.get_context("spawn")
    stop = ctx.Event()
    shared = []
    procs = []
    for kind, settings, cpu in kinds:
        counter, first = ctx.Value("q", 0), ctx.Value("d", 0.0)
        if baseline is None:
            p = ctx.Process(target=stage_child, args=(kind, settings, counter, first, stop, cpu))
        else:
            p = ctx.Process(target=baseline_child,
                            args=(baseline[0], kind, baseline[1], counter, first, stop, cpu))
        p.start()
        shared.append((counter, first))
        procs.append(p)
    progress = Progress(f"bench {label}", total=total)
    last_counter, last_first = shared[-1]
    first_counter = shared[0][1]
    cpu_start: float | None = None
    try:
        while last_counter.value < total:
            if not all(p.is_alive() for p in procs):
                raise SystemExit(f"bench {label}: a stage process died")
            if cpu_start is None and last_first.value:
                cpu_start = _proc_cpu_seconds(procs[-1].pid or 0)
            progress.done = last_counter.value
            progress.advance(0)
            time.sleep(0.02)
        elapsed = time.perf_counter() - float(first_counter.value)
        cpu_used = _proc_cpu_seconds(procs[-1].pid or 0) - (cpu_start or 0.0)
    finally:
        progress.done = last_counter.value
        progress.close()
        stop.set()
        for p in procs:
            p.join(30)
            if p.is_alive():
                p.kill()
    return total / elapsed, total / cpu_used if cpu_used > 0 else float("nan")


def _produce(settings: Settings, topic: str, payloads: list[bytes], partitions: int) -> None:
    from consumer.runtime.clients import ensure_topics, produce_all

    ensure_topics(settings, {topic: {}}, partitions=partitions)
    if produce_all(settings, topic, payloads, len(payloads), f"produce {topic}"):
        raise SystemExit(f"bench: could not produce the input to {topic}")


STACK_STATE = ROOT / ".bench" / "stack"


def _stack(state_dir: Path, *args: str) -> None:
    subprocess.run([sys.executable, str(ROOT / "deploy/local/stack.py"), *args,
                    "--state-dir", str(state_dir)], check=True, stdout=subprocess.DEVNULL)


def _start_broker(state_dir: Path, registry: bool) -> dict[str, str]:
    """Start the project's local stack with throughput JVM settings; returns its environment."""
    _stack(state_dir, "up", *(["--registry"] if registry else []), "--throughput")
    env = {}
    for line in (state_dir / "env").read_text().splitlines():
        key, _, value = line.removeprefix("export ").partition("=")
        if key:
            env[key.strip()] = value.strip().strip("'\"")
    return env


@contextlib.contextmanager
def local_broker(state_dir: Path = STACK_STATE, *, registry: bool = True) -> Iterator[None]:
    """The broker of ``KAFKA_BOOTSTRAP_SERVERS`` if set; else the project's local stack, started
    here (its environment put into ``os.environ``, so child processes see it) and stopped on exit.
    """
    if os.environ.get("KAFKA_BOOTSTRAP_SERVERS"):
        yield
        return
    os.environ.update(_start_broker(state_dir, registry))
    try:
        yield
    finally:
        _stack(state_dir, "down")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="vmevents bench", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=200_000, help="raw events per run")
    parser.add_argument("--batch-size", type=int, default=5000)
    parser.add_argument("--partitions", type=int, default=1,
                        help="partitions of every topic; above 1 the stages merge them by timestamp")
    parser.add_argument("--guarantee", choices=("exactly_once", "at_least_once"),
                        default="exactly_once")
    parser.add_argument("--baseline", metavar="REF",
                        help="also run the normalize and correlate stages of this commit, "
                             "interleaved, on the same broker and input (A/B)")
    parser.add_argument("--repeat", type=int, default=1,
                        help="measurements of each stage (and of the baseline's)")
    parser.add_argument("--no-both", action="store_true",
                        help="skip the run of both stages at once")
    parser.add_argument("--registry", action="store_true",
                        help="use SCHEMA_REGISTRY_URL (Confluent framing) instead of single-object")
    args = parser.parse_args(argv)
    with local_broker():
        return _run(args)


def _baseline_root(ref: str) -> str:
    """A copy of the checkout at ``ref`` under .bench/ (made once per commit)."""
    sha = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--verify", f"{ref}^{{commit}}"],
                         check=True, capture_output=True, text=True).stdout.strip()
    root = ROOT / ".bench" / f"baseline-{sha[:12]}"
    if not (root / "consumer").is_dir():
        root.mkdir(parents=True, exist_ok=True)
        archive = subprocess.run(["git", "-C", str(ROOT), "archive", sha], check=True,
                                 capture_output=True).stdout
        subprocess.run(["tar", "-x", "-C", str(root)], input=archive, check=True)
    return str(root)


def _run(args: argparse.Namespace) -> int:
    from consumer import synthetic

    base = load_settings()
    if not args.registry:
        base = replace(base, schema_registry_url=None)
    run = uuid.uuid4().hex[:8]
    cpus = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else [0]
    second_cpu = cpus[1] if len(cpus) > 1 else cpus[0]
    baseline = _baseline_root(args.baseline) if args.baseline else None

    def overrides(**kw: Any) -> dict[str, Any]:
        return {"guarantee": args.guarantee, "batch_size": args.batch_size,
                "topic_partitions": args.partitions, "create_topics": True,
                "transactional_id": None, "schema_registry_url": base.schema_registry_url, **kw}

    def settings(**kw: Any) -> Settings:
        return replace(base, **overrides(**kw))

    ops = synthetic.operations(args.events // 2, instances=5000)
    payloads = synthetic.stream(ops)
    raw_topic = f"bench.{run}.raw"
    _produce(base, raw_topic, payloads, args.partitions)
    n = len(payloads)
    results: dict[str, list[tuple[float, float]]] = {}

    def measure(name: str, kind: str, over: dict[str, Any], other: str | None) -> None:
        label = name if other is None else f"{name}@base"
        rates = _measure([(kind, settings(**over), cpus[0])], n, label,
                         None if other is None else (other, overrides(**over)))
        results.setdefault(label, []).append(rates)

    for r in range(args.repeat):
        measure("raw", "raw", {"raw_topics": (raw_topic,),
                               "normalized_topic": f"bench.{run}.{r}.copy",
                               "normalize_group": f"bench-{run}-{r}-raw"}, None)
        sides: list[tuple[str, str | None]] = [("", None)]
        if baseline is not None:  # interleaved, the order alternating between repeats
            sides = [("", None), ("b", baseline)][::1 if r % 2 == 0 else -1]
        for tag, other in sides:
            measure("normalize", "normalize", {
                "raw_topics": (raw_topic,), "normalized_topic": f"bench.{run}.{tag}{r}.normalized",
                "dlq_topic": f"bench.{run}.{tag}{r}.dlq",
                "normalize_group": f"bench-{run}-{tag}{r}-normalize"}, other)
        for tag, other in sides:  # each version correlates what its own normalize wrote
            measure("correlate", "correlate", {
                "normalized_topic": f"bench.{run}.{tag}{r}.normalized",
                "changelog_topic": f"bench.{run}.{tag}{r}.changelog",
                "outcome_topic_prefix": f"bench.{run}.{tag}{r}.",
                "correlate_group": f"bench-{run}-{tag}{r}-correlate"}, other)
    if not args.no_both:
        both_norm = settings(raw_topics=(raw_topic,), normalized_topic=f"bench.{run}.normalized2",
                             dlq_topic=f"bench.{run}.dlq2",
                             normalize_group=f"bench-{run}-normalize2")
        both_corr = settings(normalized_topic=both_norm.normalized_topic,
                             changelog_topic=f"bench.{run}.changelog2",
                             outcome_topic_prefix=f"bench.{run}.b2.",
                             correlate_group=f"bench-{run}-correlate2")
        results["both"] = [_measure([("normalize", both_norm, cpus[0]),
                                     ("correlate", both_corr, second_cpu)], n, "both")]
    _report(args, n, results)
    return 0


def _median(values: list[float]) -> float:
    ordered = sorted(values)
    mid = len(ordered) // 2
    return ordered[mid] if len(ordered) % 2 else (ordered[mid - 1] + ordered[mid]) / 2


def _report(args: argparse.Namespace, n: int, results: dict[str, list[tuple[float, float]]]) -> None:
    print()
    print(f"vmevents bench: {n} events, {args.partitions} partition(s), batch {args.batch_size}, "
          f"{args.guarantee}, {'registry' if args.registry else 'single-object'} encoding, "
          f"one CPU per stage, {args.repeat} repeat(s)"
          + (f", baseline {args.baseline} (@base)" if args.baseline else ""))
    raw_cpu = _median([c for _, c in results["raw"]])
    print(f"{'run':<16}{'events/s':>12}{'per CPU-s':>12}{'vs raw':>9}   per CPU-s of each repeat")
    for name, rates in results.items():
        wall, cpu = _median([w for w, _ in rates]), _median([c for _, c in rates])
        each = ", ".join(f"{c:,.0f}" for _, c in rates)
        print(f"{name:<16}{wall:>12,.0f}{cpu:>12,.0f}{cpu / raw_cpu:>9.3f}   {each}")
    for name in ("normalize", "correlate"):
        other = results.get(f"{name}@base")
        if other:
            pairs = [a[1] / b[1] for a, b in zip(results[name], other, strict=False)]
            print(f"{name}: {_median(pairs):.2f}x the baseline per CPU-second (median of "
                  f"{len(pairs)} interleaved pairs: {', '.join(f'{x:.2f}' for x in pairs)})")


if __name__ == "__main__":
    sys.exit(main())
