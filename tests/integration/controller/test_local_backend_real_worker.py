"""The local backend with real `pagefleet worker` processes (the embedded model on the CPU).

From zero replicas, a queued request starts a worker that loads the model and answers it; when
the model has been idle for `scale_to_zero_after_s` the worker is drained and the count is back
at zero. This is the `make up` scenario without the gateway. Slow (a model load), so marked.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import redis
import redis.asyncio as aioredis
import yaml

from pagefleet.platform.controller.backends.local import LocalBackend
from pagefleet.platform.controller.loop import Controller
from pagefleet.platform.controller.settings import LocalSettings
from pagefleet.platform.protocol import (
    ErrorEvent,
    FinalEvent,
    RequestEnvelope,
    SamplingParams,
    decode_event,
    encode,
    keys,
)
from pagefleet.platform.registry import load_registry

MODEL = "smollm2-135m-instruct"
pytestmark = pytest.mark.slow


def _registry(tmp_path: Path) -> Path:
    path = tmp_path / "registry.yaml"
    path.write_text(yaml.safe_dump({"models": {MODEL: {
        "engine": {"max_model_len": 512, "max_num_seqs": 4},
        "scaling": {"min_replicas": 0, "max_replicas": 1, "target_in_flight": 4,
                    "scale_to_zero_after_s": 3, "scale_down_window_s": 1, "scale_up_window_s": 0},
    }}}))
    return path


async def _drive(controller: Controller, until: Callable[[], bool], timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while not until():
        assert time.monotonic() < deadline, "condition not reached before the deadline"
        await controller.tick()
        await asyncio.sleep(0.25)


def test_request_cold_starts_a_real_worker_and_idle_returns_to_zero(
    tmp_path: Path, redis_url: str, redis_client: redis.Redis
) -> None:
    registry_path = _registry(tmp_path)
    backend = LocalBackend(LocalSettings(drain_timeout_s=30), str(registry_path), redis_url)
    envelope = RequestEnvelope(request_id="real-1", model=MODEL, kind="completion",
                               params=SamplingParams(max_tokens=4, temperature=0.0),
                               prompt="The capital of France is", created_at=time.time())
    result = keys.result_stream("real-1")

    def finished() -> bool:
        return any(isinstance(decode_event(f[keys.ENTRY_EVENT.encode()]), FinalEvent | ErrorEvent)
                   for _, f in redis_client.xrange(result))

    async def scenario() -> None:
        controller = Controller(load_registry(registry_path), backend, aioredis.Redis.from_url(redis_url))
        try:
            await controller.tick()
            assert backend.alive(MODEL) == 0
            redis_client.xadd(keys.request_stream(MODEL, 0),
                              {keys.ENTRY_REQUEST_ID: "real-1", keys.ENTRY_ENVELOPE: encode(envelope)})
            await _drive(controller, lambda: backend.alive(MODEL) == 1, timeout_s=5)
            await _drive(controller, finished, timeout_s=240)
            await _drive(controller, lambda: backend.current_replicas(MODEL) == 0, timeout_s=30)
            await _drive(controller, lambda: not redis_client.hlen(keys.heartbeat_hash(MODEL)), timeout_s=30)
        finally:
            await controller.aclose()
            backend.close()

    asyncio.run(scenario())
    events = [decode_event(f[keys.ENTRY_EVENT.encode()]) for _, f in redis_client.xrange(result)]
    assert isinstance(events[-1], FinalEvent), events[-1]
    assert events[-1].usage.completion_tokens >= 1
    assert backend.restarts(MODEL) == 0
