"""Waiting in tests without asserting time: poll a condition; the deadline only turns a hang into a failure."""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest


def wait_until(condition: Callable[[], bool], what: str, timeout_s: float = 60.0, poll_s: float = 0.002) -> None:
    """Poll ``condition`` every ``poll_s``; the timeout turns a hang into a failure, it is never what is checked."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"never got there: {what}")
        time.sleep(poll_s)
