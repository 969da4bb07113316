"""Attention metadata for the random paged batches of `pagefleet.kernels.testing`."""

from __future__ import annotations

from pagefleet.kernels.testing import PagedBatch
from pagefleet.workers.attention import AttentionMetadata


def to_metadata(batch: PagedBatch) -> AttentionMetadata:
    return AttentionMetadata(
        slot_mapping=batch.slot_mapping, query_start_loc=batch.query_start_loc,
        seq_lens=batch.seq_lens, block_tables=batch.block_tables,
        max_query_len=batch.max_query_len, max_seq_len=batch.max_seq_len,
        query_start_loc_cpu=batch.query_start_loc_cpu, seq_lens_cpu=batch.seq_lens_cpu,
    )
