"""Request and response bodies of the Responses API (`/v1/responses`).

The request is OpenAI's, less what this gateway cannot honour (refused with 400 naming the
field, like every other endpoint); input items are plain dicts checked in `conversation.py`
because OpenAI accepts messages without a `type`. The `Response` object carries the fields the
SDK expects, with OpenAI's defaults for what does not apply here.
"""

from __future__ import annotations

from typing import Literal

import msgspec

from pagefleet.platform.gateway.completions.schemas import FunctionDefinition, Int64, ToolChoiceWord


class FunctionTool(FunctionDefinition, forbid_unknown_fields=True):
    """A function tool as the Responses API writes it: the definition and its type, flat."""

    type: Literal["function"] = "function"


class FunctionChoice(msgspec.Struct, forbid_unknown_fields=True):
    name: str
    type: Literal["function"] = "function"


class ResponseCreate(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    model: str
    input: str | list[dict]
    instructions: str | None = None
    max_output_tokens: Int64 | None = None
    temperature: float | None = None
    top_p: float | None = None
    stream: bool | None = None
    store: bool | None = None
    previous_response_id: str | None = None
    tools: list[FunctionTool] | None = None
    tool_choice: ToolChoiceWord | FunctionChoice | None = None
    parallel_tool_calls: bool | None = None
    metadata: dict[str, str] | None = None
    user: str | None = None


class OutputText(msgspec.Struct):
    text: str
    type: Literal["output_text"] = "output_text"
    annotations: list = msgspec.field(default_factory=list)


class MessageItem(msgspec.Struct, tag_field="type", tag="message"):
    id: str
    content: list[OutputText]
    role: Literal["assistant"] = "assistant"
    status: str = "completed"


class FunctionCallItem(msgspec.Struct, tag_field="type", tag="function_call"):
    id: str
    call_id: str
    name: str
    arguments: str
    status: str = "completed"


OutputItem = MessageItem | FunctionCallItem


class ResponseUsage(msgspec.Struct):
    input_tokens: int
    output_tokens: int
    total_tokens: int
    input_tokens_details: dict = msgspec.field(default_factory=lambda: {"cached_tokens": 0})
    output_tokens_details: dict = msgspec.field(default_factory=lambda: {"reasoning_tokens": 0})


class ResponseObject(msgspec.Struct, kw_only=True):
    id: str
    created_at: int
    model: str
    status: Literal["completed", "incomplete", "in_progress", "failed"]
    output: list[OutputItem]
    usage: ResponseUsage | None
    tools: list[FunctionTool]
    tool_choice: str | FunctionChoice
    parallel_tool_calls: bool
    instructions: str | None = None
    max_output_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    previous_response_id: str | None = None
    store: bool = True
    metadata: dict[str, str] = msgspec.field(default_factory=dict)
    incomplete_details: dict | None = None
    error: dict | None = None
    text: dict = msgspec.field(default_factory=lambda: {"format": {"type": "text"}})
    object: Literal["response"] = "response"


class DeletedResponse(msgspec.Struct):
    id: str
    deleted: bool = True
    object: Literal["response.deleted"] = "response.deleted"
