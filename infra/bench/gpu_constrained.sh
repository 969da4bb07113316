#!/usr/bin/env bash
# Cost of grammar-constrained decoding on a GPU machine (the lent H200), from the repo root:
# the docs/benchmarks.md "Constrained decoding" command, run RUNS times (for the run-to-run
# spread), each one the plain run then 0 %, 50 % and 100 % of the rows under a grammar.
#
# The device image has neither the model wheel, a network, xgrammar nor pydantic, so the
# command carries two gitignored folders made here first:
#   .bench-tokenizer/smollm2  config + tokenizer files of the default model, no weights
#                             (.venv/bin/python infra/bench/tokenizer_folder.py .bench-tokenizer/smollm2);
#                             weights are random (--load-format dummy): the cost measured is
#                             the mask's, which does not depend on them
#   .whl/                     msgspec + gguf (gpu_env.sh), and the cp312 manylinux wheels of
#                             xgrammar and what it needs beyond the image: apache-tvm-ffi,
#                             pydantic, pydantic-core, annotated-types, typing-inspection,
#                             typing-extensions (docs/benchmarks.md gives the pip download line)
# Usage: infra/bench/gpu_constrained.sh OUT_DIR [RUNS]
set -uo pipefail
out=${1:-/tmp/pf-constrained}; runs=${2:-2}
folder=${TOKENIZER_FOLDER:-.bench-tokenizer/smollm2}
source "$(dirname "$0")/gpu_env.sh"

if [ ! -f "$folder/config.json" ] || [ ! -f "$folder/tokenizer.json" ]; then
  echo "no $folder/{config,tokenizer}.json: run infra/bench/tokenizer_folder.py and carry it" >&2
  exit 2
fi
xgrammar_wheels=(xgrammar apache_tvm_ffi pydantic pydantic_core annotated_types typing_inspection typing_extensions)
# each name is a wheel's prefix; one version of each is carried (two would stop the install)
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site-xgrammar \
  $(for w in "${xgrammar_wheels[@]}"; do ls .whl/"$w"-*.whl; done) || { echo "xgrammar wheels missing in .whl/" >&2; exit 3; }
export PYTHONPATH=/tmp/site-xgrammar:$PYTHONPATH
python3 -c "import xgrammar, pydantic; from importlib.metadata import version; print('xgrammar', version('xgrammar'), 'pydantic', pydantic.VERSION, xgrammar.__file__)" \
  | tee -a "$out/device.txt" || exit 3

for run in $(seq 1 "$runs"); do
  timeout 240 python3 infra/bench/bench_engine_main.py --model "$folder" --load-format dummy \
    --num-prompts 512 --input-len 128 --output-len 256 --max-num-seqs 256 --hf none \
    --constrained-fractions 0,0.5,1 --json "$out/constrained_run$run.json" 2>&1 \
    | grep -v Warning | tee "$out/constrained_run$run.txt"
done
