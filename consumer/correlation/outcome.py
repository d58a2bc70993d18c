"""What the correlator emits: one ``OperationOutcome`` record per operation (``avro/OperationOutcome.avsc``).

A plain dict shaped exactly like the schema, so the runtime hands it to fastavro unchanged and the
offline tools print it as JSON with the schema's field names.
"""

from __future__ import annotations

from typing import Final, Literal, TypedDict

from consumer.model import SourceRef, Vendor

OutcomeKind = Literal[
    "completed", "failed", "avoided", "canceled", "timed_out", "superseded", "observed"
]
"""How an operation ended.

- ``completed``/``failed``/``avoided``/``canceled``: the vendor said so (Executed, Failed, ...).
- ``timed_out``: it was announced or started and no end arrived within its timeout. If the end
  arrives later (within the late-end horizon), the real outcome follows with ``after_timeout``.
- ``superseded``: a newer start of the same operation (same key, no vendor event id to tell them
  apart) arrived before this one's end: its end was lost or never sent.
- ``observed``: a notification that is an operation on its own and never pairs (faults, preemptible
  interruption, performance mode change, unpaired state changes, unknown codes without a phase).
"""
OUTCOME_KINDS: Final = ("completed", "failed", "avoided", "canceled", "timed_out", "superseded",
                        "observed")

UNKNOWN_OPERATION: Final = "unknown"
"""Outcomes of vendor codes not in the table share this operation name in topic names and metric
labels, so a new vendor code can neither create unbounded topics nor fail on a missing one."""

ATTR_PREFIX: Final = "vmevents."
"""Prefix of the attributes the correlator adds itself, so they never collide with a vendor's."""
ATTR_CLOCK_SKEW: Final = ATTR_PREFIX + "clock_skew_ms"
ATTR_EVICTED: Final = ATTR_PREFIX + "evicted"


class Outcome(TypedDict):
    """One correlated operation (``avro/OperationOutcome.avsc``). Times are UTC epoch ms."""

    outcome: OutcomeKind
    operation: str
    vendor_event_code: str
    vendor: Vendor
    known: bool
    region: str | None
    account_id: str | None
    instance_id: str
    vendor_event_id: str | None
    started_at: int | None
    finished_at: int | None
    start_known: bool
    duration_ms: int | None
    scheduled_at: int | None
    not_before: int | None
    lead_time_ms: int | None
    timeout_ms: int | None
    from_state: str | None
    to_state: str | None
    decided_at: int
    after_timeout: bool
    notification_ids: list[str]
    sources: list[SourceRef]
    attributes: dict[str, str]
