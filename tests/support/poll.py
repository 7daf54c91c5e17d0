"""Polling for a condition that another process brings about."""

import time
from typing import Callable

import pytest


def wait_for(predicate: Callable[[], object], timeout: float = 60.0, interval: float = 0.2,
             what: str = "condition") -> object:
    """Poll ``predicate`` until it returns something truthy; fail the test on timeout."""
    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if result:
            return result
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(interval)
