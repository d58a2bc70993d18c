"""JSON-lines output of Avro-shaped records for the offline commands.

Which fields are timestamps is read from the schema (``timestamp-millis``), so the offline output
follows the contract in ``avro/`` without a second list to keep in sync.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any

import orjson


def timestamp_fields(schema: Mapping[str, Any]) -> frozenset[str]:
    """Top-level fields whose type (or nullable union member) is ``timestamp-millis``."""

    def is_ts(t: Any) -> bool:
        if isinstance(t, dict):
            return t.get("logicalType") == "timestamp-millis"
        if isinstance(t, list):
            return any(is_ts(m) for m in t)
        return False

    return frozenset(f["name"] for f in schema["fields"] if is_ts(f["type"]))


def iso_ms(ms: int) -> str:
    """``1614235446000`` -> ``2021-02-25T06:44:06Z`` (milliseconds only when non-zero)."""
    dt = datetime.fromtimestamp(ms / 1000, tz=UTC)
    text = dt.strftime("%Y-%m-%dT%H:%M:%S")
    return f"{text}.{ms % 1000:03d}Z" if ms % 1000 else f"{text}Z"


def to_json_line(record: Mapping[str, Any], ts_fields: Iterable[str]) -> bytes:
    out = dict(record)
    for name in ts_fields:
        value = out.get(name)
        if isinstance(value, int):
            out[name] = iso_ms(value)
    return orjson.dumps(out) + b"\n"
