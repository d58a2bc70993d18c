"""The command line as a user meets it: offline commands, and one-line errors at start."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import orjson

from tests.seeds import SEEDS

ROOT = Path(__file__).resolve().parents[2]


def vmevents(*args: str, stdin: bytes = b"", **env: str) -> subprocess.CompletedProcess[bytes]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("VMEVENTS_", "KAFKA_"))}
    return subprocess.run([sys.executable, "-m", "consumer.cli", *args], input=stdin,
                          capture_output=True, env={**clean, **env}, cwd=ROOT, timeout=60, check=False)


def test_normalize_prints_every_seed_payload_and_reports_bad_lines() -> None:
    lines = [orjson.dumps(s.obj) for s in SEEDS]
    lines.insert(2, b"{broken")
    result = vmevents("normalize", "-", stdin=b"\n".join(lines) + b"\n")
    assert result.returncode == 0
    out = [orjson.loads(line) for line in result.stdout.splitlines()]
    assert len(out) == len(SEEDS)
    reboot = out[3]
    assert reboot["vendor"] == "jdcloud"
    assert reboot["vendor_event_code"] == "SystemFailure.Reboot"
    assert reboot["operation"] == "failure.reboot"
    assert reboot["phase"] == "executing"
    assert reboot["event_time"] == "2021-02-24T22:44:06Z"
    assert reboot["region"] is None
    error = orjson.loads(result.stderr.splitlines()[0])
    assert error["line"] == 3
    assert error["reason"] == "malformed_json"


def test_bad_configuration_stops_with_one_readable_line() -> None:
    result = vmevents("run", "--stage", "normalize", VMEVENTS_PROCESSING_GUARANTEE="twice")
    assert result.returncode == 2
    assert result.stderr.decode().strip().splitlines() == [
        "vmevents: configuration error: VMEVENTS_PROCESSING_GUARANTEE='twice' must be one of "
        "exactly_once, at_least_once"]


def test_unreachable_broker_stops_with_one_readable_line() -> None:
    result = vmevents("run", "--stage", "normalize", KAFKA_BOOTSTRAP_SERVERS="127.0.0.1:1",
                      VMEVENTS_LOG_LEVEL="critical", VMEVENTS_METRICS_PORT="0")
    assert result.returncode == 1
    lines = result.stderr.decode().strip().splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith("vmevents: no Kafka broker answers at 127.0.0.1:1")


def test_missing_input_file_is_a_one_line_error_not_a_configuration_error() -> None:
    for command in ("normalize", "correlate", "replay"):
        result = vmevents(command, "/does/not/exist.jsonl")
        assert result.returncode == 2
        assert result.stderr.decode().splitlines() == [
            "vmevents: cannot read /does/not/exist.jsonl: No such file or directory"]


def test_help_is_plain_text() -> None:
    for args in ([], ["tail"], ["dlq"], ["dlq", "redrive"]):
        result = vmevents(*args, "--help")
        assert result.returncode == 0
        assert b"``" not in result.stdout
        assert b":class:" not in result.stdout


def test_one_pending_operation_is_singular() -> None:
    reboot = next(s for s in SEEDS if s.obj.get("eventAction") == "SystemFailure.Reboot"
                  or s.obj.get("detail", {}).get("eventAction") == "SystemFailure.Reboot")
    result = vmevents("correlate", "-", stdin=reboot.raw.replace(b"\n", b" ") + b"\n")
    assert result.returncode == 0
    assert result.stderr.decode().splitlines()[-1] == (
        "vmevents: 1 operation still pending at the end of the input")
