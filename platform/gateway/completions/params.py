"""Turn validated OpenAI request bodies into request envelopes for the workers (pure).

A list prompt of k strings becomes k envelopes with ids `{id}-{k}`, like vLLM; their choices
are merged later with index `k * n + i`. Everything a client can get wrong without a
tokenizer is rejected here with OpenAI's 400, before anything is queued.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import msgspec

from pagefleet.platform.gateway.completions.schemas import (
    ChatCompletionRequest,
    CompletionRequest,
    SamplingFields,
)
from pagefleet.platform.gateway.errors import bad_request
from pagefleet.platform.protocol import ChatMessage, RequestEnvelope, SamplingParams
from pagefleet.platform.protocol.embeddings import EncodingFormat
from pagefleet.platform.protocol.messages import ChatOptions, RequestKind
from pagefleet.platform.protocol.sampling import StructuredOutput
from pagefleet.platform.protocol.tools import (
    DEFAULT_TOOL_PARSER,
    ToolParserName,
    ToolSpec,
    forced_output,
    function_names,
)

_OPTIONAL_FLOATS = ("temperature", "top_p", "presence_penalty", "frequency_penalty", "min_p",
                    "repetition_penalty")


@dataclass(frozen=True, slots=True)
class RequestContext:
    """Who asked and when; the same for every envelope of one HTTP request."""

    response_id: str
    owner: str | None
    created_at: float
    deadline: float | None
    max_choices: int
    job_id: str | None = None


@dataclass(frozen=True, slots=True)
class PreparedRequest:
    """What the service queues and how it answers: one envelope per prompt."""

    response_id: str
    model: str
    kind: RequestKind
    envelopes: list[RequestEnvelope]
    n: int
    created: int
    stream: bool
    include_usage: bool
    logprobs: bool
    continuous_usage: bool = False
    encoding_format: EncodingFormat = "float"  # embeddings only

    @property
    def request_ids(self) -> list[str]:
        return [envelope.request_id for envelope in self.envelopes]


def sampling_params(body: SamplingFields, max_tokens: int | None, logprobs: int | None,
                    forced: StructuredOutput | None = None) -> SamplingParams:
    """SamplingParams from the request; its own checks become 400s naming the field.
    `forced` is the grammar a tool choice imposes (it excludes the request's own)."""
    kwargs: dict = {name: getattr(body, name) for name in _OPTIONAL_FLOATS
                    if getattr(body, name) is not None}
    if body.top_k is not None:
        kwargs["top_k"] = body.top_k
    for name in ("ignore_eos", "min_tokens", "skip_special_tokens", "include_stop_str_in_output",
                 "truncate_prompt_tokens", "prompt_logprobs"):
        if getattr(body, name) is not None:
            kwargs[name] = getattr(body, name)
    try:
        return SamplingParams(n=body.num_choices, seed=body.seed, stop=body.stop,
                              stop_token_ids=body.stop_token_ids, max_tokens=max_tokens,
                              logprobs=logprobs, logit_bias=logit_bias(body.logit_bias),
                              structured_output=forced or structured_output(body), **kwargs)
    except (ValueError, TypeError) as exc:
        message = str(exc)
        first = message.split(" ", 1)[0]
        raise bad_request(message, param=first if first.isidentifier() else None) from None


def logit_bias(bias: dict[str, float] | None) -> dict[int, float] | None:
    """OpenAI's string keys as token ids; the vocabulary bound is the worker's to check."""
    if not bias:
        return None
    result = {}
    for key, value in bias.items():
        if not key.isdigit():
            raise bad_request(f"logit_bias keys must be token ids, got {key!r}", param="logit_bias")
        result[int(key)] = value
    return result


def structured_output(body: SamplingFields) -> StructuredOutput | None:
    """The one grammar the output must follow: `response_format` or one `guided_*` extra."""
    chosen: list[tuple[str, StructuredOutput]] = []
    fmt = body.response_format
    if fmt is not None and fmt.type == "json_object":
        chosen.append(("response_format", StructuredOutput(kind="json_object")))
    elif fmt is not None and fmt.type == "json_schema":
        if fmt.json_schema is None or fmt.json_schema.schema_ is None:
            raise bad_request("response_format json_schema needs json_schema.schema",
                              param="response_format")
        chosen.append(("response_format", StructuredOutput(
            kind="json_schema", spec=_canonical_json(fmt.json_schema.schema_))))
    if body.guided_json is not None:
        schema = body.guided_json
        if isinstance(schema, str):
            try:
                schema = json.loads(schema)
            except ValueError:
                raise bad_request("guided_json must be a JSON schema", param="guided_json") from None
        if not isinstance(schema, dict):
            raise bad_request("guided_json must be a JSON schema object", param="guided_json")
        chosen.append(("guided_json", StructuredOutput(kind="json_schema", spec=_canonical_json(schema))))
    if body.guided_regex is not None:
        chosen.append(("guided_regex", StructuredOutput(kind="regex", spec=body.guided_regex)))
    if body.guided_choice is not None:
        if not body.guided_choice or not all(body.guided_choice):
            raise bad_request("guided_choice must be a non-empty list of non-empty strings",
                              param="guided_choice")
        chosen.append(("guided_choice", StructuredOutput(kind="choice",
                                                         spec=json.dumps(body.guided_choice))))
    if body.guided_grammar is not None:
        chosen.append(("guided_grammar", StructuredOutput(kind="grammar", spec=body.guided_grammar)))
    if len(chosen) > 1:
        raise bad_request("only one of response_format, guided_json, guided_regex, guided_choice "
                          "and guided_grammar may be given", param=chosen[1][0])
    return chosen[0][1] if chosen else None


def _canonical_json(value: object) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


def prompt_list(prompt: object, param: str = "prompt") -> list[str | list[int]]:
    """OpenAI's four prompt shapes as a list of single prompts (text or token ids); `param`
    names the field in the error (embeddings call theirs `input`)."""
    if isinstance(prompt, str):
        return [prompt]
    if isinstance(prompt, list) and prompt:
        if all(isinstance(p, str) for p in prompt):
            return list(prompt)
        if all(isinstance(p, int) and not isinstance(p, bool) for p in prompt):
            return [list(prompt)]
        if all(isinstance(p, list) and p and all(isinstance(t, int) for t in p) for p in prompt):
            return [list(p) for p in prompt]
    raise bad_request(f"{param} must be a string, a list of strings, a list of token ids or a "
                      "list of non-empty token id lists", param=param)


def _check_common(body: SamplingFields, num_prompts: int, context: RequestContext) -> None:
    if body.stream_options is not None and not body.stream:
        raise bad_request("stream_options is only allowed when stream is true", param="stream_options")
    if body.num_choices * num_prompts > context.max_choices:
        raise bad_request(f"n times the number of prompts must be at most {context.max_choices}, "
                          f"got {body.num_choices * num_prompts}", param="n")
    if any(isinstance(t, bool) or t < 0 for t in body.stop_token_ids or []):
        raise bad_request("stop_token_ids must be non-negative integers", param="stop_token_ids")


def _prepared(body: SamplingFields, kind: RequestKind, envelopes: list[RequestEnvelope],
              context: RequestContext, logprobs: bool) -> PreparedRequest:
    return PreparedRequest(
        response_id=context.response_id, model=body.model, kind=kind, envelopes=envelopes,
        n=body.num_choices, created=int(context.created_at), stream=bool(body.stream),
        include_usage=bool(body.stream_options and body.stream_options.include_usage),
        continuous_usage=bool(body.stream_options and body.stream_options.continuous_usage_stats),
        logprobs=logprobs,
    )


def prepare_completion(body: CompletionRequest, context: RequestContext) -> PreparedRequest:
    if body.suffix:
        raise bad_request("suffix is not supported", param="suffix")
    prompts = prompt_list(body.prompt)
    _check_common(body, len(prompts), context)
    if body.echo and not all(isinstance(p, str) for p in prompts):
        raise bad_request("echo needs text prompts (token id prompts have no text to echo)",
                          param="echo")
    params = sampling_params(body, body.max_tokens, body.logprobs)
    if body.echo and body.logprobs is not None and params.prompt_logprobs is None:
        params = msgspec.structs.replace(params, prompt_logprobs=body.logprobs)  # echo's logprobs
    envelopes = [
        RequestEnvelope(
            request_id=f"{context.response_id}-{k}", model=body.model, kind="completion",
            params=params, prompt=prompt, created_at=context.created_at,
            deadline=context.deadline, owner=context.owner, job_id=context.job_id,
            return_token_ids=bool(body.return_token_ids), echo=bool(body.echo),
        )
        for k, prompt in enumerate(prompts)
    ]
    return _prepared(body, "completion", envelopes, context, body.logprobs is not None)


def chat_messages(body: ChatCompletionRequest) -> list[ChatMessage]:
    """Messages with text-part lists flattened to strings (the engine takes text only)."""
    if not body.messages:
        raise bad_request("messages must be a non-empty list", param="messages")
    messages = []
    for message in body.messages:
        content = message.content
        if isinstance(content, list):
            if not all(isinstance(p, dict) and p.get("type") == "text"
                       and isinstance(p.get("text"), str) for p in content):
                raise bad_request("only text content parts are supported", param="messages")
            content = "".join(p["text"] for p in content)
        tool_calls = None
        if message.tool_calls:
            if message.role != "assistant":
                raise bad_request("only assistant messages carry tool_calls", param="messages")
            tool_calls = [msgspec.to_builtins(call) for call in message.tool_calls]
        if message.role == "tool" and not message.tool_call_id:
            raise bad_request("a tool message needs tool_call_id", param="messages")
        messages.append(ChatMessage(role=message.role, content=content, name=message.name,
                                    tool_calls=tool_calls, tool_call_id=message.tool_call_id))
    return messages


def tool_spec(body: ChatCompletionRequest, parser: ToolParserName) -> ToolSpec | None:
    """What the request asked of its tools; None when the model is not to see any (no tools,
    or `tool_choice: none`)."""
    choice = body.tool_choice
    if body.tools is not None and not body.tools:
        raise bad_request("tools must hold at least one tool", param="tools")
    if not body.tools:
        if choice is not None and choice != "none":
            raise bad_request("tool_choice needs tools", param="tool_choice")
        if body.parallel_tool_calls is not None:
            raise bad_request("parallel_tool_calls needs tools", param="parallel_tool_calls")
        return None
    if choice == "none":
        return None
    tools = [msgspec.to_builtins(tool) for tool in body.tools]
    names = function_names(tools)
    if len(set(names)) != len(names):
        raise bad_request("tools must have distinct function names", param="tools")
    try:
        if isinstance(choice, str) or choice is None:
            return ToolSpec(tools=tools, choice=choice or "auto", parser=parser,
                            parallel=body.parallel_tool_calls is not False)
        return ToolSpec(tools=tools, choice="named", name=choice.function.name, parser=parser,
                        parallel=False)
    except ValueError as exc:
        raise bad_request(str(exc), param="tool_choice") from None


def chat_options(body: ChatCompletionRequest) -> ChatOptions | None:
    if body.add_generation_prompt is None and body.continue_final_message is None:
        return None
    options = ChatOptions(add_generation_prompt=body.add_generation_prompt is not False
                          and not body.continue_final_message,
                          continue_final_message=bool(body.continue_final_message))
    if options.continue_final_message:
        if body.add_generation_prompt:
            raise bad_request("continue_final_message and add_generation_prompt cannot both be "
                              "true", param="continue_final_message")
        if body.messages[-1].role != "assistant":
            raise bad_request("continue_final_message needs an assistant message last",
                              param="continue_final_message")
    return options


def prepare_chat(body: ChatCompletionRequest, context: RequestContext,
                 tool_parser: ToolParserName = DEFAULT_TOOL_PARSER) -> PreparedRequest:
    """`tool_parser` is the registry's format for the model's tool calls."""
    messages = chat_messages(body)
    _check_common(body, 1, context)
    if body.top_logprobs is not None and not body.logprobs:
        raise bad_request("top_logprobs requires logprobs to be true", param="top_logprobs")
    logprobs = (body.top_logprobs or 0) if body.logprobs else None
    max_tokens = body.max_completion_tokens if body.max_completion_tokens is not None else body.max_tokens
    tools = tool_spec(body, tool_parser)
    forced = forced_output(tools) if tools is not None else None
    if forced is not None and structured_output(body) is not None:
        raise bad_request("tool_choice required or a named function cannot be combined with "
                          "response_format or guided_* fields", param="tool_choice")
    params = sampling_params(body, max_tokens, logprobs, forced)
    envelope = RequestEnvelope(
        request_id=context.response_id, model=body.model, kind="chat", params=params,
        messages=messages, created_at=context.created_at, deadline=context.deadline,
        owner=context.owner, job_id=context.job_id, tools=tools, chat_options=chat_options(body),
        return_token_ids=bool(body.return_token_ids),
    )
    return _prepared(body, "chat", [envelope], context, bool(body.logprobs))
