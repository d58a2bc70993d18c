"""GCP Compute Engine system events (Cloud Audit Logs) -> InstanceEvents.

A Logging sink exports each ``LogEntry`` of ``cloudaudit.googleapis.com/system_event`` to
Pub/Sub; the Kafka connector delivers the LogEntry JSON (``source_format`` gcp.logentry), a push
subscription wraps it base64 in ``message.data`` (gcp.pubsub_push).

Mapping: ``instance_id`` = ``resource.labels.instance_id``, account = ``project_id``, region = the
zone without its last ``-x``, code = ``protoPayload.methodName``, event time = ``timestamp`` (to
the millisecond), event id = ``operation.id``, notification id = ``insertId``, level =
``severity``, vendor status = ``protoPayload.status.message``; the instance name (last segment of
``resourceName``) and zone are attributes.

Phase: an operation told in several entries marks them ``operation.first``/``last``: the first
opens it (executing; scheduled for ``upcomingMaintenance``, a notice), the last ends it
(executed), one in between is executing. An entry that is both first and last is one
observation (no phase), except ``hostError`` (executing) and ``automaticRestart`` (executed):
Compute Engine restarts the instance the host error took down, and the pair is one failure
reboot with a real duration (keyed together by the correlator's transition table).

Entries of other services or resource types (a Cloud Storage audit entry) are out of scope.
"""

from __future__ import annotations

import base64
import binascii
from typing import Final

import orjson

from consumer.errors import InvalidEvent, OutOfScope, UnknownVendor
from consumer.model import InstanceEvent, Phase
from consumer.normalization.fields import (
    JsonObject,
    TimeParse,
    attr_value,
    build,
    required_object,
    required_text,
    text,
    time_or_none,
)

SOURCE_LOG_ENTRY: Final = "gcp.logentry"
SOURCE_PUBSUB_PUSH: Final = "gcp.pubsub_push"

HOST_ERROR: Final = "compute.instances.hostError"
AUTOMATIC_RESTART: Final = "compute.instances.automaticRestart"
_ALONE_PHASE: Final[dict[str, Phase]] = {HOST_ERROR: "executing", AUTOMATIC_RESTART: "executed"}
_OPEN_PHASE: Final[dict[str, Phase]] = {"compute.instances.upcomingMaintenance": "scheduled"}


def adapt_log_entry(obj: JsonObject, parse_time: TimeParse,
                    received_ms: int | None = None) -> list[InstanceEvent]:
    """A LogEntry as the Pub/Sub Kafka connector delivers it."""
    return [_adapt(obj, parse_time, SOURCE_LOG_ENTRY, {})]


def adapt_pubsub_push(obj: JsonObject, parse_time: TimeParse,
                      received_ms: int | None = None) -> list[InstanceEvent]:
    """A Pub/Sub push request: ``{"message": {"data": <base64 LogEntry>, ...}, "subscription"}``."""
    message = required_object(obj, "message", "gcp: ")
    data = required_text(message.get("data"), "data", "gcp: message.")
    try:
        entry = orjson.loads(base64.b64decode(data, validate=True))
    except (binascii.Error, ValueError):
        raise UnknownVendor("gcp: a Pub/Sub push whose message.data is not a base64 JSON "
                            "LogEntry") from None
    if type(entry) is not dict or "protoPayload" not in entry:
        raise UnknownVendor("gcp: a Pub/Sub push whose message.data is not a Cloud Audit Logs "
                            "LogEntry")
    attributes = {f"pubsub.{key}": kept for key in ("messageId", "publishTime")
                  if (kept := attr_value(message.get(key))) is not None}
    subscription = attr_value(obj.get("subscription"))
    if subscription is not None:
        attributes["pubsub.subscription"] = subscription
    return [_adapt(entry, parse_time, SOURCE_PUBSUB_PUSH, attributes)]


def _adapt(entry: JsonObject, parse_time: TimeParse, source_format: str,
           attributes: dict[str, str]) -> InstanceEvent:
    where = "gcp: "
    payload = required_object(entry, "protoPayload", where)
    resource = required_object(entry, "resource", where)
    service = text(payload.get("serviceName"), "serviceName", "gcp: protoPayload.")
    kind = text(resource.get("type"), "type", "gcp: resource.")
    if service != "compute.googleapis.com" or kind != "gce_instance":
        raise OutOfScope(f"gcp: an audit entry of {service!r} on {kind!r}, not a Compute Engine "
                         "instance", vendor="gcp")
    labels = required_object(resource, "labels", "gcp: resource.")
    instance = required_text(labels.get("instance_id"), "instance_id", "gcp: resource.labels.")
    code = required_text(payload.get("methodName"), "methodName", "gcp: protoPayload.")
    event_time = time_or_none(entry.get("timestamp"), "timestamp", where, parse_time)
    if event_time is None:
        raise InvalidEvent(f"{where}timestamp is required")
    zone = text(labels.get("zone"), "zone", "gcp: resource.labels.")
    status = payload.get("status")
    message = text(status.get("message"), "message", "gcp: protoPayload.status.") \
        if type(status) is dict else None
    operation = entry.get("operation")
    op = operation if type(operation) is dict else {}
    first, last = op.get("first") is True, op.get("last") is True

    name = text(payload.get("resourceName"), "resourceName", "gcp: protoPayload.")
    if name is not None:
        attributes["instance_name"] = name.rsplit("/", 1)[-1]
    if zone is not None:
        attributes["zone"] = zone
    for key in ("first", "last", "producer"):
        if (kept := attr_value(op.get(key))) is not None:
            attributes[f"operation.{key}"] = kept
    for key in ("logName", "receiveTimestamp"):
        if (kept := attr_value(entry.get(key))) is not None:
            attributes[key] = kept

    event = build("gcp", source_format, code, "methodName", "gcp: protoPayload.", instance,
                  event_time, None, attributes)
    event["vendor_status"] = message
    if (first and last) or not op:
        event["phase"] = _ALONE_PHASE.get(code)
    elif first:
        event["phase"] = _OPEN_PHASE.get(code, "executing")
    else:
        event["phase"] = "executed" if last else "executing"
    event["region"] = zone.rsplit("-", 1)[0] if zone is not None and "-" in zone else zone
    event["account_id"] = text(labels.get("project_id"), "project_id", "gcp: resource.labels.")
    event["notification_id"] = text(entry.get("insertId"), "insertId", where)
    event["vendor_event_id"] = text(op.get("id"), "id", "gcp: operation.")
    event["level"] = text(entry.get("severity"), "severity", where)
    return event
