"""Between an engine loop and the event loops of its callers.

An engine loop (`EngineLoop` for the real engine, the benchmarks' `SyntheticLoop`) takes commands
from a queue (`Add`, `Abort`, `Stop`) and hands what happens to an `Outbox`. In one process
(`AsyncEngine`, `SyntheticEngine`) the loop runs in a thread and its outbox is `LoopOutbox`,
which fills each request's `Sink` queue in its caller's event loop, one wake-up per caller loop
per step. In an engine-core process (`core_process`) the same loops run with an outbox that
writes one message per step to the worker. Nothing here imports torch.
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
import threading
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol

from pagefleet.platform.protocol.sampling import SamplingParams
from pagefleet.workers.engine.outputs import EngineStats, RequestDelta


class Sink:
    """Delivers deltas (or an exception) from another thread to one caller's event loop."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.queue: asyncio.Queue[RequestDelta | BaseException] = asyncio.Queue()

    def put(self, item: RequestDelta | BaseException) -> None:
        """One item on its own (an error, a refused request); a step's deltas go through
        `deliver_step` instead."""
        # A closed caller loop raises RuntimeError: nobody is listening any more.
        with contextlib.suppress(RuntimeError):
            self.loop.call_soon_threadsafe(self.queue.put_nowait, item)


@dataclass(frozen=True, slots=True)
class Add:
    request_id: str
    prompt_ids: list[int]  # tokenised by the caller, off the engine thread
    params: SamplingParams
    resume: dict[int, list[int]] | None
    sink: Sink | None = None  # None in an engine-core process: the outbox knows the way back


@dataclass(frozen=True, slots=True)
class Abort:
    request_id: str


@dataclass(frozen=True, slots=True)
class Stop:
    pass


Command = Add | Abort | Stop


class Outbox(Protocol):
    """Where an engine loop's results go; called from the engine loop's thread only."""

    def accept(self, command: Add) -> None:
        """The engine queued the request: its deltas follow."""
        ...

    def refuse(self, command: Add, error: ValueError) -> None:
        """The engine refused the request (bad input); nothing else follows for it."""
        ...

    def deliver(self, deltas: list[RequestDelta], stats: EngineStats) -> None:
        """A step's (or an abort's) deltas, with the engine's stats after it."""
        ...

    def fail(self, request_ids: list[str], message: str) -> None:
        """A step failed: these requests are gone from the engine and end with an error."""
        ...

    def publish(self, stats: EngineStats) -> None:
        """The engine's stats changed without a step (a request queued, standby)."""
        ...


def fill_queues(batch: list[tuple[Sink, RequestDelta]]) -> None:
    """Runs in the caller's loop: one step's deltas into their requests' queues."""
    for sink, delta in batch:
        sink.queue.put_nowait(delta)


def deliver_step(sinks: dict[str, Sink], deltas: list[RequestDelta]) -> None:
    """Hand a step's deltas to their callers: one wake-up per caller loop per step. A request's
    sink is dropped from `sinks` with its finished delta; deltas without a sink are dropped.

    `call_soon_threadsafe` writes to the loop's self-pipe and takes its lock; once per delta
    that was 64 system calls per step at 64 streams, all while the engine thread held the GIL
    the caller's loop needed. Batched, the loop wakes once and fills every queue."""
    batches: dict[asyncio.AbstractEventLoop, list[tuple[Sink, RequestDelta]]] = {}
    for delta in deltas:
        sink = sinks.get(delta.request_id)
        if sink is None:
            continue
        batches.setdefault(sink.loop, []).append((sink, delta))
        if delta.finished:
            del sinks[delta.request_id]
    for loop, batch in batches.items():
        with contextlib.suppress(RuntimeError):  # a closed caller loop: nobody listens
            loop.call_soon_threadsafe(fill_queues, batch)


class LoopOutbox:
    """The outbox of an engine loop running in a thread of the callers' process: each
    request's deltas go to the sink it came with; `stats` is the latest snapshot."""

    def __init__(self, stats: EngineStats) -> None:
        self.sinks: dict[str, Sink] = {}
        self.stats = stats

    def accept(self, command: Add) -> None:
        assert command.sink is not None, "a request of this process comes with its sink"
        self.sinks[command.request_id] = command.sink

    def refuse(self, command: Add, error: ValueError) -> None:
        assert command.sink is not None, "a request of this process comes with its sink"
        command.sink.put(error)

    def deliver(self, deltas: list[RequestDelta], stats: EngineStats) -> None:
        # Stats first, so a caller that saw its last delta also sees the freed capacity.
        self.stats = stats
        deliver_step(self.sinks, deltas)

    def fail(self, request_ids: list[str], message: str) -> None:
        fail_sinks(self.sinks, request_ids, message)

    def publish(self, stats: EngineStats) -> None:
        self.stats = stats


def fail_sinks(sinks: dict[str, Sink], request_ids: list[str], message: str,
               error: type[RuntimeError] = RuntimeError) -> None:
    """End these requests' streams with `error(message)` (the engine failed under them)."""
    for request_id in request_ids:
        sink = sinks.pop(request_id, None)
        if sink is not None:
            sink.put(error(message))


async def stream_deltas(prepare: Callable[[], Awaitable[list[int]]],
                        submit: Callable[[Sink, list[int]], None], abort: Callable[[], None]
                        ) -> AsyncIterator[RequestDelta]:
    """Await `prepare` (tokenising, checks: a ValueError there raises before any delta), submit
    the request's prompt ids with a fresh sink (`submit` queues it for the engine) and yield its
    deltas up to the finished one; an error the engine put for it (a refused request, a failed
    step) raises here. Leaving early (`aclose`) after the submit calls `abort`. Every engine's
    `add_request` returns this generator itself (no wrapping generator: one hop per token), so
    the synthetic one costs its callers per token what the real one does."""
    prompt_ids = await prepare()
    sink = Sink(asyncio.get_running_loop())
    submit(sink, prompt_ids)
    finished = False
    try:
        while True:
            item = await sink.queue.get()
            if isinstance(item, BaseException):
                finished = True
                raise item
            finished = item.finished
            yield item
            if finished:
                return
    finally:
        if not finished:
            abort()


class ThreadedLoop:
    """An engine loop (`EngineLoop`, `SyntheticLoop`: anything with `stats()` and
    `run(commands, outbox)`) in a daemon thread of this process, and the calls its callers make."""

    def __init__(self, loop: Any, name: str) -> None:
        self.commands: queue.SimpleQueue[Command] = queue.SimpleQueue()
        self.outbox = LoopOutbox(loop.stats())
        self.thread = threading.Thread(target=loop.run, args=(self.commands, self.outbox),
                                       name=name, daemon=True)
        self.thread.start()

    def stream(self, request_id: str, prepare: Callable[[], Awaitable[list[int]]],
               params: SamplingParams, resume: dict[int, list[int]] | None
               ) -> AsyncIterator[RequestDelta]:
        """The request's deltas (`stream_deltas`); close it to abort the request."""
        return stream_deltas(
            prepare,
            lambda sink, prompt_ids: self.commands.put(Add(request_id, prompt_ids, params, resume, sink)),
            lambda: self.abort(request_id))

    def abort(self, request_id: str) -> None:
        self.commands.put(Abort(request_id))

    def stats(self) -> EngineStats:
        """The loop's latest snapshot (after its latest step or command)."""
        return self.outbox.stats

    def stop(self, timeout_s: float = 30.0) -> None:
        """Abort what is left and end the thread."""
        self.commands.put(Stop())
        self.thread.join(timeout=timeout_s)
