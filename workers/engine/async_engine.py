"""The engine for servers: many concurrent requests, each an async iterator of deltas.

The synchronous `LLMEngine` runs in its own thread (one loop, as the engine wants); requests
and aborts reach it through a command queue, and deltas come back to each caller's event loop
with `call_soon_threadsafe`. Validating happens in the engine thread, so the engine's state is
touched by one thread only; tokenising (and the chat template) does not: a prompt of megabytes
takes seconds to encode, and in the engine thread that would freeze every other stream. It runs
in a one-thread executor instead and the engine gets token ids. The tokenizer is then used by two
threads (encoding here, incremental decoding in the engine thread); HF fast tokenizers allow
that as long as nobody changes their truncation/padding settings, which nothing here does.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import queue
import threading
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from pagefleet.platform.protocol.phases import PhaseLog
from pagefleet.platform.protocol.sampling import SamplingParams
from pagefleet.workers.engine.chat_template import ChatPrompt
from pagefleet.workers.engine.config import EngineConfig
from pagefleet.workers.engine.errors import PromptTooLargeError
from pagefleet.workers.engine.llm_engine import LLMEngine, Prompt
from pagefleet.workers.engine.outputs import EngineStats, RequestDelta
from pagefleet.workers.engine.thread_bridge import (
    Abort,
    Add,
    Command,
    Sink,
    Stop,
    deliver_step,
    stream_deltas,
)

logger = logging.getLogger(__name__)

MAX_CHARS_PER_TOKEN = 32
"""Characters one token can stand for, at most, in any prompt worth tokenising.

Real text averages 3-5 characters per token and the longest tokens of common vocabularies
(runs of spaces, `=====`) hold 16-30, so a prompt with more than `max_model_len * 32`
characters cannot fit the context whatever the tokenizer does. Refusing it before encoding
bounds the tokeniser's work per request by the model's context instead of by the body size.
"""


def prompt_chars(prompt: Prompt) -> int:
    """Characters of text in a prompt: the string, or every string inside chat messages."""
    if isinstance(prompt, str):
        return len(prompt)
    total = 0
    pending: list[Any] = [prompt.messages if isinstance(prompt, ChatPrompt) else prompt]
    while pending:  # iterative: message content may nest (parts lists), never recurse on input
        item = pending.pop()
        if isinstance(item, str):
            total += len(item)
        elif isinstance(item, dict):
            pending.extend(item.values())
        elif isinstance(item, list):
            pending.extend(item)
    return total


class AsyncEngine:
    """`standby_after_s`: with nothing to do for that long the engine sleeps (standby: the
    device memory is freed, the process and its host copy of the weights stay), and the next
    request wakes it first. None: never sleep (idle means the controller's scale to zero)."""

    def __init__(self, config: EngineConfig, tokenizer: Any | None = None,
                 standby_after_s: float | None = None) -> None:
        if standby_after_s is not None and standby_after_s < 0:
            raise ValueError(f"standby_after_s must be at least 0, got {standby_after_s}")
        self.standby_after_s = standby_after_s
        self.engine = LLMEngine(config, tokenizer)
        self._commands: queue.SimpleQueue[Command] = queue.SimpleQueue()
        self._sinks: dict[str, Sink] = {}
        self._stats = self.engine.stats()
        self._tokenizing = ThreadPoolExecutor(max_workers=1, thread_name_prefix="pagefleet-tokenize")
        self._thread = threading.Thread(target=self._loop, name="pagefleet-engine", daemon=True)
        self._thread.start()

    @property
    def phases(self) -> PhaseLog:
        """The readiness phases the engine reached while it was built."""
        return self.engine.phases

    @property
    def tokenizer(self):
        return self.engine.tokenizer

    @property
    def max_model_len(self) -> int:
        return self.engine.max_model_len

    @property
    def config(self) -> EngineConfig:
        return self.engine.config

    @property
    def max_prompt_chars(self) -> int:
        return self.engine.max_model_len * MAX_CHARS_PER_TOKEN

    async def tokenize(self, prompt: Prompt) -> list[int]:
        """Token ids of a prompt, encoded off the engine thread; too much text is refused first
        with `PromptTooLargeError` (see `MAX_CHARS_PER_TOKEN`)."""
        if isinstance(prompt, list) and all(isinstance(t, int) for t in prompt):
            return prompt  # already ids: the engine checks their range
        num_chars = prompt_chars(prompt)
        if num_chars > self.max_prompt_chars:
            raise PromptTooLargeError(num_chars, self.max_prompt_chars, self.max_model_len)
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._tokenizing, self.engine.tokenize, prompt)

    async def add_request(
        self, request_id: str, prompt: Prompt, params: SamplingParams,
        resume: dict[int, list[int]] | None = None,
    ) -> AsyncIterator[RequestDelta]:
        """Stream the request's deltas; raises ValueError (e.g. PromptTooLongError) before the
        first delta for bad input. Leaving the iteration early aborts the request."""
        prompt_ids = await self.tokenize(prompt)
        if params.structured_output is not None:  # compiled here, so the engine thread finds it cached
            await asyncio.get_running_loop().run_in_executor(
                self._tokenizing, self.engine.compile_grammar, params)
        async with contextlib.aclosing(stream_deltas(self._commands, request_id, prompt_ids,
                                                     params, resume)) as deltas:
            async for delta in deltas:
                yield delta

    def abort(self, request_id: str) -> None:
        self._commands.put(Abort(request_id))

    def stats(self) -> EngineStats:
        """A snapshot taken by the engine thread after its latest step."""
        return self._stats

    def shutdown(self) -> None:
        self._commands.put(Stop())
        self._thread.join(timeout=30)
        self._tokenizing.shutdown(wait=False, cancel_futures=True)
        self.engine.shutdown()

    # ---- engine thread --------------------------------------------------------------------

    def _loop(self) -> None:
        while True:
            block = not self.engine.has_unfinished()
            try:
                while True:
                    command = self._commands.get(block=block, timeout=self._idle_timeout(block))
                    block = False
                    if isinstance(command, Stop):
                        self._abort_all()
                        return
                    self._handle(command)
            except queue.Empty:
                if block:  # idle for standby_after_s
                    self._sleep()
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

    def _idle_timeout(self, idle: bool) -> float | None:
        """How long an idle engine waits for a command before it sleeps (None: forever)."""
        if not idle or self.standby_after_s is None or self.engine.is_sleeping:
            return None
        return self.standby_after_s

    def _sleep(self) -> None:
        logger.info("idle for %g s: going to standby", self.standby_after_s)
        self.engine.sleep()
        self._stats = self.engine.stats()

    def _handle(self, command: Add | Abort) -> None:
        if isinstance(command, Abort):
            self._deliver(self.engine.abort(command.request_id))
            return
        if self.engine.is_sleeping:
            self.engine.wake()  # logs its phases
        try:
            self.engine.add_request(command.request_id, command.prompt_ids, command.params,
                                    command.resume)
        except ValueError as exc:
            command.sink.put(exc)
            return
        except Exception as exc:  # never let one bad request stop the loop that serves the rest
            logger.exception("could not add request %s", command.request_id)
            command.sink.put(ValueError(f"invalid request: {exc}"))
            return
        self._sinks[command.request_id] = command.sink

    def _deliver(self, deltas: list[RequestDelta]) -> None:
        """Hand a step's deltas to their callers (one wake-up per caller loop, `deliver_step`)."""
        # Snapshot first, so a caller that saw its last delta also sees the freed blocks.
        self._stats = self.engine.stats()
        deliver_step(self._sinks, deltas)

    def _abort_all(self) -> None:
        for request_id in list(self.engine.requests):
            self._deliver(self.engine.abort(request_id))

    def _fail_all(self, exc: Exception) -> None:
        for request_id in list(self.engine.requests):
            self.engine.abort(request_id)
            sink = self._sinks.pop(request_id, None)
            if sink is not None:
                sink.put(RuntimeError(f"engine step failed: {exc}"))
