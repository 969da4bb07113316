"""Create, retrieve and delete responses: served as one chat completion through the same
queue, workers and result streams (streamed ones from the chat chunk stream, token by token),
stored in Redis per API key with a TTL. A streamed response is stored exactly as a whole one.

A stored response keeps the conversation it ends (its chained history, its input and its
answer as chat messages), so `previous_response_id` continues it without walking the chain.
`store: false` answers without storing, so such a response cannot be retrieved or chained.
"""

from __future__ import annotations

import contextlib
import logging
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from typing import cast

import msgspec
import redis.asyncio as aioredis
from litestar.types import Receive
from redis.exceptions import RedisError

from pagefleet.platform.gateway.completions.params import PreparedRequest, prepare_chat
from pagefleet.platform.gateway.completions.service import ChunkStream, CompletionService
from pagefleet.platform.gateway.errors import ErrorBody, OpenAIError, queue_unavailable
from pagefleet.platform.gateway.responses.conversation import (
    ItemIds,
    assistant_message,
    chat_request,
    input_messages,
    output_items,
)
from pagefleet.platform.gateway.responses.events import ResponseEvents, encode_events
from pagefleet.platform.gateway.responses.schemas import (
    ResponseCreate,
    ResponseObject,
    ResponseUsage,
)
from pagefleet.platform.protocol import keys
from pagefleet.platform.protocol.openai import ChatCompletion, ChatCompletionChunk

logger = logging.getLogger(__name__)


class StoredResponse(msgspec.Struct):
    owner: str
    response: ResponseObject
    messages: list[dict]


def not_found(response_id: str, param: str | None = None) -> OpenAIError:
    return OpenAIError(404, f"Response with id '{response_id}' not found.", param=param,
                       code="response_not_found")


@dataclass(frozen=True, slots=True)
class _Turn:
    """One create call, prepared: the chat request it is served as, and the conversation a
    stored response keeps (its chained history and this input)."""

    body: ResponseCreate
    owner: str
    response_id: str
    created_at: int
    history: list[dict]
    new_messages: list[dict]
    prepared: PreparedRequest


class ResponsesService:
    def __init__(self, completions: CompletionService, redis: aioredis.Redis, retention_s: float) -> None:
        self.completions = completions
        self.redis = redis
        self.retention_ms = int(retention_s * 1000)

    async def create(self, body: ResponseCreate, owner: str, receive: Receive) -> ResponseObject:
        turn = await self._prepare(body, owner)
        completion = cast(ChatCompletion, await self.completions.answer(turn.prepared, receive))
        return await self._finish(turn, completion, ItemIds())

    async def stream(self, body: ResponseCreate, owner: str) -> AsyncIterator[bytes]:
        """The `response.*` events of `body` as the worker's tokens arrive, read from the same
        chat chunk stream `/v1/chat/completions` streams. Returns once the first result event
        has come, so failures before it are still HTTP errors; the response is stored, exactly
        as `create` stores it, before `response.completed` is sent."""
        turn = await self._prepare(body, owner)
        stream = await self.completions.open_stream(turn.prepared)
        return self._events(turn, stream)

    async def _events(self, turn: _Turn, stream: ChunkStream) -> AsyncIterator[bytes]:
        events = ResponseEvents(_opening(turn), ItemIds())
        yield encode_events(events.start())
        async with contextlib.aclosing(stream.batches) as batches:
            async for chunks in batches:
                found: list[dict] = []
                for chunk in chunks:
                    if isinstance(chunk, ErrorBody):
                        yield encode_events([*found, *events.fail(chunk)])
                        return
                    if isinstance(chunk, ChatCompletionChunk):
                        found += events.feed(chunk)
                if found:
                    yield encode_events(found)
        completion = stream.accumulator.chat_completion()
        try:
            response = await self._finish(turn, completion, events.ids)
        except RedisError as exc:  # not stored, so it must not look completed
            logger.warning("could not store %s: %s", turn.response_id, exc)
            yield encode_events(events.fail(queue_unavailable().body))
            return
        yield encode_events(events.finish(response))

    async def _prepare(self, body: ResponseCreate, owner: str) -> _Turn:
        history = []
        if body.previous_response_id is not None:
            history = (await self._load(body.previous_response_id, owner, "previous_response_id")).messages
        new_messages = input_messages(body.input)
        chat = chat_request(body, history, new_messages)
        response_id = f"resp_{uuid.uuid4().hex}"
        context = replace(self.completions.context("resp", owner), response_id=response_id)
        prepared = prepare_chat(chat, context, self.completions.tool_parser(body.model))
        return _Turn(body, owner, response_id, int(context.created_at), history, new_messages, prepared)

    async def _finish(self, turn: _Turn, completion: ChatCompletion, ids: ItemIds) -> ResponseObject:
        """The finished response, stored (unless `store: false`) with its conversation."""
        response = _response_object(turn, completion, ids)
        if turn.body.store is not False:
            messages = [*turn.history, *turn.new_messages, assistant_message(completion)]
            await self.redis.set(keys.stored_response(turn.response_id),
                                 msgspec.json.encode(StoredResponse(turn.owner, response, messages)),
                                 px=self.retention_ms)
        return response

    async def retrieve(self, response_id: str, owner: str) -> ResponseObject:
        return (await self._load(response_id, owner)).response

    async def delete(self, response_id: str, owner: str) -> None:
        await self._load(response_id, owner)
        await self.redis.delete(keys.stored_response(response_id))

    async def _load(self, response_id: str, owner: str, param: str | None = None) -> StoredResponse:
        data = await self.redis.get(keys.stored_response(response_id))
        if data is None:
            raise not_found(response_id, param)
        stored = msgspec.json.decode(data, type=StoredResponse)
        if stored.owner != owner:  # another key's response does not exist for this one
            raise not_found(response_id, param)
        return stored


def _opening(turn: _Turn) -> ResponseObject:
    """The response as it starts: in progress, no output yet."""
    body = turn.body
    return ResponseObject(
        id=turn.response_id, created_at=turn.created_at, model=body.model, status="in_progress",
        output=[], usage=None, tools=body.tools or [], tool_choice=body.tool_choice or "auto",
        parallel_tool_calls=body.parallel_tool_calls is not False, instructions=body.instructions,
        max_output_tokens=body.max_output_tokens, temperature=body.temperature, top_p=body.top_p,
        previous_response_id=body.previous_response_id, store=body.store is not False,
        metadata=body.metadata or {},
    )


def _response_object(turn: _Turn, completion: ChatCompletion, ids: ItemIds) -> ResponseObject:
    incomplete = completion.choices[0].finish_reason == "length"
    usage = completion.usage
    return msgspec.structs.replace(
        _opening(turn), status="incomplete" if incomplete else "completed",
        output=output_items(completion, ids),
        usage=ResponseUsage(usage.prompt_tokens, usage.completion_tokens, usage.total_tokens)
        if usage is not None else None,
        incomplete_details={"reason": "max_output_tokens"} if incomplete else None,
    )
