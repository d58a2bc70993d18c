"""The compiled codec against fastavro itself: same bytes out, same records back, and errors
that name the field, for every shipped schema and a synthetic one using every Avro type."""

from __future__ import annotations

import contextlib
import datetime
import io
import json
import math
import struct
from pathlib import Path
from typing import Any

import fastavro
import pytest
from fastavro.validation import validate
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from consumer.avrocodec import AvroEncodeError, AvroTypeError, compile_codec
from consumer.config import DEFAULT_SCHEMA_DIR
from consumer.serde import _strip_logical

INT_MIN, INT_MAX = -(1 << 31), (1 << 31) - 1
LONG_MIN, LONG_MAX = -(1 << 63), (1 << 63) - 1

SYNTHETIC: dict[str, Any] = {
    "type": "record", "name": "Everything", "namespace": "test.avrocodec",
    "fields": [
        {"name": "n", "type": "null"},
        {"name": "b", "type": "boolean", "default": False},
        {"name": "i", "type": "int", "default": -1},
        {"name": "l", "type": "long"},
        {"name": "f", "type": "float", "default": 1.5},
        {"name": "d", "type": {"type": "double"}},
        {"name": "raw", "type": "bytes"},
        {"name": "s", "type": "string", "default": "dflt"},
        {"name": "e", "type": {"type": "enum", "name": "Color", "symbols": ["RED", "GREEN", "BLUE"]},
         "default": "GREEN"},
        {"name": "fx", "type": {"type": "fixed", "name": "Four", "size": 4}},
        {"name": "ints", "type": {"type": "array", "items": "int"}, "default": [1, 2]},
        {"name": "strs", "type": {"type": "map", "values": "string"}, "default": {"a": "b"}},
        {"name": "colors", "type": {"type": "array", "items": "Color"}},
        {"name": "nested", "type": {"type": "record", "name": "Inner", "fields": [
            {"name": "x", "type": "long"},
            {"name": "tag", "type": ["null", "string"], "default": None},
            {"name": "four", "type": "test.avrocodec.Four"},
        ]}},
        {"name": "maybe_inner", "type": ["null", "Inner"], "default": None},
        {"name": "inner_map", "type": {"type": "map", "values": ["null", "Inner"]}},
        {"name": "string_null", "type": ["string", "null"], "default": "x"},
        {"name": "num", "type": ["null", "boolean", "int", "long", "double", "string", "bytes"]},
        {"name": "widths", "type": ["float", "double"]},
        {"name": "long_first", "type": ["long", "int"]},
        {"name": "enum_or_string", "type": ["null", "Color", "string"]},
        {"name": "two_records", "type": [
            {"type": "record", "name": "Point", "fields": [{"name": "x", "type": "int"},
                                                          {"name": "y", "type": "int"}]},
            {"type": "record", "name": "Named", "fields": [{"name": "name", "type": "string"}]},
            "null",
        ]},
        {"name": "arrays", "type": ["null", {"type": "array", "items": "string"},
                                    {"type": "map", "values": "long"}]},
        {"name": "maybe_float", "type": ["null", "float"], "default": None},
        {"name": "maybe_fixed", "type": ["null", "Four"], "default": None},
        {"name": "maybe_bytes", "type": ["null", "bytes"], "default": None},
        {"name": "maybe_int", "type": ["null", "int"], "default": None},
        {"name": "ts", "type": {"type": "long", "logicalType": "timestamp-millis"}},
        {"name": "maybe_ts", "type": ["null", {"type": "long", "logicalType": "timestamp-millis"}],
         "default": None},
        {"name": "day", "type": {"type": "int", "logicalType": "date"}},
        {"name": "ts_us", "type": {"type": "long", "logicalType": "timestamp-micros"}},
        {"name": "id", "type": {"type": "string", "logicalType": "uuid"}},
        {"name": "list", "type": ["null", {"type": "record", "name": "Node", "fields": [
            {"name": "value", "type": "int"}, {"name": "next", "type": ["null", "Node"]}]}]},
    ],
}


def shipped() -> dict[str, dict[str, Any]]:
    return {p.stem: json.loads(p.read_text()) for p in sorted(Path(DEFAULT_SCHEMA_DIR).glob("*.avsc"))}


SCHEMAS = {**shipped(), "Everything": SYNTHETIC}
CODECS = {name: compile_codec(raw) for name, raw in SCHEMAS.items()}
WRITERS = {name: fastavro.parse_schema(raw) for name, raw in SCHEMAS.items()}
READERS = {name: fastavro.parse_schema(_strip_logical(raw)) for name, raw in SCHEMAS.items()}
NOT_OMITTED = ("bytes", "fixed")  # fastavro writes their JSON default (a str) and fails


# ------------------------------------------------------------------ record strategies from .avsc


class Strategies:
    """Hypothesis strategies for values of a JSON schema, written apart from the codec's parser."""

    def __init__(self) -> None:
        self.named: dict[str, Any] = {}

    def of(self, schema: Any, ns: str = "", depth: int = 0) -> st.SearchStrategy[Any]:
        if isinstance(schema, list):
            return st.one_of([self.of(s, ns, depth) for s in schema])
        if isinstance(schema, str):
            prim = self.primitive(schema, None)
            if prim is not None:
                return prim
            full = schema if "." in schema or not ns else f"{ns}.{schema}"
            return st.deferred(lambda: self.of(self.named.get(full, self.named.get(schema)), ns, depth))
        kind = schema["type"]
        if isinstance(kind, (list, dict)):
            return self.of(kind, ns, depth)
        prim = self.primitive(kind, schema.get("logicalType"))
        if prim is not None:
            return prim
        if kind in ("record", "enum", "fixed"):
            ns = schema.get("namespace", ns)
            self.named[f"{ns}.{schema['name']}" if ns else schema["name"]] = schema
            self.named[schema["name"]] = schema
        if kind == "enum":
            return st.sampled_from(schema["symbols"])
        if kind == "fixed":
            return st.binary(min_size=schema["size"], max_size=schema["size"])
        if kind == "array":
            return st.lists(self.of(schema["items"], ns, depth), max_size=4)
        if kind == "map":
            return st.dictionaries(st.text(max_size=8), self.of(schema["values"], ns, depth), max_size=4)
        if kind == "record":
            if depth > 3:
                return st.nothing()
            fields = {f["name"]: (self.of(f["type"], ns, depth + 1), f) for f in schema["fields"]}
            return st.fixed_dictionaries({n: s for n, (s, _) in fields.items()}).flatmap(
                lambda rec: self.omit_defaults(rec, [f for _, f in fields.values()]))
        if isinstance(kind, str):
            return self.of(kind, ns, depth)
        raise AssertionError(kind)

    @staticmethod
    def omit_defaults(record: dict[str, Any], fields: list[dict[str, Any]]) -> st.SearchStrategy[Any]:
        optional = [f["name"] for f in fields if "default" in f
                    and not (isinstance(f["type"], (str, dict)) and
                             (f["type"] if isinstance(f["type"], str) else f["type"]["type"]) in NOT_OMITTED)]
        return st.sets(st.sampled_from(optional) if optional else st.nothing()).map(
            lambda drop: {k: v for k, v in record.items() if k not in drop})

    @staticmethod
    def primitive(kind: str, logical: str | None) -> st.SearchStrategy[Any] | None:
        if logical == "timestamp-millis":
            aware = st.datetimes(min_value=datetime.datetime(1900, 1, 1),
                                 max_value=datetime.datetime(2200, 1, 1), timezones=st.just(datetime.UTC))
            return st.one_of(st.integers(LONG_MIN // 2, LONG_MAX // 2),
                             st.integers(1_500_000_000_000, 2_100_000_000_000), aware,
                             st.datetimes(min_value=datetime.datetime(1971, 1, 1),
                                          max_value=datetime.datetime(2100, 1, 1)))
        if logical == "timestamp-micros":
            return st.one_of(st.integers(LONG_MIN, LONG_MAX), st.datetimes(timezones=st.just(datetime.UTC)))
        if logical == "date":
            return st.one_of(st.integers(INT_MIN, INT_MAX), st.dates())
        if logical == "uuid":
            return st.one_of(st.uuids(), st.uuids().map(str))
        return {
            "null": st.none(),
            "boolean": st.booleans(),
            "int": st.integers(INT_MIN, INT_MAX),
            "long": st.one_of(st.integers(LONG_MIN, LONG_MAX), st.integers(-200, 200)),
            "float": st.one_of(st.floats(width=32, allow_nan=False), st.integers(-1000, 1000),
                               st.floats(allow_nan=False)),
            "double": st.one_of(st.floats(allow_nan=False), st.integers(-(1 << 53), 1 << 53)),
            "bytes": st.one_of(st.binary(max_size=80), st.binary(min_size=1000, max_size=1100)),
            "string": st.one_of(st.text(max_size=80), st.text(min_size=1030, max_size=1040),
                                st.sampled_from(["", "cn-north-1", "é" * 40])),
        }.get(kind)


def records(name: str) -> st.SearchStrategy[dict[str, Any]]:
    return Strategies().of(SCHEMAS[name])


def fastavro_bytes(name: str, record: Any) -> bytes:
    buf = io.BytesIO()
    fastavro.schemaless_writer(buf, WRITERS[name], record)
    return buf.getvalue()


def fastavro_read(name: str, data: bytes) -> Any:
    return fastavro.schemaless_reader(io.BytesIO(data), READERS[name], None)


PROPERTY = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


# ------------------------------------------------------------------ byte identity and round trips


@pytest.mark.parametrize("name", sorted(SCHEMAS))
@PROPERTY
@given(data=st.data())
def test_encode_equals_fastavro_and_decode_equals_its_reader(name: str, data: st.DataObject) -> None:
    record = data.draw(records(name))
    expected = fastavro_bytes(name, record)
    codec = CODECS[name]
    assert codec.encode(record) == expected
    assert codec.decode(expected) == fastavro_read(name, expected)
    assert codec.decode_from(b"xx" + expected + b"yy", 2) == (fastavro_read(name, expected),
                                                            len(expected) + 2)


@PROPERTY
@given(record=records("InstanceEvent"))
def test_instance_event_round_trips(record: dict[str, Any]) -> None:
    codec = CODECS["InstanceEvent"]
    decoded = codec.decode(codec.encode(record))
    assert codec.encode(decoded) == codec.encode(record)
    assert decoded == fastavro_read("InstanceEvent", fastavro_bytes("InstanceEvent", record))


GARBAGE = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False), st.text(max_size=5),
                    st.binary(max_size=5), st.lists(st.integers(), max_size=2),
                    st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
                    st.sampled_from(["jdcloud", "RED", "executing",
                                     {"topic": "t", "partition": 1, "offset": 2},
                                     {"x": 1, "four": b"abcd"}, 1 << 40, 1 << 70, -(1 << 64)]))


@pytest.mark.parametrize("name", ["InstanceEvent", "OperationOutcome", "Everything"])
@PROPERTY
@given(data=st.data())
def test_a_wrong_value_raises_exactly_when_fastavro_would_not_validate(name: str,
                                                                      data: st.DataObject) -> None:
    if name not in SCHEMAS:
        pytest.skip(f"{name}.avsc not shipped")
    record = dict(data.draw(records(name)))
    field = data.draw(st.sampled_from([f["name"] for f in SCHEMAS[name]["fields"]]))
    record[field] = data.draw(GARBAGE)
    try:
        valid = validate(record, WRITERS[name], raise_errors=False)
    except ValueError:  # fastavro's own logical conversion refused it (an ISO date string)
        valid = False
    if valid:
        assert CODECS[name].encode(record) == fastavro_bytes(name, record)
    else:
        with pytest.raises((ValueError, TypeError)) as info:
            CODECS[name].encode(record)
        assert field in str(info.value)


EVERYTHING: dict[str, Any] = {
    "n": None, "l": 1, "d": 0.5, "raw": b"r", "fx": b"abcd", "colors": ["RED"],
    "nested": {"x": 1, "four": b"four"}, "inner_map": {"k": None}, "num": 3, "widths": 1.0,
    "long_first": 2, "enum_or_string": "BLUE", "two_records": {"x": 1, "y": 2}, "arrays": ["a"],
    "ts": 1, "day": 2, "ts_us": 3, "id": "00000000-0000-0000-0000-000000000000", "list": None,
}


def test_special_floats_match_fastavro() -> None:
    base = EVERYTHING
    for value in (math.nan, math.inf, -math.inf, 1e300, -1e300, 3.4028235e38, 5e-324, -0.0):
        record = {**base, "f": value, "d": value, "widths": value, "maybe_float": value}
        assert CODECS["Everything"].encode(record) == fastavro_bytes("Everything", record)


def test_missing_fields_take_avro_defaults_including_bytes_as_code_points() -> None:
    codec = compile_codec({"type": "record", "name": "D", "fields": [
        {"name": "payload", "type": "bytes", "default": "\u00ff\u0001"},
        {"name": "four", "type": {"type": "fixed", "name": "F", "size": 2}, "default": "ab"},
        {"name": "f", "type": "double", "default": "NaN"},
        {"name": "m", "type": ["null", "string"], "default": None},
        {"name": "e", "type": {"type": "enum", "name": "E", "symbols": ["A", "B"]}, "default": "B"},
        {"name": "r", "type": {"type": "record", "name": "R", "fields": [{"name": "x", "type": "int"}]},
         "default": {"x": 7}},
    ]})
    data = codec.encode({})
    assert data == b"\x04\xff\x01ab" + struct.pack("<d", math.nan) + b"\x00\x02\x0e"
    assert codec.decode(data)["payload"] == b"\xff\x01"


def test_framing_prefix_is_written_in_front_of_the_body() -> None:
    codec = CODECS["InstanceEvent"]
    record = EVENT
    header = b"\x00\x00\x00\x00\x07"
    assert codec.make_encoder(header)(record) == header + codec.encode(record)


def test_recursive_records_and_primitive_top_level_schemas() -> None:
    linked = {"type": "record", "name": "L", "fields": [{"name": "v", "type": "int"},
                                                          {"name": "next", "type": ["null", "L"]}]}
    codec = compile_codec(linked)
    value = {"v": 1, "next": {"v": 2, "next": {"v": 3, "next": None}}}
    buf = io.BytesIO()
    fastavro.schemaless_writer(buf, fastavro.parse_schema(linked), value)
    assert codec.encode(value) == buf.getvalue()
    assert codec.decode(buf.getvalue()) == value
    with pytest.raises(AvroTypeError, match=r"next\.next\.v"):
        codec.encode({"v": 1, "next": {"v": 2, "next": {"v": "3", "next": None}}})
    assert compile_codec("string").encode("é") == b"\x04\xc3\xa9"
    assert compile_codec({"type": "array", "items": "long"}).decode(b"\x03\x04\x02\x04\x00") == [1, 2]


# ------------------------------------------------------------------ errors name the field

EVENT: dict[str, Any] = {
    "vendor": "jdcloud", "instance_id": "i-1", "vendor_event_code": "SystemFailure.Reboot",
    "operation": "failure.reboot", "known": True, "phase": "executing", "vendor_status": "Executing",
    "event_time": 1614206646000, "region": "cn-north-1", "account_id": "pin", "notification_id": "n1",
    "vendor_event_id": None, "level": None, "previous_state": None, "current_state": None,
    "publish_time": None, "not_before": None, "start_time": None, "end_time": None,
    "source_format": "jdcloud.detail", "attributes": {"gpuSerial": "gpu-serial:1:2:3"},
    "source": {"topic": "vm.events.raw", "partition": 3, "offset": 42},
}


@pytest.mark.parametrize(("change", "error", "where"), [
    ({"instance_id": 5}, AvroTypeError, "InstanceEvent.instance_id: expected string, got int"),
    ({"instance_id": None}, AvroTypeError, "instance_id"),
    ({"vendor": "oracle"}, AvroEncodeError, "vendor: 'oracle' is not a symbol of enum"),
    ({"phase": "sleeping"}, AvroEncodeError, "phase"),
    ({"known": 1}, AvroTypeError, "known"),
    ({"event_time": 1.5}, AvroTypeError, "event_time"),
    ({"event_time": True}, AvroTypeError, "event_time"),
    ({"event_time": 1 << 64}, AvroEncodeError, "event_time"),
    ({"publish_time": "yesterday"}, AvroTypeError, "publish_time"),
    ({"attributes": {"k": 1}}, AvroTypeError, "attributes['k']"),
    ({"attributes": {1: "v"}}, AvroTypeError, "attributes[key]"),
    ({"attributes": ["k"]}, AvroTypeError, "attributes"),
    ({"source": {"topic": "t", "partition": 1 << 31, "offset": 1}}, AvroEncodeError, "source.partition"),
    ({"source": {"topic": "t", "offset": 1}}, AvroEncodeError, "source.partition: missing"),
    ({"source": "t:1:2"}, AvroTypeError, "source"),
])
def test_wrong_values_raise_errors_naming_the_field(change: dict[str, Any], error: type[Exception],
                                                     where: str) -> None:
    with pytest.raises(error) as info:
        CODECS["InstanceEvent"].encode({**EVENT, **change})
    assert where in str(info.value)
    assert isinstance(info.value, ValueError)
    assert isinstance(info.value, TypeError) == (error is AvroTypeError)


def test_missing_field_without_default_is_an_error_even_if_nullable() -> None:
    with pytest.raises(AvroEncodeError, match="event_time: missing"):
        CODECS["InstanceEvent"].encode({k: v for k, v in EVENT.items() if k != "event_time"})
    codec = compile_codec({"type": "record", "name": "N", "fields": [{"name": "x", "type": ["null", "int"]}]})
    with pytest.raises(AvroEncodeError, match="x: missing"):
        codec.encode({})
    with pytest.raises(AvroTypeError):
        codec.encode(["not", "a", "record"])


def test_array_item_errors_carry_the_index() -> None:
    codec = CODECS["Everything"]
    record = {**EVERYTHING, "colors": ["RED", "PINK"]}
    with pytest.raises(AvroEncodeError, match=r"colors\[1\]"):
        codec.encode(record)


def test_datetimes_are_converted_like_fastavro() -> None:
    aware = datetime.datetime(2021, 2, 24, 22, 44, 6, 123456, tzinfo=datetime.UTC)
    record = {**EVENT, "event_time": aware, "publish_time": aware.replace(tzinfo=None)}
    assert CODECS["InstanceEvent"].encode(record) == fastavro_bytes("InstanceEvent", record)
    codec = CODECS["InstanceEvent"]
    assert codec.decode(codec.encode(record))["event_time"] == 1614206646123


# ------------------------------------------------------------------ corrupt input

DECODE_ERRORS = (ValueError, IndexError)  # UnicodeDecodeError is a ValueError


def test_every_truncation_and_trailing_byte_is_rejected() -> None:
    codec = CODECS["InstanceEvent"]
    data = codec.encode(EVENT)
    for end in range(len(data)):
        with pytest.raises(DECODE_ERRORS):
            codec.decode(data[:end])
    with pytest.raises(ValueError, match="trailing"):
        codec.decode(data + b"\x00")
    assert codec.decode(memoryview(data)) == EVENT


@pytest.mark.parametrize("name", sorted(SCHEMAS))
@settings(max_examples=300, deadline=None)
@given(blob=st.binary(max_size=200))
def test_random_bytes_decode_or_raise_only_value_or_index_errors(name: str, blob: bytes) -> None:
    with contextlib.suppress(*DECODE_ERRORS):
        CODECS[name].decode(blob)


def test_corrupt_counts_and_lengths_are_refused_not_allocated() -> None:
    codec = compile_codec({"type": "array", "items": "null"})
    with pytest.raises(ValueError, match="longer than the data"):
        codec.decode(b"\xfe\xff\xff\xff\x0f")  # a billion nulls
    with pytest.raises(ValueError, match="negative length"):
        compile_codec("string").decode(b"\x01")
    with pytest.raises(ValueError, match="varint"):
        compile_codec("long").decode(b"\xff" * 12)


def test_decode_matches_fastavro_for_non_minimal_varints_in_general_positions() -> None:
    # Another writer may spend two bytes on a small long; only the two-branch nullable union
    # index is required to be the one-byte form.
    assert compile_codec("long").decode(b"\x82\x00") == 1
    timestamp = compile_codec({"type": "long", "logicalType": "timestamp-millis"})
    assert timestamp.decode(b"\x02") == 1  # fewer than the usual six bytes left
    assert timestamp.decode(timestamp.encode(1 << 50)) == 1 << 50
    assert compile_codec({"type": "map", "values": "int"}).decode(b"\x81\x00\x04\x02k\x02\x00") == {"k": 1}


def test_unknown_named_type_is_refused_at_compile_time() -> None:
    with pytest.raises(ValueError, match="unknown Avro type"):
        compile_codec({"type": "record", "name": "R", "fields": [{"name": "x", "type": "Nope"}]})
