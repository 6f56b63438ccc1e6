"""Progress of long work, shown on a terminal and never in a pipe or a file."""

from __future__ import annotations

import sys
import time
from typing import TextIO


class Progress:
    """A count of sessions done, redrawn on one line of ``stream`` at most 5 times a second.

    Nothing is written unless ``stream`` is a terminal, so that a pipe or a log gets only
    what the command reports.
    """

    INTERVAL = 0.2

    def __init__(self, verb: str, stream: TextIO | None = None) -> None:
        self.verb = verb
        self.stream = sys.stderr if stream is None else stream
        self.shown = self.stream.isatty()
        self.count = 0
        self.started = time.monotonic()
        self.drawn = self.started

    def step(self, count: int = 1) -> None:
        """Count ``count`` more sessions done."""
        self.count += count
        if self.shown:
            now = time.monotonic()
            if now - self.drawn >= self.INTERVAL:
                self.drawn = now
                self._draw(now)

    def done(self) -> None:
        """Draw the final count and end the line."""
        if self.shown:
            self._draw(time.monotonic())
            self.stream.write("\n")
            self.stream.flush()

    def _draw(self, now: float) -> None:
        elapsed = max(now - self.started, 1e-9)
        rate = self.count / elapsed
        self.stream.write(
            f"\r{self.verb} {self.count:,} sessions ({rate:,.0f}/s, {elapsed:.1f} s)\x1b[K"
        )
        self.stream.flush()
