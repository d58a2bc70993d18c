"""Prometheus series of ``vmevents ingest``; labels are route names, status codes and fixed reasons."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from consumer.ingest.routes import PATHS

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)
ROUTES = (*PATHS, "none")


class IngestMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.requests = Counter("vmevents_ingest_requests", "HTTP requests answered, by route and status",
                                ["route", "status"], registry=registry)
        self.bytes = Counter("vmevents_ingest_request_bytes", "Request body bytes received, by route",
                             ["route"], registry=registry)
        self.latency = Histogram("vmevents_ingest_request_duration_seconds",
                                 "Request to answer, the broker's acknowledgement included",
                                 ["route"], buckets=LATENCY_BUCKETS, registry=registry)
        self.records = Counter("vmevents_ingest_records", "Records written to the raw topic "
                               "(acknowledged by the broker), by route", ["route"], registry=registry)
        self.auth_failures = Counter("vmevents_ingest_auth_failures", "Requests refused 401/403, "
                                     "by route and reason", ["route", "reason"], registry=registry)
        self.refused = Counter("vmevents_ingest_refused", "Requests refused for other reasons "
                               "(4xx/5xx), by route and reason", ["route", "reason"], registry=registry)
        self.produce_errors = Counter("vmevents_ingest_produce_errors", "Requests answered 503 "
                                      "because the broker did not acknowledge, by reason",
                                      ["reason"], registry=registry)
        self.handshakes = Counter("vmevents_ingest_handshakes", "Handshakes answered (subscription "
                                  "confirmations, validations), by route and kind",
                                  ["route", "kind"], registry=registry)
        self.in_flight = Gauge("vmevents_ingest_in_flight", "Requests being handled now",
                               registry=registry)
        self.broker_available = Gauge("vmevents_ingest_broker_available",
                                      "1 while the broker acknowledges records, else 0",
                                      registry=registry)
        for route in ROUTES:
            self.bytes.labels(route)
            self.latency.labels(route)
            self.records.labels(route)
            for status in ("200", "401", "403", "503"):
                self.requests.labels(route, status)
        for reason in ("broker_unavailable", "ack_timeout", "not_acknowledged", "queue_full",
                       "produce_failed"):
            self.produce_errors.labels(reason)
