"""Waiting on a condition in tests (never a bare sleep as synchronisation)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any


def wait_until(condition: Callable[[], Any], timeout: float, what: str,
               every: float = 0.2) -> Any:
    """Poll ``condition`` until it returns something true and return that; after
    ``timeout`` seconds fail naming ``what`` and the last value seen."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what} "
                                 f"(last: {value!r})")
        time.sleep(every)
