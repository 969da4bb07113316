"""Block pool and KV manager invariants under arbitrary operation sequences (hypothesis)."""

from __future__ import annotations

from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pagefleet.platform.protocol.sampling import SamplingParams
from pagefleet.workers.engine.block_pool import BlockPool, FreeBlockQueue
from pagefleet.workers.engine.kv_cache_manager import KVCacheManager
from pagefleet.workers.engine.sequence import Sequence

BLOCK_SIZE = 4
NUM_BLOCKS = 12


def _seq(request_id: str, prompt: list[int]) -> Sequence:
    return Sequence(request_id, 0, prompt, SamplingParams(), max_tokens=64)


def _check_invariants(kv: KVCacheManager, live: dict[str, Sequence], forks: set[str]) -> None:
    pool = kv.pool
    owners = Counter(b.block_id for table in kv.block_tables.values() for b in table.blocks)
    for block in pool.blocks:
        assert block.ref_cnt == owners[block.block_id], "ref count differs from table references"
    free_ids = pool.free_queue.block_ids()
    assert len(free_ids) == len(set(free_ids)) == pool.num_free_blocks
    assert set(free_ids) == {b.block_id for b in pool.blocks if b.ref_cnt == 0}, "leaked block"
    for table in kv.block_tables.values():
        assert len({b.block_id for b in table.blocks}) == len(table.blocks), "block twice in one table"
        assert table.block_ids.tolist() == [b.block_id for b in table.blocks], "ids out of step with blocks"
        assert len(table.block_hashes) <= len(table.blocks)
    for block_hash, block in pool.cached.items():
        assert block.block_hash == block_hash
    assert set(kv.block_tables) <= {s.seq_id for s in live.values()} | {(rid, 1) for rid in forks}


operations = st.lists(
    st.tuples(
        st.sampled_from(["add", "grow", "fork", "free", "free_fork"]),
        st.integers(0, 5),  # which request
        st.integers(1, 9),  # how many tokens
        st.integers(0, 2),  # which prompt family (shared prefixes)
    ),
    max_size=40,
)


@settings(max_examples=150, deadline=None)
@given(operations)
def test_no_leaked_or_doubly_owned_blocks(ops):
    kv = KVCacheManager(NUM_BLOCKS, BLOCK_SIZE, enable_prefix_caching=True)
    live: dict[str, Sequence] = {}
    forks: set[str] = set()
    for op, who, num_tokens, family in ops:
        rid = f"r{who}"
        seq = live.get(rid)
        if op == "add" and seq is None:
            prompt = [family * 100 + i for i in range(num_tokens + 6)]
            seq = _seq(rid, prompt)
            hit = kv.find_prefix(seq)
            if kv.allocate(seq, seq.num_tokens - hit.num_tokens(BLOCK_SIZE), hit):
                seq.num_computed_tokens = seq.num_tokens
                live[rid] = seq
        elif op == "grow" and seq is not None:
            seq.output_token_ids.extend([7] * num_tokens)
            if kv.allocate(seq, seq.num_tokens - seq.num_computed_tokens):
                seq.num_computed_tokens = seq.num_tokens
            else:
                del seq.output_token_ids[-num_tokens:]
        elif op == "fork" and seq is not None and rid not in forks:
            child = Sequence(rid, 1, seq.prompt_token_ids, seq.params, 64)
            child.num_computed_tokens = kv.fork(seq, child)
            assert child.num_computed_tokens < child.num_tokens
            forks.add(rid)
        elif op == "free" and seq is not None:
            kv.free(seq.seq_id)
            del live[rid]
        elif op == "free_fork" and rid in forks:
            kv.free((rid, 1))
            forks.discard(rid)
        _check_invariants(kv, live, forks)
    for rid in list(live):
        kv.free((rid, 0))
    for rid in forks:
        kv.free((rid, 1))
    assert kv.pool.num_free_blocks == NUM_BLOCKS
    assert all(b.ref_cnt == 0 for b in kv.pool.blocks)


def test_prefix_hit_reuses_blocks_and_leaves_last_token_to_compute():
    kv = KVCacheManager(NUM_BLOCKS, BLOCK_SIZE, enable_prefix_caching=True)
    first = _seq("a", list(range(12)))
    assert kv.allocate(first, 12)
    second = _seq("b", list(range(12)))
    hit = kv.find_prefix(second)
    assert hit.num_tokens(BLOCK_SIZE) == 8  # 12 tokens: the third block must be recomputed
    assert [b.block_id for b in hit.blocks] == kv.block_ids(("a", 0))[:2].tolist()


def test_hash_collision_is_checked_against_tokens():
    pool = BlockPool(2)
    block = pool.allocate(1)[0]
    pool.cache(block, 123, (1, 2, 3, 4))
    assert pool.lookup(123, (1, 2, 3, 4)) is block
    assert pool.lookup(123, (9, 9, 9, 9)) is None


def test_evicts_least_recently_freed_cached_block_first():
    kv = KVCacheManager(4, BLOCK_SIZE, enable_prefix_caching=True)
    old, new = _seq("old", list(range(5))), _seq("new", list(range(50, 55)))
    assert kv.allocate(old, 5) and kv.allocate(new, 5)
    kv.free(old.seq_id)
    kv.free(new.seq_id)
    kv.pool.allocate(2)  # the two blocks freed earliest (old's, tail first): its prefix is gone
    assert kv.find_prefix(_seq("x", list(range(5)))).blocks == []
    assert kv.find_prefix(_seq("y", list(range(50, 55)))).num_tokens(BLOCK_SIZE) == 4


def test_free_queue_rejects_double_removal():
    pool = BlockPool(2)
    taken = pool.allocate(1)[0]
    with pytest.raises(ValueError, match="not in the free queue"):
        pool.free_queue.remove(taken)
    assert FreeBlockQueue([]).num_free == 0


def test_freeing_twice_is_an_error():
    pool = BlockPool(2)
    blocks = pool.allocate(1)
    pool.free(blocks)
    with pytest.raises(ValueError, match="freed more often"):
        pool.free(blocks)
