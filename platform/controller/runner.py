"""Builds a `Controller` from `ControllerSettings` and runs it: the one entry point for the CLI
and for `pagefleet up`, which runs it beside the gateway with the local backend."""

from __future__ import annotations

import asyncio
import logging

from prometheus_client import start_http_server

from pagefleet.platform.controller.backends.base import Backend
from pagefleet.platform.controller.loop import Controller, Elector
from pagefleet.platform.controller.metrics import ControllerMetrics
from pagefleet.platform.controller.settings import ControllerSettings
from pagefleet.platform.protocol.resilience import connect
from pagefleet.platform.registry import default_registry_path, load_registry

log = logging.getLogger(__name__)


def build_controller(settings: ControllerSettings) -> Controller:
    registry_path = settings.registry_path or str(default_registry_path())
    registry = load_registry(registry_path)
    backend: Backend
    elector: Elector | None = None
    if settings.backend == "kubernetes":
        from pagefleet.platform.controller.backends.kubernetes import (
            KubernetesBackend,
            api_client_from_environment,
        )
        from pagefleet.platform.controller.leader import LeaseElector

        api = api_client_from_environment()
        k8s = settings.kubernetes
        backend = KubernetesBackend(api, k8s)
        elector = LeaseElector(api, k8s.namespace, k8s.lease_name, k8s.identity, k8s.lease_duration_s)
    else:
        from pagefleet.platform.controller.backends.local import LocalBackend

        backend = LocalBackend(settings.local, registry_path, settings.redis_url)
    return Controller(registry, backend, connect(settings.redis_url),
                      metrics=ControllerMetrics(), elector=elector,
                      heartbeat_stale_s=settings.heartbeat_stale_s, registry_path=registry_path)


async def run_controller(settings: ControllerSettings, stop: asyncio.Event,
                         controller: Controller | None = None) -> None:
    """Run until `stop` is set; local workers are drained and stopped on the way out."""
    controller = controller or build_controller(settings)
    if settings.metrics_port is not None:
        server, _ = start_http_server(settings.metrics_port, registry=controller.metrics.registry)
        log.info("controller metrics on :%d/metrics", server.server_port)
    log.info("controller (%s backend) serving %s", settings.backend, ", ".join(controller.registry.names()))
    try:
        await controller.run(stop, settings.interval_s)
    finally:
        await asyncio.to_thread(controller.backend.close)
        await controller.aclose()
