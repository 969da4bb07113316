"""Responses API <-> chat completions (pure): input items to chat messages, and a finished
chat completion to output items and the messages a chained response continues from."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field

import msgspec

from pagefleet.platform.gateway.completions.schemas import ChatCompletionRequest
from pagefleet.platform.gateway.errors import bad_request
from pagefleet.platform.gateway.responses.schemas import (
    FunctionCallItem,
    MessageItem,
    OutputItem,
    OutputText,
    ResponseCreate,
)
from pagefleet.platform.protocol.openai import ChatCompletion

_ROLES = ("user", "assistant", "system", "developer")
_TEXT_PARTS = ("input_text", "output_text")


def input_messages(items: str | list[dict]) -> list[dict]:
    """Chat messages of `input`: text is one user message; messages, function calls and their
    outputs map to messages, assistant tool calls and tool messages."""
    if isinstance(items, str):
        return [{"role": "user", "content": items}]
    messages: list[dict] = []
    for item in items:
        kind = item.get("type", "message")
        if kind == "message" and item.get("role") in _ROLES:
            messages.append({"role": item["role"], "content": _text(item.get("content"))})
        elif kind == "function_call" and all(isinstance(item.get(k), str) for k in ("call_id", "name", "arguments")):
            call = {"id": item["call_id"], "type": "function",
                    "function": {"name": item["name"], "arguments": item["arguments"]}}
            if messages and messages[-1]["role"] == "assistant" and messages[-1].get("tool_calls"):
                messages[-1]["tool_calls"].append(call)
            else:
                messages.append({"role": "assistant", "content": None, "tool_calls": [call]})
        elif kind == "function_call_output" and isinstance(item.get("call_id"), str):
            output = item.get("output")
            messages.append({"role": "tool", "tool_call_id": item["call_id"],
                             "content": output if isinstance(output, str) else _text(output)})
        else:
            raise bad_request(f"input items of type {kind!r} are not supported (message, "
                              "function_call and function_call_output are)", param="input")
    if not messages:
        raise bad_request("input must not be empty", param="input")
    return messages


def _text(content: object) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list) and all(isinstance(p, dict) and p.get("type") in _TEXT_PARTS
                                         and isinstance(p.get("text"), str) for p in content):
        return "".join(p["text"] for p in content)
    raise bad_request("only text content is supported in input", param="input")


def chat_request(body: ResponseCreate, history: list[dict], new_messages: list[dict]) -> ChatCompletionRequest:
    """The chat completion a response is served as: instructions (not carried over by
    chaining, as OpenAI does), the chained history, then this input."""
    messages = [*([{"role": "system", "content": body.instructions}] if body.instructions else []),
                *history, *new_messages]
    chat: dict = {"model": body.model, "messages": messages}
    for name, value in (("max_tokens", body.max_output_tokens), ("temperature", body.temperature),
                        ("top_p", body.top_p), ("user", body.user),
                        ("parallel_tool_calls", body.parallel_tool_calls)):
        if value is not None:
            chat[name] = value
    if body.tools:
        chat["tools"] = [{"type": "function", "function": {k: v for k, v in {
            "name": t.name, "description": t.description, "parameters": t.parameters,
            "strict": t.strict}.items() if v is not None}} for t in body.tools]
    if body.tool_choice is not None:
        chat["tool_choice"] = body.tool_choice if isinstance(body.tool_choice, str) else {
            "type": "function", "function": {"name": body.tool_choice.name}}
    try:
        return msgspec.convert(chat, ChatCompletionRequest)
    except msgspec.ValidationError as exc:
        raise bad_request(f"invalid request: {exc}", param="input") from None


@dataclass(frozen=True, slots=True)
class ItemIds:
    """The ids of a response's output items, fixed before its output is known: a stream names
    each item when it opens, and the stored response must carry the same ids (the SDK's stream
    helper checks them). Chat answers hold at most one message, before their calls."""

    stem: str = field(default_factory=lambda: uuid.uuid4().hex)

    def message(self) -> str:
        return f"msg_{self.stem}"

    def function_call(self, index: int) -> str:
        return f"fc_{self.stem}_{index}"


def output_items(completion: ChatCompletion, ids: ItemIds) -> list[OutputItem]:
    message = completion.choices[0].message
    items: list[OutputItem] = []
    if message.content:
        items.append(MessageItem(id=ids.message(), content=[OutputText(message.content)]))
    for index, call in enumerate(message.tool_calls or []):
        items.append(FunctionCallItem(id=ids.function_call(index), call_id=call.id,
                                      name=call.function.name, arguments=call.function.arguments))
    return items


def assistant_message(completion: ChatCompletion) -> dict:
    """The answer as a chat message, for the history a chained response continues."""
    message = completion.choices[0].message
    return {"role": "assistant", "content": message.content,
            "tool_calls": msgspec.to_builtins(message.tool_calls) if message.tool_calls else None}
