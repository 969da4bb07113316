"""Gemma on the GPU path (Triton kernels with windows and soft-caps, fused RoPE, CUDA graphs):
float32 greedy tokens are transformers' argmax at every step (up to near-ties, see
tests/gpu/near_ties.py: these tiny random models repeat one token for many steps, so the step
where another overtakes it is a near-tie) on the tiny models of tests/unit/.../test_gemma.py,
with prompts long enough that windows cut through the kernels' key tiles."""

from __future__ import annotations

import pytest
import torch

from pagefleet.workers import LLM, SamplingParams
from tests.gpu.near_ties import assert_greedy_near_argmax
from tests.unit.workers.models.test_gemma import build_hf

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


@pytest.mark.parametrize(("variant", "window"), [
    ("gemma2", 8), ("gemma2", 100), ("gemma2-all-sliding", 100), ("gemma3", 40)])
def test_gemma_triton_with_cuda_graphs_equals_transformers(tmp_path, variant, window):
    reference = build_hf(variant, sliding_window=window, max_position_embeddings=1024)
    reference.save_pretrained(tmp_path)
    llm = LLM(model=str(tmp_path), dtype="float32", device="cuda", max_model_len=512,
              attention_backend="triton", num_kv_blocks=256)
    assert llm.engine.runner.graphs is not None
    prompts = [[(13 * i + 7 * j) % 500 + 3 for j in range(3 + 37 * i)] for i in range(8)]
    params = SamplingParams(temperature=0, max_tokens=32, ignore_eos=True, logprobs=0)
    for prompt, output in zip(prompts, llm.generate(prompts, params), strict=True):
        assert_greedy_near_argmax(reference, prompt, output.outputs[0].logprobs, tolerance=1e-3)  # on the CPU
