"""A private redis-server on a free loopback port: `pagefleet up`'s, the benchmarks' and the tests'.

`appendonly=True` is how `pagefleet up` runs it: an append-only file fsynced every second in
`data_dir`, so a restart of `up` (or a crash of the machine, minus the last second) keeps the
queues and job records. Tests and benchmarks run it without persistence in a temporary folder.
"""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import redis

from pagefleet.platform.processes.children import start_child, stop_process
from pagefleet.platform.processes.ports import free_port


class RedisServerError(RuntimeError):
    """redis-server is missing or did not answer PING in time."""


def start_redis_server(port: int, data_dir: str | Path, *, appendonly: bool = False) -> subprocess.Popen:
    """redis-server on `127.0.0.1:port` in `data_dir`; `wait_for_ping` says when it serves."""
    binary = shutil.which("redis-server")
    if binary is None:
        raise RedisServerError("redis-server is not installed (apt-get install redis-server)")
    persistence = (["--appendonly", "yes", "--appendfsync", "everysec"] if appendonly
                   else ["--appendonly", "no"])
    return start_child([binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                        *persistence, "--dir", str(data_dir)],
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


@contextlib.contextmanager
def redis_server(data_dir: str | Path, *, appendonly: bool = False,
                 timeout_s: float = 20.0) -> Iterator[str]:
    """Start redis-server in `data_dir`, wait until it answers PING, yield its URL, SIGTERM it
    on exit (with AOF on, redis-server fsyncs the file before it exits)."""
    port = free_port()
    proc = start_redis_server(port, data_dir, appendonly=appendonly)
    url = f"redis://127.0.0.1:{port}/0"
    try:
        wait_for_ping(url, proc, timeout_s)
        yield url
    finally:
        stop_process(proc, timeout_s=10.0)


def wait_for_ping(url: str, proc: subprocess.Popen, timeout_s: float = 20.0) -> None:
    """Return once the server answers PING, which it does only after loading its AOF."""
    client = redis.Redis.from_url(url)
    deadline = time.monotonic() + timeout_s
    try:
        while True:
            try:
                client.ping()
                return
            except (redis.ConnectionError, redis.BusyLoadingError):
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RedisServerError(f"redis-server did not start at {url}") from None
                time.sleep(0.02)  # polling for readiness with a deadline
    finally:
        client.close()
