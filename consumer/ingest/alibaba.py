"""Alibaba Cloud pushes: EventBridge HTTP targets (signed) and CloudMonitor webhooks (unsigned).

EventBridge signs each push (signature v2): an RSA-SHA256 signature in
``x-eventbridge-signature-v2`` over the string-to-sign (the URL the target was addressed at,
the signature headers, the body, newline-separated), the certificate's URL in
``x-eventbridge-signature-url`` (only Alibaba's EventBridge certificate hosts are fetched), the
time in ``x-eventbridge-signature-timestamp`` (older than 60 s: refused, the vendor's own rule).
EventBridge signs for every Alibaba account, so the events' ``aliyunaccountid`` must be on the
allow-list as well.

CloudMonitor's webhook is unsigned: it is accepted only from an allowed source network, or on a
secret path (``/alibaba/cloudmonitor/<secret>``) that can be rotated by listing two.
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import re
import time
from collections.abc import Callable, Collection, Mapping, Sequence

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from consumer.ingest.keys import KeyCache, check_url
from consumer.ingest.payload import is_array, parse_object, split_array
from consumer.ingest.request import Forbidden, Unauthenticated

DEFAULT_CERT_URL_PATTERN = r"^https://[a-z0-9-]+-eventbridge\.oss-accelerate\.aliyuncs\.com/"
SIGNED_HEADERS = ("x-eventbridge-signature-timestamp", "x-eventbridge-hash-method",
                  "x-eventbridge-signature-url")
"""The signature headers in the string-to-sign, in this order, as ``name:value`` lines."""
MAX_AGE_S = 60.0


def string_to_sign(url: str, headers: Mapping[str, str], body: bytes) -> bytes:
    lines = [url] + [f"{name}:{headers[name]}" for name in SIGNED_HEADERS if name in headers]
    return "\n".join(lines).encode("utf-8") + b"\n" + body


def _timestamp(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise Unauthenticated("bad_timestamp", "signature timestamp is not a number") from None
    return value / 1000.0 if value > 1e11 else value  # milliseconds or seconds


class EventBridgeVerifier:
    def __init__(self, accounts: frozenset[str], url_pattern: str, certs: KeyCache[rsa.RSAPublicKey],
                 *, clock: Callable[[], float] = time.time) -> None:
        self.accounts = accounts
        self.url_pattern = re.compile(url_pattern)
        self.certs = certs
        self.clock = clock

    async def verify(self, url: str, headers: Mapping[str, str], body: bytes) -> list[bytes]:
        """The records of a verified push (one per event); the principal is the account."""
        signature = headers.get("x-eventbridge-signature-v2")
        cert_url = headers.get("x-eventbridge-signature-url")
        stamp = headers.get("x-eventbridge-signature-timestamp")
        if not signature or not cert_url or not stamp:
            raise Unauthenticated("unsigned", "no EventBridge signature headers")
        if abs(self.clock() - _timestamp(stamp)) > MAX_AGE_S:
            raise Unauthenticated("expired", "EventBridge signature timestamp older than 60 s")
        method = headers.get("x-eventbridge-hash-method", "SHA256").upper().replace("-", "")
        if method not in ("SHA256", "RSASHA256", "SHA256WITHRSA"):
            raise Unauthenticated("bad_signature_version", f"hash method {method!r}")
        check_url(cert_url, self.url_pattern, "x-eventbridge-signature-url")
        try:
            raw_sig = base64.b64decode(signature, validate=True)
        except (binascii.Error, ValueError):
            raise Unauthenticated("bad_signature", "signature is not base64") from None
        key = await self.certs.get(cert_url)
        try:
            key.verify(raw_sig, string_to_sign(url, headers, body), padding.PKCS1v15(),
                       hashes.SHA256())
        except InvalidSignature:
            raise Unauthenticated("bad_signature", "EventBridge signature does not verify") from None
        records = split_array(body) if is_array(body) else [body]
        for raw in records:
            account = parse_object(raw).get("aliyunaccountid")
            if str(account) not in self.accounts:
                raise Forbidden("account_not_allowed", "event of an Alibaba account not on the list")
        return records


class SourceAllowList:
    """Client addresses CloudMonitor pushes from."""

    def __init__(self, cidrs: Sequence[str]) -> None:
        self.networks = tuple(ipaddress.ip_network(c, strict=False) for c in cidrs)

    def __contains__(self, address: object) -> bool:
        try:
            ip = ipaddress.ip_address(str(address))
        except ValueError:
            return False
        return any(ip in net for net in self.networks)


def cloudmonitor_principal(client: str, path_secret: str | None, sources: SourceAllowList,
                           secrets: Collection[tuple[str, str]]) -> str:
    """``source:<ip>`` or ``path:<name>`` for an accepted CloudMonitor push; 401/403 otherwise."""
    from consumer.ingest.shared import Credential, match

    if path_secret is not None:
        name = match(path_secret, [Credential(n, v) for n, v in secrets])
        if name is None:
            raise Unauthenticated("bad_path_secret", "unknown CloudMonitor path")
        return f"path:{name}"
    if sources.networks and client in sources:
        return f"source:{client}"
    if not sources.networks:
        raise Unauthenticated("no_credentials", "CloudMonitor route needs its secret path")
    raise Forbidden("source_not_allowed", "CloudMonitor push from an address not on the list")
