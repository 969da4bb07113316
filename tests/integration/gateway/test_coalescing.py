"""A worker ahead of its client: the official openai client against the live gateway, with
every event of a request written into its result stream (real Redis) in one transaction
before the gateway reads any, as a busy gateway finds them. The client gets every token once,
in order, with its logprobs, token ids, tool calls and finish reasons, in fewer chunks.

The requests go to `idle-model`, which no worker serves: they wait in its queue, where the test
finds their ids, and the test plays the worker. The transaction makes the whole answer appear
at once, so the gateway's one XREAD of the stream (up to 64 entries) returns all of it and the
request's buffer holds it all when the stream takes its first batch.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

import pytest
import redis

from pagefleet.platform.protocol import (
    DeltaEvent,
    FinalEvent,
    ResultEvent,
    TokenLogprob,
    TopLogprob,
    Usage,
    decode_envelope,
    encode,
    keys,
)
from tests.integration.gateway.conftest import IDLE_MODEL, LiveGateway
from tests.integration.gateway.test_tool_calls import CALL, TOOLS
from tests.support.waiting import wait_for

T = TypeVar("T")
QUEUE = keys.request_stream(IDLE_MODEL, keys.PRIORITY_INTERACTIVE)


@pytest.fixture
def worker_side(redis_raw: redis.Redis, idle_queue_empty: None) -> Iterator[redis.Redis]:
    """The shared Redis, from an empty queue of `idle-model`; its requests' streams go after."""
    yield redis_raw
    rids = [fields[keys.ENTRY_REQUEST_ID.encode()].decode() for _, fields in redis_raw.xrange(QUEUE)]
    redis_raw.delete(QUEUE, *(keys.result_stream(rid) for rid in rids))


def tokens(choice: int, num_tokens: int) -> list[str]:
    return [f" c{choice}t{k}" for k in range(num_tokens)]


def deltas(index: int, texts: list[str], finish: str = "length") -> list[DeltaEvent]:
    """One delta a token, as a worker whose Redis keeps up writes them."""
    return [DeltaEvent(index=index, offset=k, token_ids=[100 * index + k], text=text,
                       logprobs=[TokenLogprob(100 * index + k, text, -0.25, [TopLogprob(100 * index + k, text, -0.25)])],
                       finish_reason=finish if k == len(texts) - 1 else None, num_prompt_tokens=2)
            for k, text in enumerate(texts)]


def final(num_choices: int, num_tokens: int, reason: str = "length") -> FinalEvent:
    return FinalEvent(finish_reasons=[reason] * num_choices,
                      usage=Usage(2, num_choices * num_tokens, 2 + num_choices * num_tokens))


def interleaved(*streams: list[DeltaEvent]) -> list[ResultEvent]:
    """Choices' deltas step by step, as an engine emits them."""
    return [d for step in zip(*streams, strict=True) for d in step]


def answered(redis_raw: redis.Redis, call: Callable[[], T],
             answer: Callable[[dict[str, str]], dict[str, list[ResultEvent]]]) -> T:
    """Run `call` (a client request) while playing the worker: once its requests are queued,
    write `answer(prompt -> request id)`'s events in one transaction; return what `call` got."""
    with ThreadPoolExecutor(1) as pool:
        future = pool.submit(call)
        entries = wait_for(lambda: redis_raw.xrange(QUEUE), "the gateway to queue the request", 30)
        by_prompt = {}
        for _, fields in entries:
            envelope = decode_envelope(fields[keys.ENTRY_ENVELOPE.encode()])
            by_prompt[str(envelope.prompt or envelope.messages[-1].content)] = envelope.request_id
        with redis_raw.pipeline(transaction=True) as pipe:
            for request_id, events in answer(by_prompt).items():
                for event in events:
                    pipe.xadd(keys.result_stream(request_id), {keys.ENTRY_EVENT: encode(event)})
            pipe.execute()
        return future.result(timeout=60)


def test_a_chat_stream_behind_its_worker_gets_every_token_in_one_chunk(
        gateway: LiveGateway, worker_side: redis.Redis) -> None:
    texts = tokens(0, 40)
    client = gateway.client()
    chunks = answered(worker_side, lambda: list(client.chat.completions.create(
        model=IDLE_MODEL, messages=[{"role": "user", "content": "go"}], stream=True, logprobs=True,
        stream_options={"include_usage": True, "continuous_usage_stats": True})),
        lambda ids: {ids["go"]: [*deltas(0, texts), final(1, 40)]})
    content = [c for c in chunks if c.choices and c.choices[0].delta.content]
    assert [c.choices[0].delta.content for c in content] == ["".join(texts)]
    assert [lp.token for lp in content[0].choices[0].logprobs.content] == texts
    assert content[0].usage.completion_tokens == 40
    assert [c.choices[0].finish_reason for c in chunks if c.choices] == [None, "length"]
    assert chunks[-1].usage.completion_tokens == 40 and chunks[-1].usage.prompt_tokens == 2


def test_prompts_and_choices_each_get_their_tokens_once_and_in_order(
        gateway: LiveGateway, worker_side: redis.Redis) -> None:
    """Two prompts x n=2 on two result streams; the first stream's worker also retried a
    pipeline that had reached Redis, so four of its deltas come twice."""
    num_tokens = 12
    def answer(ids: dict[str, str]) -> dict[str, list[ResultEvent]]:
        first = interleaved(deltas(0, tokens(0, num_tokens)), deltas(1, tokens(1, num_tokens)))
        first = [*first[:6], *first[2:6], *first[6:]]  # the retried pipeline's four deltas again
        second = interleaved(deltas(0, tokens(2, num_tokens)), deltas(1, tokens(3, num_tokens)))
        return {ids["a b"]: [*first, final(2, num_tokens)], ids["c d"]: [*second, final(2, num_tokens)]}

    client = gateway.client()
    request = {"model": IDLE_MODEL, "prompt": ["a b", "c d"], "n": 2, "max_tokens": num_tokens,
               "logprobs": 1, "extra_body": {"return_token_ids": True}}
    chunks = answered(worker_side, lambda: list(client.completions.create(**request, stream=True)),
                      answer)
    for choice in range(4):
        mine = [c.choices[0] for c in chunks if c.choices[0].index == choice]
        texts = tokens(choice, num_tokens)
        assert "".join(c.text for c in mine) == "".join(texts)
        assert [t for c in mine if c.logprobs for t in c.logprobs.tokens] == texts
        assert [o for c in mine if c.logprobs for o in c.logprobs.text_offset] == [
            sum(map(len, texts[:k])) for k in range(num_tokens)]
        ids = [i for c in mine for i in c.model_extra.get("token_ids") or []]
        assert ids == [100 * (choice % 2) + k for k in range(num_tokens)]
        assert [c.finish_reason for c in mine if c.finish_reason] == ["length"]
    # Per choice: the opening chunk of its prompt's ids (return_token_ids), then one with all
    # its tokens and its finish; one a token would be 48 before the openings.
    assert len(chunks) == 2 * 4


def test_a_whole_answer_from_a_full_buffer(gateway: LiveGateway, worker_side: redis.Redis) -> None:
    client = gateway.client()
    whole = answered(worker_side, lambda: client.completions.create(
        model=IDLE_MODEL, prompt="a b", n=2, max_tokens=10, logprobs=1),
        lambda ids: {ids["a b"]: [*interleaved(deltas(0, tokens(0, 10)), deltas(1, tokens(1, 10))),
                                  final(2, 10)]})
    assert [c.text for c in whole.choices] == ["".join(tokens(0, 10)), "".join(tokens(1, 10))]
    assert whole.choices[1].logprobs.tokens == tokens(1, 10)
    assert [c.finish_reason for c in whole.choices] == ["length", "length"]
    assert whole.usage.completion_tokens == 20


def test_a_tool_call_streamed_from_a_full_buffer(gateway: LiveGateway, worker_side: redis.Redis) -> None:
    pieces = [" Let me check.", *(CALL[k:k + 7] for k in range(0, len(CALL), 7))]
    client = gateway.client()
    chunks = answered(worker_side, lambda: list(client.chat.completions.create(
        model=IDLE_MODEL, messages=[{"role": "user", "content": "weather?"}], tools=TOOLS, stream=True)),
        lambda ids: {ids["weather?"]: [*deltas(0, pieces, "stop"), final(1, len(pieces), "stop")]})
    content = "".join(c.choices[0].delta.content or "" for c in chunks)
    calls = [call for c in chunks for call in c.choices[0].delta.tool_calls or []]
    assert content == " Let me check."
    assert calls[0].function.name == "get_weather" and calls[0].id.startswith("call_")
    assert json.loads("".join(c.function.arguments or "" for c in calls)) == {"city": "Paris"}
    assert [c.choices[0].finish_reason for c in chunks if c.choices[0].finish_reason] == ["tool_calls"]
    assert len(chunks) < len(pieces)


def test_a_responses_stream_from_a_full_buffer(gateway: LiveGateway, worker_side: redis.Redis) -> None:
    texts = tokens(0, 30)
    client = gateway.client()
    events = answered(worker_side, lambda: list(client.responses.create(
        model=IDLE_MODEL, input="hello", stream=True)),
        lambda ids: {ids["hello"]: [*deltas(0, texts, "stop"), final(1, 30, "stop")]})
    assert [e.sequence_number for e in events] == list(range(len(events)))
    text_deltas = [e.delta for e in events if e.type == "response.output_text.delta"]
    assert text_deltas == ["".join(texts)]
    final_response = events[-1].response
    assert events[-1].type == "response.completed" and final_response.output_text == "".join(texts)
    assert client.responses.retrieve(final_response.id).output_text == "".join(texts)
