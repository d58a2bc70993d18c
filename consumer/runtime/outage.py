"""Whether the stage can reach the brokers, said once when it changes.

A broker outage is an ordinary event, not an error per failed call: the stage logs one line when
the brokers become unreachable and one when they are back (with how long they were gone), and
readiness is false in between. Clients keep retrying underneath; their own errors during the
outage go to debug.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

import structlog

log = structlog.get_logger(__name__)


class Outage:
    """Tracks one outage at a time; ``on_change`` runs when the state flips (readiness)."""

    def __init__(self, stage: str, on_change: Callable[[], None] = lambda: None) -> None:
        self.stage = stage
        self.on_change = on_change
        self.since: float | None = None
        self.count = 0
        self.last_contact = time.monotonic()  # when a broker last answered a request of ours

    def contact(self) -> None:
        """A broker answered: evidence that it is reachable (ends an outage)."""
        self.last_contact = time.monotonic()
        self.up()

    @property
    def active(self) -> bool:
        return self.since is not None

    def down(self, reason: str) -> None:
        if self.since is not None:
            log.debug("broker still unreachable", stage=self.stage, reason=reason)
            return
        self.since = time.monotonic()
        self.count += 1
        log.warning("broker unreachable: processing paused, retrying until it is back",
                    stage=self.stage, reason=reason)
        self.on_change()

    def up(self) -> None:
        if self.since is None:
            return
        gone = time.monotonic() - self.since
        self.since = None
        log.info("broker reachable again: processing resumes", stage=self.stage,
                 outage_seconds=round(gone, 1))
        self.on_change()


CONNECTION_FAILURES = ("Connection refused", "Disconnected", "Connect to ", "brokers are down",
                       "concurrent operation on the same transaction")


class _ConnectionFailuresToDebug(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno > logging.DEBUG and any(
                text in record.getMessage() for text in CONNECTION_FAILURES):
            record.levelno, record.levelname = logging.DEBUG, "DEBUG"
            return logging.getLogger(record.name).isEnabledFor(logging.DEBUG)
        return True


def quiet_connection_failures(logger: logging.Logger) -> logging.Logger:
    """librdkafka's own line per failed connection goes to debug: :class:`Outage` says it once.

    Other librdkafka lines (authentication, TLS, configuration) keep their level.
    """
    if not any(isinstance(f, _ConnectionFailuresToDebug) for f in logger.filters):
        logger.addFilter(_ConnectionFailuresToDebug())
    return logger
