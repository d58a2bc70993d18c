"""Shared-secret schemes: bearer tokens, API keys, Basic, HMAC-SHA256 with a timestamp.

Every credential has a name (``jd-relay``, ``eventbridge``): the name is the principal written
in the record's headers and logged; the value never is. Several credentials per route let a
secret be rotated without downtime (add the new one, move the sender, remove the old one).
Comparisons are constant-time.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from consumer.ingest.request import Unauthenticated


@dataclass(frozen=True, slots=True)
class Credential:
    name: str
    value: str

    def __repr__(self) -> str:
        return f"Credential({self.name!r}, ***)"


def match(presented: str, credentials: Sequence[Credential]) -> str | None:
    """The name of the credential ``presented`` equals, or None (every one compared)."""
    found = None
    given = presented.encode()
    for cred in credentials:
        if hmac.compare_digest(given, cred.value.encode()):
            found = cred.name
    return found


def bearer(headers: Mapping[str, str], tokens: Sequence[Credential]) -> str | None:
    """``Authorization: Bearer <token>``: the token's name, None without a bearer header."""
    scheme, _, token = headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not token:
        return None
    name = match(token.strip(), tokens)
    if name is None:
        raise Unauthenticated("bad_token", "bearer token not recognised")
    return name


def basic(headers: Mapping[str, str], users: Sequence[Credential]) -> str | None:
    """``Authorization: Basic``; credentials are ``user:password`` with the user as their name."""
    scheme, _, blob = headers.get("authorization", "").partition(" ")
    if scheme.lower() != "basic" or not blob:
        return None
    try:
        pair = base64.b64decode(blob.strip(), validate=True).decode("utf-8")
    except (binascii.Error, ValueError):
        raise Unauthenticated("bad_basic", "Basic credentials are not base64") from None
    name = match(pair, users)
    if name is None:
        raise Unauthenticated("bad_basic", "Basic credentials not recognised")
    return name


def api_key(headers: Mapping[str, str], header: str, keys: Sequence[Credential]) -> str | None:
    value = headers.get(header)
    if value is None:
        return None
    name = match(value, keys)
    if name is None:
        raise Unauthenticated("bad_api_key", f"{header} not recognised")
    return name


TIMESTAMP_HEADER = "x-vmevents-timestamp"
SIGNATURE_HEADER = "x-vmevents-signature"


def hmac_signature(secret: str, timestamp: str, body: bytes) -> str:
    """``sha256=<hex>`` of ``<timestamp>.<body>``: what a relay sends in ``X-Vmevents-Signature``."""
    mac = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256)
    return "sha256=" + mac.hexdigest()


class HmacVerifier:
    """HMAC-SHA256 over ``<unix seconds>.<body>`` (the scheme GitHub and Stripe webhooks use).

    A timestamp more than ``max_skew_s`` away is refused; a signature seen within that window is
    a replay and refused too (remembered up to ``max_remembered``, oldest forgotten first).
    """

    def __init__(self, secrets: Sequence[Credential], *, max_skew_s: float = 300.0,
                 max_remembered: int = 200_000, clock: Callable[[], float] = time.time) -> None:
        self.secrets = tuple(secrets)
        self.max_skew_s = max_skew_s
        self.max_remembered = max_remembered
        self.clock = clock
        self._seen: OrderedDict[str, float] = OrderedDict()

    def verify(self, headers: Mapping[str, str], body: bytes) -> str | None:
        signature = headers.get(SIGNATURE_HEADER)
        if signature is None:
            return None
        stamp = headers.get(TIMESTAMP_HEADER, "")
        try:
            sent = float(stamp)
        except ValueError:
            raise Unauthenticated("bad_timestamp", f"{TIMESTAMP_HEADER} is not unix seconds") from None
        now = self.clock()
        if abs(now - sent) > self.max_skew_s:
            raise Unauthenticated("expired", "signature timestamp outside the allowed window")
        name = None
        for cred in self.secrets:
            if hmac.compare_digest(hmac_signature(cred.value, stamp, body), signature.strip()):
                name = cred.name
        if name is None:
            raise Unauthenticated("bad_signature", "HMAC signature does not verify")
        self._forget(now)
        if signature in self._seen:
            raise Unauthenticated("replay", "this signature was already used")
        self._seen[signature] = now
        return name

    def _forget(self, now: float) -> None:
        seen = self._seen
        horizon = now - 2 * self.max_skew_s
        while seen and (len(seen) >= self.max_remembered or next(iter(seen.values())) < horizon):
            seen.popitem(last=False)
