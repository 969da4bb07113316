#!/usr/bin/env bash
# One device call of 2026-12-07 (issue 13): the platform's overhead after the fast path (item 7),
# fixed 128 in / 1024 out new vs old (1B), the fused-FP8-quant profile (8B), from the repo root.
# Usage: infra/bench/gpu_session_dec07.sh OUT_DIR   (carry .whl, made by gpu_wheels.sh)
set -uo pipefail
out=$1; mkdir -p "$out"
MODELS=llama-3.2-1b NUM_PROMPTS=256 STEP_TIMEOUT=170 infra/bench/gpu_serve.sh "$out" 2>&1 \
  | grep -v " INFO " | grep -E "====|throughput|TTFT|ITL|TPOT|CPU|completed|platform /|failed|rror" | cut -c1-200
FIXED_SHAPES=128x1024 FIXED_PROMPTS=150 FIXED_TIMEOUT=70 FIXED_PREFIX=0 infra/bench/gpu_engine.sh "$out" fixed 2>&1 | cut -c1-200
PARTS=profile timeout 170 infra/bench/gpu_engine.sh "$out" fp8fuse 2>&1 | cut -c1-200
