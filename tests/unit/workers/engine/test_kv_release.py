"""Sliding-window block release: blocks out of every layer's window go back to the pool."""

from __future__ import annotations

from pagefleet.platform.protocol.sampling import SamplingParams
from pagefleet.workers.engine.kv_cache_manager import KVCacheManager
from pagefleet.workers.engine.sequence import Sequence

BLOCK_SIZE, WINDOW = 4, 6


def _seq(request_id: str, prompt: list[int], choice: int = 0) -> Sequence:
    return Sequence(request_id, choice, prompt, SamplingParams(), max_tokens=200)


def _step(kv: KVCacheManager, seq: Sequence) -> bool:
    """Schedule everything not yet computed, compute it, then sample one token."""
    num_new = seq.num_tokens - seq.num_computed_tokens
    if not kv.allocate(seq, num_new):
        return False
    seq.num_computed_tokens += num_new
    seq.output_token_ids.append(1000 + seq.num_tokens)
    return True


def _held(kv: KVCacheManager, seq: Sequence) -> list[int]:
    table = kv.block_tables[seq.seq_id]
    return table.block_ids[table.num_released:].tolist()


def test_a_long_sequence_runs_in_a_pool_smaller_than_it() -> None:
    """60 tokens need 15 blocks; with a 6-token window a pool of 4 is enough, and the blocks
    still held always cover exactly the window of the next query."""
    kv = KVCacheManager(num_blocks=4, block_size=BLOCK_SIZE, enable_prefix_caching=False,
                        release_window=WINDOW)
    seq = _seq("a", list(range(10)))
    while seq.num_tokens < 60:
        assert _step(kv, seq), f"out of blocks at {seq.num_tokens} tokens"
        assert len(_held(kv, seq)) <= 3  # 7 live tokens (window + the new one) span at most 3
    assert kv.block_tables[seq.seq_id].num_released >= 12
    kv.free(seq.seq_id)
    assert kv.pool.num_free_blocks == 4  # each block given back exactly once


def test_blocks_are_held_for_the_whole_window() -> None:
    """Nothing a query can still see is released: the held blocks start at or before the
    first key in the next query's window."""
    kv = KVCacheManager(num_blocks=32, block_size=BLOCK_SIZE, enable_prefix_caching=False,
                        release_window=WINDOW)
    seq = _seq("a", list(range(3)))
    for _ in range(40):
        assert _step(kv, seq)
        table = kv.block_tables[seq.seq_id]
        next_query = seq.num_tokens - 1  # its token is the next to compute
        first_needed = max(0, next_query - WINDOW + 1)
        assert table.num_released * BLOCK_SIZE <= first_needed


def test_without_a_window_every_block_is_held() -> None:
    kv = KVCacheManager(num_blocks=32, block_size=BLOCK_SIZE, enable_prefix_caching=False)
    seq = _seq("a", list(range(10)))
    for _ in range(30):
        assert _step(kv, seq)
    assert kv.block_tables[seq.seq_id].num_released == 0
    assert len(_held(kv, seq)) == 10  # 40 tokens (39 computed + room for the next)


def test_released_blocks_stay_findable_as_a_cached_prefix() -> None:
    """A released block keeps its prefix hash until reused: a second request with the same
    prompt still hits it, and taking it back revives it from the free queue."""
    kv = KVCacheManager(num_blocks=16, block_size=BLOCK_SIZE, enable_prefix_caching=True,
                        release_window=WINDOW)
    prompt = list(range(20))
    first = _seq("a", prompt)
    assert _step(kv, first)  # the whole prompt
    assert _step(kv, first)  # one decode: the prompt's first blocks fall out of the window
    released = kv.block_tables[first.seq_id].num_released
    assert released >= 3
    second = _seq("b", prompt)
    hit = kv.find_prefix(second)
    assert len(hit.blocks) == (len(prompt) - 1) // BLOCK_SIZE
    assert [b.block_id for b in hit.blocks[:released]] == kv.block_tables[first.seq_id].block_ids[:released].tolist()
    free_before = kv.pool.num_free_blocks
    assert kv.allocate(second, len(prompt) - hit.num_tokens(BLOCK_SIZE), hit)
    assert kv.pool.num_free_blocks < free_before
    kv.free(first.seq_id)
    kv.free(second.seq_id)
    assert kv.pool.num_free_blocks == 16


def test_fork_after_release_shares_nothing() -> None:
    kv = KVCacheManager(num_blocks=16, block_size=BLOCK_SIZE, enable_prefix_caching=False,
                        release_window=WINDOW)
    parent = _seq("a", list(range(20)))
    assert kv.allocate(parent, 12)  # a first chunk
    parent.num_computed_tokens = 12
    assert kv.allocate(parent, 8)  # the rest: blocks before the window of token 12 go
    parent.num_computed_tokens = 20
    assert kv.block_tables[parent.seq_id].num_released == (12 - WINDOW + 1) // BLOCK_SIZE
    child = _seq("a", list(range(20)), choice=1)
    assert kv.fork(parent, child) == 0
    assert child.seq_id not in kv.block_tables
