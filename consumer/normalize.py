"""The normalize stage's pure core: raw record bytes -> one canonical InstanceEvent.

Parses the JSON once (orjson), recognises the vendor and envelope from the payload itself (one
raw topic may carry both vendors and several envelopes), dispatches to the vendor adapter, and
turns every failure into a :class:`consumer.errors.RejectedEvent` subclass whose ``reason``
names the DLQ bucket. For any input whatsoever, ``normalize`` returns an event or raises a
RejectedEvent: a poison record must never take the consumer down. The Kafka runtime sets
``source`` (topic/partition/offset); this module knows nothing about Kafka.
"""

from __future__ import annotations

from datetime import tzinfo
from typing import Final

import orjson

from consumer.errors import (
    InvalidEvent,
    MalformedJson,
    NotAnObject,
    PayloadTooLarge,
    RejectedEvent,
    UnknownVendor,
)
from consumer.model import InstanceEvent
from consumer.timeparse import DEFAULT_ZONE, TimeParser
from consumer.vendors import Adapter, JsonObject, aliyun, jdcloud

DEFAULT_MAX_PAYLOAD_BYTES: Final = 1 << 20

_ALIYUN_SOURCES: Final = frozenset({"acs.ecs", "acs:ecs"})


def detect(obj: JsonObject) -> Adapter:
    """The adapter for a parsed payload, from its shape alone; UnknownVendor if none fits.

    Cheap key probes in order of how distinctive they are: JD's ``eventAction`` (detail form),
    JD's ``jcloud.*`` envelope, a CloudEvent from ``acs.ecs``, a CloudMonitor ECS notification.
    """
    if "eventAction" in obj:
        return jdcloud.adapt_detail
    source = obj.get("source")
    if type(source) is str:
        if source.startswith("jcloud."):
            return jdcloud.adapt_envelope
        if source in _ALIYUN_SOURCES:
            return aliyun.adapt_eventbridge
        if "specversion" in obj:
            raise UnknownVendor(f"CloudEvent from source {_clip(source)!r}: only acs.ecs "
                                "(Alibaba ECS) and jcloud.vm (JD Cloud VM) are supported")
    detail = obj.get("detail")
    if type(detail) is dict and "eventAction" in detail:
        return jdcloud.adapt_envelope
    product = obj.get("product")
    if type(product) is str:
        if product.upper() == "ECS":
            return aliyun.adapt_cloudmonitor
        raise UnknownVendor(f"CloudMonitor event of product {_clip(product)!r}: only ECS "
                            "instance events are supported")
    name = obj.get("name")
    if "content" in obj and type(name) is str and name.startswith("Instance:"):
        return aliyun.adapt_cloudmonitor
    keys = ", ".join(sorted(_clip(k) for k in list(obj)[:8]))
    raise UnknownVendor(f"no JD Cloud VM or Alibaba ECS event shape recognised (keys: {keys})")


def _clip(text: str, limit: int = 48) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


class Normalizer:
    """Raw bytes -> InstanceEvent, configured once per process.

    ``default_timezone`` is the zone of vendor times that carry none (JD's ``eventTime``);
    ``max_payload_bytes`` bounds what is parsed at all (larger records go to the DLQ as
    ``too_large`` before any work is spent on them).
    """

    __slots__ = ("_parse_time", "_times", "max_payload_bytes")

    def __init__(self, *, default_timezone: str | tzinfo = DEFAULT_ZONE,
                 max_payload_bytes: int = DEFAULT_MAX_PAYLOAD_BYTES) -> None:
        self._times = TimeParser(default_timezone)
        self._parse_time = self._times.parse
        self.max_payload_bytes = max_payload_bytes

    @property
    def default_timezone(self) -> tzinfo:
        return self._times.local_zone

    def normalize(self, raw: bytes | bytearray | memoryview) -> InstanceEvent:
        """One raw record -> one event; raises only RejectedEvent subclasses."""
        try:
            size = len(raw)
        except TypeError:
            raise MalformedJson(f"payload must be bytes, got {type(raw).__name__}") from None
        if size > self.max_payload_bytes:
            raise PayloadTooLarge(f"payload of {size} bytes exceeds the limit of "
                                  f"{self.max_payload_bytes} bytes")
        try:
            obj = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            raise MalformedJson(f"not valid JSON: {exc}") from None
        except Exception as exc:  # e.g. a non-bytes-like argument
            raise MalformedJson(f"not valid JSON: {type(exc).__name__}: {exc}") from None
        if type(obj) is not dict:
            raise NotAnObject(f"payload must be a JSON object, got {_json_type(obj)}")
        try:
            return detect(obj)(obj, self._parse_time)
        except RejectedEvent:
            raise
        except Exception as exc:  # a poison record must not crash the stage
            raise InvalidEvent(f"cannot normalize: {type(exc).__name__}: {exc}") from exc

    def normalize_obj(self, obj: object) -> InstanceEvent:
        """An already-parsed JSON value -> one event; raises only RejectedEvent subclasses.

        (``normalize`` repeats these few lines rather than calling this: one call less per
        record on the hot path.)
        """
        if type(obj) is not dict:
            raise NotAnObject(f"payload must be a JSON object, got {_json_type(obj)}")
        try:
            return detect(obj)(obj, self._parse_time)
        except RejectedEvent:
            raise
        except Exception as exc:  # a poison record must not crash the stage
            raise InvalidEvent(f"cannot normalize: {type(exc).__name__}: {exc}") from exc


def _json_type(value: object) -> str:
    if isinstance(value, list):
        return "an array"
    if isinstance(value, str):
        return "a string"
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    return type(value).__name__
