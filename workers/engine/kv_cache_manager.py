"""Block tables per sequence on top of the block pool, with automatic prefix caching.

Full blocks are identified by a chained hash of (parent block hash, the block's token ids),
so two sequences with the same first k blocks of tokens share those k blocks. The hash map
stores the tokens too, and a hit is only taken if they match.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from pagefleet.workers.engine.block_pool import Block, BlockPool
from pagefleet.workers.engine.sequence import Sequence

SeqId = tuple[str, int]


@dataclass(frozen=True, slots=True)
class PrefixHit:
    """Cached blocks that cover a sequence's first `num_tokens` tokens."""

    blocks: list[Block] = field(default_factory=list)
    block_hashes: list[int] = field(default_factory=list)

    def num_tokens(self, block_size: int) -> int:
        return len(self.blocks) * block_size


NO_HIT = PrefixHit()


class KVCacheManager:
    def __init__(self, num_blocks: int, block_size: int, enable_prefix_caching: bool) -> None:
        self.pool = BlockPool(num_blocks)
        self.block_size = block_size
        self.enable_prefix_caching = enable_prefix_caching
        self.block_tables: dict[SeqId, list[Block]] = {}
        # The same tables as plain ids, kept in step with `block_tables`: the runner reads
        # them every step, and rebuilding them from Block objects would cost O(blocks).
        self._block_ids: dict[SeqId, list[int]] = {}
        self._block_hashes: dict[SeqId, list[int]] = {}
        self.num_prefix_queried_tokens = 0
        self.num_prefix_hit_tokens = 0

    @property
    def usage(self) -> float:
        return self.pool.usage()

    @property
    def prefix_cache_hit_rate(self) -> float:
        if self.num_prefix_queried_tokens == 0:
            return 0.0
        return self.num_prefix_hit_tokens / self.num_prefix_queried_tokens

    def block_ids(self, seq_id: SeqId) -> list[int]:
        """The sequence's block ids (the live list: read, never modify)."""
        return self._block_ids.get(seq_id, [])

    def find_prefix(self, seq: Sequence) -> PrefixHit:
        """Longest cached prefix of a sequence that has computed nothing yet.

        The last token is always left to compute: its logits are needed to sample.
        """
        if not self.enable_prefix_caching or seq.num_computed_tokens > 0:
            return NO_HIT
        blocks: list[Block] = []
        hashes: list[int] = []
        parent: int | None = None
        for i in range((seq.num_tokens - 1) // self.block_size):
            token_ids = tuple(seq.token_ids_slice(i * self.block_size, (i + 1) * self.block_size))
            block_hash = hash((parent, token_ids))
            block = self.pool.lookup(block_hash, token_ids)
            if block is None:
                break
            blocks.append(block)
            hashes.append(block_hash)
            parent = block_hash
        return PrefixHit(blocks, hashes)

    def record_prefix_lookup(self, num_queried_tokens: int, num_hit_tokens: int) -> None:
        """Count an admitted sequence's prompt lookup in the hit rate (once per admission)."""
        self.num_prefix_queried_tokens += num_queried_tokens
        self.num_prefix_hit_tokens += num_hit_tokens

    def allocate(self, seq: Sequence, num_new_tokens: int, hit: PrefixHit = NO_HIT) -> bool:
        """Give `seq` room for `num_new_tokens` more computed tokens (after `hit`), or do
        nothing and return False. Blocks that these tokens fill are cached for others."""
        if not hit.blocks and self._fits(seq, num_new_tokens):
            return True  # the common decode step: room in the last block, nothing to cache
        if self._num_blocks_needed(seq, num_new_tokens, hit) > self.pool.num_free_blocks:
            return False
        table = self.block_tables.setdefault(seq.seq_id, [])
        ids = self._block_ids.setdefault(seq.seq_id, [])
        hashes = self._block_hashes.setdefault(seq.seq_id, [])
        if hit.blocks:
            self.pool.touch(hit.blocks)
            table.extend(hit.blocks)
            ids.extend(block.block_id for block in hit.blocks)
            hashes.extend(hit.block_hashes)
        num_tokens = seq.num_computed_tokens + hit.num_tokens(self.block_size) + num_new_tokens
        num_missing = -(-num_tokens // self.block_size) - len(table)
        if num_missing > 0:
            new_blocks = self.pool.allocate(num_missing)
            table.extend(new_blocks)
            ids.extend(block.block_id for block in new_blocks)
        if self.enable_prefix_caching:
            self._cache_full_blocks(seq, table, hashes, num_tokens // self.block_size)
        return True

    def fork(self, parent: Sequence, child: Sequence) -> int:
        """Share the parent's full prompt blocks with a sibling choice; returns the number of
        tokens the child need not compute. The tail (under one block) is recomputed, so no
        block is ever written by two sequences."""
        num_shared_blocks = min(
            (parent.num_prompt_tokens - 1) // self.block_size,
            parent.num_computed_tokens // self.block_size,
        )
        shared = self.block_tables.get(parent.seq_id, [])[:num_shared_blocks]
        self.pool.touch(shared)
        self.block_tables[child.seq_id] = list(shared)
        self._block_ids[child.seq_id] = [block.block_id for block in shared]
        self._block_hashes[child.seq_id] = self._block_hashes.get(parent.seq_id, [])[
            :num_shared_blocks
        ]
        return num_shared_blocks * self.block_size

    def free(self, seq_id: SeqId) -> None:
        table = self.block_tables.pop(seq_id, [])
        self._block_ids.pop(seq_id, None)
        self._block_hashes.pop(seq_id, None)
        self.pool.free(reversed(table))

    def _fits(self, seq: Sequence, num_new_tokens: int) -> bool:
        ids = self._block_ids.get(seq.seq_id)
        if ids is None:
            return False
        num_tokens = seq.num_computed_tokens + num_new_tokens
        if num_tokens > len(ids) * self.block_size:
            return False
        return not self.enable_prefix_caching or num_tokens // self.block_size <= len(
            self._block_hashes[seq.seq_id]
        )

    def _num_blocks_needed(self, seq: Sequence, num_new_tokens: int, hit: PrefixHit) -> int:
        table = self.block_tables.get(seq.seq_id, ())
        num_tokens = seq.num_computed_tokens + hit.num_tokens(self.block_size) + num_new_tokens
        num_new_blocks = max(0, -(-num_tokens // self.block_size) - len(table) - len(hit.blocks))
        num_revived = sum(1 for block in hit.blocks if block.ref_cnt == 0)
        return num_new_blocks + num_revived

    def _cache_full_blocks(
        self, seq: Sequence, table: list[Block], hashes: list[int], num_full_blocks: int
    ) -> None:
        for i in range(len(hashes), num_full_blocks):
            token_ids = tuple(seq.token_ids_slice(i * self.block_size, (i + 1) * self.block_size))
            block_hash = hash((hashes[-1] if hashes else None, token_ids))
            self.pool.cache(table[i], block_hash, token_ids)
            hashes.append(block_hash)
