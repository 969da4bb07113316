"""The flattened description of one engine step that every attention backend reads."""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(slots=True)
class AttentionMetadata:
    """Where each new token's K/V goes and what each query attends to.

    A step is a batch of sequences, each contributing `query_len` new tokens (a prefill chunk
    or one decode token) laid out back to back. Query token `i` of sequence `s` sits at
    position `seq_lens[s] - query_len[s] + i` and attends causally to positions `0..its own`,
    all of which are in the paged cache once the new K/V are written.
    """

    slot_mapping: torch.Tensor  # [num_tokens] int64: block_id * block_size + offset
    query_start_loc: torch.Tensor  # [num_seqs + 1] int32: cumulative query lengths
    seq_lens: torch.Tensor  # [num_seqs] int32: cached + new tokens of each sequence
    block_tables: torch.Tensor  # [num_seqs, max_blocks_per_seq] int32, padded with 0
    max_query_len: int
    max_seq_len: int
    # Host copies for backends that loop in Python (the torch reference); never synced from GPU.
    query_start_loc_cpu: list[int]
    seq_lens_cpu: list[int]

    @property
    def num_seqs(self) -> int:
        return len(self.seq_lens_cpu)

    @property
    def is_decode_only(self) -> bool:
        return self.max_query_len == 1
