"""/v1/responses with the official openai client against the live gateway and the real worker
runtime on the scripted engine (its output echoes the words of every message, which shows
what conversation a chained response was given; `[eos]` ends it with "stop").

Streaming is shown to be incremental on a gated engine: it emits each request's first token,
then waits for `release()`, so a delta that reaches the client before the release was sent
before the rest of the answer existed."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import openai
import pytest
import redis

from pagefleet.platform.gateway import GatewaySettings
from pagefleet.platform.protocol import keys
from tests.integration.gateway.conftest import KEY_B, MODEL, LiveGateway, serve, write_registry
from tests.integration.gateway.test_tool_calls import CALL, TOOLS
from tests.support.scripted_engine import EOS, HOLD, InProcessWorker, ScriptedEngine

TEXT_EVENTS = ["response.created", "response.in_progress", "response.output_item.added",
               "response.content_part.added", "response.output_text.delta",
               "response.output_text.done", "response.content_part.done",
               "response.output_item.done", "response.completed"]
CALL_EVENTS = ["response.created", "response.in_progress", "response.output_item.added",
               "response.function_call_arguments.delta", "response.function_call_arguments.done",
               "response.output_item.done", "response.completed"]
RESPONSE_TOOLS = [{"type": "function", **TOOLS[0]["function"]}]


@contextmanager
def gated_rig(redis_url: str, tmp_path: Path, model: str,
              request_timeout_s: float = 60) -> Iterator[tuple[LiveGateway, ScriptedEngine]]:
    """A gateway and a worker whose engine holds every request after its first token."""
    engine = ScriptedEngine(max_model_len=64, gate_after_first_token=True)
    worker = InProcessWorker(redis_url, model, engine, retention_s=300).start()
    settings = GatewaySettings(redis_url=redis_url, registry_path=write_registry(
        tmp_path / "registry.yaml", model), request_timeout_s=request_timeout_s)
    try:
        with serve(settings) as live:
            yield live, engine
    finally:
        engine.release()
        worker.stop()


def kinds(events: list) -> list[str]:
    """Event types with runs of the same delta type folded into one."""
    folded: list[str] = []
    for event in events:
        if not (folded and folded[-1] == event.type and event.type.endswith(".delta")):
            folded.append(event.type)
    return folded


def same_output(a: openai.types.responses.Response, b: openai.types.responses.Response) -> bool:
    """Equal answers of two responses (their ids differ)."""
    def shape(r):
        return [(item.type, getattr(item, "name", None), getattr(item, "arguments", None),
                 [part.text for part in getattr(item, "content", None) or []]) for item in r.output]
    return (shape(a), a.status, a.usage) == (shape(b), b.status, b.usage)


def test_create_and_retrieve(gateway: LiveGateway) -> None:
    client = gateway.client()
    response = client.responses.create(model=MODEL, input="red green blue", max_output_tokens=3)
    assert response.object == "response" and response.id.startswith("resp_")
    assert response.status == "completed" or response.status == "incomplete"
    assert response.output_text == " red green blue"
    assert response.usage.input_tokens == 3 and response.usage.output_tokens == 3
    again = client.responses.retrieve(response.id)
    assert again.output_text == response.output_text and again.id == response.id


def test_text_is_streamed_as_the_tokens_come(redis_url: str, tmp_path: Path) -> None:
    with gated_rig(redis_url, tmp_path, "resp-gated") as (gateway, engine):
        client = gateway.client(timeout=30)  # a whole-answer stream would time out here
        body = {"model": "resp-gated", "input": f"alpha beta gamma {EOS}"}
        events = iter(client.responses.create(**body, stream=True))
        early = []
        for event in events:
            early.append(event)
            if event.type == "response.output_text.delta":
                break
        # the engine holds everything after its first token until released
        assert early[-1].delta == " alpha"
        engine.release()
        streamed = early + list(events)
        whole = client.responses.create(**body)
    assert kinds(streamed) == TEXT_EVENTS
    assert [e.sequence_number for e in streamed] == list(range(len(streamed)))
    deltas = [e.delta for e in streamed if e.type == "response.output_text.delta"]
    assert len(deltas) > 1
    final = streamed[-1].response
    assert "".join(deltas) == final.output_text == " alpha beta gamma" == whole.output_text
    assert final.status == "completed" and same_output(final, whole)


def test_streamed_response_is_stored_as_a_whole_one(gateway: LiveGateway) -> None:
    client = gateway.client()
    events = list(client.responses.create(model=MODEL, input="one two", max_output_tokens=2, stream=True))
    assert [e.sequence_number for e in events] == list(range(len(events)))
    assert kinds(events) == [*TEXT_EVENTS[:-1], "response.incomplete"]
    final = events[-1].response
    text = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    assert text == " one two" == final.output_text
    [item] = final.output
    assert {e.item_id for e in events if hasattr(e, "item_id")} == {item.id}
    assert events[0].response.id == final.id and events[0].response.status == "in_progress"
    stored = client.responses.retrieve(final.id)
    assert stored.model_dump() == final.model_dump()
    assert final.incomplete_details.reason == "max_output_tokens"
    again = client.responses.create(model=MODEL, input="three", previous_response_id=final.id,
                                    max_output_tokens=3)
    assert again.output_text == " one two one"  # the chain holds the streamed answer


def test_the_sdk_stream_helper_gives_the_stored_response(gateway: LiveGateway) -> None:
    client = gateway.client()
    with client.responses.stream(model=MODEL, input=f"red green blue {EOS}") as stream:
        deltas = [e.delta for e in stream if e.type == "response.output_text.delta"]
        final = stream.get_final_response()
    assert "".join(deltas) == final.output_text == " red green blue"
    stored = client.responses.retrieve(final.id)
    assert same_output(stored, final) and [o.id for o in stored.output] == [o.id for o in final.output]
    assert same_output(final, client.responses.create(model=MODEL, input=f"red green blue {EOS}"))


@pytest.mark.parametrize(("tool_choice", "words"), [
    ({"type": "function", "name": "get_weather"}, '{"city": "Paris"}'),  # streamed as it comes
    ("auto", CALL),  # parsed once the answer has ended, then sent whole
])
def test_function_calls_stream_as_argument_deltas(gateway: LiveGateway, tool_choice, words: str) -> None:
    client = gateway.client()
    body = {"model": MODEL, "input": f"{words} {EOS}", "tools": RESPONSE_TOOLS, "tool_choice": tool_choice}
    with client.responses.stream(**body) as stream:
        events = list(stream)
        final = stream.get_final_response()
    assert kinds(events) == CALL_EVENTS
    [call] = final.output
    arguments = "".join(e.delta for e in events if e.type == "response.function_call_arguments.delta")
    assert call.type == "function_call" and call.name == "get_weather"
    assert json.loads(arguments) == json.loads(call.arguments) == {"city": "Paris"}
    added = next(e for e in events if e.type == "response.output_item.added")
    assert (added.item.id, added.item.call_id) == (call.id, call.call_id)
    assert same_output(final, client.responses.create(**body))
    assert same_output(final, client.responses.retrieve(final.id))


def test_a_failure_mid_stream_ends_it_with_response_failed(redis_url: str, tmp_path: Path,
                                                           redis_raw: redis.Redis) -> None:
    # the gate is never opened: the deadline passes after the first token
    with gated_rig(redis_url, tmp_path, "resp-deadline", request_timeout_s=1) as (gateway, _):
        client = gateway.client(timeout=30)
        events = list(client.responses.create(model="resp-deadline", input="late answer", stream=True))
        response_id = events[0].response.id
        assert redis_raw.get(keys.cancel_flag(response_id)) == b"1"  # the worker was told to stop
        with pytest.raises(openai.NotFoundError):
            client.responses.retrieve(response_id)  # a failed stream is not stored
    assert kinds(events) == [*TEXT_EVENTS[:5], "error", "response.failed"]
    error, failed = events[-2:]
    assert error.code == "deadline_exceeded" and error.message
    assert failed.response.status == "failed" and failed.response.error.code == "server_error"
    [item] = failed.response.output
    assert item.status == "incomplete" and item.content[0].text == " late"


def test_leaving_mid_stream_cancels_the_request(gateway: LiveGateway, worker: InProcessWorker) -> None:
    stream = gateway.client().responses.create(model=MODEL, input=f"{HOLD} waiting", stream=True)
    events = iter(stream)
    response_id = next(events).response.id
    assert any(e.type == "response.output_text.delta" for e in events)  # the held first token
    stream.close()
    assert worker.wait_aborted(response_id)


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
