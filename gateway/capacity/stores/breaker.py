"""A circuit breaker for the limits' Redis, one per Redis URL and worker process (DESIGN.md 2.10).

A Redis that hangs instead of refusing would make every limited request wait the store's timeout.
After one failure to reach it (no connection, lost, or no answer in time) the breaker opens: for
`VMX_CAPACITY_BREAKER_SECONDS` no command is sent and the caller applies the fail-open /
fail-closed rule at once. Then one command is let through as a probe (the others keep failing
fast while it runs): if Redis answers, the breaker closes; if not, it opens for another window.

Invariants:
- Only outages open it. An error reply (a script refused, OOM) is an answer: Redis is there.
- A probe that ends without an outcome (its caller was cancelled) hands the probe to the next call.
- Thread-safe (a lock around a few assignments), shared by every event loop of the process.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from gateway.observability import metrics


class CircuitBreaker:
    def __init__(self, *, open_seconds: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.open_seconds = open_seconds
        self._clock = clock
        self._lock = threading.Lock()
        self._open_until: float | None = None
        """None while closed; else when the next probe may go."""
        self._probing = False

    @property
    def is_open(self) -> bool:
        """Redis failed and has not answered since (the window may have passed, awaiting a probe)."""
        return self._open_until is not None

    def retry_in(self) -> float:
        """Seconds until the next probe may go (0 when closed or due)."""
        until = self._open_until
        return 0.0 if until is None else max(0.0, until - self._clock())

    def allow(self) -> bool:
        """Whether a command may be sent now. True when closed; when open, True for one caller
        (the probe) once the window has passed. A caller let through must report its outcome
        with `succeeded`, `failed` or `abandoned`."""
        if self._open_until is None:  # the common case: no lock
            return True
        with self._lock:
            if self._open_until is None:
                return True
            if self._probing or self._clock() < self._open_until:
                return False
            self._probing = True
            return True

    def succeeded(self) -> None:
        if self._open_until is None:
            return
        with self._lock:
            self._open_until = None
            self._probing = False
        metrics.capacity_breaker_changed(open_now=False)

    def failed(self) -> None:
        if self.open_seconds <= 0:
            return
        with self._lock:
            opened = self._open_until is None
            self._open_until = self._clock() + self.open_seconds
            self._probing = False
        if opened:
            metrics.capacity_breaker_changed(open_now=True)

    def abandoned(self) -> None:
        """The command's outcome is unknown (cancelled): the next call may probe."""
        if self._probing:
            with self._lock:
                self._probing = False


_breakers: dict[str, CircuitBreaker] = {}
_breakers_lock = threading.Lock()


def breaker_for(url: str, *, open_seconds: float) -> CircuitBreaker:
    """The process's breaker for the Redis at `url`."""
    breaker = _breakers.get(url)
    if breaker is None:
        with _breakers_lock:
            breaker = _breakers.get(url)
            if breaker is None:
                breaker = _breakers[url] = CircuitBreaker(open_seconds=open_seconds)
    breaker.open_seconds = open_seconds
    return breaker
