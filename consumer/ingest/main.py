"""``vmevents ingest``: wire settings, verifiers, routes, the producer and the HTTP servers.

Two ports, as every vmevents process: the ingest port (the routes) and the metrics port
(``/metrics``, ``/healthz``, ``/readyz``; ready while the broker acknowledges records).
SIGTERM stops accepting, lets requests in flight finish (uvicorn's graceful shutdown), flushes
the producer, and exits within the pod's grace period.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import os
import signal
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import structlog
import uvicorn
from prometheus_client import CollectorRegistry

from consumer.config import Settings
from consumer.http import Health, HealthServer
from consumer.ingest import alibaba, oidc, sns
from consumer.ingest.config import IngestSettings, load_ingest_settings
from consumer.ingest.keys import Fetch, KeyCache, http_get
from consumer.ingest.metrics import IngestMetrics
from consumer.ingest.routes import (
    AlibabaEventBridgeRoute,
    CloudMonitorRoute,
    EventBridgeRoute,
    EventGridRoute,
    GenericRoute,
    PubSubRoute,
    Route,
    SnsRoute,
)
from consumer.ingest.server import IngestApp
from consumer.ingest.shared import HmacVerifier
from consumer.redact import REDACTOR

log = structlog.get_logger(__name__)

JWKS_TTL_S = 300.0
LOOP_STALL_S = 60.0
"""An event loop that has not turned for this long is wedged: /healthz answers 503."""


def build_routes(s: IngestSettings, fetch: Fetch = http_get) -> dict[str, Route]:
    """The routes that have credentials; the others are off (404)."""
    routes: dict[str, Route] = {}
    if s.sns_topics:
        certs = KeyCache(sns.load_certificate_key, fetch)
        routes["sns"] = SnsRoute(sns.SnsVerifier(s.sns_topics, s.sns_url_pattern, certs,
                                                 max_age_s=s.sns_max_age_s), fetch)
    if s.eventbridge_keys or s.eventbridge_basic:
        routes["eventbridge"] = EventBridgeRoute(s.eventbridge_header, s.eventbridge_keys,
                                                 s.eventbridge_basic)
    if s.pubsub_audiences:
        policy = oidc.TokenPolicy(s.pubsub_issuers, s.pubsub_audiences, ("email",),
                                  s.pubsub_service_accounts, require_email_verified=True)
        routes["pubsub"] = PubSubRoute(oidc.JwtVerifier(
            s.pubsub_jwks_url, policy, KeyCache(oidc.parse_jwks, fetch, ttl_s=JWKS_TTL_S)))
    if s.eventgrid_keys or s.eventgrid_tenant:
        entra = None
        if s.eventgrid_tenant:
            policy = oidc.TokenPolicy(s.eventgrid_issuers, s.eventgrid_audiences, ("azp", "appid"),
                                      s.eventgrid_apps, require_email_verified=False)
            entra = oidc.JwtVerifier(s.eventgrid_jwks_url, policy,
                                     KeyCache(oidc.parse_jwks, fetch, ttl_s=JWKS_TTL_S))
        routes["eventgrid"] = EventGridRoute(s.eventgrid_keys, s.eventgrid_key_param, entra,
                                             s.eventgrid_origins)
    if s.alibaba_accounts:
        certs = KeyCache(sns.load_certificate_key, fetch)
        routes["alibaba_eventbridge"] = AlibabaEventBridgeRoute(alibaba.EventBridgeVerifier(
            s.alibaba_accounts, s.alibaba_cert_url_pattern, certs))
    if s.cloudmonitor_sources or s.cloudmonitor_path_secrets:
        routes["cloudmonitor"] = CloudMonitorRoute(alibaba.SourceAllowList(s.cloudmonitor_sources),
                                                   s.cloudmonitor_path_secrets)
    if s.generic_tokens or s.generic_hmac or s.generic_basic:
        hmac = HmacVerifier(s.generic_hmac, max_skew_s=s.hmac_max_skew_s) if s.generic_hmac else None
        routes["generic"] = GenericRoute(hmac, s.generic_tokens, s.generic_basic)
    return routes


def run_ingest(kafka: Settings, env: Mapping[str, str] | None = None) -> int:
    """Run until SIGTERM/SIGINT. Configuration errors raise before anything starts."""
    from consumer.ingest.producer import RawWriter
    from consumer.runtime.clients import ensure_topics

    settings = load_ingest_settings(os.environ if env is None else env, kafka)
    REDACTOR.add(settings.secret_values())
    registry = CollectorRegistry()
    metrics = IngestMetrics(registry)
    # Liveness: the event loop turns (the producer's poll timer ticks at least every 50 ms).
    health = Health(stall_seconds=LOOP_STALL_S)
    health.reason = "broker not acknowledging yet"

    def on_ready(ready: bool) -> None:
        health.ready = ready
        health.reason = "" if ready else "broker unavailable"
        metrics.broker_available.set(1 if ready else 0)

    if kafka.create_topics:
        try:
            ensure_topics(kafka, {settings.topic: {}}, timeout=10)
        except Exception as exc:  # the broker may be away at start: readiness says so
            log.warning("cannot check the raw topic", topic=settings.topic, error=str(exc))
    writer = RawWriter(kafka, settings.topic, ack_timeout_ms=settings.ack_timeout_ms,
                       linger_ms=settings.linger_ms, on_ready=on_ready, on_tick=health.tick)
    routes = build_routes(settings)
    app = IngestApp(routes, writer, metrics, max_body_bytes=settings.max_body_bytes,
                    max_in_flight=settings.max_in_flight, retry_after_s=settings.retry_after_s,
                    public_url=settings.public_url, trusted_proxies=settings.trusted_proxies)
    health_server = HealthServer(registry, health, kafka.metrics_host, kafka.metrics_port).start()
    config = uvicorn.Config(app, host=settings.host, port=settings.port, loop="uvloop",
                            http="httptools", lifespan="off", access_log=False, log_config=None,
                            proxy_headers=False, server_header=False, date_header=False,
                            # Connections and tasks beyond this get uvicorn's own 503: idle
                            # keep-alive connections cannot pile up without bound either.
                            limit_concurrency=settings.max_in_flight + 256,
                            timeout_keep_alive=75, timeout_graceful_shutdown=kafka.shutdown_timeout_s,
                            h11_max_incomplete_event_size=64 * 1024)
    server = _Server(config)

    async def serve() -> None:
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, server.stop_accepting)
        writer.start()
        task = asyncio.create_task(server.serve())
        while not server.started and not task.done():
            await asyncio.sleep(0.02)
        if server.started:
            port = _bound_port(server)
            log.info("ingest listening", ingest=f"http://{settings.host}:{port}",
                     metrics=f"http://{kafka.metrics_host}:{health_server.port}/metrics",
                     routes=sorted(routes), topic=settings.topic)
        await task

    # Everything loaded so far lives as long as the process: out of the collector's way, so a
    # full collection does not walk it in the middle of requests.
    gc.collect()
    gc.freeze()
    try:
        with asyncio.Runner(loop_factory=_loop_factory()) as runner:
            runner.run(serve())
    finally:
        left = writer.close(min(5.0, kafka.shutdown_timeout_s))
        health_server.stop()
        log.info("ingest stopped", undelivered=left)
    return 0


class _Server(uvicorn.Server):
    """uvicorn's server with our signal handling: SIGTERM/SIGINT start the graceful shutdown and
    the process then exits 0 (uvicorn's own handlers re-raise the signal after shutting down)."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield

    def stop_accepting(self) -> None:
        if self.should_exit:
            self.force_exit = True  # a second signal: stop now
        self.should_exit = True


def _loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop where it is installed (the ingest extra), else asyncio's own loop."""
    try:
        import uvloop
    except ImportError:
        return None
    return uvloop.new_event_loop


def _bound_port(server: Any) -> int:
    for srv in server.servers:
        for sock in srv.sockets:
            return int(sock.getsockname()[1])
    return 0
