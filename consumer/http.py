"""One HTTP port per process: ``/metrics`` for Prometheus, ``/healthz`` and ``/readyz`` for Kubernetes.

Liveness means the processing loop has ticked recently (a wedged loop gets the pod restarted);
readiness means partitions are assigned and their state restored.
"""

from __future__ import annotations

import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest


class Health:
    """Shared between the loop (writer) and the HTTP thread (reader); plain attributes suffice."""

    def __init__(self, stall_seconds: float = 120.0) -> None:
        self.stall_seconds = stall_seconds
        self.last_tick = time.monotonic()
        self.ready = False
        self.reason = "starting"

    def tick(self) -> None:
        self.last_tick = time.monotonic()

    def alive(self) -> bool:
        return time.monotonic() - self.last_tick < self.stall_seconds


class HealthServer:
    def __init__(self, registry: CollectorRegistry, health: Health, host: str, port: int) -> None:
        self.health = health
        server_registry = registry

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                path = self.path.split("?", 1)[0]
                if path == "/metrics":
                    self._send(200, generate_latest(server_registry), CONTENT_TYPE_LATEST)
                elif path == "/healthz":
                    ok = health.alive()
                    self._send(200 if ok else 503, b"ok\n" if ok else b"loop stalled\n")
                elif path == "/readyz":
                    body = ("ready\n" if health.ready else f"not ready: {health.reason}\n").encode()
                    self._send(200 if health.ready else 503, body)
                else:
                    self._send(404, b"not found\n")

            def _send(self, code: int, body: bytes, ctype: str = "text/plain; charset=utf-8") -> None:
                self.send_response(code)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:
                return

        self._server = ThreadingHTTPServer((host, port), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="http", daemon=True)

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    def start(self) -> HealthServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
