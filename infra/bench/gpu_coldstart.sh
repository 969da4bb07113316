#!/usr/bin/env bash
# Worker readiness on a GPU machine (the lent H200), from the repo root: `pagefleet bench
# coldstart --in-process` for Llama-3.1-8B shapes with dummy weights, each run in a fresh
# process (imports, CUDA context, weights, memory profile, KV cache, CUDA graphs, first token),
# with and without CUDA graphs so the capture's share is visible. No Redis, gateway or
# controller is needed. Carries msgspec/gguf wheels in .whl/ if missing (gpu_env.sh).
# Usage: infra/bench/gpu_coldstart.sh OUT_DIR [RUNS]
set -uo pipefail
out=${1:-/tmp/pf-coldstart}; runs=${2:-3}
source "$(dirname "$0")/gpu_env.sh"

coldstart() {  # pagefleet bench coldstart --in-process ARGS..., without the other CLI commands
  python3 -m pagefleet.platform.cli.bench_coldstart --in-process --runs "$runs" "$@"
}

coldstart --source llama-3.1-8b --load-format dummy --max-model-len 8192 --max-num-seqs 256 \
  --json "$out/coldstart_llama-3.1-8b_graphs.json" 2>&1 | tee "$out/coldstart_llama-3.1-8b_graphs.txt"
coldstart --source llama-3.1-8b --load-format dummy --max-model-len 8192 --max-num-seqs 256 \
  --enforce-eager --json "$out/coldstart_llama-3.1-8b_eager.json" 2>&1 | tee "$out/coldstart_llama-3.1-8b_eager.txt"
