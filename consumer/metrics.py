"""Prometheus metrics of one process, on an injected registry (a fresh one per test).

Label values stay bounded: vendor, operation, phase, outcome, region, reason, partition; never an
instance id. Duration buckets fit operations that take seconds to days, not web latencies.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

OPERATION_BUCKETS = (1, 5, 10, 20, 30, 60, 120, 300, 600, 1800, 3600, 7200, 21600, 86400, 259200)
BATCH_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)
RESTORE_BUCKETS = (0.01, 0.05, 0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)


class Metrics:
    """Every series vmevents exports; one instance per process."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        self.events = Counter(
            "vmevents_events", "Events processed, by stage and canonical vendor/operation/phase.",
            ["stage", "vendor", "operation", "phase"], registry=r)
        self.dlq = Counter(
            "vmevents_dlq", "Raw records sent to the dead letter topic, by reason.",
            ["reason"], registry=r)
        for reason in ("malformed_json", "not_an_object", "unknown_vendor", "invalid_event",
                       "too_large"):
            self.dlq.labels(reason)
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
        self.buffered = Gauge(
            "vmevents_reorder_buffered_notifications",
            "Notifications waiting in the reorder buffer for the event-time watermark.",
            ["partition"], registry=r)
        self.watermark = Gauge(
            "vmevents_event_time_watermark_seconds",
            "Event time up to which the correlator has decided (newest event time minus the "
            "allowed lateness; advances with processing time on a quiet partition).",
            ["partition"], registry=r)
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
            "superseded, orphan_end, clock_skew, evicted, conflicting_end, restore_skipped, ...",
            ["kind"], registry=r)
        self.consumer_lag = Gauge(
            "vmevents_consumer_lag", "Messages behind the partition's high watermark.",
            ["stage", "topic", "partition"], registry=r)
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
