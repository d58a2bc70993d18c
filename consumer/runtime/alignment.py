"""Timestamp-aligned reading of several partitions, as Kafka Streams' ``PartitionGroup`` does.

A consumer hands records over partition by partition: catching up on a six-partition backlog,
it returns thousands of one partition's records before the next one's, so one key's events
(spread over the raw partitions by a bridge that does not key by instance) come out hours
apart in event time. :class:`Aligner` buffers what was consumed per partition and releases it
merged by record timestamp: the next record is the head of the partition whose head is oldest.

Rules (the consumer-facing ones are what Kafka Streams does with ``max.task.idle.ms``):

- Within a partition, offset order is kept; only the interleaving across partitions changes.
- A partition with nothing buffered blocks the others only while it may still have data (its
  position is behind its high watermark, or nothing is known yet) and for at most
  ``max_idle_ms`` from when it was first seen waiting; a caught-up (or quiet) partition never
  blocks, so an empty partition cannot stall the rest. Kafka Streams waits without bound for a
  partition with known lag; the bound here covers a fetch that is slow or a position that stops
  before a transaction marker, at the price of some disorder when it is reached.
- A partition holding more than ``max_buffered`` records is paused, and resumed when half of
  that is left, so memory stays bounded by about ``partitions * (max_buffered + batch)``.
- Offsets to commit are those of the records released (last released + 1 per partition), never
  the consumer's position: buffered records are not processed yet and must be read again after
  a crash or an aborted transaction.

:class:`Aligner` is pure (records only need ``topic/partition/offset/timestamp`` methods, a clock
is injected); :class:`ConsumerAlignment` binds it to a confluent-kafka consumer for the loop.
"""

from __future__ import annotations

import heapq
import time
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Generic, Protocol, TypeVar

if TYPE_CHECKING:
    from confluent_kafka import Consumer, Message, TopicPartition

Partition = tuple[str, int]
"""``(topic, partition)``."""


class Record(Protocol):
    """The part of a consumed record the aligner reads (confluent_kafka.Message has it)."""

    def topic(self) -> str | None: ...

    def partition(self) -> int | None: ...

    def offset(self) -> int | None: ...

    def timestamp(self) -> tuple[int, int]: ...


R = TypeVar("R", bound=Record)

_NO_BOUND = 1 << 62


class _Queue(Generic[R]):
    """One partition's buffered records as ``(timestamp, record)``, in offset order."""

    __slots__ = ("enforced", "items", "key", "next_offset", "paused", "rank", "stream_time",
                 "waiting_since")

    def __init__(self, key: Partition, rank: int) -> None:
        self.key = key
        self.rank = rank  # tie-break between equal timestamps: deterministic, by partition
        self.items: deque[tuple[int, R]] = deque()
        self.stream_time = -1  # newest timestamp seen: the stand-in for a record without one
        self.waiting_since: float | None = None
        self.enforced = False  # this waiting spell reached the idle bound
        self.paused = False
        self.next_offset: int | None = None  # released and not yet handed out for commit


class Aligner(Generic[R]):
    """Buffers consumed records per partition and releases them in record-timestamp order."""

    def __init__(self, max_idle_ms: int, max_buffered: int,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if max_buffered < 2:
            raise ValueError("max_buffered must be at least 2")
        self.max_idle = max_idle_ms / 1000.0
        self.max_buffered = max_buffered
        self.clock = clock
        self._queues: dict[Partition, _Queue[R]] = {}
        self.buffered = 0
        self.idle_expired = 0
        """Waits that reached ``max_idle_ms``: the others went ahead, maybe out of order."""

    # -- membership ------------------------------------------------------------------------

    def assign(self, partitions: Iterable[Partition]) -> None:
        for key in partitions:
            if key not in self._queues:
                self._queues[key] = _Queue(key, 0)
        for rank, key in enumerate(sorted(self._queues)):
            self._queues[key].rank = rank

    def revoke(self, partitions: Iterable[Partition]) -> list[Partition]:
        """Forget these partitions (records, offsets); returns the paused ones among them."""
        paused = []
        for key in partitions:
            q = self._queues.pop(key, None)
            if q is not None:
                self.buffered -= len(q.items)
                if q.paused:
                    paused.append(key)
        return paused

    def drop(self) -> list[Partition]:
        """Forget every buffered record and unhanded offset (after a rewind); returns the paused."""
        paused = []
        for q in self._queues.values():
            self.buffered -= len(q.items)
            q.items.clear()
            q.next_offset = None
            q.waiting_since = None
            if q.paused:
                q.paused = False
                paused.append(q.key)
        return paused

    # -- records in and out ----------------------------------------------------------------

    def add(self, records: Sequence[R]) -> list[Partition]:
        """Buffer consumed records; returns the partitions to pause (over ``max_buffered``)."""
        queues = self._queues
        q: _Queue[R] | None = None
        key: Partition | None = None
        for rec in records:
            k = (rec.topic() or "", rec.partition() or 0)
            if k != key:
                key = k
                q = queues.get(k)
                if q is None:  # consumed before its assignment was seen: adopt it
                    self.assign([k])
                    q = queues[k]
                q.waiting_since = None
            assert q is not None
            ts = rec.timestamp()[1]
            if ts < 0:  # no timestamp: keep it where it arrived
                ts = q.stream_time
            elif ts > q.stream_time:
                q.stream_time = ts
            q.items.append((ts, rec))
        self.buffered += len(records)
        to_pause = []
        for q in queues.values():
            if not q.paused and len(q.items) > self.max_buffered:
                q.paused = True
                to_pause.append(q.key)
        return to_pause

    def bypass(self, records: Sequence[R], limit: int) -> bool:
        """Whether ``records`` may be processed as they are, without buffering, and if so take
        them as released: one partition assigned, nothing buffered, at most ``limit`` records.
        Nothing to merge then, so a single-partition consumer pays nothing per record."""
        if len(self._queues) != 1 or self.buffered or not records or len(records) > limit:
            return False
        q = next(iter(self._queues.values()))
        last = records[-1]
        if (last.topic() or "", last.partition() or 0) != q.key:
            return False
        q.next_offset = (last.offset() or 0) + 1
        q.waiting_since = None
        return True

    def release(self, limit: int,
                may_have_data: Callable[[Partition], bool]) -> tuple[list[R], list[Partition]]:
        """Up to ``limit`` records in timestamp order, and the partitions to resume.

        Stops early when a partition runs empty that may still have data and has not waited
        ``max_idle_ms`` yet: its next record may be older than anything buffered.
        """
        now = self.clock()
        heap: list[tuple[int, int, _Queue[R]]] = []
        for q in self._queues.values():
            if q.items:
                heap.append((q.items[0][0], q.rank, q))
            elif self._blocks(q, may_have_data, now):
                return [], []
        heapq.heapify(heap)
        out: list[R] = []
        while heap and len(out) < limit:
            _, _, q = heap[0]
            items = q.items
            # The head partition's records up to the next partition's head go in one run.
            if len(heap) > 1:
                nxt = min(heap[1:3])
                bound = nxt[0] if nxt[1] > q.rank else nxt[0] - 1  # ties: the lower rank first
            else:
                bound = _NO_BOUND
            room = limit - len(out)
            if bound == _NO_BOUND and room >= len(items):  # the only one with records: all of it
                taken = [rec for _, rec in items]
                items.clear()
            else:
                taken = []
                popleft = items.popleft
                while items and items[0][0] <= bound and len(taken) < room:
                    taken.append(popleft()[1])
            if taken:
                out.extend(taken)
                q.next_offset = (taken[-1].offset() or 0) + 1
            if items:
                heapq.heapreplace(heap, (items[0][0], q.rank, q))
                continue
            heapq.heappop(heap)
            if self._blocks(q, may_have_data, now):
                break
        self.buffered -= len(out)
        low = self.max_buffered // 2
        resume = []
        for q in self._queues.values():
            if q.paused and len(q.items) <= low:
                q.paused = False
                resume.append(q.key)
        return out, resume

    def _blocks(self, q: _Queue[R], may_have_data: Callable[[Partition], bool],
                now: float) -> bool:
        """Whether the empty partition ``q`` holds the others back now."""
        if not may_have_data(q.key):
            q.waiting_since = None
            return False
        if q.waiting_since is None:
            q.waiting_since = now
            q.enforced = False
        if now - q.waiting_since < self.max_idle:
            return True
        if not q.enforced:
            q.enforced = True
            self.idle_expired += 1
        return False

    def partitions(self) -> list[Partition]:
        return list(self._queues)

    def drained(self) -> list[Partition]:
        """Assigned partitions with nothing buffered: everything consumed from them is released."""
        return [q.key for q in self._queues.values() if not q.items]

    def take_offsets(self) -> list[tuple[str, int, int]]:
        """``(topic, partition, next offset)`` of what was released since the last call."""
        out = []
        for q in self._queues.values():
            if q.next_offset is not None:
                out.append((*q.key, q.next_offset))
                q.next_offset = None
        return out


class ConsumerAlignment:
    """The aligner bound to a confluent-kafka consumer: pause/resume and the watermark check."""

    def __init__(self, max_idle_ms: int, max_buffered: int,
                 on_idle_expired: Callable[[int], None] = lambda n: None) -> None:
        self.aligner: Aligner[Message] = Aligner(max_idle_ms, max_buffered)
        self.on_idle_expired = on_idle_expired
        self._reported = 0
        self._committed: dict[Partition, int] = {}
        """Committed offsets of assigned partitions read from their end (no position yet)."""

    def assign(self, partitions: Sequence[TopicPartition]) -> None:
        self.aligner.assign((p.topic, p.partition) for p in partitions)
        for p in partitions:
            self._committed.pop((p.topic, p.partition), None)

    def revoke(self, consumer: Consumer, partitions: Sequence[TopicPartition]) -> None:
        """Drop their buffers; resume the paused ones so a later assignment starts unpaused."""
        for p in partitions:
            self._committed.pop((p.topic, p.partition), None)
        paused = self.aligner.revoke((p.topic, p.partition) for p in partitions)
        self._resume(consumer, paused)

    def drop(self, consumer: Consumer) -> None:
        """After a rewind to the committed offsets: nothing buffered or released is kept."""
        self._resume(consumer, self.aligner.drop())

    def next_batch(self, consumer: Consumer, records: Sequence[Message],
                   limit: int) -> list[Message]:
        """Buffer ``records`` and return what may be processed now, in timestamp order."""
        from confluent_kafka import TopicPartition

        aligner = self.aligner
        if aligner.bypass(records, limit):
            return list(records)
        to_pause = aligner.add(records)
        if to_pause:
            consumer.pause([TopicPartition(t, p) for t, p in to_pause])

        out, resume = aligner.release(limit, lambda key: _may_have_data(consumer, key))
        self._resume(consumer, resume)
        if aligner.idle_expired != self._reported:
            self.on_idle_expired(aligner.idle_expired - self._reported)
            self._reported = aligner.idle_expired
        return out

    def caught_up(self, consumer: Consumer) -> dict[Partition, bool]:
        """Each assigned partition: whether everything consumed from it is released and the
        consumer has nothing left to read in it (its position is at its high watermark).

        A partition assigned at its end has no position until a record arrives: its committed
        offset (or, with none, its first offset) stands in, asked once per assignment (an empty
        partition, or one left at its end by a killed owner, would otherwise look behind for
        ever).
        """
        from confluent_kafka import KafkaException, TopicPartition

        keys = self.aligner.partitions()
        tps = [TopicPartition(*key) for key in keys]
        positions = {(tp.topic, tp.partition): tp.offset for tp in consumer.position(tps)}
        unknown = [TopicPartition(*key) for key in keys
                   if positions.get(key, -1) < 0 and key not in self._committed]
        if unknown:
            try:
                for tp in consumer.committed(unknown, timeout=2.0):
                    key = (tp.topic, tp.partition)
                    if tp.offset < 0:  # nothing committed: read from the start (earliest)
                        tp.offset = consumer.get_watermark_offsets(tp, timeout=2.0)[0]
                    self._committed[key] = tp.offset
            except KafkaException:
                pass  # asked again at the next batch
        drained = set(self.aligner.drained())
        out = {}
        for key in keys:
            _, high = consumer.get_watermark_offsets(TopicPartition(*key), cached=True)
            position = positions.get(key, -1)
            if position < 0:
                position = self._committed.get(key, -1)
            out[key] = key in drained and high >= 0 and position >= high
        return out

    def offsets(self, consumer: Consumer) -> list[TopicPartition]:
        """Offsets to commit with the batch: last released + 1 per partition, or, where nothing
        is buffered, the consumer's position (as Kafka Streams does): the position has moved past
        trailing transaction markers, so a read_committed input shows no lag of 1 for ever."""
        from confluent_kafka import TopicPartition

        next_offsets = {(t, p): o for t, p, o in self.aligner.take_offsets()}
        drained = self.aligner.drained()
        if drained:
            for tp in consumer.position([TopicPartition(t, p) for t, p in drained]):
                key = (tp.topic, tp.partition)
                if tp.offset >= 0 and tp.offset > next_offsets.get(key, -1):
                    next_offsets[key] = tp.offset
        return [TopicPartition(t, p, o) for (t, p), o in next_offsets.items()]

    @staticmethod
    def _resume(consumer: Consumer, keys: list[Partition]) -> None:
        if keys:
            from confluent_kafka import TopicPartition

            consumer.resume([TopicPartition(t, p) for t, p in keys])


def _may_have_data(consumer: Consumer, key: Partition) -> bool:
    """Whether the consumer's position in ``key`` may be short of its end (unknown: yes)."""
    from confluent_kafka import TopicPartition

    tp = TopicPartition(*key)
    _, high = consumer.get_watermark_offsets(tp, cached=True)
    if high < 0:
        return True  # no fetch answered yet: unknown, so wait (bounded)
    position = consumer.position([tp])[0].offset
    return position < 0 or position < high
