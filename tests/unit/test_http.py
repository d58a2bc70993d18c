import time
import urllib.error
import urllib.request

import pytest

from consumer.http import Health, HealthServer
from consumer.metrics import Metrics


def get(port: int, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


@pytest.fixture
def served() -> tuple[Metrics, Health, int]:
    metrics, health = Metrics(), Health(stall_seconds=0.5)
    server = HealthServer(metrics.registry, health, "127.0.0.1", 0).start()
    yield metrics, health, server.port
    server.stop()


def test_metrics_endpoint_exports_zero_series_and_counts(served: tuple[Metrics, Health, int]) -> None:
    metrics, _, port = served
    metrics.events.labels("normalize", "jdcloud", "failure.reboot", "executing").inc(3)
    status, body = get(port, "/metrics")
    assert status == 200
    assert 'vmevents_dlq_total{reason="malformed_json"} 0.0' in body
    assert ('vmevents_events_total{operation="failure.reboot",phase="executing",stage="normalize",'
            'vendor="jdcloud"} 3.0') in body


def test_readiness_follows_the_loop(served: tuple[Metrics, Health, int]) -> None:
    _, health, port = served
    assert get(port, "/readyz") == (503, "not ready: starting\n")
    health.ready = True
    assert get(port, "/readyz") == (200, "ready\n")


def test_liveness_fails_when_the_loop_stalls(served: tuple[Metrics, Health, int]) -> None:
    _, health, port = served
    health.tick()
    assert get(port, "/healthz")[0] == 200
    time.sleep(0.6)
    assert get(port, "/healthz") == (503, "loop stalled\n")
    assert get(port, "/nope")[0] == 404
