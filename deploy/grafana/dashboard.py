"""Generate the vmevents Grafana dashboard (deploy/grafana/vmevents.json).

    python deploy/grafana/dashboard.py            # rewrite vmevents.json
    python deploy/grafana/dashboard.py --check    # exit 1 when vmevents.json is out of date

The JSON is what users import (Grafana > Dashboards > Import, or a grafana_dashboard ConfigMap for
the sidecar); this file is where it is edited, so that every query stays readable and the deploy
check can validate each one against the metrics the app exports.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

OUT = Path(__file__).with_name("vmevents.json")
DS = {"type": "prometheus", "uid": "${datasource}"}
NS = 'namespace=~"$namespace"'
FILTER = f'{NS}, vendor=~"$vendor", operation=~"$operation"'
RI = "$__rate_interval"


class Layout:
    """Places panels left to right on Grafana's 24-column grid."""

    def __init__(self) -> None:
        self.x = 0
        self.y = 0
        self.row_h = 0
        self.next_id = 1
        self.panels: list[dict[str, Any]] = []

    def _id(self) -> int:
        self.next_id += 1
        return self.next_id - 1

    def row(self, title: str) -> None:
        if self.x:
            self.y += self.row_h
        self.x, self.row_h = 0, 0
        self.panels.append({"type": "row", "title": title, "id": self._id(), "collapsed": False,
                            "gridPos": {"h": 1, "w": 24, "x": 0, "y": self.y}, "panels": []})
        self.y += 1

    def add(self, panel: dict[str, Any], w: int, h: int) -> None:
        if self.x + w > 24:
            self.y += self.row_h
            self.x, self.row_h = 0, 0
        panel["id"] = self._id()
        panel["gridPos"] = {"h": h, "w": w, "x": self.x, "y": self.y}
        self.x += w
        self.row_h = max(self.row_h, h)
        self.panels.append(panel)


def targets(*queries: tuple[str, str]) -> list[dict[str, Any]]:
    return [{"datasource": DS, "expr": expr, "legendFormat": legend, "refId": chr(ord("A") + i),
             "range": True}
            for i, (expr, legend) in enumerate(queries)]


def timeseries(title: str, description: str, unit: str, *queries: tuple[str, str],
               stack: bool = False) -> dict[str, Any]:
    return {
        "type": "timeseries", "title": title, "description": description, "datasource": DS,
        "targets": targets(*queries),
        "fieldConfig": {"defaults": {
            "unit": unit,
            "custom": {"drawStyle": "line", "lineWidth": 1, "fillOpacity": 10 if stack else 0,
                       "stacking": {"mode": "normal" if stack else "none"},
                       "showPoints": "never"}},
            "overrides": []},
        "options": {"legend": {"displayMode": "table", "placement": "bottom",
                               "calcs": ["mean", "max", "lastNotNull"]},
                    "tooltip": {"mode": "multi", "sort": "desc"}},
    }


def stat(title: str, description: str, unit: str, query: tuple[str, str],
         thresholds: list[tuple[float | None, str]]) -> dict[str, Any]:
    return {
        "type": "stat", "title": title, "description": description, "datasource": DS,
        "targets": targets(query),
        "fieldConfig": {"defaults": {
            "unit": unit,
            "thresholds": {"mode": "absolute",
                           "steps": [{"color": c, "value": v} for v, c in thresholds]}},
            "overrides": []},
        "options": {"reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
                    "colorMode": "background", "graphMode": "area", "textMode": "auto"},
    }


def quantiles(metric: str, by: str, selector: str, window: str) -> list[tuple[str, str]]:
    legend = " ".join("{{" + label.strip() + "}}" for label in by.split(",") if label.strip())
    return [(f"histogram_quantile({q}, sum by (le, {by}) "
             f"(rate({metric}_bucket{{{selector}}}[{window}])))", f"p{int(q * 100)} {legend}")
            for q in (0.5, 0.95, 0.99)]


def build() -> dict[str, Any]:
    g = Layout()

    g.row("Overview")
    g.add(stat("Events/s (normalize)", "Raw events normalized per second.", "ops",
               (f'sum(rate(vmevents_events_total{{stage="normalize", {NS}}}[{RI}]))', "events/s"),
               [(None, "blue")]), 4, 4)
    g.add(stat("Outcomes/s", "Correlated operation outcomes per second.", "ops",
               (f"sum(rate(vmevents_outcomes_total{{{NS}}}[{RI}]))", "outcomes/s"),
               [(None, "blue")]), 4, 4)
    g.add(stat("Dead-lettered (1h)", "Raw records sent to the DLQ in the last hour. Anything above "
               "zero needs a look (alert VmeventsDeadLetters).", "short",
               (f"sum(increase(vmevents_dlq_total{{{NS}}}[1h]))", "dlq"),
               [(None, "green"), (1, "red")]), 4, 4)
    g.add(stat("Timed out (1h)", "Operations that started and did not finish within their timeout "
               "in the last hour (alert VmeventsOperationsTimingOut).", "short",
               (f"sum(increase(vmevents_timeouts_total{{{NS}}}[1h]))", "timed out"),
               [(None, "green"), (1, "orange")]), 4, 4)
    g.add(stat("Consumer lag", "Messages behind, both stages, all partitions.", "short",
               (f"sum(vmevents_consumer_lag{{{NS}}})", "lag"),
               [(None, "green"), (10000, "orange"), (100000, "red")]), 4, 4)
    g.add(stat("Since last event", "Time since any stage last processed a record "
               "(alert VmeventsNoEvents).", "s",
               (f"time() - max(vmevents_last_event_timestamp_seconds{{{NS}}})", "age"),
               [(None, "green"), (3600, "orange"), (7200, "red")]), 4, 4)

    g.row("Events")
    g.add(timeseries("Event rate by vendor", "Normalized events per second by vendor.", "ops",
                     (f'sum by (vendor) (rate(vmevents_events_total{{stage="normalize", {FILTER}}}'
                      f"[{RI}]))", "{{vendor}}"), stack=True), 12, 8)
    g.add(timeseries("Event rate by operation", "Normalized events per second by canonical "
                     "operation.", "ops",
                     (f'sum by (operation) (rate(vmevents_events_total{{stage="normalize", '
                      f"{FILTER}}}[{RI}]))", "{{operation}}"), stack=True), 12, 8)
    g.add(timeseries("Events by phase", "Scheduled, executing, executed, avoided, ... per second.",
                     "ops",
                     (f'sum by (phase) (rate(vmevents_events_total{{stage="normalize", {FILTER}}}'
                      f"[{RI}]))", "{{phase}}"), stack=True), 12, 8)
    g.add(timeseries("Unknown event codes", "Events whose vendor code is not in the operation "
                     "table (normalized mechanically, still correlated).", "ops",
                     (f'sum by (vendor) (rate(vmevents_unknown_codes_total{{{NS}, '
                      f'vendor=~"$vendor"}}[{RI}]))', "{{vendor}}")), 12, 8)

    g.row("Outcomes and durations")
    g.add(timeseries("Outcomes by operation", "completed, failed, avoided, canceled, timed_out, "
                     "... per operation.", "ops",
                     (f"sum by (operation, outcome) (rate(vmevents_outcomes_total{{{FILTER}}}"
                      f"[{RI}]))", "{{operation}} {{outcome}}"), stack=True), 12, 8)
    g.add(timeseries("Timed-out operations", "Operations that started and never finished, by "
                     "vendor and operation (increase over $window).", "short",
                     (f"sum by (vendor, operation) (increase(vmevents_timeouts_total{{{FILTER}}}"
                      f"[$window]))", "{{vendor}} {{operation}}")), 12, 8)
    g.add(timeseries("Late completions", "Operations reported timed_out whose end came later "
                     "(within VMEVENTS_CORRELATE_LATE_END_HORIZON): their real outcome follows "
                     "with after_timeout=true (increase over $window). Many of one operation: "
                     "its timeout is too short (alert VmeventsLateCompletions).", "short",
                     (f'sum by (vendor, operation, outcome) (increase(vmevents_outcomes_total{{'
                      f'{FILTER}, after_timeout="true"}}[$window]))',
                      "{{vendor}} {{operation}} {{outcome}}")), 12, 8)
    g.add(timeseries("Late notifications and reorder buffer", "Notifications that arrived more "
                     "than the allowed lateness behind their partition's newest event time "
                     "(per second; alert VmeventsLateNotifications), and notifications waiting "
                     "in the reorder buffer for the event-time watermark.", "short",
                     (f"sum by (vendor) (rate(vmevents_late_notifications_total{{{FILTER}}}"
                      f"[{RI}]))", "late {{vendor}}/s"),
                     (f"sum(vmevents_reorder_buffered_notifications{{{NS}}})", "buffered")),
          12, 8)
    dur_sel = f'{FILTER}, region=~"$region"'
    g.add(timeseries("Operation duration by operation (p50/p95/p99 over $window)",
                     "How long completed operations took, from the vendor's start to end.", "s",
                     *quantiles("vmevents_operation_duration_seconds", "operation", dur_sel,
                                "$window")), 12, 9)
    g.add(timeseries("Operation duration p99 by region (over $window)",
                     "p99 of completed operations by region.", "s",
                     (f"histogram_quantile(0.99, sum by (le, operation, region) "
                      f"(rate(vmevents_operation_duration_seconds_bucket{{{dur_sel}}}[$window])))",
                      "{{operation}} {{region}}")), 12, 9)
    g.add({
        "type": "heatmap", "title": "Operation duration distribution",
        "description": "Completed operations per duration bucket.", "datasource": DS,
        "targets": [{"datasource": DS, "refId": "A", "format": "heatmap", "legendFormat": "{{le}}",
                     "expr": f"sum by (le) (increase(vmevents_operation_duration_seconds_bucket"
                             f"{{{dur_sel}}}[{RI}]))"}],
        "options": {"calculate": False, "yAxis": {"unit": "s"},
                    "color": {"mode": "scheme", "scheme": "Oranges"}},
    }, 12, 8)
    g.add(timeseries("Lead time of scheduled operations (p50/p95/p99 over $window)",
                     "Notice given before a scheduled operation started (Scheduled to "
                     "Executing).", "s",
                     *quantiles("vmevents_operation_lead_time_seconds", "operation",
                                FILTER, "$window")), 12, 8)

    g.row("Dead letters")
    g.add(timeseries("Dead-lettered records by reason", "Raw records that could not be "
                     "normalized, by reason; they are on the DLQ topic with error headers.",
                     "ops",
                     (f"sum by (reason) (rate(vmevents_dlq_total{{{NS}}}[{RI}]))", "{{reason}}"),
                     stack=True), 24, 7)

    g.row("Kafka")
    g.add(timeseries("Consumer lag by stage and topic", "Records between each stage's position "
                     "and the partitions' end (alert VmeventsConsumerLagGrowing).", "short",
                     (f"sum by (stage, topic) (vmevents_consumer_lag{{{NS}}})",
                      "{{stage}} {{topic}}")), 12, 8)
    g.add(timeseries("Consumer lag, top 10 partitions", "A single lagging partition points at a "
                     "hot key or a stuck consumer.", "short",
                     (f"topk(10, max by (stage, topic, partition) "
                      f"(vmevents_consumer_lag{{{NS}}}))", "{{stage}} {{topic}}/{{partition}}")),
          12, 8)
    g.add(timeseries("Freshness by stage", "Age of the newest record in each stage's last batch "
                     "(its Kafka timestamp against the wall clock): how far behind real time the "
                     "stage runs.", "s",
                     (f"max by (stage) (vmevents_event_age_seconds{{{NS}}})", "{{stage}}")),
          12, 8)
    g.add(timeseries("Batch duration p99", "Consume, process, produce and commit of one batch.",
                     "s",
                     (f"histogram_quantile(0.99, sum by (le, stage) "
                      f"(rate(vmevents_batch_duration_seconds_bucket{{{NS}}}[{RI}])))",
                      "{{stage}}")), 8, 8)
    g.add(timeseries("Transaction commit p99", "Kafka transaction commit latency.", "s",
                     (f"histogram_quantile(0.99, sum by (le, stage) "
                      f"(rate(vmevents_transaction_duration_seconds_bucket{{{NS}}}[{RI}])))",
                      "{{stage}}")), 8, 8)
    g.add(timeseries("Batch size p50", "Records per consumed batch (a full batch means the stage "
                     "is busy).", "short",
                     (f"histogram_quantile(0.5, sum by (le, stage) "
                      f"(rate(vmevents_batch_size_bucket{{{NS}}}[{RI}])))", "{{stage}}")), 8, 8)
    g.add(timeseries("Transaction aborts", "Aborted (and retried) transactions per second "
                     "(alert VmeventsTransactionAborts).", "ops",
                     (f"sum by (stage) (rate(vmevents_transaction_aborts_total{{{NS}}}[{RI}]))",
                      "{{stage}}")), 8, 8)
    g.add(timeseries("Rebalances", "Partition assignments and revocations per second (alert "
                     "VmeventsRebalanceStorm).", "ops",
                     (f"sum by (stage, kind) (rate(vmevents_rebalances_total{{{NS}}}[{RI}]))",
                      "{{stage}} {{kind}}")), 8, 8)
    g.add(timeseries("Ready pods", "Pods assigned, restored and processing, per stage.", "short",
                     (f"sum by (stage) (vmevents_ready{{{NS}}})", "{{stage}}")), 8, 8)

    g.row("Correlator state")
    g.add(timeseries("Pending operations by partition", "Operations started and not finished "
                     "(alert VmeventsPendingNearCap).", "short",
                     (f"sum by (partition) (vmevents_pending_operations{{{NS}}})",
                      "partition {{partition}}")), 8, 8)
    g.add(timeseries("State bytes vs budget by pod", "Estimated memory of each correlate pod's "
                     "state and its budget (VMEVENTS_CORRELATE_MAX_STATE_BYTES; no line: no byte "
                     "cap). Each partition holds an even share; past it the operations due first "
                     "are evicted (alerts VmeventsStateNearBudget, VmeventsOperationsEvicted).",
                     "bytes",
                     (f"sum by (pod) (vmevents_correlate_state_bytes{{{NS}}})", "{{pod}} state"),
                     (f"max by (pod) (vmevents_correlate_state_budget_bytes{{{NS}}} > 0)",
                      "{{pod}} budget")), 8, 8)
    g.add(timeseries("State restore time (p50/p99 over $window)", "Time to restore one "
                     "partition's pending operations from the changelog after an assignment "
                     "(alert VmeventsRestoreSlow).", "s",
                     (f"histogram_quantile(0.5, sum by (le) "
                      f"(rate(vmevents_restore_duration_seconds_bucket{{{NS}}}[$window])))", "p50"),
                     (f"histogram_quantile(0.99, sum by (le) "
                      f"(rate(vmevents_restore_duration_seconds_bucket{{{NS}}}[$window])))",
                      "p99")), 8, 8)
    g.add(timeseries("Changelog records restored", "Changelog records read while restoring, per "
                     "second.", "ops",
                     (f"sum(rate(vmevents_restored_records_total{{{NS}}}[{RI}]))", "records/s")),
          8, 8)
    g.add(timeseries("Messy-stream cases handled", "What the correlator absorbed: duplicates, "
                     "stragglers, ends before starts, superseded starts, orphan ends, clock skew, "
                     "evictions at the pending cap, ... per second, by kind.", "ops",
                     (f"sum by (kind) (rate(vmevents_correlator_anomalies_total{{{NS}}}[{RI}]))",
                      "{{kind}}"), stack=True), 16, 8)

    g.row("Maintenance in the next 24 h")
    g.add(stat("Next scheduled start", "Time until the earliest planned start (not_before) of an "
               "announced operation still to come; empty when none is announced. The operations "
               "are on the topic vm.operations.open (vmevents tail vm.operations.open).", "s",
               (f"min(vmevents_next_scheduled_start_seconds{{{NS}}})", "next start"),
               [(None, "orange"), (3600, "yellow"), (86400, "green")]), 6, 8)
    g.add(stat("Announced, not started", "Operations announced by the vendor (scheduled "
               "maintenance) that have not started yet.", "short",
               (f'sum(vmevents_open_operations{{phase="announced", {NS}}})', "announced"),
               [(None, "blue")]), 6, 8)
    g.add(timeseries("Open operations by phase", "Operations scheduled or running, by operation "
                     "and phase (announced, started, ended_awaiting_start): the records of "
                     "vm.operations.open.", "short",
                     (f"sum by (operation, phase) (vmevents_open_operations{{{NS}}})",
                      "{{operation}} {{phase}}"), stack=True), 12, 8)

    g.row("Ingest (HTTP front door)")
    g.add(timeseries("Requests by route and status", "Pushes answered by `vmevents ingest`, by "
                     "route and HTTP status: 2xx only after the broker acknowledged the record; "
                     "503 while it cannot (vendors redeliver); 401/403 refused, nothing written.",
                     "reqps",
                     (f"sum by (route, status) (rate(vmevents_ingest_requests_total{{{NS}}}[{RI}]))",
                      "{{route}} {{status}}"), stack=True), 12, 8)
    g.add(timeseries("Request latency to the answer", "From the request to its answer, the "
                     "broker's acknowledgement included, by route.", "s",
                     *quantiles("vmevents_ingest_request_duration_seconds", "route", NS, RI)),
          12, 8)
    g.add(timeseries("Auth failures by route and reason", "Requests refused 401/403 (alert "
                     "VmeventsIngestAuthFailures): forged signatures, wrong audiences, expired "
                     "tokens, topics or accounts not on the allow-list.", "reqps",
                     (f"sum by (route, reason) "
                      f"(rate(vmevents_ingest_auth_failures_total{{{NS}}}[{RI}]))",
                      "{{route}} {{reason}}"), stack=True), 8, 8)
    g.add(timeseries("Produce errors and broker", "Requests answered 503 because the broker did "
                     "not acknowledge, by reason; and the pods that see the broker available "
                     "(alert VmeventsIngestBrokerUnavailable).", "short",
                     (f"sum by (reason) (rate(vmevents_ingest_produce_errors_total{{{NS}}}[{RI}]))",
                      "503 {{reason}}/s"),
                     (f"sum(vmevents_ingest_broker_available{{{NS}}})", "pods with the broker")),
          8, 8)
    g.add(timeseries("Bytes, records and in flight", "Body bytes received and records written per "
                     "second, and requests being handled now (bounded by MAX_IN_FLIGHT).", "short",
                     (f"sum(rate(vmevents_ingest_request_bytes_total{{{NS}}}[{RI}]))", "bytes/s"),
                     (f"sum(rate(vmevents_ingest_records_total{{{NS}}}[{RI}]))", "records/s"),
                     (f"sum(vmevents_ingest_in_flight{{{NS}}})", "in flight")), 8, 8)

    def query_var(name: str, label: str, query: str, multi: bool = True) -> dict[str, Any]:
        return {"name": name, "label": label, "type": "query", "datasource": DS,
                "query": {"query": query, "refId": f"{name}-var"}, "definition": query,
                "refresh": 2, "includeAll": multi, "multi": multi, "allValue": ".*",
                "current": {"selected": True, "text": ["All"], "value": ["$__all"]},
                "sort": 1}

    return {
        "title": "vmevents",
        "uid": "vmevents-overview",
        "description": "Cloud VM instance events: rates, outcomes, operation durations, dead "
                       "letters, Kafka lag and correlator state.",
        "tags": ["vmevents", "kafka"],
        "timezone": "browser",
        "schemaVersion": 39,
        "version": 1,
        "editable": True,
        "graphTooltip": 1,
        "refresh": "1m",
        "time": {"from": "now-6h", "to": "now"},
        "annotations": {"list": []},
        "links": [],
        "templating": {"list": [
            {"name": "datasource", "label": "Data source", "type": "datasource",
             "query": "prometheus", "current": {}, "hide": 0, "refresh": 1},
            query_var("namespace", "Namespace", "label_values(vmevents_ready, namespace)"),
            query_var("vendor", "Vendor",
                      f"label_values(vmevents_events_total{{{NS}}}, vendor)"),
            query_var("operation", "Operation",
                      f'label_values(vmevents_events_total{{{NS}, vendor=~"$vendor"}}, operation)'),
            query_var("region", "Region",
                      f"label_values(vmevents_operation_duration_seconds_bucket{{{NS}}}, region)"),
            {"name": "window", "label": "Quantile window", "type": "custom",
             "query": "1h,6h,1d,7d", "current": {"selected": True, "text": "1d", "value": "1d"},
             "options": [{"selected": v == "1d", "text": v, "value": v}
                         for v in ("1h", "6h", "1d", "7d")],
             "includeAll": False, "multi": False},
        ]},
        "panels": g.panels,
    }


def render() -> str:
    return json.dumps(build(), indent=2, sort_keys=False) + "\n"


def main(argv: list[str]) -> int:
    text = render()
    if "--check" in argv:
        if not OUT.exists() or OUT.read_text(encoding="utf-8") != text:
            print(f"{OUT} is out of date: run python {Path(__file__).as_posix()}", file=sys.stderr)
            return 1
        return 0
    OUT.write_text(text, encoding="utf-8")
    print(f"wrote {OUT}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
