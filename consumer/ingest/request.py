"""What a route sees of an HTTP request, and what it answers: plain values, no HTTP stack."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class Request:
    """One received request. Header names are lower case; ``url`` is the URL as the sender
    addressed it (scheme, host, path and query), which some signatures cover."""

    method: str
    path: str
    query: str
    headers: Mapping[str, str]
    body: bytes
    client: str
    url: str
    received_ms: int


@dataclass(frozen=True, slots=True)
class Accepted:
    """Records to write; the route answers ``status`` once every one of them is acknowledged."""

    records: list[bytes]
    principal: str
    delivery_id: str | None = None
    status: int = 200


@dataclass(frozen=True, slots=True)
class Reply:
    """An answer that writes nothing: a handshake, a confirmation, a pre-flight."""

    status: int
    body: bytes = b""
    headers: Mapping[str, str] = field(default_factory=dict)
    kind: str = "handshake"


class Refused(Exception):
    """The request is answered ``status`` and nothing is written.

    ``reason`` is a short fixed label (a metric label value); ``detail`` may be logged, never
    with a secret in it, and is not sent back beyond ``public``.
    """

    status = 400

    def __init__(self, reason: str, detail: str = "", *, status: int | None = None,
                 headers: Mapping[str, str] | None = None) -> None:
        super().__init__(detail or reason)
        self.reason = reason
        self.detail = detail or reason
        if status is not None:
            self.status = status
        self.headers: Mapping[str, str] = headers or {}


class Unauthenticated(Refused):
    """No credential, or one that does not verify: 401, counted as an auth failure."""

    status = 401


class Forbidden(Refused):
    """A verified sender that is not allowed here (unknown topic, account, service account)."""

    status = 403


class Unavailable(Refused):
    """Not the sender's fault and worth retrying (a key host or the broker is away): 503."""

    status = 503
