"""``make bench-ingest``: requests/s per CPU-second and latency of ``vmevents ingest``.

`vmevents ingest` runs as a child process pinned to one CPU (its librdkafka threads included);
the load generator runs in this process, pinned to another CPU when there is one, and speaks
HTTP/1.1 over keep-alive connections on loopback. Two workloads:

- ``single``: one EventBridge event per request (the API-destination route, API-key header);
- ``batch``: an Event Grid delivery of ``--batch`` events per request (one record each).

For each, two runs:

1. **capacity**: ``--connections`` clients send as fast as they are answered for ``--seconds``;
   printed: requests/s and records/s, and both per CPU-second of the ingest process (its
   user+system time from /proc), which is the figure that does not depend on what else the
   machine runs.
2. **steady**: an open-loop schedule at ``--rate`` requests/s (default: half the target of 5,000,
   i.e. 2,500/s) for ``--seconds``; latency is from each request's scheduled send time to its 2xx
   (so a stall delays every request behind it and is counted, not hidden), the broker's
   acknowledgement included (ingest answers 2xx only after it). Printed: p50, p99, max, and
   the same quantiles from ingest's own latency histogram (request in to answer out, bucket
   bounds): the client's figures include the load generator's own delays on a busy machine,
   the server's do not.

The broker is the one ``KAFKA_BOOTSTRAP_SERVERS`` names, else the project's local stack, started
and stopped here. Numbers only: nothing here asserts a time.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import os
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import cast

from consumer.bench import local_broker
from consumer.config import load_settings

ROOT = Path(__file__).resolve().parent.parent
KEY = "bench-key-0123456789abcdef"
CLK_TCK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100

EVENT = json.dumps({
    "version": "0", "id": "7bf73129-1428-4cd3-a780-95db273d1602",
    "detail-type": "EC2 Instance State-change Notification", "source": "aws.ec2",
    "account": "123456789012", "time": "2021-11-11T21:29:54Z", "region": "us-east-1",
    "resources": ["arn:aws:ec2:us-east-1:123456789012:instance/i-abcd1111"],
    "detail": {"instance-id": "i-abcd1111", "state": "pending"}}).encode()


def grid_event(i: int) -> bytes:
    return json.dumps({
        "id": f"{uuid.uuid4()}", "topic": "/subscriptions/sub-1",
        "subject": f"/subscriptions/sub-1/resourceGroups/rg/providers/Microsoft.Compute/"
                   f"virtualMachines/vm-{i}",
        "eventType": "Microsoft.ResourceNotifications.MaintenanceResources.ScheduledEventEmitted",
        "eventTime": "2025-01-01T00:00:00Z", "dataVersion": "1", "metadataVersion": "1",
        "data": {"resourceInfo": {"name": f"EventId-{i}", "properties": {"EventType": "Reboot",
                                                                        "EventStatus": "Scheduled"}}}
    }).encode()


@dataclass(frozen=True)
class Workload:
    name: str
    path: str
    headers: dict[str, str]
    body: bytes
    records: int

    def request(self) -> bytes:
        head = [f"POST {self.path} HTTP/1.1", "Host: 127.0.0.1",
                f"Content-Length: {len(self.body)}", "Content-Type: application/json",
                *(f"{k}: {v}" for k, v in self.headers.items())]
        return ("\r\n".join(head) + "\r\n\r\n").encode() + self.body


def workloads(batch: int) -> list[Workload]:
    grid = b"[" + b",".join(grid_event(i) for i in range(batch)) + b"]"
    return [Workload("single", "/aws/eventbridge", {"x-api-key": KEY}, EVENT, 1),
            Workload("batch", f"/azure/eventgrid?code={KEY}", {"aeg-event-type": "Notification"},
                     grid, batch)]


class Connection(asyncio.Protocol):
    """One keep-alive HTTP/1.1 connection, one request at a time."""

    def __init__(self) -> None:
        self.buffer = b""
        self.waiter: asyncio.Future[int] | None = None
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        end = self.buffer.find(b"\r\n\r\n")
        if end < 0:
            return
        head = self.buffer[:end].decode("latin-1")
        length = 0
        for line in head.split("\r\n")[1:]:
            name, _, value = line.partition(":")
            if name.lower() == "content-length":
                length = int(value)
        if len(self.buffer) < end + 4 + length:
            return
        self.buffer = self.buffer[end + 4 + length:]
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_result(int(head.split(" ", 2)[1]))

    def connection_lost(self, exc: Exception | None) -> None:
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_exception(ConnectionError("closed"))

    async def send(self, data: bytes) -> int:
        self.waiter = asyncio.get_running_loop().create_future()
        assert self.transport is not None
        self.transport.write(data)
        return await self.waiter


async def _connect(port: int, n: int) -> list[Connection]:
    loop = asyncio.get_running_loop()
    conns = []
    for _ in range(n):
        _, proto = await loop.create_connection(Connection, "127.0.0.1", port)
        conns.append(proto)
    return conns


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK  # utime, stime (all threads)


@dataclass
class Result:
    workload: str
    mode: str
    requests: int
    records: int
    wall_s: float
    cpu_s: float
    statuses: dict[int, int]
    latencies: list[float]
    server_ms: tuple[float, float] | None = None
    """p50/p99 bucket bounds of ingest's own histogram (request in to answer out)."""

    def pct(self, p: float) -> float:
        if not self.latencies:
            return float("nan")
        values = sorted(self.latencies)
        return values[min(len(values) - 1, int(p / 100 * len(values)))] * 1000


async def capacity(port: int, pid: int, work: Workload, connections: int, seconds: float) -> Result:
    conns = await _connect(port, connections)
    data = work.request()
    statuses: collections.Counter[int] = collections.Counter()
    stop = time.perf_counter() + seconds
    cpu0, t0 = cpu_seconds(pid), time.perf_counter()

    async def client(conn: Connection) -> None:
        while time.perf_counter() < stop:
            statuses[await conn.send(data)] += 1

    await asyncio.gather(*(client(c) for c in conns))
    wall, cpu = time.perf_counter() - t0, cpu_seconds(pid) - cpu0
    for c in conns:
        assert c.transport is not None
        c.transport.close()
    ok = sum(n for s, n in statuses.items() if 200 <= s < 300)
    return Result(work.name, "capacity", ok, ok * work.records, wall, cpu, dict(statuses), [])


async def steady(port: int, pid: int, work: Workload, rate: float, seconds: float,
                 connections: int) -> Result:
    conns = await _connect(port, connections)
    free: asyncio.Queue[Connection] = asyncio.Queue()
    for c in conns:
        free.put_nowait(c)
    data = work.request()
    statuses: collections.Counter[int] = collections.Counter()
    latencies: list[float] = []
    total = int(rate * seconds)
    tasks = []
    cpu0, t0 = cpu_seconds(pid), time.perf_counter()

    async def one(scheduled: float) -> None:
        conn = await free.get()
        try:
            status = await conn.send(data)
        finally:
            free.put_nowait(conn)
        statuses[status] += 1
        if 200 <= status < 300:
            latencies.append(time.perf_counter() - scheduled)

    for i in range(total):
        scheduled = t0 + i / rate
        delay = scheduled - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one(scheduled)))
    await asyncio.gather(*tasks)
    wall, cpu = time.perf_counter() - t0, cpu_seconds(pid) - cpu0
    for c in conns:
        assert c.transport is not None
        c.transport.close()
    ok = len(latencies)
    return Result(work.name, f"steady {rate:g}/s", ok, ok * work.records, wall, cpu,
                  dict(statuses), latencies)


def server_histogram(metrics_port: int, route: str) -> dict[float, float]:
    """Cumulative bucket counts of ingest's own request-duration histogram for ``route``."""
    import urllib.request

    url = f"http://127.0.0.1:{metrics_port}/metrics"
    with urllib.request.urlopen(url, timeout=5) as resp:
        text = resp.read().decode()
    out: dict[float, float] = {}
    prefix = "vmevents_ingest_request_duration_seconds_bucket{"
    for line in text.splitlines():
        if line.startswith(prefix) and f'route="{route}"' in line:
            le = line.split('le="', 1)[1].split('"', 1)[0]
            out[float("inf") if le == "+Inf" else float(le)] = float(line.rsplit(" ", 1)[1])
    return out


def histogram_quantile(q: float, before: dict[float, float], after: dict[float, float]) -> float:
    """The bucket bound (ms) under which a fraction ``q`` of the requests between two scrapes
    were answered: Prometheus' histogram_quantile without the interpolation."""
    counts = sorted((le, after[le] - before.get(le, 0.0)) for le in after)
    total = counts[-1][1] if counts else 0.0
    for le, n in counts:
        if total and n >= q * total:
            return le * 1000
    return float("nan")


def start_ingest(topic: str, cpu: int | None, log: Path) -> tuple[subprocess.Popen[bytes], int, int]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("VMEVENTS_")}
    env.update({"VMEVENTS_RAW_TOPICS": topic, "VMEVENTS_INGEST_HOST": "127.0.0.1",
                "VMEVENTS_INGEST_PORT": "0", "VMEVENTS_METRICS_PORT": "0",
                "VMEVENTS_LOG_FORMAT": "json", "VMEVENTS_INGEST_EVENTBRIDGE_API_KEYS": f"bench={KEY}",
                "VMEVENTS_INGEST_EVENTGRID_KEYS": f"bench={KEY}",
                "VMEVENTS_INGEST_MAX_IN_FLIGHT": "5000"})
    cmd = [sys.executable, "-m", "consumer.cli", "ingest"]
    if cpu is not None:
        cmd = ["taskset", "-c", str(cpu), *cmd]
    out = open(log, "wb")  # noqa: SIM115  (the child's, closed when the child exits)
    proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT, cwd=ROOT)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        for line in log.read_bytes().splitlines():
            if b"ingest listening" in line:
                event = json.loads(line)
                return (proc, int(event["ingest"].rsplit(":", 1)[1]),
                        int(event["metrics"].split(":")[2].split("/")[0]))
        if proc.poll() is not None:
            raise SystemExit(f"ingest exited: {log.read_text()[-2000:]}")
        time.sleep(0.1)
    raise SystemExit("ingest did not start within 60 s")


def table(results: Sequence[Result]) -> str:
    rows = [("workload", "run", "requests/s", "records/s", "CPU s", "req/CPU-s", "rec/CPU-s",
             "p50 ms", "p99 ms", "max ms", "server p50/p99 ms", "non-2xx")]
    for r in results:
        bad = sum(n for s, n in r.statuses.items() if not 200 <= s < 300)
        rows.append((r.workload, r.mode, f"{r.requests / r.wall_s:,.0f}",
                     f"{r.records / r.wall_s:,.0f}", f"{r.cpu_s:.1f}",
                     f"{r.requests / r.cpu_s:,.0f}" if r.cpu_s else "-",
                     f"{r.records / r.cpu_s:,.0f}" if r.cpu_s else "-",
                     *((f"{r.pct(50):.1f}", f"{r.pct(99):.1f}", f"{r.pct(100):.1f}")
                       if r.latencies else ("-", "-", "-")),
                     f"<={r.server_ms[0]:g} / <={r.server_ms[1]:g}" if r.server_ms else "-",
                     str(bad)))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(c.rjust(w) for c, w in zip(row, widths, strict=True)) for row in rows)


async def _run(args: argparse.Namespace, port: int, pid: int, metrics_port: int) -> list[Result]:
    results = []
    for work in workloads(args.batch):
        if work.name not in args.workloads:
            continue
        route = "eventbridge" if work.name == "single" else "eventgrid"
        await capacity(port, pid, work, args.connections, min(3.0, args.seconds))  # warm-up
        results.append(await capacity(port, pid, work, args.connections, args.seconds))
        print(table(results[-1:]), file=sys.stderr)
        rate = args.rate if work.name == "single" else args.batch_rate
        before = server_histogram(metrics_port, route)
        result = await steady(port, pid, work, rate, args.seconds, args.steady_connections)
        after = server_histogram(metrics_port, route)
        result.server_ms = (histogram_quantile(0.5, before, after),
                            histogram_quantile(0.99, before, after))
        results.append(result)
        print(table(results[-1:]), file=sys.stderr)
    return results


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="vmevents bench-ingest", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=10.0, help="per run (default 10)")
    parser.add_argument("--connections", type=int, default=64, help="capacity run clients")
    parser.add_argument("--steady-connections", type=int, default=256,
                        help="connection pool of the steady run (default 256)")
    parser.add_argument("--rate", type=float, default=2500.0,
                        help="steady single-event requests/s (default 2,500: half the target)")
    parser.add_argument("--batch", type=int, default=20, help="events per Event Grid delivery")
    parser.add_argument("--batch-rate", type=float, default=250.0,
                        help="steady batched requests/s (default 250, i.e. 5,000 events/s)")
    parser.add_argument("--workloads", default="single,batch")
    args = parser.parse_args(argv)
    cpus = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
    server_cpu = cpus[0] if cpus else None
    if len(cpus) > 1:
        os.sched_setaffinity(0, {cpus[1]})
    try:
        import uvloop
        uvloop.install()
    except ImportError:
        pass
    with local_broker(registry=False), tempfile.TemporaryDirectory() as tmp:
        settings = load_settings()
        from consumer.runtime.clients import ensure_topics

        topic = f"bench-ingest-{uuid.uuid4().hex[:8]}"
        ensure_topics(settings, {topic: {}}, partitions=3)
        proc, port, metrics_port = start_ingest(topic, server_cpu, Path(tmp) / "ingest.log")
        try:
            results = asyncio.run(_run(args, port, proc.pid, metrics_port))
        finally:
            proc.terminate()
            proc.wait(30)
    print()
    print(f"vmevents bench-ingest: ingest pinned to CPU {server_cpu}, load generator on "
          f"{cpus[1] if len(cpus) > 1 else 'the same CPUs'}; {args.seconds:g} s per run; capacity "
          f"with {args.connections} keep-alive connections; steady latency from the scheduled send "
          f"to the 2xx (the broker's ack included); batch = {args.batch} Event Grid events per request")
    print(table(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
