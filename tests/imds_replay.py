"""A local stand-in for Azure IMDS that replays Scheduled Events flows as Microsoft documents
them (Learn "Scheduled Events for Linux VMs"; Azure-Samples/scheduled-events-mock-server), on
127.0.0.1 and a random port, plus a stand-in for the ingest front door. Tests never touch the
real IMDS address.

IMDS answers 400 without the ``Metadata: true`` header or an ``api-version``, as the real one
does, so an agent that forgets them fails the tests.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

import orjson

SUBSCRIPTION = "8d10da13-8125-4ba9-a717-bf7490507b3d"
COMPUTE = {"vmId": "02aab8a4-74ef-476e-8182-f6d2ba4166a6", "name": "aks-nodepool1-0",
           "resourceId": f"/subscriptions/{SUBSCRIPTION}/resourceGroups/MC_fleet/providers/"
                         "Microsoft.Compute/virtualMachines/aks-nodepool1-0",
           "subscriptionId": SUBSCRIPTION, "resourceGroupName": "MC_fleet",
           "location": "westeurope", "vmScaleSetName": "", "osType": "Linux"}


def event(eid: str, kind: str, status: str, not_before: str = "Mon, 11 Apr 2026 22:26:58 GMT",
          resources: Sequence[str] = ("aks-nodepool1-0",)) -> dict[str, Any]:
    return {"EventId": eid, "EventStatus": status, "EventType": kind,
            "ResourceType": "VirtualMachine", "Resources": list(resources),
            "NotBefore": not_before if status == "Scheduled" else "",
            "Description": "Virtual machine is going to be paused for a few seconds with "
                           "memory-preserving Live Migration operation." if kind == "Freeze"
            else "Virtual machine is going to be restarted as requested by authorized user.",
            "EventSource": "Platform", "DurationInSeconds": 5 if kind == "Freeze" else -1}


def doc(incarnation: int, *events: dict[str, Any]) -> dict[str, Any]:
    return {"DocumentIncarnation": incarnation, "Events": list(events)}


FREEZE_FLOW = [doc(1), doc(1),
               doc(2, event("F1", "Freeze", "Scheduled")), doc(2, event("F1", "Freeze", "Scheduled")),
               doc(3, event("F1", "Freeze", "Started")), doc(3, event("F1", "Freeze", "Started")),
               doc(4), doc(4)]
"""Scheduled -> Started -> gone (a live-migration Freeze), each document polled twice."""

REBOOT_CANCELED_FLOW = [doc(1), doc(2, event("R1", "Reboot", "Scheduled")),
                        doc(2, event("R1", "Reboot", "Scheduled")), doc(3), doc(3)]
"""A Reboot canceled before it started: it leaves the document straight from Scheduled."""


class ImdsReplay:
    """Serves ``flow[i]`` to the i-th scheduled-events GET (the last one from then on)."""

    def __init__(self, flow: Sequence[dict[str, Any]], compute: dict[str, Any] | None = None
                 ) -> None:
        self.flow = list(flow)
        self.compute = compute or COMPUTE
        self.gets = 0
        self.approvals: list[dict[str, Any]] = []
        self.refused = 0


class Ingest:
    """Records POSTed bodies; answers 503 (Retry-After: 0) to the first ``fail`` requests."""

    def __init__(self, fail: int = 0) -> None:
        self.fail = fail
        self.bodies: list[bytes] = []
        self.authorizations: list[str] = []


def _handler(imds: ImdsReplay | None, ingest: Ingest | None) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def _answer(self, code: int, body: Any, headers: dict[str, str] | None = None) -> None:
            raw = orjson.dumps(body)
            self.send_response(code)
            for key, value in (headers or {}).items():
                self.send_header(key, value)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(raw)))
            self.end_headers()
            self.wfile.write(raw)

        def _imds_ok(self) -> bool:
            query = parse_qs(urlsplit(self.path).query)
            if self.headers.get("Metadata") != "true" or "api-version" not in query:
                assert imds is not None
                imds.refused += 1
                self._answer(400, {"error": "Bad request. Required metadata header not "
                                            "specified or api-version missing"})
                return False
            return True

        def do_GET(self) -> None:
            path = urlsplit(self.path).path
            if imds is None or not self._imds_ok():
                if imds is None:
                    self._answer(404, {})
                return
            if path == "/metadata/instance/compute":
                self._answer(200, imds.compute)
            elif path == "/metadata/scheduledevents":
                document = imds.flow[min(imds.gets, len(imds.flow) - 1)]
                imds.gets += 1
                self._answer(200, document)
            else:
                self._answer(404, {})

        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            path = urlsplit(self.path).path
            if imds is not None and path == "/metadata/scheduledevents":
                if self._imds_ok():
                    imds.approvals.append(orjson.loads(body))
                    self._answer(200, {})
            elif ingest is not None and path == "/ingest/azure":
                ingest.authorizations.append(self.headers.get("Authorization") or "")
                if ingest.fail > 0:
                    ingest.fail -= 1
                    self._answer(503, {"error": "broker unavailable"}, {"Retry-After": "0"})
                    return
                ingest.bodies.append(body)
                self._answer(202, {"accepted": True})
            else:
                self._answer(404, {})

        def log_message(self, format: str, *args: object) -> None:
            return

    return Handler


@contextmanager
def serve(imds: ImdsReplay | None = None, ingest: Ingest | None = None) -> Iterator[str]:
    """A loopback server on a random port for the duration; yields its base URL."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(imds, ingest))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
