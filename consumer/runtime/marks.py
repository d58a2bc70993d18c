"""Progress marks: how far the normalize stage has read each raw partition, carried through the
repartition to the correlate stage (Flink carries its watermarks through a shuffle the same way).

Why: an instance's notifications sit on any raw partitions, and several normalize processes (a
backlog, autoscaling on lag, a restart) write them to ``vm.events.normalized`` at their own
paces, so the correlate stage may see an end minutes before the start another process still
holds. With the marks it knows: a notification is decided once every raw partition has been
normalized past its time (or is caught up), and the watermark never passes a raw partition that
is still behind.

A mark is a record on every normalized partition, written in the same transaction as the events
it vouches for, after them: value null (an Avro reader of the topic sees a null, not a record it
cannot decode), key ``vmevents.progress``, and a header ``vmevents.progress`` holding a JSON list
of ``[raw partition, newest notification time normalized (epoch ms), caught up]``. The raw
partition is named ``<topic>:<partition>``.

:class:`ProgressMarks` is the normalize side: it keeps what each raw partition has reached and
writes a mark only when something changed, so an idle stage writes nothing.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

import orjson

from consumer.correlator import NO_TIME
from consumer.runtime.alignment import Partition
from consumer.runtime.loop import Emit

MARK_KEY = b"vmevents.progress"
MARK_HEADER = "vmevents.progress"

NOTHING_YET = NO_TIME
"""The newest time of a raw partition nothing has been normalized from yet (the correlator's
"no time yet", so a mark of it never moves anything)."""

Entry = tuple[str, int, bool]
"""(raw partition ``<topic>:<partition>``, newest notification time, caught up)."""


def source_name(topic: str, partition: int) -> str:
    return f"{topic}:{partition}"


def encode_mark(entries: Iterable[Entry]) -> bytes:
    return orjson.dumps([list(entry) for entry in entries])


def read_mark(headers: Any) -> list[Entry] | None:
    """The entries of a mark record's headers (a consumed record's ``headers()``); None when it
    is not a (readable) mark."""
    for name, value in headers or ():
        if name == MARK_HEADER and isinstance(value, bytes):
            try:
                return [(str(src), int(t), bool(caught)) for src, t, caught in orjson.loads(value)]
            except (orjson.JSONDecodeError, TypeError, ValueError):
                return None
    return None


class ProgressMarks:
    """What the normalize stage has reached in each raw partition, and the marks that say it."""

    def __init__(self, topic: str, partitions: int) -> None:
        self.topic = topic
        self.partitions = partitions
        self._newest: dict[Partition, int] = {}
        self._sent: dict[Partition, tuple[int, bool]] = {}
        self._unannounced: set[Partition] = set()

    def saw(self, partition: Partition, when: int) -> None:
        """A notification of time ``when`` from ``partition`` is in this batch."""
        if when > self._newest.get(partition, NOTHING_YET):
            self._newest[partition] = when

    def assigned(self, partitions: Iterable[Partition]) -> None:
        """Newly assigned: announced as behind before the first record written from them."""
        for p in partitions:
            self._sent.pop(p, None)
            self._unannounced.add(p)

    def announce(self, emit: Emit) -> int:
        """Before a batch's records: the partitions assigned since the last batch, as not
        caught up. Without it the correlate stage would decide the first records at once while
        raw partitions it has not heard of yet may hold older notifications of their instances."""
        if not self._unannounced:
            return 0
        entries: list[Entry] = []
        for p in sorted(self._unannounced):
            state = (self._newest.get(p, NOTHING_YET), False)
            self._sent[p] = state
            entries.append((source_name(*p), *state))
        self._unannounced.clear()
        return self._write(entries, emit)

    def forget(self, partitions: Iterable[Partition]) -> None:
        """Revoked: their next owner reports them (and so do we if they come back)."""
        for p in partitions:
            self._newest.pop(p, None)
            self._sent.pop(p, None)
            self._unannounced.discard(p)

    def emit(self, caught_up: Callable[[], Mapping[Partition, bool]], emit: Emit) -> int:
        """Write a mark to every normalized partition if any raw partition's progress changed
        since the last one; returns the records written."""
        changed: list[Entry] = []
        for p, caught in caught_up().items():
            state = (self._newest.get(p, NOTHING_YET), caught)
            if self._sent.get(p) != state:
                self._sent[p] = state
                changed.append((source_name(*p), *state))
        return self._write(changed, emit) if changed else 0

    def _write(self, entries: list[Entry], emit: Emit) -> int:
        headers: list[tuple[str, str | bytes | None]] = [(MARK_HEADER, encode_mark(entries))]
        for q in range(self.partitions):
            emit(self.topic, MARK_KEY, None, headers, q)
        return self.partitions

    def rollback(self) -> None:
        """The batch aborted: what was sent with it is gone, say it again next time (the
        partitions held are announced again before the redone batch's records)."""
        self._unannounced.update(self._sent)
        self._sent.clear()
