"""The ASGI application: route lookup, limits, the answer, metrics. No framework: one function
per request over the ASGI scope, which keeps the per-request cost to what the work needs.

Limits, in the order they apply: an unknown path is 404; over ``max_in_flight`` requests being
handled, 503 + Retry-After at once (a flood is refused, not queued: memory stays bounded by
``max_in_flight x max_body_bytes``); a body over ``max_body_bytes`` is 413 (checked on
Content-Length before reading, and while reading). A request the broker did not acknowledge in
time is 503 + Retry-After, which every channel retries.
"""

from __future__ import annotations

import ipaddress
import time
from collections.abc import Awaitable, Callable, Mapping, MutableMapping, Sequence
from typing import Any, Protocol

import structlog

from consumer.ingest.metrics import IngestMetrics
from consumer.ingest.request import Accepted, Refused, Reply, Request, Unavailable
from consumer.ingest.routes import PATHS, Route

log = structlog.get_logger(__name__)

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]


class Writer(Protocol):
    ready: bool

    async def write(self, values: Sequence[bytes], headers: list[tuple[str, str | bytes | None]], *,
                    key: bytes | None, timestamp_ms: int) -> None: ...


class _LogSampler:
    """At most one log line per (route, reason) every ``every_s``: a flood of forged requests
    is counted in full by the metrics, and logged, not repeated 10,000 times a second."""

    def __init__(self, every_s: float = 10.0) -> None:
        self.every_s = every_s
        self._last: dict[tuple[str, str], tuple[float, int]] = {}

    def __call__(self, route: str, reason: str) -> int | None:
        """None: stay quiet; else how many were suppressed since the last line."""
        now = time.monotonic()
        last, quiet = self._last.get((route, reason), (-1e18, 0))
        if now - last < self.every_s:
            self._last[(route, reason)] = (last, quiet + 1)
            return None
        self._last[(route, reason)] = (now, 0)
        return quiet


class _RouteSeries:
    """One route's metric children, looked up once (``labels()`` per request costs more than
    the rest of a request's bookkeeping)."""

    def __init__(self, metrics: IngestMetrics, route: str) -> None:
        self.route = route
        self.requests = metrics.requests
        self.bytes = metrics.bytes.labels(route)
        self.records = metrics.records.labels(route)
        self.latency = metrics.latency.labels(route)
        self._by_status: dict[int, Any] = {}

    def answered(self, status: int) -> None:
        child = self._by_status.get(status)
        if child is None:
            child = self._by_status[status] = self.requests.labels(self.route, str(status))
        child.inc()


class IngestApp:
    def __init__(self, routes: Mapping[str, Route], writer: Writer, metrics: IngestMetrics, *,
                 max_body_bytes: int, max_in_flight: int, retry_after_s: int,
                 public_url: str = "", trusted_proxies: Sequence[str] = ()) -> None:
        self.routes = {PATHS[name]: route for name, route in routes.items()}
        self.writer = writer
        self.metrics = metrics
        self.max_body_bytes = max_body_bytes
        self.max_in_flight = max_in_flight
        self.retry_after = str(retry_after_s).encode()
        self.public_url = public_url
        self.proxies = tuple(ipaddress.ip_network(c, strict=False) for c in trusted_proxies)
        self.in_flight = 0
        self._series = {name: _RouteSeries(metrics, name) for name in (*PATHS, "none")}
        self._sample = _LogSampler()
        self._off = {PATHS[n] for n in PATHS if n not in routes}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "http":
            await self._http(scope, receive, send)
        elif kind == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return

    def _route(self, path: str) -> tuple[str, Route | None]:
        route = self.routes.get(path)
        if route is not None:
            return route.name, route
        if path.startswith(PATHS["cloudmonitor"] + "/"):
            route = self.routes.get(PATHS["cloudmonitor"])
            if route is not None:
                return route.name, route
        return "none", None

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        start = time.perf_counter()
        received_ms = time.time_ns() // 1_000_000
        path: str = scope["path"]
        name, route = self._route(path)
        m = self.metrics
        status = 500
        if route is None:
            off = path in self._off or path.startswith(PATHS["cloudmonitor"] + "/")
            status = await _answer(send, 404, b"route not configured\n" if off else b"not found\n")
            self._series[name].answered(404)
            return
        if self.in_flight >= self.max_in_flight:
            m.refused.labels(name, "overloaded").inc()
            self._series[name].answered(503)
            await _answer(send, 503, b"busy, retry later\n", [(b"retry-after", self.retry_after)])
            return
        self.in_flight += 1
        m.in_flight.inc()
        try:
            status = await self._handle(scope, receive, send, route, received_ms)
        finally:
            self.in_flight -= 1
            m.in_flight.dec()
            series = self._series[name]
            series.answered(status)
            series.latency.observe(time.perf_counter() - start)

    async def _handle(self, scope: Scope, receive: Receive, send: Send, route: Route,
                      received_ms: int) -> int:
        name = route.name
        m = self.metrics
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        try:
            body = await self._body(headers, receive)
            series = self._series[name]
            series.bytes.inc(len(body))
            req = Request(scope["method"], scope["path"], scope["query_string"].decode("latin-1"),
                          headers, body, self._client(scope, headers), self._url(scope, headers),
                          received_ms)
            outcome = await route.handle(req)
            if isinstance(outcome, Reply):
                m.handshakes.labels(name, outcome.kind).inc()
                log.info("handshake answered", route=name, kind=outcome.kind)
                extra = [(k.lower().encode(), v.encode()) for k, v in outcome.headers.items()]
                return await _answer(send, outcome.status, outcome.body, extra)
            await self._write(name, outcome, received_ms)
            series.records.inc(len(outcome.records))
            return await _answer(send, outcome.status, b"ok\n")
        except Refused as exc:
            return await self._refuse(send, name, exc)
        except Exception:
            log.exception("request failed", route=name)
            return await _answer(send, 500, b"internal error\n")

    async def _write(self, name: str, accepted: Accepted, received_ms: int) -> None:
        headers: list[tuple[str, str | bytes | None]] = [
                   ("vmevents.channel", name.encode()),
                   ("vmevents.received_at", str(received_ms).encode()),
                   ("vmevents.principal", accepted.principal.encode())]
        key = None
        if accepted.delivery_id:
            key = accepted.delivery_id.encode()
            headers.append(("vmevents.delivery_id", key))
        try:
            await self.writer.write(accepted.records, headers, key=key, timestamp_ms=received_ms)
        except Unavailable as exc:
            self.metrics.produce_errors.labels(exc.reason).inc()
            raise

    async def _refuse(self, send: Send, name: str, exc: Refused) -> int:
        m = self.metrics
        if exc.status in (401, 403):
            m.auth_failures.labels(name, exc.reason).inc()
        else:
            m.refused.labels(name, exc.reason).inc()
        quiet = self._sample(name, exc.reason)
        if quiet is not None:
            log.warning("request refused", route=name, status=exc.status, reason=exc.reason,
                        detail=exc.detail, suppressed=quiet)
        extra = [(k.lower().encode(), v.encode()) for k, v in exc.headers.items()]
        if exc.status in (429, 503):
            extra.append((b"retry-after", self.retry_after))
        text = {401: b"unauthenticated", 403: b"forbidden", 503: b"unavailable, retry later"}
        body = text.get(exc.status, exc.reason.encode())
        if exc.status == 401:
            extra.append((b"www-authenticate", b'Bearer realm="vmevents"'))
        return await _answer(send, exc.status, body + b"\n", extra)

    async def _body(self, headers: Mapping[str, str], receive: Receive) -> bytes:
        limit = self.max_body_bytes
        length = headers.get("content-length")
        if length is not None and (not length.isdigit() or int(length) > limit):
            raise Refused("too_large", f"Content-Length {length[:20]} over {limit}", status=413)
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                raise Refused("disconnected", "the client went away", status=499)
            chunk = message.get("body", b"")
            if chunk:
                size += len(chunk)
                if size > limit:
                    raise Refused("too_large", f"body over {limit} bytes", status=413)
                chunks.append(chunk)
            if not message.get("more_body", False):
                return chunks[0] if len(chunks) == 1 else b"".join(chunks)

    def _client(self, scope: Scope, headers: Mapping[str, str]) -> str:
        peer = scope.get("client")
        address = str(peer[0]) if peer else ""
        forwarded = headers.get("x-forwarded-for")
        if not forwarded or not self._trusted(address):
            return address
        for hop in reversed([h.strip() for h in forwarded.split(",")]):
            if not self._trusted(hop):
                return hop
            address = hop
        return address

    def _trusted(self, address: str) -> bool:
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            return False
        return any(ip in net for net in self.proxies)

    def _url(self, scope: Scope, headers: Mapping[str, str]) -> str:
        query = scope["query_string"].decode("latin-1")
        tail = str(scope["path"]) + (f"?{query}" if query else "")
        if self.public_url:
            return self.public_url + tail
        scheme = scope.get("scheme", "http")
        forwarded = headers.get("x-forwarded-proto")
        peer = scope.get("client")
        if forwarded and peer and self._trusted(str(peer[0])):
            scheme = forwarded
        return f"{scheme!s}://{headers.get('host', '')}{tail}"


async def _answer(send: Send, status: int, body: bytes,
                  extra: list[tuple[bytes, bytes]] | None = None) -> int:
    headers = [(b"content-length", str(len(body)).encode())]
    if extra:
        headers.extend(extra)
    if not extra or all(k != b"content-type" for k, _ in extra):
        headers.append((b"content-type", b"text/plain; charset=utf-8"))
    if status == 499:  # nobody to answer
        return status
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
    return status
