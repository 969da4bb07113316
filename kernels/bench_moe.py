"""`python -m pagefleet.kernels.bench_moe`: one fused-MoE layer of Qwen3-30B-A3B on a GPU.

For each token count, the layer (align, gate_up grouped GEMM, SiLU-and-mul, down grouped GEMM,
top-k sum) replayed from a CUDA graph as decode runs it, set against two ceilings: the bytes
floor (every expert the batch routes to read once at the card's measured copy bandwidth) and
the FLOP rate it reaches. Small batches are bound by the first, large prefills by the second.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict, dataclass

import torch

from pagefleet.kernels.bench import measure_copy_gb_s
from pagefleet.kernels.bench_attention import time_in_graph
from pagefleet.kernels.fused_moe import MoeBlockConfig, fused_moe, moe_block_config

TUNING = [
    MoeBlockConfig(m, n, k, num_warps=w, num_stages=s)
    for m in (16, 32, 64) for n in (32, 64, 128) for k in (64, 128) for w in (4,) for s in (3, 4)
]


@dataclass(frozen=True, slots=True)
class MoeLayerTiming:
    num_tokens: int
    experts_touched: int
    ms: float
    floor_ms: float
    tflop_s: float
    block_m: int


def bench_layer(num_tokens: int, hidden: int, inter: int, num_experts: int, top_k: int,
                copy_gb_s: float, generator: torch.Generator,
                config: MoeBlockConfig | None = None) -> MoeLayerTiming:
    device, dtype = generator.device, torch.bfloat16
    x = torch.randn(num_tokens, hidden, generator=generator, device=device).to(dtype)
    w13 = (torch.randn(num_experts, 2 * inter, hidden, generator=generator, device=device) * 0.02).to(dtype)
    w2 = (torch.randn(num_experts, hidden, inter, generator=generator, device=device) * 0.02).to(dtype)
    logits = torch.randn(num_tokens, num_experts, generator=generator, device=device)
    weights, ids = torch.softmax(logits, dim=-1).topk(top_k, dim=-1)
    weights = (weights / weights.sum(-1, keepdim=True)).to(dtype)
    out = torch.empty_like(x)
    ms = time_in_graph([lambda: fused_moe(x, w13, w2, weights, ids, out, config)])
    touched = ids.unique().numel()
    weight_bytes = touched * 3 * inter * hidden * x.element_size()
    return MoeLayerTiming(
        num_tokens=num_tokens, experts_touched=touched, ms=ms,
        floor_ms=weight_bytes / (copy_gb_s * 1e6),
        tflop_s=2 * num_tokens * top_k * 3 * inter * hidden / ms / 1e9,
        block_m=(config or moe_block_config(num_tokens * top_k, num_experts)).block_m,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, nargs="+", default=[1, 8, 32, 64, 128, 256, 512, 2048, 8192])
    parser.add_argument("--hidden", type=int, default=2048)
    parser.add_argument("--inter", type=int, default=768)
    parser.add_argument("--experts", type=int, default=128)
    parser.add_argument("--top-k", type=int, default=8)
    parser.add_argument("--json", default=None)
    parser.add_argument("--tune", action="store_true", help="sweep TUNING at each token count first")
    args = parser.parse_args()
    device = torch.device("cuda")
    copy_gb_s = measure_copy_gb_s(device)
    generator = torch.Generator(device=device).manual_seed(0)
    print(f"{torch.cuda.get_device_name(device)}; copy {copy_gb_s:.0f} GB/s; hidden {args.hidden}, "
          f"inter {args.inter}, {args.experts} experts, top {args.top_k}")
    print(f"{'tokens':>7} {'experts':>8} {'block_m':>8} {'ms':>8} {'floor ms':>9} {'x floor':>8} {'TFLOP/s':>8}")
    rows = []
    for num_tokens in args.tokens:
        if args.tune:
            timings = [(bench_layer(num_tokens, args.hidden, args.inter, args.experts, args.top_k,
                                    copy_gb_s, generator, c).ms, c) for c in TUNING]
            for ms, c in sorted(timings, key=lambda t: t[0])[:3]:
                print(f"  tune {num_tokens}: {ms:.3f} ms {c}", flush=True)
        t = bench_layer(num_tokens, args.hidden, args.inter, args.experts, args.top_k, copy_gb_s, generator)
        rows.append(asdict(t))
        print(f"{t.num_tokens:>7} {t.experts_touched:>8} {t.block_m:>8} {t.ms:>8.3f} {t.floor_ms:>9.3f} "
              f"{t.ms / t.floor_ms:>8.2f} {t.tflop_s:>8.1f}", flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"device": torch.cuda.get_device_name(device), "copy_gb_s": copy_gb_s,
                       "shape": vars(args), "rows": rows}, f, indent=1)


if __name__ == "__main__":
    main()
