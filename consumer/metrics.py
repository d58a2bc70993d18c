"""Prometheus metrics of one process, on an injected registry (a fresh one per test).

Label values stay bounded: vendor, operation, phase, outcome, region, reason, partition; never an
instance id. Values that come from payloads (vendor, operation, phase, region: any producer can
write anything to a topic) pass through :class:`LabelCap` and :class:`CappedLabels`, so hostile or
noisy input cannot grow ``/metrics`` without limit. Duration buckets fit operations that take
seconds to days, not web latencies.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

OTHER = "other"
"""The label value of everything past a cap or not shaped like a label value."""
UNKNOWN = "unknown"
"""The label value of a missing (None or empty) payload value."""

_LABEL_VALUE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:/-]{0,63}")


class LabelCap:
    """One label's vocabulary from payloads: the first ``limit`` well-formed values, then ``other``.

    Well-formed is a short identifier (letters, digits, ``._:/-``, at most 64 characters); a
    missing value is ``unknown``. First come, first kept: real values arrive long before a flood.
    """

    __slots__ = ("_kept", "limit")

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._kept: set[str] = set()

    def __call__(self, value: str | None) -> str:
        if not value:
            return UNKNOWN
        kept = self._kept
        if value in kept:
            return value
        if len(kept) >= self.limit or not _LABEL_VALUE.fullmatch(value):
            return OTHER
        kept.add(value)
        return value


class CappedLabels:
    """The label sets of one metric family: each value through its label's cap, and at most
    ``max_sets`` distinct sets, the rest all ``other``. So one family has at most
    ``max_sets + 1`` series per sample kind, whatever the product of the vocabularies."""

    __slots__ = ("_caps", "_other", "_sets", "max_sets")

    def __init__(self, caps: Sequence[LabelCap], max_sets: int) -> None:
        self._caps = tuple(caps)
        self.max_sets = max_sets
        self._sets: set[tuple[str, ...]] = set()
        self._other = (OTHER,) * len(self._caps)

    def __call__(self, *values: str | None) -> tuple[str, ...]:
        labels = tuple(cap(v) for cap, v in zip(self._caps, values, strict=True))
        sets = self._sets
        if labels in sets:
            return labels
        if len(sets) >= self.max_sets:
            return self._other
        sets.add(labels)
        return labels

OPERATION_BUCKETS = (1, 5, 10, 20, 30, 60, 120, 300, 600, 1800, 3600, 7200, 21600, 86400, 259200)
BATCH_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)
RESTORE_BUCKETS = (0.01, 0.05, 0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)


class Metrics:
    """Every series vmevents exports; one instance per process."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        # Vocabularies of the payload labels, shared by the families that use them.
        vendor, operation, phase, region = LabelCap(16), LabelCap(128), LabelCap(16), LabelCap(128)
        self.event_labels = CappedLabels((vendor, operation, phase), max_sets=1000)
        self.vendor_labels = CappedLabels((vendor,), max_sets=16)
        self.operation_labels = CappedLabels((vendor, operation), max_sets=500)
        self.duration_labels = CappedLabels((vendor, operation, region), max_sets=1000)
        self.events = Counter(
            "vmevents_events", "Events processed, by stage and canonical vendor/operation/phase.",
            ["stage", "vendor", "operation", "phase"], registry=r)
        self.dlq = Counter(
            "vmevents_dlq", "Input records sent to the dead letter topic, by reason (each record once).",
            ["reason"], registry=r)
        for reason in ("malformed_json", "not_an_object", "unknown_vendor", "invalid_event",
                       "invalid_time", "too_large", "encoding", "undecodable"):
            self.dlq.labels(reason)
        self.skipped = Counter(
            "vmevents_skipped", "Valid events of a known vendor that are not about an instance "
            "(another service, no instance named): skipped, not dead-lettered.",
            ["vendor", "reason"], registry=r)
        self.unknown_codes = Counter(
            "vmevents_unknown_codes", "Events whose vendor code is not in the operation table.",
            ["vendor"], registry=r)
        self.outcomes = Counter(
            "vmevents_outcomes",
            "Correlated operation outcomes; after_timeout=\"true\": the real outcome of an "
            "operation already reported timed_out (its end came after the deadline).",
            ["vendor", "operation", "outcome", "after_timeout"], registry=r)
        self.operation_duration = Histogram(
            "vmevents_operation_duration_seconds",
            "Duration of completed operations as the vendor reported it.",
            ["vendor", "operation", "region"], buckets=OPERATION_BUCKETS, registry=r)
        self.lead_time = Histogram(
            "vmevents_operation_lead_time_seconds",
            "Notice given before a scheduled operation started (Scheduled -> Executing).",
            ["vendor", "operation"], buckets=OPERATION_BUCKETS, registry=r)
        self.pending = Gauge(
            "vmevents_pending_operations", "Operations started and not finished, per partition.",
            ["partition"], registry=r)
        self.state_bytes = Gauge(
            "vmevents_correlate_state_bytes",
            "Estimated memory held by the correlator state of one partition (open operations, "
            "buffered notifications, finished-operation markers), restoring partitions included.",
            ["partition"], registry=r)
        self.state_budget = Gauge(
            "vmevents_correlate_state_budget_bytes",
            "Byte budget of the correlator state of the whole process "
            "(VMEVENTS_CORRELATE_MAX_STATE_BYTES), split evenly between its assigned partitions; "
            "over its share a partition evicts the operations due first as timed_out. "
            "0: no byte cap.", registry=r)
        self.buffered = Gauge(
            "vmevents_reorder_buffered_notifications",
            "Notifications waiting in the reorder buffer for the event-time watermark.",
            ["partition"], registry=r)
        self.watermark = Gauge(
            "vmevents_event_time_watermark_seconds",
            "Event time up to which the correlator has decided (newest event time minus the "
            "allowed lateness; advances with processing time on a quiet partition).",
            ["partition"], registry=r)
        self.open_operations = Gauge(
            "vmevents_open_operations",
            "Operations scheduled or running (the records of the open-operations topic), by phase: "
            "announced, started, ended_awaiting_start.",
            ["vendor", "operation", "phase"], registry=r)
        self.next_scheduled_start = Gauge(
            "vmevents_next_scheduled_start_seconds",
            "Seconds until the earliest planned start (not_before) in the future among announced "
            "operations; NaN when none is.", registry=r)
        self.late_notifications = Counter(
            "vmevents_late_notifications",
            "Notifications that arrived later than the allowed lateness behind their partition's "
            "newest event time: applied directly where unambiguous, never dropped silently.",
            ["vendor", "operation"], registry=r)
        self.timeouts = Counter(
            "vmevents_timeouts", "Operations that started and did not finish in time.",
            ["vendor", "operation"], registry=r)
        self.anomalies = Counter(
            "vmevents_correlator_anomalies",
            "Messy-stream cases the correlator handled: duplicate, straggler, late, late_completion, "
            "superseded, orphan_end, clock_skew, evicted, conflicting_end, restore_skipped, "
            "reordered (a key's notification out of time order: held for the watermark), "
            "contradicts_decision (older than an outcome its key already emitted), ...",
            ["kind"], registry=r)
        self.progress_marks = Counter(
            "vmevents_progress_marks",
            "Progress marks the normalize stage wrote to the normalized partitions (how far each "
            "raw partition is normalized; written only when that changed).", registry=r)
        self.frontier_lag = Gauge(
            "vmevents_correlate_frontier_lag_seconds",
            "Newest notification time of the partition minus the time every raw partition has "
            "been normalized to: how far the slowest upstream partition holds decisions back "
            "(0: every raw partition caught up).", ["partition"], registry=r)
        self.consumer_lag = Gauge(
            "vmevents_consumer_lag",
            "Records between the stage's consumed position and the partition's end "
            "(last stable offset under read_committed), from the client's statistics.",
            ["stage", "topic", "partition"], registry=r)
        self.event_age = Gauge(
            "vmevents_event_age_seconds",
            "Freshness: age of the newest record of the last processed batch (Kafka timestamp).",
            ["stage"], registry=r)
        self.batch_duration = Histogram(
            "vmevents_batch_duration_seconds", "Time to process one consumed batch end to end.",
            ["stage"], buckets=BATCH_BUCKETS, registry=r)
        self.batch_size = Histogram(
            "vmevents_batch_size", "Records per consumed batch.", ["stage"],
            buckets=(1, 10, 100, 500, 1000, 2000, 5000, 10000), registry=r)
        self.transaction_duration = Histogram(
            "vmevents_transaction_duration_seconds", "Time to commit one Kafka transaction.",
            ["stage"], buckets=BATCH_BUCKETS, registry=r)
        self.transaction_aborts = Counter(
            "vmevents_transaction_aborts", "Transactions aborted and retried.", ["stage"],
            registry=r)
        self.alignment_idle_expired = Counter(
            "vmevents_alignment_idle_expired",
            "Empty partitions still behind their high watermark waited for VMEVENTS_MAX_IDLE_MS: "
            "the others went ahead without them, possibly out of timestamp order.", ["stage"],
            registry=r)
        self.rebalances = Counter(
            "vmevents_rebalances", "Partition assignments and revocations.", ["stage", "kind"],
            registry=r)
        self.restore_duration = Histogram(
            "vmevents_restore_duration_seconds", "Time to restore a partition's pending state.",
            buckets=RESTORE_BUCKETS, registry=r)
        self.restored_records = Counter(
            "vmevents_restored_records", "Changelog records read while restoring.", registry=r)
        self.ready = Gauge(
            "vmevents_ready", "1 when the stage is assigned, restored and processing.",
            ["stage"], registry=r)
        self.last_event = Gauge(
            "vmevents_last_event_timestamp_seconds", "Wall-clock time the stage last processed a record.",
            ["stage"], registry=r)
