"""Why FP8 decode graphs and FP8 eager steps disagree on a tiny random Llama (run on a GPU).

`tests/gpu/test_engine_cuda.py::test_quantized_engine_with_cuda_graphs_equals_eager` compares
them. This prints the largest logprob gap before the first differing token for FP8 graphs vs
eager (fused FP8 quantisation on and off, fused layers on and off), for bf16 graphs vs eager,
and how far each FP8 path is from the bf16 model: a broken graph path would sit further from
bf16 than the eager one.
    python3 infra/bench/fp8_graph_diag.py
"""

from __future__ import annotations

import tempfile

import torch
from transformers import LlamaConfig, LlamaForCausalLM

from pagefleet.workers import LLM, SamplingParams

Choices = list[list[tuple[int, float]]]
PROMPTS = [[(13 * i + 7 * j) % 2000 + 5 for j in range(3 + 11 * i)] for i in range(8)]
PARAMS = SamplingParams(temperature=0, ignore_eos=True, max_tokens=24, logprobs=5)


def generate(folder: str, quantization: str | None, **engine_args) -> Choices:
    llm = LLM(model=folder, dtype="bfloat16", device="cuda", max_model_len=512, max_num_seqs=24,
              quantization=quantization, **engine_args)
    outputs = [[(t.token_id, t.logprob) for t in o.outputs[0].logprobs]
               for o in llm.generate(PROMPTS, PARAMS)]
    del llm
    torch.cuda.empty_cache()
    return outputs


def worst_gap(a: Choices, b: Choices) -> float:
    """The largest logprob difference at positions before each prompt's first differing token."""
    worst = 0.0
    for prompt_a, prompt_b in zip(a, b, strict=True):
        for (token_a, logprob_a), (token_b, logprob_b) in zip(prompt_a, prompt_b, strict=True):
            if token_a != token_b:
                break
            worst = max(worst, abs(logprob_a - logprob_b))
    return worst


def agreeing_tokens(a: Choices, b: Choices) -> int:
    """Tokens before each prompt's first difference, summed over prompts."""
    total = 0
    for prompt_a, prompt_b in zip(a, b, strict=True):
        same = [x[0] == y[0] for x, y in zip(prompt_a, prompt_b, strict=True)]
        total += same.index(False) if False in same else len(same)
    return total


def main() -> None:
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=2048, hidden_size=256, intermediate_size=512, num_hidden_layers=4,
                         num_attention_heads=8, num_key_value_heads=2, max_position_embeddings=1024,
                         initializer_range=0.15)
    with tempfile.TemporaryDirectory() as folder:
        LlamaForCausalLM(config).save_pretrained(folder)
        for fused_quant in (True, False):
            graphs = generate(folder, "fp8", fused_fp8_quant=fused_quant)
            eager = generate(folder, "fp8", fused_fp8_quant=fused_quant, enforce_eager=True)
            print(f"fp8, fused_fp8_quant={fused_quant}: graphs vs eager {worst_gap(graphs, eager):.3f}")
        for fused_layers in (True, False):
            graphs = generate(folder, "fp8", fused_layers=fused_layers, async_scheduling=False)
            eager = generate(folder, "fp8", fused_layers=fused_layers, async_scheduling=False,
                             enforce_eager=True)
            print(f"fp8, synchronous, fused_layers={fused_layers}: graphs vs eager "
                  f"{worst_gap(graphs, eager):.3f}")
        graphs, eager = generate(folder, "fp8"), generate(folder, "fp8", enforce_eager=True)
        bf16_graphs, bf16 = generate(folder, None), generate(folder, None, enforce_eager=True)
        print(f"bf16 graphs vs bf16 eager {worst_gap(bf16_graphs, bf16):.3f}")
        total = sum(len(p) for p in bf16)
        for name, run in (("fp8 graphs", graphs), ("fp8 eager", eager)):
            print(f"{name} vs bf16 eager: gap {worst_gap(run, bf16):.3f}, "
                  f"{agreeing_tokens(run, bf16)} of {total} tokens before the first difference")


if __name__ == "__main__":
    main()
