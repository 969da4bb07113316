"""The OpenAI shapes both sides build: one UTF-8 rule for logprob bytes, one set of builders."""

from __future__ import annotations

import msgspec

from pagefleet.platform.protocol import TokenLogprob, TopLogprob, Usage
from pagefleet.platform.protocol.openai import (
    FinishedChoice,
    chat_completion,
    chat_logprobs,
    completion,
    completion_logprobs,
    token_bytes,
)


def test_token_bytes_are_utf8_and_never_raise() -> None:
    assert token_bytes("é") == [0xC3, 0xA9]
    assert token_bytes("\ud800") == [ord("?")]  # a lone surrogate, as a byte-level token can be


def test_chat_logprobs_carry_bytes_for_tokens_and_alternatives() -> None:
    lp = TokenLogprob(token_id=1, token="\ud800", logprob=-0.5, top=[TopLogprob(token_id=2, token="a", logprob=-1.0)])
    content = chat_logprobs([lp]).content
    assert content[0].bytes == [ord("?")] and content[0].top_logprobs[0].bytes == [ord("a")]


def test_builders_answer_the_openai_shapes() -> None:
    usage = Usage(prompt_tokens=3, completion_tokens=2, total_tokens=5)
    choices = [FinishedChoice("hi", None, "stop"),
               FinishedChoice("yo", [TokenLogprob(token_id=1, token="yo", logprob=-0.1, top=[])], "length")]
    chat = msgspec.to_builtins(chat_completion("r1", 7, "m", choices, usage))
    assert chat["object"] == "chat.completion" and chat["usage"]["total_tokens"] == 5
    assert chat["choices"][0] == {"index": 0, "message": {"role": "assistant", "content": "hi"},
                                  "logprobs": None, "finish_reason": "stop"}
    text = msgspec.to_builtins(completion("r1", 7, "m", choices, usage))
    assert text["object"] == "text_completion"
    assert text["choices"][1]["logprobs"]["text_offset"] == [0]


def test_zero_completion_logprobs_hold_the_sampled_token() -> None:
    """`logprobs: 0` asks for no alternatives; each position still shows the sampled token."""
    lp = TokenLogprob(token_id=1, token="a", logprob=-0.5, top=[])
    assert completion_logprobs([lp]).top_logprobs == [{"a": -0.5}]


def test_echo_prompt_logprobs_and_token_ids_in_vllm_shapes() -> None:
    from pagefleet.platform.protocol.openai import PromptPart

    prompt_lps = [TokenLogprob(token_id=5, token="Hi", logprob=0.0, top=[]),
                  TokenLogprob(token_id=6, token=" there", logprob=-2.0,
                               top=[TopLogprob(token_id=7, token=" you", logprob=-0.5)])]
    generated = [TokenLogprob(token_id=8, token="!", logprob=-0.1, top=[])]
    usage = Usage(prompt_tokens=2, completion_tokens=1, total_tokens=3)
    prompt = PromptPart(echo="Hi there", token_ids=[5, 6], logprobs=prompt_lps, report_logprobs=True)
    choice = FinishedChoice("!", generated, "length", token_ids=[8], prompt=prompt)
    out = msgspec.to_builtins(completion("r", 1, "m", [choice], usage))["choices"][0]
    assert out["text"] == "Hi there!"
    assert out["logprobs"]["tokens"] == ["Hi", " there", "!"]
    assert out["logprobs"]["token_logprobs"] == [None, -2.0, -0.1]
    assert out["logprobs"]["top_logprobs"][0] is None and out["logprobs"]["text_offset"] == [0, 2, 8]
    assert out["prompt_token_ids"] == [5, 6] and out["token_ids"] == [8]
    assert out["prompt_logprobs"] == [None, {
        "7": {"logprob": -0.5, "rank": 1, "decoded_token": " you"},
        "6": {"logprob": -2.0, "rank": None, "decoded_token": " there"}}]
    plain = msgspec.to_builtins(completion("r", 1, "m", [FinishedChoice("!", None, "stop")], usage))
    assert set(plain["choices"][0]) == {"index", "text", "logprobs", "finish_reason"}
