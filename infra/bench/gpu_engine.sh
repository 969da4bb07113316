#!/usr/bin/env bash
# Engine checks and throughput benchmarks on a GPU machine (the lent H100), from the repo root.
# Needs torch, triton and transformers there; carries msgspec/gguf wheels in .whl/ if missing.
# Usage: infra/bench/gpu_engine.sh OUT_DIR [quick|gputests|diag|piecewise|tp|profile|compare|moe|fp8|fp8fuse|fp8kv|final|int4|fixed|standby|extra]
set -uo pipefail
out=${1:-/tmp/pf-bench}; mode=${2:-full}
source "$(dirname "$0")/gpu_env.sh"

bench() {  # pagefleet bench engine ARGS..., without loading the other CLI commands
  python3 infra/bench/bench_engine_main.py "$@"
}

if [ "$mode" = full ] || [ "$mode" = quick ]; then
  python3 -m pytest -q -p no:cacheprovider --noconftest tests/gpu > "$out/gpu_tests.txt" 2>&1
  tail -5 "$out/gpu_tests.txt"
fi
[ "$mode" = quick ] && exit 0
if [ "$mode" = tp ]; then  # two GPUs: TP=2 equals TP=1, then 8B at TP 1 and 2, 70B at TP 2
  if [ "${TP_SKIP_TESTS:-0}" = 0 ]; then
    timeout 300 python3 -m pytest -q -p no:cacheprovider --noconftest -o faulthandler_timeout=240 \
      tests/gpu/test_tensor_parallel_cuda.py 2>&1 | tail -15 | tee "$out/tp_tests.txt"
  fi
  for tp in ${TP_SIZES:-1 2 2async}; do  # 2async: TP=2 with asynchronous scheduling
    flags="--tensor-parallel-size ${tp%async}"; [ "$tp" != "${tp%async}" ] && flags="$flags --async-scheduling"
    timeout 200 bash -c "$(declare -f bench); bench --model llama-3.1-8b --load-format dummy --num-prompts 1000 \
      --max-num-seqs 256 $flags --hf none --json $out/llama318b_tp$tp.json" \
      2>&1 | grep -v Warning | tail -4 | tee "$out/llama8b_tp$tp.txt"
  done
  timeout 330 bash -c "$(declare -f bench); bench --model llama-3.1-70b --load-format dummy --num-prompts 500 \
    --max-num-seqs 256 --tensor-parallel-size 2 --hf none --json $out/llama3170b_tp2.json" \
    2>&1 | grep -v Warning | tail -4 | tee "$out/llama70b_tp2.txt"
  exit 0
fi
if [ "$mode" = profile ]; then  # kernels of one graph decode step, by device time
  python3 infra/bench/profile_decode.py --model llama-3.1-8b --batch 256 --context 400 2>&1 | grep -v Warning | tee "$out/profile_8b.txt"
  python3 infra/bench/profile_decode.py --model llama-3.2-1b --batch 256 --context 400 2>&1 | grep -v Warning | tee "$out/profile_1b.txt"
  exit 0
fi
if [ "$mode" = compare ]; then  # the engine-performance levers against the old path, same run
  [ "${SKIP_TESTS:-0}" = 1 ] || python3 -m pytest -q -p no:cacheprovider --noconftest tests/gpu/test_engine_cuda.py 2>&1 | tail -4 | tee "$out/gpu_tests.txt"
  for m in llama-3.1-8b llama-3.2-1b; do
    tag=${m//[-.]/}
    bench --model $m --load-format dummy --num-prompts 1000 --max-num-seqs 256 --hf none --breakdown \
      --json "$out/${tag}_sharegpt_new.json" 2>&1 | grep -v Warning | tee "$out/${tag}_new.txt"
    bench --model $m --load-format dummy --num-prompts 1000 --max-num-seqs 256 --hf none \
      --no-async-scheduling --no-fused-layers --json "$out/${tag}_sharegpt_old.json" 2>&1 | grep -v Warning | tee "$out/${tag}_old.txt"
  done
  exit 0
fi
if [ "$mode" = fp8fuse ]; then  # FP8 quantisation fused into RMSNorm / SiLU-and-mul; PARTS picks steps
  parts=${PARTS:-tests profile ab}
  if [[ " $parts " == *" tests "* ]]; then  # compiled kernels bit for bit, then the engine on and off
    { timeout 200 python3 -m pytest -q -p no:cacheprovider --confcutdir=tests/unit tests/unit/kernels/test_kernel_quant_fp8.py \
        tests/unit/kernels/test_kernel_rms_norm.py tests/unit/kernels/test_kernel_silu_and_mul.py
      timeout 150 python3 -m pytest -q -p no:cacheprovider --noconftest tests/gpu/test_engine_cuda.py -k fp8; } \
      2>&1 | grep -v Warn | tail -80 > "$out/fp8fuse_tests.txt"
    grep -E "passed|failed" "$out/fp8fuse_tests.txt"
  fi
  if [[ " $parts " == *" profile "* ]]; then  # launches and device time of one 8B graph decode step
    for flag in "" --no-fused-fp8-quant; do
      timeout 150 python3 infra/bench/profile_decode.py --model llama-3.1-8b --batch 256 --context 400 \
        --quantization fp8 $flag 2>&1 | grep -v Warning | tee "$out/fp8fuse_profile${flag}.txt" | grep -E "^(device time|kernel launches)"
    done
  fi
  if [[ " $parts " == *" ab "* ]]; then  # throughput, fused then unfused engine (UNFUSED_FIRST=1: reversed)
    first=""; [ "${UNFUSED_FIRST:-0}" = 1 ] && first="--no-fused-fp8-quant"
    timeout ${AB_TIMEOUT:-330} bash -c "$(declare -f bench); bench --model llama-3.1-8b --load-format dummy --num-prompts 1000 --hf none \
      --max-num-seqs 256 --quantization fp8 --repeat ${AB_REPEAT:-2} --compare-fused-fp8-quant $first \
      --json $out/llama318b_sharegpt_fp8_fusedquant_ab${first:+_unfusedfirst}.json" 2>&1 | grep -v Warning | tee "$out/fp8fuse_ab.txt"
  fi
  exit 0
fi
if [ "$mode" = gputests ]; then  # every fp8 kernel path compiled (failures named), then tests/gpu but TP
  # -v names each test as it ends, so a run cut off by its time limit (both were on 2026-12-07,
  # before pytest's summary) still says which ones failed.
  timeout ${KERNEL_TESTS_S:-150} python3 -m pytest -v -rf -p no:cacheprovider --confcutdir=tests/unit tests/unit/kernels \
    tests/unit/workers/attention -k "fp8" > "$out/gpu_kernel_fp8_tests.txt" 2>&1
  grep -E " (FAILED|ERROR)|^FAILED|passed|failed" "$out/gpu_kernel_fp8_tests.txt" | cut -c1-300
  timeout ${GPU_TESTS_S:-300} python3 -m pytest -v -rf --durations=15 -p no:cacheprovider --noconftest tests/gpu \
    --ignore=tests/gpu/test_tensor_parallel_cuda.py > "$out/gpu_tests.txt" 2>&1
  grep -E " (FAILED|ERROR)|^FAILED|passed|failed" "$out/gpu_tests.txt" | cut -c1-300
  exit 0
fi
if [ "$mode" = diag ]; then  # the float32 FP8-cache prefill test's traceback, decode profiles by KV dtype, SiLU+FP8 variants
  timeout 90 python3 -m pytest -x -q --tb=long -p no:cacheprovider --confcutdir=tests/unit \
    tests/unit/kernels/test_kernel_paged_prefill_attention.py -k "fp8_cache and dtype0" > "$out/fp8_prefill_f32.txt" 2>&1
  grep -E "^E |passed|failed" "$out/fp8_prefill_f32.txt" | head -20
  for run in ${DIAG_PROFILES:-llama-3.1-8b:fp8:auto llama-3.1-8b:fp8:fp8 llama-3.2-1b:bf16:auto}; do
    IFS=: read -r m q kv <<< "$run"; qflag=""; [ $q != bf16 ] && qflag="--quantization $q"
    timeout 120 python3 infra/bench/profile_decode.py --model $m --batch 256 --context 400 $qflag --kv-cache-dtype $kv \
      2>&1 | grep -v Warning > "$out/profile_${m}_${q}_kv${kv}.txt"
    grep -E "^(device time|kernel launches)|paged_decode|Error" "$out/profile_${m}_${q}_kv${kv}.txt" | cut -c1-60,150-260 | sed "s/^/$m $q kv=$kv: /"
  done
  timeout 90 python3 infra/bench/silu_quant_variants.py 2>&1 | grep -v Warning | tee "$out/silu_quant_variants.txt"
  exit 0
fi
if [ "$mode" = piecewise ]; then  # piecewise graphs for mixed steps: GPU tests, then engine A/Bs in one run each
  timeout 200 python3 -m pytest -q -rf -p no:cacheprovider --noconftest tests/gpu/test_engine_cuda.py \
    -k "piecewise or graphs_equal_eager" > "$out/piecewise_tests.txt" 2>&1
  grep -E "^FAILED|passed|failed" "$out/piecewise_tests.txt"
  # ShareGPT-like (few small mixed steps: admissions come in groups), then 512-token chunks
  # (every prefill step is a mixed step the pieces can replay)
  for run in ${PIECEWISE_RUNS:-llama-3.2-1b:8192 llama-3.2-1b:512 llama-3.1-8b:512}; do
    IFS=: read -r m tokens <<< "$run"; tag=${m//[-.]/}
    timeout ${PIECEWISE_TIMEOUT:-280} bash -c "$(declare -f bench); bench --model $m --load-format dummy --num-prompts 1000 --hf none \
      --max-num-seqs 256 --max-num-batched-tokens $tokens --compare-piecewise-graphs --repeat ${PIECEWISE_REPEAT:-2} \
      --json $out/${tag}_sharegpt_tokens${tokens}_piecewise_ab.json" 2>&1 | grep -E "^pass|^pagefleet|/|Error" | sed "s/^/$tag $tokens: /"
  done
  exit 0
fi
if [ "$mode" = moe ]; then  # fused-MoE kernel and Mixtral/Qwen3-MoE on the GPU, one layer's timing, Qwen3-30B-A3B
  python3 -m pytest -q -p no:cacheprovider --confcutdir=tests/unit tests/unit/kernels/test_kernel_fused_moe.py 2>&1 | tail -3 | tee "$out/moe_tests.txt"
  python3 -m pytest -q -p no:cacheprovider --noconftest tests/gpu/test_moe_cuda.py 2>&1 | tail -3 | tee -a "$out/moe_tests.txt"
  python3 -m pagefleet.kernels.bench_moe --json "$out/moe_layer.json" 2>&1 | grep -v Warning | tee "$out/moe_layer.txt"
  bench --model qwen3-30b-a3b --load-format dummy --num-prompts 1000 --max-num-seqs 256 --hf none --breakdown \
    --json "$out/qwen3_30b_a3b.json" 2>&1 | grep -v Warning | tee "$out/qwen3_30b_a3b.txt"
  exit 0
fi
if [ "$mode" = fp8 ]; then  # bf16 vs FP8 weights (ShareGPT-like), then 512 concurrent sequences
  { timeout 200 python3 -m pytest -q -p no:cacheprovider --noconftest tests/gpu/test_engine_cuda.py -k "fp8 or async or pinned"
    timeout 100 python3 -m pytest -q -p no:cacheprovider --confcutdir=tests/unit tests/unit/kernels/test_kernel_quant_fp8.py; } 2>&1 | grep -v Warn | tail -120 > "$out/gpu_tests.txt"
  grep -E "passed|failed" "$out/gpu_tests.txt"
  for m in llama-3.1-8b llama-3.2-1b; do
    tag=${m//[-.]/}
    breakdown=""; [ $m = llama-3.1-8b ] && breakdown="--breakdown"
    timeout 150 bash -c "$(declare -f bench); bench --model $m --load-format dummy --num-prompts 1000 --hf none --repeat 2 \
      $breakdown --json $out/${tag}_sharegpt_bf16.json" 2>&1 | grep -v Warning | grep -vE "^(device|system|preemptions)" | tee "$out/${tag}_bf16.txt"
    timeout 120 bash -c "$(declare -f bench); bench --model $m --load-format dummy --num-prompts 1000 --hf none --repeat 2 \
      --quantization fp8 --json $out/${tag}_sharegpt_fp8.json" 2>&1 | grep -v Warning | grep -E "^pass|^pagefleet|Error" | tee "$out/${tag}_fp8.txt"
  done
  for m in llama-3.2-1b llama-3.1-8b; do  # twice the concurrent sequences
    tag=${m//[-.]/}
    timeout 110 bash -c "$(declare -f bench); bench --model $m --load-format dummy --num-prompts 1000 --hf none --repeat 2 \
      --max-num-seqs 512 --json $out/${tag}_sharegpt_bf16_seqs512.json" 2>&1 | grep -v Warning | grep -E "^pass|^pagefleet" | tee "$out/${tag}_bf16_seqs512.txt"
  done
  exit 0
fi
if [ "$mode" = fp8kv ]; then  # FP8 KV cache: its GPU tests, then 8B bf16 KV vs fp8 KV (and fp8 weights), same run
  { timeout 200 python3 -m pytest -q -rf -p no:cacheprovider --noconftest tests/gpu/test_engine_cuda.py -k "fp8_kv or graphs_equal"
    timeout 200 python3 -m pytest -q -rf -p no:cacheprovider --confcutdir=tests/unit tests/unit/kernels/test_kernel_reshape_and_cache.py \
      tests/unit/kernels/test_kernel_paged_decode_attention.py tests/unit/kernels/test_kernel_paged_prefill_attention.py \
      tests/unit/kernels/test_kernel_quant_fp8.py tests/unit/workers/attention -k "fp8 or reshape or matches"; } > "$out/gpu_tests.txt" 2>&1
  grep -E "^FAILED|passed|failed" "$out/gpu_tests.txt"
  for run in ${FP8KV_RUNS:-bf16:auto bf16:fp8 fp8:auto fp8:fp8}; do
    IFS=: read -r q kv <<< "$run"; qflag=""; [ $q != bf16 ] && qflag="--quantization $q"
    timeout 150 bash -c "$(declare -f bench); bench --model llama-3.1-8b --load-format dummy --num-prompts 1000 --hf none \
      --max-num-seqs 256 $qflag --kv-cache-dtype $kv --breakdown --json $out/llama318b_sharegpt_${q}_kv${kv}_seqs256.json" \
      2>&1 | grep -E "^pass|^time|^graph decode|KV blocks|Error" | sed "s/^/8b $q kv=$kv: /"
  done
  exit 0
fi
if [ "$mode" = final ]; then  # GPU tests of the FP8/embedding paths; bf16 vs FP8, same work twice
  timeout 150 python3 -m pytest -q -rf -p no:cacheprovider --noconftest tests/gpu/test_engine_cuda.py \
    tests/gpu/test_embeddings_cuda.py -k "fp8 or int4 or async or pinned or equals_transformers" > "$out/gpu_tests.txt" 2>&1
  timeout 90 python3 -m pytest -q -rf -p no:cacheprovider --confcutdir=tests/unit \
    tests/unit/kernels/test_kernel_quant_fp8.py tests/unit/kernels/test_kernel_w4a16_gemm.py > "$out/gpu_kernel_tests.txt" 2>&1
  grep -hE "^FAILED|passed|failed" "$out/gpu_tests.txt" "$out/gpu_kernel_tests.txt"
  for run in ${FINAL_RUNS:-llama-3.1-8b:bf16:256 llama-3.1-8b:fp8:256 llama-3.2-1b:bf16:512 llama-3.2-1b:fp8:512}; do
    IFS=: read -r m q seqs <<< "$run"; tag=${m//[-.]/}; qflag=""; [ $q != bf16 ] && qflag="--quantization $q"
    timeout 110 bash -c "$(declare -f bench); bench --model $m --load-format dummy --num-prompts 1000 --hf none --repeat 2 \
      --max-num-seqs $seqs $qflag --json $out/${tag}_sharegpt_${q}_seqs${seqs}.json" 2>&1 | grep -E "^pass|Error" | sed "s/^/$tag $q $seqs: /"
  done
  exit 0
fi
if [ "$mode" = int4 ]; then  # int4 (w4a16) GPU tests, the GEMM beside bf16, then 8B bf16 vs fp8 vs int4
  { timeout 150 python3 -m pytest -q -rf -p no:cacheprovider --noconftest tests/gpu/test_engine_cuda.py -k "quantized"
    timeout 90 python3 -m pytest -q -rf -p no:cacheprovider --confcutdir=tests/unit tests/unit/kernels/test_kernel_w4a16_gemm.py; } > "$out/gpu_tests.txt" 2>&1
  grep -E "^FAILED|passed|failed" "$out/gpu_tests.txt"
  timeout 120 python3 -m pagefleet.kernels.bench_w4a16 --json "$out/w4a16_gemm.json" 2>&1 | grep -v Warning | tee "$out/w4a16_gemm.txt"
  for q in ${INT4_RUNS:-bf16 fp8 int4}; do
    qflag=""; [ $q != bf16 ] && qflag="--quantization $q"
    timeout 110 bash -c "$(declare -f bench); bench --model llama-3.1-8b --load-format dummy --num-prompts 1000 --hf none --repeat 2 \
      --max-num-seqs 256 $qflag --json $out/llama318b_sharegpt_${q}_seqs256.json" 2>&1 | grep -E "^pass|Error" | sed "s/^/8b $q: /"
  done
  exit 0
fi
if [ "$mode" = fixed ]; then  # fixed lengths and a shared prefix, new path vs old, 1B
  # FIXED_SHAPES ["1024x128 128x1024"], FIXED_PROMPTS [500], FIXED_TIMEOUT [60] s a run, FIXED_PREFIX [1]
  for shape in ${FIXED_SHAPES:-1024x128 128x1024}; do
    set -- ${shape/x/ }
    for path in new old; do
      flags=""; [ $path = old ] && flags="--no-async-scheduling --no-fused-layers"
      timeout ${FIXED_TIMEOUT:-60} bash -c "$(declare -f bench); bench --model llama-3.2-1b --load-format dummy --num-prompts ${FIXED_PROMPTS:-500} --hf none \
        --input-len $1 --output-len $2 --max-input-len $1 --max-output-len $2 $flags --json $out/llama321b_fixed$1x$2_$path.json" 2>&1 | grep -v Warning | tail -3 | tee "$out/llama1b_fixed$1x$2_$path.txt"
    done
  done
  [ "${FIXED_PREFIX:-1}" = 1 ] || exit 0
  for path in new old; do
    flags=""; [ $path = old ] && flags="--no-async-scheduling --no-fused-layers"
    timeout ${FIXED_TIMEOUT:-60} bash -c "$(declare -f bench); bench --model llama-3.2-1b --load-format dummy --num-prompts ${FIXED_PROMPTS:-500} --hf none \
      --input-len 128 --output-len 128 --shared-prefix-len 1024 $flags --json $out/llama321b_prefix1k_$path.json" 2>&1 | grep -v Warning | tail -3 | tee "$out/llama1b_prefix1k_$path.txt"
    done
    exit 0
fi
if [ "$mode" = standby ]; then  # issue 15: 8B sleep/wake phases, then swap vs recompute under KV pressure
  python3 -m pytest -q -p no:cacheprovider --noconftest tests/gpu/test_standby_cuda.py 2>&1 | tail -4 | tee "$out/standby_tests.txt"
  b8() { bench --model llama-3.1-8b --load-format dummy --hf none "$@" 2>&1 | grep -v Warning; }
  b8 --standby-cycles 3 --json "$out/llama8b_standby.json" | tee "$out/llama8b_standby.txt"
  for m in swap recompute; do  # 64 x (1024 + 256) tokens in 2048 blocks of 16
    b8 --num-prompts 64 --input-len 1024 --output-len 256 --max-num-seqs 64 --num-kv-blocks 2048 \
      --swap-space 16 --preemption-mode $m --json "$out/llama8b_pressure_$m.json" | tail -4 | tee "$out/llama8b_pressure_$m.txt"
  done
  exit 0
fi
if [ "$mode" = extra ]; then
  run() { name=$1; shift; bench "$@" --hf none 2>&1 | grep -v Warning | tee "$out/$name.txt"; }
  run llama8b_breakdown --model llama-3.1-8b --load-format dummy --num-prompts 1000 --breakdown
  run llama1b_breakdown --model llama-3.2-1b --load-format dummy --num-prompts 1000 --breakdown
  run llama1b_1024_128 --model llama-3.2-1b --load-format dummy --num-prompts 500 --input-len 1024 --output-len 128
  run llama1b_128_1024 --model llama-3.2-1b --load-format dummy --num-prompts 500 --input-len 128 --output-len 1024
  run llama1b_prefix1k --model llama-3.2-1b --load-format dummy --num-prompts 500 --input-len 128 --output-len 128 --shared-prefix-len 1024
  run llama1b_prefix1k_off --model llama-3.2-1b --load-format dummy --num-prompts 500 --input-len 128 --output-len 128 --shared-prefix-len 1024 --no-prefix-caching
  exit 0
fi
bench --model llama-3.2-1b --load-format dummy --num-prompts 1000 --max-num-seqs 256 \
  --hf static,single --hf-num-prompts 128 --hf-batch-size 128 --hf-single-prompts 3 --json "$out/llama1b_sharegpt.json" 2>&1 | grep -v Warning | tee "$out/llama1b_sharegpt.txt"
bench --model llama-3.1-8b --load-format dummy --num-prompts 1000 --max-num-seqs 256 \
  --hf static,single --hf-num-prompts 128 --hf-batch-size 128 --hf-single-prompts 2 --json "$out/llama8b_sharegpt.json" 2>&1 | grep -v Warning | tee "$out/llama8b_sharegpt.txt"
