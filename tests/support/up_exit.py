"""Waiting for `pagefleet up` to stop, with its log in the failure when it does not."""

from __future__ import annotations

import subprocess
from pathlib import Path

# `up` stops the batch worker (30 s), the controller (its 30 s worker drain + 30 s) and the
# gateway (30 s) before Redis: 120 s is its designed worst case, so a test allows more.
UP_STOP_TIMEOUT_S = 200.0


def wait_for_exit(up: subprocess.Popen, log_path: Path) -> int:
    """`up`'s exit status; a clear failure showing the end of its log after the timeout."""
    try:
        return up.wait(timeout=UP_STOP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        raise AssertionError(f"`pagefleet up` did not stop within {UP_STOP_TIMEOUT_S:.0f} s; "
                             f"its log ends:\n{log_path.read_text()[-6000:]}") from None
