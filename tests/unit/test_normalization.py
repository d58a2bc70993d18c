"""The Normalizer: detection, DLQ reasons, never raising anything but RejectedEvent."""

from __future__ import annotations

import copy
import io
import json
import re
import textwrap
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, get_type_hints

import fastavro
import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from consumer.errors import (
    ConfigError,
    InvalidEvent,
    InvalidTime,
    MalformedJson,
    NotAnObject,
    OutOfScope,
    PayloadTooLarge,
    RejectedEvent,
    UnknownVendor,
)
from consumer.model import PHASES, VENDORS, InstanceEvent
from consumer.normalization import Normalizer, aliyun, detect, jdcloud
from consumer.normalization.fields import MAX_FUTURE_MS, MIN_EVENT_TIME_MS
from consumer.normalization.timeparse import TimeParser
from tests.seeds import BY_NAME, SEEDS
from tests.vendor_samples import ALIYUN_SAMPLES, NOTES_SAMPLES

SAMPLES = (*SEEDS, *NOTES_SAMPLES, *ALIYUN_SAMPLES)

N = Normalizer()


def one(obj: object) -> InstanceEvent:
    """The one event of a parsed payload (the normalizer returns a list)."""
    [event] = N.normalize_obj(obj)
    return event
EVENT_KEYS = set(get_type_hints(InstanceEvent)) - {"source"}
DOCUMENTS = Path(__file__).resolve().parents[3] / "shared" / "seeds"


def assert_valid_event(event: InstanceEvent) -> None:
    """Shape of every adapter output: exactly the contract's keys, with the contract's types."""
    assert set(event) == EVENT_KEYS
    assert event["vendor"] in VENDORS
    assert isinstance(event["instance_id"], str)
    assert event["instance_id"]
    assert isinstance(event["vendor_event_code"], str)
    assert event["vendor_event_code"]
    assert re.fullmatch(r"[a-z0-9_]+(\.[a-z0-9_]+)*", event["operation"])
    assert event["phase"] is None or event["phase"] in PHASES
    assert type(event["event_time"]) is int
    for key in ("publish_time", "not_before", "start_time", "end_time"):
        assert event[key] is None or type(event[key]) is int
    for key in ("vendor_status", "region", "account_id", "notification_id", "vendor_event_id",
                "level", "previous_state", "current_state"):
        assert event[key] is None or type(event[key]) is str  # type: ignore[literal-required]
    assert all(type(k) is str and type(v) is str for k, v in event["attributes"].items())


# --- the seeds are the documents' examples ---

def document_blocks(path: Path) -> list[Any]:
    blocks: list[Any] = []
    current: list[str] | None = None
    for line in path.read_text(encoding="utf-8").splitlines(keepends=True):
        if line.strip().startswith("```"):
            if current is None:
                current = []
            else:
                text = textwrap.dedent("".join(current))
                if text.strip():
                    blocks.append(json.loads(text))
                current = None
        elif current is not None:
            current.append(line)
    return blocks


@pytest.mark.skipif(not DOCUMENTS.is_dir(), reason=f"source documents not at {DOCUMENTS}")
def test_seeds_are_the_documents_examples_in_order() -> None:
    jd = document_blocks(DOCUMENTS / "000_8fdccf977ae5e56b.txt")
    ali = document_blocks(DOCUMENTS / "001_2662114b5a5ca298.txt")
    assert [s.obj for s in SEEDS] == jd + ali


@pytest.mark.parametrize("seed", SEEDS, ids=lambda s: s.name)
def test_every_seed_normalizes_to_a_valid_event(seed: Any) -> None:
    event = N.normalize(seed.raw)
    assert_valid_event(event)
    assert event["vendor"] == seed.vendor
    assert event["known"] is True
    assert one(seed.obj) == event


def test_seeds_are_valid_avro() -> None:
    fastavro = pytest.importorskip("fastavro")
    schema_path = Path(__file__).resolve().parents[2] / "avro" / "InstanceEvent.avsc"
    schema = fastavro.parse_schema(json.loads(schema_path.read_text()))
    for seed in SEEDS:
        assert fastavro.validation.validate(N.normalize(seed.raw), schema, raise_errors=True)


# --- detection ---

@pytest.mark.parametrize(
    ("name", "adapter"),
    [
        ("jd_envelope_state_change_running", jdcloud.adapt_envelope),
        ("jd_gpu_failure_fault", jdcloud.adapt_detail),
        ("ali_maintenance_reboot_scheduled", aliyun.adapt_cloudmonitor),
        ("ali_state_change_running", aliyun.adapt_cloudmonitor),
    ],
)
def test_detect(name: str, adapter: Any) -> None:
    assert detect(BY_NAME[name].obj) is adapter


def test_detect_jd_envelope_by_detail_shape_alone() -> None:
    obj = BY_NAME["jd_envelope_state_change_running"].obj
    del obj["source"]
    assert detect(obj) is jdcloud.adapt_envelope


def test_detect_cloudmonitor_without_product() -> None:
    obj = BY_NAME["ali_state_change_running"].obj
    del obj["product"]
    assert detect(obj) is aliyun.adapt_cloudmonitor


def test_detect_eventbridge() -> None:
    obj: dict[str, object] = {"specversion": "1.0", "source": "acs.ecs",
                              "type": "ecs:Instance:StateChange"}
    assert detect(obj) is aliyun.adapt_eventbridge
    del obj["specversion"]  # a bridge that dropped it: the source still says who it is
    assert detect(obj) is aliyun.adapt_eventbridge


def test_one_normalizer_handles_both_vendors_interleaved() -> None:
    vendors = [N.normalize(s.raw)["vendor"] for s in SEEDS[::-1]]
    assert vendors == [s.vendor for s in SEEDS[::-1]]


# --- rejections and their reasons ---

@pytest.mark.parametrize(
    ("raw", "error", "reason"),
    [
        (b"", MalformedJson, "malformed_json"),
        (b"{", MalformedJson, "malformed_json"),
        (b"\xff\xfe{}", MalformedJson, "malformed_json"),
        (b'{"a": NaN}', MalformedJson, "malformed_json"),
        (b"[" * 5000 + b"]" * 5000, MalformedJson, "malformed_json"),
        (b"[1, 2]", NotAnObject, "not_an_object"),
        (b'"StateChange"', NotAnObject, "not_an_object"),
        (b"null", NotAnObject, "not_an_object"),
        (b"42", NotAnObject, "not_an_object"),
        (b"{}", UnknownVendor, "unknown_vendor"),
        (b'{"foo": 1, "bar": [2]}', UnknownVendor, "unknown_vendor"),
        (b'{"specversion": "1.0", "source": "acs.oss"}', UnknownVendor, "unknown_vendor"),
        (b'{"product": "RDS", "content": {}}', UnknownVendor, "unknown_vendor"),
        (b'{"eventAction": "StateChange"}', InvalidEvent, "invalid_event"),
        (b'{"product": "ECS", "name": "Instance:StateChange"}', InvalidEvent, "invalid_event"),
        (b'{"source": "jcloud.vm"}', InvalidEvent, "invalid_event"),
        (b'{"source": "acs.ecs", "specversion": "1.0"}', InvalidEvent, "invalid_event"),
        (b'{"eventAction": 1, "instanceId": "i", "eventTime": "2021-02-25 20:13:35"}',
         InvalidEvent, "invalid_event"),
    ],
)
def test_rejections(raw: bytes, error: type[RejectedEvent], reason: str) -> None:
    with pytest.raises(error) as info:
        N.normalize(raw)
    assert info.value.reason == reason
    assert str(info.value)


def test_instance_id_as_number_is_invalid() -> None:
    raw = b'{"eventAction": "SystemFailure.Fault", "eventTime": "2021-02-25 09:51:27", ' \
          b'"instanceId": 12345}'
    with pytest.raises(InvalidEvent, match="instanceId must be a string, got int"):
        N.normalize(raw)


def test_event_time_garbage_is_invalid() -> None:
    raw = b'{"eventAction": "SystemFailure.Fault", "eventTime": "25/02/2021", "instanceId": "i"}'
    with pytest.raises(InvalidEvent, match="eventTime: not a timestamp"):
        N.normalize(raw)


def test_huge_payload_is_rejected_before_parsing() -> None:
    seed = BY_NAME["jd_gpu_failure_fault"].raw
    huge = seed[:-2] + b', "pad": "' + b"x" * (1 << 20) + b'"}'
    with pytest.raises(PayloadTooLarge, match="exceeds the limit of 1048576 bytes") as info:
        N.normalize(huge)
    assert info.value.reason == "too_large"
    small = Normalizer(max_payload_bytes=len(seed))
    assert small.normalize(seed)["instance_id"] == "i-qj7****e7m"
    with pytest.raises(PayloadTooLarge):
        small.normalize(seed + b" ")


def test_non_bytes_input_is_rejected_not_crashing() -> None:
    for bad in (None, 42, object()):
        with pytest.raises(MalformedJson):
            N.normalize(bad)  # type: ignore[arg-type]


def test_normalize_accepts_bytes_like_and_str() -> None:
    seed = BY_NAME["jd_gpu_failure_fault"]
    expected = N.normalize(seed.raw)
    assert N.normalize(bytearray(seed.raw)) == expected
    assert N.normalize(memoryview(seed.raw)) == expected
    assert N.normalize(seed.text) == expected  # type: ignore[arg-type]


def test_normalize_obj_rejects_non_objects_and_non_json_values() -> None:
    with pytest.raises(NotAnObject, match="got an array"):
        one([1])
    obj = BY_NAME["jd_gpu_failure_fault"].obj | {"gpuSerial": {1, 2}}  # not a JSON value
    with pytest.raises(InvalidEvent, match="cannot normalize: TypeError"):
        one(obj)


def test_default_timezone_is_configurable() -> None:
    raw = BY_NAME["jd_system_failure_reboot_executing"].raw  # 2021-02-25 06:44:06
    assert Normalizer(default_timezone="UTC").normalize(raw)["event_time"] == 1614235446000
    assert N.normalize(raw)["event_time"] == 1614206646000
    with pytest.raises(ConfigError):
        Normalizer(default_timezone="Not/AZone")


def test_source_is_left_to_the_runtime() -> None:
    assert "source" not in N.normalize(BY_NAME["ali_state_change_running"].raw)


def test_results_do_not_share_state() -> None:
    raw = BY_NAME["jd_gpu_failure_fault"].raw
    first = N.normalize(raw)
    first["attributes"]["gpuSerial"] = "changed"
    assert N.normalize(raw)["attributes"]["gpuSerial"] == "gpu-serial:1:2:3"


# --- properties: nothing but RejectedEvent, ever ---

REASONS = {"malformed_json", "not_an_object", "unknown_vendor", "invalid_event", "too_large",
           "invalid_time", "out_of_scope"}
SCHEMA = fastavro.parse_schema(json.loads(
    (Path(__file__).resolve().parents[2] / "avro" / "InstanceEvent.avsc").read_text()))


def round_trip(event: InstanceEvent) -> None:
    """The event through fastavro with the shipped schema: written, read back, unchanged."""
    out = io.BytesIO()
    fastavro.schemaless_writer(out, SCHEMA, {**event, "source": None})
    out.seek(0)
    back: dict[str, Any] = fastavro.schemaless_reader(out, SCHEMA, SCHEMA)  # type: ignore[assignment]
    times = {key: None if back[key] is None else _ms(back[key]) for key in TIME_KEYS}
    assert {**back, **times} == {**event, "source": None}


TIME_KEYS = ("event_time", "publish_time", "not_before", "start_time", "end_time")
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _ms(value: Any) -> int:
    delta = value - _EPOCH
    return int(delta.days * 86_400_000 + delta.seconds * 1000 + delta.microseconds // 1000)


def normalize_or_reject(raw: bytes) -> None:
    """Either valid events that any Avro reader decodes, or a RejectedEvent with a known reason;
    anything else fails."""
    try:
        events = N.normalize_all(raw)
    except RejectedEvent as exc:
        reason = exc.reason
    else:
        for event in events:
            assert_valid_event(event)
            round_trip(event)
        return
    assert reason in REASONS


JSON_SCALARS = (st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1)
                | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=30))
JSON_VALUES = st.recursive(
    JSON_SCALARS,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner,
                                                                  max_size=4),
    max_leaves=12,
)
KEYS = st.sampled_from(["detail-type", "Type", "Message", "protoPayload", "resource",
                        "timestamp", "operation", "message", "subscription", "methodName",
                        "serviceName", "labels", "instance_id", "instance-id", "service",
                        "eventTypeCode", "statusCode", "startTime", "affectedEntities",
                        "entityValue", "ecsInstanceId", "eventAction", "eventState",
                        "eventTime", "instanceId", "detail",
                        "source", "specversion", "type", "data", "time", "product", "name",
                        "content", "resourceId", "userId", "regionId", "eventType",
                        "eventStatus", "status", "state", "subject", "resources", "id"])


@given(st.binary(max_size=300))
def test_arbitrary_bytes(raw: bytes) -> None:
    normalize_or_reject(raw)


@given(JSON_VALUES)
def test_arbitrary_json_values(value: Any) -> None:
    normalize_or_reject(orjson.dumps(value))


@given(st.dictionaries(KEYS, JSON_VALUES | st.dictionaries(KEYS, JSON_VALUES, max_size=6),
                       max_size=8))
def test_arbitrary_objects_with_vendor_keys(value: dict[str, Any]) -> None:
    normalize_or_reject(orjson.dumps(value))


@st.composite
def mutated_seeds(draw: st.DrawFn) -> bytes:
    obj = copy.deepcopy(draw(st.sampled_from(SAMPLES)).obj)
    for _ in range(draw(st.integers(1, 4))):
        targets = [obj] + [v for v in obj.values() if isinstance(v, dict)]
        target = draw(st.sampled_from(targets))
        if not target:
            continue
        key = draw(st.sampled_from(sorted(target)))
        action = draw(st.sampled_from(["drop", "retype", "empty"]))
        if action == "drop":
            del target[key]
        elif action == "empty":
            target[key] = type(target[key])() if isinstance(target[key], str | list | dict) else 0
        else:
            target[key] = draw(JSON_VALUES)
    return orjson.dumps(obj)


@settings(max_examples=500, suppress_health_check=[HealthCheck.too_slow])
@given(mutated_seeds())
def test_mutated_seeds(raw: bytes) -> None:
    normalize_or_reject(raw)


@given(st.sampled_from(SAMPLES), st.data())
def test_truncated_seeds(seed: Any, data: st.DataObject) -> None:
    cut = data.draw(st.integers(0, len(seed.raw) - 1))
    normalize_or_reject(seed.raw[:cut])


def test_absurdly_long_event_code_is_invalid_not_an_unbounded_operation() -> None:
    obj = BY_NAME["jd_system_failure_fault"].obj | {"eventAction": "System.Failure" * 100}
    with pytest.raises(InvalidEvent, match="eventAction is not an event code"):
        one(obj)
    ok = BY_NAME["jd_system_failure_fault"].obj | {"eventAction": "System." + "X" * 100}
    assert one(ok)["operation"] == "system.x" + "x" * 99


# --- several events per record; times and identifiers every reader can handle (#7) ---

HEALTH_TWO = {**NOTES_SAMPLES[0].obj}
HEALTH_TWO["detail"] = {**HEALTH_TWO["detail"], "affectedEntities": [
    {"entityValue": "i-0aaa0000000000001"}, {"entityValue": "i-0bbb0000000000002"}]}


def test_normalize_all_returns_every_event_and_normalize_refuses_to_pick_one() -> None:
    raw = orjson.dumps(HEALTH_TWO)
    assert [e["instance_id"] for e in N.normalize_all(raw)] == ["i-0aaa0000000000001",
                                                                "i-0bbb0000000000002"]
    with pytest.raises(InvalidEvent, match="holds 2 events; use normalize_all"):
        N.normalize(raw)


@pytest.mark.parametrize("when", [
    "0001-01-01 00:00:00", "1999-12-31 23:59:59", "9999-12-31T23:59:59-14:00",
    "2900-01-01 00:00:00",
])
def test_event_times_out_of_range_are_invalid_time(when: str) -> None:
    obj = BY_NAME["jd_system_failure_fault"].obj | {"eventTime": when}
    with pytest.raises(InvalidTime, match="outside the accepted range") as info:
        N.normalize_obj(obj)
    assert info.value.reason == "invalid_time"


def test_other_times_out_of_range_are_invalid_time_and_name_the_field() -> None:
    obj = BY_NAME["ali_maintenance_reboot_scheduled"].obj
    obj["content"]["notBefore"] = "0001-01-01T00:00:00Z"
    with pytest.raises(InvalidTime, match=r"content\.notBefore"):
        N.normalize_obj(obj)


def test_time_range_is_configurable() -> None:
    now = 1_800_000_000_000
    lax = Normalizer(min_event_time_ms=0, clock=lambda: now)
    spot = NOTES_SAMPLES[2]
    assert lax.normalize_all(spot.raw)[0]["event_time"] == 0
    strict = Normalizer(max_future_ms=0, clock=lambda: 1_600_000_000_000)  # 2020-09-13
    with pytest.raises(InvalidTime):
        strict.normalize_all(BY_NAME["ali_state_change_running"].raw.replace(b"2019", b"2021"))
    assert strict.normalize_all(BY_NAME["ali_state_change_running"].raw)


def test_future_bound_follows_the_clock() -> None:
    clock = [1_600_000_000_000]
    normalizer = Normalizer(max_future_ms=0, clock=lambda: clock[0])
    raw = BY_NAME["jd_system_failure_fault"].raw  # 2021-02-25
    with pytest.raises(InvalidTime):
        normalizer.normalize_all(raw)
    clock[0] = 1_700_000_000_000
    assert normalizer.normalize_all(raw)


def test_record_timestamp_out_of_range_is_invalid_time() -> None:
    debug = next(s for s in (*NOTES_SAMPLES, *ALIYUN_SAMPLES) if "debug" in s.name)
    with pytest.raises(InvalidTime, match="event_time"):
        N.normalize_all(debug.raw, received_ms=5)


def through_bytes(obj: dict[str, Any]) -> list[InstanceEvent]:
    """The stage's path: bytes through ``normalize_all`` and its inlined identifier check
    (room for the mebibyte-long identifier below, which the payload limit would stop first)."""
    return ROOMY.normalize_all(orjson.dumps(obj))


ROOMY = Normalizer(max_payload_bytes=4 << 20)


PATHS = pytest.mark.parametrize("normalize", [N.normalize_obj, through_bytes],
                                ids=["normalize_obj", "normalize_all"])
"""Every identifier rule is pinned on both paths: ``normalize_all`` repeats the common case of
``check_event`` inline, so a test through ``normalize_obj`` alone would not see it broken."""


@PATHS
@pytest.mark.parametrize(("field", "value", "why"), [
    ("instanceId", "   ", "instance_id is blank"),
    ("instanceId", "\u0000\u202e\u001b[31m   ", "instance_id holds control or format"),
    ("instanceId", "i-" + "x" * 127, "instance_id is 129 characters long"),
    ("instanceId", "i-\u2066abc\u2069", "instance_id holds control or format"),
    ("eventAction", "SystemFailure.Fault\n", "vendor_event_code holds control or format"),
])
def test_hostile_identifiers_are_invalid(normalize: Any, field: str, value: str, why: str) -> None:
    obj = BY_NAME["jd_system_failure_fault"].obj | {field: value}
    with pytest.raises(InvalidEvent, match=why):
        normalize(obj)


@PATHS
def test_hostile_optional_identifiers_are_invalid(normalize: Any) -> None:
    obj = BY_NAME["jd_envelope_state_change_running"].obj
    with pytest.raises(InvalidEvent, match="region holds control or format"):
        normalize(obj | {"region": "cn-east-1\u202e"})
    with pytest.raises(InvalidEvent, match="notification_id is 1048576 characters long"):
        normalize(obj | {"id": "x" * (1 << 20)})
    with pytest.raises(InvalidEvent, match="region is 129 characters long"):
        normalize(obj | {"region": "r" * 129})


@PATHS
@pytest.mark.parametrize("value", ["i-" + "x" * 126, "i-| a", " i-leading-space", "实例-1"])
def test_unusual_but_valid_identifiers_pass(normalize: Any, value: str) -> None:
    obj = BY_NAME["jd_system_failure_fault"].obj | {"instanceId": value}
    assert normalize(obj)[0]["instance_id"] == value


@PATHS
def test_identifiers_long_together_but_each_short_enough_pass(normalize: Any) -> None:
    """Past the inline check's joined length, the exact check decides: 128 each is fine."""
    obj = BY_NAME["jd_envelope_state_change_running"].obj
    event = normalize(obj | {"region": "r" * 128, "id": "n" * 128})[0]
    assert (event["region"], event["notification_id"]) == ("r" * 128, "n" * 128)


@settings(max_examples=300)
@given(st.text(min_size=0, max_size=140))
def test_any_instance_id_is_accepted_only_if_it_is_a_fair_identifier(value: str) -> None:
    obj = BY_NAME["jd_system_failure_fault"].obj | {"instanceId": value}
    try:
        [event] = N.normalize_obj(obj)
    except InvalidEvent:
        return
    assert event["instance_id"] == value
    assert 0 < len(value) <= 128
    assert value.isprintable()
    assert value.strip()


@settings(max_examples=300)
@given(st.binary(max_size=200) | JSON_VALUES.map(orjson.dumps) | mutated_seeds())
def test_any_bytes_inside_an_sns_or_pubsub_envelope(inner: bytes) -> None:
    """The envelopes the new adapters unwrap: their inner payload may be anything too."""
    import base64

    sns = {"Type": "Notification", "Message": inner.decode("utf-8", "replace")}
    push = {"message": {"data": base64.b64encode(inner).decode()}, "subscription": "s"}
    normalize_or_reject(orjson.dumps(sns))
    normalize_or_reject(orjson.dumps(push))


SAMPLE_FILES = sorted((Path(__file__).resolve().parents[2] / "deploy" / "local" / "samples")
                      .glob("*.jsonl"))


@pytest.mark.parametrize("path", SAMPLE_FILES, ids=lambda p: p.name)
def test_make_run_samples_all_normalize(path: Path) -> None:
    """What ``make run`` replays reaches the normalized topic, bar the one out-of-scope example;
    nothing goes to the DLQ."""
    skipped = 0
    for line in path.read_bytes().splitlines():
        try:
            events = N.normalize_all(line)
        except OutOfScope:
            skipped += 1
            continue
        assert events
    assert skipped == (1 if path.name == "aws-gcp-events.jsonl" else 0)


def test_make_run_replays_every_sample_file() -> None:
    script = (Path(__file__).resolve().parents[2] / "deploy" / "local" / "run.sh").read_text()
    for path in SAMPLE_FILES:
        assert f"replay deploy/local/samples/{path.name}" in script


BOUNDED = TimeParser(earliest_ms=MIN_EVENT_TIME_MS, max_future_ms=MAX_FUTURE_MS)


def adapt_or_reject(raw: bytes) -> None:
    """The adapters themselves, without the normalizer's catch-all: a vendor module may raise
    RejectedEvent subclasses only (anything else would be a bug the catch-all merely hides)."""
    try:
        obj = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return
    if type(obj) is not dict:
        return
    try:
        detect(obj)(obj, BOUNDED.parse, None)
    except RejectedEvent as exc:
        reason = exc.reason
    else:
        return
    assert reason in REASONS


@settings(max_examples=500, suppress_health_check=[HealthCheck.too_slow])
@given(mutated_seeds())
def test_adapters_raise_only_rejections_on_mutated_samples(raw: bytes) -> None:
    adapt_or_reject(raw)


@given(st.dictionaries(KEYS, JSON_VALUES | st.dictionaries(KEYS, JSON_VALUES, max_size=6),
                       max_size=8))
def test_adapters_raise_only_rejections_on_objects_with_vendor_keys(value: dict[str, Any]) -> None:
    adapt_or_reject(orjson.dumps(value))
