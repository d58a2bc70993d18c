"""Backward compatibility of an Avro schema with its released version, by schema resolution.

Records covering the old schema (every enum symbol, every union branch, in turn) are written with
the old schema and read with the new one, which is what a reader on the new schema does with old
data. fastavro raises on anything Avro's resolution rules forbid: a new field without a default,
an incompatible type change, a removed union branch in use.
"""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import fastavro

REPO = Path(__file__).resolve().parents[1]
AVRO = REPO / "avro"
RELEASED = AVRO / "released"
PRIMITIVE_EXAMPLES: dict[str, Any] = {
    "null": None, "boolean": True, "int": 7, "long": 1_614_206_646_000, "float": 1.5,
    "double": 2.5, "bytes": b"\x00\x01", "string": "text",
}


def released_pairs() -> list[tuple[str, dict[str, Any], dict[str, Any]]]:
    """(name, released schema, current schema) for every released .avsc."""
    return [(p.stem, json.loads(p.read_text(encoding="utf-8")),
             json.loads((AVRO / p.name).read_text(encoding="utf-8")))
            for p in sorted(RELEASED.glob("*.avsc"))]


def _variety(schema: Any, names: dict[str, Any]) -> int:
    """How many variants cover every enum symbol and union branch of ``schema``."""
    if isinstance(schema, list):
        return max([len(schema), *(_variety(s, names) for s in schema)])
    if isinstance(schema, str):  # a primitive, or a named type counted where it was defined
        return 1
    kind = schema.get("type")
    if kind == "enum":
        return len(schema["symbols"])
    if kind == "record":
        names[schema["name"]] = schema
        return max([1, *(_variety(f["type"], names) for f in schema["fields"])])
    if kind == "array":
        return _variety(schema["items"], names)
    if kind == "map":
        return _variety(schema["values"], names)
    return _variety(kind, names) if isinstance(kind, (dict, list)) else 1


def _example(schema: Any, k: int, names: dict[str, Any]) -> Any:
    if isinstance(schema, list):
        return _example(schema[k % len(schema)], k, names)
    if isinstance(schema, str):
        if schema in PRIMITIVE_EXAMPLES:
            return PRIMITIVE_EXAMPLES[schema]
        return _example(names[schema], k, names)
    kind = schema["type"]
    if isinstance(kind, (dict, list)):
        return _example(kind, k, names)
    if kind == "enum":
        names[schema["name"]] = schema
        return schema["symbols"][k % len(schema["symbols"])]
    if kind == "record":
        names[schema["name"]] = schema
        return {f["name"]: _example(f["type"], k, names) for f in schema["fields"]}
    if kind == "array":
        return [_example(schema["items"], k, names)]
    if kind == "map":
        return {"key": _example(schema["values"], k, names)}
    if kind == "fixed":
        names[schema["name"]] = schema
        return b"\x00" * schema["size"]
    return PRIMITIVE_EXAMPLES[kind]


def examples(schema: dict[str, Any]) -> list[Any]:
    """Records of ``schema`` that between them use every enum symbol and union branch."""
    names: dict[str, Any] = {}
    return [_example(schema, k, dict(names)) for k in range(_variety(schema, names))]


def read_old_with_new(old: dict[str, Any], new: dict[str, Any]) -> list[Any]:
    """Write ``examples(old)`` with ``old``, read them with ``new``; raises when incompatible."""
    writer = fastavro.parse_schema(old, _write_hint=False)
    reader = fastavro.parse_schema(new, _write_hint=False)
    out = []
    for record in examples(old):
        buf = io.BytesIO()
        fastavro.schemaless_writer(buf, writer, record)
        buf.seek(0)
        out.append(fastavro.schemaless_reader(buf, writer, reader))
    return out
