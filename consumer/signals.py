"""SIGTERM and SIGINT received on a thread of their own, with a bound on shutdown.

A Python signal handler runs on the main thread between bytecodes, so it waits for any C call
in progress: a main thread stuck inside librdkafka never sees SIGTERM. Instead both signals are
blocked in every thread (the mask is inherited, so this must happen before any other thread,
librdkafka's included, starts) and one thread receives them with ``sigwait``: it sets ``stop``,
and if the process has not exited ``timeout`` seconds later, logs that and exits at once. A
second signal exits at once too (Ctrl-C twice).
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading

import structlog

log = structlog.get_logger(__name__)

SIGNALS = frozenset({signal.SIGTERM, signal.SIGINT})
FORCED_EXIT_CODE = 1


def receive_signals(stop: threading.Event, timeout: float) -> threading.Thread:
    """Block SIGTERM/SIGINT here and in every later thread; a daemon thread receives them."""
    signal.pthread_sigmask(signal.SIG_BLOCK, SIGNALS)
    thread = threading.Thread(target=_receive, args=(stop, timeout), name="signals", daemon=True)
    thread.start()
    return thread


def _receive(stop: threading.Event, timeout: float) -> None:
    signum = signal.sigwait(SIGNALS)
    log.info("signal received: finishing or aborting the current batch, then leaving the group",
             signal=signal.Signals(signum).name, exit_within_seconds=timeout)
    stop.set()
    second = signal.sigtimedwait(SIGNALS, timeout)
    if second is not None:
        log.warning("second signal: exiting now", signal=signal.Signals(second.si_signo).name)
    else:
        log.error("shutdown did not finish in time: exiting now", timeout_seconds=timeout)
    force_exit(FORCED_EXIT_CODE)


def force_exit(code: int) -> None:
    """``os._exit`` after flushing what was logged: no interpreter teardown that could block."""
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):
            stream.flush()
    os._exit(code)
