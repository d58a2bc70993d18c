"""Correlator configuration: how long to wait for each operation, and how much state to keep.

Timeouts are in event time: an operation's deadline is the vendor time of its *last*
notification plus its timeout, and it passes when the partition's event-time watermark does
(see :mod:`consumer.correlation.engine`). So a replay of last month's events times out exactly
as the live stream did, offline and online agree, and a quiet partition still times out because
its watermark also advances with processing time. A Scheduled notice with a ``notBefore`` waits
until ``notBefore`` plus the operation's timeout, because maintenance is announced days before it
runs.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from types import MappingProxyType
from typing import Any, Final

from consumer.errors import ConfigError

SECOND: Final = 1_000
MINUTE: Final = 60 * SECOND
HOUR: Final = 60 * MINUTE
DAY: Final = 24 * HOUR

DEFAULT_TIMEOUTS: Final[Mapping[str, int]] = MappingProxyType({
    # Failure reboots and stops take seconds to minutes; half an hour is already an incident.
    "failure.reboot": 30 * MINUTE,
    "instance_failure.reboot": 30 * MINUTE,
    "failure.delete": HOUR,
    "expiration.stop": HOUR,
    "expiration.delete": HOUR,
    "arrearage.stop": HOUR,
    "arrearage.delete": HOUR,
    # Copying disks and moving instances between hosts can take hours.
    "image.create": 6 * HOUR,
    "failure.redeploy": 6 * HOUR,
    "maintenance.reboot": 6 * HOUR,
    "maintenance.redeploy": 6 * HOUR,
    "maintenance.reboot_isolate_error_disk": 6 * HOUR,
    "maintenance.reboot_reinit_error_disk": 6 * HOUR,
    "migration.live_across_ddh": 6 * HOUR,
    # Lifecycle transitions (see transitions.py for the names).
    "lifecycle.create": HOUR,
    "lifecycle.delete": HOUR,
    "lifecycle.start": 30 * MINUTE,
    "lifecycle.stop": 30 * MINUTE,
})

_UNITS: Final = {"ms": 1, "s": SECOND, "m": MINUTE, "h": HOUR, "d": DAY}
_DURATION = re.compile(r"(\d+)(ms|s|m|h|d)?")

# Keys of a spec that set a field of the config rather than an operation's timeout.
_FIELD_KEYS: Final = {
    "default": "default_timeout_ms",
    "notice": "notice_timeout_ms",
    "grace": "orphan_end_grace_ms",
    "done_ttl": "done_ttl_ms",
    "skew": "skew_tolerance_ms",
    "lateness": "allowed_lateness_ms",
    "late_end_horizon": "late_end_horizon_ms",
}


def parse_duration(text: str) -> int:
    """``30m`` -> 1_800_000. Units ms, s, m, h, d; a bare number is milliseconds."""
    m = _DURATION.fullmatch(text.strip())
    if m is None:
        raise ConfigError(f"bad duration {text!r}: expected a number with unit ms, s, m, h or d")
    return int(m.group(1)) * _UNITS[m.group(2) or "ms"]


@dataclass(frozen=True)
class CorrelatorConfig:
    """Immutable settings of one correlator (shared by all partitions of a process).

    - ``timeouts``: operation -> ms to wait after the last notification of a started operation.
    - ``default_timeout_ms``: for operations not in ``timeouts`` (unknown codes too).
    - ``notice_timeout_ms``: how long a Scheduled/Inquiring notice without ``notBefore`` waits for
      the operation to start (Inquiring waits for the user's consent, which can take days).
    - ``orphan_end_grace_ms``: how long an end (Executed) without its start is held in case the
      start arrives late; after that it is emitted with ``start_known=false``.
    - ``skew_tolerance_ms``: an end this much before its start is clock skew (duration clamped to
      0 and flagged); further back, on keys without a vendor event id, it belongs to an earlier
      operation whose start was lost.
    - ``max_pending``: cap on open operations per partition; the one due first is evicted.
    - ``done_ttl_ms`` / ``max_done``: how long (event time) and how many finished operations are
      remembered so late duplicates and stragglers are recognised.
    - ``allowed_lateness_ms``: how far behind the newest event time of its partition a
      notification may arrive and still be applied in event-time order (the watermark's lag).
    - ``late_end_horizon_ms``: how long after a timeout the operation's end is still reported as
      its late completion (``after_timeout``).
    """

    timeouts: Mapping[str, int] = field(default_factory=lambda: DEFAULT_TIMEOUTS)
    default_timeout_ms: int = 6 * HOUR
    notice_timeout_ms: int = 7 * DAY
    orphan_end_grace_ms: int = 10 * MINUTE
    skew_tolerance_ms: int = MINUTE
    max_pending: int = 100_000
    done_ttl_ms: int = DAY
    max_done: int = 200_000
    allowed_lateness_ms: int = 10 * MINUTE
    late_end_horizon_ms: int = 7 * DAY

    def __post_init__(self) -> None:
        if self.max_pending < 1 or self.max_done < 1:
            raise ConfigError("max_pending and max_done must be at least 1")
        for name in ("default_timeout_ms", "notice_timeout_ms", "orphan_end_grace_ms",
                     "skew_tolerance_ms", "done_ttl_ms", "allowed_lateness_ms",
                     "late_end_horizon_ms"):
            if getattr(self, name) < 0:
                raise ConfigError(f"{name} must not be negative")
        if any(v < 0 for v in self.timeouts.values()):
            raise ConfigError("operation timeouts must not be negative")

    def timeout_for(self, operation: str) -> int:
        return self.timeouts.get(operation, self.default_timeout_ms)

    @classmethod
    def from_spec(cls, spec: str, **overrides: Any) -> CorrelatorConfig:
        """Parse ``failure.reboot=30m,maintenance.reboot=72h`` over the defaults.

        Besides operation names, the keys ``default``, ``notice``, ``grace``, ``done_ttl``,
        ``skew``, ``lateness`` and ``late_end_horizon`` set the matching ``*_ms`` fields.
        ``overrides`` are passed to the constructor (``max_pending=...``). An empty spec gives
        the defaults.
        """
        timeouts = dict(DEFAULT_TIMEOUTS)
        fields: dict[str, Any] = {}
        for raw in spec.split(","):
            item = raw.strip()
            if not item:
                continue
            name, sep, value = item.partition("=")
            name = name.strip()
            if not sep or not name:
                raise ConfigError(f"bad timeout {item!r}: expected operation=duration")
            ms = parse_duration(value)
            if name in _FIELD_KEYS:
                fields[_FIELD_KEYS[name]] = ms
            else:
                timeouts[name] = ms
        return replace(cls(timeouts=MappingProxyType(timeouts), **fields), **overrides)
