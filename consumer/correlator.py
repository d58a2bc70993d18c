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

__all__ = ["OUTCOME_KINDS", "Correlator", "CorrelatorConfig", "Outcome", "OutcomeKind",
           "parse_duration"]
