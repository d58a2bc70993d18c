"""The public open-operations view, derived from the correlator's changelog writes.

:func:`open_changes` turns one drain of the changelog (``p|<key>`` writes and tombstones) into
records of the compacted topic ``vm.operations.open`` (Avro ``OpenOperation``): the latest state
of each open operation written, a tombstone for each one dropped. Derived from the drained
records themselves, so the view and the changelog commit together and can never disagree; an
aborted batch aborts both, and the correlator's rollback leaves nothing to drain. The work is
done at drain time only, once per changed operation key, nothing per event.

:class:`OpenGauges` sums what the gauges need over a stage's correlators (counts by vendor,
operation and phase; the earliest future ``not_before`` of announced ones).
"""

from __future__ import annotations

from bisect import bisect_right
from collections import Counter
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, Final

from consumer.correlation.state import PENDING_PREFIX, pending_fields

if TYPE_CHECKING:
    from consumer.correlation.engine import Correlator

PHASES: Final = {"announced": "announced", "started": "started",
                 "ended": "ended_awaiting_start"}
"""Changelog state -> ``OpenOperation.phase``."""

OpenRecord = dict[str, Any]


def open_record(state: dict[str, Any], now: int) -> OpenRecord:
    """An ``OpenOperation`` value from one decoded ``p|`` changelog value."""
    return {
        "vendor": state["vendor"], "instance_id": state["instance_id"],
        "operation": state["operation"], "vendor_event_code": state["code"],
        "vendor_event_id": state.get("vendor_event_id"),
        "phase": PHASES.get(state["state"], "unknown"),
        "region": state.get("region"), "account_id": state.get("account_id"),
        "scheduled_at": state.get("notice_at"), "not_before": state.get("not_before"),
        "started_at": state.get("start_at"), "deadline": state.get("deadline"),
        "last_notification_at": state.get("last_when"), "updated_at": now,
    }


def open_changes(changes: Iterable[tuple[str, bytes | None]],
                 now: int) -> list[tuple[str, OpenRecord | None]]:
    """(operation key, ``OpenOperation`` or None) for each ``p|`` write of a changelog drain."""
    out: list[tuple[str, OpenRecord | None]] = []
    for ckey, value in changes:
        if ckey.startswith(PENDING_PREFIX):
            key = ckey[len(PENDING_PREFIX):]
            out.append((key, None if value is None else open_record(pending_fields(key, value), now)))
    return out


class OpenGauges:
    """What the open-operations gauges show for one stage, summed over its correlators.

    The correlators keep their open operations counted (by vendor, operation and state, and
    the announced ones by notBefore) as their drains change them, so nothing here grows with
    the number of open operations: a million announced maintenances cost a few counters.
    """

    def __init__(self) -> None:
        self.counts: Counter[tuple[str, str, str]] = Counter()
        """(vendor, operation, phase) -> open operations (zeros kept so a gauge can go to 0)."""
        self._starts: list[int] = []

    def update(self, correlators: Iterable[Correlator], now: int) -> None:
        counts: Counter[tuple[str, str, str]] = Counter(dict.fromkeys(self.counts, 0))
        starts: set[int] = set()
        for correlator in correlators:
            for (vendor, operation, state), n in correlator.open_counts().items():
                if n:
                    counts[(vendor, operation, PHASES.get(state, "unknown"))] += n
            starts.update(nb for nb in correlator.open_starts() if nb > now)
        self.counts = counts
        self._starts = sorted(starts)  # replaced whole: the scrape thread reads it

    def next_start(self, now: int) -> int | None:
        """The earliest notBefore after ``now`` among announced operations (at the last
        update; safe to call from the thread that serves /metrics)."""
        starts = self._starts
        i = bisect_right(starts, now)
        return starts[i] if i < len(starts) else None
