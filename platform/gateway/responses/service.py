"""Create, retrieve and delete responses: served as one chat completion through the same
queue, workers and result streams, stored in Redis per API key with a TTL.

A stored response keeps the conversation it ends (its chained history, its input and its
answer as chat messages), so `previous_response_id` continues it without walking the chain.
`store: false` answers without storing, so such a response cannot be retrieved or chained.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import replace
from typing import cast

import msgspec
import redis.asyncio as aioredis
from litestar.types import Receive

from pagefleet.platform.gateway.completions.params import prepare_chat
from pagefleet.platform.gateway.completions.service import CompletionService
from pagefleet.platform.gateway.errors import OpenAIError
from pagefleet.platform.gateway.responses.conversation import (
    assistant_message,
    chat_request,
    input_messages,
    output_items,
)
from pagefleet.platform.gateway.responses.schemas import (
    ResponseCreate,
    ResponseObject,
    ResponseUsage,
)
from pagefleet.platform.protocol import keys
from pagefleet.platform.protocol.openai import ChatCompletion


class StoredResponse(msgspec.Struct):
    owner: str
    response: ResponseObject
    messages: list[dict]


def not_found(response_id: str, param: str | None = None) -> OpenAIError:
    return OpenAIError(404, f"Response with id '{response_id}' not found.", param=param,
                       code="response_not_found")


class ResponsesService:
    def __init__(self, completions: CompletionService, redis: aioredis.Redis, retention_s: float) -> None:
        self.completions = completions
        self.redis = redis
        self.retention_ms = int(retention_s * 1000)

    async def create(self, body: ResponseCreate, owner: str, receive: Receive) -> ResponseObject:
        history = []
        if body.previous_response_id is not None:
            history = (await self._load(body.previous_response_id, owner, "previous_response_id")).messages
        new_messages = input_messages(body.input)
        chat = chat_request(body, history, new_messages)
        response_id = f"resp_{uuid.uuid4().hex}"
        context = replace(self.completions.context("resp", owner), response_id=response_id)
        prepared = prepare_chat(chat, context, self.completions.tool_parser(body.model))
        completion = cast(ChatCompletion, await self.completions.answer(prepared, receive))
        response = _response_object(body, response_id, completion)
        if body.store is not False:
            stored = StoredResponse(owner, response, [*history, *new_messages, assistant_message(completion)])
            await self.redis.set(keys.stored_response(response_id), msgspec.json.encode(stored),
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


def _response_object(body: ResponseCreate, response_id: str, completion: ChatCompletion) -> ResponseObject:
    choice = completion.choices[0]
    incomplete = choice.finish_reason == "length"
    usage = completion.usage
    return ResponseObject(
        id=response_id, created_at=int(time.time()), model=body.model,
        status="incomplete" if incomplete else "completed", output=output_items(completion),
        usage=ResponseUsage(usage.prompt_tokens, usage.completion_tokens, usage.total_tokens)
        if usage is not None else None,
        tools=body.tools or [], tool_choice=body.tool_choice or "auto",
        parallel_tool_calls=body.parallel_tool_calls is not False, instructions=body.instructions,
        max_output_tokens=body.max_output_tokens, temperature=body.temperature, top_p=body.top_p,
        previous_response_id=body.previous_response_id, store=body.store is not False,
        metadata=body.metadata or {},
        incomplete_details={"reason": "max_output_tokens"} if incomplete else None,
    )
