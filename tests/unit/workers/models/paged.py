"""A hand-rolled paged KV cache for model tests: scattered blocks, real AttentionMetadata."""

from __future__ import annotations

import random
from dataclasses import dataclass, field

import torch

from pagefleet.workers.attention.metadata import AttentionMetadata
from pagefleet.workers.models.arch import ModelArch


@dataclass(frozen=True, slots=True)
class Step:
    input_ids: torch.Tensor  # [num_tokens] int64
    positions: torch.Tensor  # [num_tokens] int64
    metadata: AttentionMetadata


@dataclass(slots=True)
class PagedCache:
    """KV tensors plus per-sequence block tables drawn from a shuffled free list.

    Shuffling makes block tables non-contiguous, so a model that ignored the block table
    (or a slot-mapping bug) would read the wrong keys and fail the comparison.
    """

    arch: ModelArch
    num_blocks: int = 64
    block_size: int = 4
    tp_size: int = 1
    seed: int = 0
    kv_caches: list[tuple[torch.Tensor, torch.Tensor]] = field(init=False)
    free_blocks: list[int] = field(init=False)
    block_tables: dict[int, list[int]] = field(init=False, default_factory=dict)
    num_cached: dict[int, int] = field(init=False, default_factory=dict)

    def __post_init__(self) -> None:
        kv_heads = self.arch.num_kv_heads_per_rank(self.tp_size)
        shape = (self.num_blocks, self.block_size, kv_heads, self.arch.head_dim)
        self.kv_caches = [(torch.zeros(shape), torch.zeros(shape)) for _ in range(self.arch.num_layers)]
        self.free_blocks = list(range(1, self.num_blocks))  # keep block 0 as padding only
        random.Random(self.seed).shuffle(self.free_blocks)

    def step(self, chunks: dict[int, list[int]]) -> Step:
        """Flatten one step: {seq_id: new token ids}, appended after what each has cached."""
        ids, positions, slots, query_start, seq_lens, tables = [], [], [], [0], [], []
        for seq_id, tokens in chunks.items():
            start = self.num_cached.get(seq_id, 0)
            end = start + len(tokens)
            table = self.block_tables.setdefault(seq_id, [])
            while len(table) * self.block_size < end:
                table.append(self.free_blocks.pop())
            for pos in range(start, end):
                slots.append(table[pos // self.block_size] * self.block_size + pos % self.block_size)
            ids += tokens
            positions += range(start, end)
            query_start.append(query_start[-1] + len(tokens))
            seq_lens.append(end)
            tables.append(table)
            self.num_cached[seq_id] = end
        width = max(len(t) for t in tables)
        metadata = AttentionMetadata(
            slot_mapping=torch.tensor(slots, dtype=torch.int64),
            query_start_loc=torch.tensor(query_start, dtype=torch.int32),
            seq_lens=torch.tensor(seq_lens, dtype=torch.int32),
            block_tables=torch.tensor([t + [0] * (width - len(t)) for t in tables], dtype=torch.int32),
            max_query_len=max(len(t) for t in chunks.values()),
            max_seq_len=max(seq_lens),
            query_start_loc_cpu=query_start,
            seq_lens_cpu=seq_lens,
        )
        return Step(torch.tensor(ids, dtype=torch.int64), torch.tensor(positions, dtype=torch.int64),
                    metadata)
