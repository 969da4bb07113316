"""Engine configuration: vLLM's argument names, validated once, never written back to."""

from __future__ import annotations

import typing
from dataclasses import dataclass
from typing import Literal

DEFAULT_MODEL = "smollm2-135m-instruct"
_DTYPES = ("auto", "float32", "bfloat16", "float16")
_LOAD_FORMATS = ("auto", "dummy")
_BACKENDS = (None, "torch", "triton")
QUANTIZATIONS = (None, "fp8", "int4", "int8")  # the one list: models/fp8.py and the loader read it too
KVCacheDtype = Literal["auto", "fp8"]
KV_CACHE_DTYPES: tuple[str, ...] = typing.get_args(KVCacheDtype)


@dataclass(frozen=True, slots=True)
class EngineConfig:
    """What the user asked for; None leaves the choice to the engine. The defaults that
    depend on the model and the device are decided once, by `resolved_config.resolve`, into a
    `ResolvedEngineConfig` (this object is never written back to).

    `num_kv_blocks` overrides memory-based KV sizing (tests use it to force preemption);
    `kv_cache_memory_bytes` sizes the cache by bytes (the CPU default is 1 GiB, like vLLM's
    `VLLM_CPU_KVCACHE_SPACE`; on CUDA the cache takes `gpu_memory_utilization` of the card
    less the weights and the largest step). `max_model_len` defaults to the model's
    `max_position_embeddings`, capped to what the KV cache holds; `max_num_batched_tokens`
    to 8192 on CUDA and 2048 elsewhere; `attention_backend` to triton on CUDA, torch
    elsewhere; `fused_layers` (the Triton residual+RMSNorm, RoPE and SiLU-and-mul kernels)
    to on with the Triton backend; `async_scheduling` (vLLM's name: the host schedules and
    uploads step N+1 while the device runs step N) to on on CUDA with one rank (with several
    it may be turned on: rank 0 then broadcasts each step's sampled ids on the device, where
    the other ranks read the next step's pending inputs; not yet measured on GPUs).
    `quantization="fp8"` stores the linear layers' weights in fp8 e4m3 (vLLM's online FP8:
    per-channel weight scales, per-token dynamic activation scales); `"int4"` rounds them to
    int4 per group of 128 (symmetric RTN, for benchmarks); `"int8"` (CPU only) stores them as
    int8 per output row, computed with bfloat16 activations (models/int8.py). FP8, GPTQ and
    AWQ checkpoints load as stored whatever this says. `fused_fp8_quant`: with fused layers and FP8 linear layers,
    the RMSNorm and SiLU-and-mul kernels write the fp8 rows and scales the next matmul reads
    (three quantisation launches fewer per layer, the same bits); off only to measure that.

    `kv_cache_dtype` (vLLM's name): `"auto"` stores K/V in the model's dtype; `"fp8"` in fp8
    e4m3 (`torch.float8_e4m3fn`), half the bytes of bf16, so twice the blocks in the same
    memory and half the KV bytes each decode step reads. Like vLLM's default without
    calibration the scales are fixed at 1.0: values are stored as they are, rounded to e4m3's
    3 mantissa bits, and any beyond +-448 saturate to +-448 (clamped on write, never NaN).

    `piecewise_graphs`: with CUDA graphs, steps that are not decode-only and have at most
    512 tokens (a prompt chunk beside the running decodes, the usual step under a serving
    load) replay graphs captured in pieces between the attention calls instead of launching
    every kernel from Python (`piecewise_graphs.py`). Off by default until measured on a GPU.

    `swap_space` (vLLM's name): GiB of host memory (pinned on CUDA) that a preempted
    sequence's KV blocks may move to instead of being recomputed; 0 turns swapping off.
    `preemption_mode` (vLLM v0's name) forces one path; None picks per preemption by the
    estimated cost (see `preemption.py`).
    """

    model: str = DEFAULT_MODEL
    tokenizer: str | None = None
    dtype: str = "auto"
    device: str = "auto"
    block_size: int = 16
    max_num_seqs: int = 256
    max_num_batched_tokens: int | None = None
    max_model_len: int | None = None
    gpu_memory_utilization: float = 0.9
    num_kv_blocks: int | None = None
    kv_cache_memory_bytes: int | None = None
    enable_prefix_caching: bool = True
    enforce_eager: bool = False
    tensor_parallel_size: int = 1
    seed: int = 0
    load_format: str = "auto"
    attention_backend: str | None = None
    fused_layers: bool | None = None
    async_scheduling: bool | None = None
    piecewise_graphs: bool = False
    quantization: str | None = None
    fused_fp8_quant: bool = True
    kv_cache_dtype: KVCacheDtype = "auto"
    swap_space: float = 0.0
    preemption_mode: Literal["swap", "recompute"] | None = None

    def __post_init__(self) -> None:
        if self.dtype not in _DTYPES:
            raise ValueError(f"dtype must be one of {_DTYPES}, got {self.dtype!r}")
        if self.load_format not in _LOAD_FORMATS:
            raise ValueError(f"load_format must be one of {_LOAD_FORMATS}, got {self.load_format!r}")
        if self.attention_backend not in _BACKENDS:
            raise ValueError(
                f"attention_backend must be 'torch', 'triton' or None, got {self.attention_backend!r}"
            )
        if self.block_size < 1 or self.block_size & (self.block_size - 1):
            raise ValueError(f"block_size must be a power of two, got {self.block_size}")
        if self.max_num_seqs < 1:
            raise ValueError(f"max_num_seqs must be at least 1, got {self.max_num_seqs}")
        if self.max_num_batched_tokens is not None and self.max_num_batched_tokens < 1:
            raise ValueError(
                f"max_num_batched_tokens must be at least 1, got {self.max_num_batched_tokens}"
            )
        if self.max_model_len is not None and self.max_model_len < 1:
            raise ValueError(f"max_model_len must be at least 1, got {self.max_model_len}")
        if not 0.0 < self.gpu_memory_utilization <= 1.0:
            raise ValueError(
                f"gpu_memory_utilization must be in (0, 1], got {self.gpu_memory_utilization}"
            )
        if self.num_kv_blocks is not None and self.num_kv_blocks < 1:
            raise ValueError(f"num_kv_blocks must be at least 1, got {self.num_kv_blocks}")
        if self.quantization not in QUANTIZATIONS:
            raise ValueError(f"quantization must be one of {QUANTIZATIONS}, got {self.quantization!r}")
        if self.kv_cache_dtype not in KV_CACHE_DTYPES:
            raise ValueError(f"kv_cache_dtype must be one of {KV_CACHE_DTYPES}, got {self.kv_cache_dtype!r}")
        if self.swap_space < 0:
            raise ValueError(f"swap_space must be at least 0 (GiB), got {self.swap_space}")
        if self.preemption_mode not in (None, "swap", "recompute"):
            raise ValueError(
                f"preemption_mode must be 'swap', 'recompute' or None, got {self.preemption_mode!r}"
            )
        if self.swap_space > 0 and self.tensor_parallel_size > 1:
            raise ValueError("swap_space needs tensor_parallel_size 1: swaps are not yet "
                             "broadcast to the other ranks")
        if self.tensor_parallel_size < 1:
            raise ValueError(
                f"tensor_parallel_size must be at least 1, got {self.tensor_parallel_size}"
            )
