"""The container's memory limit, as the kernel enforces it (cgroup v2, else v1).

The correlate stage sizes its state budget from this limit, so a burst of pending operations
evicts instead of getting the pod OOM-killed. Kubernetes also passes the limit in through the
Downward API (the chart's ``VMEVENTS_MEMORY_LIMIT_BYTES``), which wins; the cgroup is the fallback
for a container started some other way. Reads two small files and imports nothing from Kafka.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

CGROUP_ROOT = Path("/sys/fs/cgroup")

UNLIMITED_FROM = 1 << 60
"""Limits at or above this (1 EiB) mean none: cgroup v1 writes "no limit" as a page-rounded
``2**63 - 1`` (9223372036854771712), not as a word."""


@dataclass(frozen=True)
class MemoryLimit:
    """A memory limit in bytes and where it was read (for the start log)."""

    bytes: int
    source: str


def cgroup_memory_limit(root: Path = CGROUP_ROOT) -> MemoryLimit | None:
    """The limit of this process's memory cgroup; None when there is none or it is unlimited.

    cgroup v2 (``memory.max``, ``max`` when unlimited) is tried first, then v1
    (``memory/memory.limit_in_bytes``). A file that is missing or unreadable is skipped; in a
    container both are the container's own cgroup (cgroup namespaces).
    """
    candidates = (("cgroup v2", root / "memory.max"),
                  ("cgroup v1", root / "memory" / "memory.limit_in_bytes"))
    for version, path in candidates:
        try:
            text = path.read_text().strip()
        except OSError:
            continue
        if text == "max":
            return None
        try:
            value = int(text)
        except ValueError:
            continue
        if value <= 0 or value >= UNLIMITED_FROM:
            return None
        return MemoryLimit(value, f"{version} {path}")
    return None
