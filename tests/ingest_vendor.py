"""The vendors' side of the ingest tests: test keys, signed SNS messages, OIDC tokens, Alibaba
EventBridge signatures, and a local HTTP server standing in for the vendors' key hosts.

Keys are generated here with ``cryptography`` (one per session); nothing is disabled in the code
under test: it is pointed at this key host by its configurable URL patterns.
"""

from __future__ import annotations

import base64
import datetime
import json
import threading
import time
import uuid
from dataclasses import dataclass, field
from functools import cache
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import jwt
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.x509.oid import NameOID

from consumer.ingest import alibaba, sns

SNS_TOPIC = "arn:aws:sns:us-east-1:123456789012:ec2-events"
PUSH_ACCOUNT = "push@my-project.iam.gserviceaccount.com"
AUDIENCE = "https://events.example.com/gcp/pubsub"
ALIBABA_ACCOUNT = "1234567890123456"


@dataclass(frozen=True)
class VendorKey:
    private: rsa.RSAPrivateKey
    pem_cert: bytes
    kid: str

    def jwk(self) -> dict[str, Any]:
        data = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(self.private.public_key()))
        return {**data, "kid": self.kid, "alg": "RS256", "use": "sig"}

    def sign(self, data: bytes, algorithm: hashes.HashAlgorithm) -> bytes:
        return self.private.sign(data, padding.PKCS1v15(), algorithm)


@cache
def vendor_key(name: str) -> VendorKey:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"test {name}")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=30))
            .sign(key, hashes.SHA256()))
    return VendorKey(key, cert.public_bytes(serialization.Encoding.PEM), f"kid-{name}")


def sns_timestamp(t: float | None = None) -> str:
    t = time.time() if t is None else t
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + f".{int(t * 1000) % 1000:03d}Z"


def sns_message(message: str, cert_url: str, *, kind: str = "Notification", topic: str = SNS_TOPIC,
                version: str = "1", key: VendorKey | None = None, subscribe_url: str | None = None,
                timestamp: float | None = None, subject: str | None = None) -> dict[str, Any]:
    """An SNS message signed as SNS signs it (the fields in the documented order)."""
    msg: dict[str, Any] = {"Type": kind, "MessageId": str(uuid.uuid4()), "TopicArn": topic,
                           "Message": message, "Timestamp": sns_timestamp(timestamp),
                           "SignatureVersion": version, "SigningCertURL": cert_url}
    if subject is not None:
        msg["Subject"] = subject
    if kind != "Notification":
        msg["Token"] = uuid.uuid4().hex * 4
        msg["SubscribeURL"] = subscribe_url or ""
    else:
        msg["UnsubscribeURL"] = cert_url.rsplit("/", 1)[0] + "/?Action=Unsubscribe"
    algorithm = hashes.SHA1() if version == "1" else hashes.SHA256()
    signature = (key or vendor_key("sns")).sign(sns.string_to_sign(msg), algorithm)
    msg["Signature"] = base64.b64encode(signature).decode()
    return msg


def oidc_token(*, key: VendorKey | None = None, aud: str = AUDIENCE, email: str = PUSH_ACCOUNT,
               iss: str = "https://accounts.google.com", ttl: float = 3600,
               verified: bool = True, now: float | None = None, **claims: Any) -> str:
    """A Google-shaped OIDC token as Pub/Sub push sends it."""
    key = key or vendor_key("google")
    now = time.time() if now is None else now
    payload = {"iss": iss, "aud": aud, "azp": "1234567890", "sub": "1234567890", "email": email,
               "email_verified": verified, "iat": int(now), "exp": int(now + ttl), **claims}
    return jwt.encode(payload, key.private, algorithm="RS256", headers={"kid": key.kid})


def alibaba_headers(url: str, body: bytes, cert_url: str, *, key: VendorKey | None = None,
                    timestamp_ms: int | None = None) -> dict[str, str]:
    headers = {"x-eventbridge-signature-timestamp": str(timestamp_ms or int(time.time() * 1000)),
               "x-eventbridge-hash-method": "SHA256",
               "x-eventbridge-signature-url": cert_url}
    sig = (key or vendor_key("alibaba")).sign(alibaba.string_to_sign(url, headers, body),
                                            hashes.SHA256())
    return {**headers, "x-eventbridge-signature-v2": base64.b64encode(sig).decode()}


@dataclass
class KeyHost:
    """A loopback HTTP server standing in for sns.<region>.amazonaws.com, www.googleapis.com,
    login.microsoftonline.com and the Alibaba EventBridge certificate host."""

    server: ThreadingHTTPServer
    documents: dict[str, bytes] = field(default_factory=dict)
    hits: list[str] = field(default_factory=list)

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    @property
    def pattern(self) -> str:
        return rf"^http://127\.0\.0\.1:{self.server.server_address[1]}/"

    def url(self, path: str) -> str:
        return self.base + path

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def start_key_host() -> KeyHost:
    documents: dict[str, bytes] = {
        "/sns/SimpleNotificationService-test.pem": vendor_key("sns").pem_cert,
        "/alibaba/eventbridge-test.pem": vendor_key("alibaba").pem_cert,
        "/google/oauth2/v3/certs": json.dumps({"keys": [vendor_key("google").jwk()]}).encode(),
        "/entra/discovery/v2.0/keys": json.dumps({"keys": [vendor_key("entra").jwk()]}).encode(),
    }
    hits: list[str] = []

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            hits.append(self.path)
            path = self.path.split("?", 1)[0]
            body = documents.get(path)
            if path == "/sns/confirm":
                body = b"<ConfirmSubscriptionResponse/>"
            if body is None:
                self.send_response(404)
                self.end_headers()
                return
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            return

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return KeyHost(server, documents, hits)
