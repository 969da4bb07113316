"""ProcessEngine: the engine loop in an engine-core child process, held to the in-thread engine.

The synthetic loop (no model) pins the wire and the lifecycle quickly: tokens, refusals, aborts,
stats, a core that dies or cannot be built. The real engine on the embedded model pins that a
request gets the same greedy tokens and text through the core as through `LLM`.
"""

from __future__ import annotations

import asyncio
import os
import signal

import pytest

from pagefleet.platform.protocol.sampling import SamplingParams, StructuredOutput
from pagefleet.workers import EngineConfig
from pagefleet.workers.bench.synthetic_engine import (
    SyntheticCoreSpec,
    SyntheticEngineConfig,
    synthetic_token_id,
)
from pagefleet.workers.engine.core_process import (
    EngineProcessError,
    ProcessEngine,
    Refusal,
    start_core,
)
from pagefleet.workers.engine.engine_loop import EngineCoreSpec
from pagefleet.workers.engine.errors import (
    DuplicateRequestError,
    EngineGoneError,
    InvalidParameterError,
    PromptTooLongError,
)

STEP_MS = 2.0
MAX_MODEL_LEN = 512


def _synthetic_core(**limits) -> ProcessEngine:
    return ProcessEngine(SyntheticCoreSpec(SyntheticEngineConfig(
        step_ms=STEP_MS, max_model_len=MAX_MODEL_LEN, **limits)))


@pytest.fixture(scope="module")
def synthetic():
    engine = _synthetic_core(max_num_seqs=8)
    yield engine
    engine.shutdown()


async def _tokens(engine, request_id, prompt, params) -> list[int]:
    return [t async for delta in engine.add_request(request_id, prompt, params) for t in delta.token_ids]


@pytest.mark.parametrize("error", [
    PromptTooLongError(500, 100, 512),
    InvalidParameterError("logit_bias holds token 99999", "logit_bias"),
    DuplicateRequestError("request 'x' is already running"),
    ValueError("prompt must not be empty"),
])
def test_refusals_cross_the_process_boundary_as_the_same_error(error: ValueError) -> None:
    rebuilt = Refusal.of(error).exception()
    assert type(rebuilt) is type(error)
    assert str(rebuilt) == str(error)
    assert getattr(rebuilt, "param", None) == getattr(error, "param", None)


def test_concurrent_streams_get_their_own_tokens_and_stats_follow(synthetic) -> None:
    prompts = {f"s{i}": [3, 1, 4, i + 5] for i in range(20)}  # more than max_num_seqs: some wait
    max_tokens = {request_id: 5 + i for i, request_id in enumerate(prompts)}
    before = synthetic.stats().generation_tokens_total

    async def run():
        return await asyncio.gather(*(
            _tokens(synthetic, request_id, prompt, SamplingParams(max_tokens=max_tokens[request_id]))
            for request_id, prompt in prompts.items()))

    results = dict(zip(prompts, asyncio.run(run()), strict=True))
    for request_id, prompt in prompts.items():
        want = [synthetic_token_id(prompt, position, 32_000)
                for position in range(max_tokens[request_id])]
        assert results[request_id] == want
    stats = synthetic.stats()
    assert stats.generation_tokens_total - before == sum(max_tokens.values())
    assert (stats.num_running, stats.num_waiting) == (0, 0)


def test_refused_request_raises_its_error_and_spares_the_others(synthetic) -> None:
    async def run():
        good = asyncio.create_task(_tokens(synthetic, "good", [7, 7], SamplingParams(max_tokens=30)))
        with pytest.raises(PromptTooLongError, match="maximum context length is 512"):
            await _tokens(synthetic, "long", [1] * 500, SamplingParams(max_tokens=100))
        with pytest.raises(ValueError, match="one choice per request"):
            await _tokens(synthetic, "two", [1, 2], SamplingParams(max_tokens=3, n=2))
        return await good

    assert len(asyncio.run(run())) == 30


def test_a_running_request_id_is_refused_without_disturbing_it(synthetic) -> None:
    async def run():
        stream = synthetic.add_request("dup", [5, 6], SamplingParams(max_tokens=40))
        first = await anext(stream)
        with pytest.raises(DuplicateRequestError):
            await _tokens(synthetic, "dup", [5, 6], SamplingParams(max_tokens=3))
        rest = [t async for delta in stream for t in delta.token_ids]
        return first.token_ids + rest

    assert len(asyncio.run(run())) == 40


def test_leaving_a_stream_early_aborts_it_in_the_core(synthetic) -> None:
    async def run():
        stream = synthetic.add_request("leave", [9, 9], SamplingParams(max_tokens=400))
        await anext(stream)
        await stream.aclose()
        # The abort and the core's stats travel in order on one socket: a request queued after
        # it finishes only once the core has processed the abort.
        await _tokens(synthetic, "after", [1], SamplingParams(max_tokens=2))

    asyncio.run(run())
    assert synthetic.stats().num_running == 0


def test_a_core_that_dies_fails_open_streams_and_refuses_new_ones() -> None:
    engine = _synthetic_core()
    try:
        async def run():
            stream = engine.add_request("doomed", [1, 2], SamplingParams(max_tokens=500))
            await anext(stream)
            os.kill(engine.process.pid, signal.SIGKILL)
            with pytest.raises(EngineGoneError, match="exited with status -9"):
                async for _ in stream:
                    pass
            with pytest.raises(EngineGoneError):
                await _tokens(engine, "late", [1], SamplingParams(max_tokens=2))

        asyncio.run(run())
        assert engine.wait_exit(timeout=10) == "the engine core exited with status -9"
    finally:
        engine.shutdown()


class UnbuildableSpec:
    """A core spec whose build fails in the core (pickled by reference to this module)."""

    def build(self):
        raise RuntimeError("no accelerator in this core")

    def load_tokenizer(self) -> None:
        return None


def test_a_core_that_cannot_be_built_says_why() -> None:
    with pytest.raises(EngineProcessError,
                       match="could not be built: RuntimeError: no accelerator in this core"):
        ProcessEngine(UnbuildableSpec())


@pytest.fixture(scope="module")
def core():
    engine = ProcessEngine(EngineCoreSpec(EngineConfig(max_model_len=256)))
    yield engine
    engine.shutdown()


def test_greedy_tokens_and_text_equal_the_offline_engine(core, llm) -> None:
    prompts = [f"Question {i}: what is {i} plus {i}?" for i in range(4)]
    params = SamplingParams(temperature=0, max_tokens=12)

    async def run():
        async def collect(request_id, prompt):
            return [d async for d in core.add_request(request_id, prompt, params)]
        return await asyncio.gather(*(collect(f"g{i}", p) for i, p in enumerate(prompts)))

    for deltas, want in zip(asyncio.run(run()), llm.generate(prompts, params), strict=True):
        assert [t for d in deltas for t in d.token_ids] == want.outputs[0].token_ids
        assert "".join(d.text for d in deltas) == want.outputs[0].text
        assert deltas[-1].finish_reason == want.outputs[0].finish_reason
    assert [phase.name for phase in core.phases.phases][-1] == "engine_ready"


def test_a_grammar_that_does_not_compile_is_refused_with_its_param(core) -> None:
    params = SamplingParams(max_tokens=5, structured_output=StructuredOutput("regex", "(unclosed"))
    with pytest.raises(InvalidParameterError) as info:
        asyncio.run(_tokens(core, "bad-regex", "Hello", params))
    assert info.value.param == "guided_regex"


def test_text_too_long_for_the_context_is_refused_before_tokenising(core) -> None:
    with pytest.raises(PromptTooLongError, match="characters"):
        asyncio.run(_tokens(core, "huge", "x" * (core.max_prompt_chars + 1),
                            SamplingParams(max_tokens=5)))


def test_a_core_started_ahead_serves_once_given_its_spec_or_exits_unused() -> None:
    """A spare worker starts its core with the engine's imports done; told to exit instead, it
    closes the socket and the core exits cleanly."""
    unused = start_core(("pagefleet.workers.bench.synthetic_engine",))
    unused.frames.close()
    assert unused.process.wait(timeout=30) == 0
    ahead = start_core(("pagefleet.workers.bench.synthetic_engine",))
    engine = ProcessEngine(SyntheticCoreSpec(SyntheticEngineConfig(step_ms=STEP_MS)), core=ahead)
    try:
        assert engine.process is ahead.process
        assert len(asyncio.run(_tokens(engine, "ahead", [4, 2], SamplingParams(max_tokens=3)))) == 3
    finally:
        engine.shutdown()
    assert ahead.process.returncode == 0


def test_the_core_leaves_interrupts_to_its_worker() -> None:
    """Ctrl-C reaches a terminal's whole process group: the core keeps serving until its worker
    stops it."""
    engine = _synthetic_core()
    try:
        for sig in (signal.SIGINT, signal.SIGTERM):
            os.kill(engine.process.pid, sig)
        assert len(asyncio.run(_tokens(engine, "after-sigint", [3], SamplingParams(max_tokens=4)))) == 4
        assert engine.process.poll() is None
    finally:
        engine.shutdown()
    assert engine.process.returncode == 0
