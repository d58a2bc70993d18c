"""Azure Event Grid webhooks: both handshakes, and the batch split into one record per event.

- Event Grid schema: the first delivery is a ``Microsoft.EventGrid.SubscriptionValidationEvent``
  (header ``aeg-event-type: SubscriptionValidation``); the answer is 200 with
  ``{"validationResponse": <validationCode>}``. Nothing is written.
- CloudEvents 1.0 schema: an HTTP OPTIONS with ``WebHook-Request-Origin`` (the abuse-protection
  handshake of the CloudEvents webhook spec); the answer allows that origin if it is on the list.
- Deliveries are a JSON array (Event Grid schema, CloudEvents batch) or one CloudEvent object;
  each event becomes one record, its bytes exactly as sent.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping

import orjson

from consumer.ingest.payload import is_array, parse_object, split_array
from consumer.ingest.request import Refused, Reply

VALIDATION_EVENT = "Microsoft.EventGrid.SubscriptionValidationEvent"
DEFAULT_ORIGINS = ("eventgrid.azure.net",)


def abuse_protection(headers: Mapping[str, str], origins: Collection[str]) -> Reply:
    """The answer to a CloudEvents webhook validation OPTIONS request."""
    origin = headers.get("webhook-request-origin", "").strip()
    if not origin:
        raise Refused("no_origin", "OPTIONS without WebHook-Request-Origin", status=400)
    if origin.lower() not in origins:
        raise Refused("origin_not_allowed", "WebHook-Request-Origin not allowed", status=403)
    return Reply(200, headers={"WebHook-Allowed-Origin": origin, "WebHook-Allowed-Rate": "*",
                               "Allow": "POST, OPTIONS"}, kind="abuse_protection")


def validation_reply(body: bytes) -> Reply:
    """The answer to an Event Grid schema SubscriptionValidation delivery."""
    for raw in split_array(body) if is_array(body) else [body]:
        event = parse_object(raw)
        if event.get("eventType") != VALIDATION_EVENT:
            continue
        data = event.get("data")
        code = data.get("validationCode") if isinstance(data, dict) else None
        if not isinstance(code, str) or not code:
            raise Refused("malformed_handshake", "validation event without a validationCode")
        return Reply(200, orjson.dumps({"validationResponse": code}),
                     {"Content-Type": "application/json"}, kind="subscription_validation")
    raise Refused("malformed_handshake", "SubscriptionValidation without a validation event")


def events(body: bytes) -> list[bytes]:
    """One record per delivered event."""
    if is_array(body):
        records = split_array(body)
    else:
        parse_object(body)
        records = [body]
    if not records:
        raise Refused("empty", "an empty batch")
    return records
