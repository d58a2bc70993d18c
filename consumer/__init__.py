"""vmevents: cloud VM instance event notifications, normalized and correlated on Kafka."""

__version__ = "0.1.0"
