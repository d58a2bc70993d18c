"""The ingest verifiers with real crypto and test keys: SNS signatures, OIDC tokens, Alibaba
EventBridge signatures, shared secrets, and the array split. Keys come from a dict, not a host."""

from __future__ import annotations

import asyncio
import base64
import json
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import pytest

from consumer.ingest import alibaba, oidc, sns
from consumer.ingest.keys import KeyCache
from consumer.ingest.payload import split_array
from consumer.ingest.request import Forbidden, Refused, Unauthenticated, Unavailable
from consumer.ingest.shared import Credential, HmacVerifier, basic, bearer, hmac_signature
from tests.ingest_vendor import (
    ALIBABA_ACCOUNT,
    AUDIENCE,
    PUSH_ACCOUNT,
    SNS_TOPIC,
    alibaba_headers,
    oidc_token,
    sns_message,
    vendor_key,
)

T = TypeVar("T")
HOST = "https://sns.us-east-1.amazonaws.com"
CERT = f"{HOST}/SimpleNotificationService-test.pem"
GOOGLE = "https://www.googleapis.com/oauth2/v3/certs"
ALI_CERT = "https://cn-hangzhou-eventbridge.oss-accelerate.aliyuncs.com/cert.pem"


def run(coro: Awaitable[T]) -> T:
    return asyncio.run(coro)  # type: ignore[arg-type]


def fetcher(docs: dict[str, bytes]) -> tuple[Callable[[str], Awaitable[bytes]], list[str]]:
    calls: list[str] = []

    async def fetch(url: str) -> bytes:
        calls.append(url)
        if url not in docs:
            raise Unavailable("key_fetch_failed", url)
        return docs[url]

    return fetch, calls


def sns_verifier(**kw: Any) -> tuple[sns.SnsVerifier, list[str]]:
    fetch, calls = fetcher({CERT: vendor_key("sns").pem_cert})
    certs = KeyCache(sns.load_certificate_key, fetch)
    return sns.SnsVerifier(frozenset({SNS_TOPIC}), sns.DEFAULT_URL_PATTERN, certs, **kw), calls


@pytest.mark.parametrize("version", ["1", "2"])
def test_sns_signature_versions_verify_and_the_certificate_is_fetched_once(version: str) -> None:
    verifier, calls = sns_verifier()
    for _ in range(3):
        msg = sns_message('{"a": "b\\n"}', CERT, version=version, subject="s")
        assert run(verifier.verify(msg)).topic_arn == SNS_TOPIC
    assert calls == [CERT]


@pytest.mark.parametrize(("change", "error", "reason"), [
    ({"Message": "tampered"}, Unauthenticated, "bad_signature"),
    ({"TopicArn": "arn:aws:sns:us-east-1:999:other"}, Forbidden, "unknown_topic"),
    ({"SigningCertURL": "https://sns.evil.com/x.pem"}, Unauthenticated, "untrusted_key_url"),
    ({"SigningCertURL": "https://sns.us-east-1.amazonaws.com.evil.com/x.pem"}, Unauthenticated,
     "untrusted_key_url"),
    ({"SigningCertURL": "https://x@sns.us-east-1.amazonaws.com/x.pem"}, Unauthenticated,
     "untrusted_key_url"),
    ({"SigningCertURL": "http://sns.us-east-1.amazonaws.com/x.pem"}, Unauthenticated,
     "untrusted_key_url"),
    ({"SignatureVersion": "3"}, Unauthenticated, "bad_signature_version"),
    ({"Signature": "!!"}, Unauthenticated, "bad_signature"),
    ({"Type": "Other"}, Refused, "not_sns"),
])
def test_sns_forgeries_are_refused(change: dict[str, str], error: type[Refused], reason: str) -> None:
    verifier, _ = sns_verifier()
    msg = sns_message("{}", CERT) | change
    with pytest.raises(error) as exc:
        run(verifier.verify(msg))
    assert exc.value.reason == reason


def test_sns_signed_by_another_key_is_refused() -> None:
    verifier, _ = sns_verifier()
    with pytest.raises(Unauthenticated, match="does not verify"):
        run(verifier.verify(sns_message("{}", CERT, key=vendor_key("other"))))


def test_sns_old_message_is_refused() -> None:
    verifier, _ = sns_verifier(max_age_s=3900)
    with pytest.raises(Unauthenticated) as exc:
        run(verifier.verify(sns_message("{}", CERT, timestamp=time.time() - 7200)))
    assert exc.value.reason == "expired"


def test_sns_confirmation_needs_a_subscribe_url_on_the_sns_host() -> None:
    verifier, _ = sns_verifier()
    ok = sns_message("confirm", CERT, kind="SubscriptionConfirmation",
                     subscribe_url=f"{HOST}/?Action=ConfirmSubscription&Token=x")
    assert run(verifier.verify(ok)).subscribe_url is not None
    bad = sns_message("confirm", CERT, kind="SubscriptionConfirmation",
                      subscribe_url="https://attacker.example/?Action=ConfirmSubscription")
    with pytest.raises(Unauthenticated):
        run(verifier.verify(bad))


def test_sns_key_host_down_is_unavailable_not_unauthenticated() -> None:
    fetch, _ = fetcher({})
    verifier = sns.SnsVerifier(frozenset({SNS_TOPIC}), sns.DEFAULT_URL_PATTERN,
                               KeyCache(sns.load_certificate_key, fetch))
    with pytest.raises(Unavailable):
        run(verifier.verify(sns_message("{}", CERT)))


def jwt_verifier(**policy: Any) -> tuple[oidc.JwtVerifier, list[str]]:
    jwks = json.dumps({"keys": [vendor_key("google").jwk()]}).encode()
    fetch, calls = fetcher({GOOGLE: jwks})
    p = oidc.TokenPolicy(oidc.GOOGLE_ISSUERS, (AUDIENCE,), ("email",),
                         frozenset({PUSH_ACCOUNT}), **policy)
    return oidc.JwtVerifier(GOOGLE, p, KeyCache(oidc.parse_jwks, fetch, ttl_s=300)), calls


def bearer_of(token: str) -> dict[str, str]:
    return {"authorization": f"Bearer {token}"}


def test_pubsub_token_verifies_and_names_the_service_account() -> None:
    verifier, calls = jwt_verifier()
    for _ in range(3):
        assert run(verifier.verify(bearer_of(oidc_token()))) == PUSH_ACCOUNT
    assert calls == [GOOGLE]


@pytest.mark.parametrize(("token_kw", "error", "reason"), [
    ({"aud": "https://other.example.com/push"}, Unauthenticated, "wrong_audience"),
    ({"ttl": -120}, Unauthenticated, "expired"),
    ({"iss": "https://evil.example.com"}, Unauthenticated, "wrong_issuer"),
    ({"email": "intruder@other.iam.gserviceaccount.com"}, Forbidden, "principal_not_allowed"),
    ({"verified": False}, Forbidden, "email_not_verified"),
])
def test_pubsub_bad_tokens_are_refused(token_kw: dict[str, Any], error: type[Refused],
                                       reason: str) -> None:
    verifier, _ = jwt_verifier()
    with pytest.raises(error) as exc:
        run(verifier.verify(bearer_of(oidc_token(**token_kw))))
    assert exc.value.reason == reason


def test_token_of_an_unknown_key_refreshes_the_keys_once_then_refuses() -> None:
    verifier, calls = jwt_verifier()
    token = oidc_token(key=vendor_key("stranger"))
    for _ in range(3):
        with pytest.raises(Unauthenticated) as exc:
            run(verifier.verify(bearer_of(token)))
        assert exc.value.reason == "unknown_key"
    assert calls == [GOOGLE, GOOGLE]  # first fetch, one refresh within the cooldown


def test_token_forged_with_the_right_kid_and_another_key_is_refused() -> None:
    verifier, _ = jwt_verifier()
    forged = oidc_token(key=vendor_key("stranger").__class__(
        vendor_key("stranger").private, b"", vendor_key("google").kid))
    with pytest.raises(Unauthenticated) as exc:
        run(verifier.verify(bearer_of(forged)))
    assert exc.value.reason == "bad_signature"


@pytest.mark.parametrize("header", [{}, {"authorization": "Basic eDp5"}, bearer_of("not-a-jwt"),
                                    bearer_of("e30.e30.")])
def test_missing_or_malformed_tokens_are_refused(header: dict[str, str]) -> None:
    verifier, _ = jwt_verifier()
    with pytest.raises(Unauthenticated):
        run(verifier.verify(header))


def eventbridge_verifier(now: float | None = None) -> alibaba.EventBridgeVerifier:
    fetch, _ = fetcher({ALI_CERT: vendor_key("alibaba").pem_cert})
    return alibaba.EventBridgeVerifier(
        frozenset({ALIBABA_ACCOUNT}), alibaba.DEFAULT_CERT_URL_PATTERN,
        KeyCache(sns.load_certificate_key, fetch), clock=(lambda: now) if now else time.time)


URL = "https://events.example.com/alibaba/eventbridge"
ALI_BODY = json.dumps({"id": "1", "source": "acs.ecs", "aliyunaccountid": ALIBABA_ACCOUNT}).encode()


def test_alibaba_eventbridge_signature_verifies() -> None:
    headers = alibaba_headers(URL, ALI_BODY, ALI_CERT)
    assert run(eventbridge_verifier().verify(URL, headers, ALI_BODY)) == [ALI_BODY]


@pytest.mark.parametrize(("url", "body", "headers_change", "reason"), [
    (URL, ALI_BODY + b" ", {}, "bad_signature"),
    (URL + "?x=1", ALI_BODY, {}, "bad_signature"),
    (URL, ALI_BODY, {"x-eventbridge-signature-url": "https://evil.example.com/cert.pem"},
     "untrusted_key_url"),
    (URL, ALI_BODY, {"x-eventbridge-signature-v2": ""}, "unsigned"),
    (URL, ALI_BODY, {"x-eventbridge-signature-timestamp": str(int((time.time() - 120) * 1000))},
     "expired"),
])
def test_alibaba_eventbridge_forgeries_are_refused(url: str, body: bytes,
                                                   headers_change: dict[str, str],
                                                   reason: str) -> None:
    headers = alibaba_headers(URL, ALI_BODY, ALI_CERT) | headers_change
    with pytest.raises(Unauthenticated) as exc:
        run(eventbridge_verifier().verify(url, headers, body))
    assert exc.value.reason == reason


def test_alibaba_eventbridge_other_account_is_forbidden() -> None:
    body = json.dumps({"id": "1", "source": "acs.ecs", "aliyunaccountid": "999"}).encode()
    with pytest.raises(Forbidden):
        run(eventbridge_verifier().verify(URL, alibaba_headers(URL, body, ALI_CERT), body))


def test_cloudmonitor_by_source_network_or_rotated_path_secret() -> None:
    sources = alibaba.SourceAllowList(["47.74.206.0/24"])
    secrets = [("old", "a" * 20), ("new", "b" * 20)]
    assert alibaba.cloudmonitor_principal("47.74.206.9", None, sources, secrets) == "source:47.74.206.9"
    assert alibaba.cloudmonitor_principal("10.0.0.1", "b" * 20, sources, secrets) == "path:new"
    with pytest.raises(Forbidden):
        alibaba.cloudmonitor_principal("10.0.0.1", None, sources, secrets)
    with pytest.raises(Unauthenticated):
        alibaba.cloudmonitor_principal("47.74.206.9", "c" * 20, sources, secrets)


TOKENS = (Credential("jd-relay", "t" * 24), Credential("next", "n" * 24))


def test_bearer_and_basic_name_the_credential() -> None:
    assert bearer({"authorization": "Bearer " + "n" * 24}, TOKENS) == "next"
    assert bearer({}, TOKENS) is None
    with pytest.raises(Unauthenticated):
        bearer({"authorization": "Bearer wrong"}, TOKENS)
    users = (Credential("eb", "eb:secret-password"),)
    blob = base64.b64encode(b"eb:secret-password").decode()
    assert basic({"authorization": f"Basic {blob}"}, users) == "eb"
    with pytest.raises(Unauthenticated):
        basic({"authorization": "Basic " + base64.b64encode(b"eb:nope").decode()}, users)


def test_hmac_window_and_replay() -> None:
    now = [1_700_000_000.0]
    verifier = HmacVerifier(TOKENS, max_skew_s=300, clock=lambda: now[0])
    body = b'{"x": 1}'
    stamp = str(int(now[0]))
    headers = {"x-vmevents-timestamp": stamp, "x-vmevents-signature": hmac_signature("t" * 24, stamp, body)}
    assert verifier.verify(headers, body) == "jd-relay"
    with pytest.raises(Unauthenticated) as exc:
        verifier.verify(headers, body)
    assert exc.value.reason == "replay"
    with pytest.raises(Unauthenticated) as exc:
        verifier.verify(headers, body + b" ")
    assert exc.value.reason == "bad_signature"
    now[0] += 400
    with pytest.raises(Unauthenticated) as exc:
        verifier.verify({**headers, "x-vmevents-signature": hmac_signature("n" * 24, stamp, body)}, body)
    assert exc.value.reason == "expired"


def test_split_array_keeps_each_elements_bytes() -> None:
    body = '[ {"a": "é",  "b": [1, 2]} ,\n{"c":{}}]'.encode()
    assert split_array(body) == ['{"a": "é",  "b": [1, 2]}'.encode(), b'{"c":{}}']
    assert split_array(b"[]") == []
    for bad in (b"[1]", b'[{"a":1} {"b":2}]', b'[{"a":1}] x', b"{}", b"\xff"):
        with pytest.raises(Refused):
            split_array(bad)
