"""Secrets stay secret: in log lines (structlog and stdlib/librdkafka alike) and in errors."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest
import structlog

from consumer.config import load_settings
from consumer.errors import ConfigError
from consumer.logs import configure, kafka_logger
from consumer.redact import MASK, Redactor, url_without_credentials

ROOT = Path(__file__).resolve().parents[2]
PASSWORD = "s3cr3t-Pa55"


def test_url_credentials_are_masked_wherever_they_appear() -> None:
    r = Redactor()
    assert r.text("GET http://alice:s3cr3t@registry:8081/subjects failed") == (
        "GET http://alice:***@registry:8081/subjects failed")
    assert r.text("a=https://u:p%40ss@h/x,b=http://h2") == "a=https://u:***@h/x,b=http://h2"
    assert r.text("mail alice@example.com, http://host/x") == "mail alice@example.com, http://host/x"


def test_assignments_to_secret_names_in_text_are_masked() -> None:
    r = Redactor()
    assert r.text("conf sasl.password=hunter2, ssl.key.password = 'k3y'; user=bob") == (
        "conf sasl.password=***, ssl.key.password = '***'; user=bob")
    assert r.text('{"api_key": "AKIA123", "token":"t0k", "region": "cn-north-1"}') == (
        '{"api_key": "***", "token":"***", "region": "cn-north-1"}')
    assert r.text("eventTime: not a timestamp (password reset at 10:00)") == (
        "eventTime: not a timestamp (password reset at 10:00)")


def test_registered_secrets_and_secret_keys_are_masked() -> None:
    r = Redactor()
    r.add([PASSWORD, "ab"])  # too short to mask inside text without garbling it
    event = r(None, "info", {"event": f"auth failed with {PASSWORD}", "sasl.password": "x",
                             "conf": {"sasl.username": "bob", "ssl.key.password": "y"},
                             "n": 3, "about": "ab"})
    assert event == {"event": f"auth failed with {MASK}", "sasl.password": MASK,
                     "conf": {"sasl.username": "bob", "ssl.key.password": MASK},
                     "n": 3, "about": "ab"}


def test_settings_move_url_credentials_out_of_the_url() -> None:
    s = load_settings({"SCHEMA_REGISTRY_URL": "https://alice:p%40ss@registry:8081/apis/ccompat/v7",
                       "KAFKA_SASL_PASSWORD": PASSWORD, "KAFKA_SASL_USERNAME": "bob"})
    assert s.schema_registry_url == "https://registry:8081/apis/ccompat/v7"
    assert s.schema_registry_auth == "alice:p@ss"
    assert PASSWORD in s.secret_values()
    assert "p@ss" in s.secret_values()
    assert "bob" not in s.secret_values()
    assert PASSWORD not in repr(s)
    assert "p@ss" not in repr(s)
    assert url_without_credentials("http://host:1/x") == ("http://host:1/x", None)


def test_conflicting_registry_credentials_are_one_configuration_error() -> None:
    with pytest.raises(ConfigError) as info:
        load_settings({"SCHEMA_REGISTRY_URL": f"http://alice:{PASSWORD}@registry:8081",
                       "SCHEMA_REGISTRY_BASIC_AUTH_USER_INFO": f"alice:{PASSWORD}"})
    message = str(info.value)
    assert "give them in one place" in message
    assert PASSWORD not in message
    assert "\n" not in message


def test_every_bad_variable_is_reported_in_the_one_line() -> None:
    with pytest.raises(ConfigError) as info:
        load_settings({"VMEVENTS_BATCH_SIZE": "many", "SCHEMA_REGISTRY_URL": f"ftp://u:{PASSWORD}@h",
                       "VMEVENTS_CREATE_TOPICS": "perhaps"})
    message = str(info.value)
    assert "VMEVENTS_BATCH_SIZE='many' is not an integer" in message
    assert "SCHEMA_REGISTRY_URL='ftp://u:***@h' must start with http" in message
    assert "VMEVENTS_CREATE_TOPICS='perhaps' must be true or false" in message
    assert PASSWORD not in message
    assert "\n" not in message


def vmevents(*args: str, **env: str) -> subprocess.CompletedProcess[bytes]:
    clean = {k: v for k, v in os.environ.items()
             if not k.startswith(("VMEVENTS_", "KAFKA_", "SCHEMA_REGISTRY_"))}
    return subprocess.run([sys.executable, "-m", "consumer.cli", *args], capture_output=True,
                          env={**clean, **env}, cwd=ROOT, timeout=60, check=False)


def test_the_cli_prints_a_conflict_as_one_line_without_the_password() -> None:
    result = vmevents("normalize", os.devnull,
                      SCHEMA_REGISTRY_URL=f"http://alice:{PASSWORD}@registry:8081",
                      SCHEMA_REGISTRY_BASIC_AUTH_USER_INFO=f"alice:{PASSWORD}")
    assert result.returncode == 2
    lines = result.stderr.decode().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("vmevents: configuration error: SCHEMA_REGISTRY_URL carries credentials")
    assert PASSWORD.encode() not in result.stderr


@pytest.fixture
def restore_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    structlog.reset_defaults()
    root.handlers[:] = handlers
    root.setLevel(level)


def test_no_log_line_shows_a_secret(restore_logging: None, capfd: pytest.CaptureFixture[str]) -> None:
    s = load_settings({"SCHEMA_REGISTRY_URL": f"http://alice:{PASSWORD}@registry:8081",
                       "KAFKA_SASL_PASSWORD": "kafka-" + PASSWORD})
    configure("json", "info", s.secret_values())
    log = structlog.get_logger("test")
    log.info("registry configured", url=f"http://alice:{PASSWORD}@registry:8081",
             conf=s.kafka_common())
    try:
        raise RuntimeError(f"login failed for kafka-{PASSWORD}")
    except RuntimeError:
        log.exception("stage failed")
    kafka_logger("producer").warning("SASL authentication failed using password kafka-%s", PASSWORD)
    err = capfd.readouterr().err
    lines = [orjson.loads(line) for line in err.splitlines()]
    assert len(lines) == 3
    assert PASSWORD not in err
    assert lines[0]["url"] == "http://alice:***@registry:8081"
    assert lines[0]["conf"]["sasl.password"] == MASK
    assert "login failed for ***" in lines[1]["exception"]
    assert lines[2]["event"] == "SASL authentication failed using password ***"
