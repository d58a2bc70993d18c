from typing import Any, cast

from consumer.config import load_settings
from consumer.correlator import Outcome, outcome_operations
from consumer.runtime.correlate_stage import outcome_topic


def outcome(operation: str, kind: str, known: bool = True) -> Outcome:
    return cast(Outcome, {"operation": operation, "outcome": kind, "known": known})


def test_derived_topics_are_named_operation_dot_outcome() -> None:
    settings = load_settings({})
    assert outcome_topic(settings, outcome("failure.reboot", "completed")) == "failure.reboot.completed"
    assert outcome_topic(settings, outcome("maintenance.reboot", "avoided")) == "maintenance.reboot.avoided"


def test_prefix_and_single_topic_modes() -> None:
    prefixed = load_settings({"VMEVENTS_OUTCOME_TOPIC_PREFIX": "prod."})
    assert outcome_topic(prefixed, outcome("failure.reboot", "timed_out")) == "prod.failure.reboot.timed_out"
    single = load_settings({"VMEVENTS_OUTCOME_SINGLE_TOPIC": "vm.outcomes"})
    assert outcome_topic(single, outcome("failure.reboot", "completed")) == "vm.outcomes"


def test_unknown_codes_share_a_bounded_topic_set() -> None:
    settings = load_settings({})
    odd = outcome("system_maintenance.foo_bar", "observed", known=False)
    assert outcome_topic(settings, odd) == "unknown.observed"


def test_outcome_operations_cover_the_table_and_the_correlators_own_names() -> None:
    ops: list[Any] = outcome_operations()
    for name in ("failure.reboot", "lifecycle.create", "lifecycle.delete", "lifecycle.start",
                 "lifecycle.stop", "lifecycle.restart", "migration.live_across_ddh", "unknown"):
        assert name in ops
    assert ops == sorted(set(ops))
