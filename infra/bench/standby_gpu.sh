#!/usr/bin/env bash
# Standby (sleep/wake) and KV swapping on a GPU machine, from the repo root (issue 15 items 5-6).
# Needs torch and triton there; carries msgspec/gguf wheels in .whl/ if missing.
# Usage: infra/bench/standby_gpu.sh OUT_DIR
# 1. llama-3.1-8b shapes (dummy weights): 3 sleep/wake cycles, each wake split into weights
#    host-to-device, KV cache allocation and CUDA graph capture, with a greedy-token check.
# 2. The same model under KV pressure (64 x 1024+256 tokens in 2048 blocks of 16): swap vs
#    recompute, same requests; the throughput difference is what swapping pays.
set -uo pipefail
out=${1:-/tmp/pf-standby}
mkdir -p "$out"
if [ -d .whl ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/msgspec-*.whl .whl/gguf-*.whl
  export PYTHONPATH=/tmp/site
fi
mkdir -p /tmp/pf/pagefleet
for d in kernels workers platform; do ln -sfn "$PWD/$d" "/tmp/pf/pagefleet/$d"; done
export PYTHONPATH=/tmp/pf:$PWD:${PYTHONPATH:-} PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader | tee "$out/device.txt"
bench="python3 infra/bench/bench_engine_main.py --model llama-3.1-8b --load-format dummy --hf none"
$bench --standby-cycles 3 --json "$out/standby.json" 2>&1 | tee "$out/standby.txt" | tail -8
for mode in swap recompute; do
  echo "== preemption_mode $mode"
  $bench --num-prompts 64 --input-len 1024 --output-len 256 --max-num-seqs 64 \
    --num-kv-blocks 2048 --swap-space 16 --preemption-mode "$mode" \
    --json "$out/pressure_$mode.json" 2>&1 | tee "$out/pressure_$mode.txt" | tail -4
done
