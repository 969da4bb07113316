"""Queue a prepared request and answer it from its result streams, whole or as SSE.

Streaming waits for the first event before answering, so an error only the worker can see
(context too long) still becomes a proper HTTP status. If the client goes away, mid-stream or
while a whole answer is being gathered, the request is cancelled (flag + publish) so the
worker frees its KV blocks instead of generating to max_tokens for nobody.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import AsyncIterator

import anyio
import msgspec
from litestar import Response
from litestar.response import Stream
from litestar.types import Receive

from pagefleet.platform.gateway.broker import Broker, DeadlineExceeded, SourcedEvent
from pagefleet.platform.gateway.completions.params import PreparedRequest, RequestContext
from pagefleet.platform.gateway.completions.results import ResultAccumulator
from pagefleet.platform.gateway.errors import ErrorBody, OpenAIError, model_not_found
from pagefleet.platform.gateway.metrics import GatewayMetrics
from pagefleet.platform.gateway.settings import GatewaySettings
from pagefleet.platform.protocol import DeltaEvent, ErrorEvent, FinalEvent, keys

logger = logging.getLogger(__name__)

_SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
_DONE = b"data: [DONE]\n\n"


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
    """Admission (model known, backlog under the cap), queueing and answering."""

    def __init__(self, broker: Broker, settings: GatewaySettings, models: frozenset[str],
                 metrics: GatewayMetrics) -> None:
        self.broker = broker
        self.settings = settings
        self.models = models
        self.metrics = metrics

    def context(self, prefix: str, owner: str, *, job_id: str | None = None,
                deadline: bool = True) -> RequestContext:
        now = time.time()
        return RequestContext(
            response_id=job_id or f"{prefix}-{uuid.uuid4().hex}", owner=owner, created_at=now,
            deadline=now + self.settings.request_timeout_s if deadline else None,
            max_choices=self.settings.max_choices, job_id=job_id,
        )

    async def admit(self, prepared: PreparedRequest, priority: int) -> None:
        """Queue the request, or raise 404 (unknown model) / 429 (backlog over the cap)."""
        if prepared.model not in self.models:
            raise model_not_found(prepared.model)
        backlog = await self.broker.backlog(prepared.model)
        if backlog + len(prepared.envelopes) > self.settings.max_backlog:
            raise OpenAIError(
                429, f"The queue of model `{prepared.model}` is full ({backlog} waiting); retry later.",
                code="queue_full", headers={"Retry-After": str(self.settings.retry_after_s)},
            )
        await self.broker.enqueue(prepared.envelopes, priority)

    async def run(self, prepared: PreparedRequest, receive: Receive) -> Response | Stream:
        """`receive` is the request's ASGI channel (body already read): it reports a disconnect."""
        await self.admit(prepared, keys.PRIORITY_INTERACTIVE)
        deadline = prepared.envelopes[0].deadline or time.time() + self.settings.request_timeout_s
        events = self.broker.events(prepared.request_ids, deadline)
        if prepared.stream:
            return await self._stream(prepared, events)
        return await self._collect(prepared, events, receive)

    async def _collect(self, prepared: PreparedRequest, events: AsyncIterator[SourcedEvent],
                       receive: Receive) -> Response:
        """Gather the whole answer while watching the connection; a client that leaves first
        gets its requests cancelled and a 499 that nobody reads."""
        outcome: Response | Exception | None = None
        async with anyio.create_task_group() as group:
            group.start_soon(self._cancel_on_disconnect, prepared, receive, group.cancel_scope)
            try:
                outcome = await self._gather(prepared, events)
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
            await self.broker.cancel(prepared.model, prepared.request_ids)

    async def _gather(self, prepared: PreparedRequest, events: AsyncIterator[SourcedEvent]) -> Response:
        accumulator = ResultAccumulator(prepared)
        try:
            async for sourced in events:
                event = sourced.event
                if isinstance(event, ErrorEvent):
                    raise event_error(event)
                if isinstance(event, DeltaEvent):
                    accumulator.add_delta(sourced.source, event)
                elif isinstance(event, FinalEvent):
                    accumulator.add_final(sourced.source, event)
        except DeadlineExceeded:
            await self.broker.cancel(prepared.model, prepared.request_ids)
            raise deadline_error() from None
        except OpenAIError:
            await self.broker.cancel(prepared.model, prepared.request_ids)
            raise
        return Response(accumulator.response(), status_code=200)

    async def _stream(self, prepared: PreparedRequest, events: AsyncIterator[SourcedEvent]) -> Stream:
        try:
            first = await anext(events)
        except DeadlineExceeded:
            await self.broker.cancel(prepared.model, prepared.request_ids)
            raise deadline_error() from None
        if isinstance(first.event, ErrorEvent):
            await self.broker.cancel(prepared.model, prepared.request_ids)
            raise event_error(first.event)
        return Stream(self._sse_body(prepared, first, events), media_type="text/event-stream",
                      headers=_SSE_HEADERS)

    async def _sse_body(self, prepared: PreparedRequest, first: SourcedEvent,
                        events: AsyncIterator[SourcedEvent]) -> AsyncIterator[bytes]:
        accumulator = ResultAccumulator(prepared)
        finished = False
        first_token_seen = False
        try:
            for chunk in accumulator.first_chunks():
                yield sse(chunk)
            pending: SourcedEvent | None = first
            while pending is not None:
                event = pending.event
                if isinstance(event, DeltaEvent):
                    if accumulator.add_delta(pending.source, event) is not None:
                        if not first_token_seen:
                            first_token_seen = True
                            self.metrics.observe_ttft(
                                prepared.model, time.time() - prepared.envelopes[0].created_at)
                        yield sse(accumulator.delta_chunk(pending.source, event))
                elif isinstance(event, FinalEvent):
                    for index in accumulator.add_final(pending.source, event):
                        yield sse(accumulator.finish_chunk(index))
                else:
                    yield _error_chunk(event_error(event).body)
                    break
                pending = await anext(events, None)
            else:
                if prepared.include_usage:
                    yield sse(accumulator.usage_chunk())
                finished = True
        except DeadlineExceeded:
            yield _error_chunk(deadline_error().body)
        finally:
            if not finished:
                # The client left, the deadline passed or a sub-request failed: free the
                # workers' blocks. Shielded because a disconnect cancels this task's scope.
                with anyio.CancelScope(shield=True):
                    await self.broker.cancel(prepared.model, prepared.request_ids)
        yield _DONE


def _error_chunk(body: ErrorBody) -> bytes:
    return b"data: " + msgspec.json.encode({"error": body}) + b"\n\n"
