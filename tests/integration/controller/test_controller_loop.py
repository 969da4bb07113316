"""The reconcile loop with a real Redis and an in-memory backend: registry reloads, pruning,
failures of one model not stopping the others, and holding when Redis is unreachable."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import redis
import redis.asyncio as aioredis
import yaml

from pagefleet.platform.controller.backends.base import BackendError
from pagefleet.platform.controller.loop import Controller
from pagefleet.platform.protocol import keys
from pagefleet.platform.protocol.resilience import connect
from pagefleet.platform.registry import ModelSpec, load_registry
from tests.support.redis_server import RestartableRedis, free_port


class RecordingBackend:
    """Holds replica counts in a dict; `broken` models raise on apply."""

    def __init__(self, broken: frozenset[str] = frozenset()) -> None:
        self.replicas: dict[str, int] = {}
        self.broken = broken
        self.removed: list[str] = []

    def current_replicas(self, model: str) -> int | None:
        return self.replicas.get(model)

    def apply(self, spec: ModelSpec, replicas: int, current: int | None) -> None:
        if spec.name in self.broken:
            raise BackendError(f"{spec.name} is broken")
        self.replicas[spec.name] = replicas

    def remove_except(self, models: set[str]) -> list[str]:
        gone = sorted(set(self.replicas) - models)
        for name in gone:
            del self.replicas[name]
        self.removed += gone
        return gone

    def close(self) -> None:
        pass


def _write(path: Path, names: list[str], mtime: int) -> None:
    path.write_text(yaml.safe_dump({"models": {n: {"scaling": {"max_replicas": 2}} for n in names}}))
    os.utime(path, (mtime, mtime))


def _queue(client: redis.Redis, model: str) -> None:
    client.xadd(keys.request_stream(model, 0), {keys.ENTRY_REQUEST_ID: "r", keys.ENTRY_ENVELOPE: b"x"})


def test_registry_reload_adds_and_prunes_models(tmp_path: Path, redis_url: str, redis_client: redis.Redis) -> None:
    path = tmp_path / "registry.yaml"
    _write(path, ["a", "b"], 1_000)
    backend = RecordingBackend()
    _queue(redis_client, "c")

    async def scenario() -> None:
        controller = Controller(load_registry(path), backend, aioredis.Redis.from_url(redis_url),
                                registry_path=str(path))
        try:
            await controller.tick()
            assert backend.replicas == {"a": 0, "b": 0}
            _write(path, ["a", "c"], 2_000)
            await controller.tick()
            assert backend.removed == ["b"] and backend.replicas == {"a": 0, "c": 1}
            path.write_text("models: {BAD: {}}")
            os.utime(path, (3_000, 3_000))
            await controller.tick()
            assert controller.registry.names() == ["a", "c"], "an invalid file keeps the old registry"
        finally:
            await controller.aclose()

    asyncio.run(scenario())


def test_one_failing_model_does_not_stop_the_others(tmp_path: Path, redis_url: str,
                                                    redis_client: redis.Redis) -> None:
    path = tmp_path / "registry.yaml"
    _write(path, ["a", "b"], 1_000)
    backend = RecordingBackend(broken=frozenset({"a"}))
    _queue(redis_client, "b")

    async def scenario() -> None:
        controller = Controller(load_registry(path), backend, aioredis.Redis.from_url(redis_url))
        try:
            decisions = await controller.tick()
        finally:
            await controller.aclose()
        assert set(decisions) == {"b"} and backend.replicas == {"b": 1}

    asyncio.run(scenario())


def test_unreachable_redis_holds_replicas(tmp_path: Path) -> None:
    path = tmp_path / "registry.yaml"
    _write(path, ["a"], 1_000)
    backend = RecordingBackend()
    backend.replicas["a"] = 2

    async def scenario() -> None:
        dead = aioredis.Redis.from_url(f"redis://127.0.0.1:{free_port()}/0")
        controller = Controller(load_registry(path), backend, dead)
        try:
            for _ in range(3):
                decision = (await controller.tick())["a"]
                assert decision.desired_replicas == 2 and "unavailable" in decision.reason
            assert controller.outages.down and controller.outages.num_outages == 1  # logged once
        finally:
            await controller.aclose()

    asyncio.run(scenario())


def test_redis_restart_is_one_outage_and_the_loop_recovers(tmp_path: Path) -> None:
    path = tmp_path / "registry.yaml"
    _write(path, ["a"], 1_000)
    server = RestartableRedis(str(tmp_path))
    server.start()

    async def scenario() -> None:
        controller = Controller(load_registry(path), RecordingBackend(), connect(server.url))
        try:
            assert "unavailable" not in (await controller.tick())["a"].reason
            server.kill()
            for _ in range(2):
                assert "unavailable" in (await controller.tick())["a"].reason
            server.start()
            assert "unavailable" not in (await controller.tick())["a"].reason  # no stale connection
            assert not controller.outages.down and controller.outages.num_outages == 1
        finally:
            await controller.aclose()
            server.stop()

    asyncio.run(scenario())


def test_a_failing_tick_does_not_end_the_loop(tmp_path: Path, redis_url: str) -> None:
    path = tmp_path / "registry.yaml"
    _write(path, ["a"], 1_000)

    class FlakyBackend(RecordingBackend):
        def __init__(self, stop: asyncio.Event) -> None:
            super().__init__()
            self.stop = stop
            self.calls = 0

        def current_replicas(self, model: str) -> int | None:
            self.calls += 1
            if self.calls == 1:
                raise RuntimeError("a bug in the backend")
            if self.calls == 3:
                self.stop.set()
            return super().current_replicas(model)

    async def scenario() -> None:
        stop = asyncio.Event()
        backend = FlakyBackend(stop)
        controller = Controller(load_registry(path), backend, aioredis.Redis.from_url(redis_url))
        try:
            await asyncio.wait_for(controller.run(stop, interval_s=0.01), 30)
        finally:
            await controller.aclose()
        assert backend.calls == 3

    asyncio.run(scenario())
