"""Helpers for the ingest integration tests: start `vmevents ingest`, talk HTTP to it on loopback."""

from __future__ import annotations

import http.client
import subprocess
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import orjson

from tests.ingest_vendor import ALIBABA_ACCOUNT, AUDIENCE, PUSH_ACCOUNT, SNS_TOPIC, KeyHost
from tests.integration.kafkatools import ROOT
from tests.integration.test_normalize_stage import wait_for

PUBLIC_URL = "https://events.example.com"
TOKEN = "relay-token-0123456789abcdef"
KEY = "grid-key-0123456789abcdef"
EB_KEY = "eb-key-0123456789abcdef"
PATH_SECRET = "cm-path-0123456789abcdef"
ENTRA_TENANT = "contoso-test"
ENTRA_AUDIENCE = "api://vmevents"
ENTRA_APP = "app-1"


def ingest_env(base: Mapping[str, str], keys: KeyHost, **overrides: str) -> dict[str, str]:
    """Every route on, the vendors' key hosts pointed at ``keys``."""
    env = dict(base)
    env.update({
        "VMEVENTS_INGEST_HOST": "127.0.0.1",
        "VMEVENTS_INGEST_PORT": "0",
        "VMEVENTS_INGEST_PUBLIC_URL": PUBLIC_URL,
        "VMEVENTS_INGEST_SNS_TOPIC_ARNS": SNS_TOPIC,
        "VMEVENTS_INGEST_SNS_URL_PATTERN": keys.pattern,
        "VMEVENTS_INGEST_EVENTBRIDGE_API_KEYS": f"eventbridge={EB_KEY}",
        "VMEVENTS_INGEST_PUBSUB_AUDIENCES": AUDIENCE,
        "VMEVENTS_INGEST_PUBSUB_SERVICE_ACCOUNTS": PUSH_ACCOUNT,
        "VMEVENTS_INGEST_PUBSUB_JWKS_URL": keys.url("/google/oauth2/v3/certs"),
        "VMEVENTS_INGEST_EVENTGRID_KEYS": f"grid={KEY}",
        "VMEVENTS_INGEST_EVENTGRID_ENTRA_TENANT": ENTRA_TENANT,
        "VMEVENTS_INGEST_EVENTGRID_ENTRA_AUDIENCES": ENTRA_AUDIENCE,
        "VMEVENTS_INGEST_EVENTGRID_ENTRA_APPS": ENTRA_APP,
        "VMEVENTS_INGEST_EVENTGRID_ENTRA_JWKS_URL": keys.url("/entra/discovery/v2.0/keys"),
        "VMEVENTS_INGEST_ALIBABA_ACCOUNT_IDS": ALIBABA_ACCOUNT,
        "VMEVENTS_INGEST_ALIBABA_CERT_URL_PATTERN": keys.pattern,
        "VMEVENTS_INGEST_CLOUDMONITOR_SOURCES": "203.0.113.0/24",
        "VMEVENTS_INGEST_CLOUDMONITOR_PATH_SECRETS": f"cm={PATH_SECRET}",
        "VMEVENTS_INGEST_GENERIC_TOKENS": f"jd-relay={TOKEN}",
        "VMEVENTS_INGEST_MAX_BODY_BYTES": "65536",
    })
    env.update(overrides)
    return env


@dataclass
class Ingest:
    proc: subprocess.Popen[bytes]
    port: int
    metrics_port: int
    log: Path

    def post(self, path: str, body: bytes, headers: Mapping[str, str] | None = None,
             method: str = "POST", timeout: float = 10.0) -> tuple[int, dict[str, str], bytes]:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        try:
            conn.request(method, path, body, dict(headers or {}))
            resp = conn.getresponse()
            return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()
        finally:
            conn.close()

    def get(self, path: str, port: int | None = None) -> tuple[int, bytes]:
        conn = http.client.HTTPConnection("127.0.0.1", port or self.metrics_port, timeout=5)
        try:
            conn.request("GET", path)
            resp = conn.getresponse()
            return resp.status, resp.read()
        finally:
            conn.close()

    def metric(self, name: str, **labels: str) -> float:
        _, text = self.get("/metrics")
        want = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
        for line in text.decode().splitlines():
            if line.startswith(name + ("{" if labels else " ")):
                head, _, value = line.rpartition(" ")
                got = head[len(name):].strip("{}")
                if ",".join(sorted(got.split(","))) == want or not labels:
                    return float(value)
        return 0.0

    def stop(self, timeout: float = 20.0) -> int:
        if self.proc.poll() is None:
            self.proc.terminate()
        return self.proc.wait(timeout)


def start_ingest(env: Mapping[str, str], log: Path) -> Ingest:
    out = open(log, "ab")  # noqa: SIM115  (owned by the child process)
    proc = subprocess.Popen([sys.executable, "-m", "consumer.cli", "ingest"], env=dict(env),
                            stdout=out, stderr=subprocess.STDOUT, cwd=ROOT)
    found: dict[str, int] = {}

    def listening() -> bool:
        for line in log.read_bytes().splitlines():
            if b"ingest listening" in line:
                event = orjson.loads(line)
                found["port"] = int(event["ingest"].rsplit(":", 1)[1])
                found["metrics"] = int(event["metrics"].split(":")[2].split("/")[0])
                return True
        return False

    wait_for(listening, 60, f"'ingest listening' in {log.name}", proc)
    return Ingest(proc, found["port"], found["metrics"], log)
