"""A real `pagefleet batch-worker` (Celery) process for tests, killable with SIGKILL and
restartable with the same arguments."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class CeleryWorker:
    redis_url: str
    registry: Path
    files_dir: Path
    log_path: Path
    flags: tuple[str, ...] = ()  # more `batch-worker` flags (settings)
    proc: subprocess.Popen | None = field(default=None)

    def start(self) -> CeleryWorker:
        command = [sys.executable, "-m", "pagefleet.platform.cli", "batch-worker",
                   "--redis-url", self.redis_url, "--registry", str(self.registry),
                   "--files-dir", str(self.files_dir), "--concurrency", "1",
                   "--log-level", "warning", *self.flags]
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT,
                                         env={**os.environ, "OMP_NUM_THREADS": "1"})
        return self

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-4000:] if self.log_path.exists() else ""

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
