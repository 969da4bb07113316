"""Between an engine that runs in its own thread and the event loops of its callers.

An engine thread takes commands from a queue (`Add`, `Abort`, `Stop`) and hands each step's
deltas back through `deliver_step`, which fills each request's `Sink` queue in its caller's
loop.
`AsyncEngine` (the real engine) and the benchmarks' `SyntheticEngine` both use these pieces, so
the synthetic engine costs the caller's loop exactly what the real one does per step. Nothing
here imports torch.
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
from collections.abc import AsyncIterator
from dataclasses import dataclass

from pagefleet.platform.protocol.sampling import SamplingParams
from pagefleet.workers.engine.outputs import RequestDelta


class Sink:
    """Delivers deltas (or an exception) from the engine thread to one caller's event loop."""

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
    sink: Sink


@dataclass(frozen=True, slots=True)
class Abort:
    request_id: str


@dataclass(frozen=True, slots=True)
class Stop:
    pass


Command = Add | Abort | Stop


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



async def stream_deltas(commands: queue.SimpleQueue[Command], request_id: str, prompt_ids: list[int],
                        params: SamplingParams, resume: dict[int, list[int]] | None
                        ) -> AsyncIterator[RequestDelta]:
    """Queue a request for the engine thread and yield its deltas up to the finished one; an
    error the engine thread put for it (a refused request, a failed step) raises here. Leaving
    early (`aclose`) aborts the request. Both engines stream through this, so the synthetic
    one costs its callers per token what the real one does."""
    sink = Sink(asyncio.get_running_loop())
    commands.put(Add(request_id, prompt_ids, params, resume, sink))
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
            commands.put(Abort(request_id))
