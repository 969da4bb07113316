"""`python -m pagefleet.kernels.bench_w4a16`: the int4 GEMM beside bf16 `F.linear` on a GPU.

Llama-3.1-8B's four projections (fused qkv, o, fused gate_up, down) at decode and prefill
token counts, each replayed from a CUDA graph over enough weight copies to miss L2, as the
engine runs them. Decode is bound by weight bytes, so the column to read is "x floor": time
over the bytes floor (the weights read once at the card's measured copy bandwidth), where
int4 reads about 0.27x bf16's bytes (scales and zeros included).
"""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict, dataclass

import torch

from pagefleet.kernels.bench import ROTATE_BYTES, measure_copy_gb_s
from pagefleet.kernels.bench_attention import time_in_graph
from pagefleet.kernels.w4a16_gemm import w4a16_gemm

# name -> (out features, in features) of Llama-3.1-8B's linear layers.
LLAMA_8B = {"qkv": (6144, 4096), "o": (4096, 4096), "gate_up": (28672, 4096), "down": (4096, 14336)}
GROUP_SIZE = 128


@dataclass(frozen=True, slots=True)
class GemmTiming:
    """One layer at one token count: median ms per GEMM and bytes floor, by format."""

    layer: str
    num_tokens: int
    ms: dict[str, float]  # "bf16" | "int4" -> median ms per GEMM
    floor_ms: dict[str, float]

    def over_floor(self, fmt: str) -> float:
        return self.ms[fmt] / self.floor_ms[fmt]


def _copies(weight_bytes: int) -> int:
    return max(1, -(-ROTATE_BYTES // weight_bytes))


def bench_gemm(layer: str, num_tokens: int, copy_gb_s: float, generator: torch.Generator) -> GemmTiming:
    out_features, in_features = LLAMA_8B[layer]
    device = generator.device
    x = torch.randn(num_tokens, in_features, generator=generator, device=device).to(torch.bfloat16)
    out = torch.empty(num_tokens, out_features, device=device, dtype=torch.bfloat16)
    bf16_bytes = out_features * in_features * 2
    weights = [torch.randn(out_features, in_features, device=device, dtype=torch.bfloat16) * 0.02
               for _ in range(_copies(bf16_bytes))]
    bf16_ms = time_in_graph([lambda w=w: torch.matmul(x, w.t(), out=out) for w in weights])
    del weights
    groups = in_features // GROUP_SIZE
    int4_bytes = out_features * (in_features // 2 + groups * 8)
    packed = [(torch.randint(-2**31, 2**31 - 1, (out_features, in_features // 8), device=device, dtype=torch.int32),
               torch.rand(out_features, groups, device=device) * 0.01,
               torch.full((out_features, groups), 8.0, device=device))
              for _ in range(_copies(int4_bytes))]
    int4_ms = time_in_graph([lambda p=p: w4a16_gemm(x, *p, out) for p in packed])
    return GemmTiming(layer, num_tokens, {"bf16": bf16_ms, "int4": int4_ms},
                      {"bf16": bf16_bytes / (copy_gb_s * 1e6), "int4": int4_bytes / (copy_gb_s * 1e6)})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, nargs="+", default=[1, 16, 64, 256, 2048])
    parser.add_argument("--layers", nargs="+", default=list(LLAMA_8B), choices=list(LLAMA_8B))
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    device = torch.device("cuda")
    copy_gb_s = measure_copy_gb_s(device)
    generator = torch.Generator(device=device).manual_seed(0)
    print(f"{torch.cuda.get_device_name(device)}; copy {copy_gb_s:.0f} GB/s; Llama-3.1-8B projections, group {GROUP_SIZE}")
    print(f"{'layer':>8} {'tokens':>7} {'bf16 ms':>8} {'int4 ms':>8} {'speedup':>8} {'bf16 x floor':>13} {'int4 x floor':>13}")
    rows = []
    for layer in args.layers:
        for num_tokens in args.tokens:
            t = bench_gemm(layer, num_tokens, copy_gb_s, generator)
            rows.append(asdict(t))
            print(f"{t.layer:>8} {t.num_tokens:>7} {t.ms['bf16']:>8.3f} {t.ms['int4']:>8.3f} "
                  f"{t.ms['bf16'] / t.ms['int4']:>8.2f} {t.over_floor('bf16'):>13.2f} {t.over_floor('int4'):>13.2f}",
                  flush=True)
            torch.cuda.empty_cache()
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"device": torch.cuda.get_device_name(device), "copy_gb_s": copy_gb_s, "rows": rows}, f, indent=1)


if __name__ == "__main__":
    main()
