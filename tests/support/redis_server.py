"""Private `redis-server`s for integration tests: a throw-away one on a free port in a temporary
directory, and a restartable one with AOF for outage tests.

The servers are started by the platform's helpers (`pagefleet.platform.processes`), so tests
run Redis the way `pagefleet up` does; `free_port` is re-exported for the many tests that start
servers.
"""

from __future__ import annotations

import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager

from pagefleet.platform.processes import redis_server as platform_redis
from pagefleet.platform.processes.ports import free_port

__all__ = ["RestartableRedis", "free_port", "redis_server"]


@contextmanager
def redis_server() -> Iterator[str]:
    """Start redis-server without persistence, yield its URL, stop it afterwards."""
    with tempfile.TemporaryDirectory(prefix="pf-redis-") as workdir, \
            platform_redis.redis_server(workdir) as url:
        yield url


class RestartableRedis:
    """A redis-server with AOF on (`appendfsync everysec`) that a test can kill -9 and start
    again on the same port and data directory, as a crashed-and-restarted Redis would be."""

    def __init__(self, workdir: str) -> None:
        self.workdir = workdir
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.proc: subprocess.Popen | None = None

    def start(self, timeout_s: float = 20.0) -> None:
        self.proc = platform_redis.start_redis_server(self.port, self.workdir, appendonly=True)
        platform_redis.wait_for_ping(self.url, self.proc, timeout_s)

    def kill(self) -> None:
        """SIGKILL: no shutdown, no final AOF rewrite, like a crash of the process."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=10)
