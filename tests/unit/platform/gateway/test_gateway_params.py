from __future__ import annotations

import msgspec
import pytest

from pagefleet.platform.gateway.completions.params import (
    RequestContext,
    prepare_chat,
    prepare_completion,
    prompt_list,
)
from pagefleet.platform.gateway.completions.schemas import ChatCompletionRequest, CompletionRequest
from pagefleet.platform.gateway.errors import OpenAIError

CONTEXT = RequestContext(response_id="cmpl-1", owner="o", created_at=100.0, deadline=160.0,
                         max_choices=8)


def completion(**body) -> CompletionRequest:
    return msgspec.convert({"model": "m", **body}, CompletionRequest)


def chat(**body) -> ChatCompletionRequest:
    return msgspec.convert({"model": "m", "messages": [{"role": "user", "content": "hi"}], **body},
                           ChatCompletionRequest)


@pytest.mark.parametrize(("prompt", "expected"), [
    ("text", ["text"]),
    (["a", "b"], ["a", "b"]),
    ([1, 2, 3], [[1, 2, 3]]),
    ([[1], [2, 3]], [[1], [2, 3]]),
])
def test_prompt_shapes(prompt: object, expected: list) -> None:
    assert prompt_list(prompt) == expected


@pytest.mark.parametrize("prompt", [[], ["a", 1], [[1], []], [[1], "a"], [True]])
def test_bad_prompt_shapes_are_400(prompt: object) -> None:
    with pytest.raises(OpenAIError) as info:
        prompt_list(prompt)
    assert (info.value.status, info.value.body.param) == (400, "prompt")


def test_list_prompt_becomes_one_envelope_per_prompt() -> None:
    prepared = prepare_completion(completion(prompt=["a", "b", "c"], n=2), CONTEXT)
    assert prepared.request_ids == ["cmpl-1-0", "cmpl-1-1", "cmpl-1-2"]
    assert [e.prompt for e in prepared.envelopes] == ["a", "b", "c"]
    assert all(e.params.n == 2 and e.deadline == 160.0 and e.owner == "o" for e in prepared.envelopes)
    assert prepared.envelopes[0].params.max_tokens == 16  # OpenAI's completions default


def test_vllm_extras_reach_sampling_params() -> None:
    params = prepare_completion(completion(prompt="x", top_k=5, min_p=0.2, repetition_penalty=1.3,
                                           ignore_eos=True, stop_token_ids=[7], min_tokens=2,
                                           seed=11, stop="END", logprobs=3),
                                CONTEXT).envelopes[0].params
    assert (params.top_k, params.min_p, params.repetition_penalty, params.ignore_eos) == (5, 0.2, 1.3, True)
    assert (params.stop_token_ids, params.min_tokens, params.seed, params.stop) == ([7], 2, 11, ["END"])
    assert params.logprobs == 3


@pytest.mark.parametrize(("body", "param"), [
    ({"prompt": [1, 2], "echo": True}, "echo"),
    ({"prompt_logprobs": 21}, "prompt_logprobs"),
    ({"truncate_prompt_tokens": 0}, "truncate_prompt_tokens"),
    ({"n": 0}, "n"),
    ({"n": 9}, "n"),  # over max_choices
    ({"temperature": -0.5}, "temperature"),
    ({"stream_options": {"include_usage": True}}, "stream_options"),
    ({"logprobs": 21}, "logprobs"),
])
def test_completion_rejections_name_the_field(body: dict, param: str) -> None:
    with pytest.raises(OpenAIError) as info:
        prepare_completion(completion(**{"prompt": "x", **body}), CONTEXT)
    assert (info.value.status, info.value.body.param) == (400, param)


def test_n_counts_every_prompt_against_max_choices() -> None:
    with pytest.raises(OpenAIError):
        prepare_completion(completion(prompt=["a", "b", "c"], n=3), CONTEXT)


def test_chat_flattens_text_parts_and_maps_logprobs() -> None:
    body = chat(messages=[{"role": "user", "content": [{"type": "text", "text": "a"},
                                                       {"type": "text", "text": "b"}]}],
                logprobs=True, top_logprobs=4, max_tokens=9, max_completion_tokens=5)
    prepared = prepare_chat(body, CONTEXT)
    envelope = prepared.envelopes[0]
    assert envelope.request_id == "cmpl-1" and envelope.kind == "chat"
    assert envelope.messages[0].content == "ab"
    assert envelope.params.logprobs == 4
    assert envelope.params.max_tokens == 5  # max_completion_tokens wins
    assert prepared.logprobs


def test_chat_defaults_to_no_token_limit_and_no_logprobs() -> None:
    envelope = prepare_chat(chat(), CONTEXT).envelopes[0]
    assert envelope.params.max_tokens is None and envelope.params.logprobs is None


@pytest.mark.parametrize(("body", "param"), [
    ({"messages": []}, "messages"),
    ({"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {}}]}]}, "messages"),
    ({"top_logprobs": 2}, "top_logprobs"),
])
def test_chat_rejections(body: dict, param: str) -> None:
    with pytest.raises(OpenAIError) as info:
        prepare_chat(chat(**body), CONTEXT)
    assert info.value.body.param == param


def test_explicit_nulls_mean_defaults() -> None:
    body = chat(n=None, temperature=None, top_p=None, stream=None, logprobs=None, max_tokens=None,
                stop=None, min_tokens=None, ignore_eos=None, seed=None, stream_options=None)
    prepared = prepare_chat(body, CONTEXT)
    params = prepared.envelopes[0].params
    assert (prepared.n, prepared.stream, prepared.logprobs) == (1, False, False)
    assert (params.n, params.temperature, params.min_tokens, params.ignore_eos) == (1, 1.0, 0, False)


def test_structured_output_and_bias_reach_the_sampling_params() -> None:
    schema = {"type": "object", "properties": {"a": {"type": "integer"}}}
    params = prepare_chat(chat(response_format={"type": "json_schema",
                                                "json_schema": {"name": "x", "schema": schema}},
                               logit_bias={"5": -100, "7": 2.5}, seed=-3), CONTEXT).envelopes[0].params
    assert params.structured_output.kind == "json_schema"
    assert msgspec.json.decode(params.structured_output.spec) == schema
    assert params.logit_bias == {5: -100.0, 7: 2.5} and params.seed == -3
    guided = prepare_completion(completion(prompt="x", guided_choice=["yes", "no"]), CONTEXT)
    spec = guided.envelopes[0].params.structured_output
    assert spec.kind == "choice" and msgspec.json.decode(spec.spec) == ["yes", "no"]
    text = prepare_chat(chat(response_format={"type": "text"}), CONTEXT).envelopes[0].params
    assert text.structured_output is None


TOOLS = [{"type": "function", "function": {"name": "get_weather", "parameters": {
    "type": "object", "properties": {"city": {"type": "string"}}}}},
         {"type": "function", "function": {"name": "get_time"}}]


def test_tools_become_a_tool_spec_with_the_registry_parser() -> None:
    envelope = prepare_chat(chat(tools=TOOLS), CONTEXT, "llama3_json").envelopes[0]
    assert (envelope.tools.choice, envelope.tools.parser, envelope.tools.parallel) == ("auto", "llama3_json", True)
    assert envelope.params.structured_output is None
    assert prepare_chat(chat(tools=TOOLS, tool_choice="none"), CONTEXT).envelopes[0].tools is None


def test_named_and_required_choices_force_a_grammar() -> None:
    named = prepare_chat(chat(tools=TOOLS, tool_choice={"type": "function", "function": {"name": "get_time"}}),
                         CONTEXT).envelopes[0]
    assert (named.tools.choice, named.tools.name) == ("named", "get_time")
    assert named.params.structured_output.spec == '{"type":"object"}'
    required = prepare_chat(chat(tools=TOOLS, tool_choice="required", parallel_tool_calls=False),
                            CONTEXT).envelopes[0]
    assert '"maxItems":1' in required.params.structured_output.spec


@pytest.mark.parametrize(("body", "param"), [
    ({"tools": []}, "tools"),
    ({"tool_choice": "auto"}, "tool_choice"),
    ({"parallel_tool_calls": True}, "parallel_tool_calls"),
    ({"tools": TOOLS, "tool_choice": {"type": "function", "function": {"name": "nope"}}}, "tool_choice"),
    ({"tools": TOOLS + TOOLS[:1]}, "tools"),
    ({"tools": TOOLS, "tool_choice": "required", "response_format": {"type": "json_object"}}, "tool_choice"),
    ({"messages": [{"role": "tool", "content": "x"}]}, "messages"),
    ({"messages": [{"role": "user", "content": "x", "tool_calls": [
        {"id": "c", "type": "function", "function": {"name": "f", "arguments": "{}"}}]}]}, "messages"),
    ({"continue_final_message": True}, "continue_final_message"),
    ({"messages": [{"role": "assistant", "content": "x"}], "continue_final_message": True,
      "add_generation_prompt": True}, "continue_final_message"),
])
def test_bad_tool_and_template_fields_are_400(body: dict, param: str) -> None:
    with pytest.raises(OpenAIError) as info:
        prepare_chat(chat(**body), CONTEXT)
    assert (info.value.status, info.value.body.param) == (400, param)


def test_tool_history_and_template_options_travel_in_the_envelope() -> None:
    call = {"id": "c1", "type": "function", "function": {"name": "get_time", "arguments": "{}"}}
    envelope = prepare_chat(chat(tools=TOOLS, messages=[
        {"role": "user", "content": "time?"}, {"role": "assistant", "content": None, "tool_calls": [call]},
        {"role": "tool", "content": "noon", "tool_call_id": "c1"}, {"role": "assistant", "content": "It is"}],
        continue_final_message=True), CONTEXT).envelopes[0]
    assert envelope.messages[1].tool_calls == [call] and envelope.messages[2].tool_call_id == "c1"
    assert (envelope.chat_options.add_generation_prompt, envelope.chat_options.continue_final_message) == (False, True)
    assert prepare_chat(chat(), CONTEXT).envelopes[0].chat_options is None


def test_echo_with_logprobs_asks_the_worker_for_prompt_logprobs() -> None:
    envelope = prepare_completion(completion(prompt="x y", echo=True, logprobs=2,
                                             return_token_ids=True), CONTEXT).envelopes[0]
    assert (envelope.echo, envelope.return_token_ids, envelope.params.prompt_logprobs) == (True, True, 2)
    plain = prepare_completion(completion(prompt="x", echo=True), CONTEXT).envelopes[0]
    assert plain.params.prompt_logprobs is None
