"""Online equals offline for the samples the project ships (issue #15, point 3).

Each ``deploy/local/samples/*.jsonl`` is replayed as ``make run`` does (``vmevents replay``,
lines 1 ms apart) into a fresh topic set of 6 partitions, the normalize and correlate stages
consume it, and once they are quiet every derived outcome topic (read_committed) must equal
``vmevents correlate`` on the same file with the same settings, record for record, as
multisets. The seed file is run twice: ``make run`` twice gives the same outcomes.

Compared: every field of the outcome except what says when, from where or from which
deliveries it was decided online: ``decided_at`` (the processing clock online, the newest event
time offline), ``sources`` (Kafka coordinates, online only), ``notification_ids`` and
``attributes`` (gathered from the notifications an operation absorbed, which depend on which of
its duplicates and stragglers arrived before it was decided).

No difference is allowed: an operation that offline times out because the end of the input
moves the watermark to the file's newest event time times out online too, because the
correlator's stream time is the newest over every raw partition (the normalize stage's progress
marks), not its own partition's, even where its partition holds only an old notice.
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import orjson
import pytest

from consumer.config import load_settings
from consumer.jsonout import timestamp_fields, to_json_line
from consumer.serde import Decoder, load_schemas
from tests.integration.kafkatools import (
    ROOT,
    fresh_stage_topics,
    read_all,
    stage_env,
    start_stage,
    unique,
)
from tests.integration.test_correlate_stage import outcome_topics

pytestmark = [pytest.mark.kafka, pytest.mark.apache_kafka]

SAMPLES = sorted((ROOT / "deploy" / "local" / "samples").glob("*.jsonl"))
PARTITIONS = 6  # make run's (VMEVENTS_TOPIC_PARTITIONS' default)
LATENESS = "3s"  # make run's is 30 s: shorter, so the last buffered notifications come sooner
QUIET_S = 6.0  # no new outcome for this long (twice the lateness): everything is decided
NOT_COMPARED = ("decided_at", "sources", "notification_ids", "attributes")

_first_run: dict[str, Counter[bytes]] = {}


def comparable(outcome: dict[str, Any], ts_fields: frozenset[str]) -> bytes:
    record = orjson.loads(to_json_line(outcome, ts_fields))
    for name in NOT_COMPARED:
        record.pop(name, None)
    return orjson.dumps(record, option=orjson.OPT_SORT_KEYS)


def offline(sample: Path, ts_fields: frozenset[str]) -> Counter[bytes]:
    env = stage_env("127.0.0.1:1", VMEVENTS_CORRELATE_ALLOWED_LATENESS=LATENESS)
    run = subprocess.run([sys.executable, "-m", "consumer.cli", "correlate", str(sample)],
                         capture_output=True, check=True, cwd=ROOT, timeout=120, env=env)
    return Counter(comparable(orjson.loads(line), ts_fields) for line in run.stdout.splitlines())


@pytest.mark.parametrize(("sample", "again"), [
    *[pytest.param(s, False, id=s.name) for s in SAMPLES],
    pytest.param(ROOT / "deploy" / "local" / "samples" / "seed-events.jsonl", True,
                 id="seed-events.jsonl-again"),
])
def test_sample_online_equals_offline(kafka_stack: Any, tmp_path: Path, sample: Path,
                                      again: bool) -> None:
    bootstrap = kafka_stack.bootstrap
    schemas = load_schemas(load_settings({}).schema_dir)
    ts_fields = timestamp_fields(schemas["OperationOutcome"].raw)
    decoder = Decoder(schemas)

    common = {**fresh_stage_topics(bootstrap, PARTITIONS),
              "VMEVENTS_CORRELATE_ALLOWED_LATENESS": LATENESS}
    prefix = common["VMEVENTS_OUTCOME_TOPIC_PREFIX"]
    subprocess.run([sys.executable, "-m", "consumer.cli", "replay", str(sample)], check=True,
                   cwd=ROOT, timeout=60, env=stage_env(bootstrap, **common),
                   capture_output=True)
    log = tmp_path / "stages.log"
    stages = [start_stage(stage, stage_env(bootstrap, **common,
                                           VMEVENTS_TRANSACTIONAL_ID=unique(f"txn-{stage}")), log)
              for stage in ("normalize", "correlate")]
    online: Counter[bytes] = Counter()
    try:
        expected = offline(sample, ts_fields)  # while the stages start
        started = time.monotonic()
        seen, last_change = 0, time.monotonic()
        while time.monotonic() - last_change < QUIET_S or not seen:
            assert time.monotonic() - started < 90, f"not quiet: {sum(online.values())} outcomes"
            for proc in stages:
                assert proc.poll() is None, log.read_text()[-3000:]
            topics = outcome_topics(bootstrap, prefix)
            # Outcomes only ever add up: wait for at least as many as last time.
            records = read_all(bootstrap, topics, expected=max(seen, 1), settle=0.3,
                               timeout=5) if topics else []
            online = Counter(comparable(decoder.decode(m.value() or b""), ts_fields)
                             for m in records)
            if sum(online.values()) != seen:
                seen, last_change = sum(online.values()), time.monotonic()
            time.sleep(0.5)
    finally:
        for proc in stages:
            proc.terminate()
        for proc in stages:
            proc.wait(60)

    extra, missing = online - expected, expected - online
    assert not extra, f"online only: {sorted(extra)}"
    assert not missing, f"offline only: {sorted(missing)}"
    print(f"\n{sample.name}: {sum(online.values())} outcomes equal offline after "
          f"{time.monotonic() - started:.0f} s")
    assert [p.returncode for p in stages] == [0, 0], log.read_text()[-3000:]
    if again and sample.name in _first_run:
        assert online == _first_run[sample.name]  # make run twice: the same outcomes
    _first_run.setdefault(sample.name, online)
