"""The command line as a user meets it: offline commands, and one-line errors at start."""

from __future__ import annotations

import contextlib
import io
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from consumer.cli import main
from tests.seeds import BY_NAME, SEEDS
from tests.vendor_samples import ALIYUN_DEBUG, AWS_HEALTH_SCHEDULED, GCP_HOST_ERROR

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


def test_normalize_goes_on_past_every_kind_of_bad_line_and_reports_each() -> None:
    health_two = AWS_HEALTH_SCHEDULED.obj
    health_two["detail"]["affectedEntities"] = [{"entityValue": "i-0aaa0000000000001"},
                                                {"entityValue": "i-0bbb0000000000002"}]
    rds = AWS_HEALTH_SCHEDULED.obj
    rds["detail"]["service"] = "RDS"
    jd = BY_NAME["jd_system_failure_fault"].obj
    lines = [
        orjson.dumps(jd | {"eventTime": "0001-01-01 00:00:00"}),  # year 1: invalid_time
        orjson.dumps(jd | {"eventTime": "9999-12-31T23:59:59-14:00"}),
        orjson.dumps(jd | {"instanceId": "\u0000\u202e\u001b[31m   "}),
        orjson.dumps(rds),  # out of scope
        orjson.dumps(health_two),  # two events
        ALIYUN_DEBUG.raw.replace(b"\n", b""),  # no event time: the read time
        b"\xff\xfe\x00",
        orjson.dumps(GCP_HOST_ERROR.obj),
    ]
    result = vmevents("normalize", "-", stdin=b"\n".join(lines) + b"\n")
    assert result.returncode == 0, result.stderr
    out = [orjson.loads(line) for line in result.stdout.splitlines()]
    assert [(e["vendor"], e["instance_id"]) for e in out] == [
        ("aws", "i-0aaa0000000000001"), ("aws", "i-0bbb0000000000002"),
        ("aliyun", "i-bp1ecr********5go2go"), ("gcp", "2074079198322937303")]
    assert out[2]["attributes"]["vmevents.event_time_source"] == "read_time"
    errors = [orjson.loads(line) for line in result.stderr.splitlines()]
    assert [(e["line"], e["reason"]) for e in errors] == [
        (1, "invalid_time"), (2, "invalid_time"), (3, "invalid_event"), (4, "out_of_scope"),
        (7, "malformed_json")]
    assert errors[3]["vendor"] == "aws"
    strict = vmevents("normalize", "--strict", "-", stdin=b"\n".join(lines[3:6]) + b"\n")
    assert strict.returncode == 0, "out of scope is not a rejection, even with --strict"


def run_normalize_in_process(path: Path) -> int:
    """``vmevents normalize <path>`` in this process (a subprocess per example is too slow)."""
    out, err = io.TextIOWrapper(io.BytesIO()), io.TextIOWrapper(io.BytesIO())
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        return main(["normalize", str(path)])


LINES = st.lists(st.binary(max_size=120).filter(lambda b: b"\n" not in b)
                 | st.sampled_from([s.raw.replace(b"\n", b"") for s in SEEDS[:3]])
                 | st.builds(orjson.dumps, st.dictionaries(
                     st.sampled_from(["eventAction", "eventTime", "instanceId", "source",
                                      "detail-type", "detail", "time", "protoPayload"]),
                     st.text(max_size=30) | st.integers(-(2**63), 2**63 - 1) | st.none(),
                     max_size=5)),
                 max_size=20)


@settings(max_examples=60, deadline=None)
@given(LINES)
def test_offline_normalize_never_exits_non_zero_on_any_line(lines: list[bytes]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "in.jsonl"
        path.write_bytes(b"\n".join(lines) + b"\n")
        assert run_normalize_in_process(path) == 0


INJECTED_BUG = """
import sys
from consumer import cli

def broken(args, settings):
    raise RuntimeError(sys.argv[1])

cli.cmd_normalize = broken
sys.exit(cli.main(["normalize", "-"]))
"""
SECRETS = ("kafka-Pa55-registered", "pw-in-url", "hunter2-in-text")
BUG_MESSAGE = (f"lost {SECRETS[0]} while calling http://alice:{SECRETS[1]}@registry:8081\n"
               f"with sasl.password={SECRETS[2]}")


def injected_bug(**env: str) -> subprocess.CompletedProcess[bytes]:
    """``vmevents normalize`` whose command raises an error no code path expects."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("VMEVENTS_", "KAFKA_"))}
    return subprocess.run([sys.executable, "-c", INJECTED_BUG, BUG_MESSAGE], capture_output=True,
                          env={**clean, "KAFKA_SASL_PASSWORD": SECRETS[0], **env}, cwd=ROOT,
                          timeout=60, check=False)


def test_an_unexpected_error_is_one_redacted_line_with_a_crash_id_and_exit_70() -> None:
    result = injected_bug()
    assert result.returncode == 70
    [line] = result.stderr.decode().splitlines()
    assert line.startswith("vmevents: unexpected error (crash id ")
    assert "RuntimeError: lost *** while calling http://alice:***@registry:8081 with " \
           "sasl.password=***;" in line
    assert all(secret.encode() not in result.stderr for secret in SECRETS)
    assert b"Traceback" not in result.stderr


def test_at_debug_level_the_traceback_is_logged_redacted_under_the_crash_id() -> None:
    result = injected_bug(VMEVENTS_LOG_LEVEL="debug", VMEVENTS_LOG_FORMAT="json")
    assert result.returncode == 70
    lines = result.stderr.decode().splitlines()
    [line] = [ln for ln in lines if ln.startswith("vmevents: unexpected error")]
    logs = [ln for ln in lines if ln != line]
    crash_id = line.split("crash id ", 1)[1].split(")", 1)[0]
    [logged] = [entry for entry in map(orjson.loads, logs) if entry.get("crash_id") == crash_id]
    assert logged["level"] == "debug"
    assert "Traceback" in logged["exception"]
    assert "in broken" in logged["exception"]
    assert all(secret.encode() not in result.stderr for secret in SECRETS)
