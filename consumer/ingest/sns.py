"""AWS SNS HTTP/S deliveries: message signatures (v1 SHA1, v2 SHA256) and the subscription handshake.

The signing certificate is fetched only from a URL matching the SNS host pattern (AWS's own
validators' rule: ``https://sns.<region>.amazonaws.com[.cn]/...pem``) and cached per URL. Only
topics on the allow-list are confirmed or accepted. Raw message delivery carries no signature and
is refused.
"""

from __future__ import annotations

import base64
import binascii
import calendar
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from consumer.ingest.keys import KeyCache, check_url
from consumer.ingest.request import Forbidden, Refused, Unauthenticated

DEFAULT_URL_PATTERN = r"^https://sns\.[a-zA-Z0-9-]{3,}\.amazonaws\.com(\.cn)?/"
"""Where SNS certificates and SubscribeURLs may live (AWS's validators' host rule)."""

NOTIFICATION_FIELDS = ("Message", "MessageId", "Subject", "Timestamp", "TopicArn", "Type")
CONFIRMATION_FIELDS = ("Message", "MessageId", "SubscribeURL", "Timestamp", "Token", "TopicArn", "Type")
MESSAGE_TYPES = ("Notification", "SubscriptionConfirmation", "UnsubscribeConfirmation")


def string_to_sign(message: Mapping[str, object]) -> bytes:
    """``name\\nvalue\\n`` for each signed field present, in the documented (byte) order."""
    fields = NOTIFICATION_FIELDS if message.get("Type") == "Notification" else CONFIRMATION_FIELDS
    parts: list[str] = []
    for name in fields:
        value = message.get(name)
        if value is None:
            continue
        parts.append(f"{name}\n{value}\n")
    return "".join(parts).encode("utf-8")


def load_certificate_key(pem: bytes) -> rsa.RSAPublicKey:
    key = x509.load_pem_x509_certificate(pem).public_key()
    if not isinstance(key, rsa.RSAPublicKey):
        raise ValueError("the signing certificate's key is not RSA")
    return key


def parse_timestamp(text: str) -> float:
    """SNS's ``2012-04-26T20:45:04.751Z`` -> epoch seconds."""
    try:
        main, _, frac = text.rstrip("Z").partition(".")
        t = time.strptime(main, "%Y-%m-%dT%H:%M:%S")
    except ValueError:
        raise Unauthenticated("bad_timestamp", "Timestamp is not an ISO-8601 UTC time") from None
    return calendar.timegm(t) + (float(f"0.{frac}") if frac.isdigit() else 0.0)


@dataclass(frozen=True, slots=True)
class SnsMessage:
    """A verified SNS message."""

    type: str
    topic_arn: str
    message_id: str
    subscribe_url: str | None


class SnsVerifier:
    """Verifies one SNS message (the parsed body) and the topic it came from.

    ``max_age_s`` bounds how old a message's Timestamp may be (SNS redelivers the same message,
    Timestamp unchanged, for up to an hour under the longest delivery policy).
    """

    def __init__(self, topics: frozenset[str], url_pattern: str, certs: KeyCache[rsa.RSAPublicKey],
                 *, max_age_s: float = 3900.0, clock: Callable[[], float] = time.time) -> None:
        self.topics = topics
        self.url_pattern = re.compile(url_pattern)
        self.certs = certs
        self.max_age_s = max_age_s
        self.clock = clock

    async def verify(self, message: Mapping[str, object]) -> SnsMessage:
        kind = message.get("Type")
        if kind not in MESSAGE_TYPES:
            raise Refused("not_sns", "not an SNS message (Type missing or unknown)")
        for name in ("MessageId", "TopicArn", "Timestamp", "Signature", "SigningCertURL",
                     "SignatureVersion"):
            if not isinstance(message.get(name), str):
                raise Unauthenticated("unsigned", f"SNS message without {name}")
        topic = str(message["TopicArn"])
        if topic not in self.topics:
            raise Forbidden("unknown_topic", "SNS topic is not on the allow-list")
        version = message["SignatureVersion"]
        algorithm: hashes.HashAlgorithm
        if version == "1":
            algorithm = hashes.SHA1()  # SignatureVersion 1 is SHA1 by definition
        elif version == "2":
            algorithm = hashes.SHA256()
        else:
            raise Unauthenticated("bad_signature_version", f"SignatureVersion {version!r}")
        age = self.clock() - parse_timestamp(str(message["Timestamp"]))
        if age > self.max_age_s:
            raise Unauthenticated("expired", f"SNS message is {age:.0f} s old")
        if age < -300:
            raise Unauthenticated("from_the_future", "SNS Timestamp is more than 5 min ahead")
        cert_url = str(message["SigningCertURL"])
        check_url(cert_url, self.url_pattern, "SigningCertURL")
        if not cert_url.split("?", 1)[0].endswith(".pem"):
            raise Unauthenticated("untrusted_key_url", "SigningCertURL is not a .pem")
        try:
            signature = base64.b64decode(str(message["Signature"]), validate=True)
        except (binascii.Error, ValueError):
            raise Unauthenticated("bad_signature", "Signature is not base64") from None
        key = await self.certs.get(cert_url)
        try:
            key.verify(signature, string_to_sign(message), padding.PKCS1v15(), algorithm)
        except InvalidSignature:
            raise Unauthenticated("bad_signature", "SNS signature does not verify") from None
        subscribe_url = message.get("SubscribeURL")
        if kind != "Notification":
            if not isinstance(subscribe_url, str):
                raise Refused("not_sns", f"{kind} without SubscribeURL")
            check_url(subscribe_url, self.url_pattern, "SubscribeURL")
        return SnsMessage(str(kind), topic, str(message["MessageId"]),
                          subscribe_url if isinstance(subscribe_url, str) else None)
