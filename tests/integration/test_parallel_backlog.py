"""A messy backlog through parallel, killed stages equals the offline answer, record for record.

Issue 15's third "done when": a generated backlog (``synthetic.messy_backlog``: 10,000
instances, about 25,000 operations of several kinds per instance, Alibaba StateChange lifecycles
without event ids, scheduled maintenance with every ending, JD and Alibaba failure reboots, 5% of
the ends delivered twice) lies on 6 raw partitions BEFORE any stage starts, each partition in
event-time order but with record timestamps drifting a minute per partition apart. Two normalize
processes consume it at different paces (B joins later, with small batches, i.e. many more
transactions) into one correlate process; each of the three is SIGKILLed once mid-run and
restarted. When everything is consumed and the reorder buffers have been quiet past the allowed
lateness, every derived outcome topic (read_committed) must equal ``vmevents correlate`` on the
same raw file with the same settings: the same multiset of outcome records, processing fields
(``decided_at``, ``sources``) aside. No extra, none lost, none doubled, none different.

On a mismatch the failure names the counts of lost / extra / doubled / wrong records per
operation and a few examples of each. Before the progress marks (watermark per partition, JD and
lifecycle notifications held for the lateness) 17,970 of 26,720 were right, with 2,365 lost,
5,840 extra and 6,385 wrong; with them, 26,720 of 26,720. About 80 to 100 s on 2 shared cores,
plus the session broker's start.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest
from confluent_kafka import Consumer, KafkaException, TopicPartition

from consumer import synthetic
from consumer.config import load_settings
from consumer.jsonout import timestamp_fields
from consumer.serde import Decoder, load_schemas
from tests.integration.kafkatools import (
    ROOT,
    committed_total,
    create_topics,
    produce,
    read_all,
    stage_env,
    start_stage,
    unique,
)
from tests.integration.test_aligned_backlog import comparable
from tests.integration.test_correlate_stage import outcome_topics
from tests.integration.test_normalize_stage import wait_for

pytestmark = [pytest.mark.kafka, pytest.mark.apache_kafka]

INSTANCES = 10_000
PARTITIONS = 6
LATENESS_S = 20  # a quiet partition releases its reorder buffer this long after its last arrival
SETTINGS = {"VMEVENTS_CORRELATE_ALLOWED_LATENESS": f"{LATENESS_S}s"}
SLOW_BATCH = "100"  # normalize B: a transaction per 100 records, A: the default 2,000


def end_offsets(bootstrap: str, topics: list[str]) -> int:
    """Sum of the read_committed end offsets of ``topics`` (records plus markers)."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": unique("ends"),
                         "isolation.level": "read_committed"})
    try:
        meta = consumer.list_topics(timeout=10).topics
        return sum(consumer.get_watermark_offsets(TopicPartition(t, p), timeout=10,
                                                  cached=False)[1]
                   for t in topics if t in meta for p in meta[t].partitions)
    finally:
        consumer.close()


def identity(record: bytes) -> tuple[Any, ...]:
    """Which operation a record is about, for telling a wrong record from a lost and an extra."""
    o = orjson.loads(record)
    return (o["vendor"], o["instance_id"], o["vendor_event_code"], o["vendor_event_id"],
            o["started_at"] if o["start_known"] else o["finished_at"])


Examples = dict[str, list[tuple[bytes, ...]]]


def mismatch(expected: Counter[bytes], online: Counter[bytes]) -> tuple[dict[str, Counter[str]],
                                                                       Examples]:
    """Expected records missing online and online records not expected, by kind and operation:
    ``wrong`` (the operation is there with other content; one per pair), ``lost``, ``doubled``
    (an expected record more often than expected) and ``extra``; and up to 3 examples of each."""
    missing, surplus = expected - online, online - expected
    by_op: dict[tuple[Any, ...], list[bytes]] = defaultdict(list)
    for record, n in missing.items():
        by_op[identity(record)].extend([record] * n)
    kinds: dict[str, Counter[str]] = {k: Counter() for k in ("lost", "extra", "doubled", "wrong")}
    examples: Examples = {k: [] for k in kinds}

    def count(kind: str, shown: tuple[bytes, ...]) -> None:
        kinds[kind][str(orjson.loads(shown[0])["operation"])] += 1
        if len(examples[kind]) < 3:
            examples[kind].append(shown)

    # A real outcome pairs with its wrong twin before a timed_out alert does.
    for record, n in sorted(surplus.items(), key=lambda item: b'"outcome":"timed_out"' in item[0]):
        for _ in range(n):
            twin = by_op.get(identity(record))
            if twin:
                count("wrong", (twin.pop(), record))
            else:
                count("doubled" if record in expected else "extra", (record,))
    for records in by_op.values():
        for record in records:
            count("lost", (record,))
    return kinds, examples


def summary(expected: Counter[bytes], online: Counter[bytes]) -> str:
    kinds, examples = mismatch(expected, online)
    lines = [f"expected {expected.total()} outcome records (offline), read {online.total()} "
             f"online, {(expected & online).total()} of them right"]
    for kind, per_op in kinds.items():
        lines.append(f"  {kind}: {per_op.total()} {dict(per_op.most_common())}")
    for kind, shown in examples.items():
        for records in shown:
            lines.append(f"  e.g. {kind}: " + "\n        vs  ".join(r.decode() for r in records))
    return "\n".join(lines)


def test_parallel_killed_stages_equal_the_offline_answer(kafka_stack: Any, tmp_path: Path) -> None:
    began = time.monotonic()
    bootstrap = kafka_stack.bootstrap
    raw, normalized, dlq, changelog = unique("raw"), unique("normalized"), unique("dlq"), unique("changelog")
    prefix = f"{unique('out')}."
    create_topics(bootstrap, {raw: PARTITIONS, normalized: PARTITIONS, dlq: 1})
    create_topics(bootstrap, {changelog: PARTITIONS}, {"cleanup.policy": "compact"})
    # Recent event times: record timestamps older than the topic's retention would be deleted.
    base = datetime.now(UTC).replace(microsecond=0) - timedelta(days=1)
    backlog = synthetic.messy_backlog(instances=INSTANCES, seed=15, partitions=PARTITIONS, base=base)
    total = produce(bootstrap, raw, [(uuid.uuid4().bytes, value, ts, k)
                                     for k, ts, value in backlog.records])

    raw_file = tmp_path / "raw.jsonl"
    backlog.write_jsonl(raw_file)
    offline = subprocess.run([sys.executable, "-m", "consumer.cli", "correlate", str(raw_file)],
                             capture_output=True, check=True, cwd=ROOT, timeout=300,
                             env=stage_env(bootstrap, **SETTINGS))
    schemas = load_schemas(load_settings({}).schema_dir)
    ts_fields = timestamp_fields(schemas["OperationOutcome"].raw)
    expected = Counter(comparable(orjson.loads(line), ts_fields)
                       for line in offline.stdout.splitlines())
    assert sum(expected.values()) == backlog.operations, backlog.kinds  # every operation, once

    norm_group, corr_group = unique("norm"), unique("corr")
    common = {"VMEVENTS_RAW_TOPICS": raw, "VMEVENTS_NORMALIZED_TOPIC": normalized,
              "VMEVENTS_DLQ_TOPIC": dlq, "VMEVENTS_CHANGELOG_TOPIC": changelog,
              "VMEVENTS_OUTCOME_TOPIC_PREFIX": prefix, "VMEVENTS_NORMALIZE_GROUP": norm_group,
              "VMEVENTS_CORRELATE_GROUP": corr_group, **SETTINGS}
    envs = {"normalize-a": stage_env(bootstrap, **common),
            "normalize-b": stage_env(bootstrap, **common, VMEVENTS_BATCH_SIZE=SLOW_BATCH),
            "correlate": stage_env(bootstrap, **common)}
    logs = {name: tmp_path / f"{name}.log" for name in envs}

    def start(name: str) -> subprocess.Popen[bytes]:
        return start_stage(name.partition("-")[0], envs[name], logs[name])

    procs = {name: start(name) for name in ("normalize-a", "correlate")}

    def committed(group: str, topic: str) -> int:
        try:
            return committed_total(bootstrap, group, topic)
        except KafkaException:  # the coordinator busy or moving (a kill, a rebalance): ask again
            return -1

    def normalized_raw() -> int:
        return committed(norm_group, raw)

    def correlated() -> int:
        return committed(corr_group, normalized)

    def kill(name: str) -> None:
        procs[name].send_signal(signal.SIGKILL)
        procs[name].wait(10)
        time.sleep(1)
        procs[name] = start(name)

    def reach(progress: Callable[[], int], target: int, what: str) -> None:
        wait_for(lambda: progress() >= target, 240, what, procs["normalize-a"])

    timeline: list[str] = []
    try:
        # The schedule: B joins late and slow; each stage is killed once, while work is left.
        steps: list[tuple[Callable[[], int], float, str, Callable[[], None]]] = [
            (normalized_raw, 0.15, "normalize B joins",
             lambda: procs.__setitem__("normalize-b", start("normalize-b"))),
            (normalized_raw, 0.35, "SIGKILL normalize A", lambda: kill("normalize-a")),
            (correlated, 0.40, "SIGKILL correlate", lambda: kill("correlate")),
            (normalized_raw, 0.65, "SIGKILL normalize B", lambda: kill("normalize-b")),
        ]
        for progress, fraction, what, act in steps:
            reach(progress, int(total * fraction), f"{fraction:.0%} before: {what}")
            act()
            timeline.append(f"{time.monotonic() - began:.0f}s {what}")
        reach(normalized_raw, total, "every raw record normalized")
        timeline.append(f"{time.monotonic() - began:.0f}s every raw record normalized")

        # Then quiet: nothing consumed, nothing written for longer than the allowed lateness.
        last: dict[str, Any] = {"seen": None, "since": 0.0}

        def quiet() -> bool:
            seen = (correlated(), end_offsets(bootstrap, outcome_topics(bootstrap, prefix)))
            if seen != last["seen"]:
                last.update(seen=seen, since=time.monotonic())
            time.sleep(1)
            return time.monotonic() - float(last["since"]) > LATENESS_S + 10

        wait_for(quiet, 300, "the correlate stage to be quiet", procs["correlate"])
        timeline.append(f"{time.monotonic() - began:.0f}s quiet")
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        exits = {name: proc.wait(60) for name, proc in procs.items()}

    decoder = Decoder(schemas)
    records = read_all(bootstrap, outcome_topics(bootstrap, prefix), settle=2)
    online = Counter(comparable(decoder.decode(m.value() or b""), ts_fields) for m in records)
    misplaced = [m.topic() for m in records  # each on the topic of its operation and outcome
                 if m.topic() != "{}{operation}.{outcome}".format(prefix,
                                                                    **decoder.decode(m.value() or b""))]
    report = summary(expected, online)
    print(f"\n{total} raw records, {backlog.operations} operations; {'; '.join(timeline)}; "
          f"{time.monotonic() - began:.0f}s in all\n{report}")
    assert exits == dict.fromkeys(procs, 0), exits
    assert online == expected, report
    assert misplaced == []
