"""Embedding models on the GPU: the BERT encoder and the cache-free decoder path in float32 and
bfloat16 against transformers on the same random models (saved by transformers, nothing is
downloaded). Skipped without CUDA; run on the lent H200 with `pytest tests/gpu`."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from pagefleet.workers.embed import Embedder
from pagefleet.workers.engine.config import EngineConfig

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
INPUTS = [[(13 * i + 7 * j) % 900 + 5 for j in range(3 + 37 * i)] for i in range(6)]
MIN_COSINE = {"float32": 0.9999, "bfloat16": 0.99}  # bf16 keeps 8 bits of mantissa


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_bert_mean_pooling_on_cuda_equals_transformers(tmp_path, dtype) -> None:
    from transformers import BertConfig, BertModel

    torch.manual_seed(0)
    reference = BertModel(BertConfig(vocab_size=1000, hidden_size=256, num_hidden_layers=4,
                                     num_attention_heads=8, intermediate_size=512)).eval()
    reference.save_pretrained(tmp_path)
    embedder = Embedder.load(EngineConfig(model=str(tmp_path), device="cuda", dtype=dtype))
    got = embedder.embed(INPUTS, [None] * len(INPUTS))
    for ids, output in zip(INPUTS, got, strict=True):
        with torch.no_grad():
            hidden = reference(input_ids=torch.tensor([ids])).last_hidden_state[0]
        want = F.normalize(hidden.mean(0), dim=-1)
        assert torch.dot(output.vector, want).item() >= MIN_COSINE[dtype]


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_qwen3_last_token_on_cuda_equals_transformers(tmp_path, dtype) -> None:
    from transformers import Qwen3Config, Qwen3Model

    torch.manual_seed(0)
    reference = Qwen3Model(Qwen3Config(vocab_size=1000, hidden_size=256, intermediate_size=512,
                                       num_hidden_layers=4, num_attention_heads=8, num_key_value_heads=2,
                                       head_dim=64, max_position_embeddings=1024,
                                       tie_word_embeddings=True)).eval()
    reference.save_pretrained(tmp_path)
    embedder = Embedder.load(EngineConfig(model=str(tmp_path), device="cuda", dtype=dtype))
    got = embedder.embed(INPUTS, [None] * len(INPUTS))
    for ids, output in zip(INPUTS, got, strict=True):
        with torch.no_grad():
            hidden = reference(input_ids=torch.tensor([ids])).last_hidden_state[0, -1]
        assert torch.dot(output.vector, F.normalize(hidden, dim=-1)).item() >= MIN_COSINE[dtype]
