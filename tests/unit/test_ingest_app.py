"""The ingest ASGI app and routes without Kafka: handshakes, limits, refusals, what would be
written and with which headers. A list stands in for the broker (the integration tests use one)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from consumer.config import Settings
from consumer.errors import ConfigError
from consumer.ingest.config import load_ingest_settings
from consumer.ingest.main import build_routes
from consumer.ingest.metrics import IngestMetrics
from consumer.ingest.request import Unavailable
from consumer.ingest.server import IngestApp
from tests.ingest_vendor import vendor_key

KEY = "k" * 24
TOKEN = "t" * 24
BASE_ENV = {
    "VMEVENTS_INGEST_GENERIC_TOKENS": f"relay={TOKEN}",
    "VMEVENTS_INGEST_EVENTGRID_KEYS": f"grid={KEY}",
    "VMEVENTS_INGEST_EVENTBRIDGE_API_KEYS": f"eb={KEY}",
    "VMEVENTS_INGEST_CLOUDMONITOR_PATH_SECRETS": f"cm={'p' * 20}",
}


class ListWriter:
    def __init__(self) -> None:
        self.ready = True
        self.written: list[tuple[bytes, list[tuple[str, Any]], bytes | None]] = []
        self.fail = False

    async def write(self, values: Sequence[bytes], headers: list[tuple[str, Any]], *,
                    key: bytes | None, timestamp_ms: int) -> None:
        if self.fail:
            raise Unavailable("ack_timeout", "no delivery report in time")
        self.written.extend((v, headers, key) for v in values)


def make_app(env: dict[str, str] | None = None, **limits: Any) -> tuple[IngestApp, ListWriter,
                                                                         CollectorRegistry]:
    settings = load_ingest_settings(env or BASE_ENV, Settings())
    registry = CollectorRegistry()
    writer = ListWriter()
    app = IngestApp(build_routes(settings), writer, IngestMetrics(registry),
                    max_body_bytes=limits.get("max_body_bytes", 4096),
                    max_in_flight=limits.get("max_in_flight", 10), retry_after_s=7)
    return app, writer, registry


def call(app: IngestApp, method: str, path: str, body: bytes = b"", headers: dict[str, str] | None = None,
         query: str = "") -> tuple[int, dict[str, str], bytes]:
    scope = {"type": "http", "method": method, "path": path, "query_string": query.encode(),
             "headers": [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()],
             "client": ("127.0.0.1", 5555), "scheme": "http"}
    sent: list[dict[str, Any]] = []
    chunks = [body[i:i + 1000] for i in range(0, len(body), 1000)] or [b""]

    async def receive() -> dict[str, Any]:
        chunk = chunks.pop(0)
        return {"type": "http.request", "body": chunk, "more_body": bool(chunks)}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    asyncio.run(app(scope, receive, send))  # type: ignore[arg-type]
    start, end = sent
    return (start["status"], {k.decode(): v.decode() for k, v in start["headers"]}, end["body"])


def test_generic_route_writes_the_body_with_channel_time_and_principal_headers() -> None:
    app, writer, registry = make_app()
    body = b'{"eventAction": "x"}'
    status, _, _ = call(app, "POST", "/generic", body, {"Authorization": f"Bearer {TOKEN}"})
    assert status == 200
    [(value, headers, _)] = writer.written
    assert value == body
    h = dict(headers)
    assert h["vmevents.channel"] == b"generic"
    assert h["vmevents.principal"] == b"relay"
    assert int(h["vmevents.received_at"]) > 1_700_000_000_000
    assert registry.get_sample_value("vmevents_ingest_records_total", {"route": "generic"}) == 1


def test_unauthenticated_requests_write_nothing_and_are_counted_by_reason() -> None:
    app, writer, registry = make_app()
    assert call(app, "POST", "/generic", b"{}")[0] == 401
    assert call(app, "POST", "/generic", b"{}", {"Authorization": "Bearer nope"})[0] == 401
    assert call(app, "POST", "/aws/eventbridge", b"{}", {"x-api-key": "wrong"})[0] == 401
    assert call(app, "POST", "/alibaba/cloudmonitor", b"{}")[0] == 401
    assert call(app, "POST", "/alibaba/cloudmonitor/" + "q" * 20, b"{}")[0] == 401
    assert writer.written == []
    assert registry.get_sample_value("vmevents_ingest_auth_failures_total",
                                     {"route": "generic", "reason": "bad_token"}) == 1
    assert registry.get_sample_value("vmevents_ingest_requests_total",
                                     {"route": "generic", "status": "401"}) == 2


def test_routes_without_credentials_are_off() -> None:
    app, writer, _ = make_app()
    for path in ("/aws/sns", "/gcp/pubsub", "/alibaba/eventbridge"):
        status, _, body = call(app, "POST", path, b"{}")
        assert (status, body) == (404, b"route not configured\n")
    assert call(app, "POST", "/nowhere", b"{}")[0] == 404
    assert writer.written == []


def test_oversized_body_is_413_by_content_length_and_while_reading() -> None:
    app, writer, _ = make_app(max_body_bytes=2048)
    auth = {"Authorization": f"Bearer {TOKEN}"}
    assert call(app, "POST", "/generic", b"x", {**auth, "Content-Length": "5000"})[0] == 413
    assert call(app, "POST", "/generic", b"{" + b" " * 5000 + b"}", auth)[0] == 413
    assert writer.written == []


def test_broker_not_acknowledging_is_503_with_retry_after() -> None:
    app, writer, registry = make_app()
    writer.fail = True
    status, headers, _ = call(app, "POST", "/generic", b"{}", {"Authorization": f"Bearer {TOKEN}"})
    assert (status, headers["retry-after"]) == (503, "7")
    assert registry.get_sample_value("vmevents_ingest_produce_errors_total",
                                     {"reason": "ack_timeout"}) == 1


def test_over_the_in_flight_limit_is_503_at_once() -> None:
    app, writer, _ = make_app(max_in_flight=1)
    app.in_flight = 1  # one request is being handled
    status, headers, _ = call(app, "POST", "/generic", b"{}", {"Authorization": f"Bearer {TOKEN}"})
    assert (status, headers["retry-after"]) == (503, "7")
    assert writer.written == []


GRID = {"aeg-event-type": "Notification"}


def test_eventgrid_validation_handshake_answers_the_code_and_writes_nothing() -> None:
    app, writer, _ = make_app()
    body = json.dumps([{"id": "2d1781af", "topic": "/subscriptions/x", "subject": "",
                        "data": {"validationCode": "512d38b6-c7b8-40c8-89fe-f46f9e9622b6",
                                 "validationUrl": "https://rp-eastus2.eventgrid.azure.net:553/x"},
                        "eventType": "Microsoft.EventGrid.SubscriptionValidationEvent",
                        "eventTime": "2018-01-25T22:12:19.4556811Z", "metadataVersion": "1",
                        "dataVersion": "1"}]).encode()
    status, headers, answer = call(app, "POST", "/azure/eventgrid", body,
                                   {"aeg-event-type": "SubscriptionValidation"}, query=f"code={KEY}")
    assert status == 200
    assert headers["content-type"] == "application/json"
    assert json.loads(answer) == {"validationResponse": "512d38b6-c7b8-40c8-89fe-f46f9e9622b6"}
    assert writer.written == []
    assert call(app, "POST", "/azure/eventgrid", body, {"aeg-event-type": "SubscriptionValidation"},
                query="code=wrong")[0] == 401


def test_eventgrid_cloudevents_abuse_protection_options() -> None:
    app, writer, _ = make_app()
    status, headers, _ = call(app, "OPTIONS", "/azure/eventgrid", b"",
                              {"WebHook-Request-Origin": "eventgrid.azure.net",
                               "Authorization": f"Bearer {KEY}"})
    assert status == 200
    assert headers["webhook-allowed-origin"] == "eventgrid.azure.net"
    assert call(app, "OPTIONS", "/azure/eventgrid", b"", {"WebHook-Request-Origin": "evil.example",
                                                          "Authorization": f"Bearer {KEY}"})[0] == 403
    assert call(app, "OPTIONS", "/azure/eventgrid", b"",
                {"WebHook-Request-Origin": "eventgrid.azure.net"})[0] == 401
    assert writer.written == []


def test_eventgrid_batch_is_one_record_per_event_bytes_unchanged() -> None:
    app, writer, _ = make_app()
    events = [b'{"id": "1", "eventType": "a"}', b'{"id":"2","eventType":"b"}']
    status, _, _ = call(app, "POST", "/azure/eventgrid", b"[" + b",\n ".join(events) + b"]", GRID,
                        query=f"code={KEY}")
    assert status == 200
    assert [v for v, _, _ in writer.written] == events


def test_eventbridge_single_event_is_keyed_by_its_id() -> None:
    app, writer, _ = make_app()
    body = b'{"id": "7bf73129", "source": "aws.ec2", "detail-type": "x"}'
    assert call(app, "POST", "/aws/eventbridge", body, {"x-api-key": KEY})[0] == 200
    [(value, headers, key)] = writer.written
    assert (value, key, dict(headers)["vmevents.delivery_id"]) == (body, b"7bf73129", b"7bf73129")


def test_method_not_allowed_and_malformed_batch() -> None:
    app, writer, _ = make_app()
    assert call(app, "GET", "/generic", b"", {"Authorization": f"Bearer {TOKEN}"})[0] == 405
    assert call(app, "POST", "/azure/eventgrid", b"[1, 2]", GRID, query=f"code={KEY}")[0] == 400
    assert writer.written == []


def test_cloudmonitor_secret_path_is_accepted() -> None:
    app, writer, _ = make_app()
    assert call(app, "POST", "/alibaba/cloudmonitor/" + "p" * 20, b'{"product": "ECS"}')[0] == 200
    assert dict(writer.written[0][1])["vmevents.principal"] == b"path:cm"


@pytest.mark.parametrize(("env", "message"), [
    ({}, "no ingest route has credentials"),
    ({"VMEVENTS_INGEST_PUBSUB_AUDIENCES": "https://x"}, "PUBSUB_SERVICE_ACCOUNTS"),
    ({"VMEVENTS_INGEST_GENERIC_TOKENS": "short=abc"}, "shorter than 16"),
    ({"VMEVENTS_INGEST_GENERIC_TOKENS": "novalue"}, "name=value"),
    ({"VMEVENTS_INGEST_SNS_TOPIC_ARNS": "arn:x", "VMEVENTS_INGEST_SNS_URL_PATTERN": "https://x"},
     "anchored"),
    ({"VMEVENTS_INGEST_CLOUDMONITOR_SOURCES": "not-a-net"}, "not an address"),
    ({"VMEVENTS_INGEST_EVENTGRID_ENTRA_TENANT": "contoso"}, "EVENTGRID_ENTRA_AUDIENCES"),
])
def test_config_errors_are_one_readable_line(env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError) as exc:
        load_ingest_settings(env, Settings())
    assert message in str(exc.value)
    assert "\n" not in str(exc.value)


def test_secret_values_are_registered_for_redaction() -> None:
    settings = load_ingest_settings(BASE_ENV, Settings())
    assert TOKEN in settings.secret_values()
    assert TOKEN not in repr(settings)
    assert vendor_key("sns").kid  # the vendor keys module is importable without a host
