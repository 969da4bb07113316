"""Every engine default decided once, for one device: `resolve(config, arch, device)`.

`EngineConfig` holds what the user asked for (None meaning "pick for me"); what the engine
runs with depends on the model and the device too. Deriving it in one function means the
runner, the scheduler and the engine cannot disagree about a default.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass

import torch

from pagefleet.kernels.fp8_e4m3 import FP8_DTYPE
from pagefleet.workers.engine.config import EngineConfig
from pagefleet.workers.models.arch import ModelArch

logger = logging.getLogger(__name__)

# Tokens per step when the config leaves it open: large enough to fill the device with one
# prefill chunk, small enough that a chunk does not stall decodes for long.
_CUDA_MAX_NUM_BATCHED_TOKENS = 8192
_CPU_MAX_NUM_BATCHED_TOKENS = 2048
# The largest decode batch captured as a CUDA graph; larger batches run eagerly.
_MAX_GRAPH_BATCH_SIZE = 512


@dataclass(frozen=True, slots=True)
class ResolvedEngineConfig:
    """What the engine runs with. Built by `resolve`, then `with_kv_cache` once the runner
    has sized the cache (which caps `max_model_len`); read everywhere, derived nowhere else.
    `admission_batch` (see `SchedulerConfig`) is above 1 only with CUDA graphs, the one case
    where admitting in groups pays.
    """

    device: torch.device
    dtype: torch.dtype
    kv_cache_dtype: torch.dtype  # the model's dtype, or fp8 e4m3
    attention_backend: str  # "torch" or "triton"
    fused_layers: bool  # residual+RMSNorm, RoPE, SiLU-and-mul through the Triton kernels
    async_scheduling: bool  # schedule step N+1 while step N runs (see LLMEngine.step)
    block_size: int
    max_num_seqs: int
    max_num_batched_tokens: int
    max_model_len: int
    enable_prefix_caching: bool
    use_cuda_graphs: bool
    max_graph_batch_size: int
    piecewise_graphs: bool  # CUDA graphs for mixed steps too (see piecewise_graphs.py)
    admission_batch: int
    num_kv_blocks: int | None = None  # None until the runner has sized the cache

    def with_kv_cache(self, num_kv_blocks: int) -> ResolvedEngineConfig:
        """The same settings for a cache of `num_kv_blocks` blocks: a sequence longer than
        the whole cache could never run, so `max_model_len` is capped to it."""
        capacity = num_kv_blocks * self.block_size
        if capacity < self.max_model_len:
            logger.warning("max_model_len %d capped to the KV cache's %d tokens",
                           self.max_model_len, capacity)
        return dataclasses.replace(
            self, num_kv_blocks=num_kv_blocks, max_model_len=min(self.max_model_len, capacity)
        )


def resolve_device(name: str, tp_rank: int = 0) -> torch.device:
    """A concrete device; CUDA gets an index (the TP rank's GPU), since streams and graphs
    need one."""
    device = torch.device(("cuda" if torch.cuda.is_available() else "cpu") if name == "auto" else name)
    if device.type == "cuda" and device.index is None:
        return torch.device("cuda", tp_rank or torch.cuda.current_device())
    return device


def resolve_dtype(name: str, device: torch.device) -> torch.dtype:
    if name == "auto":
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    return getattr(torch, name)


def resolve_kv_cache_dtype(name: str, dtype: torch.dtype) -> torch.dtype:
    """The KV cache's element type: the model's `dtype` for "auto", else fp8 e4m3."""
    if name == "auto":
        return dtype
    if name == "fp8":
        return FP8_DTYPE
    raise ValueError(f"unknown kv_cache_dtype {name!r}")


def resolve(config: EngineConfig, arch: ModelArch, device: torch.device) -> ResolvedEngineConfig:
    """Fill every default of `config` for `arch` on `device` (the KV cache is sized later)."""
    on_cuda = device.type == "cuda"
    backend = config.attention_backend or ("triton" if on_cuda else "torch")
    use_cuda_graphs = on_cuda and not config.enforce_eager and backend == "triton"
    default_tokens = _CUDA_MAX_NUM_BATCHED_TOKENS if on_cuda else _CPU_MAX_NUM_BATCHED_TOKENS
    dtype = resolve_dtype(config.dtype, device)
    return ResolvedEngineConfig(
        device=device,
        dtype=dtype,
        kv_cache_dtype=resolve_kv_cache_dtype(config.kv_cache_dtype, dtype),
        attention_backend=backend,
        fused_layers=config.fused_layers if config.fused_layers is not None else backend == "triton",
        async_scheduling=(config.async_scheduling if config.async_scheduling is not None
                          else on_cuda and config.tensor_parallel_size == 1),
        block_size=config.block_size,
        max_num_seqs=config.max_num_seqs,
        max_num_batched_tokens=config.max_num_batched_tokens or default_tokens,
        max_model_len=config.max_model_len or arch.max_position_embeddings,
        enable_prefix_caching=config.enable_prefix_caching,
        use_cuda_graphs=use_cuda_graphs,
        max_graph_batch_size=min(config.max_num_seqs, _MAX_GRAPH_BATCH_SIZE),
        piecewise_graphs=use_cuda_graphs and config.piecewise_graphs,
        admission_batch=max(1, config.max_num_seqs // 8) if use_cuda_graphs else 1,
    )
