"""`pagefleet bench coldstart` on the platform: a fresh Redis, gateway and controller (as
`pagefleet up` runs them), one request to a model at zero, and the timeline read back from the
gateway's wake, the controller's decision stream and the worker's phase stream."""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import redis
import redis.asyncio as aioredis

from pagefleet.platform.bench.client import CompletionsClient
from pagefleet.platform.bench.coldstart import OUTPUT_LEN, PROMPT_IDS, ColdStart, platform_timeline
from pagefleet.platform.processes.children import stop_process, wait_until
from pagefleet.platform.processes.ports import free_port, wait_for_port
from pagefleet.platform.processes.redis_server import redis_server
from pagefleet.platform.protocol import keys
from pagefleet.platform.protocol.phases import PHASE_EVENT_FIELD, PhaseEvent, decode_phase_event
from pagefleet.platform.protocol.workload import BenchRequest

if TYPE_CHECKING:
    from pagefleet.platform.registry import ModelSpec

_SETUP_TIMEOUT_S = 600.0


def platform_run(spec: ModelSpec, registry: str, redis_url: str | None, spare_workers: int) -> ColdStart:
    """One cold start of `spec` on a fresh platform (a private Redis unless `redis_url`)."""
    from pagefleet.platform.cli.up import DRAIN_TIMEOUT_S, start_controller, start_gateway

    if spec.scaling.min_replicas > 0:
        raise SystemExit(f"{spec.name} keeps {spec.scaling.min_replicas} replica(s) warm: a cold "
                         f"start needs min_replicas 0")
    with contextlib.ExitStack() as stack:
        workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="pf-bench-coldstart-")))
        redis_url = redis_url or stack.enter_context(redis_server(workdir))
        client = redis.Redis.from_url(redis_url)
        stack.callback(client.close)
        port = free_port()
        gateway = start_gateway("127.0.0.1", port, registry, redis_url)
        stack.callback(stop_process, gateway)
        log = stack.enter_context(open(workdir / "controller.log", "wb"))
        controller = start_controller(registry, redis_url, spare_workers=spare_workers,
                                      stdout=log, stderr=subprocess.STDOUT)
        stack.callback(stop_process, controller, DRAIN_TIMEOUT_S + 30.0)
        wait_for_port(port, gateway, "the gateway")
        _wait(lambda: client.pubsub_numsub(keys.WAKE_CHANNEL)[0][1] >= 1, controller,
              "the controller's wake listener", workdir)
        if spare_workers:
            _wait(lambda: spec.name.encode() in client.hvals(keys.SPARE_WORKERS), controller,
                  "a preloaded spare worker", workdir)
        if client.hlen(keys.heartbeat_hash(spec.name)):
            raise SystemExit(f"{spec.name} already has workers; a cold start needs it at zero")
        base_url = f"http://127.0.0.1:{port}/v1"
        sent_at, first_token_at, wake_at, error = asyncio.run(_first_request(base_url, spec.name, redis_url))
        if error:
            raise SystemExit(f"the cold-start request failed: {error}\n{(workdir / 'controller.log').read_text()}")
        phases = _worker_phases(client, spec.name, sent_at)
        decision = _scale_up_decision(client, spec.name, sent_at)
    points = platform_timeline(sent_at, first_token_at, wake_at,
                               float(decision["at"]) if decision else None, phases)
    return ColdStart("platform", first_token_at - sent_at, points,
                     trigger=decision.get("trigger") if decision else None,
                     notes={"spare_workers": str(spare_workers)})


async def _first_request(base_url: str, model: str, redis_url: str) -> tuple[float, float, float | None, str | None]:
    """Send the request while listening for the gateway's wake; the times are wall clock."""
    listener = aioredis.Redis.from_url(redis_url)
    pubsub = listener.pubsub(ignore_subscribe_messages=True)
    await pubsub.subscribe(keys.WAKE_CHANNEL)

    async def wake_seen() -> float:
        while True:
            message = await pubsub.get_message(timeout=1.0)
            if message is not None and message["data"] in (model, model.encode()):
                return time.time()

    wake = asyncio.create_task(wake_seen())
    try:
        async with httpx.AsyncClient(timeout=httpx.Timeout(_SETUP_TIMEOUT_S)) as http:
            sent_at = time.time()
            result = await CompletionsClient(http, base_url, model).send(BenchRequest(PROMPT_IDS, OUTPUT_LEN))
        wake_at = wake.result() if wake.done() else None
        return sent_at, sent_at + result.ttft_s, wake_at, result.error
    finally:
        wake.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await wake
        await pubsub.aclose()
        await listener.aclose()


def _worker_phases(client: redis.Redis, model: str, since: float) -> list[PhaseEvent]:
    """The phases of the worker that served the request: the first to reach `first_token`."""
    events = [decode_phase_event(fields[PHASE_EVENT_FIELD.encode()])
              for _id, fields in client.xrange(keys.phase_stream(model))]
    events = [e for e in events if e.at >= since or e.phase == "spawned"]
    served = next((e.worker_id for e in events if e.phase == "first_token" and e.at >= since), None)
    return [e for e in events if e.worker_id == served]


def _scale_up_decision(client: redis.Redis, model: str, since: float) -> dict[str, Any] | None:
    for _id, fields in client.xrange(keys.SCALING_EVENTS):
        event = {k.decode(): v.decode() for k, v in fields.items()}
        if event["model"] == model and event["direction"] == "up" and float(event["at"]) >= since:
            return event
    return None


def _wait(condition: Callable[[], Any], controller: subprocess.Popen, what: str, workdir: Path) -> None:
    def failure() -> str:
        return f"gave up waiting for {what}:\n{(workdir / 'controller.log').read_text(errors='replace')}"

    wait_until(condition, controller, failure, _SETUP_TIMEOUT_S)
