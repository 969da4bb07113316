set -uo pipefail
python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/msgspec-*.whl .whl/gguf-*.whl
mkdir -p /tmp/pf/pagefleet
for d in kernels workers platform; do ln -sfn "$PWD/$d" "/tmp/pf/pagefleet/$d"; done
export PYTHONPATH=/tmp/pf:$PWD:/tmp/site PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
B="python3 infra/bench/bench_engine_main.py --model llama-3.1-8b --load-format dummy --hf none"
$B --standby-cycles 3 --json $OUT/standby.json 2>&1 | grep -v Warning | tail -15
for mode in swap recompute; do
  echo "== $mode"
  $B --num-prompts 64 --input-len 1024 --output-len 256 --max-num-seqs 64 --num-kv-blocks 2048 --swap-space 16 --preemption-mode $mode 2>&1 | tail -4
done
