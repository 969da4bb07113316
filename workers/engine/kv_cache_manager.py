"""Block tables per sequence on top of the block pool, with automatic prefix caching.

Full blocks are identified by a chained hash of (parent block hash, the block's token ids),
so two sequences with the same first k blocks of tokens share those k blocks. The hash map
stores the tokens too, and a hit is only taken if they match.

Sliding-window models: when every layer is windowed (`release_window`), a block whose tokens
have all fallen out of the window of the sequence's next query is dead, for this step and all
later ones, and goes back to the pool at once (still findable by its prefix hash until it is
reused). One block table serves every layer, so a model with any full-attention layer reads
every block and releases none: freeing per layer group would need one table per group.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from pagefleet.kernels.attention_mask import first_visible_key
from pagefleet.kernels.host_math import cdiv
from pagefleet.workers.engine.block_pool import Block, BlockPool
from pagefleet.workers.engine.sequence import PENDING_TOKEN, Sequence

SeqId = tuple[str, int]


def chain_block_hash(parent_hash: int | None, token_ids: tuple[int, ...]) -> int:
    """The prefix-cache key of a full block: its tokens chained to the hash of the block
    before it (None for the first), so equal hashes mean equal prefixes up to collisions."""
    return hash((parent_hash, token_ids))


@dataclass(frozen=True, slots=True)
class PrefixHit:
    """Cached blocks that cover a sequence's first `num_tokens` tokens."""

    blocks: list[Block] = field(default_factory=list)
    block_hashes: list[int] = field(default_factory=list)

    def num_tokens(self, block_size: int) -> int:
        return len(self.blocks) * block_size


NO_HIT = PrefixHit()


_NO_BLOCK_IDS = np.zeros(0, dtype=np.int32)
_NO_BLOCK_IDS.flags.writeable = False  # shared by every sequence without a table


@dataclass(slots=True, eq=False)
class BlockTable:
    """One sequence's blocks, in order. `block_ids` repeats `blocks` as an int32 array (a view
    of a buffer that doubles when full) because the runner copies every scheduled sequence's
    ids into the step's block tables: from a list that was a Python-level conversion of every
    id, every step (a quarter of the host path at 2k-token contexts); from an array it is one
    copy a row. `block_hashes` holds the chained hashes of the leading full blocks already
    offered to the prefix cache. The first `num_released` blocks went back to the pool (out of
    the window): their ids stay in place, so positions still index the table, and windowed
    attention never reads them."""

    blocks: list[Block] = field(default_factory=list)
    block_hashes: list[int] = field(default_factory=list)
    num_released: int = 0
    _ids: np.ndarray = field(default_factory=lambda: np.empty(8, dtype=np.int32))

    @property
    def block_ids(self) -> np.ndarray:
        """The ids of `blocks` (a view: read, never modify; later blocks do not appear in it)."""
        return self._ids[: len(self.blocks)]

    def extend(self, blocks: list[Block]) -> None:
        start, end = len(self.blocks), len(self.blocks) + len(blocks)
        if end > self._ids.shape[0]:
            grown = np.empty(max(end, 2 * self._ids.shape[0]), dtype=np.int32)
            grown[:start] = self._ids[:start]
            self._ids = grown
        self._ids[start:end] = [block.block_id for block in blocks]
        self.blocks.extend(blocks)


@dataclass(frozen=True, slots=True)
class BlockCopy:
    """One block moving between the device cache and the host swap space."""

    device_block_id: int
    host_block_id: int


class KVCacheManager:
    """`num_host_blocks` is the swap space: host blocks a preempted sequence's blocks may
    move to (`swap_out`) and come back from (`swap_in`); the runner copies the data."""

    def __init__(self, num_blocks: int, block_size: int, enable_prefix_caching: bool,
                 release_window: int | None = None, num_host_blocks: int = 0) -> None:
        if release_window is not None and release_window < 1:
            raise ValueError(f"release_window must be at least 1 (or None), got {release_window}")
        self.pool = BlockPool(num_blocks)
        self.host_pool = BlockPool(num_host_blocks) if num_host_blocks > 0 else None
        self.host_tables: dict[SeqId, list[Block]] = {}
        self.block_size = block_size
        self.enable_prefix_caching = enable_prefix_caching
        self.release_window = release_window  # ModelArch.kv_release_window
        self.block_tables: dict[SeqId, BlockTable] = {}
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

    def block_ids(self, seq_id: SeqId) -> np.ndarray:
        """The sequence's block ids now (`BlockTable.block_ids`: read, never modify)."""
        table = self.block_tables.get(seq_id)
        return table.block_ids if table is not None else _NO_BLOCK_IDS

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
            token_ids = self._block_token_ids(seq, i)
            block_hash = chain_block_hash(parent, token_ids)
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
        if self.release_window is not None:
            self._release_dead_blocks(seq, num_new_tokens)
        if not hit.blocks and self._fits(seq, num_new_tokens):
            return True  # the common decode step: room in the last block, nothing to cache
        if self._num_blocks_needed(seq, num_new_tokens, hit) > self.pool.num_free_blocks:
            return False
        table = self.block_tables.setdefault(seq.seq_id, BlockTable())
        if hit.blocks:
            self.pool.touch(hit.blocks)
            table.extend(hit.blocks)
            table.block_hashes.extend(hit.block_hashes)
        num_tokens = seq.num_computed_tokens + hit.num_tokens(self.block_size) + num_new_tokens
        num_missing = cdiv(num_tokens, self.block_size) - len(table.blocks)
        if num_missing > 0:
            table.extend(self.pool.allocate(num_missing))
        if self.enable_prefix_caching:
            self._cache_full_blocks(seq, table, num_tokens // self.block_size)
        return True

    def fork(self, parent: Sequence, child: Sequence) -> int:
        """Share the parent's full prompt blocks with a sibling choice; returns the number of
        tokens the child need not compute. The tail (under one block) is recomputed, so no
        block is ever written by two sequences. A parent that has released its first blocks
        shares nothing: the child's window may still need them."""
        num_shared_blocks = min(
            (parent.num_prompt_tokens - 1) // self.block_size,
            parent.num_computed_tokens // self.block_size,
        )
        parent_table = self.block_tables.get(parent.seq_id, BlockTable())
        if parent_table.num_released:
            return 0
        shared = parent_table.blocks[:num_shared_blocks]
        self.pool.touch(shared)
        table = BlockTable(block_hashes=parent_table.block_hashes[:num_shared_blocks])
        table.extend(shared)
        self.block_tables[child.seq_id] = table
        return num_shared_blocks * self.block_size

    def free(self, seq_id: SeqId) -> None:
        table = self.block_tables.pop(seq_id, None)
        if table is not None:
            self.pool.free(reversed(table.blocks[table.num_released:]))
        host_blocks = self.host_tables.pop(seq_id, None)
        if host_blocks is not None and self.host_pool is not None:
            self.host_pool.free(host_blocks)

    def reset_prefix_cache(self) -> None:
        """Forget cached prefixes: the device cache is being freed (the engine sleeps)."""
        self.pool.reset_prefix_cache()

    # ---- swapping -------------------------------------------------------------------------

    def is_swapped(self, seq_id: SeqId) -> bool:
        return seq_id in self.host_tables

    def can_swap_out(self, seq: Sequence) -> bool:
        """A sequence that already gave back blocks outside its sliding window is recomputed
        instead: its table no longer holds every block that swap-in would restore."""
        table = self.block_tables.get(seq.seq_id)
        return (self.host_pool is not None and table is not None and table.num_released == 0
                and self.num_computed_blocks(seq) <= self.host_pool.num_free_blocks)

    def swap_out(self, seq: Sequence) -> list[BlockCopy]:
        """Move the blocks that hold the sequence's computed tokens to host blocks and free
        its device blocks (cached prefixes among them stay findable until reused). The
        caller copies the returned blocks before any step writes to the freed ones."""
        assert self.host_pool is not None  # can_swap_out said yes
        table = self.block_tables.pop(seq.seq_id)
        device_blocks = table.blocks[: self.num_computed_blocks(seq)]
        host_blocks = self.host_pool.allocate(len(device_blocks))
        self.host_tables[seq.seq_id] = host_blocks
        self.pool.free(reversed(table.blocks))
        return [BlockCopy(d.block_id, h.block_id) for d, h in zip(device_blocks, host_blocks, strict=True)]

    def swap_in(self, seq: Sequence, num_new_tokens: int) -> list[BlockCopy] | None:
        """Bring a swapped-out sequence back with room for `num_new_tokens` more, or do
        nothing and return None. Its full blocks are offered to the prefix cache again."""
        assert self.host_pool is not None
        host_blocks = self.host_tables[seq.seq_id]
        num_needed = cdiv(seq.num_computed_tokens + num_new_tokens, self.block_size)
        if num_needed > self.pool.num_free_blocks:
            return None
        table = BlockTable()
        table.extend(self.pool.allocate(num_needed))
        self.block_tables[seq.seq_id] = table
        del self.host_tables[seq.seq_id]
        self.host_pool.free(host_blocks)
        if self.enable_prefix_caching:
            num_tokens = seq.num_computed_tokens + num_new_tokens
            self._cache_full_blocks(seq, table, num_tokens // self.block_size)
        return [BlockCopy(d.block_id, h.block_id) for d, h in zip(table.blocks, host_blocks, strict=False)]

    def num_computed_blocks(self, seq: Sequence) -> int:
        """Blocks that hold the sequence's computed tokens (what a swap moves)."""
        return cdiv(seq.num_computed_tokens, self.block_size)

    def _release_dead_blocks(self, seq: Sequence, num_new_tokens: int) -> None:
        """Give back the blocks before the window of this step's first query. With prefix
        caching only hashed blocks go (an unhashed one would be hashed later, after reuse)."""
        table = self.block_tables.get(seq.seq_id)
        if table is None:
            return
        num_tokens = seq.num_computed_tokens + num_new_tokens
        first_live = first_visible_key(num_tokens, num_new_tokens, self.release_window)
        num_dead = first_live // self.block_size
        if self.enable_prefix_caching:
            num_dead = min(num_dead, len(table.block_hashes))
        if num_dead > table.num_released:
            self.pool.free(reversed(table.blocks[table.num_released:num_dead]))
            table.num_released = num_dead

    def _fits(self, seq: Sequence, num_new_tokens: int) -> bool:
        table = self.block_tables.get(seq.seq_id)
        if table is None:
            return False
        num_tokens = seq.num_computed_tokens + num_new_tokens
        if num_tokens > len(table.blocks) * self.block_size:
            return False
        return not self.enable_prefix_caching or num_tokens // self.block_size <= len(
            table.block_hashes
        )

    def _num_blocks_needed(self, seq: Sequence, num_new_tokens: int, hit: PrefixHit) -> int:
        table = self.block_tables.get(seq.seq_id)
        num_held = len(table.blocks) if table is not None else 0
        num_tokens = seq.num_computed_tokens + hit.num_tokens(self.block_size) + num_new_tokens
        num_new_blocks = max(0, cdiv(num_tokens, self.block_size) - num_held - len(hit.blocks))
        num_revived = sum(1 for block in hit.blocks if block.ref_cnt == 0)
        return num_new_blocks + num_revived

    def _cache_full_blocks(self, seq: Sequence, table: BlockTable, num_full_blocks: int) -> None:
        hashes = table.block_hashes
        for i in range(len(hashes), num_full_blocks):
            token_ids = self._block_token_ids(seq, i)
            if PENDING_TOKEN in token_ids:
                break  # cached by a later step, once the host knows the token
            block_hash = chain_block_hash(hashes[-1] if hashes else None, token_ids)
            self.pool.cache(table.blocks[i], block_hash, token_ids)
            hashes.append(block_hash)

    def _block_token_ids(self, seq: Sequence, block_index: int) -> tuple[int, ...]:
        start = block_index * self.block_size
        return tuple(seq.token_ids_slice(start, start + self.block_size))
