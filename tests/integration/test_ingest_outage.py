"""Nothing lost while the broker is away (issue #16): a bounded load test on loopback.

Eight clients send single-event requests (each event a unique id) to `vmevents ingest` at a
steady pace while the module's own Apache Kafka broker is stopped for 30 s and started again.
A client that is answered 503 (or 429) waits the Retry-After (capped at 1 s here) and sends the
same event again, as a vendor redelivers. Afterwards:

- every event answered 2xx is on the raw topic (none lost);
- every refusal was a 503/429 (never a 4xx a vendor would drop, never a 5xx without Retry-After),
  and its event was delivered after the retry;
- nothing else is written: no record that is not one of the events, and a duplicate only of an
  event that was refused while its record was already on its way to the broker (at-least-once:
  the notification id identifies it downstream);
- readiness went 503 during the outage and came back 200.

The counts are printed (pytest -s shows them).
"""

from __future__ import annotations

import http.client
import threading
import time
from collections import Counter
from pathlib import Path

import orjson

from tests.integration.ingesttools import TOKEN, start_ingest
from tests.integration.kafkatools import create_topics, read_all, stage_env, unique
from tests.integration.test_broker_faults import OwnBroker, own_broker
from tests.integration.test_normalize_stage import wait_for


def wait_for_leaders(bootstrap: str, topic: str, partitions: int) -> None:
    from confluent_kafka.admin import AdminClient

    admin = AdminClient({"bootstrap.servers": bootstrap})

    def led() -> bool:
        meta = admin.list_topics(topic, timeout=10).topics.get(topic)
        return (meta is not None and len(meta.partitions) == partitions
                and all(p.leader >= 0 for p in meta.partitions.values()))

    wait_for(led, 30, f"leaders for {topic}")

__all__ = ["own_broker"]  # the module-scoped fixture, shared with the stage fault tests



CLIENTS = 8
PACE_S = 0.05  # per client: 20 requests/s, 160/s in all
OUTAGE_S = 30.0
BEFORE_S = 5.0
AFTER_S = 8.0


class Client(threading.Thread):
    def __init__(self, port: int, name: str, stop: threading.Event) -> None:
        super().__init__(daemon=True)
        self.port = port
        self.prefix = name
        self.stop_event = stop
        self.accepted: set[str] = set()
        self.refused: set[str] = set()
        self.statuses: Counter[int] = Counter()
        self.missing_retry_after = 0
        self.errors = 0
        self.conn: http.client.HTTPConnection | None = None

    def send(self, body: bytes) -> tuple[int, dict[str, str]]:
        for _ in range(3):
            try:
                if self.conn is None:
                    self.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=15)
                self.conn.request("POST", "/generic", body, {"Authorization": f"Bearer {TOKEN}",
                                                             "Content-Type": "application/json"})
                resp = self.conn.getresponse()
                resp.read()
                return resp.status, {k.lower(): v for k, v in resp.getheaders()}
            except (OSError, http.client.HTTPException):
                self.errors += 1
                if self.conn is not None:
                    self.conn.close()
                self.conn = None
        raise AssertionError("the ingest service did not answer three times in a row")

    def run(self) -> None:
        n = 0
        while not self.stop_event.is_set():
            event_id = f"{self.prefix}-{n}"
            n += 1
            body = orjson.dumps({"source": "loadtest", "id": event_id})
            while True:
                started = time.monotonic()
                status, headers = self.send(body)
                self.statuses[status] += 1
                if 200 <= status < 300:
                    self.accepted.add(event_id)
                    break
                assert status in (429, 503), status
                if "retry-after" not in headers:
                    self.missing_retry_after += 1
                self.refused.add(event_id)
                time.sleep(min(1.0, float(headers.get("retry-after", "1"))))
                if self.stop_event.is_set() and time.monotonic() - started > 60:
                    return
            time.sleep(PACE_S)


def test_no_request_answered_2xx_is_lost_while_the_broker_is_stopped_for_30s(
        own_broker: OwnBroker, tmp_path: Path) -> None:
    bootstrap = own_broker.bootstrap
    raw = unique("raw")
    create_topics(bootstrap, {raw: 3})
    wait_for_leaders(bootstrap, raw, 3)
    env = stage_env(bootstrap, VMEVENTS_RAW_TOPICS=raw, VMEVENTS_INGEST_HOST="127.0.0.1",
                    VMEVENTS_INGEST_PORT="0", VMEVENTS_INGEST_GENERIC_TOKENS=f"load={TOKEN}",
                    VMEVENTS_INGEST_ACK_TIMEOUT_MS="3000", VMEVENTS_INGEST_RETRY_AFTER_S="1")
    ingest = start_ingest(env, tmp_path / "ingest.log")
    seen: list[int] = []
    watching = threading.Event()

    def watch() -> None:
        while not watching.is_set():
            try:
                status = ingest.get("/readyz")[0]
            except OSError:
                status = 0
            if not seen or seen[-1] != status:
                seen.append(status)
            time.sleep(0.1)

    watcher = threading.Thread(target=watch, daemon=True)
    stop = threading.Event()
    clients = [Client(ingest.port, f"c{i}", stop) for i in range(CLIENTS)]
    try:
        wait_for(lambda: ingest.get("/readyz")[0] == 200, 60, "ingest ready", ingest.proc)
        watcher.start()
        for c in clients:
            c.start()
        time.sleep(BEFORE_S)
        stopped = time.monotonic()
        own_broker.stop(kill=False)
        time.sleep(max(0.0, OUTAGE_S - (time.monotonic() - stopped)))
        own_broker.start()
        restarted = time.monotonic()
        wait_for(lambda: ingest.get("/readyz")[0] == 200, 90, "ready again", ingest.proc)
        back_after = time.monotonic() - restarted
        time.sleep(AFTER_S)
        stop.set()
        for c in clients:
            c.join(90)
            assert not c.is_alive(), "a client still retrying 90 s after the end"
    finally:
        stop.set()
        watching.set()
        assert ingest.stop() == 0

    accepted = set().union(*(c.accepted for c in clients))
    refused = set().union(*(c.refused for c in clients))
    statuses = sum((c.statuses for c in clients), Counter())
    records = read_all(bootstrap, [raw], expected=len(accepted), timeout=60, settle=3)
    on_topic = Counter(orjson.loads(m.value())["id"] for m in records)
    lost = accepted - set(on_topic)
    foreign = set(on_topic) - accepted
    duplicated = {i for i, n in on_topic.items() if n > 1}
    print(f"\ningest outage: {sum(statuses.values())} requests ({dict(statuses)}), "
          f"{len(accepted)} events accepted, {len(refused)} refused at least once and all "
          f"delivered after a retry, {len(records)} records on the raw topic, lost {len(lost)}, "
          f"foreign {len(foreign)}, duplicated {len(duplicated)}; readiness {seen}; ready again "
          f"{back_after:.1f} s after the broker restarted; reconnects {sum(c.errors for c in clients)}")
    assert not lost
    assert not foreign
    assert refused <= accepted  # every refused event was delivered after the retry
    assert refused, "the outage refused nothing: the test did not test"
    assert duplicated <= refused
    assert sum(c.missing_retry_after for c in clients) == 0
    assert set(statuses) <= {200, 429, 503}
    text = "".join("u" if s == 200 else "d" for s in seen)
    assert "udu" in text, seen
