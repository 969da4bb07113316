"""A worker command for the local backend's spare tests: no Redis, no model.

As a spare (PAGEFLEET_SPARE set) it writes `<dir>/<worker_id>.spare`, waits for its start line
on stdin and writes the line to `<dir>/<worker_id>.started` (end of file: exits 0). Started
directly it writes `<dir>/<worker_id>.started` with its PAGEFLEET_SPAWNED_AT. Either way it then
runs until SIGTERM.
"""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path

from pagefleet.platform.protocol.phases import SPARE_ENV, SPAWNED_AT_ENV


def main() -> int:
    worker_id, folder = sys.argv[1], Path(sys.argv[2])
    stopped = []
    signal.signal(signal.SIGTERM, lambda *_: stopped.append(True))
    if os.environ.get(SPARE_ENV):
        (folder / f"{worker_id}.spare").write_text("waiting")
        line = sys.stdin.readline()
        if not line:
            return 0
        (folder / f"{worker_id}.started").write_text(line)
    else:
        (folder / f"{worker_id}.started").write_text(os.environ.get(SPAWNED_AT_ENV, ""))
    while not stopped:
        signal.pause()
    return 0


if __name__ == "__main__":
    sys.exit(main())
