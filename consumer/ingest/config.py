"""``vmevents ingest`` settings from ``VMEVENTS_INGEST_*`` variables, validated once at start.

A route is on only when its credentials are configured; a route configured by halves (a Pub/Sub
audience without the service accounts allowed to push) stops the start with one line, as does a
service with no route on at all. Credentials lists are ``name=value`` pairs separated by commas
(``jd-relay=s3cret,backup=0ther``): the name is what logs and record headers show.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping
from dataclasses import dataclass, field

from consumer.config import Settings, _int, _Problems, _topic
from consumer.errors import ConfigError
from consumer.ingest import alibaba, eventgrid, oidc, sns
from consumer.ingest.shared import Credential

P = "VMEVENTS_INGEST_"


@dataclass(frozen=True)
class IngestSettings:
    host: str = "0.0.0.0"
    port: int = 8000
    topic: str = "vm.events.raw"
    public_url: str = ""
    """``https://events.example.com``: the URL senders address (signatures cover it); empty: from
    the request's Host header and ``X-Forwarded-Proto`` of a trusted proxy."""
    max_body_bytes: int = 1_048_576
    max_in_flight: int = 2000
    ack_timeout_ms: int = 4000
    retry_after_s: int = 10
    trusted_proxies: tuple[str, ...] = ()
    linger_ms: int = 1
    sns_topics: frozenset[str] = frozenset()
    sns_url_pattern: str = sns.DEFAULT_URL_PATTERN
    sns_max_age_s: int = 3900
    eventbridge_header: str = "x-api-key"
    eventbridge_keys: tuple[Credential, ...] = ()
    eventbridge_basic: tuple[Credential, ...] = ()
    pubsub_audiences: tuple[str, ...] = ()
    pubsub_service_accounts: frozenset[str] = frozenset()
    pubsub_jwks_url: str = oidc.GOOGLE_JWKS_URL
    pubsub_issuers: tuple[str, ...] = oidc.GOOGLE_ISSUERS
    eventgrid_keys: tuple[Credential, ...] = ()
    eventgrid_key_param: str = "code"
    eventgrid_tenant: str = ""
    eventgrid_audiences: tuple[str, ...] = ()
    eventgrid_apps: frozenset[str] = frozenset()
    eventgrid_jwks_url: str = ""
    eventgrid_issuers: tuple[str, ...] = ()
    eventgrid_origins: frozenset[str] = frozenset(eventgrid.DEFAULT_ORIGINS)
    alibaba_accounts: frozenset[str] = frozenset()
    alibaba_cert_url_pattern: str = alibaba.DEFAULT_CERT_URL_PATTERN
    cloudmonitor_sources: tuple[str, ...] = ()
    cloudmonitor_path_secrets: tuple[Credential, ...] = ()
    generic_tokens: tuple[Credential, ...] = ()
    generic_hmac: tuple[Credential, ...] = ()
    generic_basic: tuple[Credential, ...] = ()
    hmac_max_skew_s: int = 300
    kafka: Settings = field(default_factory=Settings)

    def secret_values(self) -> list[str]:
        creds = (*self.eventbridge_keys, *self.eventbridge_basic, *self.eventgrid_keys,
                 *self.cloudmonitor_path_secrets, *self.generic_tokens, *self.generic_hmac,
                 *self.generic_basic)
        values = [c.value for c in creds]
        values += [c.value.partition(":")[2] for c in creds if ":" in c.value]
        return values

    def routes_on(self) -> list[str]:
        on = []
        if self.sns_topics:
            on.append("sns")
        if self.eventbridge_keys or self.eventbridge_basic:
            on.append("eventbridge")
        if self.pubsub_audiences:
            on.append("pubsub")
        if self.eventgrid_keys or self.eventgrid_tenant:
            on.append("eventgrid")
        if self.alibaba_accounts:
            on.append("alibaba_eventbridge")
        if self.cloudmonitor_sources or self.cloudmonitor_path_secrets:
            on.append("cloudmonitor")
        if self.generic_tokens or self.generic_hmac or self.generic_basic:
            on.append("generic")
        return on


def _list(env: Mapping[str, str], name: str) -> tuple[str, ...]:
    return tuple(v.strip() for v in env.get(P + name, "").split(",") if v.strip())


def _credentials(env: Mapping[str, str], name: str, *, userpass: bool = False) -> tuple[Credential, ...]:
    """``name=value,...``; with ``userpass`` the items are ``user:password`` named by the user."""
    out: list[Credential] = []
    for item in _list(env, name):
        if userpass:
            user, colon, password = item.partition(":")
            if not colon or not user or not password:
                raise ConfigError(f"{P}{name}: every item must be user:password")
            out.append(Credential(user, item))
            continue
        cred_name, eq, value = item.partition("=")
        if not eq or not cred_name.strip() or not value:
            raise ConfigError(f"{P}{name}: every item must be name=value (the name is logged, "
                              "the value never)")
        if len(value) < 16:
            raise ConfigError(f"{P}{name}: the value of {cred_name.strip()!r} is shorter than "
                              "16 characters")
        out.append(Credential(cred_name.strip(), value))
    names = [c.name for c in out]
    if len(set(names)) != len(names):
        raise ConfigError(f"{P}{name}: a credential name is given twice")
    return tuple(out)


def _regex(env: Mapping[str, str], name: str, default: str) -> str:
    raw = env.get(P + name, "").strip() or default
    try:
        re.compile(raw)
    except re.error as exc:
        raise ConfigError(f"{P}{name}={raw!r} is not a regular expression: {exc}") from None
    if not raw.startswith("^"):
        raise ConfigError(f"{P}{name} must be anchored with ^ (it decides which hosts keys come from)")
    return raw


def _cidrs(env: Mapping[str, str], name: str) -> tuple[str, ...]:
    items = _list(env, name)
    for item in items:
        try:
            ipaddress.ip_network(item, strict=False)
        except ValueError:
            raise ConfigError(f"{P}{name}: {item!r} is not an address or CIDR") from None
    return items


def _url(env: Mapping[str, str], name: str, default: str) -> str:
    raw = env.get(P + name, "").strip() or default
    if raw and not raw.startswith(("https://", "http://")):
        raise ConfigError(f"{P}{name}={raw!r} must be an http(s) URL")
    return raw.rstrip("/") if name == "PUBLIC_URL" else raw


def load_ingest_settings(env: Mapping[str, str], kafka: Settings) -> IngestSettings:
    """Read and validate; one ConfigError naming every bad variable."""
    p = _Problems()
    c = p.check

    def i(name: str, default: int, minimum: int, maximum: int | None = None) -> int:
        return c(lambda: _int(env, P + name, default, minimum=minimum, maximum=maximum), default)

    tenant = env.get(P + "EVENTGRID_ENTRA_TENANT", "").strip()
    entra_jwks = f"https://login.microsoftonline.com/{tenant}/discovery/v2.0/keys" if tenant else ""
    entra_issuers = (f"https://login.microsoftonline.com/{tenant}/v2.0",
                     f"https://sts.windows.net/{tenant}/") if tenant else ()
    settings = IngestSettings(
        host=env.get(P + "HOST", "0.0.0.0"),
        port=i("PORT", 8000, 0, 65535),
        topic=c(lambda: _topic(env, P + "TOPIC", kafka.raw_topics[0] if kafka.raw_topics else "x"), ""),
        public_url=c(lambda: _url(env, "PUBLIC_URL", ""), ""),
        max_body_bytes=i("MAX_BODY_BYTES", min(1_048_576, kafka.max_message_bytes), 1024,
                         kafka.max_message_bytes),
        max_in_flight=i("MAX_IN_FLIGHT", 2000, 1, 1_000_000),
        ack_timeout_ms=i("ACK_TIMEOUT_MS", 4000, 500, 120_000),
        retry_after_s=i("RETRY_AFTER_S", 10, 1, 3600),
        trusted_proxies=c(lambda: _cidrs(env, "TRUSTED_PROXIES"), ()),
        linger_ms=i("LINGER_MS", 1, 0, 1000),
        sns_topics=frozenset(_list(env, "SNS_TOPIC_ARNS")),
        sns_url_pattern=c(lambda: _regex(env, "SNS_URL_PATTERN", sns.DEFAULT_URL_PATTERN), ""),
        sns_max_age_s=i("SNS_MAX_AGE_S", 3900, 60),
        eventbridge_header=env.get(P + "EVENTBRIDGE_API_KEY_HEADER", "x-api-key").strip().lower(),
        eventbridge_keys=c(lambda: _credentials(env, "EVENTBRIDGE_API_KEYS"), ()),
        eventbridge_basic=c(lambda: _credentials(env, "EVENTBRIDGE_BASIC", userpass=True), ()),
        pubsub_audiences=_list(env, "PUBSUB_AUDIENCES"),
        pubsub_service_accounts=frozenset(_list(env, "PUBSUB_SERVICE_ACCOUNTS")),
        pubsub_jwks_url=c(lambda: _url(env, "PUBSUB_JWKS_URL", oidc.GOOGLE_JWKS_URL), ""),
        pubsub_issuers=_list(env, "PUBSUB_ISSUERS") or oidc.GOOGLE_ISSUERS,
        eventgrid_keys=c(lambda: _credentials(env, "EVENTGRID_KEYS"), ()),
        eventgrid_key_param=env.get(P + "EVENTGRID_KEY_PARAM", "code").strip(),
        eventgrid_tenant=tenant,
        eventgrid_audiences=_list(env, "EVENTGRID_ENTRA_AUDIENCES"),
        eventgrid_apps=frozenset(_list(env, "EVENTGRID_ENTRA_APPS")),
        eventgrid_jwks_url=c(lambda: _url(env, "EVENTGRID_ENTRA_JWKS_URL", entra_jwks), ""),
        eventgrid_issuers=_list(env, "EVENTGRID_ENTRA_ISSUERS") or entra_issuers,
        eventgrid_origins=frozenset(o.lower() for o in _list(env, "EVENTGRID_ORIGINS"))
        or frozenset(eventgrid.DEFAULT_ORIGINS),
        alibaba_accounts=frozenset(_list(env, "ALIBABA_ACCOUNT_IDS")),
        alibaba_cert_url_pattern=c(lambda: _regex(env, "ALIBABA_CERT_URL_PATTERN",
                                                  alibaba.DEFAULT_CERT_URL_PATTERN), ""),
        cloudmonitor_sources=c(lambda: _cidrs(env, "CLOUDMONITOR_SOURCES"), ()),
        cloudmonitor_path_secrets=c(lambda: _credentials(env, "CLOUDMONITOR_PATH_SECRETS"), ()),
        generic_tokens=c(lambda: _credentials(env, "GENERIC_TOKENS"), ()),
        generic_hmac=c(lambda: _credentials(env, "GENERIC_HMAC_SECRETS"), ()),
        generic_basic=c(lambda: _credentials(env, "GENERIC_BASIC", userpass=True), ()),
        hmac_max_skew_s=i("HMAC_MAX_SKEW_S", 300, 5, 3600),
        kafka=kafka,
    )
    s = settings
    if s.pubsub_audiences and not s.pubsub_service_accounts:
        p.messages.append(f"{P}PUBSUB_AUDIENCES is set without {P}PUBSUB_SERVICE_ACCOUNTS: "
                          "name the service accounts allowed to push")
    if s.pubsub_service_accounts and not s.pubsub_audiences:
        p.messages.append(f"{P}PUBSUB_SERVICE_ACCOUNTS is set without {P}PUBSUB_AUDIENCES")
    if s.eventgrid_tenant and not s.eventgrid_audiences:
        p.messages.append(f"{P}EVENTGRID_ENTRA_TENANT is set without {P}EVENTGRID_ENTRA_AUDIENCES "
                          "(your application ID URI)")
    if s.eventgrid_audiences and not s.eventgrid_tenant:
        p.messages.append(f"{P}EVENTGRID_ENTRA_AUDIENCES is set without {P}EVENTGRID_ENTRA_TENANT")
    if s.eventgrid_tenant and not re.fullmatch(r"[A-Za-z0-9.-]+", s.eventgrid_tenant):
        p.messages.append(f"{P}EVENTGRID_ENTRA_TENANT={s.eventgrid_tenant!r} is not a tenant id")
    if not re.fullmatch(r"[a-z0-9-]+", s.eventbridge_header):
        p.messages.append(f"{P}EVENTBRIDGE_API_KEY_HEADER={s.eventbridge_header!r} is not a header name")
    if not p.messages and not s.routes_on():
        p.messages.append(
            "no ingest route has credentials, so every one is off: set at least one of "
            f"{P}SNS_TOPIC_ARNS, {P}EVENTBRIDGE_API_KEYS, {P}PUBSUB_AUDIENCES, {P}EVENTGRID_KEYS, "
            f"{P}ALIBABA_ACCOUNT_IDS, {P}CLOUDMONITOR_PATH_SECRETS, {P}GENERIC_TOKENS "
            "(see the README's ingest section)")
    if p.messages:
        raise ConfigError("; ".join(p.messages))
    return settings

