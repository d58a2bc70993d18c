from pathlib import Path

import pytest

from consumer.config import load_settings
from consumer.errors import ConfigError


def test_defaults_are_a_working_local_setup() -> None:
    s = load_settings({})
    assert s.bootstrap_servers == "127.0.0.1:9092"
    assert s.raw_topics == ("vm.events.raw",)
    assert s.normalized_topic == "vm.events.normalized"
    assert s.dlq_topic == "vm.events.dlq"
    assert s.guarantee == "exactly_once"
    assert s.default_timezone == "Asia/Shanghai"
    assert s.schema_registry_url is None
    assert (s.schema_dir / "InstanceEvent.avsc").is_file()


def test_environment_overrides_and_kafka_passthrough() -> None:
    s = load_settings({
        "KAFKA_BOOTSTRAP_SERVERS": "a:9092,b:9093",
        "KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
        "KAFKA_SASL_MECHANISM": "SCRAM-SHA-512",
        "VMEVENTS_RAW_TOPICS": "jd.raw, ali.raw",
        "VMEVENTS_PROCESSING_GUARANTEE": "at_least_once",
        "VMEVENTS_BATCH_SIZE": "500",
        "SCHEMA_REGISTRY_URL": "http://registry:8081",
    })
    assert s.bootstrap_servers == "a:9092,b:9093"
    assert s.kafka_extra == {"security.protocol": "SASL_SSL", "sasl.mechanism": "SCRAM-SHA-512"}
    assert s.raw_topics == ("jd.raw", "ali.raw")
    assert s.guarantee == "at_least_once"
    assert s.batch_size == 500
    assert s.kafka_common()["sasl.mechanism"] == "SCRAM-SHA-512"


def test_correlator_durations() -> None:
    assert (load_settings({}).correlate_allowed_lateness_ms,
            load_settings({}).correlate_late_end_horizon_ms) == (600_000, 7 * 86_400_000)
    s = load_settings({"VMEVENTS_CORRELATE_ALLOWED_LATENESS": "90s",
                       "VMEVENTS_CORRELATE_LATE_END_HORIZON": "2d"})
    assert (s.correlate_allowed_lateness_ms, s.correlate_late_end_horizon_ms) == (90_000,
                                                                                 172_800_000)


@pytest.mark.parametrize(("env", "needle"), [
    ({"VMEVENTS_BATCH_SIZE": "many"}, "VMEVENTS_BATCH_SIZE='many' is not an integer"),
    ({"VMEVENTS_BATCH_SIZE": "0"}, "VMEVENTS_BATCH_SIZE=0 must be"),
    ({"VMEVENTS_PROCESSING_GUARANTEE": "maybe"}, "must be one of exactly_once, at_least_once"),
    ({"VMEVENTS_DEFAULT_TIMEZONE": "Mars/Olympus"}, "not a known time zone"),
    ({"VMEVENTS_NORMALIZED_TOPIC": "bad topic!"}, "not a valid Kafka topic name"),
    ({"VMEVENTS_RAW_TOPICS": " , "}, "at least one topic"),
    ({"KAFKA_BOOTSTRAP_SERVERS": "localhost"}, "expected host:port"),
    ({"SCHEMA_REGISTRY_URL": "registry:8081"}, "must start with http"),
    ({"KAFKA_GROUP_ID": "x"}, "KAFKA_GROUP_ID is managed by vmevents"),
    ({"VMEVENTS_CREATE_TOPICS": "perhaps"}, "must be true or false"),
    ({"VMEVENTS_METRICS_PORT": "70000"}, "between 0 and 65535"),
    ({"VMEVENTS_CORRELATE_ALLOWED_LATENESS": "ten minutes"},
     "VMEVENTS_CORRELATE_ALLOWED_LATENESS='ten minutes' is not a duration"),
    ({"VMEVENTS_CORRELATE_LATE_END_HORIZON": "-1d"},
     "VMEVENTS_CORRELATE_LATE_END_HORIZON='-1d' is not a duration"),
])
def test_bad_values_name_the_variable(env: dict[str, str], needle: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(env)
    message = str(info.value)
    assert needle in message
    assert "\n" not in message


def test_schema_dir_must_hold_the_schemas(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"holds no InstanceEvent\.avsc"):
        load_settings({"VMEVENTS_SCHEMA_DIR": str(tmp_path)})


def test_transactional_ids_differ_between_processes_on_one_host() -> None:
    import os
    import subprocess
    import sys

    s = load_settings({})
    here = s.transactional_id_for("vmevents-normalize")
    code = ("from consumer.config import load_settings; "
            "print(load_settings({}).transactional_id_for('vmevents-normalize'))")
    there = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                           check=True).stdout.strip()
    assert here != there
    assert here.endswith(f"-{os.getpid()}")
    assert load_settings({"VMEVENTS_TRANSACTIONAL_ID": "pod-1"}).transactional_id_for("g") == "pod-1"


def test_client_call_and_shutdown_bounds() -> None:
    assert (load_settings({}).kafka_call_timeout_ms, load_settings({}).shutdown_timeout_s) == (30_000, 20)
    s = load_settings({"VMEVENTS_KAFKA_CALL_TIMEOUT_MS": "3000", "VMEVENTS_SHUTDOWN_TIMEOUT_S": "12"})
    assert (s.kafka_call_timeout_ms, s.shutdown_timeout_s) == (3000, 12)
    with pytest.raises(ConfigError, match="VMEVENTS_SHUTDOWN_TIMEOUT_S=0 must be"):
        load_settings({"VMEVENTS_SHUTDOWN_TIMEOUT_S": "0"})


def test_every_bad_variable_is_reported_on_one_line() -> None:
    with pytest.raises(ConfigError) as info:
        load_settings({"VMEVENTS_BATCH_SIZE": "many", "VMEVENTS_PROCESSING_GUARANTEE": "maybe",
                       "KAFKA_GROUP_ID": "x", "VMEVENTS_DEFAULT_TIMEZONE": "Mars/Olympus"})
    message = str(info.value)
    assert "\n" not in message
    for needle in ("VMEVENTS_BATCH_SIZE='many' is not an integer",
                   "VMEVENTS_PROCESSING_GUARANTEE='maybe' must be one of",
                   "KAFKA_GROUP_ID is managed by vmevents",
                   "VMEVENTS_DEFAULT_TIMEZONE='Mars/Olympus' is not a known time zone"):
        assert needle in message


def test_event_time_range_settings() -> None:
    settings = load_settings({"VMEVENTS_MIN_EVENT_TIME": "2010-01-01",
                              "VMEVENTS_MAX_FUTURE_DAYS": "30"})
    assert settings.min_event_time_ms == 1_262_304_000_000  # 2010-01-01T00:00:00Z
    assert settings.max_future_days == 30
    assert load_settings({}).min_event_time_ms == 946_684_800_000  # 2000-01-01
    with pytest.raises(ConfigError, match="VMEVENTS_MIN_EVENT_TIME='2010-13-01' is not a date"):
        load_settings({"VMEVENTS_MIN_EVENT_TIME": "2010-13-01"})
