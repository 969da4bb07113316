"""One linear layer of the default model on the CPU: float32 (today) vs int8 weights, same run.

    OMP_NUM_THREADS=1 .venv/bin/python infra/bench/cpu_int8_linear.py --batches 1 8 64 256

For each of SmolLM2-135M's linear shapes (q/k/v fused, o, gate/up fused, down, the LM head)
and each batch of token rows, times `F.linear` on float32 weights, on bfloat16 weights (for
context: the whole model in bfloat16 is another CPU option), and `int8_linear` (the int8 op up
to GEMV_MAX_ROWS rows, a bfloat16 GEMM of the dequantised layer above). A decode step reads
each layer's weights from memory, not from cache: every call cycles through `num_layers`
copies of the layer (as many as the model has), so the timings are per call of a weight that
is not cache-resident. Candidates alternate round by round (torch.utils.benchmark, median of
each round), and every round is printed: the machine is shared, so the spread matters.
"""

from __future__ import annotations

import argparse
import json
import statistics

import torch
import torch.nn.functional as F
from torch.utils import benchmark

from pagefleet.workers.models.int8 import int8_linear, quantize_int8_rows
from pagefleet.workers.models.loader import DEFAULT_MODEL, resolve_model


def model_shapes(model: str) -> dict[str, tuple[int, int, int]]:
    """name -> (out features, in features, copies read per decode step)."""
    arch = resolve_model(model).arch
    hidden, q_size = arch.hidden_size, arch.num_heads * arch.head_dim
    kv_size, layers = arch.num_kv_heads * arch.head_dim, arch.num_layers
    return {"qkv": (q_size + 2 * kv_size, hidden, layers), "o": (hidden, q_size, layers),
            "gate_up": (2 * arch.intermediate_size, hidden, layers),
            "down": (hidden, arch.intermediate_size, layers), "lm_head": (arch.vocab_size, hidden, 1)}


def candidates(out_features: int, in_features: int, copies: int, x: torch.Tensor) -> dict[str, benchmark.Timer]:
    generator = torch.Generator().manual_seed(out_features * in_features)
    weights = [torch.randn(out_features, in_features, generator=generator) * 0.02 for _ in range(copies)]
    bf16 = [w.to(torch.bfloat16) for w in weights]
    int8 = [quantize_int8_rows(w) for w in weights]
    x16 = x.to(torch.bfloat16)
    env = {"F": F, "int8_linear": int8_linear, "x": x, "x16": x16, "w32": weights, "w16": bf16, "w8": int8}
    threads = torch.get_num_threads()
    return {
        "float32": benchmark.Timer("for w in w32: F.linear(x, w)", globals=env, num_threads=threads),
        "bfloat16": benchmark.Timer("for w in w16: F.linear(x16, w)", globals=env, num_threads=threads),
        "int8": benchmark.Timer("for w in w8: int8_linear(x, w)", globals=env, num_threads=threads),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default=DEFAULT_MODEL)
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--min-run-time", type=float, default=0.2, help="seconds per candidate and round")
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    print(f"torch {torch.__version__}; intra-op threads {torch.get_num_threads()}; model {args.model}")
    rows = []
    for name, (out_features, in_features, copies) in model_shapes(args.model).items():
        for batch in args.batches:
            x = torch.randn(batch, in_features, generator=torch.Generator().manual_seed(batch))
            timers = candidates(out_features, in_features, copies, x)
            rounds: dict[str, list[float]] = {key: [] for key in timers}
            for _ in range(args.rounds):
                for key, timer in timers.items():
                    rounds[key].append(timer.blocked_autorange(min_run_time=args.min_run_time).median / copies * 1e6)
            medians = {key: statistics.median(values) for key, values in rounds.items()}
            rows.append({"layer": name, "shape": [out_features, in_features], "batch": batch,
                         "rounds_us": rounds, "median_us": medians})
            spread = "  ".join(f"{key} {medians[key]:8.1f} us [{min(v):.0f}-{max(v):.0f}]" for key, v in rounds.items())
            print(f"{name:<8} {out_features:>5}x{in_features:<5} batch {batch:>3}: {spread}  "
                  f"float32/int8 {medians['float32'] / medians['int8']:.2f}x", flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"torch": torch.__version__, "threads": torch.get_num_threads(), "rows": rows}, f, indent=2)


if __name__ == "__main__":
    main()
