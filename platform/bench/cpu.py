"""Where the CPU went during a serving benchmark: CPU seconds per process over the load.

On a GPU host the platform's cost is host CPU: the client parsing chunks, the gateway turning
Redis entries into server-sent events, redis-server, and the worker's event loop sharing one
GIL with the engine's scheduling thread. A process near 1.0 cores while the others idle is the
bottleneck (a single-threaded Python process cannot use more than about one core), so the
overhead run prints these next to its latencies instead of leaving them to guesswork.
"""

from __future__ import annotations

import os
import resource
import time
from dataclasses import dataclass, field


def process_cpu_s(pid: int) -> float | None:
    """User + system CPU seconds of `pid` and all its threads (None once it is gone, or where
    /proc is not Linux's)."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    # After the command name: state is field 3, utime and stime are fields 14 and 15.
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def child_pids(pid: int) -> list[int]:
    """The direct children of `pid` (a worker's engine core), from every thread's list (Linux
    3.5+); empty where /proc does not say."""
    children: list[int] = []
    try:
        for task in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{task}/children") as listing:
                children.extend(int(child) for child in listing.read().split())
    except OSError:
        return children
    return children


def own_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


@dataclass(slots=True)
class CpuMeter:
    """CPU used per named process between `start()` and `stop()`, in cores (CPU s / wall s).
    `pids` names other processes; this process is measured as `self_name`."""

    pids: dict[str, int]
    self_name: str = "client"
    cores: dict[str, float] = field(default_factory=dict)
    _start: dict[str, float | None] = field(default_factory=dict)
    _started_at: float = 0.0

    def _read(self) -> dict[str, float | None]:
        readings: dict[str, float | None] = {self.self_name: own_cpu_s()}
        readings.update((name, process_cpu_s(pid)) for name, pid in self.pids.items())
        return readings

    def start(self) -> None:
        self._start = self._read()
        self._started_at = time.perf_counter()

    def stop(self) -> dict[str, float]:
        wall = max(time.perf_counter() - self._started_at, 1e-9)
        end = self._read()
        self.cores = {name: (end[name] - begin) / wall for name, begin in self._start.items()
                      if begin is not None and end.get(name) is not None}
        return self.cores


def format_cores(title: str, cores: dict[str, float]) -> str:
    parts = ", ".join(f"{name} {value:.2f}" for name, value in cores.items())
    return f"CPU during the load, {title} (cores): {parts}"
