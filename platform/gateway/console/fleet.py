"""Reading what the console shows from Redis: each model's workers and queues, and the
controller's scaling decisions.

The same sources the controller scales by: heartbeats through `fresh_heartbeats` (so a worker
the controller counts dead is not shown alive), queues through `protocol.backlog.read_queue`,
and the controller's own record of its decisions (`controller.decisions`); TTFT history is the
workers' (`protocol.ttft`).
"""

from __future__ import annotations

import msgspec
import redis.asyncio as aioredis

from pagefleet.platform.protocol import Heartbeat, fresh_heartbeats, keys
from pagefleet.platform.protocol.backlog import read_queue
from pagefleet.platform.protocol.ttft import TtftBucket, read_ttft
from pagefleet.platform.registry import ModelSpec, Registry

PRIORITY_NAMES = {keys.PRIORITY_INTERACTIVE: "interactive", keys.PRIORITY_JOB: "jobs",
                  keys.PRIORITY_BATCH: "batch"}


class WorkerView(msgspec.Struct, kw_only=True):
    worker_id: str
    state: str
    running: int
    waiting: int
    capacity: int
    kv_usage: float
    heartbeat_age_s: float


class QueueView(msgspec.Struct, kw_only=True):
    priority: int
    name: str
    backlog: int
    in_flight: int
    entries_added: int
    ttft: list[TtftBucket]  # p50/p95 per bucket over the last 15 minutes, oldest first


class ModelView(msgspec.Struct, kw_only=True):
    name: str
    source: str
    accelerator: str
    gpus: int
    tensor_parallel_size: int
    min_replicas: int
    max_replicas: int
    desired_replicas: int | None  # None: the controller has not decided yet
    starting: int
    ready: int
    draining: int
    workers: list[WorkerView]
    queues: list[QueueView]


class Fleet(msgspec.Struct, kw_only=True):
    at: float
    models: list[ModelView]


class ScalingEvent(msgspec.Struct, kw_only=True):
    id: str
    model: str
    from_replicas: int
    to_replicas: int
    direction: str
    reason: str
    at: float


class ScalingEvents(msgspec.Struct, kw_only=True):
    data: list[ScalingEvent]


async def read_fleet(client: aioredis.Redis, registry: Registry, now: float,
                     stale_after_s: float) -> Fleet:
    """Every registry model with its live workers, queues and desired replicas."""
    desired = {_text(k): int(v) for k, v in (await client.hgetall(keys.DESIRED_REPLICAS)).items()}
    models = []
    for name in registry.names():
        raw = await client.hgetall(keys.heartbeat_hash(name))
        beats = sorted(fresh_heartbeats(raw.values(), now, stale_after_s), key=lambda b: b.worker_id)
        queues = []
        for priority in keys.PRIORITIES:
            reading = await read_queue(client, keys.request_stream(name, priority))
            queues.append(QueueView(priority=priority, name=PRIORITY_NAMES[priority],
                                    backlog=reading.backlog, in_flight=reading.pending,
                                    entries_added=reading.entries_added,
                                    ttft=await read_ttft(client, name, priority, now)))
        models.append(_model_view(registry.get(name), desired.get(name), beats, queues, now))
    return Fleet(at=now, models=models)


def _model_view(spec: ModelSpec, desired: int | None, beats: list[Heartbeat],
                queues: list[QueueView], now: float) -> ModelView:
    workers = [WorkerView(worker_id=b.worker_id, state=b.state, running=b.running,
                          waiting=b.waiting, capacity=b.capacity, kv_usage=b.kv_usage,
                          heartbeat_age_s=round(max(0.0, now - b.timestamp), 3)) for b in beats]
    return ModelView(
        name=spec.name, source=spec.source, accelerator=spec.profile.accelerator,
        gpus=spec.profile.count if spec.profile.is_gpu else 0,
        tensor_parallel_size=spec.profile.tensor_parallel_size,
        min_replicas=spec.scaling.min_replicas, max_replicas=spec.scaling.max_replicas,
        desired_replicas=desired,
        starting=sum(b.state == "starting" for b in beats),
        ready=sum(b.state == "ready" for b in beats),
        draining=sum(b.state == "draining" for b in beats),
        workers=workers, queues=queues)


async def read_scaling_events(client: aioredis.Redis, limit: int) -> ScalingEvents:
    """The controller's latest `limit` scaling decisions, newest first."""
    events = []
    for entry_id, fields in await client.xrevrange(keys.SCALING_EVENTS, count=limit):
        f = {_text(k): _text(v) for k, v in fields.items()}
        try:
            events.append(ScalingEvent(id=_text(entry_id), model=f["model"],
                                       from_replicas=int(f["from"]), to_replicas=int(f["to"]),
                                       direction=f["direction"], reason=f["reason"],
                                       at=float(f["at"])))
        except (KeyError, ValueError):
            continue  # an entry from another version: skip rather than fail the view
    return ScalingEvents(data=events)


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
