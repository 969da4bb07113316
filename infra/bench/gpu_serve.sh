#!/usr/bin/env bash
# `pagefleet bench serve --overhead` on a lent GPU machine, from the repo root: for each model,
# the same seeded workload through redis-server + gateway + one warm worker over HTTP, then
# straight into an in-process AsyncEngine with the same engine settings (docs/benchmarks.md,
# "Serving benchmarks"). Needs the folder infra/bench/gpu_wheels.sh fills (carry `.whl`): the
# image has torch, triton and transformers but not litestar, redis-py, msgspec or redis-server.
# Usage: infra/bench/gpu_serve.sh OUT_DIR
# Environment (defaults in brackets): MODELS [smollm2-135m-instruct llama-3.2-1b]: the default
# model's shapes and tokenizer with dummy weights, then presets with dummy weights;
# NUM_PROMPTS [512], CONCURRENCY [64] (REQUEST_RATE: Poisson arrivals at that rate instead), INPUT_LEN [128], OUTPUT_LEN [128]; MAX_NUM_SEQS [256];
# STEP_TIMEOUT [200] seconds for each model's two runs; ENGINE_PROCESS [unset: the registry's
# default, the engine loop in its own process on a GPU profile; true or false to choose];
# PIECEWISE_GRAPHS [false] the engine setting on both halves; GATEWAY_WORKERS [1] gateway processes on the one port; CLIENT_PROCESSES [1] load generators; TAG [empty] appended to the result
# files' names (several configurations in one OUT_DIR); PF_WHEELS, PF_SITE, PF_LINKS (gpu_env.sh).
set -uo pipefail
out=${1:?usage: infra/bench/gpu_serve.sh OUT_DIR}
models=${MODELS:-smollm2-135m-instruct llama-3.2-1b}
step_timeout=${STEP_TIMEOUT:-200}
wheels=$(realpath "${PF_WHEELS:-.whl}")
if [ ! -x "$wheels/bin/redis-server" ]; then
  echo "no $wheels/bin/redis-server: run infra/bench/gpu_wheels.sh here and carry .whl" >&2
  exit 1
fi
export PF_WHEELS=$wheels
source "$(dirname "$0")/gpu_env.sh"
export PATH=$wheels/bin:$PATH HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
timeout 10 redis-server --version | tee -a "$out/device.txt" || { echo "the carried redis-server does not run" >&2; exit 1; }

# The registry of this run: every model has one fixed warm worker (bench serve starts it), so
# scaling settings do not matter; engine settings are what both halves of a run share.
registry=$(mktemp --suffix=.yaml)
echo "models:" > "$registry"
for model in $models; do
  if [ "$model" = smollm2-135m-instruct ]; then source=$wheels/models/$model; else source=$model; fi
  cat >> "$registry" <<EOF
  $model:
    source: $source
    engine: {load_format: dummy, max_model_len: 2048, max_num_seqs: ${MAX_NUM_SEQS:-256}, piecewise_graphs: ${PIECEWISE_GRAPHS:-false}}
    profile: {accelerator: nvidia.com/gpu}
    scaling: {min_replicas: 1, max_replicas: 1}
EOF
  if [ -n "${ENGINE_PROCESS:-}" ]; then echo "    engine_process: $ENGINE_PROCESS" >> "$registry"; fi
done

status=0
for model in $models; do
  tag=${model//[-.]/}${TAG:-}
  timeout "$step_timeout" python3 -m pagefleet.platform.cli bench serve --overhead \
    --registry "$registry" --model "$model" --num-prompts "${NUM_PROMPTS:-512}" \
    $(if [ -n "${REQUEST_RATE:-}" ]; then echo --request-rate "$REQUEST_RATE"; else echo --concurrency "${CONCURRENCY:-64}"; fi) --input-len "${INPUT_LEN:-128}" \
    --output-len "${OUTPUT_LEN:-128}" --gateway-workers "${GATEWAY_WORKERS:-1}" \
    --client-processes "${CLIENT_PROCESSES:-1}" --json "$out/serve_overhead_$tag.json" 2>&1 \
    | grep -v Warning | tee "$out/serve_overhead_$tag.txt"
  rc=${PIPESTATUS[0]}
  if [ "$rc" = 0 ]; then  # bench serve reports failed requests but exits 0
    python3 -c "import json, sys; d = json.load(open(sys.argv[1])); sys.exit(d['platform']['failed'] + d['engine']['failed'] > 0)" \
      "$out/serve_overhead_$tag.json" || rc="failed requests"
  fi
  if [ "$rc" != 0 ]; then
    echo "bench serve --overhead for $model: $rc" | tee -a "$out/serve_overhead_$tag.txt"; status=1
  fi
done
rm -f "$registry"
exit $status
