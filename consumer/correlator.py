"""The correlator's public face: what the Kafka runtime and the CLI import.

The implementation lives in :mod:`consumer.correlation` (engine, transition tables, state and
changelog format, outcome record, configuration); see :mod:`consumer.correlation.engine` for how
messy streams are handled.
"""

from consumer.correlation import (
    OUTCOME_KINDS,
    Correlator,
    CorrelatorConfig,
    Outcome,
    OutcomeKind,
    parse_duration,
)
from consumer.correlation.transitions import DERIVED_OPS
from consumer.normalization.operations import OPERATIONS

UNKNOWN_OPERATION = "unknown"
"""Outcomes of vendor codes not in the table share this operation name in topic names and metric
labels, so a new vendor code can neither create unbounded topics nor fail on a missing one."""


def outcome_operations() -> list[str]:
    """Every operation an outcome topic can be named after: the set the topics Job pre-creates."""
    table = {spec.operation for spec in OPERATIONS.values()}
    return sorted(table | set(DERIVED_OPS) | {UNKNOWN_OPERATION})


__all__ = ["OUTCOME_KINDS", "UNKNOWN_OPERATION", "Correlator", "CorrelatorConfig", "Outcome",
           "OutcomeKind", "outcome_operations", "parse_duration"]
