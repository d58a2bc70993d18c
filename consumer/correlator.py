"""The correlator's one face: what the Kafka runtime, the CLI and the tools import.

The implementation lives in :mod:`consumer.correlation`: the engine (event time, the reorder
buffer, budgets), the rules (the state machine), the state layer (how state is held, written to
the changelog and restored), the outcome record and the configuration. Nothing outside that
package imports its modules or knows its storage format; see
:mod:`consumer.correlation.engine` for how messy streams are handled.
"""

from consumer.config import Settings
from consumer.correlation.config import CorrelatorConfig, parse_duration
from consumer.correlation.engine import PENDING_TIME_FIELDS, Correlator
from consumer.correlation.openops import OpenGauges, OpenRecord
from consumer.correlation.ordering import notification_time, release_key
from consumer.correlation.outcome import OUTCOME_KINDS, UNKNOWN_OPERATION, Outcome, OutcomeKind
from consumer.correlation.state import NO_TIME
from consumer.correlation.transitions import DERIVED_OPS
from consumer.normalization.operations import OPERATIONS


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


__all__ = ["NO_TIME", "OUTCOME_KINDS", "PENDING_TIME_FIELDS", "UNKNOWN_OPERATION", "Correlator",
           "CorrelatorConfig", "OpenGauges", "OpenRecord", "Outcome", "OutcomeKind",
           "correlator_config", "notification_time", "outcome_operations", "parse_duration",
           "release_key"]
