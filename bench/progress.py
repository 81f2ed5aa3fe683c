"""A dependency-free progress line on stderr.

On a terminal it redraws one line (``\\r``); otherwise (CI logs, pipes) it prints one line per finished step so
logs stay readable.
"""

from __future__ import annotations

import sys
import time
from typing import TextIO


class Progress:
    def __init__(self, steps: int, *, stream: TextIO | None = None, width: int = 24) -> None:
        self.steps = max(steps, 1)
        self.done_steps = 0
        self.stream = stream if stream is not None else sys.stderr
        self.width = width
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self.started = time.monotonic()
        self.label = ""
        self.count = 0
        self.total = 0

    def step(self, label: str, total: int) -> None:
        """Start a step (one contender on one workload) with ``total`` requests."""
        self.label, self.count, self.total = label, 0, total
        self._draw()

    def advance(self, n: int = 1) -> None:
        self.count += n
        if self.tty:
            self._draw()

    def finish_step(self, note: str = "") -> None:
        self.done_steps += 1
        if self.tty:
            self._draw(end="\n" if note else "")
        if note or not self.tty:
            self.stream.write(f"  {self.label}: {note or 'done'}\n")
            self.stream.flush()

    def message(self, text: str) -> None:
        if self.tty:
            self.stream.write("\r\033[K")
        self.stream.write(text + "\n")
        self.stream.flush()

    def _draw(self, end: str = "") -> None:
        if not self.tty:
            return
        frac = self.done_steps / self.steps
        filled = int(frac * self.width)
        bar = "█" * filled + "░" * (self.width - filled)
        elapsed = int(time.monotonic() - self.started)
        line = (
            f"\r\033[K{bar} {self.done_steps}/{self.steps} {self.label} "
            f"{self.count}/{self.total} req  {elapsed // 60}:{elapsed % 60:02d}"
        )
        self.stream.write(line + end)
        self.stream.flush()
