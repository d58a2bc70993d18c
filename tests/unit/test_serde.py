"""Wire formats, checked with readers that know only the .avsc files, not our code."""

import io
import json
import struct
from pathlib import Path

import fastavro
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from consumer.config import DEFAULT_SCHEMA_DIR
from consumer.errors import TransientError
from consumer.serde import (
    AvroSchema,
    Decoder,
    SerdeError,
    confluent_encoder,
    load_schemas,
    single_object_encoder,
)

EVENT = {
    "vendor": "jdcloud", "instance_id": "i-bc4****9oh", "vendor_event_code": "SystemFailure.Reboot",
    "operation": "failure.reboot", "known": True, "phase": "executing", "vendor_status": "Executing",
    "event_time": 1614206646000, "region": "cn-north-1", "account_id": "pin", "notification_id": "n1",
    "vendor_event_id": None, "level": None, "previous_state": None, "current_state": None,
    "publish_time": None, "not_before": None, "start_time": None, "end_time": None,
    "source_format": "jdcloud.detail", "attributes": {"gpuSerial": "gpu-serial:1:2:3"},
    "source": {"topic": "vm.events.raw", "partition": 3, "offset": 42},
}


def crc64_avro(data: bytes) -> int:
    """CRC-64-AVRO as the Avro specification writes it, independent of fastavro."""
    empty = 0xC15D213AA4D7A795
    table = []
    for i in range(256):
        fp = i
        for _ in range(8):
            fp = (fp >> 1) ^ (empty & -(fp & 1))
        table.append(fp)
    fp = empty
    for b in data:
        fp = (fp >> 8) ^ table[(fp ^ b) & 0xFF]
    return fp


def avsc(name: str) -> dict:
    return json.loads((Path(DEFAULT_SCHEMA_DIR) / f"{name}.avsc").read_text())


def test_single_object_encoding_follows_the_avro_specification() -> None:
    schemas = load_schemas(DEFAULT_SCHEMA_DIR)
    data = single_object_encoder(schemas["InstanceEvent"])(EVENT)
    assert data[:2] == b"\xc3\x01"
    canonical = fastavro.schema.to_parsing_canonical_form(avsc("InstanceEvent"))
    assert data[2:10] == struct.pack("<Q", crc64_avro(canonical.encode()))
    # A reader that knows only the .avsc file decodes the body.
    record = fastavro.schemaless_reader(io.BytesIO(data[10:]), fastavro.parse_schema(avsc("InstanceEvent")))
    assert record["instance_id"] == "i-bc4****9oh"
    assert record["event_time"].isoformat() == "2021-02-24T22:44:06+00:00"
    assert record["source"] == {"topic": "vm.events.raw", "partition": 3, "offset": 42}
    assert record["attributes"] == {"gpuSerial": "gpu-serial:1:2:3"}


def test_decoder_round_trips_both_framings_with_int_timestamps() -> None:
    schemas = load_schemas(DEFAULT_SCHEMA_DIR)
    raw = avsc("InstanceEvent")
    decoder = Decoder(schemas, fetch_schema=lambda schema_id: raw if schema_id == 7 else {})
    for data in (single_object_encoder(schemas["InstanceEvent"])(EVENT),
                 confluent_encoder(schemas["InstanceEvent"], 7)(EVENT)):
        assert decoder.decode(data) == EVENT
    framed = confluent_encoder(schemas["InstanceEvent"], 7)(EVENT)
    assert framed[:5] == b"\x00\x00\x00\x00\x07"


def test_encoder_reuses_its_buffer_without_leaking_bytes_between_records() -> None:
    encode = single_object_encoder(load_schemas(DEFAULT_SCHEMA_DIR)["InstanceEvent"])
    long = encode({**EVENT, "instance_id": "i-" + "x" * 200})
    short = encode(EVENT)
    assert len(short) < len(long)
    assert Decoder(load_schemas(DEFAULT_SCHEMA_DIR)).decode(short)["instance_id"] == "i-bc4****9oh"


@pytest.mark.parametrize("data", [b"", b"{}", b"\xc3\x01" + b"\x00" * 8 + b"\x02", b"\x00\x00\x00\x00\x01"])
def test_undecodable_values_raise_serde_error(data: bytes) -> None:
    with pytest.raises(SerdeError):
        Decoder(load_schemas(DEFAULT_SCHEMA_DIR)).decode(data)


def test_truncated_body_raises_serde_error() -> None:
    schemas = load_schemas(DEFAULT_SCHEMA_DIR)
    data = single_object_encoder(schemas["InstanceEvent"])(EVENT)
    with pytest.raises(SerdeError):
        Decoder(schemas).decode(data[:20])



DEAD_LETTER = {"reason": "r", "error": "e", "exception": "X", "stage": "normalize",
               "source_topic": "t", "source_partition": 0, "source_offset": 1,
               "source_timestamp": None, "payload": b""}


def test_a_reader_expecting_instance_events_rejects_other_records() -> None:
    schemas = load_schemas(DEFAULT_SCHEMA_DIR)
    registry = {1: avsc("InstanceEvent"), 2: avsc("DeadLetter")}
    decoder = Decoder(schemas, fetch_schema=registry.__getitem__, expect="InstanceEvent")
    assert decoder.decode(confluent_encoder(schemas["InstanceEvent"], 1)(EVENT)) == EVENT
    assert decoder.decode(single_object_encoder(schemas["InstanceEvent"])(EVENT)) == EVENT
    with pytest.raises(SerdeError, match="expected InstanceEvent"):
        decoder.decode(confluent_encoder(schemas["DeadLetter"], 2)(DEAD_LETTER))
    with pytest.raises(SerdeError, match="unknown schema fingerprint"):
        decoder.decode(single_object_encoder(schemas["DeadLetter"])(DEAD_LETTER))


def test_a_registry_schema_must_have_every_field_with_the_same_type() -> None:
    schemas = load_schemas(DEFAULT_SCHEMA_DIR)
    base = avsc("InstanceEvent")
    added = {**base, "doc": "a newer writer", "fields": [
        *base["fields"], {"name": "extra", "type": "string", "default": ""}]}
    missing = {**base, "fields": [f for f in base["fields"] if f["name"] != "region"]}
    retyped = {**base, "fields": [{**f, "type": "long"} if f["name"] == "known" else f
                                  for f in base["fields"]]}
    registry = {1: added, 2: missing, 3: retyped}
    decoder = Decoder(schemas, fetch_schema=registry.__getitem__, expect="InstanceEvent")
    newer = AvroSchema.from_dict(added)
    assert decoder.decode(confluent_encoder(newer, 1)({**EVENT, "extra": "x"}))["extra"] == "x"
    with pytest.raises(SerdeError, match="has no field 'region'"):
        decoder.decode(confluent_encoder(schemas["InstanceEvent"], 2)(EVENT))
    with pytest.raises(SerdeError, match="another type for field 'known'"):
        decoder.decode(confluent_encoder(schemas["InstanceEvent"], 3)(EVENT))


def test_a_registry_outage_is_not_cached_and_not_a_serde_error() -> None:
    schemas = load_schemas(DEFAULT_SCHEMA_DIR)
    calls = []

    def fetch(schema_id: int) -> dict:
        calls.append(schema_id)
        if len(calls) == 1:
            raise TransientError("registry down")
        return avsc("InstanceEvent")

    decoder = Decoder(schemas, fetch_schema=fetch, expect="InstanceEvent")
    data = confluent_encoder(schemas["InstanceEvent"], 9)(EVENT)
    with pytest.raises(TransientError):
        decoder.decode(data)
    assert decoder.decode(data) == EVENT
    assert decoder.decode(data) == EVENT
    assert calls == [9, 9]


@settings(max_examples=300, deadline=None)
@given(cut=st.integers(min_value=0, max_value=400), noise=st.binary(max_size=64),
       framing=st.sampled_from(["single", "confluent"]))
def test_any_corruption_of_a_body_is_a_serde_error_never_another_exception(
        cut: int, noise: bytes, framing: str) -> None:
    schemas = load_schemas(DEFAULT_SCHEMA_DIR)
    encode = (single_object_encoder(schemas["InstanceEvent"]) if framing == "single"
              else confluent_encoder(schemas["InstanceEvent"], 1))
    data = encode(EVENT)
    corrupt = data[: 5 + cut] + noise
    decoder = Decoder(schemas, fetch_schema=lambda _: avsc("InstanceEvent"), expect="InstanceEvent")
    try:
        record = decoder.decode(corrupt)
    except SerdeError:
        return
    assert set(record) == set(EVENT)  # bytes that still decode give a whole InstanceEvent
