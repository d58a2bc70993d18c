"""A partition's event time: the newest notification time, the watermark, upstream progress.

Part of the state layer: its changes are noted like a key's (one ``w|`` changelog record per
drain that changed it, a pre-image for rollback), so the store writes and restores it with the
rest. The processing-time anchor is not persisted: after a restore the quiet-time advance of
the watermark starts again from the first call.
"""

from __future__ import annotations

from typing import Any, Final

from consumer.correlation.state.codec import Sources, decode_meta, encode_meta

NO_TIME: Final = -(2**62)
"""The watermark of a partition that has seen no event yet."""

_Pre = tuple[int, int, int | None, Sources]


class EventClock:
    def __init__(self) -> None:
        self.max_time = NO_TIME
        """Newest notification time seen (on the partition, or in upstream progress)."""
        self.watermark = NO_TIME
        self.sources: Sources = {}
        self.anchor: int | None = None
        """Processing time when ``max_time`` last advanced (None: from the next call)."""
        self._frontier: int | None = NO_TIME  # cache of frontier(); NO_TIME: to compute
        self._dirty = False
        self._pre: _Pre | None = None

    def _changing(self) -> None:
        self._dirty = True
        if self._pre is None:
            self._pre = (self.max_time, self.watermark, self.anchor, dict(self.sources))

    def see(self, t: int, now: int) -> None:
        """A notification of event time ``t`` arrived at processing time ``now``."""
        if t > self.max_time:
            self._changing()
            self.max_time = t
            self.anchor = now

    def set_watermark(self, w: int) -> None:
        if w > self.watermark:
            self._changing()
            self.watermark = w

    def progress(self, source: str, t: int, caught_up: bool) -> bool:
        """Upstream progress of one raw partition; True when it changed anything."""
        old = self.sources.get(source)
        if old is not None:
            t = max(t, old[0])
            if old == (t, caught_up):
                return False
        self._changing()
        self.sources[source] = (t, caught_up)
        self._frontier = NO_TIME
        return True

    def frontier(self) -> int | None:
        """Event time up to which every raw partition heard of has been normalized (None: all
        caught up, no bound): the oldest newest-time of the partitions still behind."""
        f = self._frontier
        if f == NO_TIME:
            behind = [t for t, caught_up in self.sources.values() if not caught_up]
            f = self._frontier = min(behind) if behind else None
        return f

    def resume(self) -> None:
        """Restart the processing-time advance of the watermark from the next call."""
        self.anchor = None

    # -- as part of the state ------------------------------------------------------------------

    @property
    def touched(self) -> bool:
        return self._pre is not None

    def commit_point(self) -> None:
        self._pre = None

    def rollback(self) -> bool:
        """Back to the last commit point; whether anything changed since."""
        pre, self._pre, self._dirty = self._pre, None, False
        if pre is None:
            return False
        self.max_time, self.watermark, self.anchor, self.sources = pre
        self._frontier = NO_TIME
        return True

    def drain(self) -> bytes | None:
        """The ``w|`` value, if it changed since the last drain."""
        if not self._dirty:
            return None
        self._dirty = False
        return encode_meta(self.max_time, self.watermark, self.sources)

    def restore(self, value: bytes) -> None:
        self.max_time, self.watermark, self.sources = decode_meta(value)
        self._frontier = NO_TIME
        self.anchor = None

    def snapshot(self) -> dict[str, Any] | None:
        if self.max_time == NO_TIME:
            return None
        snap: dict[str, Any] = {"max": self.max_time, "w": self.watermark}
        if self.sources:
            snap["src"] = {k: list(v) for k, v in self.sources.items()}
        return snap
