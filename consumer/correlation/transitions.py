"""The correlator's rules, as tables: every (state, input) pair has exactly one action.

Vendors deliver at least once and in any order, so "illegal" sequences (Executed before
Executing, a second Executing, an end after an end) are normal input, not errors. The table is
total: each such pair is mapped to a deliberate action, documented here, and
``tests/unit/test_correlator.py`` checks that no pair is missing.

System events (phase given by the vendor)
-----------------------------------------

====================  ======================  ==================================================
state \\ input        NOTICE / START          END (executed, failed) / FINAL (avoided, canceled)
====================  ======================  ==================================================
NONE                  ANNOUNCE / BEGIN        HOLD_END / EMIT_FINAL
ANNOUNCED             RENOTICE / BEGIN        HOLD_END / EMIT_FINAL
STARTED               RENOTICE / RESTART      PAIR / EMIT_FINAL
ENDED                 RENOTICE / PAIR         REEND / REEND
====================  ======================  ==================================================

- ANNOUNCE: open, wait until ``notBefore`` + timeout. RENOTICE: a repeated or late notice: keep
  the earliest announcement, the latest ``notBefore``.
- BEGIN: the operation started (keeping any notice).
- HOLD_END: an end without its start. If the record itself carries the start (Alibaba
  ``executeStartTime``, live migration ``startTime``) it is complete: emit now. Otherwise hold it
  for the grace window; the start may be late. When the grace ends, emit with
  ``start_known=false`` and no duration rather than a wrong one.
- EMIT_FINAL: avoided and canceled end an operation that never ran; nothing else will come.
- PAIR: start + end: emit with the duration.
- RESTART (a second start while started): the same time is a duplicate. With a vendor event id it
  is the same operation: keep the earliest start. Without one a different time is a new
  operation whose predecessor's end was lost: the older of the two is emitted ``superseded``.
- REEND (an end while an end is held): the same end is a duplicate. With a vendor event id the
  first end wins (the conflict is counted). Without one, the older end belongs to an earlier
  operation whose start was lost: it is emitted now without a start.

Operations told by two vendor codes
-----------------------------------

``CODE_PAIRS`` maps a code that opens an operation to the code that ends it, where the vendor
reports the two halves as separate operations with their own ids: GCP's ``hostError`` (the host
failed, the instance went down) and the ``automaticRestart`` that follows it are one failure
reboot. Both are keyed by vendor + instance + the opening code, without the event id, and pair
by the table above like any start and end.

Lifecycle (``StateChange``)
---------------------------

A transitional state opens an operation; the next state closes it. JD names the previous state
in every notification; Alibaba sends only the new state, so the previous state is taken from the
lifecycle operation open for the instance. Keys are vendor + instance + ``StateChange`` +
operation, so a closing notification that arrives first (JD) waits for its opener like any end.
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import Enum
from types import MappingProxyType
from typing import Final

from consumer.correlation.objects import OpState
from consumer.correlation.outcome import OutcomeKind


class Input(Enum):
    """A notification's role in its operation, from its phase."""

    NOTICE = "notice"  # scheduled, inquiring
    START = "start"  # executing
    END = "end"  # executed, failed: expects a start
    FINAL = "final"  # avoided, canceled: the operation never ran

    __hash__ = object.__hash__  # as OpState: identity hash, C speed on the hot path


class Action(Enum):
    ANNOUNCE = "announce"
    RENOTICE = "renotice"
    BEGIN = "begin"
    RESTART = "restart"
    HOLD_END = "hold_end"
    EMIT_FINAL = "emit_final"
    PAIR = "pair"
    REEND = "reend"


_S, _I, _A = OpState, Input, Action
TRANSITIONS: Final[Mapping[tuple[OpState, Input], Action]] = MappingProxyType({
    (_S.NONE, _I.NOTICE): _A.ANNOUNCE,
    (_S.NONE, _I.START): _A.BEGIN,
    (_S.NONE, _I.END): _A.HOLD_END,
    (_S.NONE, _I.FINAL): _A.EMIT_FINAL,
    (_S.ANNOUNCED, _I.NOTICE): _A.RENOTICE,
    (_S.ANNOUNCED, _I.START): _A.BEGIN,
    (_S.ANNOUNCED, _I.END): _A.HOLD_END,
    (_S.ANNOUNCED, _I.FINAL): _A.EMIT_FINAL,
    (_S.STARTED, _I.NOTICE): _A.RENOTICE,
    (_S.STARTED, _I.START): _A.RESTART,
    (_S.STARTED, _I.END): _A.PAIR,
    (_S.STARTED, _I.FINAL): _A.EMIT_FINAL,
    (_S.ENDED, _I.NOTICE): _A.RENOTICE,
    (_S.ENDED, _I.START): _A.PAIR,
    (_S.ENDED, _I.END): _A.REEND,
    (_S.ENDED, _I.FINAL): _A.REEND,
})

PHASE_INPUT: Final[Mapping[str, tuple[Input, OutcomeKind | None]]] = MappingProxyType({
    "scheduled": (Input.NOTICE, None),
    "inquiring": (Input.NOTICE, None),
    "executing": (Input.START, None),
    "executed": (Input.END, "completed"),
    "failed": (Input.END, "failed"),
    "avoided": (Input.FINAL, "avoided"),
    "canceled": (Input.FINAL, "canceled"),
})
"""Phase -> (input, outcome of an end). A phase not listed (``unknown``) makes the notification a
single observed one: guessing its role could pair it wrongly."""

CODE_PAIRS: Final[Mapping[str, str]] = MappingProxyType({
    "compute.instances.hostError": "compute.instances.automaticRestart",
})
"""Opening vendor code -> the vendor code that ends its operation (see the module doc)."""

# -- lifecycle -------------------------------------------------------------------------------

LIFECYCLE_CODE: Final = "lifecycle.state_change"
"""The canonical operation the adapters give every StateChange notification."""

CREATE: Final = "lifecycle.create"  # JD pending -> running (provisioning)
DELETE: Final = "lifecycle.delete"  # JD deleting -> terminated; Alibaba Deleted (observed)
START: Final = "lifecycle.start"  # Alibaba Starting -> Running
STOP: Final = "lifecycle.stop"  # Alibaba Stopping -> Stopped
RESTART: Final = "lifecycle.restart"  # Alibaba Stopping -> Running ("Stopping" also means rebooting)
STATE_CHANGE: Final = "lifecycle.state_change"  # a state change that neither opens nor closes
LIFECYCLE_OPS: Final = (CREATE, DELETE, START, STOP)
DERIVED_OPS: Final = (CREATE, DELETE, START, STOP, RESTART)
"""Operations the correlator names itself (not in the vendor code table)."""

OPENERS: Final[Mapping[str, str]] = MappingProxyType({
    "pending": CREATE, "deleting": DELETE, "starting": START, "stopping": STOP,
})
"""Transitional state (lower case) -> the lifecycle operation it opens."""

CLOSERS: Final[Mapping[tuple[str, str], tuple[OutcomeKind, str]]] = MappingProxyType({
    (CREATE, "running"): ("completed", CREATE),
    (DELETE, "terminated"): ("completed", DELETE),
    (DELETE, "deleted"): ("completed", DELETE),
    (START, "running"): ("completed", START),
    (STOP, "stopped"): ("completed", STOP),
    (STOP, "starting"): ("completed", STOP),  # the stop half of a restart; Starting opens a start
    (STOP, "running"): ("completed", RESTART),
    (STOP, "deleted"): ("completed", STOP),  # stopped and released
})
"""(open operation, new state) -> (outcome, operation name). Any other new state ends the open
operation as ``failed``: it left its transitional state without reaching its target (JD
pending -> error is the documented failed create)."""

SINGLE_STATES: Final[Mapping[str, str]] = MappingProxyType({
    "created": CREATE,  # Alibaba sends Created once when creation is done, with no start
    "deleted": DELETE,  # Alibaba has no Deleting state: the release is one notification
})
"""States that are an operation on their own (``observed``), besides closing what was open."""


def close_lifecycle(operation: str, new_state: str) -> tuple[OutcomeKind, str]:
    return CLOSERS.get((operation, new_state), ("failed", operation))
