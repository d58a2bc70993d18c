"""The public open-operations view, derived from the correlator's changelog writes.

:func:`open_record` is one record of the compacted topic ``vm.operations.open`` (Avro
``OpenOperation``). The state layer's drain makes them for the open operations it writes to
the changelog (their latest state, or None for their removal), from the same objects in the same
pass, so the view and the changelog commit together and can never disagree; an aborted batch
aborts both, and the correlator's rollback leaves nothing to drain. The work is done at drain
time only, once per changed operation key, nothing per event.

:class:`OpenGauges` sums what the gauges need over a stage's correlators (counts by vendor,
operation and phase; the earliest future ``not_before`` of announced ones).
"""

from __future__ import annotations

from bisect import bisect_right
from collections import Counter
from collections.abc import Iterable
from typing import Any, Final, Protocol

from consumer.correlation.objects import STATE_VALUES, PendingOp

PHASES: Final = {"announced": "announced", "started": "started",
                 "ended": "ended_awaiting_start"}
"""Open operation state -> ``OpenOperation.phase``."""

OpenRecord = dict[str, Any]


def open_record(op: PendingOp, now: int) -> OpenRecord:
    """The ``OpenOperation`` value of one open operation."""
    return {
        "vendor": op.vendor, "instance_id": op.instance_id,
        "operation": op.operation, "vendor_event_code": op.code,
        "vendor_event_id": op.vendor_event_id,
        "phase": PHASES.get(STATE_VALUES[op.state], "unknown"),
        "region": op.region, "account_id": op.account_id,
        "scheduled_at": op.notice_at, "not_before": op.not_before,
        "started_at": op.start_at, "deadline": op.deadline,
        "last_notification_at": op.last_when, "updated_at": now,
    }


class OpenCounts(Protocol):
    """What the gauges read of a correlator."""

    def open_counts(self) -> Counter[tuple[str, str, str]]: ...

    def open_starts(self) -> Counter[int]: ...


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

    def update(self, correlators: Iterable[OpenCounts], now: int) -> None:
        """Recount from the correlators (after a drain, a restore or a rollback)."""
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
