"""Swap or recompute: what a preempted sequence costs to bring back, decided per preemption.

Recomputing a sequence's KV costs a prefill of its computed tokens, about
`2 * num_params` FLOPs each; swapping it costs moving its blocks to host memory and back.
Which is cheaper depends on the model and the link: for an 8B model on an H200 a token's KV
(128 KiB in bf16) crosses PCIe twice faster than 16 GFLOP are recomputed, for a 135M model
the prefill wins; on the CPU, where the "link" is a memcpy and FLOPs are scarce, swapping
wins by far. The rates below are conservative sustained figures, not peaks; they decide
only which of two correct paths to take, so being off by a small factor costs speed near
the break-even point and nothing else. `pagefleet bench engine --preemption-mode` measures
both paths when the estimate is in doubt.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

# Sustained rates: dense bf16 prefill and pinned PCIe (Gen4/5) on a GPU; fp32 matmuls on a
# few cores and memcpy on the CPU.
_CUDA_FLOPS = 300e12
_CUDA_LINK_BYTES_PER_S = 20e9
_CPU_FLOPS = 50e9
_CPU_LINK_BYTES_PER_S = 4e9


@dataclass(frozen=True, slots=True)
class PreemptionCost:
    """Estimated seconds to bring back a preempted sequence either way. `mode` forces one
    path ("swap" still falls back to recompute when the swap space is full)."""

    bytes_per_block: int
    flops_per_token: float
    flops_per_s: float
    link_bytes_per_s: float
    mode: str | None = None  # EngineConfig.preemption_mode (validated there)

    def swap_s(self, num_blocks: int) -> float:
        return 2 * num_blocks * self.bytes_per_block / self.link_bytes_per_s  # out, then in

    def recompute_s(self, num_tokens: int) -> float:
        return num_tokens * self.flops_per_token / self.flops_per_s

    def prefers_swap(self, num_tokens: int, num_blocks: int) -> bool:
        if self.mode is not None:
            return self.mode == "swap"
        return self.swap_s(num_blocks) < self.recompute_s(num_tokens)


def estimate_cost(device: torch.device, num_params: int, bytes_per_block: int,
                  mode: str | None = None) -> PreemptionCost:
    """The cost model for a model of `num_params` parameters (this rank's) on `device`."""
    on_cuda = device.type == "cuda"
    return PreemptionCost(
        bytes_per_block=bytes_per_block,
        flops_per_token=2.0 * num_params,
        flops_per_s=_CUDA_FLOPS if on_cuda else _CPU_FLOPS,
        link_bytes_per_s=_CUDA_LINK_BYTES_PER_S if on_cuda else _CPU_LINK_BYTES_PER_S,
        mode=mode,
    )
