"""``vmevents agent azure``: the per-VM forwarder of IMDS Scheduled Events.

IMDS is only reachable from the VM itself, its documents carry no time and name VMs by name,
and an event's end is its absence. So one small process per node (a DaemonSet):

1. reads the VM's identity once from ``/metadata/instance/compute``;
2. polls ``/metadata/scheduledevents`` every second (Microsoft's recommended cadence; the first
   call enables the service, whose answer may take minutes: a timeout is just "not yet"), with
   the ``Metadata: true`` header and an ``api-version``;
3. when the document differs from the last one (and on start), wraps it in the versioned
   envelope :mod:`consumer.normalization.azure` reads, stamped with the time it was read;
4. delivers the envelopes in order, to the raw Kafka topic (idempotent producer, acks=all,
   keyed by VM so one VM's documents stay in order) or as JSON POSTs with a bearer token to
   ``vmevents ingest``; a document stays in the outbox until acknowledged, retried with
   exponential backoff (``Retry-After`` honoured), so a broker or front door outage loses
   nothing (the outbox is bounded: past ``outbox_max`` the oldest is dropped and counted);
5. optionally (off by default) approves a Scheduled event of an allowed type naming this VM:
   runs the configured hook (e.g. a node drain) and, when it exits 0, POSTs
   ``{"StartRequests": [{"EventId": ...}]}``, once per event.

Configuration is environment variables (``VMEVENTS_AGENT_*``, see :meth:`AgentConfig.from_env`);
an error stops the agent at start with one line, like the stages.
"""

from __future__ import annotations

import email.utils
import os
import shlex
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final, Protocol

import orjson
import structlog
from prometheus_client import CollectorRegistry, Counter, Gauge

from consumer.config import Settings
from consumer.errors import ConfigError
from consumer.normalization.azure import ENVELOPE_KEY, ENVELOPE_KIND, ENVELOPE_VERSION, vm_key

log = structlog.get_logger(__name__)

IMDS_BASE: Final = "http://169.254.169.254"
SCHEDULED_EVENTS_PATH: Final = "/metadata/scheduledevents"
SCHEDULED_EVENTS_API: Final = "2020-07-01"
COMPUTE_PATH: Final = "/metadata/instance/compute"
COMPUTE_API: Final = "2021-02-01"
IDENTITY_FIELDS: Final = ("vmId", "name", "resourceId", "subscriptionId", "resourceGroupName",
                          "location", "vmScaleSetName")
DEFAULT_APPROVE_TYPES: Final = frozenset({"Reboot", "Redeploy", "Preempt", "Terminate"})
"""Freeze is left out: a seconds-long pause is not worth a drain (what users ask for)."""


class AgentError(Exception):
    """IMDS or a delivery target did not answer as expected (retried, never fatal)."""


@dataclass(frozen=True, slots=True)
class AgentConfig:
    """What ``vmevents agent azure`` reads from its environment."""

    delivery: str = "kafka"
    imds_url: str = IMDS_BASE
    poll_interval_s: float = 1.0
    imds_timeout_s: float = 10.0
    topic: str = "vm.events.raw"
    http_url: str = ""
    http_token: str = ""
    http_timeout_s: float = 10.0
    backoff_initial_s: float = 1.0
    backoff_max_s: float = 60.0
    outbox_max: int = 10_000
    approve_hook: tuple[str, ...] = ()
    approve_types: frozenset[str] = DEFAULT_APPROVE_TYPES
    hook_timeout_s: float = 900.0

    @classmethod
    def from_env(cls, env: Mapping[str, str], raw_topic: str) -> AgentConfig:
        """The configuration, or one ConfigError naming every bad variable."""
        problems: list[str] = []

        def number(name: str, default: float, low: float) -> float:
            raw = env.get(name, "").strip()
            try:
                value = float(raw) if raw else default
            except ValueError:
                problems.append(f"{name}={raw!r} is not a number of seconds")
                return default
            if value < low:
                problems.append(f"{name}={raw} must be >= {low}")
            return value

        delivery = env.get("VMEVENTS_AGENT_DELIVERY", "kafka").strip().lower() or "kafka"
        if delivery not in ("kafka", "http"):
            problems.append(f"VMEVENTS_AGENT_DELIVERY={delivery!r} must be kafka or http")
        imds = env.get("VMEVENTS_AGENT_IMDS_URL", IMDS_BASE).strip().rstrip("/")
        http_url = env.get("VMEVENTS_AGENT_HTTP_URL", "").strip()
        token = env.get("VMEVENTS_AGENT_HTTP_TOKEN", "")
        token_file = env.get("VMEVENTS_AGENT_HTTP_TOKEN_FILE", "")
        if token_file and not token:
            try:
                with open(token_file, encoding="utf-8") as handle:
                    token = handle.read().strip()
            except OSError as exc:
                problems.append(f"VMEVENTS_AGENT_HTTP_TOKEN_FILE={token_file!r}: {exc.strerror}")
        for name, url in (("VMEVENTS_AGENT_IMDS_URL", imds), ("VMEVENTS_AGENT_HTTP_URL", http_url)):
            if url and not url.startswith(("http://", "https://")):
                problems.append(f"{name}={url!r} must start with http:// or https://")
        if delivery == "http" and (not http_url or not token):
            problems.append("VMEVENTS_AGENT_DELIVERY=http needs VMEVENTS_AGENT_HTTP_URL and "
                            "VMEVENTS_AGENT_HTTP_TOKEN (or _TOKEN_FILE)")
        hook = env.get("VMEVENTS_AGENT_APPROVE_HOOK", "").strip()
        try:
            hook_argv = tuple(shlex.split(hook))
        except ValueError as exc:
            problems.append(f"VMEVENTS_AGENT_APPROVE_HOOK: {exc}")
            hook_argv = ()
        types = env.get("VMEVENTS_AGENT_APPROVE_TYPES", "").strip()
        approve_types = frozenset(t.strip() for t in types.split(",") if t.strip()) if types \
            else DEFAULT_APPROVE_TYPES
        outbox = number("VMEVENTS_AGENT_OUTBOX_MAX", 10_000, 1)
        config = cls(
            delivery=delivery, imds_url=imds,
            poll_interval_s=number("VMEVENTS_AGENT_POLL_INTERVAL_S", 1.0, 0.01),
            imds_timeout_s=number("VMEVENTS_AGENT_IMDS_TIMEOUT_S", 10.0, 0.1),
            topic=env.get("VMEVENTS_AGENT_TOPIC", "").strip() or raw_topic,
            http_url=http_url, http_token=token,
            http_timeout_s=number("VMEVENTS_AGENT_HTTP_TIMEOUT_S", 10.0, 0.1),
            backoff_initial_s=number("VMEVENTS_AGENT_BACKOFF_INITIAL_S", 1.0, 0.01),
            backoff_max_s=number("VMEVENTS_AGENT_BACKOFF_MAX_S", 60.0, 0.01),
            outbox_max=int(outbox), approve_hook=hook_argv, approve_types=approve_types,
            hook_timeout_s=number("VMEVENTS_AGENT_HOOK_TIMEOUT_S", 900.0, 1.0))
        if problems:
            raise ConfigError("; ".join(problems))
        return config


# -- IMDS ------------------------------------------------------------------------------------------

class Imds:
    """The three IMDS calls the agent makes; ``base_url`` is configurable so tests use a local
    server."""

    def __init__(self, base_url: str = IMDS_BASE, timeout_s: float = 10.0) -> None:
        self.base_url = base_url.rstrip("/")
        self.timeout_s = timeout_s

    def _call(self, path: str, api: str, body: bytes | None = None) -> Any:
        request = urllib.request.Request(f"{self.base_url}{path}?api-version={api}", data=body,
                                         headers={"Metadata": "true"},
                                         method="POST" if body is not None else "GET")
        if body is not None:
            request.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(request, timeout=self.timeout_s) as answer:
                raw = answer.read()
        except (urllib.error.URLError, OSError, ValueError) as exc:
            raise AgentError(f"IMDS {path}: {exc}") from None
        if not raw.strip():
            return None
        try:
            return orjson.loads(raw)
        except orjson.JSONDecodeError:
            raise AgentError(f"IMDS {path}: the answer is not JSON") from None

    def identity(self) -> dict[str, str]:
        compute = self._call(COMPUTE_PATH, COMPUTE_API)
        if type(compute) is not dict or not compute.get("name"):
            raise AgentError("IMDS compute metadata has no VM name")
        return {key: str(compute.get(key) or "") for key in IDENTITY_FIELDS}

    def scheduled_events(self) -> dict[str, Any]:
        document = self._call(SCHEDULED_EVENTS_PATH, SCHEDULED_EVENTS_API)
        if type(document) is not dict or type(document.get("DocumentIncarnation")) is not int:
            raise AgentError("IMDS scheduled events: not a Scheduled Events document")
        return document

    def approve(self, event_id: str) -> None:
        self._call(SCHEDULED_EVENTS_PATH, SCHEDULED_EVENTS_API,
                   orjson.dumps({"StartRequests": [{"EventId": event_id}]}))


# -- delivery ---------------------------------------------------------------------------------------

class Sink(Protocol):
    def send(self, key: bytes, value: bytes) -> None:
        """Deliver one envelope or raise AgentError; returns only once it is acknowledged."""

    def close(self) -> None: ...


class HttpSink:
    """POST JSON with ``Authorization: Bearer``; 2xx is the acknowledgement."""

    def __init__(self, url: str, token: str, timeout_s: float = 10.0) -> None:
        self.url, self._token, self.timeout_s = url, token, timeout_s
        self.retry_after_s: float | None = None

    def send(self, key: bytes, value: bytes) -> None:
        self.retry_after_s = None
        request = urllib.request.Request(self.url, data=value, method="POST", headers={
            "Authorization": f"Bearer {self._token}", "Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=self.timeout_s) as answer:
                answer.read()
        except urllib.error.HTTPError as exc:
            self.retry_after_s = _retry_after(exc.headers.get("Retry-After"))
            raise AgentError(f"POST {self.url}: HTTP {exc.code}") from None
        except (urllib.error.URLError, OSError, ValueError) as exc:
            raise AgentError(f"POST {self.url}: {exc}") from None

    def close(self) -> None:
        return


def _retry_after(value: str | None) -> float | None:
    """Seconds from a Retry-After header (delta seconds or an HTTP date); None if absent."""
    if not value:
        return None
    if value.strip().isdigit():
        return float(value.strip())
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, (when - datetime.now(UTC)).total_seconds())


class KafkaSink:
    """The raw topic through an idempotent, acks=all producer (``runtime.clients``); a send
    waits for its delivery report."""

    def __init__(self, producer: Any, topic: str, timeout_s: float = 30.0) -> None:
        self._producer, self.topic, self.timeout_s = producer, topic, timeout_s

    @classmethod
    def from_settings(cls, settings: Settings, topic: str) -> KafkaSink:
        """The stages' producer settings (idempotent, acks=all, the user's SASL/SSL), with a
        delivery report for every record: a send is acknowledged by its report."""
        from confluent_kafka import Producer

        from consumer.runtime.clients import producer_conf

        conf = producer_conf(settings, None, **{"linger.ms": 0,
                                                "delivery.report.only.error": False})
        return cls(Producer(conf), topic)

    def send(self, key: bytes, value: bytes) -> None:
        result: list[Any] = []
        try:
            self._producer.produce(self.topic, value, key=key,
                                   on_delivery=lambda err, msg: result.append(err))
        except Exception as exc:  # BufferError (queue full), KafkaException
            raise AgentError(f"produce to {self.topic}: {exc}") from None
        deadline = time.monotonic() + self.timeout_s
        while not result and time.monotonic() < deadline:
            self._producer.poll(0.1)
        if not result:
            raise AgentError(f"produce to {self.topic}: no acknowledgement in {self.timeout_s} s")
        if result[0] is not None:
            raise AgentError(f"produce to {self.topic}: {result[0]}")

    def close(self) -> None:
        self._producer.flush(5)


# -- the agent ----------------------------------------------------------------------------------------

class AgentMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.polls = Counter("vmevents_agent_polls", "IMDS polls, by result.", ["result"],
                             registry=registry)
        self.forwarded = Counter("vmevents_agent_documents_forwarded",
                                 "Scheduled Events documents acknowledged by the target.",
                                 registry=registry)
        self.delivery_failures = Counter("vmevents_agent_delivery_failures",
                                         "Failed deliveries (retried).", registry=registry)
        self.dropped = Counter("vmevents_agent_documents_dropped",
                               "Documents dropped because the outbox was full.", registry=registry)
        self.approvals = Counter("vmevents_agent_approvals", "StartRequests sent, by result.",
                                 ["result"], registry=registry)
        self.outbox = Gauge("vmevents_agent_outbox", "Documents waiting for acknowledgement.",
                            registry=registry)
        for result in ("ok", "error"):
            self.polls.labels(result)
            self.approvals.labels(result)


def envelope(identity: Mapping[str, str], document: Mapping[str, Any], observed_ms: int) -> bytes:
    """The envelope version 1 (consumer/normalization/azure.py) of one document."""
    stamp = datetime.fromtimestamp(observed_ms / 1000, UTC)
    return orjson.dumps({
        ENVELOPE_KEY: ENVELOPE_KIND, "version": ENVELOPE_VERSION,
        "observedAt": stamp.strftime("%Y-%m-%dT%H:%M:%S.") + f"{observed_ms % 1000:03d}Z",
        "vm": dict(identity), "document": document})


class Agent:
    """Poll, diff, deliver, approve: one :meth:`step` per poll (tests drive it directly)."""

    def __init__(self, config: AgentConfig, imds: Imds, sink: Sink, *,
                 registry: CollectorRegistry | None = None,
                 clock: Callable[[], float] = time.time,
                 run_hook: Callable[[tuple[str, ...], Mapping[str, str], float], int] | None = None
                 ) -> None:
        self.config, self.imds, self.sink, self.clock = config, imds, sink, clock
        self.metrics = AgentMetrics(registry or CollectorRegistry())
        self.identity: dict[str, str] | None = None
        self.outbox: deque[bytes] = deque()
        self._last: bytes | None = None
        self._next_send = 0.0
        self._backoff = config.backoff_initial_s
        self._approved: set[str] = set()
        self._hook_retry: dict[str, float] = {}
        self._run_hook = run_hook or _run_hook

    def step(self) -> None:
        """One poll: identity (until known), the document, delivery, approval."""
        if self.identity is None:
            try:
                self.identity = self.imds.identity()
                log.info("agent: VM identity read", vm=self.identity["name"],
                         resource_id=self.identity["resourceId"])
            except AgentError as exc:
                self.metrics.polls.labels("error").inc()
                log.warning("agent: IMDS identity not available yet", error=str(exc))
                return
        try:
            document = self.imds.scheduled_events()
        except AgentError as exc:
            self.metrics.polls.labels("error").inc()
            log.warning("agent: IMDS scheduled events not available", error=str(exc))
            document = None
        if document is not None:
            self.metrics.polls.labels("ok").inc()
            self._observe(document)
        self.deliver()
        if document is not None and self.config.approve_hook:
            self._approve(document)

    def _observe(self, document: dict[str, Any]) -> None:
        canonical = orjson.dumps(document, option=orjson.OPT_SORT_KEYS)
        if canonical == self._last:
            return
        self._last = canonical
        assert self.identity is not None
        if len(self.outbox) >= self.config.outbox_max:
            self.outbox.popleft()
            self.metrics.dropped.inc()
            log.error("agent: outbox full, oldest document dropped",
                      outbox_max=self.config.outbox_max)
        self.outbox.append(envelope(self.identity, document, int(self.clock() * 1000)))
        self.metrics.outbox.set(len(self.outbox))
        log.info("agent: document changed", incarnation=document["DocumentIncarnation"],
                 events=len(document.get("Events") or []))

    def deliver(self) -> None:
        """Send what waits, oldest first, until one fails (then back off)."""
        if not self.outbox or self.clock() < self._next_send:
            return
        assert self.identity is not None
        key = vm_key(self.identity["subscriptionId"], self.identity["resourceGroupName"],
                     self.identity["name"]).encode()
        while self.outbox:
            try:
                self.sink.send(key, self.outbox[0])
            except AgentError as exc:
                self.metrics.delivery_failures.inc()
                hint = getattr(self.sink, "retry_after_s", None)
                wait = max(self._backoff, hint or 0.0)
                self._next_send = self.clock() + wait
                self._backoff = min(self._backoff * 2, self.config.backoff_max_s)
                log.warning("agent: delivery failed, document kept", error=str(exc),
                            retry_in_s=round(wait, 3), waiting=len(self.outbox))
                break
            self.outbox.popleft()
            self.metrics.forwarded.inc()
            self._backoff = self.config.backoff_initial_s
        self.metrics.outbox.set(len(self.outbox))

    def _approve(self, document: Mapping[str, Any]) -> None:
        assert self.identity is not None
        name = self.identity["name"].lower()
        for event in document.get("Events") or []:
            if type(event) is not dict:
                continue
            eid, kind = str(event.get("EventId") or ""), str(event.get("EventType") or "")
            resources = [str(r).lower() for r in event.get("Resources") or []]
            if not eid or eid in self._approved or event.get("EventStatus") != "Scheduled" or \
                    kind not in self.config.approve_types or (resources and name not in resources):
                continue
            if self.clock() < self._hook_retry.get(eid, 0.0):
                continue
            env = {"VMEVENTS_EVENT_ID": eid, "VMEVENTS_EVENT_TYPE": kind,
                   "VMEVENTS_NOT_BEFORE": str(event.get("NotBefore") or "")}
            code = self._run_hook(self.config.approve_hook, env, self.config.hook_timeout_s)
            if code != 0:
                self._hook_retry[eid] = self.clock() + 30.0
                log.warning("agent: approval hook failed, event not approved", event_id=eid,
                            exit_code=code)
                continue
            try:
                self.imds.approve(eid)
            except AgentError as exc:
                self.metrics.approvals.labels("error").inc()
                log.warning("agent: StartRequests failed", event_id=eid, error=str(exc))
                continue
            self._approved.add(eid)
            self.metrics.approvals.labels("ok").inc()
            log.info("agent: event approved after the hook", event_id=eid, event_type=kind)

    def run(self, stop: threading.Event, tick: Callable[[], None] = lambda: None) -> None:
        """Poll until ``stop`` is set, then try once more to deliver what waits; ``tick`` after
        every poll (the liveness probe)."""
        while not stop.is_set():
            began = time.monotonic()
            self.step()
            tick()
            stop.wait(max(0.0, self.config.poll_interval_s - (time.monotonic() - began)))
        self._next_send = 0.0
        self.deliver()
        if self.outbox:
            log.warning("agent: stopping with undelivered documents", waiting=len(self.outbox))
        self.sink.close()


def _run_hook(argv: tuple[str, ...], env: Mapping[str, str], timeout_s: float) -> int:
    try:
        return subprocess.run(argv, env={**os.environ, **env}, timeout=timeout_s,
                              check=False).returncode
    except (OSError, subprocess.TimeoutExpired) as exc:
        log.warning("agent: approval hook did not run to the end", error=str(exc))
        return -1
