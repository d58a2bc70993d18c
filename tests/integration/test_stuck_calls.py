"""A transactional call that never returns (librdkafka #5456, #5511) costs a producer, not the stage.

The producer handed to the loop hangs in its first ``commit_transaction`` the way the librdkafka
bug does: the call never comes back. The loop must give up on it at its deadline, fence it with a
new producer of the same transactional.id (which aborts the stuck transaction on the coordinator),
rewind and redo the batch, so that read_committed readers see every record exactly once.
"""

from __future__ import annotations

import threading
from collections import Counter
from typing import Any

import pytest
from confluent_kafka import Producer
from structlog.testing import capture_logs

from consumer.app import normalize_loop
from consumer.http import Health
from consumer.metrics import Metrics
from consumer.serde import Decoder, load_schemas
from tests.integration.kafkatools import committed_total, read_all
from tests.integration.test_normalize_stage import in_process_stage, run_in_thread
from tests.seeds import SEEDS

pytestmark = [pytest.mark.kafka, pytest.mark.apache_kafka]


def hanging_first_commit(release: threading.Event) -> tuple[Any, list[Producer]]:
    """A producer factory whose first producer's commit_transaction blocks until ``release``."""
    made: list[Producer] = []

    class Hanging(Producer):
        def commit_transaction(self, *args: Any) -> None:
            if self is made[0]:
                release.wait()  # what librdkafka's cnd_wait does, minus the end
            super().commit_transaction(*args)

    def factory(conf: dict[str, Any]) -> Producer:
        producer = Hanging(conf)
        made.append(producer)
        return producer

    return factory, made


def test_a_commit_that_never_returns_is_abandoned_and_the_batch_redone(kafka_stack: Any) -> None:
    bootstrap = kafka_stack.bootstrap
    values = [s.raw for s in SEEDS]
    settings, raw, out, _ = in_process_stage(bootstrap, values, VMEVENTS_KAFKA_CALL_TIMEOUT_MS="1000")
    release = threading.Event()
    factory, made = hanging_first_commit(release)
    metrics = Metrics()
    loop = normalize_loop(settings, metrics, Health())
    loop.producer_factory = factory
    try:
        with capture_logs() as logs:
            run_in_thread(loop, lambda: committed_total(bootstrap, settings.normalize_group, raw)
                          >= len(values))
    finally:
        release.set()
    assert len(made) == 2
    assert loop.txn is not None
    assert loop.txn.stuck == [made[0]]
    replaced = [e for e in logs if e["event"].startswith("producer replaced")]
    assert [e["stuck_call"] for e in replaced] == [True]
    assert "commit_transaction did not return" in replaced[0]["reason"]
    assert metrics.registry.get_sample_value(
        "vmevents_transaction_aborts_total", {"stage": "normalize"}) == 1
    committed = read_all(bootstrap, [out], expected=len(values))
    offsets = Counter(Decoder(load_schemas(settings.schema_dir)).decode(m.value())["source"]["offset"]
                      for m in committed)
    assert offsets == Counter(range(len(values)))
    stopped = [e for e in logs if e["event"] == "stage stopped"]
    assert stopped[0]["last_transaction"] == "committed"
    assert stopped[0]["stuck_client_calls"] == 1
