"""Process helpers shared by the tests that check no child outlives its trial."""

from __future__ import annotations

import time

import psutil


def gone(pid: int, within_s: float = 5.0) -> bool:
    """Whether ``pid`` has exited (or is a zombie waiting to be reaped) within ``within_s``."""
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        try:
            if psutil.Process(pid).status() == psutil.STATUS_ZOMBIE:
                return True
        except psutil.NoSuchProcess:
            return True
        time.sleep(0.05)
    return False
