"""Named exceptions under one root, so callers can catch precisely and the DLQ can say why."""

from __future__ import annotations


class VmeventsError(Exception):
    """Root of every error this package raises on purpose."""


class ConfigError(VmeventsError):
    """Bad configuration: the process stops at start with this message on one line."""


class InputError(VmeventsError):
    """A file or stream named on the command line cannot be read (not a configuration error)."""


class RejectedEvent(VmeventsError):
    """A raw record that cannot be normalized; it goes to the DLQ with ``reason``."""

    reason: str = "invalid_event"

    def __init__(self, message: str, *, reason: str | None = None) -> None:
        super().__init__(message)
        if reason is not None:
            self.reason = reason


class MalformedJson(RejectedEvent):
    reason = "malformed_json"


class NotAnObject(RejectedEvent):
    reason = "not_an_object"


class UnknownVendor(RejectedEvent):
    reason = "unknown_vendor"


class InvalidEvent(RejectedEvent):
    reason = "invalid_event"


class PayloadTooLarge(RejectedEvent):
    reason = "too_large"


class InvalidTime(RejectedEvent):
    """A time no Avro reader could decode, or no vendor could mean (see the normalizer's range)."""

    reason = "invalid_time"


class OutOfScope(RejectedEvent):
    """A valid event of a vendor we know that is not about an instance (an RDS Health event, a
    Cloud Storage audit entry): skipped and counted, never sent to the DLQ. A RejectedEvent so
    that a caller that does not know it still reports it rather than losing it."""

    reason = "out_of_scope"

    def __init__(self, message: str, *, vendor: str) -> None:
        super().__init__(message)
        self.vendor = vendor


class KafkaRuntimeError(VmeventsError):
    """A Kafka error seen by the runtime, with librdkafka's code and whether a retry can help."""

    def __init__(self, message: str, *, code: int | None = None, retriable: bool = False,
                 fatal: bool = False, txn_requires_abort: bool = False) -> None:
        super().__init__(message)
        self.code = code
        self.retriable = retriable
        self.fatal = fatal
        self.txn_requires_abort = txn_requires_abort


class TransientError(VmeventsError):
    """A dependency is unavailable for now (the schema registry is down or answers 5xx).

    Not the record's fault: the stage aborts the batch, backs off with readiness false, and
    processes the same records again, instead of dead-lettering them or exiting.
    """


class RegistryUnavailable(TransientError, KafkaRuntimeError):
    """The schema registry did not answer: retried inside the loop, a one-line error at start."""
