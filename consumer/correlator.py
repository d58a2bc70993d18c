"""The correlator's public face: what the Kafka runtime and the CLI import.

The implementation lives in :mod:`consumer.correlation` (engine, transition tables, state and
changelog format, outcome record, configuration); see :mod:`consumer.correlation.engine` for how
messy streams are handled.
"""

from consumer.config import Settings
from consumer.correlation import (
    OUTCOME_KINDS,
    Correlator,
    CorrelatorConfig,
    Outcome,
    OutcomeKind,
    parse_duration,
)
from consumer.correlation.engine import PENDING_TIME_FIELDS, release_key
from consumer.correlation.transitions import DERIVED_OPS
from consumer.normalization.operations import OPERATIONS

UNKNOWN_OPERATION = "unknown"
"""Outcomes of vendor codes not in the table share this operation name in topic names and metric
labels, so a new vendor code can neither create unbounded topics nor fail on a missing one."""


def correlator_config(settings: Settings) -> CorrelatorConfig:
    """The correlator's configuration from the process settings (stage and offline alike)."""
    return CorrelatorConfig.from_spec(
        settings.correlate_timeouts, max_pending=settings.correlate_max_pending,
        allowed_lateness_ms=settings.correlate_allowed_lateness_ms,
        late_end_horizon_ms=settings.correlate_late_end_horizon_ms)


def outcome_operations() -> list[str]:
    """Every operation an outcome topic can be named after: the set the topics Job pre-creates."""
    table = {spec.operation for spec in OPERATIONS.values()}
    return sorted(table | set(DERIVED_OPS) | {UNKNOWN_OPERATION})


__all__ = ["OUTCOME_KINDS", "PENDING_TIME_FIELDS", "UNKNOWN_OPERATION", "Correlator",
           "CorrelatorConfig", "Outcome", "OutcomeKind", "correlator_config", "outcome_operations",
           "parse_duration", "release_key"]
