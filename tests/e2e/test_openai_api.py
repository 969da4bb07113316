"""The official openai client against gateway + Redis + real workers on the embedded model.

Expected outputs are never hard-coded: tests compare the model with itself (stream vs whole
response, same seed twice, job vs synchronous endpoint) or check the shape and accounting.
"""

from __future__ import annotations

import asyncio
import json
import time

import httpx
import openai
import pydantic
import pytest

from tests.e2e.conftest import MAX_MODEL_LEN, MODEL, Stack

CHAT = [{"role": "user", "content": "Name three fruits."}]


def test_models_lists_the_model_as_ready(stack: Stack) -> None:
    models = stack.client().models.list()
    assert MODEL in [m.id for m in models.data]


def test_chat_completion(stack: Stack) -> None:
    response = stack.client().chat.completions.create(model=MODEL, messages=CHAT, max_tokens=8,
                                                       temperature=0)
    [choice] = response.choices
    assert choice.message.role == "assistant" and choice.message.content
    assert choice.finish_reason in ("stop", "length")
    usage = response.usage
    assert usage.prompt_tokens > 0 and 0 < usage.completion_tokens <= 8
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens


def test_completion_of_a_string_and_of_token_ids(stack: Stack) -> None:
    client = stack.client()
    text = client.completions.create(model=MODEL, prompt="The sky is", max_tokens=5, temperature=0)
    ids = client.completions.create(model=MODEL, prompt=[504, 6614, 314], max_tokens=5, temperature=0)
    for response in (text, ids):
        assert response.choices[0].text and response.usage.completion_tokens <= 5
    assert ids.usage.prompt_tokens == 3


def test_streaming_chat_with_usage_matches_the_whole_response(stack: Stack) -> None:
    client = stack.client()
    kwargs = {"model": MODEL, "messages": CHAT, "max_tokens": 10, "temperature": 0}
    whole = client.chat.completions.create(**kwargs)
    chunks = list(client.chat.completions.create(**kwargs, stream=True,
                                                 stream_options={"include_usage": True}))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == whole.choices[0].message.content
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finishes == [whole.choices[0].finish_reason]
    assert chunks[-1].choices == [] and chunks[-1].usage == whole.usage


def test_streamed_response_matches_the_whole_one(stack: Stack) -> None:
    """Greedy decoding: the Responses stream sends the text as the engine makes it (a decode
    step on the CPU takes far longer than a local Redis write, so tokens are not batched into
    one delta) and ends where the whole answer does."""
    client = stack.client()
    body = {"model": MODEL, "input": "Name three fruits.", "max_output_tokens": 12, "temperature": 0}
    whole = client.responses.create(**body)
    with client.responses.stream(**body) as stream:
        events = list(stream)
    final = events[-1].response
    deltas = [e.delta for e in events if e.type == "response.output_text.delta"]
    assert len(deltas) > 1
    assert "".join(deltas) == final.output_text == whole.output_text
    assert (final.status, final.usage) == (whole.status, whole.usage)
    assert client.responses.retrieve(final.id).output_text == final.output_text


def test_two_choices(stack: Stack) -> None:
    response = stack.client().chat.completions.create(model=MODEL, messages=CHAT, max_tokens=6, n=2,
                                                       temperature=1.0, seed=11)
    assert sorted(c.index for c in response.choices) == [0, 1]
    assert all(c.message.content for c in response.choices)
    assert response.usage.completion_tokens == response.usage.completion_tokens  # summed below
    assert response.usage.total_tokens == response.usage.prompt_tokens + response.usage.completion_tokens


def test_stop_string_ends_the_text_before_it(stack: Stack) -> None:
    client = stack.client()
    kwargs = {"model": MODEL, "prompt": "List: one, two, three,", "max_tokens": 12, "temperature": 0}
    free = client.completions.create(**kwargs).choices[0].text
    words = free.split()
    assert len(words) >= 2, free
    stop = words[1]
    stopped = client.completions.create(**kwargs, stop=[stop]).choices[0]
    assert stopped.finish_reason == "stop"
    assert stopped.text == free[: free.index(stop)]


def test_same_seed_same_sample(stack: Stack) -> None:
    client = stack.client()
    kwargs = {"model": MODEL, "messages": CHAT, "max_tokens": 8, "temperature": 1.0, "seed": 1234}
    first = client.chat.completions.create(**kwargs).choices[0].message.content
    second = client.chat.completions.create(**kwargs).choices[0].message.content
    assert first == second


def test_logprobs(stack: Stack) -> None:
    client = stack.client()
    chat = client.chat.completions.create(model=MODEL, messages=CHAT, max_tokens=4, temperature=0,
                                          logprobs=True, top_logprobs=2)
    content = chat.choices[0].logprobs.content
    assert len(content) == chat.usage.completion_tokens
    assert all(len(t.top_logprobs) == 2 and t.logprob <= 0 for t in content)
    completion = client.completions.create(model=MODEL, prompt="Hello", max_tokens=4, temperature=0,
                                           logprobs=2)
    logprobs = completion.choices[0].logprobs
    assert len(logprobs.tokens) == len(logprobs.token_logprobs) == completion.usage.completion_tokens
    assert "".join(logprobs.tokens).startswith(completion.choices[0].text[:1])


def test_errors_are_typed(stack: Stack) -> None:
    client = stack.client()
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model="no-such-model", messages=CHAT)
    with pytest.raises(openai.BadRequestError) as too_long:
        client.chat.completions.create(model=MODEL, messages=CHAT, max_tokens=MAX_MODEL_LEN)
    assert too_long.value.code == "context_length_exceeded"
    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(model=MODEL, messages=CHAT, temperature=-1)


def test_64_concurrent_streams_are_well_formed(stack: Stack) -> None:
    async def one(client: openai.AsyncOpenAI, i: int) -> None:
        stream = await client.completions.create(
            model=MODEL, prompt=f"Fact number {i}:", max_tokens=4, temperature=0, stream=True,
            stream_options={"include_usage": True}, extra_body={"ignore_eos": True})
        chunks = [chunk async for chunk in stream]
        text_chunks = [c for c in chunks if c.choices]
        assert [c.choices[0].finish_reason for c in text_chunks][-1] == "length"
        assert all(c.choices[0].finish_reason is None for c in text_chunks[:-1])
        assert chunks[-1].usage.completion_tokens == 4
        assert len({c.id for c in chunks}) == 1

    async def main() -> None:
        async with stack.async_client(timeout=600) as client:
            await asyncio.gather(*(one(client, i) for i in range(64)))

    asyncio.run(main())


def _metric(stack: Stack, name: str) -> float:
    total = 0.0
    for worker in stack.live_workers():
        text = httpx.get(f"http://127.0.0.1:{worker.metrics_port}/metrics").text
        total += sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
                     if line.startswith(f"pagefleet:{name}{{"))
    return total


def test_client_disconnect_cancels_and_frees_the_blocks(stack: Stack) -> None:
    client = stack.client()
    stream = client.completions.create(model=MODEL, prompt="Once upon a time", max_tokens=200,
                                       temperature=0, stream=True, extra_body={"ignore_eos": True})
    next(iter(stream))
    assert _metric(stack, "kv_cache_usage_perc") > 0
    stream.close()
    deadline = time.monotonic() + 60
    while _metric(stack, "kv_cache_usage_perc") > 0 or _metric(stack, "num_requests_running") > 0:
        assert time.monotonic() < deadline, "the aborted request kept its blocks"
        time.sleep(0.05)  # polling the workers' metrics with a deadline


def test_job_result_equals_the_synchronous_response(stack: Stack) -> None:
    body = {"model": MODEL, "messages": CHAT, "max_tokens": 6, "temperature": 0.8, "seed": 5}
    sync = stack.client().chat.completions.create(**body)
    http = httpx.Client(base_url=stack.root_url, timeout=30)
    created = http.post("/v1/jobs", json={"endpoint": "/v1/chat/completions", "body": body})
    assert created.status_code == 202
    job_id = created.json()["id"]
    deadline = time.monotonic() + 240
    while (job := http.get(f"/v1/jobs/{job_id}").json())["status"] in ("queued", "running"):
        assert time.monotonic() < deadline, job
        time.sleep(0.1)  # polling the job, as a client would
    assert job["status"] == "succeeded", job
    result = job["result"]
    assert [c["message"]["content"] for c in result["choices"]] == [c.message.content for c in sync.choices]
    assert result["usage"]["completion_tokens"] == sync.usage.completion_tokens


class Person(pydantic.BaseModel):
    name: str = pydantic.Field(max_length=8)
    age: int = pydantic.Field(ge=0, le=99)
    likes_tea: bool


@pytest.mark.parametrize("prompt", ["Describe a person.", "Who wrote Hamlet?"])
def test_structured_output_parses_into_the_pydantic_model(stack: Stack, prompt: str) -> None:
    """`parse` sends the model's strict JSON schema as response_format; the small model,
    constrained, answers JSON that validates (the SDK raises otherwise)."""
    response = stack.client().chat.completions.parse(
        model=MODEL, messages=[{"role": "user", "content": prompt}], response_format=Person,
        max_tokens=40, temperature=0.7, seed=5)
    choice = response.choices[0]
    assert choice.finish_reason == "stop"
    assert isinstance(choice.message.parsed, Person)


def test_guided_choice_streams_one_of_the_choices(stack: Stack) -> None:
    chunks = stack.client().completions.create(
        model=MODEL, prompt="Is the sky blue? Answer:", max_tokens=8, stream=True,
        extra_body={"guided_choice": ["yes", "no"]})
    assert "".join(c.choices[0].text for c in chunks if c.choices) in ("yes", "no")


def test_model_retrieval_and_openai_shaped_refusals(stack: Stack) -> None:
    client = stack.client()
    assert client.models.retrieve(MODEL).id == MODEL
    with pytest.raises(openai.NotFoundError) as missing:
        client.models.retrieve("no-such-model")
    assert missing.value.code == "model_not_found"
    with pytest.raises(openai.BadRequestError) as unknown:
        client.chat.completions.create(model=MODEL, messages=CHAT, max_tokens=2,
                                       functions=[{"name": "f"}])
    assert unknown.value.param == "functions"
    with pytest.raises(openai.BadRequestError) as oov:
        client.chat.completions.create(model=MODEL, messages=CHAT, max_tokens=2,
                                       logit_bias={"99999999": 5})
    assert oov.value.param == "logit_bias"
    with pytest.raises(openai.BadRequestError) as stop_ids:
        client.completions.create(model=MODEL, prompt="x", max_tokens=2,
                                  extra_body={"stop_token_ids": [99999999]})
    assert stop_ids.value.param == "stop_token_ids"


def test_logit_bias_forces_a_token_and_zero_logprobs_show_it(stack: Stack) -> None:
    client = stack.client()
    forced = client.completions.create(model=MODEL, prompt="The sky is", max_tokens=3,
                                       temperature=0, logit_bias={"504": 100}, logprobs=0)
    choice = forced.choices[0]
    tokens = choice.logprobs.tokens
    assert len(tokens) == 3 and len(set(tokens)) == 1 and choice.text == tokens[0] * 3
    assert choice.logprobs.top_logprobs == [{t: lp} for t, lp in
                                            zip(tokens, choice.logprobs.token_logprobs, strict=True)]


WEATHER_TOOLS = [
    {"type": "function", "function": {
        "name": "get_weather", "description": "The weather in a city now",
        "parameters": {"type": "object", "properties": {
            "city": {"type": "string", "maxLength": 20},
            "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]}},
            "required": ["city", "unit"], "additionalProperties": False}}},
    {"type": "function", "function": {
        "name": "get_time", "description": "The local time in a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string", "maxLength": 20}},
                       "required": ["city"], "additionalProperties": False}}},
]
WEATHER_CHAT = [{"role": "user", "content": "What is the weather in Paris?"}]


def _arguments_valid(name: str, arguments: str) -> dict:
    args = json.loads(arguments)
    schema = next(t["function"]["parameters"] for t in WEATHER_TOOLS if t["function"]["name"] == name)
    assert set(args) == set(schema["required"]) and all(isinstance(args[k], str) for k in args)
    assert "unit" not in args or args["unit"] in ("celsius", "fahrenheit")
    return args


def test_named_tool_choice_returns_valid_arguments(stack: Stack) -> None:
    """The small model, constrained to the function's parameter schema, calls it validly."""
    response = stack.client().chat.completions.create(
        model=MODEL, messages=WEATHER_CHAT, tools=WEATHER_TOOLS, max_tokens=60, temperature=0,
        tool_choice={"type": "function", "function": {"name": "get_weather"}})
    choice = response.choices[0]
    assert choice.finish_reason == "tool_calls"
    [call] = choice.message.tool_calls
    assert call.function.name == "get_weather"
    _arguments_valid("get_weather", call.function.arguments)


def test_required_tool_choice_returns_valid_calls_and_streams_the_same(stack: Stack) -> None:
    client = stack.client()
    body = {"model": MODEL, "messages": WEATHER_CHAT, "tools": WEATHER_TOOLS, "max_tokens": 80,
            "temperature": 0, "tool_choice": "required", "parallel_tool_calls": False}
    whole = client.chat.completions.create(**body).choices[0]
    assert whole.finish_reason == "tool_calls"
    [call] = whole.message.tool_calls
    _arguments_valid(call.function.name, call.function.arguments)
    with client.chat.completions.stream(**body) as stream:
        streamed = stream.get_final_completion().choices[0]
    [again] = streamed.message.tool_calls
    assert (again.function.name, again.function.arguments) == (call.function.name, call.function.arguments)


def test_a_tool_result_conversation_continues(stack: Stack) -> None:
    messages = [*WEATHER_CHAT,
                {"role": "assistant", "content": None, "tool_calls": [
                    {"id": "call_1", "type": "function", "function": {
                        "name": "get_weather", "arguments": '{"city": "Paris", "unit": "celsius"}'}}]},
                {"role": "tool", "tool_call_id": "call_1", "content": "21 degrees and sunny"}]
    response = stack.client().chat.completions.create(
        model=MODEL, messages=messages, tools=WEATHER_TOOLS, tool_choice="none", max_tokens=20,
        temperature=0)
    assert response.choices[0].message.content and response.usage.prompt_tokens > 30


def test_continue_final_message_continues_the_assistant_text(stack: Stack) -> None:
    client = stack.client()
    messages = [{"role": "user", "content": "Count to five."}, {"role": "assistant", "content": "1, 2,"}]
    continued = client.chat.completions.create(
        model=MODEL, messages=messages, max_tokens=6, temperature=0,
        extra_body={"continue_final_message": True, "add_generation_prompt": False})
    fresh = client.chat.completions.create(model=MODEL, messages=messages, max_tokens=6,
                                           temperature=0)
    assert continued.usage.prompt_tokens < fresh.usage.prompt_tokens  # no closed turn, no new one


def test_echo_prompt_logprobs_and_token_ids(stack: Stack) -> None:
    """The echoed prompt's logprobs are the `prompt_logprobs` extension's (the engine test holds
    those to transformers), the ids are the prompt's, and the stream echoes the same text."""
    client = stack.client()
    prompt = "The capital of France is"
    whole = client.completions.create(model=MODEL, prompt=prompt, max_tokens=3, temperature=0,
                                      echo=True, logprobs=1,
                                      extra_body={"prompt_logprobs": 1, "return_token_ids": True})
    choice = whole.choices[0]
    extra = choice.model_extra
    assert choice.text.startswith(prompt)
    assert len(extra["prompt_token_ids"]) == whole.usage.prompt_tokens
    assert len(extra["token_ids"]) == whole.usage.completion_tokens == 3
    lps = choice.logprobs
    num_prompt = whole.usage.prompt_tokens
    assert lps.token_logprobs[0] is None and len(lps.tokens) == num_prompt + 3
    assert extra["prompt_logprobs"][0] is None
    for position, token_id in enumerate(extra["prompt_token_ids"][1:], start=1):
        assert extra["prompt_logprobs"][position][str(token_id)]["logprob"] == pytest.approx(
            lps.token_logprobs[position])
    streamed = "".join(c.choices[0].text for c in client.completions.create(
        model=MODEL, prompt=prompt, max_tokens=3, temperature=0, echo=True, stream=True) if c.choices)
    assert streamed == choice.text
