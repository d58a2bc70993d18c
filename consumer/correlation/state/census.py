"""What is open, counted: open operations by series, announced ones by notBefore.

Counts, not a per-operation index: a million open operations add nothing. Kept by the drains'
changes (each changed operation's tally before and after); forgotten after a restore or a
rollback and counted once from the held values when next asked.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping

from consumer.correlation.objects import PendingOp, Series, Tally, tally
from consumer.correlation.state.codec import DECODE_ERRORS, pending_tally


class OpenCensus:
    def __init__(self) -> None:
        self._series: Counter[Series] | None = Counter()
        self._starts: Counter[int] | None = Counter()

    def forget(self) -> None:
        """The held operations changed wholesale (restore, rollback): count again when asked."""
        self._series = self._starts = None

    def count_changes(self, changed: Iterable[str], before: Mapping[str, Tally],
                      hot: Mapping[str, PendingOp], cold: Mapping[str, bytes]) -> None:
        """Move the counts by one drain's changes: ``before`` holds the tallies of the changed
        operations at the last drain; their state now is the ``hot`` object or ``cold`` value."""
        series, starts = self._series, self._starts
        if series is None or starts is None:
            return
        for key in changed:
            old = before.get(key)
            if old is not None:
                series[old[0]] -= 1
                if old[1] is not None:
                    _take(starts, old[1])
            op = hot.get(key)
            if op is not None:
                new: Tally | None = tally(op)
            else:
                value = cold.get(key)  # cooled during the batch
                new = None if value is None else pending_tally(key, value)
            if new is not None:
                series[new[0]] += 1
                if new[1] is not None:
                    starts[new[1]] += 1

    def series(self, held: Iterable[tuple[str, bytes]]) -> Counter[Series]:
        """Open operations by (vendor, operation, state); ``held``: every open operation's
        value as of the last drain (read only when the counts were forgotten)."""
        if self._series is None:
            self._recount(held)
        assert self._series is not None
        return self._series

    def starts(self, held: Iterable[tuple[str, bytes]]) -> Counter[int]:
        """notBefore -> announced operations waiting for it."""
        if self._starts is None:
            self._recount(held)
        assert self._starts is not None
        return self._starts

    def _recount(self, held: Iterable[tuple[str, bytes]]) -> None:
        series: Counter[Series] = Counter()
        starts: Counter[int] = Counter()
        for key, value in held:
            try:
                (s, nb) = pending_tally(key, value)
            except DECODE_ERRORS:
                continue
            series[s] += 1
            if nb is not None:
                starts[nb] += 1
        self._series, self._starts = series, starts


def _take(counter: Counter[int], key: int) -> None:
    n = counter[key]
    if n <= 1:
        del counter[key]
    else:
        counter[key] = n - 1
