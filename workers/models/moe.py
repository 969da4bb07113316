"""Sparse mixture-of-experts decoders: Mixtral and Qwen3-MoE.

Both are their dense relatives (Mistral's layers, Qwen3's q/k-normed attention) with the MLP
replaced by a router and `num_experts` SwiGLU experts, of which each token uses `top_k`,
weighted by the renormalised top-k softmax. The experts run as two grouped GEMMs
(`kernels/fused_moe.py`) on a GPU and expert by expert on the CPU.

Experts are held stacked, in transformers' own in-memory layout (`experts.gate_up_proj`
`[E, 2 * inter, hidden]`, `experts.down_proj` `[E, hidden, inter]`); checkpoints store one
tensor per expert and projection, so `stack_experts` gathers a layer's experts on the way in.
Tensor parallelism splits every expert along its intermediate dimension, like a dense MLP: the
router is replicated, each rank computes partial outputs for all its tokens' experts, and one
all-reduce sums them.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator

import torch
import torch.nn.functional as F
from torch import nn

from pagefleet.kernels.checks import check_shape
from pagefleet.kernels.fused_moe import fused_moe, fused_moe_ref
from pagefleet.workers.models.arch import ModelArch
from pagefleet.workers.models.llama import DecoderLayer, LlamaForCausalLM
from pagefleet.workers.models.moe_spec import MoeSpec
from pagefleet.workers.models.parallel import TensorParallel
from pagefleet.workers.models.qwen3 import Qwen3DecoderLayer

_EXPERT_NAME = re.compile(r"(.+\.mlp\.experts)\.(\d+)\.(gate_proj|up_proj|down_proj)\.weight")
_MIXTRAL_PROJ = {"w1": "gate_proj", "w3": "up_proj", "w2": "down_proj"}
_MIXTRAL_EXPERT = re.compile(r"\.block_sparse_moe\.experts\.(\d+)\.(w[123])\.")


def select_experts(router_logits: torch.Tensor, top_k: int,
                   renormalize: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """`[T, E]` logits -> (weights `[T, top_k]` in the logits' dtype, expert ids `[T, top_k]`).

    Softmax over all experts in float32, then the top k, optionally rescaled to sum to one:
    the order transformers uses for both families (the weights differ from a softmax over
    only the top-k logits when `renormalize` is off).
    """
    probs = torch.softmax(router_logits, dim=-1, dtype=torch.float32)
    weights, expert_ids = torch.topk(probs, top_k, dim=-1)
    if renormalize:
        weights = weights / weights.sum(dim=-1, keepdim=True)
    return weights.to(router_logits.dtype), expert_ids


class Router(nn.Module):
    """The replicated `[num_experts, hidden]` gate: every rank routes every token alike."""

    def __init__(self, hidden_size: int, num_experts: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(num_experts, hidden_size), requires_grad=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight)  # [T, E]


class FusedExperts(nn.Module):
    """All experts' weights stacked; each rank holds a slice of every expert's intermediate dim."""

    def __init__(self, spec: MoeSpec, hidden_size: int, tp: TensorParallel) -> None:
        super().__init__()
        self.tp = tp
        self.inter = tp.divide(spec.expert_intermediate_size, "expert intermediate size")
        shape_13, shape_2 = (spec.num_experts, 2 * self.inter, hidden_size), (spec.num_experts, hidden_size, self.inter)
        self.gate_up_proj = nn.Parameter(torch.empty(shape_13), requires_grad=False)  # [E, 2 * inter / tp, H]
        self.down_proj = nn.Parameter(torch.empty(shape_2), requires_grad=False)  # [E, H, inter / tp]

    def load_weight(self, param_name: str, full: torch.Tensor, shard_index: int) -> None:
        """`full` is the whole stacked tensor (all experts, full intermediate size)."""
        param = getattr(self, param_name)
        start, size, full_inter = self.tp.rank * self.inter, self.inter, self.inter * self.tp.size
        if param_name == "down_proj":
            check_shape("experts.down_proj", full, (param.shape[0], param.shape[1], full_inter))
            param.data.copy_(full.narrow(2, start, size))
            return
        check_shape("experts.gate_up_proj", full, (param.shape[0], 2 * full_inter, param.shape[2]))
        gate, up = full.split(full_inter, dim=1)
        param.data[:, :size].copy_(gate.narrow(1, start, size))
        param.data[:, size:].copy_(up.narrow(1, start, size))


class SparseMoeBlock(nn.Module):
    """Router + experts in place of the dense MLP (same constructor, so layers swap it in)."""

    takes_quantized_input = False  # the router and the experts read the normed rows as they are

    def __init__(self, arch: ModelArch, tp: TensorParallel, fused: bool) -> None:
        super().__init__()
        if arch.moe is None:
            raise ValueError(f"model_type {arch.model_type!r} has no experts (ModelArch.moe is None)")
        self.spec, self.tp, self.fused = arch.moe, tp, fused
        self.gate = Router(arch.hidden_size, arch.moe.num_experts)
        self.experts = FusedExperts(arch.moe, arch.hidden_size, tp)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weights, expert_ids = select_experts(self.gate(x), self.spec.top_k, self.spec.renormalize)
        w13, w2 = self.experts.gate_up_proj, self.experts.down_proj
        if self.fused or x.is_cuda:
            out = fused_moe(x, w13, w2, weights, expert_ids, torch.empty_like(x))
        else:
            out = fused_moe_ref(x, w13, w2, weights, expert_ids)
        return self.tp.all_reduce(out)  # [T, hidden]: each rank held part of every expert


def stack_experts(num_experts: int,
                  weights: Iterable[tuple[str, torch.Tensor]]) -> Iterator[tuple[str, torch.Tensor]]:
    """Per-expert checkpoint tensors -> one stacked `experts.gate_up_proj` / `experts.down_proj`
    per layer, yielded once all its experts have arrived (a layer may span two shard files)."""
    pending: dict[tuple[str, str], dict[tuple[int, str], torch.Tensor]] = {}
    for name, tensor in weights:
        match = _EXPERT_NAME.fullmatch(name)
        if match is None:
            yield name, tensor
            continue
        prefix, expert, proj = match.group(1), int(match.group(2)), match.group(3)
        if expert >= num_experts:
            raise ValueError(f"{name!r}: expert {expert} out of range (num_experts {num_experts})")
        target = "down_proj" if proj == "down_proj" else "gate_up_proj"
        parts = pending.setdefault((prefix, target), {})
        parts[expert, proj] = tensor
        if len(parts) < (num_experts if target == "down_proj" else 2 * num_experts):
            continue
        del pending[prefix, target]
        if target == "down_proj":
            stacked = torch.stack([parts[e, "down_proj"] for e in range(num_experts)])
        else:
            stacked = torch.stack([torch.cat((parts[e, "gate_proj"], parts[e, "up_proj"]))
                                   for e in range(num_experts)])
        yield f"{prefix}.{target}", stacked
    if pending:
        raise ValueError(f"checkpoint lacks expert tensors of {sorted(pending)[:3]}")


def mixtral_names(weights: Iterable[tuple[str, torch.Tensor]]) -> Iterator[tuple[str, torch.Tensor]]:
    """Mixtral's `block_sparse_moe.experts.{j}.w1/w3/w2` -> `mlp.experts.{j}.gate/up/down_proj`."""
    for name, tensor in weights:
        name = _MIXTRAL_EXPERT.sub(lambda m: f".mlp.experts.{m.group(1)}.{_MIXTRAL_PROJ[m.group(2)]}.", name)
        yield name.replace(".block_sparse_moe.", ".mlp."), tensor


def expert_weight_shapes(arch: ModelArch, layer_prefix: str) -> dict[str, tuple[int, ...]]:
    """One layer's router and expert tensors as the family's checkpoints name them."""
    if arch.moe is None:
        raise ValueError(f"model_type {arch.model_type!r} has no experts")
    hidden, inter, num_experts = arch.hidden_size, arch.moe.expert_intermediate_size, arch.moe.num_experts
    mixtral = arch.model_type == "mixtral"
    block = f"{layer_prefix}.{'block_sparse_moe' if mixtral else 'mlp'}"
    names = ("w1", "w3", "w2") if mixtral else ("gate_proj", "up_proj", "down_proj")
    shapes: dict[str, tuple[int, ...]] = {f"{block}.gate.weight": (num_experts, hidden)}
    for e in range(num_experts):
        shapes[f"{block}.experts.{e}.{names[0]}.weight"] = (inter, hidden)
        shapes[f"{block}.experts.{e}.{names[1]}.weight"] = (inter, hidden)
        shapes[f"{block}.experts.{e}.{names[2]}.weight"] = (hidden, inter)
    return shapes


class MixtralDecoderLayer(DecoderLayer):
    mlp_cls = SparseMoeBlock


class Qwen3MoeDecoderLayer(Qwen3DecoderLayer):
    mlp_cls = SparseMoeBlock


class Qwen3MoeForCausalLM(LlamaForCausalLM):
    """Qwen3's attention (q/k norms); checkpoint names are Llama's plus `mlp.gate` / `mlp.experts`."""

    layer_cls = Qwen3MoeDecoderLayer

    def load_weights(self, weights: Iterable[tuple[str, torch.Tensor]]) -> None:
        super().load_weights(stack_experts(self.arch.moe.num_experts, weights))


class MixtralForCausalLM(Qwen3MoeForCausalLM):
    """Mistral's attention; experts under `block_sparse_moe` with w1/w3/w2 names."""

    layer_cls = MixtralDecoderLayer

    def load_weights(self, weights: Iterable[tuple[str, torch.Tensor]]) -> None:
        super().load_weights(mixtral_names(weights))
