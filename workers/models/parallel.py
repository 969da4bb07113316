"""Tensor-parallel building blocks over torch.distributed (NCCL on GPU, gloo in CPU tests).

Megatron-style: a column-parallel linear splits output features (no communication), the
row-parallel linear after it splits input features and all-reduces the partial sums. Every
layer loads the *full* Hugging Face tensor and keeps its rank's slice, so checkpoints need no
resharding. With `size == 1` no collective is ever called, so single-GPU runs pay nothing.

Heads are split across ranks; KV heads are never replicated, so `num_kv_heads` must be
divisible by the tensor-parallel size (see `ModelArch.num_kv_heads_per_rank`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from pagefleet.workers.models.fp8 import (
    FP8_DTYPE,
    QuantizedActivation,
    fp8_linear,
    per_row_scale,
    quantize_rows,
)
from pagefleet.workers.models.int4 import Int4Weight, int4_linear, quantize_int4_rtn
from pagefleet.workers.models.int8 import (
    GEMV_MAX_ROWS,
    Int8Weight,
    int8_linear,
    int8_matvec,
    quantize_int8_rows,
)


@dataclass(frozen=True, slots=True)
class TensorParallel:
    """Which slice this process holds; `group` is a torch.distributed process group or None."""

    rank: int = 0
    size: int = 1
    group: Any = None

    def __post_init__(self) -> None:
        if self.size < 1:
            raise ValueError(f"tensor-parallel size must be at least 1, got {self.size}")
        if not 0 <= self.rank < self.size:
            raise ValueError(f"rank must be in [0, {self.size}), got {self.rank}")

    def divide(self, n: int, what: str) -> int:
        if n % self.size:
            raise ValueError(f"{what} ({n}) is not divisible by tensor-parallel size {self.size}")
        return n // self.size

    def all_reduce(self, x: torch.Tensor) -> torch.Tensor:
        if self.size > 1:
            dist.all_reduce(x, group=self.group)
        return x

    def broadcast_from_driver(self, x: torch.Tensor) -> torch.Tensor:
        """Rank 0's `x` into every rank's `x` (same shape and dtype), on the device's stream."""
        if self.size > 1:
            dist.broadcast(x, src=0, group=self.group)
        return x

    def all_gather_last_dim(self, x: torch.Tensor) -> torch.Tensor:
        if self.size == 1:
            return x
        parts = [torch.empty_like(x) for _ in range(self.size)]
        dist.all_gather(parts, x.contiguous(), group=self.group)
        return torch.cat(parts, dim=-1)


def _parameter(*shape: int) -> nn.Parameter:
    # Created under the caller's default device/dtype (see loader.build_model).
    return nn.Parameter(torch.empty(*shape), requires_grad=False)


class QuantizableLinear(nn.Module):
    """A linear layer whose weight is bf16/fp32, fp8 with one scale per output row, int8 with
    one bfloat16 scale per output row (the CPU path, see int8.py), or int4 (int32-packed
    `[out, in / 8]` with `weight_scale`/`weight_zero` per group, see int4.py).

    `to_fp8` / `to_int8` / `to_int4` quantise loaded weights in place (online,
    `quantization="fp8"|"int8"|"int4"`); `prepare_fp8` / `prepare_int4` make room for a
    quantised checkpoint's tensors instead.
    An FP8 layer also takes its input already quantised (`takes_quantized_input`).
    """

    weight: nn.Parameter

    def __init__(self) -> None:
        super().__init__()
        self.register_parameter("weight_scale", None)  # set by to_fp8 / prepare_fp8 / int4
        self.register_parameter("weight_zero", None)  # int4 only
        self.fuse_input_quant = False  # set with the fp8 weights, see takes_quantized_input

    @property
    def is_fp8(self) -> bool:
        return self.weight_scale is not None and self.weight_zero is None and self.weight.dtype != torch.int8

    @property
    def takes_quantized_input(self) -> bool:
        """Whether the kernel before this layer should hand it fp8 rows and scales
        (`QuantizedActivation`) rather than the activation: an FP8 layer, unless the loader
        was told to keep quantisation in the matmul (`fused_fp8_quant=False`, for A/B runs)."""
        return self.is_fp8 and self.fuse_input_quant

    def matmul(self, x: torch.Tensor | QuantizedActivation, bias: torch.Tensor | None) -> torch.Tensor:
        if self.is_fp8:
            return fp8_linear(x, self.weight, self.weight_scale, bias)
        if isinstance(x, QuantizedActivation):
            raise TypeError(f"{type(self).__name__} with {self.weight.dtype} weights cannot take fp8 input")
        if self.weight_zero is not None:
            return int4_linear(x, self.int4_weight(), bias)
        if self.weight_scale is not None:  # int8 (CPU): weight-only, per output row
            return int8_linear(x, Int8Weight(self.weight, self.weight_scale), bias)
        return F.linear(x, self.weight, bias)

    def int4_weight(self) -> Int4Weight:
        return Int4Weight(self.weight, self.weight_scale, self.weight_zero)

    def to_fp8(self, fuse_input_quant: bool = True) -> None:
        values, scale = quantize_rows(self.weight.data)
        self.weight = nn.Parameter(values, requires_grad=False)
        self.weight_scale = nn.Parameter(scale.view(-1), requires_grad=False)
        self.fuse_input_quant = fuse_input_quant

    def prepare_fp8(self, fuse_input_quant: bool = True) -> None:
        rows = self.weight.shape[0]
        self.fuse_input_quant = fuse_input_quant
        self.weight = nn.Parameter(torch.empty_like(self.weight, dtype=FP8_DTYPE), requires_grad=False)
        self.weight_scale = nn.Parameter(
            torch.ones(rows, dtype=torch.float32, device=self.weight.device), requires_grad=False)

    def to_int8(self) -> None:
        quantized = quantize_int8_rows(self.weight.data)
        self.weight = nn.Parameter(quantized.qweight, requires_grad=False)
        self.weight_scale = nn.Parameter(quantized.scales, requires_grad=False)

    def to_int4(self) -> None:
        self._set_int4(quantize_int4_rtn(self.weight.data))

    def prepare_int4(self, group_size: int) -> None:
        rows, cols = self.weight.shape
        if cols % group_size:
            raise ValueError(f"{cols} input features per rank are not divisible by int4 group size {group_size}")
        device = self.weight.device
        groups = torch.empty((rows, cols // group_size), dtype=torch.float32, device=device)
        self._set_int4(Int4Weight(torch.empty((rows, cols // 8), dtype=torch.int32, device=device),
                                  groups, groups.clone()))

    def _set_int4(self, weight: Int4Weight) -> None:
        self.weight = nn.Parameter(weight.qweight, requires_grad=False)
        self.weight_scale = nn.Parameter(weight.scales, requires_grad=False)
        self.weight_zero = nn.Parameter(weight.zeros, requires_grad=False)


class ColumnParallelLinear(QuantizableLinear):
    """y = x W^T with W's rows split by rank; `output_sizes` fuses several HF projections.

    For a fused projection (qkv, gate_up) each part is split separately, so rank r holds
    `[q_r; k_r; v_r]` and the model can split its output into per-rank heads.
    """

    def __init__(self, input_size: int, output_sizes: list[int], bias: bool,
                 tp: TensorParallel) -> None:
        super().__init__()
        self.tp = tp
        self.output_sizes = [tp.divide(s, "output features") for s in output_sizes]
        self.weight = _parameter(sum(self.output_sizes), input_size)  # [out / tp, in]
        self.bias = _parameter(sum(self.output_sizes)) if bias else None

    def load_weight(self, param_name: str, full: torch.Tensor, shard_index: int) -> None:
        size = self.output_sizes[shard_index]
        offset = sum(self.output_sizes[:shard_index])
        param = getattr(self, param_name)
        if param_name == "weight_scale" and param.dim() == 1:
            full = per_row_scale(full, size * self.tp.size)
        if full.shape[0] != size * self.tp.size:
            raise ValueError(f"expected {size * self.tp.size} rows, got tensor of {tuple(full.shape)}")
        param.data[offset:offset + size].copy_(full.narrow(0, self.tp.rank * size, size))

    def forward(self, x: torch.Tensor | QuantizedActivation) -> torch.Tensor:
        return self.matmul(x, self.bias)


class RowParallelLinear(QuantizableLinear):
    """y = sum over ranks of x_r W_r^T: input features split, partial sums all-reduced."""

    def __init__(self, input_size: int, output_size: int, bias: bool, tp: TensorParallel) -> None:
        super().__init__()
        self.tp = tp
        self.input_size = tp.divide(input_size, "input features")
        self.weight = _parameter(output_size, self.input_size)  # [out, in / tp]
        self.bias = _parameter(output_size) if bias else None

    def load_weight(self, param_name: str, full: torch.Tensor, shard_index: int) -> None:
        param = getattr(self, param_name)
        if param_name == "bias":
            param.data.copy_(full)
            return
        if param_name == "weight_scale" and param.dim() == 1:  # per output row: every rank holds all
            param.data.copy_(per_row_scale(full, param.shape[0]))
            return
        # Input columns (int4: packed columns, or whole groups of scales and zeros) by rank.
        columns = param.shape[1]
        if full.shape[1] != columns * self.tp.size:
            raise ValueError(f"expected {columns * self.tp.size} columns, got tensor of {tuple(full.shape)}")
        param.data.copy_(full.narrow(1, self.tp.rank * columns, columns))

    def forward(self, x: torch.Tensor | QuantizedActivation) -> torch.Tensor:
        y = self.tp.all_reduce(self.matmul(x, None))
        return y if self.bias is None else y + self.bias


class VocabParallelEmbedding(nn.Module):
    """Rows of the vocabulary split by rank (padded so every rank holds the same count)."""

    def __init__(self, vocab_size: int, hidden_size: int, tp: TensorParallel) -> None:
        super().__init__()
        self.tp = tp
        self.vocab_size = vocab_size
        self.rows_per_rank = -(-vocab_size // tp.size)
        self.vocab_start = tp.rank * self.rows_per_rank
        self.weight = _parameter(self.rows_per_rank, hidden_size)  # [padded vocab / tp, hidden]

    def load_weight(self, param_name: str, full: torch.Tensor, shard_index: int) -> None:
        if full.shape[0] != self.vocab_size:
            raise ValueError(f"expected {self.vocab_size} vocabulary rows, got {tuple(full.shape)}")
        rows = max(0, min(self.rows_per_rank, self.vocab_size - self.vocab_start))
        self.weight.data[rows:].zero_()
        self.weight.data[:rows].copy_(full.narrow(0, self.vocab_start, rows))

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        if self.tp.size == 1:
            return F.embedding(input_ids, self.weight)
        local_ids = input_ids - self.vocab_start
        here = (local_ids >= 0) & (local_ids < self.rows_per_rank)
        out = F.embedding(local_ids.clamp(0, self.rows_per_rank - 1), self.weight)
        return self.tp.all_reduce(out * here.unsqueeze(-1).to(out.dtype))


class ParallelLMHead(VocabParallelEmbedding):
    """Logits for this rank's vocabulary slice, gathered so every rank sees the full vocabulary.

    `to_int8` adds an int8 copy of the head for the CPU's decode steps (the head is the
    largest matrix of a small model: a fifth of SmolLM2-135M's weights). The float weight
    stays: a tied embedding reads its rows, and batches of more than `GEMV_MAX_ROWS` rows
    multiply by it rather than dequantise the whole vocabulary per step.
    """

    def __init__(self, vocab_size: int, hidden_size: int, tp: TensorParallel) -> None:
        super().__init__(vocab_size, hidden_size, tp)
        self.register_parameter("int8_weight", None)
        self.register_parameter("int8_scale", None)

    def to_int8(self) -> None:
        quantized = quantize_int8_rows(self.weight.data)
        self.int8_weight = nn.Parameter(quantized.qweight, requires_grad=False)
        self.int8_scale = nn.Parameter(quantized.scales, requires_grad=False)

    def compute_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        if self.int8_weight is not None and hidden.shape[0] <= GEMV_MAX_ROWS:
            logits = int8_matvec(hidden, Int8Weight(self.int8_weight, self.int8_scale)).to(hidden.dtype)
        else:
            logits = F.linear(hidden, self.weight)  # [n, padded vocab / tp]
        return self.tp.all_gather_last_dim(logits)[..., : self.vocab_size]
