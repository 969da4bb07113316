"""/v1/responses with the official openai client against the live gateway and the real worker
runtime on the scripted engine (its output echoes the words of every message, which shows
what conversation a chained response was given)."""

from __future__ import annotations

import json

import openai
import pytest

from tests.integration.gateway.conftest import KEY_B, MODEL, LiveGateway
from tests.integration.gateway.test_tool_calls import CALL, TOOLS


def test_create_and_retrieve(gateway: LiveGateway) -> None:
    client = gateway.client()
    response = client.responses.create(model=MODEL, input="red green blue", max_output_tokens=3)
    assert response.object == "response" and response.id.startswith("resp_")
    assert response.status == "completed" or response.status == "incomplete"
    assert response.output_text == " red green blue"
    assert response.usage.input_tokens == 3 and response.usage.output_tokens == 3
    again = client.responses.retrieve(response.id)
    assert again.output_text == response.output_text and again.id == response.id


def test_streaming_events_build_the_same_text(gateway: LiveGateway) -> None:
    client = gateway.client()
    events = list(client.responses.create(model=MODEL, input="one two", max_output_tokens=2, stream=True))
    types = [e.type for e in events]
    assert types[0] == "response.created" and types[-1] in ("response.completed", "response.incomplete")
    assert [e.sequence_number for e in events] == list(range(len(events)))
    text = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    assert text == " one two" == events[-1].response.output_text


def test_previous_response_id_continues_the_conversation(gateway: LiveGateway) -> None:
    client = gateway.client()
    first = client.responses.create(model=MODEL, input="alpha", max_output_tokens=1,
                                    instructions="ignored later")
    second = client.responses.create(model=MODEL, input="omega", previous_response_id=first.id,
                                     max_output_tokens=3)
    # the scripted engine echoes the conversation's words: the first answer was " ignored"
    # (the instructions' first word); the chain holds the first input, that answer and the new
    # input, but not the instructions (OpenAI does not carry them over)
    assert first.output_text == " ignored"
    assert second.output_text == " alpha ignored omega"
    assert second.previous_response_id == first.id


def test_store_false_delete_and_owner_isolation(gateway: LiveGateway) -> None:
    client = gateway.client()
    unstored = client.responses.create(model=MODEL, input="x", max_output_tokens=1, store=False)
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(unstored.id)
    stored = client.responses.create(model=MODEL, input="y", max_output_tokens=1)
    with pytest.raises(openai.NotFoundError):
        gateway.client(api_key=KEY_B).responses.retrieve(stored.id)
    with pytest.raises(openai.NotFoundError) as chained:
        gateway.client(api_key=KEY_B).responses.create(model=MODEL, input="z", previous_response_id=stored.id)
    assert chained.value.body["param"] == "previous_response_id"
    client.responses.delete(stored.id)
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(stored.id)


def test_function_calls_and_their_outputs(gateway: LiveGateway) -> None:
    client = gateway.client()
    tools = [{"type": "function", **TOOLS[0]["function"]}]
    response = client.responses.create(model=MODEL, input=CALL, tools=tools, max_output_tokens=1)
    calls = [item for item in response.output if item.type == "function_call"]
    assert len(calls) == 1, response.output
    [call] = calls
    assert call.name == "get_weather" and json.loads(call.arguments) == {"city": "Paris"}
    follow = client.responses.create(
        model=MODEL, previous_response_id=response.id, tools=tools, max_output_tokens=1,
        input=[{"type": "function_call_output", "call_id": call.call_id, "output": "sunny"}])
    assert follow.status in ("completed", "incomplete")


def test_unsupported_fields_and_items_are_400(gateway: LiveGateway) -> None:
    client = gateway.client()
    with pytest.raises(openai.BadRequestError) as unknown:
        client.responses.create(model=MODEL, input="x", reasoning={"effort": "low"})
    assert unknown.value.body["param"] == "reasoning"
    with pytest.raises(openai.BadRequestError) as item:
        client.responses.create(model=MODEL, input=[{"type": "input_image", "image_url": "x"}])
    assert item.value.body["param"] == "input"
