"""Where a decode step's device time goes: kernels of one CUDA-graph decode step, by name.

Usage (on a GPU host, from the repo root, after infra/bench/gpu_engine.sh's set-up):
    python3 infra/bench/profile_decode.py --model llama-3.1-8b --batch 256 --context 400 \
        [--quantization fp8 [--no-fused-fp8-quant]] [--kv-cache-dtype fp8]
Builds a dummy-weight engine, fills `batch` sequences to `context` tokens, then profiles a few
decode steps with torch.profiler and prints the kernels sorted by total device time, and the
device time and kernel launches per step.
"""

from __future__ import annotations

import argparse

import torch
from torch.profiler import ProfilerActivity, profile

from pagefleet.platform.protocol.sampling import SamplingParams
from pagefleet.workers import LLM


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="llama-3.1-8b")
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--context", type=int, default=400)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--eager", action="store_true")
    parser.add_argument("--quantization", default=None, choices=["fp8", "int4"])
    parser.add_argument("--no-fused-fp8-quant", action="store_true")
    parser.add_argument("--kv-cache-dtype", default="auto", choices=["auto", "fp8"])
    args = parser.parse_args()
    llm = LLM(model=args.model, load_format="dummy", max_model_len=2048, max_num_seqs=args.batch,
              enforce_eager=args.eager, async_scheduling=False, quantization=args.quantization,
              fused_fp8_quant=not args.no_fused_fp8_quant, kv_cache_dtype=args.kv_cache_dtype)
    engine = llm.engine
    params = SamplingParams(temperature=0, ignore_eos=True, max_tokens=1000)
    for i in range(args.batch):
        engine.add_request(str(i), [(7 * i + j) % 20000 + 10 for j in range(args.context)], params)
    while any(s.num_computed_tokens < args.context for s in engine.scheduler.running) or engine.scheduler.waiting:
        engine.step()
    for _ in range(3):
        engine.step()
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA, ProfilerActivity.CPU]) as prof:
        for _ in range(args.steps):
            engine.step()
        torch.cuda.synchronize()
    table = prof.key_averages().table(sort_by="self_device_time_total", row_limit=25, max_name_column_width=90)
    print(table)
    events = [e for e in prof.key_averages() if e.device_type == torch.autograd.DeviceType.CUDA]
    total = sum(e.self_device_time_total for e in events) / 1e3 / args.steps
    print(f"device time per step: {total:.2f} ms over {args.steps} steps of batch {args.batch}")
    launches = sum(e.count for e in events) / args.steps
    print(f"kernel launches per step: {launches:.0f} (device activities: kernels, copies, sets)")


if __name__ == "__main__":
    main()
