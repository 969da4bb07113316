"""CUDA graphs for decode steps: one captured graph per padded batch size.

A decode step of a small model is a few hundred tiny kernel launches, and launching them
from Python costs more than running them. Capturing the step once per batch size and
replaying it turns those launches into one. Inputs live in static device buffers that each
replay overwrites; rows past the real batch point at a scratch block of the KV cache (the
"null block"), so they compute harmless garbage that nobody reads.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from pagefleet.kernels.host_math import cdiv
from pagefleet.workers.attention import AttentionMetadata


def capture_sizes(max_num_seqs: int) -> list[int]:
    sizes = [s for s in (1, 2, 4, 8) if s <= max_num_seqs]
    sizes += list(range(16, max_num_seqs + 1, 16))
    if sizes[-1] != max_num_seqs:
        sizes.append(max_num_seqs)
    return sizes


@dataclass(slots=True)
class _StaticInputs:
    input_ids: torch.Tensor  # [max_bs] int64
    positions: torch.Tensor  # [max_bs] int64
    slot_mapping: torch.Tensor  # [max_bs] int64
    seq_lens: torch.Tensor  # [max_bs] int32
    block_tables: torch.Tensor  # [max_bs, max_blocks_per_seq] int32
    query_start_loc: torch.Tensor  # [max_bs + 1] int32, always 0..max_bs


class DecodeGraphs:
    def __init__(
        self, model: torch.nn.Module, kv_caches: list, max_num_seqs: int, max_model_len: int,
        block_size: int, null_block: int, device: torch.device,
    ) -> None:
        self.model = model
        self.kv_caches = kv_caches
        self.sizes = capture_sizes(max_num_seqs)
        self.max_model_len = max_model_len
        self.null_block = null_block
        self.null_slot = null_block * block_size
        max_bs = self.sizes[-1]
        max_blocks = cdiv(max_model_len, block_size)
        self.static = _StaticInputs(
            input_ids=torch.zeros(max_bs, dtype=torch.long, device=device),
            positions=torch.zeros(max_bs, dtype=torch.long, device=device),
            slot_mapping=torch.full((max_bs,), self.null_slot, dtype=torch.long, device=device),
            seq_lens=torch.ones(max_bs, dtype=torch.int32, device=device),
            block_tables=torch.full((max_bs, max_blocks), null_block, dtype=torch.int32, device=device),
            query_start_loc=torch.arange(max_bs + 1, dtype=torch.int32, device=device),
        )
        self.graphs: dict[int, torch.cuda.CUDAGraph] = {}
        self.outputs: dict[int, torch.Tensor] = {}
        self._capture_all()

    def _metadata(self, batch_size: int) -> AttentionMetadata:
        s = self.static
        return AttentionMetadata(
            slot_mapping=s.slot_mapping[:batch_size],
            query_start_loc=s.query_start_loc[: batch_size + 1],
            seq_lens=s.seq_lens[:batch_size],
            block_tables=s.block_tables[:batch_size],
            max_query_len=1,
            max_seq_len=self.max_model_len,  # a bound: kernels read true lengths on the device
            query_start_loc_cpu=list(range(batch_size + 1)),
            seq_lens_cpu=[self.max_model_len] * batch_size,
        )

    @torch.inference_mode()
    def _capture_all(self) -> None:
        pool = torch.cuda.graph_pool_handle()
        s = self.static
        for batch_size in reversed(self.sizes):  # largest first: smaller ones reuse its pool
            metadata = self._metadata(batch_size)
            args = (s.input_ids[:batch_size], s.positions[:batch_size], self.kv_caches, metadata)
            self.model(*args)  # warm-up outside capture: autotuning, lazy initialisation
            torch.cuda.synchronize()
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph, pool=pool):
                self.outputs[batch_size] = self.model(*args)
            self.graphs[batch_size] = graph
        torch.cuda.synchronize()

    def can_run(self, num_seqs: int) -> bool:
        return num_seqs <= self.sizes[-1]

    def run(
        self, input_ids: torch.Tensor, positions: torch.Tensor, slot_mapping: torch.Tensor,
        seq_lens: torch.Tensor, block_tables: torch.Tensor,
    ) -> torch.Tensor:
        """Replay the smallest graph that fits; arguments are device tensors of the real batch.
        Returns hidden states `[num_seqs, hidden]` (a view into the graph's output)."""
        num_seqs = input_ids.shape[0]
        batch_size = next(size for size in self.sizes if size >= num_seqs)
        s = self.static
        s.input_ids[:num_seqs].copy_(input_ids)
        s.positions[:num_seqs].copy_(positions)
        s.slot_mapping[:num_seqs].copy_(slot_mapping)
        s.seq_lens[:num_seqs].copy_(seq_lens)
        s.block_tables[:num_seqs, : block_tables.shape[1]].copy_(block_tables)
        if batch_size > num_seqs:
            s.slot_mapping[num_seqs:batch_size].fill_(self.null_slot)
            s.seq_lens[num_seqs:batch_size].fill_(1)
            s.block_tables[num_seqs:batch_size, 0].fill_(self.null_block)
        self.graphs[batch_size].replay()
        return self.outputs[batch_size][:num_seqs]
