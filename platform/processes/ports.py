"""Loopback ports: pick a free one, refuse a taken one early, wait until one answers."""

from __future__ import annotations

import socket
import subprocess

from pagefleet.platform.processes.children import wait_until


def free_port() -> int:
    """A port the kernel just handed out; another process may still take it before we bind.

    Fine for a server we start next (it fails loudly if the port went), not for a rendezvous
    between processes that must agree on it (use a file there).
    """
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def check_port_free(host: str, port: int) -> None:
    """Raise `SystemExit` with a clear message if `host:port` cannot be bound.

    SO_REUSEADDR, as uvicorn and redis-server set it, so a socket in TIME_WAIT from a run that
    just ended does not count as taken.
    """
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            raise SystemExit(f"port {port} on {host} is taken ({exc.strerror}): stop what listens "
                             f"there or choose another with --port") from None


def port_is_open(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket() as sock:
        return sock.connect_ex((host, port)) == 0


def wait_for_port(port: int, proc: subprocess.Popen, what: str, timeout_s: float = 60.0) -> None:
    """Return once `port` accepts connections; `SystemExit` if `proc` exits or time runs out."""
    wait_until(lambda: port_is_open(port), proc, lambda: f"{what} did not start on port {port}",
               timeout_s)
