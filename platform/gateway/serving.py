"""Serve the gateway with uvicorn: one process, or several sharing one listening socket.

One gateway process is one Python interpreter: past ~0.8 of a core (a few thousand streamed
tokens a second per core on top of routing and JSON) its event loop, not Redis or the
workers, sets the platform's latency. `workers > 1` runs uvicorn's supervisor, which binds
the port once and spawns that many gateway processes that accept from it; the kernel spreads
connections between them. The processes share nothing but Redis, exactly like gateway
replicas behind a Kubernetes Service (results come back on per-request streams, so any
process can serve any request).

A spawned process cannot be handed the settings object, so the supervisor passes it as JSON in
`SETTINGS_VARIABLE` and each process rebuilds it (`app_from_environment`, validation included).
Prometheus counters would otherwise be per process and a scrape would see whichever process
answered it; with several processes they go to prometheus_client's multiprocess files in
`PROMETHEUS_MULTIPROC_DIR` (a fresh temporary folder unless the operator set one) and
`/metrics` sums them (see `GatewayMetrics`).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator

import msgspec

from pagefleet.platform.gateway.settings import GatewaySettings
from pagefleet.platform.processes.children import terminate_with_parent

SETTINGS_VARIABLE = "PAGEFLEET_GATEWAY_SETTINGS"
SUPERVISOR_VARIABLE = "PAGEFLEET_GATEWAY_SUPERVISOR"  # its pid: the processes stop with it
MULTIPROC_VARIABLE = "PROMETHEUS_MULTIPROC_DIR"
_GRACEFUL_SHUTDOWN_S = 10


def serve(settings: GatewaySettings, host: str, port: int, *, workers: int = 1,
          log_level: str = "info") -> None:
    """Serve until interrupted; `workers` gateway processes (1: this one)."""
    import uvicorn

    from pagefleet.platform.gateway import create_app

    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    if workers == 1:
        uvicorn.run(create_app(settings), host=host, port=port, log_level=log_level,
                    timeout_graceful_shutdown=_GRACEFUL_SHUTDOWN_S)
        return
    # Fail here, once, on what would fail in every process: uvicorn's supervisor restarts a
    # process that dies while building its app, forever, where one process would just exit.
    create_app(settings)
    with _multiprocess_metrics_dir():
        os.environ[SETTINGS_VARIABLE] = msgspec.json.encode(settings).decode()
        os.environ[SUPERVISOR_VARIABLE] = str(os.getpid())
        uvicorn.run(f"{__name__}:app_from_environment", factory=True, workers=workers, host=host,
                    port=port, log_level=log_level, timeout_graceful_shutdown=_GRACEFUL_SHUTDOWN_S)


def app_from_environment():  # -> Litestar; uvicorn's factory in each spawned process
    from pagefleet.platform.gateway import create_app

    raw = os.environ.get(SETTINGS_VARIABLE)
    if raw is None:
        raise RuntimeError(f"{SETTINGS_VARIABLE} is not set: this factory is for gateway "
                           "processes started by `pagefleet gateway --workers N`")
    supervisor = os.environ.get(SUPERVISOR_VARIABLE)
    if supervisor is not None:  # a SIGKILLed supervisor must not leave servers on its port
        terminate_with_parent(int(supervisor))
    return create_app(msgspec.json.decode(raw, type=GatewaySettings))


@contextlib.contextmanager
def _multiprocess_metrics_dir() -> Iterator[str]:
    """The operator's `PROMETHEUS_MULTIPROC_DIR`, or a fresh folder removed afterwards (stale
    files from an earlier run would be summed into this one's counters)."""
    given = os.environ.get(MULTIPROC_VARIABLE)
    if given:
        os.makedirs(given, exist_ok=True)
        yield given
        return
    folder = tempfile.mkdtemp(prefix="pf-gateway-metrics-")
    os.environ[MULTIPROC_VARIABLE] = folder
    try:
        yield folder
    finally:
        del os.environ[MULTIPROC_VARIABLE]
        shutil.rmtree(folder, ignore_errors=True)
