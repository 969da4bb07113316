"""What the engine calls: resolve a model, load its tokenizer, build it with weights in place.

```python
resolved = resolve_model("smollm2-135m-instruct")
tokenizer = load_tokenizer(resolved)
model = build_model(resolved, dtype=torch.bfloat16, device=torch.device("cuda"),
                    attention=backend, tp=TensorParallel(rank, size, group))
```
"""

from __future__ import annotations

import zlib
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from types import MappingProxyType
from typing import Any

import torch

from pagefleet.workers.attention.base import AttentionBackend
from pagefleet.workers.attention.torch_backend import TorchAttentionBackend
from pagefleet.workers.models.arch import GEMMA_TYPES, ModelArch
from pagefleet.workers.models.fp8 import QUANTIZATIONS
from pagefleet.workers.models.gemma import GemmaForCausalLM
from pagefleet.workers.models.int4 import INT4_METHODS, convert_checkpoint, int4_format
from pagefleet.workers.models.llama import LlamaForCausalLM
from pagefleet.workers.models.moe import (
    MixtralForCausalLM,
    Qwen3MoeForCausalLM,
    expert_weight_shapes,
)
from pagefleet.workers.models.parallel import QuantizableLinear, TensorParallel
from pagefleet.workers.models.phi3 import Phi3ForCausalLM
from pagefleet.workers.models.qwen3 import Qwen3ForCausalLM
from pagefleet.workers.models.sources import DEFAULT_MODEL, ResolvedModel, resolve_model

DUMMY_STD = 0.02  # HF's initializer_range: activations stay O(1) through RMSNorm'd layers

# config.json `model_type` -> the class that builds it (ModelArch refuses any other type first).
MODEL_CLASSES: Mapping[str, type[LlamaForCausalLM]] = MappingProxyType({
    "llama": LlamaForCausalLM, "mistral": LlamaForCausalLM, "qwen2": LlamaForCausalLM,
    "qwen3": Qwen3ForCausalLM, "phi3": Phi3ForCausalLM,
    "mixtral": MixtralForCausalLM, "qwen3_moe": Qwen3MoeForCausalLM,
    "gemma2": GemmaForCausalLM, "gemma3_text": GemmaForCausalLM,
})

__all__ = [
    "DEFAULT_MODEL", "MODEL_CLASSES", "ResolvedModel", "build_model", "dummy_weights", "iter_safetensors",
    "load_tokenizer", "resolve_model",
]


def load_tokenizer(resolved: ResolvedModel, tokenizer: str | None = None) -> Any:
    """A transformers tokenizer, or None when the source has none (dummy presets)."""
    source = tokenizer or resolved.tokenizer_source
    if source is None:
        return None
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(source)


def build_model(
    resolved: ResolvedModel,
    dtype: torch.dtype = torch.float32,
    device: torch.device | None = None,
    load_format: str = "auto",
    attention: AttentionBackend | None = None,
    tp: TensorParallel | None = None,
    seed: int = 0,
    fused_layers: bool = False,
    quantization: str | None = None,
    fused_fp8_quant: bool = True,
) -> LlamaForCausalLM:
    """Allocate the model (the class `model_type` picks) on `device` in `dtype`, then load weights.

    `load_format="dummy"` fills seeded random weights through the same sharding path as real
    ones, so every tensor-parallel rank holds slices of one and the same full model.
    `quantization="fp8"` quantises the linear layers after loading (fp8.py); a checkpoint that
    is already FP8 (`quantization_config.quant_method == "fp8"`) loads its fp8 weights and
    scales as they are, whatever `quantization` says. `quantization="int4"` rounds them to
    int4 per group of 128 (symmetric RTN, int4.py); GPTQ and AWQ checkpoints load as int4.
    With `fused_layers`, FP8 layers take their input quantised by the kernel before them
    unless `fused_fp8_quant` is off (see `QuantizableLinear.takes_quantized_input`).
    `quantization="int8"` (CPU only) stores them as int8 per output row and adds an int8
    copy of the head for decode steps (int8.py).
    """
    device = device or torch.device("cpu")
    tp = tp or TensorParallel()
    model_cls = model_class(resolved.arch)
    if quantization not in QUANTIZATIONS:
        raise ValueError(f"quantization must be one of {QUANTIZATIONS}, got {quantization!r}")
    if quantization == "int8" and device.type != "cpu":
        raise ValueError(f"quantization 'int8' runs on the CPU only (torch._weight_int8pack_mm), "
                         f"not on {device.type}; use 'fp8' or 'int4' on a GPU")
    stored = checkpoint_quantization(resolved) if load_format == "auto" else None
    fp8_checkpoint = stored == "fp8"
    with _default_dtype(dtype), device:
        model = model_cls(resolved.arch, tp, attention or TorchAttentionBackend(), fused_layers)
    linears = [m for m in model.modules() if isinstance(m, QuantizableLinear)]
    if fp8_checkpoint:
        for linear in linears:
            linear.prepare_fp8(fused_fp8_quant)
    int4 = int4_format(_quantization_config(resolved)) if stored in INT4_METHODS else None
    if int4 is not None:
        if resolved.arch.moe is not None:
            raise ValueError(f"{int4.method} checkpoints of MoE models are not supported yet")
        for linear in linears:
            linear.prepare_int4(int4.group_size)
    if load_format == "dummy":
        weights = dummy_weights(resolved.arch, seed, dtype, device)
    elif load_format == "auto":
        if resolved.path is None:
            raise ValueError(f"model {resolved.name!r} has no weights; use load_format='dummy'")
        weights = iter_safetensors(resolved.path)
    else:
        raise ValueError(f"load_format must be 'auto' or 'dummy', got {load_format!r}")
    if fp8_checkpoint:  # activations are scaled per token at run time, not by the checkpoint
        weights = ((name, t) for name, t in weights if not name.endswith(".input_scale"))
    if int4 is not None:
        weights = convert_checkpoint(weights, int4)
    with torch.no_grad(), _copy_threads(device):
        model.load_weights(weights)
        if stored is None and quantization is not None:  # a quantised checkpoint loads as stored
            for linear in linears:
                _quantize(linear, quantization, fused_fp8_quant)
            if quantization == "int8":  # the CPU's decode reads the head every step too
                model.lm_head.to_int8()
    return model.eval()


def _quantize(linear: QuantizableLinear, quantization: str, fused_fp8_quant: bool) -> None:
    """Online quantisation of one loaded layer by the method's name."""
    if quantization == "fp8":
        linear.to_fp8(fused_fp8_quant)
    elif quantization == "int8":
        linear.to_int8()
    else:
        linear.to_int4()


def checkpoint_quantization(resolved: ResolvedModel) -> str | None:
    """The `quant_method` of the checkpoint's `quantization_config`, if it has one."""
    config = _quantization_config(resolved)
    if config is None:
        return None
    method = config.get("quant_method")
    if method not in ("fp8", *INT4_METHODS):
        raise ValueError(f"checkpoint quantization {method!r} is not supported (only 'fp8', 'gptq', 'awq')")
    return method


def _quantization_config(resolved: ResolvedModel) -> dict[str, Any] | None:
    config = getattr(resolved.hf_config, "quantization_config", None)
    if config is None or isinstance(config, dict):
        return config
    return config.to_dict()


def model_class(arch: ModelArch) -> type[LlamaForCausalLM]:
    """The model class for `arch.model_type` (every family shares Llama's layers and interface)."""
    try:
        return MODEL_CLASSES[arch.model_type]
    except KeyError:
        raise ValueError(
            f"model_type {arch.model_type!r} has no model class; supported: {sorted(MODEL_CLASSES)}"
        ) from None


def iter_safetensors(folder: Path) -> Iterator[tuple[str, torch.Tensor]]:
    """Every tensor of every `*.safetensors` file in `folder`, read lazily on the CPU."""
    from safetensors import safe_open

    files = sorted(folder.glob("*.safetensors"))
    if not files:
        raise ValueError(f"no *.safetensors files in {folder}")
    for file in files:
        with safe_open(file, framework="pt", device="cpu") as f:
            for name in f.keys():  # noqa: SIM118 (safe_open is not a dict)
                yield name, f.get_tensor(name)


def dummy_weights(arch: ModelArch, seed: int, dtype: torch.dtype,
                  device: torch.device) -> Iterator[tuple[str, torch.Tensor]]:
    """Full HF-named random tensors, each seeded from (seed, name) so order does not matter."""
    generator = None if device.type == "meta" else torch.Generator(device=device)
    for name, shape in hf_weight_shapes(arch).items():
        if name.endswith("norm.weight"):
            yield name, torch.ones(shape, dtype=dtype, device=device)
            continue
        if generator is not None:
            generator.manual_seed(seed * 1_000_003 + zlib.crc32(name.encode()))
        tensor = torch.randn(shape, generator=generator, dtype=dtype, device=device)
        yield name, tensor.mul_(DUMMY_STD)


def hf_weight_shapes(arch: ModelArch) -> dict[str, tuple[int, ...]]:
    """The full (unsharded) Hugging Face checkpoint layout of the family's checkpoints.

    Qwen3 and Gemma 3 add per-head `q_norm`/`k_norm`; Phi-3 stores q/k/v and gate/up fused;
    Gemma adds a norm before and after each feed-forward; MoE families store a router and one
    tensor per expert and projection instead of the MLP.
    """
    hidden, q_size = arch.hidden_size, arch.num_heads * arch.head_dim
    kv_size, inter = arch.num_kv_heads * arch.head_dim, arch.intermediate_size
    shapes: dict[str, tuple[int, ...]] = {"model.embed_tokens.weight": (arch.vocab_size, hidden)}
    for i in range(arch.num_layers):
        p = f"model.layers.{i}"
        shapes |= {
            f"{p}.input_layernorm.weight": (hidden,),
            f"{p}.self_attn.q_proj.weight": (q_size, hidden),
            f"{p}.self_attn.k_proj.weight": (kv_size, hidden),
            f"{p}.self_attn.v_proj.weight": (kv_size, hidden),
            f"{p}.self_attn.o_proj.weight": (hidden, q_size),
            f"{p}.post_attention_layernorm.weight": (hidden,),
            f"{p}.mlp.gate_proj.weight": (inter, hidden),
            f"{p}.mlp.up_proj.weight": (inter, hidden),
            f"{p}.mlp.down_proj.weight": (hidden, inter),
        }
        if arch.attention_bias:
            for proj, size in (("q_proj", q_size), ("k_proj", kv_size), ("v_proj", kv_size)):
                shapes[f"{p}.self_attn.{proj}.bias"] = (size,)
        if arch.qk_norm:
            shapes[f"{p}.self_attn.q_norm.weight"] = (arch.head_dim,)
            shapes[f"{p}.self_attn.k_norm.weight"] = (arch.head_dim,)
        if arch.model_type in GEMMA_TYPES:
            shapes[f"{p}.pre_feedforward_layernorm.weight"] = (hidden,)
            shapes[f"{p}.post_feedforward_layernorm.weight"] = (hidden,)
        if arch.model_type == "phi3":
            for part in ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj",
                         "mlp.gate_proj", "mlp.up_proj"):
                del shapes[f"{p}.{part}.weight"]
            shapes[f"{p}.self_attn.qkv_proj.weight"] = (q_size + 2 * kv_size, hidden)
            shapes[f"{p}.mlp.gate_up_proj.weight"] = (2 * inter, hidden)
        if arch.moe is not None:
            for part in ("gate_proj", "up_proj", "down_proj"):
                del shapes[f"{p}.mlp.{part}.weight"]
            shapes |= expert_weight_shapes(arch, p)
    shapes["model.norm.weight"] = (hidden,)
    if not arch.tie_word_embeddings:
        shapes["lm_head.weight"] = (arch.vocab_size, hidden)
    return shapes


@contextmanager
def _default_dtype(dtype: torch.dtype) -> Iterator[None]:
    """Parameters are created in the target dtype, never as a float32 copy first."""
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        yield
    finally:
        torch.set_default_dtype(previous)


@contextmanager
def _copy_threads(device: torch.device) -> Iterator[None]:
    """One intra-op thread while weights are copied on the CPU.

    The copies are memory-bound (mapped file pages into fresh parameters): a second OpenMP
    thread adds no bandwidth, and on a busy machine its spin-waiting multiplies the cost. For
    the default model on the 2-core CI machine under load, loading took 0.35-0.5 s of CPU with
    one thread against 1.4-2.0 s with two (wall 0.7-2.3 s against 3.5-9 s). The thread count is
    restored afterwards, so serving keeps every core.
    """
    if device.type != "cpu":
        yield
        return
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(previous)
