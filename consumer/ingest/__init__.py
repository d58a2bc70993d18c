"""``vmevents ingest``: the HTTP front door that vendors push their event notifications to.

One route per delivery channel (SNS, EventBridge API destinations, Pub/Sub push, Event Grid,
Alibaba EventBridge and CloudMonitor, a generic authenticated route). Each route authenticates
what its vendor offers, answers the channel's handshakes, and writes what it received to the raw
topic unchanged, answering 2xx only after the broker acknowledged the record.

The core (``request``, ``payload``, ``limits``, the verifiers and the routes) is pure asyncio
and never imports Kafka; ``producer`` and ``server`` are the thin shell around it.
"""
