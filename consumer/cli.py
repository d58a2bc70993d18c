"""vmevents: run the stages, or use the pure core offline on files of vendor events.

Exit codes: 0 done; 1 a Kafka error, or lines rejected under normalize --strict; 2 a
configuration or input error; 70 an unexpected error (a bug): one redacted line with a crash id,
the traceback (redacted) only with VMEVENTS_LOG_LEVEL=debug.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from operator import itemgetter
from typing import BinaryIO

import orjson
import structlog

from consumer import __version__, dlq, tail
from consumer.config import Settings, load_settings
from consumer.errors import ConfigError, InputError, KafkaRuntimeError, OutOfScope, RejectedEvent
from consumer.jsonout import timestamp_fields, to_json_line
from consumer.logs import configure
from consumer.model import InstanceEvent
from consumer.normalization import Normalizer
from consumer.redact import redact
from consumer.serde import load_schemas

STAGES = ("normalize", "correlate")
UNEXPECTED_ERROR = 70
"""Exit code of an error no code path expected (``EX_SOFTWARE`` of sysexits.h)."""
MAX_ERROR_LINE = 500

log = structlog.get_logger(__name__)


@contextmanager
def _open_input(path: str) -> Iterator[BinaryIO]:
    if path == "-":
        yield sys.stdin.buffer
        return
    try:
        f = open(path, "rb")  # noqa: SIM115  (closed below; errors inside the body are not ours)
    except OSError as exc:
        raise InputError(f"cannot read {path}: {exc.strerror}") from None
    with f:
        yield f


def _normalizer(settings: Settings) -> Normalizer:
    return Normalizer(default_timezone=settings.default_timezone,
                      max_payload_bytes=settings.max_message_bytes,
                      min_event_time_ms=settings.min_event_time_ms,
                      max_future_ms=settings.max_future_days * 86_400_000)


def _report(lineno: int, exc: RejectedEvent) -> None:
    """One JSON line on stderr for an input line that gave no event (out of scope names its vendor)."""
    report: dict[str, object] = {"line": lineno, "reason": exc.reason, "error": str(exc)}
    if isinstance(exc, OutOfScope):
        report["vendor"] = exc.vendor
    sys.stderr.buffer.write(orjson.dumps(report) + b"\n")


def cmd_normalize(args: argparse.Namespace, settings: Settings) -> int:
    """Raw vendor events (JSON lines) -> normalized records (JSON lines); rejects on stderr.

    No line ends the command: every rejection (and every out-of-scope event, which is not one)
    is one JSON line on stderr naming the input line. A payload without an event time gets the
    time its line was read, and says so in its attributes.
    """
    normalizer = _normalizer(settings)
    ts = timestamp_fields(load_schemas(settings.schema_dir)["InstanceEvent"].raw)
    out = sys.stdout.buffer
    bad = 0
    with _open_input(args.file) as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                events = normalizer.normalize_all(line)
            except RejectedEvent as exc:
                bad += not isinstance(exc, OutOfScope)  # out of scope is not a rejection
                _report(lineno, exc)
                continue
            for event in events:
                out.write(to_json_line(event, ts))
    out.flush()
    return 1 if bad and args.strict else 0


def cmd_correlate(args: argparse.Namespace, settings: Settings) -> int:
    """Raw vendor events (JSON lines, any vendors) -> operation outcomes (JSON lines).

    The whole input is at hand, so the notifications are correlated in event-time order, the
    order in which the stage's reorder buffer releases them online: the output does not depend
    on the order of the lines, and equals the stage's whenever the stream's disorder stays within
    the allowed lateness. Time is the input's own (deadlines are event times). At the end the
    watermark moves to the newest event time: operations past their deadline by then are
    reported timed_out, the rest are listed on stderr as pending, with ISO-8601 times.
    """
    from consumer.correlator import (
        PENDING_TIME_FIELDS,
        Correlator,
        correlator_config,
        release_key,
    )

    normalizer = _normalizer(settings)
    ts = timestamp_fields(load_schemas(settings.schema_dir)["OperationOutcome"].raw)
    events: list[tuple[tuple[int, int, str], InstanceEvent]] = []
    with _open_input(args.file) as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                normalized = normalizer.normalize_all(line)
            except RejectedEvent as exc:
                _report(lineno, exc)
                continue
            events.extend((release_key(event), event) for event in normalized)
    # Equal keys are equal notifications (the key ends with a digest of the content): a stable
    # sort on the key alone makes the order of the lines irrelevant.
    events.sort(key=itemgetter(0))
    clock = [0]
    correlator = Correlator(correlator_config(settings), clock=lambda: clock[0])
    out = sys.stdout.buffer
    for (t, _, _), event in events:
        clock[0] = t  # sorted: the newest time so far, the input's own processing clock
        for outcome in correlator.process(event):
            out.write(to_json_line(outcome, ts))
    for outcome in correlator.flush():
        out.write(to_json_line(outcome, ts))
    out.flush()
    pending = correlator.pending_operations()
    for op in pending:
        sys.stderr.buffer.write(to_json_line(op, PENDING_TIME_FIELDS))
    if pending:
        noun = "operation" if len(pending) == 1 else "operations"
        print(f"vmevents: {len(pending)} {noun} still pending at the end of the input",
              file=sys.stderr)
    return 0


def cmd_replay(args: argparse.Namespace, settings: Settings) -> int:
    """Produce a file of raw vendor events to the raw topic, one record per line."""
    from consumer.runtime.clients import check_reachable, ensure_topics, produce_all

    topic = args.topic or settings.raw_topics[0]
    with _open_input(args.file) as f:
        lines = [ln.rstrip(b"\n") for ln in f.read().splitlines() if ln.strip()]
    if args.via:
        from consumer.ingest.push import push_lines

        token = os.environ.get("VMEVENTS_PUSH_TOKEN", "")
        if not token:
            raise ConfigError("replay --via needs VMEVENTS_PUSH_TOKEN (a token of the ingest "
                              "route's VMEVENTS_INGEST_GENERIC_TOKENS)")
        return push_lines(lines * args.repeat, args.via, token, f"replay -> {args.via}")
    check_reachable(settings)
    if settings.create_topics:
        ensure_topics(settings, {topic: {}})
    total = len(lines) * args.repeat
    # Lines 1 ms apart, the last one now: the stages read partitions aligned by record
    # timestamp, so the file's order is the order they process it in, run after run.
    left = produce_all(settings, topic, (line for _ in range(args.repeat) for line in lines),
                       total, f"replay -> {topic}",
                       first_timestamp_ms=time.time_ns() // 1_000_000 - total)
    if left:
        print(f"vmevents: {left} records not delivered to {topic}", file=sys.stderr)
        return 1
    return 0


def cmd_run(args: argparse.Namespace, settings: Settings) -> int:
    from consumer.app import LOOPS, run_stage

    if args.stage:
        if args.stage not in LOOPS:
            raise ConfigError(f"stage {args.stage!r} is not available")
        run_stage(args.stage, settings)
        return 0
    return _run_all([s for s in STAGES if s in LOOPS], settings)


def _run_all(stages: Sequence[str], settings: Settings) -> int:
    """Each stage in its own process (one registry, one port each), stopped together."""
    children = []
    for i, stage in enumerate(stages):
        env = {**os.environ, "VMEVENTS_METRICS_PORT": str(settings.metrics_port + i)}
        # Own process group: a terminal's Ctrl-C reaches the children once, through forward(),
        # not twice (a second signal makes a stage exit at once, see consumer/signals.py).
        children.append(subprocess.Popen(
            [sys.executable, "-m", "consumer.cli", "run", "--stage", stage], env=env,
            process_group=0))

    def forward(signum: int, frame: object) -> None:
        for child in children:
            if child.poll() is None:
                child.send_signal(signum)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    code = 0
    while children:
        for child in list(children):
            rc = child.poll()
            if rc is None:
                continue
            children.remove(child)
            if rc != 0:
                code = rc
                forward(signal.SIGTERM, None)  # one stage died: stop the others too
        time.sleep(0.2)
    return code


def cmd_agent(args: argparse.Namespace, settings: Settings) -> int:
    """The per-node forwarder (consumer/agent/azure.py); ends on SIGTERM/SIGINT."""
    import threading

    from prometheus_client import CollectorRegistry

    from consumer.agent.azure import Agent, AgentConfig, HttpSink, Imds, KafkaSink, Sink
    from consumer.http import Health, HealthServer
    from consumer.signals import receive_signals

    config = AgentConfig.from_env(os.environ, settings.raw_topics[0])
    stop = threading.Event()
    receive_signals(stop, settings.shutdown_timeout_s)
    sink: Sink
    if config.delivery == "http":
        sink = HttpSink(config.http_url, config.http_token, config.http_timeout_s)
    else:
        sink = KafkaSink.from_settings(settings, config.topic)
    registry = CollectorRegistry()
    health = Health(stall_seconds=max(120.0, 10 * config.poll_interval_s))
    server = HealthServer(registry, health, settings.metrics_host, settings.metrics_port).start()
    agent = Agent(config, Imds(config.imds_url, config.imds_timeout_s), sink, registry=registry)
    health.ready = True
    try:
        agent.run(stop, tick=health.tick)
    finally:
        server.stop()
    return 0


def cmd_ingest(args: argparse.Namespace, settings: Settings) -> int:
    """The HTTP front door: vendors push here; what they send is written to the raw topic."""
    from consumer.ingest.main import run_ingest

    return run_ingest(settings)


def build_parser() -> argparse.ArgumentParser:
    summary, _, exit_codes = (__doc__ or "").partition("\n\n")
    p = argparse.ArgumentParser(prog="vmevents", description=summary, epilog=exit_codes)
    p.add_argument("--version", action="version", version=f"vmevents {__version__}")
    sub = p.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run the stages against Kafka (both by default)")
    run.add_argument("--stage", choices=STAGES, help="run one stage only (how Kubernetes runs it)")
    run.set_defaults(func=cmd_run)
    norm = sub.add_parser("normalize", help="normalize raw vendor events offline (JSON lines)")
    norm.add_argument("file", nargs="?", default="-", help="input file, '-' for stdin")
    norm.add_argument("--strict", action="store_true", help="exit 1 when any line was rejected")
    norm.set_defaults(func=cmd_normalize)
    cor = sub.add_parser("correlate", help="correlate raw vendor events offline into outcomes")
    cor.add_argument("file", nargs="?", default="-", help="input file, '-' for stdin")
    cor.set_defaults(func=cmd_correlate)
    rep = sub.add_parser("replay", help="produce a file of raw vendor events to the raw topic")
    rep.add_argument("file")
    rep.add_argument("--topic", help="default: the first of VMEVENTS_RAW_TOPICS")
    rep.add_argument("--repeat", type=int, default=1, help="send the file this many times")
    rep.add_argument("--via", metavar="URL",
                     help="send each line over HTTP to `vmevents ingest` at URL (its generic "
                          "route, bearer token from VMEVENTS_PUSH_TOKEN) instead of to Kafka")
    rep.set_defaults(func=cmd_replay)
    ing = sub.add_parser("ingest", help="the HTTP front door vendors push events to (see README)",
                         description=cmd_ingest.__doc__)
    ing.set_defaults(func=cmd_ingest)
    tl = sub.add_parser("tail", help="print records of our topics as JSON lines (Avro decoded)",
                        description=tail.cmd_tail.__doc__)
    tail.add_arguments(tl)
    tl.set_defaults(func=tail.cmd_tail)
    dl = sub.add_parser("dlq", help="list the dead letter topic by reason, or re-drive records",
                        description=dlq.cmd_dlq.__doc__)
    dlq.add_arguments(dl)
    dl.set_defaults(func=dlq.cmd_dlq)
    ag = sub.add_parser("agent", help="run a per-node forwarder (azure: IMDS Scheduled Events)",
                        description=cmd_agent.__doc__)
    ag.add_argument("vendor", choices=("azure",))
    ag.set_defaults(func=cmd_agent)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        settings = load_settings()
        configure(settings.log_format, settings.log_level, settings.secret_values())
        return int(args.func(args, settings))
    except ConfigError as exc:
        print(f"vmevents: configuration error: {redact(str(exc))}", file=sys.stderr)
        return 2
    except InputError as exc:
        print(f"vmevents: {exc}", file=sys.stderr)
        return 2
    except KafkaRuntimeError as exc:
        print(f"vmevents: {redact(str(exc))}", file=sys.stderr)
        return 1
    except BrokenPipeError:
        return 0
    except Exception as exc:
        return _unexpected(exc)


def _unexpected(exc: Exception) -> int:
    """A bug, not a condition we know: one redacted line on stderr, never a raw traceback,
    which could show a secret the message carried; the crash id finds its traceback, logged
    redacted at debug level."""
    crash_id = uuid.uuid4().hex[:12]
    message = " ".join(redact(str(exc)).split())
    if len(message) > MAX_ERROR_LINE:
        message = message[: MAX_ERROR_LINE - 3] + "..."
    print(f"vmevents: unexpected error (crash id {crash_id}): {type(exc).__name__}: {message}; "
          "VMEVENTS_LOG_LEVEL=debug logs its traceback", file=sys.stderr)
    if structlog.is_configured():  # else the defaults would print it, unredacted, at any level
        log.debug("unexpected error", crash_id=crash_id, exc_info=exc)
    return UNEXPECTED_ERROR


if __name__ == "__main__":
    sys.exit(main())
