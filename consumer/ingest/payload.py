"""Body shapes: a JSON array split into its elements' exact bytes, without re-serializing."""

from __future__ import annotations

import json

from consumer.ingest.request import Refused

_DECODER = json.JSONDecoder()
_WS = " \t\n\r"


def is_array(body: bytes) -> bool:
    return body.lstrip()[:1] == b"["


def split_array(body: bytes) -> list[bytes]:
    """``[a, b]`` -> the bytes of ``a`` and of ``b`` exactly as sent (whitespace around them
    dropped). Each element must be a JSON object. Refused ``malformed_json`` otherwise."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise Refused("malformed_json", "the body is not UTF-8") from None
    i = _skip(text, 0)
    if text[i:i + 1] != "[":
        raise Refused("malformed_json", "the body is not a JSON array")
    i = _skip(text, i + 1)
    out: list[bytes] = []
    if text[i:i + 1] == "]":
        return _end(text, i + 1, out)
    while True:
        try:
            value, end = _DECODER.raw_decode(text, i)
        except ValueError as exc:
            raise Refused("malformed_json", f"array element {len(out)}: {exc}") from None
        if not isinstance(value, dict):
            raise Refused("malformed_json", f"array element {len(out)} is not a JSON object")
        out.append(text[i:end].encode("utf-8"))
        i = _skip(text, end)
        sep = text[i:i + 1]
        if sep == "]":
            return _end(text, i + 1, out)
        if sep != ",":
            raise Refused("malformed_json", f"expected ',' or ']' after array element {len(out) - 1}")
        i = _skip(text, i + 1)


def parse_object(body: bytes) -> dict[str, object]:
    """A body that must be one JSON object (routes that read fields of it)."""
    try:
        value = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise Refused("malformed_json", f"the body is not JSON: {exc}") from None
    if not isinstance(value, dict):
        raise Refused("malformed_json", "the body is not a JSON object")
    return value


def _skip(text: str, i: int) -> int:
    n = len(text)
    while i < n and text[i] in _WS:
        i += 1
    return i


def _end(text: str, i: int, out: list[bytes]) -> list[bytes]:
    if _skip(text, i) != len(text):
        raise Refused("malformed_json", "data after the JSON array")
    return out
