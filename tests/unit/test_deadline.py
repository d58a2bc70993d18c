import threading

import pytest

from consumer.errors import KafkaRuntimeError
from consumer.runtime.deadline import CallOverran, Stopping, call_with_deadline


def test_a_call_that_returns_in_time_gives_its_result_or_its_exception() -> None:
    assert call_with_deadline(lambda: 42, 5, "answer") == 42

    def fails() -> None:
        raise ValueError("bad")

    with pytest.raises(ValueError, match="bad"):
        call_with_deadline(fails, 5, "failing")


def test_a_call_that_never_returns_is_given_up_at_its_deadline() -> None:
    release = threading.Event()
    try:
        with pytest.raises(CallOverran, match="commit_transaction did not return within 0s") as info:
            call_with_deadline(release.wait, 0.2, "commit_transaction")
        assert isinstance(info.value, KafkaRuntimeError)  # the CLI reports it in one line
        stuck = [t for t in threading.enumerate() if t.name == "kafka-call commit_transaction"]
        assert stuck
        assert all(t.daemon for t in stuck)
    finally:
        release.set()


def test_stop_gives_a_call_a_short_grace_then_abandons_it() -> None:
    stop, release = threading.Event(), threading.Event()
    stop.set()
    assert call_with_deadline(lambda: release.wait(0.3), 60, "quick", stop) is False
    try:
        with pytest.raises(Stopping, match="commit_transaction"):
            call_with_deadline(release.wait, 60, "commit_transaction", stop)
    finally:
        release.set()
