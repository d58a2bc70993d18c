"""A small progress line on stderr for long local work (replay, restore, benchmarks)."""

from __future__ import annotations

import sys
import time


class Progress:
    def __init__(self, label: str, total: int | None = None, every: float = 0.5) -> None:
        self.label = label
        self.total = total
        self.done = 0
        self.every = every
        self.started = time.monotonic()
        self._shown = 0.0
        self.enabled = sys.stderr.isatty()

    def advance(self, n: int = 1) -> None:
        self.done += n
        now = time.monotonic()
        if self.enabled and now - self._shown >= self.every:
            self._shown = now
            self._render(now)

    def _render(self, now: float) -> None:
        elapsed = max(now - self.started, 1e-9)
        rate = self.done / elapsed
        if self.total:
            pct = 100.0 * self.done / self.total
            width = 30
            filled = int(width * self.done / self.total)
            bar = "#" * filled + "-" * (width - filled)
            line = f"\r{self.label} [{bar}] {self.done}/{self.total} {pct:5.1f}% {rate:,.0f}/s"
        else:
            line = f"\r{self.label} {self.done} {rate:,.0f}/s"
        sys.stderr.write(line)
        sys.stderr.flush()

    def close(self) -> None:
        now = time.monotonic()
        if self.enabled:
            self._render(now)
            sys.stderr.write("\n")
        elapsed = now - self.started
        sys.stderr.write(f"{self.label}: {self.done} in {elapsed:.2f}s\n")
        sys.stderr.flush()
