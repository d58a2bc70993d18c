"""The public open-operations view, derived from the correlator's changelog writes.

:func:`open_changes` turns one drain of the changelog (``p|<key>`` writes and tombstones) into
records of the compacted topic ``vm.operations.open`` (Avro ``OpenOperation``): the latest state
of each open operation written, a tombstone for each one dropped. Derived from the drained
records themselves, so the view and the changelog commit together and can never disagree; an
aborted batch aborts both, and the correlator's rollback leaves nothing to drain. The work is
done at drain time only, once per changed operation key, nothing per event.

:class:`OpenView` keeps what the gauges need of the open operations of one stage (counts by
vendor, operation and phase; the earliest future ``not_before`` of announced ones), updated from
the same records.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from typing import Any, Final, NamedTuple

from consumer.correlation.state import PENDING_PREFIX, pending_fields

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


class Seen(NamedTuple):
    vendor: str
    operation: str
    phase: str
    not_before: int | None


class OpenView:
    """What is open, per input partition, as far as the gauges need it."""

    def __init__(self) -> None:
        self._open: dict[int, dict[str, Seen]] = {}
        self.counts: Counter[tuple[str, str, str]] = Counter()
        """(vendor, operation, phase) -> open operations (zeros kept so a gauge can go to 0)."""

    def apply(self, partition: int, changes: Iterable[tuple[str, OpenRecord | None]]) -> None:
        held = self._open.setdefault(partition, {})
        counts = self.counts
        for key, record in changes:
            old = held.pop(key, None)
            if old is not None:
                counts[old[:3]] -= 1
            if record is not None:
                seen = Seen(record["vendor"], record["operation"], record["phase"],
                            record["not_before"])
                held[key] = seen
                counts[seen[:3]] += 1

    def reset(self, partition: int, records: Iterable[tuple[str, OpenRecord]]) -> None:
        """Replace a partition's operations (after a restore or a rollback)."""
        self.drop(partition)
        self.apply(partition, records)

    def drop(self, partition: int) -> None:
        for seen in self._open.pop(partition, {}).values():
            self.counts[seen[:3]] -= 1

    def next_start(self, now: int) -> int | None:
        """The earliest ``not_before`` after ``now`` among announced operations (a scan: called
        when metrics are scraped, not per event)."""
        best: int | None = None
        for held in list(self._open.values()):
            for seen in list(held.values()):
                nb = seen.not_before
                if seen.phase == "announced" and nb is not None and nb > now and (
                        best is None or nb < best):
                    best = nb
        return best
