from __future__ import annotations

import pytest

from pagefleet.workers import SamplingParams


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"n": 0}, "n must be at least 1"),
        ({"temperature": -0.1}, "temperature must be non-negative"),
        ({"top_p": 0.0}, "top_p must be in"),
        ({"top_k": -2}, "top_k must be"),
        ({"min_p": 1.5}, "min_p must be in"),
        ({"max_tokens": 0}, "max_tokens must be at least 1"),
        ({"min_tokens": 5, "max_tokens": 2}, "min_tokens must be at most"),
        ({"logprobs": 99}, "logprobs must be in"),
        ({"stop": [""]}, "stop must be"),
        ({"repetition_penalty": 0.0}, "repetition_penalty must be in"),
        ({"presence_penalty": 3.0}, "presence_penalty must be in"),
    ],
)
def test_invalid_parameters_raise_precise_errors(kwargs, message):
    with pytest.raises(ValueError, match=message):
        SamplingParams(**kwargs)


def test_normalises_stop_and_top_k():
    params = SamplingParams(stop="###", top_k=-1)
    assert params.stop == ["###"]
    assert params.top_k == 0
    assert params.stop_token_ids == []


def test_unknown_field_is_rejected():
    with pytest.raises(TypeError):
        SamplingParams(temprature=0.5)  # type: ignore[call-arg]
