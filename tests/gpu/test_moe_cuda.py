"""Mixtral and Qwen3-MoE on the GPU path: the fused-MoE Triton kernel (compiled), the Triton
attention backend and CUDA graphs pick transformers' greedy tokens. Skipped without CUDA."""

from __future__ import annotations

import pytest
import torch

from pagefleet.workers import LLM, SamplingParams
from tests.unit.workers.models.test_moe import FAMILIES, MAX_TOKENS, PROMPTS, SHARED

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_fp32_fused_moe_with_cuda_graphs_equals_transformers(family, tmp_path):
    import transformers

    prefix, values, model_cls = FAMILIES[family]
    config = getattr(transformers, f"{prefix}Config")(**SHARED, **values)
    torch.manual_seed(0)
    reference = getattr(transformers, f"{prefix}ForCausalLM")(config).eval()
    reference.save_pretrained(tmp_path)
    reference = reference.cuda()
    reference.generation_config.eos_token_id = None  # the engine ignores EOS too
    llm = LLM(model=str(tmp_path), dtype="float32", device="cuda", max_model_len=128,
              attention_backend="triton")
    assert llm.engine.runner.graphs is not None and type(llm.engine.runner.model) is model_cls
    want = []
    for prompt in PROMPTS:
        ids = torch.tensor([prompt], device="cuda")
        out = reference.generate(ids, attention_mask=torch.ones_like(ids), do_sample=False,
                                 max_new_tokens=MAX_TOKENS, pad_token_id=0)
        want.append(out[0, ids.shape[1]:].tolist())
    params = SamplingParams(temperature=0, max_tokens=MAX_TOKENS, ignore_eos=True)
    assert [o.outputs[0].token_ids for o in llm.generate(PROMPTS, params)] == want
