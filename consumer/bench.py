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


def _measure(kinds: list[tuple[str, Settings, int]], total: int, label: str) -> float:
    """Start one child per (kind, settings, cpu); wait until the last kind processed ``total``."""
    ctx = mp.get_context("spawn")
    stop = ctx.Event()
    shared = []
    procs = []
    for kind, settings, cpu in kinds:
        counter, first = ctx.Value("q", 0), ctx.Value("d", 0.0)
        p = ctx.Process(target=stage_child, args=(kind, settings, counter, first, stop, cpu))
        p.start()
        shared.append((counter, first))
        procs.append(p)
    progress = Progress(f"bench {label}", total=total)
    last_counter, _ = shared[-1]
    first_counter = shared[0][1]
    try:
        while last_counter.value < total:
            if not all(p.is_alive() for p in procs):
                raise SystemExit(f"bench {label}: a stage process died")
            progress.done = last_counter.value
            progress.advance(0)
            time.sleep(0.02)
        elapsed = time.perf_counter() - float(first_counter.value)
    finally:
        progress.done = last_counter.value
        progress.close()
        stop.set()
        for p in procs:
            p.join(30)
            if p.is_alive():
                p.kill()
    return total / elapsed


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
    parser.add_argument("--registry", action="store_true",
                        help="use SCHEMA_REGISTRY_URL (Confluent framing) instead of single-object")
    args = parser.parse_args(argv)
    with local_broker():
        return _run(args)


def _run(args: argparse.Namespace) -> int:
    from consumer import synthetic

    base = load_settings()
    if not args.registry:
        base = replace(base, schema_registry_url=None)
    run = uuid.uuid4().hex[:8]
    cpus = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else [0]
    second_cpu = cpus[1] if len(cpus) > 1 else cpus[0]

    def settings(**kw: Any) -> Settings:
        return replace(base, guarantee=args.guarantee, batch_size=args.batch_size,
                       topic_partitions=args.partitions, create_topics=True,
                       transactional_id=None, **kw)

    ops = synthetic.operations(args.events // 2, instances=5000)
    payloads = synthetic.stream(ops)
    raw_topic = f"bench.{run}.raw"
    _produce(base, raw_topic, payloads, args.partitions)
    n = len(payloads)
    results: dict[str, float] = {}
    results["raw"] = _measure([("raw", settings(
        raw_topics=(raw_topic,), normalized_topic=f"bench.{run}.copy",
        normalize_group=f"bench-{run}-raw"), cpus[0])], n, "raw")
    norm = settings(raw_topics=(raw_topic,), normalized_topic=f"bench.{run}.normalized",
                    dlq_topic=f"bench.{run}.dlq", normalize_group=f"bench-{run}-normalize")
    results["normalize"] = _measure([("normalize", norm, cpus[0])], n, "normalize")
    corr = settings(normalized_topic=norm.normalized_topic,
                    changelog_topic=f"bench.{run}.changelog", outcome_topic_prefix=f"bench.{run}.",
                    correlate_group=f"bench-{run}-correlate")
    results["correlate"] = _measure([("correlate", corr, cpus[0])], n, "correlate")
    both_norm = replace(norm, normalized_topic=f"bench.{run}.normalized2",
                        normalize_group=f"bench-{run}-normalize2")
    both_corr = replace(corr, normalized_topic=both_norm.normalized_topic,
                        changelog_topic=f"bench.{run}.changelog2",
                        outcome_topic_prefix=f"bench.{run}.b.",
                        correlate_group=f"bench-{run}-correlate2")
    results["both"] = _measure([("normalize", both_norm, cpus[0]),
                                ("correlate", both_corr, second_cpu)], n, "both")
    print()
    print(f"vmevents bench: {n} events, {args.partitions} partition(s), batch {args.batch_size}, "
          f"{args.guarantee}, "
          f"{'registry' if args.registry else 'single-object'} encoding, one CPU per stage")
    print(f"{'run':<12}{'events/s':>12}{'vs raw':>10}")
    for name, rate in results.items():
        print(f"{name:<12}{rate:>12,.0f}{rate / results['raw']:>10.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
