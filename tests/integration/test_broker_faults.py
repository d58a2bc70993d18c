"""Both stages ride out a broker restart on their own: no loss, no duplicate, no stage restart.

Each test starts its OWN Apache Kafka (deploy/local/stack.py in a tmp state dir, free ports),
because it stops and starts that broker; the session broker other tests share is never touched.

The outage lasts about 10-20 s (8 s stopped plus the broker's own start, longer after SIGKILL:
log recovery and the controller's wait for the old broker session). That is longer than every
client timeout that matters here, set low for the test: each blocking client call gives up after
``VMEVENTS_KAFKA_CALL_TIMEOUT_MS=3000`` (and is abandoned 5 s later), transactions time out after
``VMEVENTS_TRANSACTION_TIMEOUT_MS=5000`` (librdkafka caps its message timeout there, so records
of an open transaction time out and the transaction must be aborted), and the consumers' session
timeout is 10 s. So a short outage exercises what a production one of minutes does (the issue's
30 s outage would only add waiting).

The broker is stopped (SIGTERM: a controlled shutdown) or killed (SIGKILL: a crash) mid-stream,
at a moment a transaction of the normalize stage is seen open on the broker (records above the
last stable offset; batches of 20,000 keep one open about a second). After each, read_committed
readers must see every raw record exactly once in normalized-or-DLQ and every operation exactly
once on the derived topics; a batch must have been redone; both stages' /readyz must have gone
503 and come back to 200, with one log line each way; and a final SIGTERM must end both within
15 s. A further test sends SIGTERM while the broker is down. The measured pause and the number
of records written twice (aborted copies that read_committed readers never see) are printed.
"""

from __future__ import annotations

import signal
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import orjson
import pytest
from confluent_kafka import Consumer, TopicPartition

from consumer import synthetic
from consumer.config import load_settings
from consumer.serde import Decoder, load_schemas
from tests.conftest import _load_stack_module, _require_full_stack
from tests.integration.kafkatools import (
    committed_total,
    create_topics,
    produce,
    read_all,
    stage_env,
    start_stage,
    unique,
)
from tests.integration.test_correlate_stage import op_key, outcome_topics
from tests.integration.test_normalize_stage import coordinates, wait_for

OPS = 40_000  # 80,000 raw records, in batches of 20,000: a transaction stays open ~1 s
OUTAGE_SECONDS = 8.0
FAST_TIMEOUTS = {
    "VMEVENTS_KAFKA_CALL_TIMEOUT_MS": "3000",
    "VMEVENTS_TRANSACTION_TIMEOUT_MS": "5000",
    "VMEVENTS_SHUTDOWN_TIMEOUT_S": "12",
    "VMEVENTS_CORRELATE_ALLOWED_LATENESS": "5s",  # the quiet tail is released 5 s after
}


@dataclass
class OwnBroker:
    """A broker this module may stop and start, with its data kept."""

    stack: ModuleType
    state_dir: Path
    bootstrap: str

    def stop(self, *, kill: bool) -> None:
        self.stack.stop_broker(self.state_dir, kill=kill)

    def start(self) -> None:
        self.stack.start_broker(self.state_dir, attached=True)


@pytest.fixture(scope="module")
def own_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OwnBroker]:
    stack = _load_stack_module()
    if not stack.apache_available(registry=False):
        reason = "stopping a broker needs an own Apache Kafka (Java 17+ and Maven or a fetched cache)"
        if _require_full_stack():
            pytest.fail(f"VMEVENTS_REQUIRE_FULL_STACK=1 but: {reason}", pytrace=False)
        pytest.skip(reason)
    state_dir = tmp_path_factory.mktemp("fault-broker")
    info = stack.up(state_dir, attached=True)
    try:
        yield OwnBroker(stack, state_dir, info.bootstrap)
    finally:
        stack.down(state_dir, quiet=True)


class ReadinessWatch:
    """Polls a stage's /readyz every 100 ms from a thread; remembers every status it saw, in order."""

    def __init__(self, log: Path) -> None:
        self.log = log
        self.seen: list[int] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)

    def start(self, proc: subprocess.Popen[bytes]) -> ReadinessWatch:
        wait_for(lambda: self._port() is not None, 60, f"the HTTP port in {self.log.name}", proc)
        self._thread.start()
        return self

    def _port(self) -> int | None:
        for event in log_events(self.log):
            if event.get("event") == "http server listening":
                return int(str(event["metrics"]).split(":")[2].split("/")[0])
        return None

    def _poll(self) -> None:
        url = f"http://127.0.0.1:{self._port()}/readyz"
        while not self._stop.wait(0.1):
            try:
                with urllib.request.urlopen(url, timeout=2) as response:
                    status = int(response.status)
            except urllib.error.HTTPError as exc:
                status = exc.code
            except OSError:
                continue  # the process is going away
            if not self.seen or self.seen[-1] != status:
                self.seen.append(status)

    def went_down_and_came_back(self) -> bool:
        """200 (ready), then 503 (the outage), then 200 again."""
        text = "".join("u" if s == 200 else "d" for s in self.seen)
        return "udu" in text

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)


def log_events(path: Path) -> list[dict[str, Any]]:
    events = []
    for line in path.read_bytes().splitlines():
        try:
            event = orjson.loads(line)
        except orjson.JSONDecodeError:
            continue  # librdkafka or Python writing outside structlog
        if isinstance(event, dict):
            events.append(event)
    return events


class OpenTransactions:
    """Sees a transaction open on a topic: records above the last stable offset of a partition."""

    def __init__(self, bootstrap: str, topic: str, partitions: int) -> None:
        self.tps = [TopicPartition(topic, p) for p in range(partitions)]
        self.readers = [Consumer({"bootstrap.servers": bootstrap, "group.id": unique("lso"),
                                  "isolation.level": isolation})
                        for isolation in ("read_uncommitted", "read_committed")]

    def __call__(self) -> bool:
        ends = [[reader.get_watermark_offsets(tp, timeout=5, cached=False)[1] for tp in self.tps]
                for reader in self.readers]
        return any(high > stable for high, stable in zip(ends[0], ends[1], strict=True))

    def close(self) -> None:
        for reader in self.readers:
            reader.close()


def resume_times(groups: dict[str, tuple[str, str]], before: dict[str, int], bootstrap: str,
                 since: float, procs: dict[str, subprocess.Popen[bytes]]) -> dict[str, float]:
    """Seconds from ``since`` until each stage's group commits beyond ``before``.

    An upper bound for correlate: it may also be waiting for normalize's output.
    """
    resumed: dict[str, float] = {}

    def check() -> bool:
        for stage, (group, topic) in groups.items():
            if stage not in resumed and committed_total(bootstrap, group, topic) > before[stage]:
                resumed[stage] = time.monotonic() - since
        return len(resumed) == len(groups)

    def check_alive() -> bool:
        for stage, proc in procs.items():
            if proc.poll() is not None:
                raise AssertionError(f"{stage} exited with {proc.returncode}")
        return check()

    wait_for(check_alive, 90, f"both stages committing again (so far {resumed})")
    return resumed


@pytest.mark.parametrize("fault", ["sigterm", "sigkill"])
def test_stages_ride_out_a_broker_restart(own_broker: OwnBroker, tmp_path: Path, fault: str) -> None:
    bootstrap = own_broker.bootstrap
    raw, normalized, dlq, changelog = unique("raw"), unique("normalized"), unique("dlq"), unique("changelog")
    prefix = f"{unique('out')}."
    create_topics(bootstrap, {raw: 3, normalized: 3, dlq: 1})
    create_topics(bootstrap, {changelog: 3}, {"cleanup.policy": "compact"})
    ops = synthetic.operations(OPS, instances=500, seed=5)
    total = produce(bootstrap, raw, synthetic.keyed_stream(ops, late_start=0.1))
    norm_group, corr_group = unique("norm"), unique("corr")
    common = {"VMEVENTS_RAW_TOPICS": raw, "VMEVENTS_NORMALIZED_TOPIC": normalized,
              "VMEVENTS_DLQ_TOPIC": dlq, "VMEVENTS_CHANGELOG_TOPIC": changelog,
              "VMEVENTS_OUTCOME_TOPIC_PREFIX": prefix, "VMEVENTS_NORMALIZE_GROUP": norm_group,
              "VMEVENTS_CORRELATE_GROUP": corr_group,
              "VMEVENTS_BATCH_SIZE": "20000",
              **FAST_TIMEOUTS}
    logs = {stage: tmp_path / f"{stage}.log" for stage in ("normalize", "correlate")}
    procs = {stage: start_stage(stage, stage_env(bootstrap, **common), logs[stage]) for stage in logs}
    watches = {stage: ReadinessWatch(logs[stage]).start(procs[stage]) for stage in logs}
    try:
        wait_for(lambda: committed_total(bootstrap, norm_group, raw) >= total // 5, 120,
                 "a fifth of the raw records normalized", procs["normalize"])
        open_transaction = OpenTransactions(bootstrap, normalized, 3)
        try:
            wait_for(open_transaction, 60, "an open transaction on the normalized topic",
                     procs["normalize"])
        finally:
            open_transaction.close()
        groups = {"normalize": (norm_group, raw), "correlate": (corr_group, normalized)}
        before = {stage: committed_total(bootstrap, *pair) for stage, pair in groups.items()}
        stopped_at = time.monotonic()
        own_broker.stop(kill=fault != "sigterm")
        time.sleep(OUTAGE_SECONDS)
        own_broker.start()
        back_at = time.monotonic()
        resumed = resume_times(groups, before, bootstrap, back_at, procs)
        wait_for(lambda: committed_total(bootstrap, norm_group, raw) >= total, 180,
                 "every raw record normalized", procs["normalize"])
        wait_for(lambda: committed_total(bootstrap, corr_group, normalized) >= total, 180,
                 "every normalized record correlated", procs["correlate"])
        # The reorder buffer's tail is released once the partition is quiet for the lateness.
        time.sleep(int(FAST_TIMEOUTS["VMEVENTS_CORRELATE_ALLOWED_LATENESS"].rstrip("s")) + 3)
    finally:
        for watch in watches.values():
            watch.stop()
        exits = {}
        for proc in procs.values():
            proc.send_signal(signal.SIGTERM)
        for stage, proc in procs.items():
            try:
                exits[stage] = proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
                exits[stage] = None
    assert exits == {"normalize": 0, "correlate": 0}, (
        f"exit codes {exits} (None: still running 15 s after SIGTERM); "
        f"{logs['normalize'].read_text()[-2000:]}{logs['correlate'].read_text()[-2000:]}")

    out = read_all(bootstrap, [normalized], expected=total, settle=1)
    dead = read_all(bootstrap, [dlq], settle=1)
    seen = coordinates(out, dead)
    raw_records = read_all(bootstrap, [raw], expected=total, isolation="read_uncommitted", settle=1)
    assert seen == Counter((m.partition(), m.offset()) for m in raw_records)

    decoder = Decoder(load_schemas(load_settings({}).schema_dir))
    outcomes = [decoder.decode(m.value())
                for m in read_all(bootstrap, outcome_topics(bootstrap, prefix), expected=OPS, settle=2)]
    # An operation alerted timed_out before its end arrived is followed by its real outcome
    # (after_timeout): one operation, two records. Every other operation exactly once.
    finals = [o for o in outcomes if o["outcome"] != "timed_out"]
    counts = Counter((op_key(o), o["started_at"]) for o in finals)
    assert [k for k, n in counts.items() if n > 1] == []
    assert len(counts) == OPS
    alerts = Counter((op_key(o), o["started_at"]) for o in outcomes if o["outcome"] == "timed_out")
    late = Counter((op_key(o), o["started_at"]) for o in finals if o["after_timeout"])
    assert alerts == late

    for stage, watch in watches.items():
        assert watch.went_down_and_came_back(), f"{stage} /readyz statuses: {watch.seen}"
    events = {stage: log_events(path) for stage, path in logs.items()}
    for stage, stage_events in events.items():
        names = [e["event"] for e in stage_events]
        assert names.count("broker unreachable: processing paused, retrying until it is back") == 1, stage
        assert names.count("broker reachable again: processing resumes") == 1, stage
        assert any(e["event"] == "stage stopped" and e["last_transaction"] == "committed"
                   for e in stage_events), stage
    redone = [e for e in events["normalize"]
              if e["event"].startswith(("transaction aborted", "producer replaced"))]
    assert redone, "the broker went down between transactions: nothing was redone"

    written = read_all(bootstrap, [normalized], expected=total, isolation="read_uncommitted", settle=1)
    gone = [e["outage_seconds"] for e in events["normalize"] if "outage_seconds" in e]
    redone_corr = [e for e in events["correlate"]
                   if e["event"].startswith(("transaction aborted", "producer replaced"))]
    print(f"\n[{fault}] broker away {back_at - stopped_at:.1f}s; first commit after it was back: "
          f"normalize +{resumed['normalize']:.1f}s, correlate +{resumed['correlate']:.1f}s "
          f"(normalize logged an outage of {gone[0]}s); batches redone: normalize {len(redone)}, "
          f"correlate {len(redone_corr)}; {len(written) - len(out)} of {total} normalized records "
          f"were written twice, the copy in an aborted transaction hidden from read_committed")


def test_sigterm_while_the_broker_is_down_ends_both_stages_in_time(own_broker: OwnBroker,
                                                                   tmp_path: Path) -> None:
    """Item 6: SIGTERM is honoured with the broker gone (where the stage used to hang)."""
    bootstrap = own_broker.bootstrap
    raw, normalized, changelog = unique("raw"), unique("normalized"), unique("changelog")
    create_topics(bootstrap, {raw: 3, normalized: 3})
    create_topics(bootstrap, {changelog: 3}, {"cleanup.policy": "compact"})
    total = produce(bootstrap, raw, synthetic.keyed_stream(synthetic.operations(2000, seed=9)))
    norm_group = unique("norm")
    common = {"VMEVENTS_RAW_TOPICS": raw, "VMEVENTS_NORMALIZED_TOPIC": normalized,
              "VMEVENTS_DLQ_TOPIC": unique("dlq"), "VMEVENTS_CHANGELOG_TOPIC": changelog,
              "VMEVENTS_OUTCOME_TOPIC_PREFIX": f"{unique('out')}.",
              "VMEVENTS_NORMALIZE_GROUP": norm_group, "VMEVENTS_CORRELATE_GROUP": unique("corr"),
              **FAST_TIMEOUTS}
    logs = {stage: tmp_path / f"{stage}.log" for stage in ("normalize", "correlate")}
    procs = {stage: start_stage(stage, stage_env(bootstrap, **common), logs[stage]) for stage in logs}
    try:
        wait_for(lambda: committed_total(bootstrap, norm_group, raw) >= total, 120,
                 "the raw records normalized", procs["normalize"])
        own_broker.stop(kill=True)

        def both_saw_it() -> bool:
            return all(any(e["event"].startswith("broker unreachable") for e in log_events(path))
                       for path in logs.values())

        wait_for(both_saw_it, 60, "both stages to see the outage")
        for proc in procs.values():
            proc.send_signal(signal.SIGTERM)
        exits = {}
        for stage, proc in procs.items():
            try:
                exits[stage] = proc.wait(15)
            except subprocess.TimeoutExpired:
                exits[stage] = None
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        own_broker.start()
    assert None not in exits.values(), f"still running 15 s after SIGTERM: {exits}"
    for stage, path in logs.items():
        stopped = [e for e in log_events(path) if e["event"] == "stage stopped"]
        forced = [e for e in log_events(path) if e["event"].startswith("shutdown did not finish")]
        assert stopped or forced, f"{stage} said nothing about its last transaction"
        if stopped:
            print(f"\n[{stage}] exit {exits[stage]}; last transaction: {stopped[0]['last_transaction']}")
