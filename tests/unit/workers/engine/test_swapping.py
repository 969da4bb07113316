"""KV swapping: a preempted sequence's blocks go to host memory and back instead of being
recomputed, and greedy outputs do not change. CPU, torch backend, a cache so small that
sequences are preempted many times: the swap path, the recompute path and a cache with no
pressure must give the same tokens, with and without asynchronous scheduling."""

from __future__ import annotations

import pytest
import torch

from pagefleet.workers import LLM, SamplingParams
from pagefleet.workers.engine.config import EngineConfig
from pagefleet.workers.engine.kv_cache_manager import KVCacheManager
from pagefleet.workers.engine.preemption import estimate_cost
from pagefleet.workers.engine.scheduler import Scheduler, SchedulerConfig
from pagefleet.workers.engine.sequence import Sequence

PROMPTS = [
    "The capital of France is",
    "def fibonacci(n):",
    "The capital of France is Paris. The capital of Italy is",  # shares a prefix with [0]
]
GREEDY = SamplingParams(temperature=0, max_tokens=14)
PRESSURE = {"num_kv_blocks": 8, "block_size": 4}  # 32 tokens for three 19- to 26-token sequences


def _run(**engine_args) -> tuple[list[list[int]], LLM]:
    llm = LLM(max_model_len=64, **engine_args)
    tokens = [out.outputs[0].token_ids for out in llm.generate(PROMPTS, GREEDY)]
    kv = llm.engine.kv_cache
    assert kv.pool.num_free_blocks == kv.pool.num_blocks and not kv.host_tables
    if kv.host_pool is not None:
        assert kv.host_pool.num_free_blocks == kv.host_pool.num_blocks
    return tokens, llm


@pytest.fixture(scope="module")
def unpressured() -> list[list[int]]:
    tokens, llm = _run(block_size=4)
    assert llm.engine.stats().num_preemptions_total == 0
    return tokens


def test_recompute_gives_the_unpressured_tokens(unpressured) -> None:
    # A swap space that preemption_mode "recompute" leaves unused.
    recomputed, llm = _run(**PRESSURE, swap_space=0.01, preemption_mode="recompute")
    stats = llm.engine.stats()
    assert stats.num_preemptions_total > 0 and stats.num_swapped_out_total == 0
    assert recomputed == unpressured


@pytest.mark.parametrize("async_scheduling", [False, True], ids=["sync", "async"])
def test_swapping_gives_the_unpressured_tokens(unpressured, async_scheduling) -> None:
    # On the CPU the cost model picks swapping by itself (no preemption_mode forced).
    swapped, llm = _run(**PRESSURE, async_scheduling=async_scheduling, swap_space=0.01)
    stats = llm.engine.stats()
    assert stats.num_swapped_out_total == stats.num_preemptions_total > 0
    assert swapped == unpressured


def test_the_cost_model_follows_model_size_and_device() -> None:
    cuda, cpu = torch.device("cuda"), torch.device("cpu")
    llama_8b = estimate_cost(cuda, num_params=8_030_000_000, bytes_per_block=16 * 131072)
    smollm_gpu = estimate_cost(cuda, num_params=135_000_000, bytes_per_block=16 * 23040)
    smollm_cpu = estimate_cost(cpu, num_params=135_000_000, bytes_per_block=16 * 46080)
    assert llama_8b.prefers_swap(num_tokens=1024, num_blocks=64)
    assert not smollm_gpu.prefers_swap(num_tokens=1024, num_blocks=64)
    assert smollm_cpu.prefers_swap(num_tokens=1024, num_blocks=64)
    forced = estimate_cost(cuda, 135_000_000, 16 * 23040, mode="swap")
    assert forced.prefers_swap(num_tokens=1024, num_blocks=64)


def _preempt_new(num_host_blocks: int = 4):
    """Two 8-token prompts fill a 4-block cache; when `old` needs a third block the newest
    sequence, `new`, is preempted (the cost model on the CPU always prefers swapping)."""
    kv = KVCacheManager(num_blocks=4, block_size=4, enable_prefix_caching=True,
                        num_host_blocks=num_host_blocks)
    cost = estimate_cost(torch.device("cpu"), num_params=10**9, bytes_per_block=1024)
    scheduler = Scheduler(SchedulerConfig(max_num_seqs=4, max_num_batched_tokens=64, block_size=4),
                          kv, cost)
    params = SamplingParams(temperature=0, max_tokens=8)
    old = Sequence("old", 0, list(range(1, 9)), params, 8)
    new = Sequence("new", 0, list(range(11, 19)), params, 8)  # no prefix shared with old
    scheduler.add([old])
    scheduler.add([new])
    first = scheduler.schedule()
    assert [item.seq for item in first.scheduled] == [old, new] and kv.pool.num_free_blocks == 0
    scheduler.update(first)
    for seq in (old, new):
        seq.output_token_ids.append(9)
    second = scheduler.schedule()
    assert [item.seq for item in second.scheduled] == [old] and scheduler.waiting[0] is new
    scheduler.update(second)
    return scheduler, second, old, new


def test_scheduler_swaps_the_victim_out_and_back_in() -> None:
    scheduler, second, old, new = _preempt_new()
    kv = scheduler.kv_cache
    assert [c.host_block_id for c in second.swap_out] == [0, 1] and not second.swap_in
    assert new.num_computed_tokens == 8 and kv.is_swapped(new.seq_id)
    scheduler.finish(old, "stop")
    third = scheduler.schedule()  # room again: new comes back with its 8 tokens, decodes 1
    assert [(item.seq, item.num_new_tokens) for item in third.scheduled] == [(new, 1)]
    assert [c.host_block_id for c in third.swap_in] == [0, 1]
    assert not kv.is_swapped(new.seq_id) and kv.host_pool.num_free_blocks == 4


def test_a_full_swap_space_falls_back_to_recompute() -> None:
    scheduler, second, _, new = _preempt_new(num_host_blocks=1)  # new holds 2 blocks
    assert not second.swap_out and not scheduler.kv_cache.is_swapped(new.seq_id)
    assert new.num_computed_tokens == 0 and scheduler.num_preemptions == 1
    assert scheduler.num_swapped_out == 0


def test_a_swapped_out_sequence_can_finish_from_the_queue() -> None:
    # Asynchronous scheduling: its last token was in flight when it was preempted.
    scheduler, _, _, new = _preempt_new()
    kv = scheduler.kv_cache
    scheduler.finish(new, "length")
    assert not scheduler.waiting and not kv.is_swapped(new.seq_id)
    assert kv.host_pool.num_free_blocks == 4


def test_swap_settings_are_validated() -> None:
    with pytest.raises(ValueError, match="swap_space"):
        EngineConfig(swap_space=-1)
    with pytest.raises(ValueError, match="preemption_mode"):
        EngineConfig(preemption_mode="sometimes")
    with pytest.raises(ValueError, match="tensor_parallel_size 1"):
        EngineConfig(swap_space=1, tensor_parallel_size=2)
