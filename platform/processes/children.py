"""Child processes that die with their parent, and their orderly stop.

A supervisor that is killed with SIGKILL runs no cleanup, so its children must notice on their
own: on Linux each child asks the kernel for SIGTERM when its parent dies
(`prctl(PR_SET_PDEATHSIG)`, set between fork and exec). SIGTERM rather than SIGKILL because it
is every child's own way to stop cleanly: the controller drains its workers, redis-server
flushes its AOF. The signal follows the *thread* that forked the child, so call `start_child`
from a thread that lives as long as the child should (the main thread, or an executor thread
that is only shut down after its children are stopped). Elsewhere than Linux the children are
plain children.
"""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

_PR_SET_PDEATHSIG = 1


def start_child(command: Sequence[str], *, env: Mapping[str, str] | None = None,
                **popen_kwargs: object) -> subprocess.Popen:
    """`Popen(command)` in its own session (the terminal's Ctrl-C reaches only the parent,
    which orders the shutdown) that gets SIGTERM when this process dies."""
    return subprocess.Popen(list(command), env=None if env is None else dict(env),
                            start_new_session=True, preexec_fn=_die_with_parent_hook(),
                            **popen_kwargs)


def _die_with_parent_hook() -> Callable[[], None] | None:
    if not sys.platform.startswith("linux"):
        return None
    prctl = ctypes.CDLL(None, use_errno=True).prctl  # looked up before fork, not in the child
    parent = os.getpid()
    return lambda: _terminate_with(parent, prctl)


def terminate_with_parent(parent: int) -> None:
    """From now on this process gets SIGTERM when `parent` (its parent's pid, read before
    anything could have reparented it) dies, e.g. a supervisor that was SIGKILLed; Linux only."""
    if sys.platform.startswith("linux"):
        _terminate_with(parent, ctypes.CDLL(None, use_errno=True).prctl)


def _terminate_with(parent: int, prctl: Callable[..., int]) -> None:
    prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    if os.getppid() != parent:  # the parent died before the prctl: nobody will signal us
        os.kill(os.getpid(), signal.SIGTERM)


def stop_process(proc: subprocess.Popen, timeout_s: float = 30.0) -> None:
    """SIGTERM, then SIGKILL after `timeout_s`."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def wait_until(condition: Callable[[], Any], proc: subprocess.Popen, failure: Callable[[], str],
               timeout_s: float) -> None:
    """Return once `condition()` is truthy; `SystemExit(failure())` if `proc`, the child that
    should make it so, exits first or `timeout_s` passes (`failure` is called then, so it may
    read the child's log)."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        if proc.poll() is not None or time.monotonic() > deadline:
            raise SystemExit(failure())
        time.sleep(0.05)  # polling a readiness condition with a deadline


def wait_for_any_exit(children: Mapping[str, subprocess.Popen]) -> str:
    """Block until one child exits and return its name; a platform missing a part is down."""
    while True:
        for name, proc in children.items():
            if proc.poll() is not None:
                return name
        time.sleep(0.5)  # supervising children; a signal handler interrupts the sleep
