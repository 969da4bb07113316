"""Structured outputs (grammar-constrained decoding) and logit_bias on the default CPU model.

The small model left alone rarely writes valid JSON for a schema; constrained, every choice
must parse and validate, in both scheduling modes, sampled or greedy, with n > 1, through
preemption, and after a crash resume that hands the engine the tokens already emitted.
"""

from __future__ import annotations

import json

import pytest

from pagefleet.platform.protocol.sampling import StructuredOutput
from pagefleet.workers import LLM, SamplingParams
from pagefleet.workers.engine.errors import InvalidParameterError

SCHEMA = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "maxLength": 8},
        "age": {"type": "integer", "minimum": 0, "maximum": 99},
        "tags": {"type": "array", "items": {"enum": ["red", "blue"]}, "maxItems": 2},
    },
    "required": ["name", "age", "tags"],
    "additionalProperties": False,
}
PROMPTS = ["Describe a person as JSON:", "def fibonacci(n):", "Give me a list of colours."]


def _schema_output(max_tokens: int = 48, **kwargs) -> SamplingParams:
    spec = StructuredOutput(kind="json_schema", spec=json.dumps(SCHEMA))
    return SamplingParams(max_tokens=max_tokens, structured_output=spec, **kwargs)


def _assert_valid(text: str) -> None:
    value = json.loads(text)
    assert set(value) == {"name", "age", "tags"}
    assert isinstance(value["name"], str) and len(value["name"]) <= 8
    assert isinstance(value["age"], int) and 0 <= value["age"] <= 99
    assert all(tag in ("red", "blue") for tag in value["tags"]) and len(value["tags"]) <= 2


@pytest.mark.parametrize("async_scheduling", [True, False], ids=["async", "sync"])
def test_json_schema_outputs_validate(async_scheduling: bool) -> None:
    llm = LLM(max_model_len=256, async_scheduling=async_scheduling)
    params = [_schema_output(temperature=0), _schema_output(temperature=1.0, seed=3, n=2),
              SamplingParams(temperature=0, max_tokens=6)]
    outputs = llm.generate(PROMPTS, params)
    for output in outputs[:2]:
        for choice in output.outputs:
            assert choice.finish_reason == "stop", choice.text
            _assert_valid(choice.text)
    # An unconstrained request in the same batch is untouched by its neighbours' grammars.
    alone = llm.generate(PROMPTS[2], SamplingParams(temperature=0, max_tokens=6))[0]
    assert outputs[2].outputs[0].token_ids == alone.outputs[0].token_ids


@pytest.fixture(scope="module")
def engine_llm() -> LLM:
    return LLM(max_model_len=256)


@pytest.mark.parametrize(("kind", "spec", "check"), [
    ("regex", r"[0-9]{3}-[a-z]{2}", lambda text: len(text) == 6 and text[3] == "-"),
    ("choice", json.dumps(["yes", "no", "maybe"]), lambda text: text in ("yes", "no", "maybe")),
])
def test_other_grammar_kinds(engine_llm: LLM, kind: str, spec: str, check) -> None:
    params = SamplingParams(temperature=0.8, seed=1, max_tokens=24,
                            structured_output=StructuredOutput(kind=kind, spec=spec))
    text = engine_llm.generate("Answer:", params)[0].outputs[0].text
    assert check(text), text


def test_resume_rebuilds_the_grammar_state(engine_llm: LLM) -> None:
    """A request resumed after a crash continues inside its grammar: the tokens it already
    emitted plus the ones generated after the resume still form a valid document."""
    params = _schema_output(temperature=0)  # greedy: the resumed run must match the whole one
    full = engine_llm.generate(PROMPTS[0], params)[0].outputs[0]
    done = full.token_ids[:7]
    engine = engine_llm.engine
    engine.add_request("resumed", PROMPTS[0], params, resume={0: done})
    tokens: list[int] = []
    while engine.has_unfinished():
        for delta in engine.step():
            tokens += delta.token_ids
    text = engine_llm.get_tokenizer().decode(done + tokens, skip_special_tokens=True)
    _assert_valid(text)
    assert done + tokens[: len(full.token_ids) - 7] == full.token_ids


def test_bad_grammar_is_a_parameter_error(engine_llm: LLM) -> None:
    bad = SamplingParams(structured_output=StructuredOutput(kind="regex", spec="[unclosed"))
    with pytest.raises(InvalidParameterError) as info:
        engine_llm.engine.add_request("bad", "x", bad)
    assert info.value.param == "guided_regex"
    assert not engine_llm.engine.has_unfinished()


def test_logit_bias_forces_and_forbids(engine_llm: LLM) -> None:
    tokenizer = engine_llm.get_tokenizer()
    forced = tokenizer.encode(" banana")[0]
    out = engine_llm.generate("The capital of France is", SamplingParams(
        temperature=0, max_tokens=2, logit_bias={forced: 100}))[0].outputs[0]
    assert out.token_ids == [forced] * 2
    plain = engine_llm.generate("The capital of France is", SamplingParams(
        temperature=0, max_tokens=2))[0].outputs[0]
    forbidden = plain.token_ids[0]
    biased = engine_llm.generate("The capital of France is", SamplingParams(
        temperature=0, max_tokens=2, logit_bias={forbidden: -100}))[0].outputs[0]
    assert forbidden not in biased.token_ids


@pytest.mark.parametrize(("params", "param"), [
    ({"logit_bias": {10**7: 1.0}}, "logit_bias"),
    ({"stop_token_ids": [10**7]}, "stop_token_ids"),
])
def test_token_ids_outside_the_vocabulary_are_refused(engine_llm: LLM, params: dict, param: str) -> None:
    with pytest.raises(InvalidParameterError) as info:
        engine_llm.engine.add_request("oov", "x", SamplingParams(**params))
    assert info.value.param == param and "outside the vocabulary" in str(info.value)


@pytest.mark.parametrize("seed", [-1, -(2**63), 2**64 - 1])
def test_any_64_bit_seed_is_accepted(engine_llm: LLM, seed: int) -> None:
    params = SamplingParams(temperature=1.0, seed=seed, max_tokens=2)
    first = engine_llm.generate("x", params)[0].outputs[0].token_ids
    assert engine_llm.generate("x", params)[0].outputs[0].token_ids == first


def test_json_schema_outputs_validate_through_preemption() -> None:
    """Too few KV blocks for every sequence: some are preempted and recomputed; their
    matchers keep their place (recompute replays no tokens into the grammar)."""
    llm = LLM(max_model_len=96, num_kv_blocks=12, block_size=8, async_scheduling=True)
    params = _schema_output(max_tokens=40, temperature=1.0, seed=7, n=3)
    outputs = llm.generate(PROMPTS[:2], [params, params])
    assert llm.engine.scheduler.num_preemptions > 0
    for output in outputs:
        for choice in output.outputs:
            assert choice.finish_reason == "stop", choice.text
            _assert_valid(choice.text)
