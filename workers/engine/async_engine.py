"""The engine for servers: many concurrent requests, each an async iterator of deltas.

The synchronous `LLMEngine` runs in its own thread (one loop, as the engine wants); requests
and aborts reach it through a command queue, and deltas come back to each caller's event loop
with `call_soon_threadsafe`. Tokenising and validating happen in the engine thread too, so the
engine object is touched by one thread only.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import queue
import threading
from collections.abc import AsyncIterator
from dataclasses import dataclass

from pagefleet.platform.protocol.sampling import SamplingParams
from pagefleet.workers.engine.config import EngineConfig
from pagefleet.workers.engine.llm_engine import LLMEngine, Prompt
from pagefleet.workers.engine.outputs import EngineStats, RequestDelta

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class _Add:
    request_id: str
    prompt: Prompt
    params: SamplingParams
    resume: dict[int, list[int]] | None
    sink: _Sink


@dataclass(frozen=True, slots=True)
class _Abort:
    request_id: str


@dataclass(frozen=True, slots=True)
class _Stop:
    pass


class _Sink:
    """Delivers deltas (or an exception) from the engine thread to one caller's event loop."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.queue: asyncio.Queue[RequestDelta | BaseException] = asyncio.Queue()

    def put(self, item: RequestDelta | BaseException) -> None:
        # A closed caller loop raises RuntimeError: nobody is listening any more.
        with contextlib.suppress(RuntimeError):
            self.loop.call_soon_threadsafe(self.queue.put_nowait, item)


class AsyncEngine:
    def __init__(self, config: EngineConfig) -> None:
        self.engine = LLMEngine(config)
        self._commands: queue.SimpleQueue[_Add | _Abort | _Stop] = queue.SimpleQueue()
        self._sinks: dict[str, _Sink] = {}
        self._stats = self.engine.stats()
        self._thread = threading.Thread(target=self._loop, name="pagefleet-engine", daemon=True)
        self._thread.start()

    @property
    def tokenizer(self):
        return self.engine.tokenizer

    @property
    def max_model_len(self) -> int:
        return self.engine.max_model_len

    @property
    def config(self) -> EngineConfig:
        return self.engine.config

    async def add_request(
        self, request_id: str, prompt: Prompt, params: SamplingParams,
        resume: dict[int, list[int]] | None = None,
    ) -> AsyncIterator[RequestDelta]:
        """Stream the request's deltas; raises ValueError (e.g. PromptTooLongError) before the
        first delta for bad input. Leaving the iteration early aborts the request."""
        sink = _Sink(asyncio.get_running_loop())
        self._commands.put(_Add(request_id, prompt, params, resume, sink))
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
                self.abort(request_id)

    def abort(self, request_id: str) -> None:
        self._commands.put(_Abort(request_id))

    def stats(self) -> EngineStats:
        """A snapshot taken by the engine thread after its latest step."""
        return self._stats

    def shutdown(self) -> None:
        self._commands.put(_Stop())
        self._thread.join(timeout=30)
        self.engine.shutdown()

    # ---- engine thread --------------------------------------------------------------------

    def _loop(self) -> None:
        while True:
            block = not self.engine.has_unfinished()
            try:
                while True:
                    command = self._commands.get(block=block)
                    block = False
                    if isinstance(command, _Stop):
                        self._abort_all()
                        return
                    self._handle(command)
            except queue.Empty:
                pass
            if not self.engine.has_unfinished():
                self._stats = self.engine.stats()
                continue
            try:
                deltas = self.engine.step()
            except Exception as exc:  # the step failed: fail every request rather than hang them
                logger.exception("engine step failed")
                self._fail_all(exc)
                continue
            self._deliver(deltas)

    def _handle(self, command: _Add | _Abort) -> None:
        if isinstance(command, _Abort):
            self._deliver(self.engine.abort(command.request_id))
            return
        try:
            self.engine.add_request(command.request_id, command.prompt, command.params, command.resume)
        except ValueError as exc:
            command.sink.put(exc)
            return
        except Exception as exc:  # never let one bad request stop the loop that serves the rest
            logger.exception("could not add request %s", command.request_id)
            command.sink.put(ValueError(f"invalid request: {exc}"))
            return
        self._sinks[command.request_id] = command.sink

    def _deliver(self, deltas: list[RequestDelta]) -> None:
        # Snapshot first, so a caller that saw its last delta also sees the freed blocks.
        self._stats = self.engine.stats()
        for delta in deltas:
            sink = self._sinks.get(delta.request_id)
            if sink is None:
                continue
            sink.put(delta)
            if delta.finished:
                del self._sinks[delta.request_id]

    def _abort_all(self) -> None:
        for request_id in list(self.engine.requests):
            self._deliver(self.engine.abort(request_id))

    def _fail_all(self, exc: Exception) -> None:
        for request_id in list(self.engine.requests):
            self.engine.abort(request_id)
            sink = self._sinks.pop(request_id, None)
            if sink is not None:
                sink.put(RuntimeError(f"engine step failed: {exc}"))
