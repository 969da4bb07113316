"""The synthetic engine: its batch core driven step by step, then the threaded engine through
callers' event loops (tokens, abort, admission, one loop wake-up per step), then its registry
hook, which must build it without torch."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from collections import Counter

import pytest

from pagefleet.platform.protocol import SamplingParams
from pagefleet.platform.registry import RegistryError, parse_registry
from pagefleet.workers.bench.synthetic_engine import (
    SyntheticBatch,
    SyntheticEngine,
    SyntheticEngineConfig,
    synthetic_token_id,
)
from pagefleet.workers.engine.errors import DuplicateRequestError, PromptTooLongError
from pagefleet.workers.engine.outputs import RequestDelta


def _params(max_tokens: int, n: int = 1) -> SamplingParams:
    return SamplingParams(max_tokens=max_tokens, ignore_eos=True, n=n)


def _prompt(i: int, length: int = 5) -> list[int]:
    return [100 * i + j for j in range(length)]


def _drain(batch: SyntheticBatch) -> list[list[RequestDelta]]:
    steps = []
    while batch.has_unfinished():
        steps.append(batch.step())
    return steps


# ---- the batch core -------------------------------------------------------------------------

def test_each_request_gets_max_tokens_tokens_in_order() -> None:
    config = SyntheticEngineConfig(step_ms=1, vocab_size=1000)
    batch = SyntheticBatch(config)
    lengths = {"a": 3, "b": 5, "c": 1}
    for i, (request_id, max_tokens) in enumerate(lengths.items()):
        batch.add(request_id, _prompt(i), _params(max_tokens))
    batch.admit()
    deltas = [d for step in _drain(batch) for d in step]
    for i, (request_id, max_tokens) in enumerate(lengths.items()):
        mine = [d for d in deltas if d.request_id == request_id]
        assert [d.offset for d in mine] == list(range(max_tokens))
        assert [d.token_ids for d in mine] == [[synthetic_token_id(_prompt(i), p, 1000)]
                                               for p in range(max_tokens)]
        assert [d.finish_reason for d in mine] == [None] * (max_tokens - 1) + ["length"]
        assert [d.finished for d in mine] == [False] * (max_tokens - 1) + [True]
        assert mine[0].prompt_token_ids == _prompt(i)
        assert all(d.prompt_token_ids is None for d in mine[1:])
        assert {d.num_prompt_tokens for d in mine} == {5} and {d.text for d in mine} == {""}
    stats = batch.stats()
    assert (stats.prompt_tokens_total, stats.generation_tokens_total) == (15, 9)
    assert (stats.num_running, stats.num_waiting, stats.kv_cache_usage) == (0, 0, 0.0)


def test_every_running_request_gets_one_token_per_step_in_admission_order() -> None:
    batch = SyntheticBatch(SyntheticEngineConfig(step_ms=1))
    for request_id in ("x", "y", "z"):
        batch.add(request_id, _prompt(1), _params(4))
    batch.admit()
    for step in _drain(batch):
        assert [d.request_id for d in step] == ["x", "y", "z"]


def test_admission_beyond_max_num_seqs_is_first_in_first_out() -> None:
    batch = SyntheticBatch(SyntheticEngineConfig(step_ms=1, max_num_seqs=2))
    for request_id, max_tokens in (("r0", 2), ("r1", 4), ("r2", 3), ("r3", 1), ("r4", 2)):
        batch.add(request_id, _prompt(0), _params(max_tokens))
    batch.admit()
    stats = batch.stats()
    assert (stats.num_running, stats.num_waiting) == (2, 3)
    steps = _drain(batch)
    assert all(len(step) <= 2 for step in steps)
    first_step = {}
    for number, step in enumerate(steps):
        for delta in step:
            first_step.setdefault(delta.request_id, number)
    # r0 ends in step 1 and r2 takes its slot; r1 ends in step 3 and r3 takes its; r2 and r3
    # both end in step 4 and r4 follows.
    assert first_step == {"r0": 0, "r1": 0, "r2": 2, "r3": 4, "r4": 5}


def test_abort_ends_a_running_or_waiting_request_and_frees_its_slot() -> None:
    batch = SyntheticBatch(SyntheticEngineConfig(step_ms=1, max_num_seqs=1))
    batch.add("running", _prompt(0), _params(100))
    batch.add("waiting", _prompt(1), _params(2))
    batch.add("queued", _prompt(2), _params(2))
    batch.admit()
    assert [d.request_id for d in batch.step()] == ["running"]
    [aborted] = batch.abort("waiting")
    assert (aborted.finish_reason, aborted.finished, aborted.token_ids) == ("abort", True, [])
    [aborted] = batch.abort("running")
    assert (aborted.request_id, aborted.offset, aborted.finish_reason) == ("running", 1, "abort")
    assert batch.abort("running") == [] and batch.abort("unknown") == []
    batch.admit()
    steps = _drain(batch)
    assert [[d.request_id for d in step] for step in steps] == [["queued"], ["queued"]]


def test_resume_continues_after_the_tokens_already_streamed() -> None:
    batch = SyntheticBatch(SyntheticEngineConfig(step_ms=1, vocab_size=1000))
    batch.add("r", _prompt(3), _params(5), resume={0: [7, 8, 9]})
    batch.admit()
    deltas = [d for step in _drain(batch) for d in step]
    assert [d.offset for d in deltas] == [3, 4]
    assert deltas[1].token_ids == [synthetic_token_id(_prompt(3), 4, 1000)]
    assert deltas[0].prompt_token_ids is None  # the first attempt reported the prompt


@pytest.mark.parametrize(("prompt", "params", "error"), [
    (_prompt(0, 10), _params(7), PromptTooLongError),  # 10 + 7 > max_model_len 16
    (_prompt(0), _params(2, n=2), ValueError),
    ([5, 40_000], _params(2), ValueError),  # outside the vocabulary
    ([], _params(2), ValueError),
])
def test_refuses_what_it_cannot_serve(prompt, params, error) -> None:
    batch = SyntheticBatch(SyntheticEngineConfig(step_ms=1, max_model_len=16))
    with pytest.raises(error):
        batch.add("r", prompt, params)
    assert not batch.has_unfinished()


def test_a_request_id_cannot_run_twice() -> None:
    batch = SyntheticBatch(SyntheticEngineConfig(step_ms=1))
    batch.add("r", _prompt(0), _params(2))
    with pytest.raises(DuplicateRequestError):
        batch.add("r", _prompt(0), _params(2))


@pytest.mark.parametrize("kwargs", [{"step_ms": 0}, {"step_ms": -1.0}, {"step_ms": True},
                                    {"step_ms": 3, "max_num_seqs": 0}])
def test_config_is_validated(kwargs) -> None:
    with pytest.raises(ValueError):
        SyntheticEngineConfig(**kwargs)


# ---- the threaded engine --------------------------------------------------------------------

async def _collect(engine: SyntheticEngine, request_id: str, prompt: list[int],
                   max_tokens: int) -> list[RequestDelta]:
    return [d async for d in engine.add_request(request_id, prompt, _params(max_tokens))]


@pytest.fixture
def engine():
    engine = SyntheticEngine(SyntheticEngineConfig(step_ms=2, max_num_seqs=3))
    yield engine
    engine.shutdown()


def test_concurrent_requests_beyond_max_num_seqs_all_complete(engine) -> None:
    async def run():
        return await asyncio.wait_for(asyncio.gather(
            *(_collect(engine, f"r{i}", _prompt(i), 4 + i) for i in range(7))), 30)

    for i, deltas in enumerate(asyncio.run(run())):
        assert [t for d in deltas for t in d.token_ids] == [
            synthetic_token_id(_prompt(i), p, engine.config.vocab_size) for p in range(4 + i)]
        assert deltas[-1].finish_reason == "length"
    stats = engine.stats()
    assert (stats.num_running, stats.num_waiting, stats.generation_tokens_total) == (0, 0, 49)


def test_one_loop_wake_up_per_step(engine) -> None:
    """Each step's deltas reach a caller loop in one `call_soon_threadsafe`, however many of
    its requests got a token in that step."""
    loop = asyncio.new_event_loop()
    wake_ups: list[int] = []
    schedule = loop.call_soon_threadsafe

    def counted(callback, *args):
        wake_ups.append(len(args[0]) if args else 0)
        return schedule(callback, *args)

    async def run():
        return await asyncio.wait_for(asyncio.gather(
            *(_collect(engine, f"r{i}", _prompt(i), 8) for i in range(3))), 30)

    loop.call_soon_threadsafe = counted
    try:
        results = loop.run_until_complete(run())
    finally:
        loop.close()
    assert [sum(len(d.token_ids) for d in deltas) for deltas in results] == [8, 8, 8]
    assert len(wake_ups) == engine.step_report().num_steps
    assert sum(wake_ups) == 24 and len(wake_ups) < 24


def test_leaving_the_stream_early_aborts_and_frees_the_slot() -> None:
    # Without the abort "long" would hold the only slot for 4000 steps of 50 ms (200 s).
    engine = SyntheticEngine(SyntheticEngineConfig(step_ms=50, max_num_seqs=1))

    async def run():
        stream = engine.add_request("long", _prompt(0), _params(4000))
        first = await anext(stream)
        waiting = asyncio.create_task(_collect(engine, "next", _prompt(1), 3))
        await stream.aclose()  # the abort lets "next" into the only slot
        return first, await asyncio.wait_for(waiting, 30)

    try:
        first, deltas = asyncio.run(run())
    finally:
        engine.shutdown()
    assert first.offset == 0
    assert [d.finish_reason for d in deltas][-1] == "length" and len(deltas) == 3


def test_bad_input_raises_before_any_delta(engine) -> None:
    async def run(prompt, max_tokens):
        return await _collect(engine, "bad", prompt, max_tokens)

    with pytest.raises(ValueError, match="token-id prompts only"):
        asyncio.run(run("some text", 2))  # type: ignore[arg-type]
    with pytest.raises(PromptTooLongError):
        asyncio.run(run(_prompt(0), 10_000))


def test_shutdown_ends_open_streams_with_abort() -> None:
    engine = SyntheticEngine(SyntheticEngineConfig(step_ms=2))

    async def run():
        stream = engine.add_request("r", _prompt(0), _params(4000))
        await anext(stream)
        engine.shutdown()
        return [d async for d in stream]

    deltas = asyncio.run(run())
    assert deltas[-1].finish_reason == "abort" and deltas[-1].finished


# ---- the registry hook ----------------------------------------------------------------------

def _registry(**entry) -> dict:
    return {"models": {"m": {"engine": {"max_num_seqs": 8, "max_model_len": 64}, **entry}}}


@pytest.mark.parametrize(("entry", "message"), [
    ({"synthetic_step_ms": 0}, "synthetic_step_ms must be a positive number"),
    ({"synthetic_step_ms": "3ms"}, "synthetic_step_ms must be a positive number"),
    ({"synthetic_step_ms": 3, "task": "embed"}, "synthetic_step_ms needs task: generate"),
])
def test_registry_refuses_bad_synthetic_models(entry, message) -> None:
    with pytest.raises(RegistryError, match=f"model 'm'.*{message}"):
        parse_registry(_registry(**entry))


def test_the_registry_hook_builds_the_synthetic_engine_without_torch() -> None:
    script = (
        "import json, sys\n"
        "from pagefleet.platform.registry import parse_registry\n"
        "from pagefleet.workers.runtime.main import registry_engine_factory\n"
        f"spec = parse_registry({_registry(synthetic_step_ms=2.5)!r}).get('m')\n"
        "engine = registry_engine_factory(spec)()\n"
        "stats = engine.stats()\n"
        "engine.shutdown()\n"
        "print(json.dumps({'engine': type(engine).__name__, 'step_ms': engine.config.step_ms,\n"
        "                  'max_num_seqs': stats.max_num_seqs, 'max_model_len': engine.max_model_len,\n"
        "                  'heavy': sorted(m for m in ('torch', 'transformers') if m in sys.modules)}))\n"
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout) == {"engine": "SyntheticEngine", "step_ms": 2.5,
                                      "max_num_seqs": 8, "max_model_len": 64, "heavy": []}


def test_token_ids_spread_over_the_vocabulary() -> None:
    ids = [synthetic_token_id(_prompt(0), p, 32_000) for p in range(1000)]
    assert len(set(ids)) == 1000 and max(Counter(ids).values()) == 1
