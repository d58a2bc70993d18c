"""The open-operations topic on real Kafka: what a service materializes is exactly what is open.

Operations are announced, started and (some of them) finished on the normalized topic; the
correlate stage writes ``OpenOperation`` records and tombstones to the compacted topic in its
transactions. A read_committed reader that keeps the last value per key and deletes on a
tombstone must end up with exactly the operations still open, also when the operations were
opened before a SIGKILL and closed after the restart; ``vmevents tail`` decodes it.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import orjson
import pytest
from confluent_kafka.admin import AdminClient, ConfigResource

from consumer.config import load_settings
from consumer.serde import Decoder, load_schemas, single_object_encoder
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
from tests.integration.test_normalize_stage import wait_for

pytestmark = [pytest.mark.kafka, pytest.mark.apache_kafka]

MIN = 60_000


def event(inst: str, phase: str, t: int, **fields: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "vendor": "aliyun", "instance_id": inst, "vendor_event_code": "SystemMaintenance.Reboot",
        "operation": "maintenance.reboot", "known": True, "phase": phase, "vendor_status": None,
        "event_time": t, "region": "cn-hangzhou", "account_id": "acct",
        "notification_id": f"{inst}-{phase}", "vendor_event_id": f"e-{inst}", "level": None,
        "previous_state": None, "current_state": None, "publish_time": None, "not_before": None,
        "start_time": None, "end_time": None, "source_format": "", "attributes": {},
        "source": None,
    }
    base.update(fields)
    return base


def materialize(bootstrap: str, topic: str, decoder: Decoder) -> dict[str, dict[str, Any]]:
    """Last value per key, tombstones delete: what a downstream service holds."""
    view: dict[str, dict[str, Any]] = {}
    for msg in read_all(bootstrap, [topic], settle=1, timeout=30):
        key = (msg.key() or b"").decode()
        value = msg.value()
        if value is None:
            view.pop(key, None)
        else:
            view[key] = decoder.decode(value)  # type: ignore[assignment]
    return view


@pytest.mark.timeout(240)
def test_materialized_topic_is_exactly_the_open_operations(kafka_stack: Any, tmp_path: Path) -> None:
    bootstrap = kafka_stack.bootstrap
    normalized, dlq, changelog = unique("normalized"), unique("dlq"), unique("changelog")
    open_topic = unique("open")
    create_topics(bootstrap, {normalized: 3, dlq: 1})
    create_topics(bootstrap, {changelog: 3}, {"cleanup.policy": "compact"})
    settings = load_settings({})
    encode = single_object_encoder(load_schemas(settings.schema_dir)["InstanceEvent"])
    decoder = Decoder(load_schemas(settings.schema_dir))

    now = int(time.time() * 1000)
    t0, planned = now - 30 * MIN, now + 2 * 60 * MIN
    announced = [f"i-a{i}" for i in range(4)]  # stay announced
    running = [f"i-r{i}" for i in range(4)]  # announced, then started
    finished = [f"i-f{i}" for i in range(4)]  # started, later finished
    cycled = [f"i-c{i}" for i in range(2)]  # announced, started, later finished
    jd = "i-jd"  # no vendor event id: waits in the reorder buffer, then started

    def rec(e: dict[str, Any]) -> tuple[bytes, bytes]:
        return f"{e['vendor']}:{e['instance_id']}".encode(), encode(e)

    first = [rec(event(i, "scheduled", t0, publish_time=t0, not_before=planned))
             for i in announced + running + cycled]
    first += [rec(event(i, "executing", t0 + MIN, start_time=t0 + MIN))
              for i in running + finished + cycled]
    first.append(rec(event(jd, "executing", t0 + MIN, vendor="jdcloud",
                           vendor_event_code="SystemFailure.Reboot", operation="failure.reboot",
                           vendor_event_id=None)))
    second = [rec(event(i, "executed", t0 + 5 * MIN, start_time=t0 + MIN, end_time=t0 + 5 * MIN))
              for i in finished + cycled]

    group = unique("corr")
    env = stage_env(bootstrap, VMEVENTS_NORMALIZED_TOPIC=normalized, VMEVENTS_DLQ_TOPIC=dlq,
                    VMEVENTS_CHANGELOG_TOPIC=changelog, VMEVENTS_OPEN_OPERATIONS_TOPIC=open_topic,
                    VMEVENTS_OUTCOME_TOPIC_PREFIX=f"{unique('out')}.",
                    VMEVENTS_CORRELATE_GROUP=group, VMEVENTS_TRANSACTIONAL_ID=unique("txn"),
                    VMEVENTS_BATCH_SIZE="5", VMEVENTS_CORRELATE_ALLOWED_LATENESS="2s")
    log = tmp_path / "correlate.log"
    correlate = start_stage("correlate", env, log)
    try:
        produce(bootstrap, normalized, first)
        wait_for(lambda: committed_total(bootstrap, group, normalized) >= len(first), 90,
                 "the opening notifications committed", correlate)
        open_now = set(announced + running + finished + cycled + [jd])

        def view_is(instances: set[str]) -> bool:
            view = materialize(bootstrap, open_topic, decoder)
            return {r["instance_id"] for r in view.values()} == instances

        wait_for(lambda: view_is(open_now), 60, "every operation open", correlate)
        # The ends go to a restarted stage: the operations they close come from the changelog.
        correlate.send_signal(signal.SIGKILL)
        correlate.wait(10)
        correlate = start_stage("correlate", env, log)
        produce(bootstrap, normalized, second)
        wait_for(lambda: committed_total(bootstrap, group, normalized) >= len(first + second), 90,
                 "the ends committed", correlate)
        still_open = set(announced + running + [jd])
        wait_for(lambda: view_is(still_open), 60, "the finished operations tombstoned", correlate)
        time.sleep(2)  # a stray record (a duplicate, a late open) would arrive now
        view = materialize(bootstrap, open_topic, decoder)
        tail = subprocess.run(
            [sys.executable, "-m", "consumer.cli", "tail", open_topic, "--instance", "i-r0"],
            env=env, cwd=ROOT, capture_output=True, timeout=60, check=True)
    finally:
        correlate.send_signal(signal.SIGTERM)
        correlate.wait(60)
    assert correlate.returncode == 0, log.read_text()[-3000:]

    phases = {r["instance_id"]: r["phase"] for r in view.values()}
    assert phases == {**dict.fromkeys(announced, "announced"),
                      **dict.fromkeys(running, "started"), jd: "started"}
    assert len(view) == len(still_open)  # one key per operation
    by_instance = {r["instance_id"]: r for r in view.values()}
    a0 = by_instance["i-a0"]
    assert (a0["vendor"], a0["operation"], a0["vendor_event_id"]) == (
        "aliyun", "maintenance.reboot", "e-i-a0")
    assert a0["not_before"] == planned
    assert a0["scheduled_at"] == t0
    assert a0["started_at"] is None
    assert by_instance["i-r0"]["started_at"] == t0 + MIN

    resource = ConfigResource(ConfigResource.Type.TOPIC, open_topic)
    admin = AdminClient({"bootstrap.servers": bootstrap})  # held while its future resolves
    configs = admin.describe_configs([resource])
    assert configs[resource].result(timeout=10)["cleanup.policy"].value == "compact"

    lines = [orjson.loads(line) for line in tail.stdout.splitlines()]
    assert lines, tail.stderr.decode()[-2000:]
    assert lines[-1]["value"]["phase"] == "started"
    assert lines[-1]["value"]["not_before"].endswith("Z")  # times in ISO-8601 UTC
