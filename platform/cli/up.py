"""`pagefleet up`: run Redis, the gateway and the autoscaler on this machine.

`up` starts a private redis-server (unless --redis-url is given), the gateway and the
autoscaling controller with the local backend as child processes, and prints the URL. No worker
runs until a request arrives: the controller starts `pagefleet worker` processes as the queues
fill and stops them after the registry's idle time, exactly as it scales Deployments on
Kubernetes. The gateway wakes the controller the moment a request needs a worker, and the
controller keeps one pre-imported spare process per model, so a CPU cold start of the default
model takes a few seconds; the gateway keeps the request queued meanwhile (its request timeout
is 600 s).

The private Redis keeps an append-only file (fsynced every second) in a data directory that
outlives `up` (`--data-dir`, by default under the user's state directory), so queued requests
and job records survive a restart of `up`; one `up` at a time may use a data directory.

On Ctrl-C or SIGTERM `up` stops the children in reverse order: the controller first, which
drains its workers while Redis and the gateway still carry their results. Children run in their
own sessions so the terminal's SIGINT reaches only `up`, which orders the shutdown; if `up`
itself is killed, each child gets SIGTERM from the kernel (`processes.children`), so nothing
is left running. A taken port is refused before anything starts.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from pagefleet.platform.cli import flags
from pagefleet.platform.processes.children import start_child, stop_process, wait_for_any_exit
from pagefleet.platform.processes.ports import check_port_free, wait_for_port
from pagefleet.platform.processes.redis_server import RedisServerError, redis_server

if TYPE_CHECKING:
    from pagefleet.platform.registry import ModelSpec

DRAIN_TIMEOUT_S = 30.0  # the controller's SIGTERM-to-SIGKILL time for each worker
_OLD_TEMP_PREFIX = "pagefleet-redis-"  # where earlier versions kept a throw-away Redis


def default_data_dir() -> str:
    """`$XDG_STATE_HOME/pagefleet/redis`, or `~/.local/state/pagefleet/redis`."""
    state = os.environ.get("XDG_STATE_HOME") or os.path.join(os.path.expanduser("~"), ".local", "state")
    return os.path.join(state, "pagefleet", "redis")


@dataclass(frozen=True, slots=True)
class UpSettings:
    """What `pagefleet up` runs. `redis_url` None: a private, persistent redis-server in
    `data_dir` (None: `default_data_dir()`); `registry_path` None: the packaged registry;
    `gateway_workers` gateway processes on the one port (`pagefleet gateway --workers`)."""

    host: str = "127.0.0.1"
    port: int = 8000
    registry_path: str | None = None
    redis_url: str | None = None
    data_dir: str | None = None
    gateway_workers: int = 1

    def __post_init__(self) -> None:
        if self.gateway_workers < 1:
            raise ValueError(f"gateway_workers must be >= 1, got {self.gateway_workers}")
        if not 0 < self.port < 65536:
            raise ValueError(f"port must be in [1, 65535], got {self.port}")


_HELP = {
    "redis_url": "use this Redis instead of starting a private one",
    "data_dir": "the private Redis's data directory (default: ~/.local/state/pagefleet/redis)",
    "gateway_workers": "gateway processes sharing the port (`pagefleet gateway --workers`)",
}


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("up", help="run Redis, the gateway and the autoscaler on this machine")
    flags.add_flags(parser, UpSettings, ("host", "port", "registry_path", "redis_url", "data_dir",
                                         "gateway_workers"),
                    help=_HELP, env={"data_dir": "PAGEFLEET_DATA_DIR"})
    parser.set_defaults(func=run)


def start_gateway(host: str, port: int, registry: str, redis_url: str,
                  workers: int = 1) -> subprocess.Popen:
    return start_child([sys.executable, "-m", "pagefleet.platform.cli", "gateway",
                        "--host", host, "--port", str(port), "--registry", registry,
                        "--redis-url", redis_url, "--log-level", "warning",
                        "--workers", str(workers)])


def start_controller(registry: str, redis_url: str, spare_workers: int = 1,
                     **popen_kwargs: Any) -> subprocess.Popen:
    """The autoscaler with the local backend: it starts and drains `pagefleet worker` processes,
    keeping `spare_workers` pre-imported spares per model for fast cold starts.

    A process rather than `run_controller` in this one, like the gateway: `up` stays a plain
    supervisor, and SIGTERM is the controller's own way to drain its workers before exiting.
    """
    return start_child([sys.executable, "-m", "pagefleet.platform.cli", "controller",
                        "--backend", "local", "--registry", registry, "--redis-url", redis_url,
                        "--drain-timeout", str(DRAIN_TIMEOUT_S), "--spare-workers", str(spare_workers)],
                       **popen_kwargs)


def start_batch_worker(registry: str, redis_url: str) -> subprocess.Popen:
    """The Celery worker of /v1/batches; files live in the default directory, the gateway's."""
    return start_child([sys.executable, "-m", "pagefleet.platform.cli", "batch-worker",
                        "--registry", registry, "--redis-url", redis_url, "--concurrency", "1",
                        "--log-level", "warning"])


@contextlib.contextmanager
def persistent_redis(data_dir: Path) -> Iterator[str]:
    """The private Redis of `up`, with AOF in `data_dir`, which this process locks while it
    runs (a second `up` on the same directory would corrupt the file)."""
    data_dir.mkdir(parents=True, exist_ok=True)
    with open(data_dir / "up.lock", "w") as lock:
        _lock_or_exit(lock, data_dir)
        try:
            with redis_server(data_dir, appendonly=True) as url:
                yield url
        except RedisServerError as exc:
            raise SystemExit(f"{exc}; or pass --redis-url") from None


def _lock_or_exit(lock: IO[str], data_dir: Path) -> None:
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        raise SystemExit(f"another `pagefleet up` uses {data_dir}; stop it or pass "
                         f"--data-dir") from None


def remove_old_temp_dirs(temp_dir: str | None = None) -> list[str]:
    """Delete the throw-away Redis folders that earlier versions of `up` left in the temp
    directory when they were killed; `up` now keeps its data in the data directory."""
    root = Path(temp_dir or tempfile.gettempdir())
    removed = []
    for path in root.glob(_OLD_TEMP_PREFIX + "*"):
        if path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
            removed.append(str(path))
    return removed


def run(args: argparse.Namespace) -> int:
    from pagefleet.platform.registry import default_registry_path, load_registry

    settings = flags.settings_from_args(UpSettings, args)
    check_port_free(settings.host, settings.port)
    registry = settings.registry_path or str(default_registry_path())
    spec = load_registry(registry).get_or_first(None)
    remove_old_temp_dirs()
    data_dir = Path(settings.data_dir or default_data_dir())
    exited = None
    with contextlib.ExitStack() as stack:
        redis_url = settings.redis_url or stack.enter_context(persistent_redis(data_dir))
        gateway = start_gateway(settings.host, settings.port, registry, redis_url,
                                settings.gateway_workers)
        stack.callback(stop_process, gateway)
        controller = start_controller(registry, redis_url)
        # Stopped first (callbacks run in reverse): the workers drain while the gateway still
        # streams their results; SIGKILL only well after the controller's own drain timeout.
        stack.callback(stop_process, controller, DRAIN_TIMEOUT_S + 30.0)
        batch_worker = start_batch_worker(registry, redis_url)
        stack.callback(stop_process, batch_worker)
        wait_for_port(settings.port, gateway, "the gateway")
        base_url = f"http://{settings.host}:{settings.port}/v1"
        storage = "an external Redis" if settings.redis_url else f"data in {data_dir}"
        print(_banner(base_url, spec, redis_url, storage), flush=True)
        # Both explicitly: a process started in the background by a non-interactive shell
        # inherits SIGINT as ignored, and Python then installs no KeyboardInterrupt for it.
        signal.signal(signal.SIGTERM, _interrupt)
        signal.signal(signal.SIGINT, _interrupt)
        with contextlib.suppress(KeyboardInterrupt):
            exited = wait_for_any_exit({"the gateway": gateway, "the controller": controller,
                                        "the batch worker": batch_worker})
        if exited is None:
            print("\nshutting down (workers drain first)", flush=True)
        else:
            print(f"\n{exited} exited unexpectedly; shutting down", file=sys.stderr, flush=True)
    return 0 if exited is None else 1


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def _banner(base_url: str, spec: ModelSpec, redis_url: str, storage: str) -> str:
    model, scaling = spec.name, spec.scaling
    body = json.dumps({"model": model, "messages": [{"role": "user", "content": "Say hello"}],
                       "max_tokens": 32})
    if scaling.min_replicas == 0:
        scaling_line = (f"{model} scales from zero: no worker runs yet, so the first request waits "
                        f"for a cold start (a few seconds on a CPU); back to zero after "
                        f"{scaling.scale_to_zero_after_s:g} s idle")
    else:
        scaling_line = f"{model} keeps {scaling.min_replicas} worker(s) warm; the first ones are loading"
    return (f"pagefleet is up: {base_url}  (redis {redis_url}, {storage}, model {model})\n"
            f"  {scaling_line}\n"
            f"  curl {base_url}/chat/completions -H 'Content-Type: application/json' -d '{body}'\n"
            f"  OpenAI client: OpenAI(base_url=\"{base_url}\", api_key=\"none\")\n"
            f"Ctrl-C stops everything.")
