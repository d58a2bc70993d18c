"""Correlation of vendor notifications into operation outcomes (pure: no Kafka).

``engine`` holds the state machine, ``transitions`` its rules as tables, ``state`` the open
operations and their changelog form, ``outcome`` the emitted record, ``config`` the timeouts.
"""

from consumer.correlation.config import CorrelatorConfig, parse_duration
from consumer.correlation.engine import Correlator
from consumer.correlation.outcome import OUTCOME_KINDS, Outcome, OutcomeKind

__all__ = ["OUTCOME_KINDS", "Correlator", "CorrelatorConfig", "Outcome", "OutcomeKind",
           "parse_duration"]
