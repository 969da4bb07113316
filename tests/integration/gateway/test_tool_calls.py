"""Tool calling through the live gateway and the real worker runtime, with the official openai
client. The scripted engine echoes the prompt's words, so a user message holding a Hermes
`<tool_call>` makes the "model" answer with that call: `auto` parsing, the streamed deltas and
job results are checked on a known output."""

from __future__ import annotations

import json

import openai
import pytest

from tests.integration.gateway.conftest import MODEL, LiveGateway
from tests.integration.gateway.test_jobs import get_job, poll_until, submit

TOOLS = [{"type": "function", "function": {"name": "get_weather", "description": "Weather now",
          "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}]
CALL = '<tool_call>{"name":"get_weather","arguments":{"city":"Paris"}}</tool_call>'


def scripted_call(**extra) -> dict:
    """A request whose scripted answer is ` {CALL}` then a stop at `END`."""
    return {"model": MODEL, "messages": [{"role": "user", "content": f"{CALL} END"}],
            "tools": TOOLS, "stop": ["END"], "max_tokens": 4, **extra}


def test_auto_parses_the_models_call(gateway: LiveGateway) -> None:
    response = gateway.client().chat.completions.create(**scripted_call())
    choice = response.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.content is None
    [call] = choice.message.tool_calls
    assert call.type == "function" and call.id.startswith("call_")
    assert call.function.name == "get_weather"
    assert json.loads(call.function.arguments) == {"city": "Paris"}


def test_streamed_tool_call_deltas_reassemble_to_the_same_call(gateway: LiveGateway) -> None:
    client = gateway.client()
    whole = client.chat.completions.create(**scripted_call()).choices[0].message.tool_calls[0]
    calls: dict[int, dict] = {}
    reasons = []
    content = ""
    for chunk in client.chat.completions.create(**scripted_call(), stream=True):
        for choice in chunk.choices:
            content += choice.delta.content or ""
            reasons.append(choice.finish_reason)
            for delta in choice.delta.tool_calls or []:
                call = calls.setdefault(delta.index, {"id": None, "name": "", "arguments": ""})
                call["id"] = delta.id or call["id"]
                call["name"] += delta.function.name or ""
                call["arguments"] += delta.function.arguments or ""
    assert content == ""
    assert calls[0]["id"].startswith("call_")  # another request: another id
    assert calls == {0: {"id": calls[0]["id"], "name": "get_weather", "arguments": whole.function.arguments}}
    assert [r for r in reasons if r] == ["tool_calls"]


def test_the_stream_helper_of_the_sdk_accumulates_the_call(gateway: LiveGateway) -> None:
    with gateway.client().chat.completions.stream(**scripted_call()) as stream:
        final = stream.get_final_completion()
    [call] = final.choices[0].message.tool_calls
    assert (call.function.name, json.loads(call.function.arguments)) == ("get_weather", {"city": "Paris"})


def test_tool_choice_none_leaves_the_text_alone(gateway: LiveGateway) -> None:
    response = gateway.client().chat.completions.create(**scripted_call(tool_choice="none"))
    assert response.choices[0].message.tool_calls is None
    assert response.choices[0].message.content == f" {CALL} "
    assert response.choices[0].finish_reason == "stop"


def test_plain_text_with_tools_streams_as_content(gateway: LiveGateway) -> None:
    body = {"model": MODEL, "messages": [{"role": "user", "content": "no calls here"}],
            "tools": TOOLS, "max_tokens": 3}
    chunks = list(gateway.client().chat.completions.create(**body, stream=True))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == " no calls here"
    assert chunks[-1].choices[0].finish_reason == "length"


def test_a_conversation_with_tool_results_is_accepted(gateway: LiveGateway) -> None:
    messages = [
        {"role": "user", "content": "weather?"},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "call_1", "type": "function",
             "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}}]},
        {"role": "tool", "tool_call_id": "call_1", "content": "sunny"},
    ]
    response = gateway.client().chat.completions.create(model=MODEL, messages=messages,
                                                        tools=TOOLS, max_tokens=2)
    assert response.choices[0].message.content == " weather? sunny"


def test_job_result_carries_the_same_tool_call(gateway: LiveGateway) -> None:
    client = gateway.client()
    job = submit(client, "/v1/chat/completions", scripted_call())
    done = poll_until(lambda: get_job(client, job["id"]), lambda j: j["status"] == "succeeded")
    choice = done["result"]["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    assert choice["message"]["tool_calls"][0]["function"] == {
        "name": "get_weather", "arguments": '{"city": "Paris"}'}


@pytest.mark.parametrize(("extra", "param"), [
    ({"tool_choice": {"type": "function", "function": {"name": "nope"}}}, "tool_choice"),
    ({"tools": []}, "tools"),
])
def test_bad_tool_requests_are_400(gateway: LiveGateway, extra: dict, param: str) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        gateway.client().chat.completions.create(**{**scripted_call(), **extra})
    assert info.value.body["param"] == param
