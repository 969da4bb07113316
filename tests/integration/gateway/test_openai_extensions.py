"""vLLM's extensions of the OpenAI surface through the live gateway and the real worker runtime
(scripted engine: one prompt token per word, output echoes the prompt's words)."""

from __future__ import annotations

from tests.integration.gateway.conftest import MODEL, LiveGateway


def test_continuous_usage_stats_count_up_in_every_chunk(gateway: LiveGateway) -> None:
    chunks = list(gateway.client().chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "a b c"}], max_tokens=4, stream=True,
        stream_options={"include_usage": True, "continuous_usage_stats": True}))
    token_chunks = [c for c in chunks if c.choices and c.choices[0].delta.content]
    text = ""
    for chunk in token_chunks:  # deltas may be coalesced: one word is one token so far
        text += chunk.choices[0].delta.content
        assert chunk.usage.completion_tokens == len(text.split())
    assert token_chunks[-1].usage.completion_tokens == 4
    assert {c.usage.prompt_tokens for c in token_chunks} == {3}
    assert all(c.usage.total_tokens == c.usage.prompt_tokens + c.usage.completion_tokens for c in chunks)
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == 4


def test_without_continuous_usage_chunks_carry_none(gateway: LiveGateway) -> None:
    chunks = list(gateway.client().completions.create(model=MODEL, prompt="a b", max_tokens=2,
                                                      stream=True))
    assert all(c.usage is None for c in chunks)
