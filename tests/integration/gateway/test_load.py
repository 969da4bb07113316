"""One gateway process holds many concurrent streams (result delivery scales with streams, not
connections); past `max_in_flight` the answer is 429 + Retry-After and readiness says 503.

The worker is the real runtime on a gated scripted engine: every request gets its first token,
then waits, so all N streams are open at once (the gateway reports N in flight) before the
gate opens and they finish. Before the multiplexing reader each waiting request held a pooled
connection and the pool stopped at 100: 150 streams got 50 x 503.

Default suite: 500 streams. `pytest -m load tests/integration/gateway/test_load.py` runs 5,000
(figures in docs/benchmarks.md).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from pagefleet.platform.gateway import GatewaySettings
from tests.integration.gateway.conftest import LiveGateway, serve, write_registry
from tests.support.scripted_engine import InProcessWorker, ScriptedEngine

LOAD_MODEL = "load-echo"
SMALL, LARGE = 500, 5_000
_STREAMS_PER_CLIENT = 50


@dataclass(frozen=True, slots=True)
class StreamResult:
    status: int
    lines: list[str]


@contextmanager
def load_rig(redis_url: str, tmp_path: Path, num_streams: int) -> Iterator[tuple[LiveGateway, ScriptedEngine]]:
    """A gateway bounded at exactly `num_streams` in flight, and a worker that admits them all."""
    registry = write_registry(tmp_path / "registry.yaml", LOAD_MODEL)
    engine = ScriptedEngine(max_model_len=64, max_num_seqs=num_streams, gate_after_first_token=True)
    worker = InProcessWorker(redis_url, LOAD_MODEL, engine, retention_s=300).start()
    settings = GatewaySettings(redis_url=redis_url, registry_path=registry, request_timeout_s=600,
                               max_backlog=num_streams, max_in_flight=num_streams, retry_after_s=3)
    try:
        with serve(settings, backlog=num_streams + 100) as live:
            yield live, engine
    finally:
        worker.stop()


async def one_stream(http: httpx.AsyncClient, k: int) -> StreamResult:
    body = {"model": LOAD_MODEL, "prompt": f"w{k} a b", "max_tokens": 4, "stream": True}
    async with http.stream("POST", "/v1/completions", json=body) as response:
        return StreamResult(response.status_code, [line async for line in response.aiter_lines() if line])


async def hold_and_release(gateway: LiveGateway, engine: ScriptedEngine, num_streams: int) -> list[StreamResult]:
    # httpx's pool scans its connections per request: many small clients keep that linear.
    clients = [httpx.AsyncClient(base_url=gateway.root_url, timeout=600,
                                 limits=httpx.Limits(max_connections=None, max_keepalive_connections=None))
               for _ in range(0, num_streams, _STREAMS_PER_CLIENT)]
    async with contextlib.AsyncExitStack() as stack:
        for client in clients:
            await stack.enter_async_context(client)
        # Probes use their own connection each: a kept-alive one may be closed by the server
        # (idle timeout) just as a probe is sent on it.
        http = await stack.enter_async_context(httpx.AsyncClient(
            base_url=gateway.root_url, timeout=600, headers={"Connection": "close"}))
        started = time.perf_counter()
        streams = [asyncio.create_task(one_stream(clients[k // _STREAMS_PER_CLIENT], k))
                   for k in range(num_streams)]
        assert await asyncio.to_thread(engine.wait_first_tokens, num_streams, 600)
        # Every stream has its first token; the gateway holds all of them now.
        ready = await http.get("/health/ready")
        assert ready.status_code == 503 and ready.json()["error"]["code"] == "gateway_busy"
        one_more = await http.post("/v1/completions", json={"model": LOAD_MODEL, "prompt": "x"})
        assert one_more.status_code == 429
        assert one_more.headers["retry-after"] == str(gateway.settings.retry_after_s)
        assert one_more.json()["error"]["code"] == "gateway_busy"
        held_at = time.perf_counter()
        engine.release()
        results = await asyncio.gather(*streams)
        done_at = time.perf_counter()
        assert (await http.get("/health/ready")).status_code == 200
    print(f"\n{num_streams} streams: all held after {held_at - started:.1f} s, "
          f"all done {done_at - held_at:.1f} s after release")
    return results


def check_streams(results: list[StreamResult]) -> None:
    for k, result in enumerate(results):
        assert result.status == 200, (k, result)
        assert result.lines[-1] == "data: [DONE]", (k, result.lines)
        texts = [json.loads(line[6:])["choices"][0]["text"] for line in result.lines[:-1]]
        assert "".join(texts) == f" w{k} a b w{k}", (k, result.lines)


def run_load(redis_url: str, tmp_path: Path, num_streams: int) -> None:
    with load_rig(redis_url, tmp_path, num_streams) as (gateway, engine):
        check_streams(asyncio.run(hold_and_release(gateway, engine, num_streams)))


def test_one_gateway_holds_500_streams_then_429s(redis_url: str, tmp_path: Path) -> None:
    run_load(redis_url, tmp_path, SMALL)


@pytest.mark.load
def test_one_gateway_holds_5000_streams_then_429s(redis_url: str, tmp_path: Path) -> None:
    run_load(redis_url, tmp_path, LARGE)
