"""Log lines for failures that repeat: one line per interval and kind, with a count.

A database outage or a broken upstream fails every request or every flush; a traceback for each
would fill the disk and bury the first, useful one. `ThrottledLog` writes the first occurrence of
a kind in full, then at most one line per `interval` saying how many were suppressed.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

MAX_KINDS = 10_000
"""Kinds are often per client address: bound the table so a flood cannot grow it forever."""


class ThrottledLog:
    def __init__(self, logger: logging.Logger, *, interval: float) -> None:
        self.logger = logger
        self.interval = interval
        self._lock = threading.Lock()
        self._state: dict[str, tuple[float, int]] = {}
        """kind → (when it was last written, occurrences suppressed since)."""

    def _due(self, kind: str) -> int | None:
        """Suppressed count when a line for `kind` is due now, else None (and count this one)."""
        now = time.monotonic()
        with self._lock:
            last, suppressed = self._state.get(kind, (-self.interval, 0))
            if now - last < self.interval:
                self._state[kind] = (last, suppressed + 1)
                return None
            if len(self._state) >= MAX_KINDS and kind not in self._state:
                self._state.clear()
            self._state[kind] = (now, 0)
            return suppressed

    def _emit(self, level: int, kind: str, message: str, args: tuple[Any, ...], *, traceback: bool) -> bool:
        suppressed = self._due(kind)
        if suppressed is None:
            return False
        if suppressed:
            message += " (%d more like this in the last %g s)"
            args = (*args, suppressed, self.interval)
        # The full traceback only the first time: afterwards the count says it goes on.
        self.logger.log(level, message, *args, exc_info=traceback and suppressed == 0)
        return True

    def exception(self, kind: str, message: str, *args: Any) -> bool:
        """Log the current exception for `kind` unless one was logged within the interval."""
        return self._emit(logging.ERROR, kind, message, args, traceback=True)

    def warning(self, kind: str, message: str, *args: Any) -> bool:
        return self._emit(logging.WARNING, kind, message, args, traceback=False)
