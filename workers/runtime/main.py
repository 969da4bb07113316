"""The worker process: load the engine, then pull, run and stream until SIGTERM, then drain.

Lifecycle: heartbeat `starting` (and serve /health) while the engine loads in a thread;
`ready` while pulling; on SIGTERM or SIGINT `draining`: stop pulling and claiming, finish every
admitted request (their finals and acks written), remove the heartbeat, exit 0.

Every long-lived Redis task (pullers, claimer, heartbeats, result writer, cancel listener)
outlives Redis outages: each retries with jittered back-off, the cancel listener subscribes
again and re-reads the cancel flags it may have missed, and one `RedisOutages` logs each
outage and its end once and counts it in `pagefleet:redis_outages_total`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import time
from collections.abc import Awaitable, Callable
from typing import Any

import httpx
from redis.exceptions import RedisError

from pagefleet.platform.protocol import Heartbeat, event_loop, keys
from pagefleet.platform.protocol.resilience import (
    TRANSIENT_ERRORS,
    RedisOutages,
    connect,
    retry_transient,
    supervise,
)
from pagefleet.workers.engine.outputs import EngineStats
from pagefleet.workers.runtime.config import WorkerSettings
from pagefleet.workers.runtime.engine_port import EngineClient, EngineFactory, EngineWithCore
from pagefleet.workers.runtime.executor import Executor
from pagefleet.workers.runtime.heartbeat import HeartbeatWriter
from pagefleet.workers.runtime.jobs import JobUpdater
from pagefleet.workers.runtime.metrics import HealthServer, RuntimeMetrics
from pagefleet.workers.runtime.phases import PhaseRecorder, spawned_at_from_env
from pagefleet.workers.runtime.puller import Puller
from pagefleet.workers.runtime.recovery import Recovery
from pagefleet.workers.runtime.results import ResultWriter
from pagefleet.workers.runtime.streams import RequestQueues
from pagefleet.workers.runtime.webhooks import WebhookDeliverer

log = logging.getLogger(__name__)
_SHUTDOWN_REDIS_S = 10.0  # how long the last writes of a stopping worker wait for Redis


class Worker:
    """Wires the runtime's parts together; `run()` is the whole lifetime of one worker."""

    def __init__(self, settings: WorkerSettings, engine_factory: EngineFactory,
                 on_listening: Callable[[int], None] | None = None,
                 phases: PhaseRecorder | None = None) -> None:
        self.settings = settings
        self.phases = phases or PhaseRecorder(settings.model, settings.worker_id, spawned_at_from_env())
        self.engine_factory = engine_factory
        self.on_listening = on_listening
        self.engine: EngineClient | None = None
        self.state = "starting"
        self.stop = asyncio.Event()
        # redis-py 8 defaults to a 5 s socket timeout; blocking reads here stay far below 30 s.
        self.redis = connect(settings.redis_url, socket_timeout=30)
        self.metrics = RuntimeMetrics(settings.model, self._stats)
        self.outages = RedisOutages(log, self.metrics.redis_outages.inc)
        self.executor: Executor | None = None
        self.exit_status = 0

    def _stats(self) -> EngineStats | None:
        return None if self.engine is None else self.engine.stats()

    def heartbeat(self) -> Heartbeat:
        stats = self._stats()
        return Heartbeat(
            worker_id=self.settings.worker_id, model=self.settings.model, state=self.state,
            running=stats.num_running if stats else 0, waiting=stats.num_waiting if stats else 0,
            kv_usage=stats.kv_cache_usage if stats else 0.0,
            capacity=stats.max_num_seqs if stats else 0, timestamp=time.time())

    def health(self) -> dict:
        active = 0 if self.executor is None else len(self.executor.active)
        return {"state": self.state, "worker_id": self.settings.worker_id,
                "model": self.settings.model, "active_requests": active}

    async def run(self, install_signal_handlers: bool = True) -> int:
        """The whole lifetime; without signal handlers (a worker in a test's thread) set
        `stop` to drain it."""
        if install_signal_handlers:
            loop = asyncio.get_running_loop()
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(sig, self.stop.set)
        server = HealthServer(self.metrics, self.health)
        if self.settings.metrics_port is not None:
            port = await server.start(self.settings.metrics_host, self.settings.metrics_port)
            log.info("metrics and health on port %d", port)
            if self.on_listening:
                self.on_listening(port)
        beats = HeartbeatWriter(self.redis, self.settings.model, self.settings.worker_id,
                                self.settings.heartbeat_interval_s, self.heartbeat, self.outages)
        beat_task = asyncio.create_task(beats.run())
        watch_task: asyncio.Task[None] | None = None
        try:
            self.engine = await asyncio.to_thread(self.engine_factory)
            self.phases.mark("engine_ready")
            if isinstance(self.engine, EngineWithCore):
                watch_task = asyncio.create_task(self._watch_engine_core(self.engine))
            if not self.stop.is_set():
                await self._serve(beats)
        finally:
            if watch_task is not None:
                watch_task.cancel()
            beat_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await beat_task
            await self._last_write(beats.remove, "removing the heartbeat")
            await server.close()
            if self.engine is not None:
                self.engine.shutdown()
            await self.phases.published(_SHUTDOWN_REDIS_S)
            await self.redis.aclose()
        return self.exit_status

    async def _watch_engine_core(self, engine: EngineWithCore) -> None:
        """An engine core that exits under a running worker fails its requests (the engine
        does that); the worker then drains and exits 1 rather than pull work it cannot run."""
        reason = await asyncio.to_thread(engine.wait_exit)
        if self.state == "draining" or self.stop.is_set():
            return
        log.error("%s: stopping the worker", reason)
        self.exit_status = 1
        self.stop.set()

    async def _serve(self, beats: HeartbeatWriter) -> None:
        settings = self.settings
        queues = RequestQueues(self.redis, settings.model, settings.worker_id)
        await retry_transient(queues.ensure_groups, self.outages, "creating consumer groups")
        writer = ResultWriter(self.redis, settings.retention_s, self.outages)
        async with httpx.AsyncClient(timeout=settings.webhook_timeout_s) as http:
            jobs = JobUpdater(self.redis)
            webhooks = WebhookDeliverer(self.redis, http, settings, self.outages)
            webhooks_stop = asyncio.Event()
            webhooks_task = asyncio.create_task(webhooks.run(webhooks_stop))
            executor = Executor(self.engine, self.redis, queues, writer, jobs, self.metrics,
                                self.outages, self.phases)
            self.executor = executor
            puller = Puller(self.engine, queues, executor, settings, self.stop, self.outages)
            recovery = Recovery(self.redis, queues, executor, puller, settings, self.stop,
                                self.outages)
            writer_task = asyncio.create_task(supervise(writer.run, self.outages, "the result writer"))
            cancel_task = asyncio.create_task(supervise(
                lambda: self._listen_for_cancels(executor), self.outages, "the cancel listener"))
            self.state = "ready"
            await self._beat(beats)
            log.info("worker %s ready for model %s", settings.worker_id, settings.model)
            self.phases.publish_soon(self.redis)
            await asyncio.gather(puller.run(), recovery.run())
            self.state = "draining"
            await self._beat(beats)
            log.info("draining %d active requests", len(executor.active))
            await executor.wait_idle()
            webhooks_stop.set()  # undelivered webhooks stay scheduled for the other workers
            await webhooks_task
            await writer.close()
            await writer_task
            cancel_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await cancel_task
            await self._last_write(lambda: self._leave_group(queues), "leaving the consumer group")

    async def _beat(self, beats: HeartbeatWriter) -> None:
        """An immediate beat on a state change; if Redis is down the periodic one catches up."""
        try:
            await beats.beat()
        except TRANSIENT_ERRORS as exc:
            self.outages.failed("heartbeat", exc)

    async def _last_write(self, write: Callable[[], Awaitable[None]], what: str) -> None:
        """A clean-up write of a stopping worker: retried through a short outage, then given up
        (the heartbeat goes stale and other workers tidy up), so the exit status stays 0."""
        try:
            await asyncio.wait_for(retry_transient(write, self.outages, what),
                                   _SHUTDOWN_REDIS_S)
        except (TimeoutError, RedisError) as exc:
            log.warning("%s failed: %r", what, exc)

    async def _listen_for_cancels(self, executor: Executor) -> None:
        """Subscribe, then re-read the cancel flags of active requests (a cancel published while
        we were not subscribed is lost), then stop requests as cancels arrive. A lost connection
        raises out of here and `supervise` subscribes afresh after a back-off."""
        pubsub = self.redis.pubsub(ignore_subscribe_messages=True)
        try:
            await pubsub.subscribe(keys.cancel_channel(self.settings.model))
            await executor.recheck_cancels()
            self.outages.recovered()
            while True:
                message = await pubsub.get_message(timeout=1.0)
                if message is not None and message["type"] == "message":
                    data = message["data"]
                    executor.cancel(data.decode() if isinstance(data, bytes) else data)
        finally:
            with contextlib.suppress(RedisError, OSError):
                await pubsub.aclose()

    async def _leave_group(self, queues: RequestQueues) -> None:
        for stream in queues.streams:
            pending = await queues.pending_by_consumer(stream)
            if pending.get(self.settings.worker_id) == 0:
                await queues.forget_consumer(stream, self.settings.worker_id)


def registry_engine_factory(spec: Any, phases: PhaseRecorder | None = None,
                            tokenizer: Any | None = None,
                            engine_process: bool | None = None, core: Any = None) -> EngineFactory:
    """Build the engine of a registry `ModelSpec` (called in a thread: loading blocks): the
    generation engine (`AsyncEngine` in a thread, or `ProcessEngine` with its loop in an engine
    core process when `spec.runs_engine_process`; `engine_process` overrides that), for
    `task: embed` the cache-free `EmbeddingEngine`, or with `synthetic_step_ms` the benchmarks'
    model-free synthetic engine. The engine's readiness phases go to `phases`; `tokenizer` is
    one a spare already loaded, `core` the engine-core process it started."""
    own_process = spec.runs_engine_process if engine_process is None else engine_process

    def build() -> EngineClient:
        if spec.synthetic_step_ms is not None:  # a benchmark device: no model, no torch
            return _synthetic_engine(spec, own_process)
        from pagefleet.workers.engine.config import EngineConfig

        if phases is not None:
            phases.mark("imports_done")
        config = EngineConfig(model=spec.source, **spec.engine_kwargs())
        if spec.task == "embed":
            from pagefleet.workers.embed import EmbeddingEngine

            return EmbeddingEngine.from_config(config)
        standby_after_s = spec.scaling.standby_after_s
        if own_process:
            from pagefleet.workers.engine.core_process import ProcessEngine
            from pagefleet.workers.engine.engine_loop import EngineCoreSpec

            engine: Any = ProcessEngine(EngineCoreSpec(config, standby_after_s), tokenizer, core=core)
        else:
            from pagefleet.workers.engine.async_engine import AsyncEngine

            engine = AsyncEngine(config, tokenizer, standby_after_s=standby_after_s)
        if phases is not None:
            phases.extend(engine.phases.phases)
        return engine
    return build


def _synthetic_engine(spec: Any, own_process: bool) -> EngineClient:
    from pagefleet.workers.bench.synthetic_engine import (
        SyntheticCoreSpec,
        SyntheticEngine,
        SyntheticEngineConfig,
    )

    limits = {name: value for name, value in spec.engine_kwargs().items()
              if name in ("max_num_seqs", "max_model_len")}
    config = SyntheticEngineConfig(step_ms=spec.synthetic_step_ms, **limits)
    if own_process:
        from pagefleet.workers.engine.core_process import ProcessEngine

        return ProcessEngine(SyntheticCoreSpec(config))
    return SyntheticEngine(config)


def run_worker(settings: WorkerSettings, engine_factory: EngineFactory,
               on_listening: Callable[[int], None] | None = None,
               phases: PhaseRecorder | None = None) -> int:
    """Run one worker to completion in a fresh event loop; returns the exit status."""
    async def main() -> int:
        return await Worker(settings, engine_factory, on_listening, phases).run()
    return event_loop.run(main())
