"""Avro wire formats: Confluent framing through a Schema Registry, or single-object encoding.

Schemas are read from ``avro/`` and parsed once. Writers use the schemas as shipped, so a reader
that knows only the ``.avsc`` files (Python, Java or Go) decodes every record. Our own readers
parse a copy with logical types removed: ``timestamp-millis`` then stays the ``int`` the core works
with instead of a ``datetime`` that would have to be converted back on the hot path.

- Single-object encoding (Avro specification): ``C3 01`` + the schema's CRC-64-AVRO fingerprint
  (8 bytes, little-endian) + the Avro binary body.
- Confluent framing: ``00`` + the registry's schema id (4 bytes, big-endian) + the body.

Bodies go through :mod:`consumer.avrocodec`, a codec compiled per schema that writes the bytes
fastavro writes at a fraction of its cost; fastavro still parses and fingerprints the schemas.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import fastavro
from fastavro.schema import fingerprint, to_parsing_canonical_form

from consumer.avrocodec import AvroCodec, compile_codec
from consumer.errors import VmeventsError

SINGLE_OBJECT_MAGIC = b"\xc3\x01"
CONFLUENT_MAGIC = b"\x00"


class SerdeError(VmeventsError):
    """A record could not be decoded (unknown schema, wrong framing, truncated body)."""


def _strip_logical(schema: Any) -> Any:
    if isinstance(schema, dict):
        return {k: _strip_logical(v) for k, v in schema.items() if k != "logicalType"}
    if isinstance(schema, list):
        return [_strip_logical(s) for s in schema]
    return schema


@dataclass(frozen=True)
class AvroSchema:
    """One .avsc, parsed once for writing and once (without logical types) for reading."""

    name: str
    raw: dict[str, Any]
    canonical: str
    fingerprint: bytes
    writer: Any
    reader: Any

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> AvroSchema:
        canonical = to_parsing_canonical_form(raw)
        return cls(
            name=raw["name"],
            raw=raw,
            canonical=canonical,
            fingerprint=bytes.fromhex(fingerprint(canonical, "CRC-64-AVRO")),
            writer=fastavro.parse_schema(raw),
            reader=fastavro.parse_schema(_strip_logical(raw)),
        )


def load_schemas(schema_dir: Path) -> dict[str, AvroSchema]:
    """Every ``*.avsc`` in the folder, by record name (``InstanceEvent``, ...)."""
    schemas: dict[str, AvroSchema] = {}
    for path in sorted(schema_dir.glob("*.avsc")):
        schema = AvroSchema.from_dict(json.loads(path.read_text(encoding="utf-8")))
        schemas[schema.name] = schema
    return schemas


Encoder = Callable[[Mapping[str, Any]], bytes]


def _codec(raw: dict[str, Any]) -> AvroCodec:
    """The compiled codec of a schema, compiled once per distinct schema (defaults included)."""
    key = json.dumps(raw, sort_keys=True)
    codec = _CODECS.get(key)
    if codec is None:
        codec = _CODECS[key] = compile_codec(raw)
    return codec


_CODECS: dict[str, AvroCodec] = {}


def _body_writer(schema: AvroSchema, header: bytes) -> Encoder:
    # The compiled encoder joins header and body in one go; fastavro resolved every union by
    # validating each branch (~10x slower), the compiled one writes the same bytes.
    return _codec(schema.raw).make_encoder(header)


def single_object_encoder(schema: AvroSchema) -> Encoder:
    return _body_writer(schema, SINGLE_OBJECT_MAGIC + schema.fingerprint)


def confluent_encoder(schema: AvroSchema, schema_id: int) -> Encoder:
    return _body_writer(schema, CONFLUENT_MAGIC + struct.pack(">I", schema_id))


class Decoder:
    """Decodes both framings into dicts with timestamps as epoch-ms ints.

    Single-object records are matched by fingerprint against the shipped schemas. Confluent
    records need ``fetch_schema(schema_id) -> schema dict`` (a registry lookup), cached per id.
    """

    def __init__(self, schemas: Mapping[str, AvroSchema],
                 fetch_schema: Callable[[int], dict[str, Any]] | None = None,
                 *, expect: str | None = None) -> None:
        """``expect`` (a record name such as ``InstanceEvent``) makes every other record a
        SerdeError: a reader of one topic must not hand a foreign record to code that expects
        that schema. A registry schema is accepted when it has every field of the shipped one
        with the same type (a writer that added fields is fine)."""
        self._expected = schemas[expect] if expect is not None else None
        self._by_fingerprint = {s.fingerprint: _codec(s.raw).decode for s in schemas.values()
                                if expect is None or s.name == expect}
        self._by_id: dict[int, Callable[[bytes, int], Any]] = {}
        self._fetch = fetch_schema

    def decode(self, data: bytes) -> dict[str, Any]:
        if data[:2] == SINGLE_OBJECT_MAGIC and len(data) >= 10:
            decode_body = self._by_fingerprint.get(data[2:10])
            if decode_body is None:
                raise SerdeError(f"unknown schema fingerprint {data[2:10].hex()}")
            offset = 10
        elif data[:1] == CONFLUENT_MAGIC and len(data) >= 5:
            schema_id = struct.unpack(">I", data[1:5])[0]
            decode_body = self._by_id.get(schema_id)
            if decode_body is None:
                if self._fetch is None:
                    raise SerdeError(f"schema id {schema_id} needs a Schema Registry")
                fetched = self._fetch(schema_id)  # SerdeError if unknown, TransientError if down
                if self._expected is not None:
                    _check_writer(schema_id, fetched, self._expected.raw)
                try:
                    decode_body = _codec(fetched).decode
                except (ValueError, KeyError, TypeError, AttributeError) as exc:
                    raise SerdeError(f"schema id {schema_id} is not a usable Avro schema: {exc}") from exc
                self._by_id[schema_id] = decode_body
            offset = 5
        else:
            raise SerdeError("value is neither Avro single-object nor Confluent framed")
        try:
            # Reads from the offset without copying; fails on truncation and on trailing bytes.
            record = decode_body(data, offset)
        except (ValueError, IndexError, OverflowError, MemoryError) as exc:  # Unicode errors too
            raise SerdeError(f"corrupt Avro body: {type(exc).__name__}: {exc}") from exc
        if not isinstance(record, dict):
            raise SerdeError("Avro body is not a record")
        return record


def _check_writer(schema_id: int, writer: Any, reader: Mapping[str, Any]) -> None:
    """SerdeError unless ``writer`` is the ``reader`` record, possibly with fields added.

    Compared in Parsing Canonical Form, field by field, so documentation, defaults and the way a
    registry re-serialises a schema do not matter, only how the bytes are read.
    """
    try:
        canonical = json.loads(to_parsing_canonical_form(writer))
    except Exception as exc:  # fastavro raises several types for a malformed schema
        raise SerdeError(f"schema id {schema_id} is not a usable Avro schema: {exc}") from exc
    wanted = json.loads(to_parsing_canonical_form(dict(reader)))
    if not isinstance(canonical, dict) or canonical.get("type") != "record":
        raise SerdeError(f"schema id {schema_id} is not an Avro record schema")
    name = str(canonical["name"]).rsplit(".", 1)[-1]
    if name != reader["name"]:
        raise SerdeError(f"schema id {schema_id} is {canonical['name']}, expected {reader['name']}")
    fields = {f["name"]: f["type"] for f in canonical["fields"]}
    for field in wanted["fields"]:
        if field["name"] not in fields:
            raise SerdeError(f"schema id {schema_id} ({name}) has no field {field['name']!r}")
        if fields[field["name"]] != field["type"]:
            raise SerdeError(f"schema id {schema_id} ({name}) has another type for "
                             f"field {field['name']!r}")
