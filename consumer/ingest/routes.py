"""One route per delivery channel: authenticate, answer handshakes, say what to write.

A route is a small object with ``name`` and ``handle(request)``; ``handle`` returns the records
to write (:class:`Accepted`), an answer that writes nothing (:class:`Reply`), or raises
:class:`Refused`. Routes never touch Kafka or HTTP: the server does (``server.py``).

What is written is what arrived: the SNS envelope, the Pub/Sub push envelope, the EventBridge
event; only batches (Event Grid arrays, Alibaba EventBridge batch pushes, EventBridge arrays)
are split into one record per event, each element's bytes unchanged.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, Protocol
from urllib.parse import parse_qsl

import orjson

from consumer.ingest import eventgrid
from consumer.ingest.alibaba import EventBridgeVerifier, SourceAllowList, cloudmonitor_principal
from consumer.ingest.oidc import JwtVerifier
from consumer.ingest.payload import is_array, parse_object, split_array
from consumer.ingest.request import Accepted, Refused, Reply, Request, Unauthenticated
from consumer.ingest.shared import Credential, HmacVerifier, api_key, basic, bearer, match
from consumer.ingest.sns import SnsVerifier

Outcome = Accepted | Reply


class Route(Protocol):
    @property
    def name(self) -> str: ...

    @property
    def methods(self) -> tuple[str, ...]: ...

    async def handle(self, req: Request) -> Outcome: ...


def _post_only(req: Request, route: Route) -> None:
    if req.method not in route.methods:
        raise Refused("method_not_allowed", f"{req.method} not allowed", status=405,
                      headers={"Allow": ", ".join(route.methods)})


def _id_of(body: bytes, *path: str) -> str | None:
    """A delivery id from the body when it is a JSON object that has one (for dedupe headers)."""
    try:
        value: Any = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
    for key in path:
        if not isinstance(value, dict):
            return None
        value = value.get(key)
    return value if isinstance(value, str) else None


def _records(body: bytes) -> list[bytes]:
    """An array is one record per element; anything else is one record as it is."""
    if is_array(body):
        records = split_array(body)
        if not records:
            raise Refused("empty", "an empty batch")
        return records
    if not body.strip():
        raise Refused("empty", "an empty body")
    return [body]


class SnsRoute:
    """POST /aws/sns: signed SNS messages of allowed topics; the subscription handshake."""

    name = "sns"
    methods: tuple[str, ...] = ("POST",)

    def __init__(self, verifier: SnsVerifier, confirm: Callable[[str], Awaitable[bytes]]) -> None:
        self.verifier = verifier
        self.confirm = confirm

    async def handle(self, req: Request) -> Outcome:
        _post_only(req, self)
        if req.headers.get("x-amz-sns-rawdelivery", "").lower() == "true":
            raise Unauthenticated("unsigned", "raw message delivery carries no signature: "
                                              "turn RawMessageDelivery off for this subscription")
        message = await self.verifier.verify(parse_object(req.body))
        if message.type == "SubscriptionConfirmation":
            assert message.subscribe_url is not None
            await self.confirm(message.subscribe_url)  # Unavailable (503) if it fails: SNS retries
            return Reply(200, b"confirmed\n", kind="subscription_confirmed")
        if message.type == "UnsubscribeConfirmation":
            return Reply(200, b"ok\n", kind="unsubscribe_confirmation")
        return Accepted([req.body], principal=message.topic_arn, delivery_id=message.message_id)


class EventBridgeRoute:
    """POST /aws/eventbridge: API destinations with an API-key header or Basic credentials."""

    name = "eventbridge"
    methods: tuple[str, ...] = ("POST", "PUT")

    def __init__(self, header: str, keys: tuple[Credential, ...],
                 users: tuple[Credential, ...]) -> None:
        self.header = header
        self.keys = keys
        self.users = users

    async def handle(self, req: Request) -> Outcome:
        _post_only(req, self)
        principal = ((self.keys and api_key(req.headers, self.header, self.keys))
                     or (self.users and basic(req.headers, self.users)))
        if not principal:
            raise Unauthenticated("no_credentials", "no API key or Basic credentials")
        records = _records(req.body)
        return Accepted(records, principal=principal,
                        delivery_id=_id_of(records[0], "id") if len(records) == 1 else None)


class PubSubRoute:
    """POST /gcp/pubsub: push subscriptions with an OIDC token of an allowed service account."""

    name = "pubsub"
    methods: tuple[str, ...] = ("POST",)

    def __init__(self, verifier: JwtVerifier) -> None:
        self.verifier = verifier

    async def handle(self, req: Request) -> Outcome:
        _post_only(req, self)
        principal = await self.verifier.verify(req.headers)
        if not req.body.strip():
            raise Refused("empty", "an empty body")
        return Accepted([req.body], principal=principal,
                        delivery_id=_id_of(req.body, "message", "messageId"))


class EventGridRoute:
    """POST/OPTIONS /azure/eventgrid: a key (query parameter or bearer) or an Entra ID token."""

    name = "eventgrid"
    methods: tuple[str, ...] = ("POST", "OPTIONS")

    def __init__(self, keys: tuple[Credential, ...], key_param: str, entra: JwtVerifier | None,
                 origins: frozenset[str]) -> None:
        self.keys = keys
        self.key_param = key_param
        self.entra = entra
        self.origins = origins

    async def authenticate(self, req: Request) -> str:
        if self.keys and req.query:
            given = [v for k, v in parse_qsl(req.query) if k == self.key_param]
            if given:
                name = match(given[0], self.keys)
                if name is None:
                    raise Unauthenticated("bad_key", "Event Grid key not recognised")
                return name
        scheme, _, token = req.headers.get("authorization", "").partition(" ")
        if scheme.lower() == "bearer" and token:
            if self.entra is not None and token.count(".") == 2:
                return await self.entra.verify(req.headers)
            if self.keys:
                name = bearer(req.headers, self.keys)
                if name is not None:
                    return name
        raise Unauthenticated("no_credentials", "no Event Grid key or Entra ID token")

    async def handle(self, req: Request) -> Outcome:
        _post_only(req, self)
        principal = await self.authenticate(req)
        if req.method == "OPTIONS":
            return eventgrid.abuse_protection(req.headers, self.origins)
        kind = req.headers.get("aeg-event-type", "Notification")
        if kind == "SubscriptionValidation":
            return eventgrid.validation_reply(req.body)
        if kind == "SubscriptionDeletion":
            return Reply(200, b"ok\n", kind="subscription_deletion")
        records = eventgrid.events(req.body)
        return Accepted(records, principal=principal,
                        delivery_id=_id_of(records[0], "id") if len(records) == 1 else None)


class AlibabaEventBridgeRoute:
    """POST /alibaba/eventbridge: signed EventBridge HTTP target pushes of allowed accounts."""

    name = "alibaba_eventbridge"
    methods: tuple[str, ...] = ("POST",)

    def __init__(self, verifier: EventBridgeVerifier) -> None:
        self.verifier = verifier

    async def handle(self, req: Request) -> Outcome:
        _post_only(req, self)
        records = await self.verifier.verify(req.url, req.headers, req.body)
        account = _id_of(records[0], "aliyunaccountid") or ""
        return Accepted(records, principal=f"account:{account}",
                        delivery_id=_id_of(records[0], "id") if len(records) == 1 else None)


class CloudMonitorRoute:
    """POST /alibaba/cloudmonitor[/<secret>]: unsigned webhooks from allowed sources or paths."""

    name = "cloudmonitor"
    methods: tuple[str, ...] = ("POST",)
    prefix = "/alibaba/cloudmonitor"

    def __init__(self, sources: SourceAllowList, secrets: tuple[Credential, ...]) -> None:
        self.sources = sources
        self.secrets = [(c.name, c.value) for c in secrets]

    async def handle(self, req: Request) -> Outcome:
        _post_only(req, self)
        rest = req.path[len(self.prefix):].strip("/")
        principal = cloudmonitor_principal(req.client, rest or None, self.sources, self.secrets)
        return Accepted(_records(req.body), principal=principal)


class GenericRoute:
    """POST /generic: relays (JD Cloud's included) with HMAC-SHA256, a bearer token or Basic."""

    name = "generic"
    methods: tuple[str, ...] = ("POST", "PUT")

    def __init__(self, hmac: HmacVerifier | None, tokens: tuple[Credential, ...],
                 users: tuple[Credential, ...]) -> None:
        self.hmac = hmac
        self.tokens = tokens
        self.users = users

    async def handle(self, req: Request) -> Outcome:
        _post_only(req, self)
        principal = ((self.hmac is not None and self.hmac.verify(req.headers, req.body))
                     or (self.tokens and bearer(req.headers, self.tokens))
                     or (self.users and basic(req.headers, self.users)))
        if not principal:
            raise Unauthenticated("no_credentials", "no signature, bearer token or Basic credentials")
        records = _records(req.body)
        return Accepted(records, principal=principal)


PATHS = {
    "sns": "/aws/sns",
    "eventbridge": "/aws/eventbridge",
    "pubsub": "/gcp/pubsub",
    "eventgrid": "/azure/eventgrid",
    "alibaba_eventbridge": "/alibaba/eventbridge",
    "cloudmonitor": CloudMonitorRoute.prefix,
    "generic": "/generic",
}
"""Route name -> path. Every route answers on its path; an unconfigured one answers 404."""
