"""Queue a prepared request and answer it from its result streams, whole or as SSE.

Streaming waits for the first event before answering, so an error only the worker can see
(context too long) still becomes a proper HTTP status. If the client goes away, mid-stream or
while a whole answer is being gathered, the request is cancelled (flag + publish) so the
worker frees its KV blocks instead of generating to max_tokens for nobody. If Redis goes away
while a request waits, a whole answer is a 503 and an open stream ends with an error event and
`[DONE]`, as every other failure does.

Admission refuses with 429 + Retry-After what this gateway or the model's queue cannot hold:
more requests waiting here than `max_in_flight`, or a queue at its priority's bound.
"""

from __future__ import annotations

import contextlib
import logging
import time
import uuid
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass

import anyio
import msgspec
from litestar import Response
from litestar.response import Stream
from litestar.types import Receive
from redis.exceptions import RedisError

from pagefleet.platform.gateway.broker import Broker
from pagefleet.platform.gateway.completions.coalesce import coalesce
from pagefleet.platform.gateway.completions.params import PreparedRequest, RequestContext
from pagefleet.platform.gateway.completions.results import ResultAccumulator, WholeResponse
from pagefleet.platform.gateway.delivery import (
    DeadlineExceeded,
    ResultHub,
    ResultsUnavailable,
    SourcedEvent,
    Subscription,
)
from pagefleet.platform.gateway.errors import (
    ErrorBody,
    OpenAIError,
    bad_request,
    model_not_found,
    prompt_too_long,
    queue_unavailable,
)
from pagefleet.platform.gateway.metrics import GatewayMetrics
from pagefleet.platform.gateway.settings import GatewaySettings
from pagefleet.platform.protocol import DeltaEvent, ErrorEvent, FinalEvent, RequestEnvelope, keys
from pagefleet.platform.protocol.messages import input_param
from pagefleet.platform.protocol.openai import ChatCompletionChunk, CompletionChunk
from pagefleet.platform.protocol.tools import DEFAULT_TOOL_PARSER, ToolParserName

logger = logging.getLogger(__name__)

SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
_DONE = b"data: [DONE]\n\n"

StreamChunk = ChatCompletionChunk | CompletionChunk | ErrorBody  # an error ends a stream
Batch = list[SourcedEvent]  # what a request's buffer held at once


def deadline_error() -> OpenAIError:
    return OpenAIError(504, "The request was not completed before its deadline.",
                       code="deadline_exceeded")


def client_closed_error() -> OpenAIError:
    """Nobody reads it; the status (nginx's 499) is for the access log and the metrics."""
    return OpenAIError(499, "The client closed the connection before the answer was ready.",
                       code="client_closed_request")


def event_error(event: ErrorEvent) -> OpenAIError:
    return OpenAIError(event.status, event.message, type=event.type, param=event.param,
                       code=event.code)


def sse(payload: msgspec.Struct) -> bytes:
    return b"data: " + msgspec.json.encode(payload) + b"\n\n"


class CompletionService:
    """Admission (model known, prompt can fit, bounds not reached), queueing and answering.

    `max_model_lens` maps each served model to its context length (None: unknown);
    `embedding_models` (registry `task: embed`) take only embedding requests, refused here
    rather than after a worker's cold start; `tool_parsers` maps models to the format of their
    tool calls (the registry's `tool_parser`).
    """

    def __init__(self, broker: Broker, hub: ResultHub, settings: GatewaySettings,
                 max_model_lens: dict[str, int | None], metrics: GatewayMetrics,
                 embedding_models: frozenset[str] = frozenset(),
                 tool_parsers: dict[str, ToolParserName] | None = None) -> None:
        self.embedding_models = embedding_models
        self.tool_parsers = tool_parsers or {}
        self.broker = broker
        self.hub = hub
        self.settings = settings
        self.models = frozenset(max_model_lens)
        self.max_model_lens = max_model_lens
        self.metrics = metrics

    def tool_parser(self, model: str) -> ToolParserName:
        return self.tool_parsers.get(model, DEFAULT_TOOL_PARSER)

    def context(self, prefix: str, owner: str, *, job_id: str | None = None,
                deadline: bool = True) -> RequestContext:
        now = time.time()
        return RequestContext(
            response_id=job_id or f"{prefix}-{uuid.uuid4().hex}", owner=owner, created_at=now,
            deadline=now + self.settings.request_timeout_s if deadline else None,
            max_choices=self.settings.max_choices, job_id=job_id,
        )

    async def admit(self, prepared: PreparedRequest, priority: int) -> None:
        """Queue the request, or raise 404 (unknown model), 400 (a prompt that cannot fit) or
        429 (the queue at this priority is at its bound)."""
        if prepared.model not in self.models:
            raise model_not_found(prepared.model)
        if prepared.kind != "embedding" and prepared.model in self.embedding_models:
            raise bad_request(f"The model `{prepared.model}` serves embeddings only; use /v1/embeddings.",
                              param="model", code="model_not_generative")
        self._check_prompt_size(prepared)
        backlog = await self.broker.backlog(prepared.model, priority)
        if backlog + len(prepared.envelopes) > self.settings.backlog_bound(priority):
            raise OpenAIError(
                429, f"The queue of model `{prepared.model}` is full ({backlog} waiting); retry later.",
                code="queue_full", headers=self._retry_after())
        await self.broker.enqueue(prepared.envelopes, priority)
        await self.broker.wake_if_needed(prepared.model, backlog, self.settings.heartbeat_timeout_s)

    def _retry_after(self) -> dict[str, str]:
        return {"Retry-After": str(self.settings.retry_after_s)}

    def _check_prompt_size(self, prepared: PreparedRequest) -> None:
        """A prompt of more characters than `max_model_len * max_chars_per_token` (or more
        token ids than `max_model_len`) cannot fit whatever the tokenizer does: refuse it here
        rather than have a worker tokenise megabytes to find out."""
        max_model_len = self.max_model_lens.get(prepared.model)
        if max_model_len is None:
            return
        max_chars = max_model_len * self.settings.max_chars_per_token
        for envelope in prepared.envelopes:
            if isinstance(envelope.prompt, list):
                size, limit, unit = len(envelope.prompt), max_model_len, "tokens"
            else:
                size, limit, unit = prompt_chars(envelope), max_chars, "characters"
            if size > limit:
                raise prompt_too_long(max_model_len, f"{size} {unit}", input_param(prepared.kind))

    async def run(self, prepared: PreparedRequest, receive: Receive) -> Response | Stream:
        """`receive` is the request's ASGI channel (body already read): it reports a disconnect."""
        if not prepared.stream:
            return Response(await self.answer(prepared, receive), status_code=200)
        stream = await self.open_stream(prepared)
        return Stream(_sse_body(stream.batches), media_type="text/event-stream", headers=SSE_HEADERS)

    async def answer(self, prepared: PreparedRequest, receive: Receive) -> WholeResponse:
        """The whole answer of a request that does not stream (also what /v1/responses builds on)."""
        subscription, batches = await self._open(prepared)
        try:
            return await self._collect(prepared, batches, receive)
        finally:
            subscription.close()

    async def _open(self, prepared: PreparedRequest) -> tuple[Subscription, AsyncIterator[Batch]]:
        """Subscribe to the request's results, then queue it (so no event can be missed)."""
        if self.hub.in_flight >= self.settings.max_in_flight:
            raise OpenAIError(429, "This gateway is at its limit of requests in flight; retry later.",
                              code="gateway_busy", headers=self._retry_after())
        subscription = self.hub.subscribe(prepared.request_ids)
        try:
            await self.admit(prepared, keys.PRIORITY_INTERACTIVE)
        except BaseException:
            subscription.close()
            raise
        deadline = prepared.envelopes[0].deadline or time.time() + self.settings.request_timeout_s
        return subscription, subscription.batches(deadline)

    async def cancel_quietly(self, prepared: PreparedRequest) -> None:
        """Cancel on the way out; with Redis gone the worker finds out from its own side."""
        try:
            await self.broker.cancel(prepared.model, prepared.request_ids)
        except (RedisError, OSError) as exc:
            logger.warning("could not cancel %s: %s", prepared.response_id, exc)

    async def _collect(self, prepared: PreparedRequest, batches: AsyncIterator[Batch],
                       receive: Receive) -> WholeResponse:
        """Gather the whole answer while watching the connection; a client that leaves first
        gets its requests cancelled and a 499 that nobody reads."""
        outcome: WholeResponse | Exception | None = None
        async with anyio.create_task_group() as group:
            group.start_soon(self._cancel_on_disconnect, prepared, receive, group.cancel_scope)
            try:
                outcome = await self._gather(prepared, batches)
            except Exception as exc:  # re-raised below: the group would wrap it in a group
                outcome = exc
            group.cancel_scope.cancel()
        if outcome is None:  # the watcher cancelled the gathering
            raise client_closed_error()
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    async def _cancel_on_disconnect(self, prepared: PreparedRequest, receive: Receive,
                                    gathering: anyio.CancelScope) -> None:
        while (await receive())["type"] != "http.disconnect":
            pass
        gathering.cancel()  # first, so the aborted final the cancel provokes is not answered
        with anyio.CancelScope(shield=True):  # `gathering` covers this task too
            await self.cancel_quietly(prepared)

    @contextlib.asynccontextmanager
    async def _cancel_and_translate(self, prepared: PreparedRequest) -> AsyncIterator[None]:
        """Waiting for results failed before anything was sent: cancel the request (so the worker
        frees its blocks) and answer with the HTTP error the failure means (504 for a passed
        deadline, 503 for Redis gone)."""
        try:
            yield
        except DeadlineExceeded:
            await self.cancel_quietly(prepared)
            raise deadline_error() from None
        except ResultsUnavailable:
            await self.cancel_quietly(prepared)
            raise queue_unavailable() from None

    async def _gather(self, prepared: PreparedRequest,
                      batches: AsyncIterator[Batch]) -> WholeResponse:
        accumulator = ResultAccumulator(prepared)
        async with self._cancel_and_translate(prepared):
            try:
                async for batch in batches:
                    for sourced in batch:
                        event = sourced.event
                        if isinstance(event, ErrorEvent):
                            raise event_error(event)
                        if isinstance(event, DeltaEvent):
                            accumulator.add_delta(sourced.source, event)
                        elif isinstance(event, FinalEvent):
                            accumulator.add_final(sourced.source, event)
            except OpenAIError:
                await self.cancel_quietly(prepared)
                raise
        return accumulator.response()

    async def open_stream(self, prepared: PreparedRequest) -> ChunkStream:
        """Queue the request and wait for its first event, so that a failure before it (unknown
        model, full queue, context too long, deadline) is still an HTTP error; then hand over
        the chunks as they come. Chat streams and /v1/responses streams both read this."""
        subscription, batches = await self._open(prepared)
        try:
            async with self._cancel_and_translate(prepared):
                first = await anext(batches)
            if isinstance(first[0].event, ErrorEvent):
                await self.cancel_quietly(prepared)
                raise event_error(first[0].event)
        except BaseException:
            subscription.close()
            raise
        accumulator = ResultAccumulator(prepared)
        return ChunkStream(self._chunks(prepared, accumulator, subscription, first, batches),
                           accumulator)

    async def _chunks(self, prepared: PreparedRequest, accumulator: ResultAccumulator,
                      subscription: Subscription, first: Batch,
                      batches: AsyncIterator[Batch]) -> AsyncIterator[list[StreamChunk]]:
        """The chunks of each batch of events together (the first batch's after the chat
        roles), so the SSE body sends what is ready at once in one write."""
        finished = False
        first_token_seen = False
        try:
            chunks: list[StreamChunk] = list(accumulator.first_chunks())
            pending: Batch | None = first
            while pending is not None:
                events = coalesce(accumulator.record_deltas(pending))
                if not first_token_seen and any(isinstance(e.event, DeltaEvent) for e in events):
                    first_token_seen = True
                    self.metrics.observe_ttft(
                        prepared.model, time.time() - prepared.envelopes[0].created_at)
                chunks += batch_chunks(accumulator, events)
                if chunks:
                    yield chunks
                if chunks and isinstance(chunks[-1], ErrorBody):
                    break
                chunks = []
                pending = await anext(batches, None)
            else:
                if prepared.include_usage:
                    yield [accumulator.usage_chunk()]
                finished = True
        except DeadlineExceeded:
            yield [deadline_error().body]
        except ResultsUnavailable:
            yield [queue_unavailable().body]
        finally:
            subscription.close()
            if not finished:
                # The client left, the deadline passed or a sub-request failed: free the
                # workers' blocks. Shielded because a disconnect cancels this task's scope.
                with anyio.CancelScope(shield=True):
                    await self.cancel_quietly(prepared)


def batch_chunks(accumulator: ResultAccumulator, events: Sequence[SourcedEvent]) -> list[StreamChunk]:
    """The chunks of recorded events in order; an error's body ends them."""
    chunks: list[StreamChunk] = []
    for item in events:
        event = item.event
        if isinstance(event, DeltaEvent):
            chunks += accumulator.delta_chunks(item.source, event)
        elif isinstance(event, FinalEvent):
            for index in accumulator.add_final(item.source, event):
                chunks += accumulator.finish_chunks(index)
        else:
            chunks.append(event_error(event).body)
            break
    return chunks


@dataclass(frozen=True, slots=True)
class ChunkStream:
    """An open stream: `batches` of chunks as the worker's tokens arrive (each batch what was
    ready at once), ending early with one `ErrorBody` if the request fails after its first
    event; once they end without one, `accumulator` holds the whole answer (what a request
    that does not stream gets)."""

    batches: AsyncIterator[list[StreamChunk]]
    accumulator: ResultAccumulator


async def _sse_body(batches: AsyncIterator[list[StreamChunk]]) -> AsyncIterator[bytes]:
    """One write per batch of chunks that were ready together, each chunk its own event."""
    async with contextlib.aclosing(batches):
        async for chunks in batches:
            yield b"".join(_error_chunk(c) if isinstance(c, ErrorBody) else sse(c) for c in chunks)
    yield _DONE


def prompt_chars(envelope: RequestEnvelope) -> int:
    """Characters of a text prompt or of all chat message contents."""
    if isinstance(envelope.prompt, str):
        return len(envelope.prompt)
    total = 0
    for message in envelope.messages or []:
        if isinstance(message.content, str):
            total += len(message.content)
    return total


def _error_chunk(body: ErrorBody) -> bytes:
    return b"data: " + msgspec.json.encode({"error": body}) + b"\n\n"
