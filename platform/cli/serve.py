"""`pagefleet worker` and `pagefleet up`: run one model worker, or the whole local platform.

`up` starts a private redis-server (unless --redis-url is given), the gateway and the
autoscaling controller with the local backend as child processes, and prints the URL. No worker
runs until a request arrives: the controller starts `pagefleet worker` processes as the queues
fill and stops them after the registry's idle time, exactly as it scales Deployments on
Kubernetes. The gateway keeps a request queued while the worker cold-starts (its request
timeout, 600 s, is far above a CPU cold start of the default model, ~10-20 s).

On Ctrl-C `up` stops the children in reverse order: the controller first, which drains its
workers while Redis and the gateway still carry their results. Children run in their own
sessions so the terminal's SIGINT reaches only `up`, which orders the shutdown. The worker
imports the engine (torch) lazily, inside its command, so other commands stay light.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pagefleet.platform.registry import ModelSpec

_LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
_DRAIN_TIMEOUT_S = 30.0  # the controller's SIGTERM-to-SIGKILL time for each worker


def register(subparsers: argparse._SubParsersAction) -> None:
    worker = subparsers.add_parser("worker", help="serve one model from its Redis streams")
    worker.add_argument("--model", default=None, help="registry model name (default: the first one)")
    worker.add_argument("--registry", default=os.environ.get("PAGEFLEET_REGISTRY"),
                        help="registry YAML (default: the packaged one)")
    worker.add_argument("--redis-url", default=os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0"))
    worker.add_argument("--worker-id", default=os.environ.get("PAGEFLEET_WORKER_ID"))
    worker.add_argument("--metrics-port", type=int, default=None, help="/metrics and /health port")
    worker.add_argument("--metrics-host", default="0.0.0.0")
    worker.add_argument("--retention", type=int, default=3600, help="seconds result streams are kept")
    worker.add_argument("--dead-after", type=float, default=5.0,
                        help="seconds without heartbeat after which a worker's entries are claimed")
    worker.add_argument("--log-level", default="INFO")
    worker.set_defaults(func=_run_worker)

    up = subparsers.add_parser("up", help="run Redis, the gateway and the autoscaler on this machine")
    up.add_argument("--host", default="127.0.0.1")
    up.add_argument("--port", type=int, default=8000)
    up.add_argument("--registry", default=os.environ.get("PAGEFLEET_REGISTRY"))
    up.add_argument("--redis-url", default=os.environ.get("REDIS_URL"),
                    help="use this Redis instead of starting a private one")
    up.set_defaults(func=_run_up)


def _load_spec(registry_path: str | None, model: str | None) -> ModelSpec:
    from pagefleet.platform.registry import load_registry

    registry = load_registry(registry_path)
    return registry.get(model or next(iter(registry.models)))


def _run_worker(args: argparse.Namespace) -> int:
    from pagefleet.workers.runtime import WorkerSettings, run_worker
    from pagefleet.workers.runtime.main import registry_engine_factory

    logging.basicConfig(level=args.log_level.upper(), format=_LOG_FORMAT)
    spec = _load_spec(args.registry, args.model)
    overrides = {"worker_id": args.worker_id} if args.worker_id else {}
    settings = WorkerSettings(model=spec.name, redis_url=args.redis_url, metrics_host=args.metrics_host,
                              metrics_port=args.metrics_port, retention_s=args.retention,
                              dead_after_s=args.dead_after,
                              webhook_secret=os.environ.get("PAGEFLEET_WEBHOOK_SECRET") or None,
                              webhook_allow_private=os.environ.get("PAGEFLEET_WEBHOOK_ALLOW_PRIVATE") == "1",
                              **overrides)
    return run_worker(settings, registry_engine_factory(spec))


# ---- pagefleet up ---------------------------------------------------------------------------

def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextlib.contextmanager
def private_redis() -> Iterator[str]:
    """A throw-away redis-server on a free port (no persistence), stopped on exit."""
    binary = shutil.which("redis-server")
    if binary is None:
        raise SystemExit("redis-server is not installed (apt-get install redis-server), "
                         "or pass --redis-url")
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="pagefleet-redis-") as workdir:
        proc = subprocess.Popen([binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                                 "--appendonly", "no", "--dir", workdir],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                start_new_session=True)
        try:
            wait_for_port(port, proc, "redis-server")
            yield f"redis://127.0.0.1:{port}/0"
        finally:
            stop_process(proc)


def wait_for_port(port: int, proc: subprocess.Popen, what: str, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        if proc.poll() is not None or time.monotonic() > deadline:
            raise SystemExit(f"{what} did not start on port {port}")
        time.sleep(0.05)  # polling a readiness condition with a deadline


def stop_process(proc: subprocess.Popen, timeout_s: float = 30.0) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def start_gateway(host: str, port: int, registry: str, redis_url: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "pagefleet.platform.cli", "gateway",
                             "--host", host, "--port", str(port), "--registry", registry,
                             "--redis-url", redis_url, "--log-level", "warning"],
                            start_new_session=True)


def start_controller(registry: str, redis_url: str) -> subprocess.Popen:
    """The autoscaler with the local backend: it starts and drains `pagefleet worker` processes.

    A process rather than `run_controller` in this one, like the gateway: `up` stays a plain
    supervisor, and SIGTERM is the controller's own way to drain its workers before exiting.
    """
    return subprocess.Popen([sys.executable, "-m", "pagefleet.platform.cli", "controller",
                             "--backend", "local", "--registry", registry, "--redis-url", redis_url,
                             "--drain-timeout", str(_DRAIN_TIMEOUT_S)],
                            start_new_session=True)


def start_batch_worker(registry: str, redis_url: str) -> subprocess.Popen:
    """The Celery worker of /v1/batches; files live in the default directory, the gateway's."""
    return subprocess.Popen([sys.executable, "-m", "pagefleet.platform.cli", "batch-worker",
                             "--registry", registry, "--redis-url", redis_url, "--concurrency", "1",
                             "--log-level", "warning"], start_new_session=True)


def start_workers(model: str, registry: str, redis_url: str) -> list[subprocess.Popen]:
    """A fixed, always-warm worker, for measurements that must leave scaling out
    (`pagefleet bench serve --overhead`); `up` lets the controller start workers instead."""
    command = [sys.executable, "-m", "pagefleet.platform.cli", "worker", "--model", model,
               "--registry", registry, "--redis-url", redis_url]
    return [subprocess.Popen(command, start_new_session=True)]


def wait_for_any_exit(children: dict[str, subprocess.Popen]) -> str:
    """Block until one child exits and return its name; a platform missing a part is down."""
    while True:
        for name, proc in children.items():
            if proc.poll() is not None:
                return name
        time.sleep(0.5)  # supervising children; Ctrl-C interrupts the sleep


def _run_up(args: argparse.Namespace) -> int:
    from pagefleet.platform.registry import default_registry_path

    registry = args.registry or str(default_registry_path())
    spec = _load_spec(registry, None)
    exited = None
    with contextlib.ExitStack() as stack:
        redis_url = args.redis_url or stack.enter_context(private_redis())
        gateway = start_gateway(args.host, args.port, registry, redis_url)
        stack.callback(stop_process, gateway)
        controller = start_controller(registry, redis_url)
        # Stopped first (callbacks run in reverse): the workers drain while the gateway still
        # streams their results; SIGKILL only well after the controller's own drain timeout.
        stack.callback(stop_process, controller, _DRAIN_TIMEOUT_S + 30.0)
        batch_worker = start_batch_worker(registry, redis_url)
        stack.callback(stop_process, batch_worker)
        wait_for_port(args.port, gateway, "the gateway")
        base_url = f"http://{args.host}:{args.port}/v1"
        print(_banner(base_url, spec, redis_url), flush=True)
        signal.signal(signal.SIGTERM, _interrupt)
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


def _banner(base_url: str, spec: ModelSpec, redis_url: str) -> str:
    model, scaling = spec.name, spec.scaling
    body = json.dumps({"model": model, "messages": [{"role": "user", "content": "Say hello"}],
                       "max_tokens": 32})
    if scaling.min_replicas == 0:
        scaling_line = (f"{model} scales from zero: no worker runs yet, so the first request waits "
                        f"for a cold start (10-20 s on a CPU); back to zero after "
                        f"{scaling.scale_to_zero_after_s:g} s idle")
    else:
        scaling_line = f"{model} keeps {scaling.min_replicas} worker(s) warm; the first ones are loading"
    return (f"pagefleet is up: {base_url}  (redis {redis_url}, model {model})\n"
            f"  {scaling_line}\n"
            f"  curl {base_url}/chat/completions -H 'Content-Type: application/json' -d '{body}'\n"
            f"  OpenAI client: OpenAI(base_url=\"{base_url}\", api_key=\"none\")\n"
            f"Ctrl-C stops everything.")


