"""Where a notification falls in event time: its time, its release rank, its order key.

Pure functions of one normalized notification, shared by the engine (what to decide at once,
what to hold), the offline command (it sorts its whole input by :func:`release_key`) and the
normalize stage (it reports its progress in :func:`notification_time`).
"""

from __future__ import annotations

from typing import Final

from consumer.correlation.state.codec import notification_core, notification_digest
from consumer.correlation.transitions import (
    CODE_PAIRS,
    LIFECYCLE_CODE,
    Input,
)
from consumer.correlation.transitions import OPENERS as _OPENERS_TABLE
from consumer.correlation.transitions import PHASE_INPUT as _PHASE_INPUT_TABLE
from consumer.model import InstanceEvent

# Plain dicts of the read-only tables: a mappingproxy's get is a slower call, once per event.
PHASE_INPUT: Final = dict(_PHASE_INPUT_TABLE)
OPENERS: Final = dict(_OPENERS_TABLE)
SHARED_KEYS: Final = {**{opener: opener for opener in CODE_PAIRS},
                      **{closer: opener for opener, closer in CODE_PAIRS.items()}}
"""Vendor code -> the code whose key it shares (two codes telling one operation)."""

_NOTICE, _START, _END, _FINAL = Input.NOTICE, Input.START, Input.END, Input.FINAL

# Release order among notifications of the same time: an end closes its operation before the
# next one on the key opens at the same second; notices and singles in between.
RANK_END: Final = 0
RANK_NOTICE: Final = 1
RANK_START: Final = 2
_ROLE_RANK: Final = {_END: RANK_END, _FINAL: RANK_END, _NOTICE: RANK_NOTICE, _START: RANK_START}


def release_key(event: InstanceEvent) -> tuple[int, int, str]:
    """The reorder buffer's total order of a notification: (time of its role, rank, digest).

    The offline command sorts its whole input by this key, which is the order the buffer
    releases notifications in online.
    """
    t, rank, _ = place(event)
    return t, rank, notification_digest(notification_core(event))


def place(event: InstanceEvent) -> tuple[int, int, bool]:
    """(time of the notification's role, release rank, whether it is applied on arrival)."""
    if event["operation"] == LIFECYCLE_CODE and event["current_state"] is not None:
        opens = event["current_state"].lower() in OPENERS
        return event["event_time"], RANK_START if opens else RANK_END, False
    phase = event["phase"]
    role = PHASE_INPUT.get(phase) if phase is not None else None
    if role is None:
        return event["event_time"], RANK_NOTICE, True
    inp = role[0]
    return role_time(event, inp), _ROLE_RANK[inp], event["vendor_event_id"] is not None


def role_time(event: InstanceEvent, inp: Input) -> int:
    """The vendor time of a notification's role: its start, its end, else its event time."""
    if inp is _NOTICE:
        return event["event_time"]
    when = event["start_time"] if inp is _START else event["end_time"]
    return event["event_time"] if when is None else when


def order_key(event: InstanceEvent) -> str:
    """The key whose notifications must be applied in time order: an operation without a
    vendor event id, or (ending in ``|``) an instance's lifecycle, whose state changes open and
    close the operations of several states."""
    code = event["vendor_event_code"]
    base = f"{event['vendor']}|{event['instance_id']}|"
    if event["operation"] == LIFECYCLE_CODE and event["current_state"] is not None:
        return f"{base}{code}|"
    return base + SHARED_KEYS.get(code, code)


def notification_time(event: InstanceEvent) -> int:
    """The time the correlator orders a notification by (its role's vendor time): what the
    normalize stage reports as its progress through a raw partition."""
    return place(event)[0]
