"""The engine's host cost per generated token, with the model's forward stubbed out.

On a GPU the host schedules, flattens, samples and settles every step while the device runs
the last one; when that host work outgrows the device step (small models, many sequences) it
sets the pace. A CPU machine cannot time the device, but it can time the host path alone:
this runs the real `LLMEngine` (scheduler, KV-cache bookkeeping, flattening, sampler,
detokeniser, deltas) on a one-layer model of the default model's config whose forward is
replaced by one-hot logits over a 1,024-token vocabulary, so the forward costs almost
nothing and the same for every code version. Compare versions on the same idle machine:

    OMP_NUM_THREADS=1 .venv/bin/python infra/bench/host_path.py --num-seqs 256 --output-len 256
    ... --no-tokenizer     # the dummy presets' case: no detokenisation

It prints microseconds per generated token (best of `--repeat` passes) and the characters of
text produced, which must not change between versions that only make the host path faster.
"""

from __future__ import annotations

import argparse
import gc
import json
import tempfile
import time
from pathlib import Path

import torch
from tokenizer_folder import write_tokenizer_folder  # beside this script (run as a file)

from pagefleet.platform.protocol.sampling import SamplingParams
from pagefleet.workers.engine.llm import LLM

_VOCAB = 1024  # tokenizer ids below this are ordinary tokens of the default model


def write_stub_model(folder: Path, with_tokenizer: bool) -> None:
    """The default model's config cut to one tiny layer and a 1,024-token vocabulary."""
    write_tokenizer_folder(folder)
    config = json.loads((folder / "config.json").read_text())
    config.update(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                  num_key_value_heads=1, head_dim=16, vocab_size=_VOCAB)
    (folder / "config.json").write_text(json.dumps(config))
    if not with_tokenizer:
        for path in folder.iterdir():
            if path.name != "config.json":
                path.unlink()


def stub_forward(model: torch.nn.Module) -> None:
    """Replace the model's forward with nothing and its logits with one-hot rows that walk the
    vocabulary (so every sequence decodes varied text); the runner's own uploads, pending-token
    fill and row selection still run around them."""
    calls = 0

    def forward(input_ids: torch.Tensor, *_: object) -> torch.Tensor:
        return input_ids.new_zeros((input_ids.shape[0], 1), dtype=torch.float32)

    def compute_logits(hidden: torch.Tensor) -> torch.Tensor:
        nonlocal calls
        calls += 1
        rows = torch.arange(hidden.shape[0])
        logits = torch.zeros(rows.shape[0], _VOCAB)
        logits[rows, (rows * 7 + calls * 131) % (_VOCAB - 300) + 300] = 1.0
        return logits

    model.forward = forward
    model.compute_logits = compute_logits


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--num-seqs", type=int, default=256)
    parser.add_argument("--prompt-len", type=int, default=128)
    parser.add_argument("--output-len", type=int, default=256)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--no-tokenizer", action="store_true")
    parser.add_argument("--async-scheduling", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        write_stub_model(Path(tmp), with_tokenizer=not args.no_tokenizer)
        llm = LLM(tmp, load_format="dummy", max_model_len=args.prompt_len + args.output_len,
                  num_kv_blocks=max(40_000, args.num_seqs * (args.prompt_len + args.output_len) // 16 + 64),
                  max_num_seqs=args.num_seqs, async_scheduling=args.async_scheduling)
    stub_forward(llm.engine.runner.model)
    gc.freeze()  # as the benchmarks and the worker do after start-up (`gc_freeze`)
    prompts = [[10 + (i * 7 + j) % 900 for j in range(args.prompt_len)] for i in range(args.num_seqs)]
    params = SamplingParams(temperature=0, ignore_eos=True, max_tokens=args.output_len)
    llm.generate(prompts[:8], SamplingParams(temperature=0, ignore_eos=True, max_tokens=4))
    best = float("inf")
    for _ in range(args.repeat):
        start = time.perf_counter()
        outputs = llm.generate(prompts, params)
        best = min(best, time.perf_counter() - start)
    tokens = sum(len(o.outputs[0].token_ids) for o in outputs)
    chars = sum(len(o.outputs[0].text) for o in outputs)
    print(f"{args.num_seqs} sequences x {args.output_len} tokens, tokenizer "
          f"{'off' if args.no_tokenizer else 'on'}: {best / tokens * 1e6:.2f} us per generated "
          f"token (best of {args.repeat}), {tokens} tokens, {chars} characters of text")


if __name__ == "__main__":
    main()
