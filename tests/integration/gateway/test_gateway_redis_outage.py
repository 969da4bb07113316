"""Redis killed (-9) under open streams, then restarted on the same port.

Open streams end with an SSE error event (OpenAI's error shape, `queue_unavailable`) and then
`data: [DONE]`; a whole answer asked for during the outage is a 503 in OpenAI's shape; readiness
says 503 while Redis is away; and after Redis returns the very first request succeeds (no
stale pooled connection answers 503). The worker is the real runtime on a scripted engine.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from pagefleet.platform.gateway import GatewaySettings
from tests.integration.gateway.conftest import LiveGateway, serve, write_registry
from tests.support.restartable_redis import RestartableRedis
from tests.support.scripted_engine import HOLD, InProcessWorker, ScriptedEngine

OUTAGE_MODEL = "outage-echo"
NUM_STREAMS = 6


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RestartableRedis]:
    server = RestartableRedis(tmp_path).start()
    yield server
    server.stop()


@pytest.fixture
def rig(redis_server: RestartableRedis, tmp_path: Path) -> Iterator[tuple[LiveGateway, ScriptedEngine]]:
    registry = write_registry(tmp_path / "registry.yaml", OUTAGE_MODEL)
    engine = ScriptedEngine(max_model_len=64)
    worker = InProcessWorker(redis_server.url, OUTAGE_MODEL, engine, retention_s=300).start()
    settings = GatewaySettings(redis_url=redis_server.url, registry_path=registry, request_timeout_s=60)
    try:
        with serve(settings) as live:
            yield live, engine
    finally:
        worker.stop()


async def held_stream(http: httpx.AsyncClient, k: int, first_token: asyncio.Event) -> list[str]:
    body = {"model": OUTAGE_MODEL, "prompt": f"s{k} {HOLD}", "max_tokens": 8, "stream": True}
    lines = []
    async with http.stream("POST", "/v1/completions", json=body) as response:
        assert response.status_code == 200
        async for line in response.aiter_lines():
            if line:
                lines.append(line)
                first_token.set()
    return lines


async def outage(gateway: LiveGateway, server: RestartableRedis) -> float:
    async with httpx.AsyncClient(base_url=gateway.root_url, timeout=60) as http:
        assert (await http.get("/health/ready")).status_code == 200
        first_tokens = [asyncio.Event() for _ in range(NUM_STREAMS)]
        streams = [asyncio.create_task(held_stream(http, k, first_tokens[k])) for k in range(NUM_STREAMS)]
        async with asyncio.timeout(30):  # every client holds an open stream with its first token
            for event in first_tokens:
                await event.wait()
        server.kill()
        for lines in await asyncio.gather(*streams):
            assert json.loads(lines[0][6:])["choices"][0]["text"].startswith(" s")
            error = json.loads(lines[-2][6:])["error"]
            assert error["code"] == "queue_unavailable" and error["type"] == "server_error"
            assert set(error) == {"message", "type", "param", "code"}
            assert lines[-1] == "data: [DONE]"
        whole = await http.post("/v1/completions", json={"model": OUTAGE_MODEL, "prompt": "a b"})
        assert whole.status_code == 503
        assert whole.json()["error"]["code"] == "queue_unavailable"
        assert (await http.get("/health/ready")).status_code == 503

        server.start()
        restarted = time.perf_counter()
        first = await http.post("/v1/completions",
                                json={"model": OUTAGE_MODEL, "prompt": "after restart", "max_tokens": 2})
        recovered = time.perf_counter() - restarted
        assert first.status_code == 200, first.text
        assert first.json()["choices"][0]["text"] == " after restart"
        for _ in range(5):  # and every request after it
            again = await http.post("/v1/completions",
                                    json={"model": OUTAGE_MODEL, "prompt": "x y", "max_tokens": 2})
            assert again.status_code == 200, again.text
    return recovered


def test_redis_kill_ends_streams_with_an_error_event_and_recovers(
        rig: tuple[LiveGateway, ScriptedEngine], redis_server: RestartableRedis) -> None:
    gateway, _ = rig
    recovered = asyncio.run(outage(gateway, redis_server))
    print(f"\nfirst request after the Redis restart answered in {recovered:.2f} s")
