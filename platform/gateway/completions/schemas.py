"""OpenAI request bodies for /v1/completions and /v1/chat/completions.

Requests accept OpenAI's fields plus vLLM's sampling extras (`top_k`, `min_p`, ...), which the
SDK sends through `extra_body`. A field this gateway does not implement is a 400 naming it, as
OpenAI answers unrecognised arguments (ignoring it would hand the client something other than
what it asked for without telling it); `VENDOR_EXTENSIONS` lists the accepted non-OpenAI
fields. Every optional field accepts an explicit null (many clients send them) meaning its
default. Ranges
are checked by `SamplingParams` so there is one definition of what is valid. The response
bodies are the protocol's (`pagefleet.platform.protocol.openai`), shared with the workers.
"""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec

# What the wire (msgpack) and the engine can carry; the input guard checks raw JSON too.
Int64 = Annotated[int, msgspec.Meta(ge=-(2**63), le=2**63 - 1)]
# msgspec allows one array type per union; params.prompt_list checks the list is homogeneous.
Prompt = str | list[str | Int64 | list[Int64]]
Role = Literal["system", "user", "assistant", "tool", "developer"]


# Accepted fields that OpenAI does not define (vLLM's names); README's API section lists them.
VENDOR_EXTENSIONS = (
    "top_k", "min_p", "repetition_penalty", "ignore_eos", "stop_token_ids", "min_tokens",
    "skip_special_tokens", "include_stop_str_in_output", "guided_json", "guided_regex",
    "guided_choice", "guided_grammar", "add_generation_prompt", "continue_final_message",
    "truncate_prompt_tokens", "prompt_logprobs", "return_token_ids",
)


class StreamOptions(msgspec.Struct, forbid_unknown_fields=True):
    include_usage: bool = False
    continuous_usage_stats: bool = False  # vLLM's: usage so far in every chunk


class JsonSchemaFormat(msgspec.Struct, forbid_unknown_fields=True):
    name: str
    schema_: dict | None = msgspec.field(default=None, name="schema")
    description: str | None = None
    strict: bool | None = None


class ResponseFormat(msgspec.Struct, forbid_unknown_fields=True):
    type: Literal["text", "json_object", "json_schema"]
    json_schema: JsonSchemaFormat | None = None


class SamplingFields(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """Fields both endpoints share; names follow OpenAI, then vLLM."""

    model: str
    n: Int64 | None = None
    temperature: float | None = None
    top_p: float | None = None
    presence_penalty: float | None = None
    frequency_penalty: float | None = None
    seed: Int64 | None = None
    stop: str | list[str] | None = None
    stream: bool | None = None
    stream_options: StreamOptions | None = None
    user: str | None = None
    top_k: Int64 | None = None
    min_p: float | None = None
    repetition_penalty: float | None = None
    ignore_eos: bool | None = None
    stop_token_ids: list[Int64] | None = None
    min_tokens: Int64 | None = None
    skip_special_tokens: bool | None = None
    include_stop_str_in_output: bool | None = None
    logit_bias: dict[str, float] | None = None  # OpenAI's JSON keys are token ids as strings
    response_format: ResponseFormat | None = None
    guided_json: dict | str | None = None
    guided_regex: str | None = None
    guided_choice: list[str] | None = None
    guided_grammar: str | None = None
    truncate_prompt_tokens: Int64 | None = None
    prompt_logprobs: Int64 | None = None
    return_token_ids: bool | None = None

    @property
    def num_choices(self) -> int:
        return 1 if self.n is None else self.n


class CompletionRequest(SamplingFields, kw_only=True):
    prompt: Prompt
    max_tokens: Int64 | None = 16
    echo: bool | None = None
    logprobs: Int64 | None = None
    suffix: str | None = None


class FunctionCallIn(msgspec.Struct, forbid_unknown_fields=True):
    name: str
    arguments: str


class ToolCallIn(msgspec.Struct, forbid_unknown_fields=True):
    id: str
    function: FunctionCallIn
    type: Literal["function"] = "function"


class ChatMessageIn(msgspec.Struct, forbid_unknown_fields=True):
    role: Role
    content: str | list[dict] | None = None
    name: str | None = None
    tool_calls: list[ToolCallIn] | None = None  # assistant messages
    tool_call_id: str | None = None  # tool messages


class FunctionDefinition(msgspec.Struct, forbid_unknown_fields=True):
    name: Annotated[str, msgspec.Meta(pattern=r"^[a-zA-Z0-9_-]{1,64}$")]
    description: str | None = None
    parameters: dict | None = None
    strict: bool | None = None


class ToolIn(msgspec.Struct, forbid_unknown_fields=True):
    function: FunctionDefinition
    type: Literal["function"] = "function"


class NamedFunction(msgspec.Struct, forbid_unknown_fields=True):
    name: str


ToolChoiceWord = Literal["none", "auto", "required"]  # tool_choice short of naming a function


class NamedToolChoice(msgspec.Struct, forbid_unknown_fields=True):
    function: NamedFunction
    type: Literal["function"] = "function"


class ChatCompletionRequest(SamplingFields, kw_only=True):
    messages: list[ChatMessageIn]
    max_tokens: Int64 | None = None
    max_completion_tokens: Int64 | None = None
    logprobs: bool | None = None
    top_logprobs: Int64 | None = None
    tools: list[ToolIn] | None = None
    tool_choice: ToolChoiceWord | NamedToolChoice | None = None
    parallel_tool_calls: bool | None = None
    add_generation_prompt: bool | None = None
    continue_final_message: bool | None = None
