"""The engine for servers in one process: many concurrent requests, each an async iterator of
deltas.

The synchronous `LLMEngine` runs in its own thread under an `EngineLoop` (one loop, as the
engine wants); requests and aborts reach it through a command queue, and deltas come back to
each caller's event loop through a `LoopOutbox`. Validating happens in the engine thread, so
the engine's state is touched by one thread only; tokenising does not (`PromptEncoder`), nor
does compiling a grammar. `core_process.ProcessEngine` is the same engine behind a process
boundary, for hosts where the engine loop and the caller's loop should not share one GIL.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

from pagefleet.platform.protocol.phases import PhaseLog
from pagefleet.platform.protocol.sampling import SamplingParams
from pagefleet.workers.engine.config import EngineConfig
from pagefleet.workers.engine.engine_loop import EngineLoop, check_standby_after_s
from pagefleet.workers.engine.llm_engine import LLMEngine
from pagefleet.workers.engine.outputs import EngineStats, RequestDelta
from pagefleet.workers.engine.prompt_encoder import Prompt, PromptEncoder
from pagefleet.workers.engine.thread_bridge import ThreadedLoop


class AsyncEngine:
    """`standby_after_s`: see `EngineLoop` (None: never sleep)."""

    def __init__(self, config: EngineConfig, tokenizer: Any | None = None,
                 standby_after_s: float | None = None) -> None:
        check_standby_after_s(standby_after_s)  # before the model loads
        self.engine = LLMEngine(config, tokenizer)
        self.loop = EngineLoop(self.engine, standby_after_s)
        self.encoder = PromptEncoder(self.engine.tokenizer, self.engine.arch.vocab_size,
                                     self.engine.max_model_len)
        self._threaded = ThreadedLoop(self.loop, "pagefleet-engine")

    @property
    def standby_after_s(self) -> float | None:
        return self.loop.standby_after_s

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
        return self.encoder.max_prompt_chars

    async def tokenize(self, prompt: Prompt) -> list[int]:
        """Token ids of a prompt, encoded off the engine thread (`PromptEncoder.encode`)."""
        return await self.encoder.encode(prompt)

    def add_request(
        self, request_id: str, prompt: Prompt, params: SamplingParams,
        resume: dict[int, list[int]] | None = None,
    ) -> AsyncIterator[RequestDelta]:
        """Stream the request's deltas; raises ValueError (e.g. PromptTooLongError) before the
        first delta for bad input. Leaving the iteration early aborts the request."""
        return self._threaded.stream(request_id, lambda: self._prepare(prompt, params), params,
                                     resume)

    async def _prepare(self, prompt: Prompt, params: SamplingParams) -> list[int]:
        """Off the engine thread: the prompt's ids, and its grammar compiled, so the engine
        thread finds it cached."""
        prompt_ids = await self.encoder.encode(prompt)
        if params.structured_output is not None:
            await asyncio.get_running_loop().run_in_executor(
                self.encoder.executor, self.engine.compile_grammar, params)
        return prompt_ids

    def abort(self, request_id: str) -> None:
        self._threaded.abort(request_id)

    def stats(self) -> EngineStats:
        """A snapshot taken by the engine thread after its latest step."""
        return self._threaded.stats()

    def shutdown(self) -> None:
        self._threaded.stop()
        self.encoder.shutdown()
        self.engine.shutdown()
