"""Deadlines for client calls that can block past their own timeout.

librdkafka's ``send_offsets_to_transaction`` and ``commit_transaction`` can wait forever in
``cnd_wait`` although they were given a timeout (librdkafka #5456, #5511, open in 2.16). The
stage therefore never makes such a call on its own thread: the call runs in a worker thread and
the caller waits for it with a deadline. A call that overruns is treated as lost; its worker stays
blocked (a thread inside C cannot be cancelled) and the client it holds must be abandoned.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import TypeVar

from consumer.errors import KafkaRuntimeError

T = TypeVar("T")

MARGIN_SECONDS = 5.0
"""How long past the timeout given to the call itself it may take before it counts as lost."""


STOP_CHECK_SECONDS = 0.1
STOP_GRACE_SECONDS = 2.0


class CallOverran(KafkaRuntimeError):
    """A client call did not return by its deadline; the client it ran on cannot be trusted."""


class Stopping(Exception):
    """``stop`` was set while waiting (for a call, or for the broker): shut down now."""


def call_with_deadline(fn: Callable[[], T], deadline: float, what: str,
                       stop: threading.Event | None = None) -> T:
    """Run ``fn()`` in a daemon thread; its result, its exception, or CallOverran after ``deadline`` s.

    With ``stop``, setting it shortens the wait to :data:`STOP_GRACE_SECONDS`, then ends it with
    Stopping (the call goes on, abandoned): a healthy commit still completes, and a shutdown
    never waits long for a call the broker may not answer.

    A thread per call (tens of microseconds, a few per batch of thousands of records) rather than a
    pool: a pool's worker stuck in C would hold the pool, and pool threads are joined at exit.
    """
    outcome: list[T] = []
    failure: list[BaseException] = []
    done = threading.Event()

    def target() -> None:
        try:
            outcome.append(fn())
        except BaseException as exc:  # handed to the caller's thread below
            failure.append(exc)
        finally:
            done.set()

    threading.Thread(target=target, name=f"kafka-call {what}", daemon=True).start()
    if stop is None:
        finished = done.wait(deadline)
    else:
        end = time.monotonic() + deadline
        while not (finished := done.wait(min(STOP_CHECK_SECONDS, max(end - time.monotonic(), 0)))):
            now = time.monotonic()
            if stop.is_set():
                if end - now > STOP_GRACE_SECONDS:
                    end = now + STOP_GRACE_SECONDS  # a healthy commit still finishes
                elif now >= end:
                    raise Stopping(what)
            if now >= end:
                break
    if not finished:
        raise CallOverran(f"{what} did not return within {deadline:.0f}s")
    if failure:
        raise failure[0]
    return outcome[0]
