"""Engine defaults, decided once per device (no model, no GPU needed)."""

from __future__ import annotations

import torch

from pagefleet.workers.engine.config import EngineConfig
from pagefleet.workers.engine.resolved_config import resolve
from pagefleet.workers.models.arch import ModelArch

ARCH = ModelArch(num_layers=2, hidden_size=64, intermediate_size=128, num_heads=4,
                 num_kv_heads=2, head_dim=16, vocab_size=100, max_position_embeddings=4096)
CPU = torch.device("cpu")
CUDA = torch.device("cuda", 0)  # a device object only: nothing is allocated on it


def test_cpu_defaults():
    settings = resolve(EngineConfig(max_num_seqs=64), ARCH, CPU)
    assert settings.attention_backend == "torch" and settings.dtype == torch.float32
    assert not settings.fused_layers
    assert settings.max_num_batched_tokens == 2048
    assert settings.max_model_len == 4096 and settings.num_kv_blocks is None
    assert not settings.use_cuda_graphs and settings.admission_batch == 1


def test_cuda_defaults_capture_graphs_and_admit_in_groups():
    settings = resolve(EngineConfig(max_num_seqs=1024), ARCH, CUDA)
    assert settings.attention_backend == "triton" and settings.dtype == torch.bfloat16
    assert settings.fused_layers
    assert settings.max_num_batched_tokens == 8192
    assert settings.use_cuda_graphs and settings.max_graph_batch_size == 512
    assert settings.admission_batch == 128


def test_no_graphs_without_triton_or_when_eager():
    for config in (EngineConfig(enforce_eager=True), EngineConfig(attention_backend="torch")):
        settings = resolve(config, ARCH, CUDA)
        assert not settings.use_cuda_graphs and settings.admission_batch == 1


def test_piecewise_graphs_only_where_graphs_are_captured():
    assert not resolve(EngineConfig(), ARCH, CUDA).piecewise_graphs  # off unless asked for
    assert resolve(EngineConfig(piecewise_graphs=True), ARCH, CUDA).piecewise_graphs
    for device, config in ((CPU, EngineConfig(piecewise_graphs=True)),
                           (CUDA, EngineConfig(piecewise_graphs=True, enforce_eager=True))):
        assert not resolve(config, ARCH, device).piecewise_graphs


def test_explicit_values_win():
    config = EngineConfig(max_num_batched_tokens=100, max_model_len=300, dtype="float16",
                          attention_backend="torch")
    settings = resolve(config, ARCH, CUDA)
    assert settings.max_num_batched_tokens == 100 and settings.max_model_len == 300
    assert settings.dtype == torch.float16 and settings.attention_backend == "torch"


def test_kv_cache_caps_max_model_len():
    settings = resolve(EngineConfig(block_size=16), ARCH, CPU)
    small = settings.with_kv_cache(10)
    assert small.num_kv_blocks == 10 and small.max_model_len == 160
    large = settings.with_kv_cache(1000)
    assert large.num_kv_blocks == 1000 and large.max_model_len == 4096
    assert settings.num_kv_blocks is None  # frozen: a new object, the old one unchanged
