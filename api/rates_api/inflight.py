"""The requests a worker is running, so that liveness can tell a hung thread from a busy one."""

import itertools
import threading
import time


class InFlight:
    """Start times of the requests in progress (from before_request to teardown)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._started: dict[int, float] = {}
        self._tokens = itertools.count()

    def start(self) -> int:
        token = next(self._tokens)
        with self._lock:
            self._started[token] = time.monotonic()
        return token

    def end(self, token: int | None) -> None:
        with self._lock:
            self._started.pop(token, None)

    def count(self) -> int:
        with self._lock:
            return len(self._started)

    def older_than(self, age_s: float) -> int:
        """How many requests in progress have run for more than ``age_s`` seconds."""
        since = time.monotonic() - age_s
        with self._lock:
            return sum(1 for started in self._started.values() if started < since)

    def oldest_age(self) -> float:
        """Seconds the oldest request in progress has run; 0 with none."""
        with self._lock:
            oldest = min(self._started.values(), default=None)
        return 0.0 if oldest is None else time.monotonic() - oldest
