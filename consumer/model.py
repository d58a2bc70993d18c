"""The canonical model: what every vendor adapter produces and every later stage consumes.

Records are plain dicts shaped exactly like the Avro schemas in ``avro/`` so that the hot path
hands them to fastavro without any conversion. ``TypedDict`` gives them names and type checks
at no run-time cost. Times are UTC epoch milliseconds (``int``).
"""

from __future__ import annotations

from typing import Final, Literal, NotRequired, TypedDict

Vendor = Literal["jdcloud", "aliyun", "aws", "gcp", "azure", "tencent", "huawei"]
VENDORS: Final = ("jdcloud", "aliyun", "aws", "gcp", "azure", "tencent", "huawei")

Phase = Literal[
    "scheduled", "inquiring", "executing", "executed", "avoided", "canceled", "failed"
]
PHASES: Final = ("scheduled", "inquiring", "executing", "executed", "avoided", "canceled", "failed")


class SourceRef(TypedDict):
    """Kafka coordinates of the raw record an event was normalized from."""

    topic: str
    partition: int
    offset: int


class InstanceEvent(TypedDict):
    """One normalized notification (``avro/InstanceEvent.avsc``)."""

    vendor: Vendor
    instance_id: str
    vendor_event_code: str
    operation: str
    known: bool
    phase: Phase | None
    vendor_status: str | None
    event_time: int
    region: str | None
    account_id: str | None
    notification_id: str | None
    vendor_event_id: str | None
    level: str | None
    previous_state: str | None
    current_state: str | None
    publish_time: int | None
    not_before: int | None
    start_time: int | None
    end_time: int | None
    source_format: str
    attributes: dict[str, str]
    source: NotRequired[SourceRef | None]


def event_key(event: InstanceEvent) -> str:
    """Kafka key of a normalized event: all events of one instance land on one partition."""
    return f"{event['vendor']}:{event['instance_id']}"
