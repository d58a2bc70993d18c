"""TransactionalProducer's triage, branch by branch, without a broker.

A fake stands in for ``confluent_kafka.Producer`` because a real broker cannot be made to give
these answers on demand: an error flagged retriable, abortable or fatal at a chosen call, or a
call that blocks past its deadline (librdkafka #5456, #5511). What each branch does with the
answer (retry, abort, replace, give up) is ours and is what these tests pin; that a real broker
gives such answers, and that a replacement's ``init_transactions`` fences the old producer, is
covered on Apache Kafka (tests/integration/test_broker_faults.py, test_dlq_redrive.py).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import pytest
from confluent_kafka import KafkaError, KafkaException, TopicPartition

from consumer.errors import KafkaRuntimeError
from consumer.metrics import Metrics
from consumer.runtime.deadline import Stopping
from consumer.runtime.outage import Outage
from consumer.runtime.transactions import (
    MAX_REPLACEMENTS,
    MAX_STUCK,
    BatchLost,
    Fenced,
    TransactionalProducer,
)

BLOCK = "block"
"""A scripted outcome: the call blocks until the test ends (a call stuck inside librdkafka)."""

Outcome = KafkaError | str | None

TIMED_OUT = KafkaError(KafkaError._TIMED_OUT, "timed out", retriable=True)
COORDINATOR_LOADING = KafkaError(KafkaError.COORDINATOR_LOAD_IN_PROGRESS, "loading")
ABORTABLE = KafkaError(KafkaError._MSG_TIMED_OUT, "message timed out", txn_requires_abort=True)
FATAL = KafkaError(KafkaError._FATAL, "broken producer state", fatal=True)
FENCED = KafkaError(KafkaError._FENCED, "fenced by a newer instance", fatal=True)
REFUSED = KafkaError(KafkaError.INVALID_TXN_STATE, "invalid transactional state")


class FakeProducer:
    """The transactional calls of ``confluent_kafka.Producer``, each answering from a script:
    per call name, the outcomes of its next invocations (None: success; a KafkaError: raised as
    librdkafka raises it, in a KafkaException; BLOCK: never returns while the test runs)."""

    def __init__(self, script: dict[str, list[Outcome]], release: threading.Event) -> None:
        self.script = script
        self.release = release
        self.calls: list[str] = []

    def _answer(self, what: str) -> None:
        self.calls.append(what)
        outcomes = self.script.get(what)
        outcome = outcomes.pop(0) if outcomes else None
        if isinstance(outcome, str):  # BLOCK (KafkaError.__eq__ refuses a str)
            self.release.wait()
        elif isinstance(outcome, KafkaError):
            raise KafkaException(outcome)

    def init_transactions(self, timeout: float | None = None) -> None:
        self._answer("init_transactions")

    def begin_transaction(self) -> None:
        self._answer("begin_transaction")

    def send_offsets_to_transaction(self, positions: Any, group: Any,
                                    timeout: float | None = None) -> None:
        self._answer("send_offsets_to_transaction")

    def commit_transaction(self, timeout: float | None = None) -> None:
        self._answer("commit_transaction")

    def abort_transaction(self, timeout: float | None = None) -> None:
        self._answer("abort_transaction")


class Factory:
    """Makes the producers, the n-th with the n-th script (later ones answer every call)."""

    def __init__(self, *scripts: dict[str, list[Outcome]]) -> None:
        self.scripts = list(scripts)
        self.made: list[FakeProducer] = []
        self.release = threading.Event()

    def __call__(self, conf: dict[str, Any]) -> Any:
        script = self.scripts.pop(0) if self.scripts else {}
        self.made.append(FakeProducer(script, self.release))
        return self.made[-1]


@pytest.fixture
def make() -> Iterator[Any]:
    """``make(*scripts, **options)`` -> (TransactionalProducer, its Factory), with a short
    deadline; blocked fake calls are released when the test ends."""
    factories: list[Factory] = []

    def build(*scripts: dict[str, list[Outcome]], deadline: float = 0.5,
              **options: Any) -> tuple[TransactionalProducer, Factory]:
        factory = Factory(*scripts)
        factories.append(factory)
        txn = TransactionalProducer({"transactional.id": "t"}, stage="normalize",
                                    call_timeout=0.1, metrics=Metrics(), outage=Outage("normalize"),
                                    stop=threading.Event(), heartbeat=lambda: None,
                                    factory=factory, **options)
        txn.deadline = deadline  # the real one is the call timeout + 5 s
        return txn, factory

    yield build
    for factory in factories:
        factory.release.set()


OFFSETS = ([TopicPartition("raw", 0, 42)], object())
CALLS = ["send_offsets_to_transaction", "commit_transaction"]


def aborts(txn: TransactionalProducer) -> float:
    value = txn.metrics.registry.get_sample_value("vmevents_transaction_aborts_total",
                                                  {"stage": "normalize"})
    return value or 0.0


def batch(txn: TransactionalProducer) -> None:
    """One batch: begin, then commit with input offsets to send."""
    txn.begin()
    txn.commit(lambda: OFFSETS)


# -- retriable ------------------------------------------------------------------------------


@pytest.mark.parametrize("call", ["init_transactions", *CALLS])
def test_a_retriable_error_is_retried_on_the_same_producer_with_the_outage_said_once(
        make: Any, call: str) -> None:
    txn, factory = make({call: [TIMED_OUT, TIMED_OUT]})
    txn.init()
    batch(txn)
    [producer] = factory.made
    assert producer.calls.count(call) == 3
    assert "abort_transaction" not in producer.calls
    assert (txn.outage.count, txn.outage.active) == (1, False)  # down once, up at the success
    assert (txn.last, txn.replacements, aborts(txn)) == ("committed", 0, 0)


@pytest.mark.parametrize("call", ["init_transactions", *CALLS])
def test_a_moving_coordinator_is_retried_though_not_flagged_retriable_and_is_no_outage(
        make: Any, call: str) -> None:
    assert not COORDINATOR_LOADING.retriable()
    txn, factory = make({call: [COORDINATOR_LOADING]})
    txn.init()
    batch(txn)
    assert factory.made[0].calls.count(call) == 2
    assert txn.outage.count == 0
    assert txn.last == "committed"


def test_a_retriable_abort_is_retried_then_the_batch_is_lost(make: Any) -> None:
    txn, factory = make({"commit_transaction": [ABORTABLE],
                         "abort_transaction": [TIMED_OUT]})
    txn.init()
    with pytest.raises(BatchLost):
        batch(txn)
    assert factory.made[0].calls.count("abort_transaction") == 2
    assert (len(factory.made), txn.last, aborts(txn)) == (1, "aborted", 1)


def test_stop_ends_the_retries(make: Any) -> None:
    txn, factory = make({"commit_transaction": [TIMED_OUT] * 100})
    txn.init()
    txn.begin()
    threading.Timer(0.3, txn.stop.set).start()
    with pytest.raises(Stopping):
        txn.commit(lambda: OFFSETS)
    assert 2 <= factory.made[0].calls.count("commit_transaction") < 100


# -- abortable ------------------------------------------------------------------------------


@pytest.mark.parametrize("error", [ABORTABLE, REFUSED], ids=["txn_requires_abort", "other"])
@pytest.mark.parametrize("call", CALLS)
def test_an_abortable_or_unclassified_error_aborts_and_keeps_the_producer(
        make: Any, call: str, error: KafkaError) -> None:
    txn, factory = make({call: [error]})
    txn.init()
    with pytest.raises(BatchLost, match=error.str()):
        batch(txn)
    [producer] = factory.made
    assert producer.calls[-1] == "abort_transaction"
    assert producer.calls.count(call) == 1  # not retried: the batch is redone from the start
    assert (txn.last, txn.open, txn.replacements, aborts(txn)) == ("aborted", False, 0, 1)
    batch(txn)  # the same producer goes on
    assert txn.last == "committed"


def test_a_batch_failing_before_its_commit_is_aborted(make: Any) -> None:
    txn, factory = make()
    txn.init()
    txn.begin()
    txn.fail(KafkaRuntimeError("produce: queue full", txn_requires_abort=True))
    assert factory.made[0].calls[-1] == "abort_transaction"
    assert (txn.last, len(factory.made)) == ("aborted", 1)


# -- fatal and stuck: replace --------------------------------------------------------------


@pytest.mark.parametrize("call", CALLS)
def test_a_fatal_error_replaces_the_producer_and_the_new_one_fences_the_old(
        make: Any, call: str) -> None:
    txn, factory = make({call: [FATAL]})
    txn.init()
    with pytest.raises(BatchLost):
        batch(txn)
    old, new = factory.made
    assert "abort_transaction" not in old.calls  # a fatal producer cannot abort: fenced instead
    assert new.calls == ["init_transactions"]
    assert txn.producer is new
    assert txn.stuck == []  # released, not kept: its call returned
    assert (txn.last, txn.replacements, aborts(txn)) == ("aborted (producer replaced)", 1, 1)
    batch(txn)
    assert (txn.last, txn.replacements) == ("committed", 0)


@pytest.mark.parametrize("error", [FATAL, ABORTABLE, REFUSED], ids=["fatal", "abortable", "other"])
def test_an_abort_that_fails_replaces_the_producer(make: Any, error: KafkaError) -> None:
    txn, factory = make({"commit_transaction": [ABORTABLE], "abort_transaction": [error]})
    txn.init()
    with pytest.raises(BatchLost):
        batch(txn)
    assert len(factory.made) == 2
    assert txn.last == "aborted (producer replaced)"


def test_a_fatal_begin_replaces_the_producer_and_begins_on_the_new_one(make: Any) -> None:
    txn, factory = make({"begin_transaction": [FATAL]})
    txn.init()
    txn.begin()
    _old, new = factory.made
    assert new.calls == ["init_transactions", "begin_transaction"]
    assert txn.open


def test_a_begin_refused_otherwise_is_raised(make: Any) -> None:
    txn, factory = make({"begin_transaction": [REFUSED]})
    txn.init()
    with pytest.raises(KafkaRuntimeError, match="begin_transaction: invalid transactional"):
        txn.begin()
    assert len(factory.made) == 1


@pytest.mark.parametrize("call", [*CALLS, "abort_transaction"])
def test_a_stuck_call_abandons_its_producer_for_good(make: Any, call: str) -> None:
    script: dict[str, list[Outcome]] = {call: [BLOCK]}
    if call == "abort_transaction":
        script["commit_transaction"] = [ABORTABLE]
    txn, factory = make(script)
    txn.init()
    with pytest.raises(BatchLost):
        batch(txn)
    old, new = factory.made
    assert txn.stuck == [old]  # kept referenced: destroying it would block too
    assert new.calls == ["init_transactions"]
    assert txn.last == "aborted (producer replaced)"


@pytest.mark.parametrize("error", [FATAL, ABORTABLE, REFUSED], ids=["fatal", "abortable", "other"])
def test_an_init_that_fails_otherwise_than_retriably_is_raised(make: Any, error: KafkaError) -> None:
    """Nothing to abort or replace yet: the caller (a stage starting, a re-drive) stops."""
    txn, factory = make({"init_transactions": [error]})
    with pytest.raises(KafkaRuntimeError, match=f"init_transactions: {error.str()}"):
        txn.init()
    assert [p.calls for p in factory.made] == [["init_transactions"]]


def test_a_stuck_init_is_abandoned_and_a_new_producer_inits(make: Any) -> None:
    txn, factory = make({"init_transactions": [BLOCK]})
    txn.init()
    old, new = factory.made
    assert txn.stuck == [old]
    assert new.calls == ["init_transactions"]
    assert txn.outage.count == 0


# -- the limits ----------------------------------------------------------------------------


@pytest.mark.parametrize(("outcome", "limit", "why"), [
    (FATAL, MAX_REPLACEMENTS, f"replaced {MAX_REPLACEMENTS} times without a commit"),
    (BLOCK, MAX_STUCK, f"{MAX_STUCK + 1} client calls stuck inside librdkafka"),
], ids=["replacements", "stuck"])
def test_past_its_limit_the_producer_gives_up_with_a_fatal_error(
        make: Any, outcome: Outcome, limit: int, why: str) -> None:
    txn, factory = make(*({"commit_transaction": [outcome]} for _ in range(limit + 1)))
    txn.init()
    for _ in range(limit):
        with pytest.raises(BatchLost):
            batch(txn)
    with pytest.raises(KafkaRuntimeError, match=why) as info:
        batch(txn)
    assert info.value.fatal
    assert len(factory.made) == limit + 1  # none made past the limit


def test_a_commit_resets_the_replacement_count(make: Any) -> None:
    def fatal() -> list[dict[str, list[Outcome]]]:
        return [{"commit_transaction": [FATAL]} for _ in range(MAX_REPLACEMENTS - 1)]

    txn, _factory = make(*fatal(), {"commit_transaction": [None, FATAL]}, *fatal())
    txn.init()
    for _ in range(MAX_REPLACEMENTS - 1):
        with pytest.raises(BatchLost):
            batch(txn)
    batch(txn)
    assert txn.replacements == 0
    for _ in range(MAX_REPLACEMENTS):
        with pytest.raises(BatchLost):
            batch(txn)
    assert txn.replacements == MAX_REPLACEMENTS


# -- fenced ------------------------------------------------------------------------------------


def test_a_stage_fenced_replaces_its_producer_like_any_fatal_error(make: Any) -> None:
    txn, factory = make({"commit_transaction": [FENCED]})
    txn.init()
    with pytest.raises(BatchLost):
        batch(txn)
    assert len(factory.made) == 2


@pytest.mark.parametrize("call", ["begin_transaction", *CALLS])
def test_a_producer_that_must_not_fight_back_stops_when_fenced(make: Any, call: str) -> None:
    txn, factory = make({call: [FENCED]}, replace_when_fenced=False)
    txn.init()
    with pytest.raises(Fenced, match="took over") as info:
        batch(txn)
    assert (info.value.code, info.value.fatal) == (KafkaError._FENCED, True)
    assert len(factory.made) == 1  # no new producer: it would fence the run that took over
    assert (txn.last, txn.open) == ("fenced", False)


# -- shutdown ------------------------------------------------------------------------------


def test_at_shutdown_an_abort_that_hangs_leaves_the_transaction_to_the_broker(make: Any) -> None:
    txn, _factory = make({"abort_transaction": [BLOCK]})
    txn.init()
    txn.begin()
    txn.abandon_open(0.1)
    assert txn.last.startswith("left open")
    assert not txn.open
