"""The stage's transactional producer, and what it does when the broker misbehaves.

Every blocking client call runs under a deadline (:mod:`consumer.runtime.deadline`) and follows
librdkafka's error triage:

1. Retriable (a timeout, the coordinator moving or loading): the same call again after a backoff
   (0.1 s doubling to 2 s) for as long as it takes; the brokers count as unreachable meanwhile.
   Only ``stop`` ends the wait.
2. Abortable (``txn_requires_abort``: a message timed out, the group generation moved on):
   ``abort_transaction``; the caller rewinds the consumer and redoes the batch.
3. Fatal (fenced, a broken producer state), or a call that overran its deadline: the producer is
   abandoned and a new one with the same ``transactional.id`` runs ``init_transactions``, which
   bumps the epoch, fences the old producer and aborts its open transaction on the coordinator;
   the caller rewinds and redoes the batch. A producer stuck inside librdkafka cannot be freed:
   after :data:`MAX_STUCK` of them, or :data:`MAX_REPLACEMENTS` replacements without a commit in
   between, the stage gives up with a fatal error so the orchestrator restarts the process.
4. Fenced (another producer with this ``transactional.id`` called ``init_transactions``): like
   any fatal error for a stage, whose id is its own; with ``replace_when_fenced=False`` (the DLQ
   re-drive, whose id is shared by every run) :class:`Fenced` is raised instead, so the run that
   lost stops rather than fencing the one that took over.

Bound on resuming after the broker is back: the call in progress returns, or is abandoned at its
deadline (``VMEVENTS_KAFKA_CALL_TIMEOUT_MS`` + :data:`~consumer.runtime.deadline.MARGIN_SECONDS`),
plus at most one backoff (2 s), plus the new producer's ``init_transactions`` and the rewind.
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable
from typing import Any, TypeVar

import structlog
from confluent_kafka import KafkaError, KafkaException, Producer, TopicPartition

from consumer.errors import KafkaRuntimeError
from consumer.metrics import Metrics
from consumer.runtime.clients import wrap
from consumer.runtime.deadline import MARGIN_SECONDS, CallOverran, Stopping, call_with_deadline
from consumer.runtime.outage import Outage

log = structlog.get_logger(__name__)

T = TypeVar("T")

MAX_BACKOFF_SECONDS = 2.0
MAX_STUCK = 3
MAX_REPLACEMENTS = 5

UNREACHABLE = frozenset({
    KafkaError._TIMED_OUT, KafkaError._TRANSPORT, KafkaError._ALL_BROKERS_DOWN,
    KafkaError._RESOLVE, KafkaError.REQUEST_TIMED_OUT,
})
"""Error codes that mean "the broker is away" rather than "this request was wrong".

A coordinator moving or loading is retriable too (:data:`RETRIED`), but the broker answered: no
outage.
"""

RETRIED = UNREACHABLE | {
    KafkaError.NOT_COORDINATOR, KafkaError.COORDINATOR_NOT_AVAILABLE,
    KafkaError.COORDINATOR_LOAD_IN_PROGRESS,
}
"""Retried whatever the client's ``retriable`` flag says (``committed()`` sets none)."""


FENCED = frozenset({KafkaError._FENCED, KafkaError.PRODUCER_FENCED,
                    KafkaError.INVALID_PRODUCER_EPOCH})
"""Codes saying that a newer producer with the same ``transactional.id`` has taken over."""


class BatchLost(Exception):
    """The batch's transaction did not commit: it was aborted or its producer replaced."""


class Fenced(KafkaRuntimeError):
    """Another producer with this ``transactional.id`` took over; this one must stop."""


class TransactionalProducer:
    """One ``transactional.id``, held across producer replacements."""

    def __init__(self, conf: dict[str, Any], *, stage: str, call_timeout: float, metrics: Metrics,
                 outage: Outage, stop: threading.Event, heartbeat: Callable[[], None],
                 factory: Callable[[dict[str, Any]], Producer] = Producer,
                 replace_when_fenced: bool = True) -> None:
        self._conf = conf
        self._factory = factory
        self.stage = stage
        self.call_timeout = call_timeout
        self.deadline = call_timeout + MARGIN_SECONDS
        self.metrics = metrics
        self.outage = outage
        self.stop = stop
        self.heartbeat = heartbeat
        self.replace_when_fenced = replace_when_fenced
        self.producer = factory(conf)
        self.stuck: list[Producer] = []  # referenced forever: destroying one would block too
        self.replacements = 0
        self.open = False
        self.last = "none"  # what became of the last transaction: committed, aborted, ...

    # -- calls -----------------------------------------------------------------------------

    def call(self, what: str, fn: Callable[[], T]) -> T:
        """``fn()`` under the deadline, retried with backoff while its error is retriable.

        A timeout, a lost connection or a moving coordinator counts as retriable even where the
        client does not flag it (``committed()`` does not). Raises the first other error
        (wrapped), CallOverran, or Stopping.
        """
        backoff = 0.1
        while True:
            try:
                result = call_with_deadline(fn, self.deadline, what, self.stop)
            except Stopping:
                self.stuck.append(self.producer)  # maybe still inside the call: never destroy it
                raise
            except KafkaException as exc:
                err = wrap(exc, what)
                if err.fatal or err.txn_requires_abort or not (
                        err.retriable or err.code in RETRIED):
                    raise err from None
                if err.code in UNREACHABLE:
                    self.outage.down(str(err))
                else:
                    log.info("retrying", stage=self.stage, call=what, error=str(err))
            else:
                return result
            self.pause(backoff)
            backoff = min(backoff * 2, MAX_BACKOFF_SECONDS)

    def pause(self, seconds: float) -> None:
        """Wait between retries, alive for the liveness probe and attentive to ``stop``."""
        self.heartbeat()
        if self.stop.wait(seconds):
            raise Stopping

    # -- transaction life cycle --------------------------------------------------------------

    def init(self) -> None:
        """``init_transactions``: fences any earlier producer with this id and aborts its transaction."""
        while True:
            try:
                self.call("init_transactions",
                          functools.partial(self.producer.init_transactions, self.call_timeout))
            except CallOverran as exc:
                self._abandon(str(exc), stuck=True)
                continue
            self.outage.contact()
            return

    def begin(self) -> None:
        try:
            self.producer.begin_transaction()
        except KafkaException as exc:
            err = wrap(exc, "begin_transaction")
            if not err.fatal:
                raise err from None
            self._check_fenced(err)
            self.replace(str(err))
            self.producer.begin_transaction()
        self.open = True

    def commit(self, offsets: Callable[[], tuple[list[TopicPartition], Any] | None]) -> None:
        """Send the input offsets and commit; on failure abort or replace, then raise BatchLost.

        ``offsets()`` gives ``(positions, group metadata)``, or None when there is no position
        to commit (then the commit of an empty transaction is local and proves no contact).
        """
        producer, tmo = self.producer, self.call_timeout
        try:
            sent = offsets()
            if sent is not None:
                positions, group = sent
                self.call("send_offsets_to_transaction",
                          lambda: producer.send_offsets_to_transaction(positions, group, tmo))
            self.call("commit_transaction", lambda: producer.commit_transaction(tmo))
        except (KafkaRuntimeError, KafkaException) as exc:
            self._recover(exc if isinstance(exc, KafkaRuntimeError) else wrap(exc, "commit"))
            raise BatchLost(str(exc)) from None
        self.open = False
        self.last = "committed"
        self.replacements = 0
        if sent is not None:
            self.outage.contact()

    def fail(self, exc: KafkaRuntimeError) -> None:
        """The batch failed before its commit (a produce or processing error): undo it."""
        self._recover(exc)

    def _recover(self, exc: KafkaRuntimeError) -> None:
        if exc.code in UNREACHABLE:
            self.outage.down(str(exc))
        self._check_fenced(exc)
        if isinstance(exc, CallOverran) or exc.fatal:
            self.replace(str(exc), stuck=isinstance(exc, CallOverran))
            return
        log.warning("transaction aborted: rewinding to the committed offsets to redo the batch",
                    stage=self.stage, error=str(exc))
        producer = self.producer
        try:
            self.call("abort_transaction", lambda: producer.abort_transaction(self.call_timeout))
        except CallOverran as overran:
            self.replace(str(overran), stuck=True)
            return
        except KafkaRuntimeError as abort_err:
            self.replace(str(abort_err))
            return
        self.metrics.transaction_aborts.labels(self.stage).inc()
        self.open = False
        self.last = "aborted"

    def _check_fenced(self, exc: KafkaRuntimeError) -> None:
        """Raise :class:`Fenced` for a fencing error when this producer must not fight back."""
        if exc.code in FENCED and not self.replace_when_fenced:
            self.open = False
            self.last = "fenced"
            raise Fenced(f"{exc} (another producer with this transactional.id took over)",
                         code=exc.code, fatal=True) from None

    def replace(self, reason: str, *, stuck: bool = False) -> None:
        """A new producer with the same transactional.id; the old one's transaction is aborted."""
        self.replacements += 1
        if self.replacements > MAX_REPLACEMENTS:
            raise KafkaRuntimeError(
                f"producer replaced {MAX_REPLACEMENTS} times without a commit in between "
                f"(last: {reason}): exiting so the orchestrator restarts the process", fatal=True)
        log.warning("producer replaced: the new one fences the old and aborts its transaction; "
                    "rewinding to the committed offsets to redo the batch",
                    stage=self.stage, reason=reason, stuck_call=stuck)
        self.metrics.transaction_aborts.labels(self.stage).inc()
        self._abandon(reason, stuck=stuck)
        self.init()
        self.open = False
        self.last = "aborted (producer replaced)"

    def _abandon(self, reason: str, *, stuck: bool) -> None:
        old = self.producer
        if stuck:
            self.stuck.append(old)
            if len(self.stuck) > MAX_STUCK:
                raise KafkaRuntimeError(
                    f"{len(self.stuck)} client calls stuck inside librdkafka (last: {reason}): "
                    "exiting so the orchestrator restarts the process", fatal=True)
        else:  # destroyed off the loop's thread: rd_kafka_destroy may wait on the broker
            threading.Thread(target=_release, args=(old,), name="producer-release",
                             daemon=True).start()
        self.producer = self._factory(self._conf)

    def abandon_open(self, seconds: float) -> None:
        """At shutdown: abort the open transaction if the broker answers within ``seconds``."""
        if not self.open:
            return
        producer = self.producer
        try:
            call_with_deadline(lambda: producer.abort_transaction(seconds), seconds + 1,
                               "abort_transaction")
            self.last = "aborted"
        except (KafkaException, CallOverran):
            self.last = ("left open: the broker aborts it after transaction.timeout.ms, "
                         "or when a producer with this transactional.id starts")
        self.open = False


def _release(producer: Producer) -> None:
    del producer

