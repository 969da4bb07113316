"""A console stack: real redis-server, the gateway (uvicorn in a thread, a user key and an
admin key), the real controller loop in a thread, and a backend whose "replica" is the real
worker runtime on a scripted engine (tests/support/scripted_engine.py), started in-process when
the controller scales the model up. So a cold model really goes 0 -> 1 through the controller.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import redis.asyncio as aioredis
import yaml

from pagefleet.platform.controller.loop import Controller
from pagefleet.platform.gateway import GatewaySettings
from pagefleet.platform.registry import ModelSpec, load_registry
from tests.integration.gateway.conftest import LiveGateway, serve
from tests.support.scripted_engine import InProcessWorker, ScriptedEngine

MODEL = "console-echo"
USER_KEY, ADMIN_KEY = "sk-console-user", "sk-console-admin"


class InProcessBackend:
    """Replicas are `InProcessWorker`s (at most one per model here)."""

    def __init__(self, redis_url: str) -> None:
        self.redis_url = redis_url
        self.workers: dict[str, InProcessWorker] = {}

    def current_replicas(self, model: str) -> int | None:
        return 1 if model in self.workers else 0

    def apply(self, spec: ModelSpec, replicas: int, current: int | None) -> None:
        if replicas > 0 and spec.name not in self.workers:
            engine = ScriptedEngine(max_model_len=spec.engine.max_model_len or 256)
            self.workers[spec.name] = InProcessWorker(self.redis_url, spec.name, engine,
                                                      retention_s=300).start()
        elif replicas == 0 and spec.name in self.workers:
            self.workers.pop(spec.name).stop()

    def remove_except(self, models: set[str]) -> list[str]:
        return []

    def report_failure(self, spec: ModelSpec, error: Exception) -> None:
        pass

    def close(self) -> None:
        for worker in self.workers.values():
            worker.stop()
        self.workers.clear()


@dataclass(frozen=True, slots=True)
class ConsoleStack:
    gateway: LiveGateway
    backend: InProcessBackend

    @property
    def url(self) -> str:
        return f"{self.gateway.root_url}/console/"


class ControllerThread:
    """`Controller.run` in its own thread and event loop, ticking every 0.2 s."""

    def __init__(self, controller: Controller) -> None:
        self.controller = controller
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._started = threading.Event()
        self._thread = threading.Thread(target=self._main, daemon=True, name="controller")

    def start(self) -> ControllerThread:
        self._thread.start()
        if not self._started.wait(10):
            raise RuntimeError("the controller thread did not start")
        return self

    def stop(self) -> None:
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(30)

    def _main(self) -> None:
        async def main() -> None:
            self._loop = asyncio.get_running_loop()
            self._stop = asyncio.Event()
            self._started.set()
            try:
                await self.controller.run(self._stop, interval_s=0.2)
            finally:
                await self.controller.aclose()

        asyncio.run(main())


@pytest.fixture(scope="package")
def console(redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ConsoleStack]:
    path = Path(tmp_path_factory.mktemp("console")) / "registry.yaml"
    path.write_text(yaml.safe_dump({"models": {MODEL: {
        "source": MODEL, "engine": {"max_model_len": 256},
        "scaling": {"max_replicas": 1, "scale_up_window_s": 0}}}}))
    backend = InProcessBackend(redis_url)
    controller = ControllerThread(Controller(load_registry(str(path)), backend,
                                             aioredis.Redis.from_url(redis_url))).start()
    settings = GatewaySettings(redis_url=redis_url, registry_path=str(path), api_keys=(USER_KEY,),
                               admin_keys=(ADMIN_KEY,), request_timeout_s=60)
    try:
        with serve(settings) as gateway:
            yield ConsoleStack(gateway, backend)
    finally:
        controller.stop()
        backend.close()
