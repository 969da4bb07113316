from __future__ import annotations

import msgspec

from pagefleet.platform.gateway.completions.params import PreparedRequest
from pagefleet.platform.gateway.completions.results import ResultAccumulator
from pagefleet.platform.protocol import (
    DeltaEvent,
    FinalEvent,
    RequestEnvelope,
    SamplingParams,
    TokenLogprob,
    TopLogprob,
    Usage,
)


def prepared(kind: str = "completion", n: int = 2, num_prompts: int = 2, logprobs: bool = False) -> PreparedRequest:
    envelopes = [RequestEnvelope(request_id=f"r-{k}", model="m", kind=kind, params=SamplingParams(n=n),
                                 prompt="p" if kind == "completion" else None,
                                 messages=[{"role": "user", "content": "p"}] if kind == "chat" else None,
                                 created_at=1.0)
                 for k in range(num_prompts)]
    return PreparedRequest(response_id="r", model="m", kind=kind, envelopes=envelopes, n=n, created=1,
                           stream=False, include_usage=False, logprobs=logprobs)


def delta(index: int, offset: int, text: str, finish: str | None = None, logprobs=None) -> DeltaEvent:
    return DeltaEvent(index=index, offset=offset, token_ids=[offset], text=text, logprobs=logprobs,
                      finish_reason=finish)


def final(reasons: list[str], prompt: int, completion: int) -> FinalEvent:
    return FinalEvent(finish_reasons=reasons, usage=Usage(prompt, completion, prompt + completion))


def test_choices_of_prompt_k_land_at_k_times_n_plus_i() -> None:
    acc = ResultAccumulator(prepared(n=2, num_prompts=2))
    acc.add_delta(1, delta(0, 0, "c"))
    acc.add_delta(0, delta(1, 0, "b"))
    acc.add_delta(1, delta(1, 0, "d"))
    acc.add_delta(0, delta(0, 0, "a"))
    acc.add_final(0, final(["stop", "length"], 3, 2))
    acc.add_final(1, final(["length", "stop"], 4, 2))
    response = acc.completion()
    assert [c.text for c in response.choices] == ["a", "b", "c", "d"]
    assert [c.index for c in response.choices] == [0, 1, 2, 3]
    assert [c.finish_reason for c in response.choices] == ["stop", "length", "length", "stop"]
    assert response.usage == Usage(7, 4, 11)


def test_replayed_deltas_are_dropped() -> None:
    acc = ResultAccumulator(prepared(n=1, num_prompts=1))
    assert acc.add_delta(0, delta(0, 0, "x")) is not None
    assert acc.add_delta(0, delta(0, 1, "y")) is not None
    assert acc.add_delta(0, delta(0, 1, "y")) is None  # a resumed worker re-sent offset 1
    assert acc.add_delta(0, delta(0, 2, "z")) is not None
    assert acc.completion().choices[0].text == "xyz"


def test_final_finishes_choices_no_delta_finished() -> None:
    acc = ResultAccumulator(prepared(kind="chat", n=2, num_prompts=1))
    acc.add_delta(0, delta(0, 0, "a", finish="length"))
    assert acc.add_final(0, final(["length", "abort"], 1, 1)) == [1]
    chunk = msgspec.to_builtins(acc.finish_chunks(1)[-1])
    assert chunk["choices"] == [{"index": 1, "delta": {}, "logprobs": None, "finish_reason": "abort"}]


def test_chat_stream_chunks_have_openai_shapes() -> None:
    acc = ResultAccumulator(prepared(kind="chat", n=2, num_prompts=1))
    first = [msgspec.to_builtins(c) for c in acc.first_chunks()]
    assert [c["choices"][0]["delta"] for c in first] == [{"role": "assistant", "content": ""}] * 2
    event = delta(1, 0, "hi")
    acc.add_delta(0, event)
    chunk = msgspec.to_builtins(acc.delta_chunks(0, event)[0])
    assert chunk["object"] == "chat.completion.chunk"
    assert chunk["choices"][0]["index"] == 1 and chunk["choices"][0]["delta"] == {"content": "hi"}
    acc.add_final(0, final(["length", "length"], 1, 1))
    usage = msgspec.to_builtins(acc.usage_chunk())
    assert usage["choices"] == [] and usage["usage"]["total_tokens"] == 2


def test_completion_logprobs_offsets_continue_across_chunks() -> None:
    acc = ResultAccumulator(prepared(n=1, num_prompts=1, logprobs=True))
    lp = [TokenLogprob(token_id=1, token="ab", logprob=-0.1, top=[TopLogprob(1, "ab", -0.1)])]
    lp2 = [TokenLogprob(token_id=2, token="cde", logprob=-0.2, top=[TopLogprob(2, "cde", -0.2)])]
    first, second = delta(0, 0, "ab", logprobs=lp), delta(0, 1, "cde", logprobs=lp2)
    acc.add_delta(0, first)
    acc.add_delta(0, second)  # both recorded before either is streamed, as a batch is
    assert acc.delta_chunks(0, first)[0].choices[0].logprobs.text_offset == [0]
    assert acc.delta_chunks(0, second)[0].choices[0].logprobs.text_offset == [2]
    whole = acc.completion().choices[0].logprobs
    assert whole.tokens == ["ab", "cde"] and whole.text_offset == [0, 2]
    assert whole.top_logprobs == [{"ab": -0.1}, {"cde": -0.2}]


def test_chat_logprobs_carry_bytes_and_top_alternatives() -> None:
    acc = ResultAccumulator(prepared(kind="chat", n=1, num_prompts=1, logprobs=True))
    lp = [TokenLogprob(token_id=1, token="é", logprob=-0.3,
                       top=[TopLogprob(1, "é", -0.3), TopLogprob(2, "e", -1.5)])]
    acc.add_delta(0, delta(0, 0, "é", logprobs=lp))
    content = acc.chat_completion().choices[0].logprobs.content
    assert content[0].bytes == list("é".encode())
    assert [t.token for t in content[0].top_logprobs] == ["é", "e"]
