"""`EmbeddingEngine`: the worker runtime's engine for `task: embed` models.

It speaks the runtime's `EngineClient` (stats for admission and heartbeats, abort, shutdown)
plus `embed()`. Requests that arrive while a batch runs wait and go together in the next
one, up to `max_num_seqs` inputs and `max_num_batched_tokens` padded tokens, so a burst of
embedding requests costs a few forward passes instead of one each. The forward pass runs in a
thread; everything else stays on the event loop, which owns the futures.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass

from pagefleet.platform.protocol.embeddings import pack_vector
from pagefleet.platform.protocol.sampling import SamplingParams
from pagefleet.workers.embed.embedder import Embedder
from pagefleet.workers.engine.config import EngineConfig
from pagefleet.workers.engine.errors import InvalidParameterError
from pagefleet.workers.engine.outputs import EngineStats, RequestDelta

_CPU_MAX_NUM_BATCHED_TOKENS = 8192  # padded tokens per forward pass when the config leaves it open


@dataclass(frozen=True, slots=True)
class EmbeddingResult:
    embedding: bytes  # little-endian float32 (`protocol.embeddings.pack_vector`), unit length
    num_prompt_tokens: int


@dataclass(slots=True)
class _Pending:
    token_ids: list[int]
    dimensions: int | None
    future: asyncio.Future[EmbeddingResult | None]


class EmbeddingEngine:
    def __init__(self, embedder: Embedder, max_num_seqs: int, max_num_batched_tokens: int) -> None:
        self.embedder = embedder
        self.max_num_seqs = max_num_seqs
        self.max_num_batched_tokens = max(max_num_batched_tokens, embedder.max_model_len)
        self._waiting: dict[str, _Pending] = {}  # arrival order
        self._running: dict[str, _Pending] = {}  # the batch in the forward pass now
        self._prompt_tokens = 0
        self._wake: asyncio.Event | None = None
        self._loop_task: asyncio.Task[None] | None = None

    @classmethod
    def from_config(cls, config: EngineConfig) -> EmbeddingEngine:
        return cls(Embedder.load(config), config.max_num_seqs,
                   config.max_num_batched_tokens or _CPU_MAX_NUM_BATCHED_TOKENS)

    async def embed(self, request_id: str, prompt: str | list[int],
                    dimensions: int | None = None) -> EmbeddingResult | None:
        """The input's vector, or None when `abort` stopped it first. ValueError (before any
        work is queued) for input the model refuses."""
        self.embedder.check_dimensions(dimensions)
        if isinstance(prompt, str):  # a tokenizer may take a while: not on the event loop
            token_ids = await asyncio.to_thread(self.embedder.tokenize, prompt)
        else:
            token_ids = self.embedder.tokenize(prompt)
        future: asyncio.Future[EmbeddingResult | None] = asyncio.get_running_loop().create_future()
        self._waiting[request_id] = _Pending(token_ids, dimensions, future)
        self._ensure_loop().set()
        try:
            return await future
        finally:
            self._waiting.pop(request_id, None)

    def add_request(self, request_id: str, prompt: object, params: SamplingParams,
                    resume: dict[int, list[int]] | None = None) -> AsyncIterator[RequestDelta]:
        raise InvalidParameterError("this model serves embeddings only; use /v1/embeddings", "model")

    def abort(self, request_id: str) -> None:
        """A waiting request leaves the queue; a running one's batch finishes without it."""
        pending = self._waiting.pop(request_id, None) or self._running.get(request_id)
        if pending is not None and not pending.future.done():
            pending.future.set_result(None)

    def stats(self) -> EngineStats:
        return EngineStats(num_running=len(self._running), num_waiting=len(self._waiting),
                           kv_cache_usage=0.0, prefix_cache_hit_rate=0.0,
                           prompt_tokens_total=self._prompt_tokens, generation_tokens_total=0,
                           num_preemptions_total=0, max_num_seqs=self.max_num_seqs, num_kv_blocks=0)

    def shutdown(self) -> None:
        if self._loop_task is not None:
            self._loop_task.cancel()

    def _ensure_loop(self) -> asyncio.Event:
        """The batching task starts with the first request: the engine is built in a thread,
        before any event loop of the runtime is at hand."""
        if self._wake is None:
            self._wake = asyncio.Event()
            self._loop_task = asyncio.create_task(self._run(self._wake), name="embedding-batches")
        return self._wake

    async def _run(self, wake: asyncio.Event) -> None:
        while True:
            await wake.wait()
            wake.clear()
            while self._waiting:
                await self._run_batch(self._next_batch())

    def _next_batch(self) -> dict[str, _Pending]:
        """Oldest first, while the padded batch fits the token budget (one input always fits)."""
        batch: dict[str, _Pending] = {}
        longest = 0
        for request_id in list(self._waiting):
            pending = self._waiting[request_id]
            longest_with = max(longest, len(pending.token_ids))
            if batch and (len(batch) == self.max_num_seqs
                          or (len(batch) + 1) * longest_with > self.max_num_batched_tokens):
                break
            batch[request_id] = self._waiting.pop(request_id)
            longest = longest_with
        return batch

    async def _run_batch(self, running: dict[str, _Pending]) -> None:
        self._running = running
        batch = list(running.values())
        try:
            outputs = await asyncio.to_thread(self.embedder.embed, [p.token_ids for p in batch],
                                              [p.dimensions for p in batch])
        except Exception as exc:  # the batch's requests fail; the engine keeps serving
            for pending in batch:
                if not pending.future.done():
                    pending.future.set_exception(exc)
            return
        finally:
            self._running = {}
        for pending, output in zip(batch, outputs, strict=True):
            self._prompt_tokens += output.num_prompt_tokens
            if not pending.future.done():  # else aborted while it ran
                pending.future.set_result(EmbeddingResult(pack_vector(output.vector.tolist()),
                                                          output.num_prompt_tokens))
