"""How often a quantised engine picks the same greedy tokens as the unquantised one.

    python3 infra/bench/quantization_agreement.py --model smollm2-135m-instruct --quantization fp8

Runs the same prompts (chat-style text through the model's tokenizer when it has one, else
random ids) through both engines, greedy, and prints: the share of prompts whose whole output
matches, the mean share of each output that matches before the first differing token, and
each prompt's first differing position (null: identical).
Agreement is not required to be 100 %: FP8 keeps about two significant digits, so near-ties
flip; what matters is that a divergence comes late and rarely.
"""

from __future__ import annotations

import argparse
import gc
import json

import torch

from pagefleet.workers import LLM, SamplingParams

TEXTS = [
    "Explain why the sky is blue in two sentences.",
    "Write a haiku about autumn leaves.",
    "What is the capital of France, and what is it famous for?",
    "List three uses of a paperclip.",
    "Summarise the plot of Romeo and Juliet.",
    "How does a refrigerator keep food cold?",
    "Give me a recipe for pancakes.",
    "What are prime numbers? Give examples.",
]


def prompts_for(llm: LLM, count: int) -> list[list[int]]:
    tokenizer = llm.engine.tokenizer
    if tokenizer is None:  # dummy presets: random ids inside the vocabulary
        generator = torch.Generator().manual_seed(0)
        return [torch.randint(10, llm.engine.arch.vocab_size - 10, (64,), generator=generator).tolist()
                for _ in range(count)]
    texts = [tokenizer.apply_chat_template([{"role": "user", "content": TEXTS[i % len(TEXTS)]}],
                                           add_generation_prompt=True, tokenize=False)
             for i in range(count)]
    return [tokenizer.encode(text, add_special_tokens=False) for text in texts]


def greedy(llm: LLM, prompts: list[list[int]], max_tokens: int) -> list[list[int]]:
    params = SamplingParams(temperature=0, max_tokens=max_tokens, ignore_eos=True)
    return [list(o.outputs[0].token_ids) for o in llm.generate(prompts, params)]


def first_divergence(want: list[int], got: list[int]) -> int | None:
    """The index of the first differing token, None when the outputs are identical."""
    return next((i for i, (x, y) in enumerate(zip(want, got, strict=True)) if x != y), None)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--load-format", default="auto")
    parser.add_argument("--dtype", default="auto")
    parser.add_argument("--quantization", default="fp8")
    parser.add_argument("--num-prompts", type=int, default=16)
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    common = dict(model=args.model, load_format=args.load_format, dtype=args.dtype)
    reference = LLM(**common)
    prompts = prompts_for(reference, args.num_prompts)
    want = greedy(reference, prompts, args.max_tokens)
    del reference
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    got = greedy(LLM(quantization=args.quantization, **common), prompts, args.max_tokens)
    divergences = [first_divergence(a, b) for a, b in zip(want, got, strict=True)]
    prefixes = [(len(a) if d is None else d) / len(a) for a, d in zip(want, divergences, strict=True)]
    result = {"model": args.model, "quantization": args.quantization, "prompts": len(prompts),
              "max_tokens": args.max_tokens, "first_divergence": divergences,
              "identical_outputs": sum(p == 1.0 for p in prefixes) / len(prefixes),
              "mean_matching_prefix": sum(prefixes) / len(prefixes)}
    print(json.dumps(result))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)


if __name__ == "__main__":
    main()
