"""Sampling features end to end through the engine on the default model."""

from __future__ import annotations

import pytest

from pagefleet.workers import SamplingParams
from pagefleet.workers.engine.errors import PromptTooLongError

PROMPT = "Write a short poem about the sea:"


def test_seeded_sampling_is_reproducible_across_batch_compositions(llm):
    params = SamplingParams(temperature=0.9, top_p=0.95, seed=1234, max_tokens=16)
    alone = llm.generate(PROMPT, params)[0].outputs[0].token_ids
    crowd = [
        ("Tell me a joke.", SamplingParams(temperature=1.0, max_tokens=20)),
        (PROMPT, params),
        ("List three fruits:", SamplingParams(temperature=0, max_tokens=8)),
    ]
    outputs = llm.generate([p for p, _ in crowd], [s for _, s in crowd])
    assert outputs[1].outputs[0].token_ids == alone
    other_seed = SamplingParams(temperature=0.9, top_p=0.95, seed=99, max_tokens=16)
    assert llm.generate(PROMPT, other_seed)[0].outputs[0].token_ids != alone


def test_n_choices_share_the_prompt_and_differ(llm):
    params = SamplingParams(n=3, temperature=1.0, seed=7, max_tokens=12)
    out = llm.generate("The weather today is" + " very" * 40, params)[0]
    assert [c.index for c in out.outputs] == [0, 1, 2]
    assert all(c.finish_reason in ("stop", "length") for c in out.outputs)
    assert len({tuple(c.token_ids) for c in out.outputs}) > 1
    assert llm.engine.kv_cache.pool.num_free_blocks == llm.engine.kv_cache.pool.num_blocks


def test_stop_string_truncates_text(llm):
    greedy = llm.generate("1, 2, 3, 4,", SamplingParams(temperature=0, max_tokens=16))[0].outputs[0]
    assert " 6" in greedy.text
    out = llm.generate("1, 2, 3, 4,", SamplingParams(temperature=0, max_tokens=16, stop=[" 6"]))
    choice = out[0].outputs[0]
    assert choice.finish_reason == "stop" and choice.stop_reason == " 6"
    assert choice.text == greedy.text[: greedy.text.index(" 6")]
    kept = llm.generate("1, 2, 3, 4,", SamplingParams(
        temperature=0, max_tokens=16, stop=[" 6"], include_stop_str_in_output=True))[0].outputs[0]
    assert kept.text == choice.text + " 6"


def test_stop_strings_across_tokens_cut_at_their_first_occurrence(llm):
    """Stops taken from the middle of the greedy text (so they span tokens and deltas), next
    to a longer stop that never matches and sets how much text is held back."""
    text = llm.generate(PROMPT, SamplingParams(temperature=0, max_tokens=48))[0].outputs[0].text
    for start in (len(text) // 3, len(text) // 2):
        stop = text[start : start + 7]
        first = text.index(stop)
        for include in (False, True):
            params = SamplingParams(temperature=0, max_tokens=48, include_stop_str_in_output=include,
                                    stop=["a stop string never seen", stop])
            out = llm.generate(PROMPT, params)[0].outputs[0]
            assert (out.finish_reason, out.stop_reason) == ("stop", stop)
            assert out.text == text[: first + (len(stop) if include else 0)]


def test_stop_token_ids_and_length(llm):
    greedy = llm.generate("1, 2, 3, 4,", SamplingParams(temperature=0, max_tokens=8))[0].outputs[0]
    assert greedy.finish_reason == "length" and len(greedy.token_ids) == 8
    stop_id = greedy.token_ids[2]
    out = llm.generate("1, 2, 3, 4,", SamplingParams(temperature=0, max_tokens=8,
                                                      stop_token_ids=[stop_id]))[0].outputs[0]
    assert out.finish_reason == "stop" and out.stop_reason == stop_id
    assert out.token_ids == greedy.token_ids[: greedy.token_ids.index(stop_id) + 1]


def test_logprobs_are_returned_per_token(llm):
    out = llm.generate(PROMPT, SamplingParams(temperature=0, max_tokens=5, logprobs=2))[0].outputs[0]
    assert len(out.logprobs) == 5
    for token_id, lp in zip(out.token_ids, out.logprobs, strict=True):
        assert lp.token_id == token_id
        assert lp.top[0].token_id == token_id  # greedy picks the most likely token
        assert len(lp.top) == 2 and lp.logprob <= 0


def test_streamed_text_is_valid_utf8_and_equals_full_decode(llm):
    out = llm.generate("Translate to Japanese and add emoji: I love sushi",
                       SamplingParams(temperature=0.8, seed=3, max_tokens=24))[0].outputs[0]
    assert "\ufffd" not in out.text
    tokenizer = llm.get_tokenizer()
    full = tokenizer.decode(out.token_ids, skip_special_tokens=True)
    assert full.startswith(out.text) and len(full) - len(out.text) <= 2


def test_chat_applies_template(llm):
    out = llm.chat([{"role": "user", "content": "Say hello."}], SamplingParams(temperature=0, max_tokens=8))
    tokenizer = llm.get_tokenizer()
    expected = tokenizer.apply_chat_template(
        [{"role": "user", "content": "Say hello."}], add_generation_prompt=True, tokenize=True
    )
    expected = expected["input_ids"] if hasattr(expected, "keys") else expected
    assert out[0].prompt_token_ids == list(expected)
    assert out[0].outputs[0].text


def test_abort_frees_blocks_at_once(llm):
    engine = llm.engine
    engine.add_request("to-abort", PROMPT, SamplingParams(max_tokens=50))
    engine.step()
    assert engine.kv_cache.pool.num_free_blocks < engine.kv_cache.pool.num_blocks
    deltas = engine.abort("to-abort")
    assert deltas[-1].finish_reason == "abort" and deltas[-1].finished
    assert engine.kv_cache.pool.num_free_blocks == engine.kv_cache.pool.num_blocks
    assert not engine.has_unfinished()


def test_bad_input_raises_precise_errors(llm):
    with pytest.raises(PromptTooLongError, match="maximum context length is 512"):
        llm.generate(PROMPT, SamplingParams(max_tokens=600))
    with pytest.raises(ValueError, match="prompt token ids must be in"):
        llm.generate([[10**9]], SamplingParams())
    with pytest.raises(ValueError, match="2 sampling params for 1 prompts"):
        llm.generate([PROMPT], [SamplingParams(), SamplingParams()])
    assert not llm.engine.has_unfinished()


def test_truncate_prompt_tokens_keeps_the_last_tokens(llm):
    prompt = "The quick brown fox jumps over the lazy dog and keeps running"
    ids = llm.get_tokenizer().encode(prompt)
    params = SamplingParams(temperature=0, max_tokens=5)
    [truncated] = llm.generate(prompt, SamplingParams(temperature=0, max_tokens=5, truncate_prompt_tokens=4))
    [tail] = llm.generate([ids[-4:]], params)
    assert truncated.prompt_token_ids == ids[-4:]
    assert truncated.outputs[0].token_ids == tail.outputs[0].token_ids
    [whole] = llm.generate(prompt, SamplingParams(temperature=0, max_tokens=5, truncate_prompt_tokens=-1))
    assert whole.prompt_token_ids == ids
    with pytest.raises(ValueError, match="truncate_prompt_tokens"):
        SamplingParams(truncate_prompt_tokens=0)
