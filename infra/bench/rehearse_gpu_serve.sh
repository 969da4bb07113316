#!/usr/bin/env bash
# The CPU rehearsal of infra/bench/gpu_serve.sh, from the repo root of a checkout with its .venv:
# what a device call would do, as close as this machine allows, so a missing wheel, library or
# file fails here and not in the middle of a lent GPU's time. An empty interpreter (a venv with
# nothing installed; the device's python3 is itself a venv, /opt/torch/.venv) sees only the
# image's packages (linked from .venv by device_site.py) and the wheels gpu_wheels.sh downloads
# for this machine's Python into WORK/wheels; the carried redis-server runs with its own
# libraries; the benchmark runs on the CPU with a tiny workload. The default model and a
# tokenizer-less preset (smollm2-135m: the path llama-3.2-1b takes on the GPU, at CPU size).
# Usage: infra/bench/rehearse_gpu_serve.sh WORK_DIR   (results in WORK_DIR/out)
set -euo pipefail
work=$(realpath -m "${1:?usage: infra/bench/rehearse_gpu_serve.sh WORK_DIR}")
here=$(cd "$(dirname "$0")" && pwd)
venv_python=$(realpath .venv/bin/python)
python_version=$("$venv_python" -c "import platform; print(platform.python_version())")
if [ -n "$(ls -A "$work" 2>/dev/null)" ] && [ ! -f "$work/.pf-rehearsal" ]; then
  echo "$work is not empty and not an earlier rehearsal's folder: give a new one" >&2; exit 2
fi
rm -rf "$work"; mkdir -p "$work"; touch "$work/.pf-rehearsal"
infra/bench/gpu_wheels.sh --python-version "$python_version" --dest "$work/wheels"
"$venv_python" -m venv --without-pip "$work/python"
.venv/bin/python "$here/device_site.py" "$work/image-site" --have "$here/device_packages.txt"
PATH=$work/python/bin:$PATH PYTHONPATH=$work/image-site PF_WHEELS=$work/wheels \
  PF_SITE=$work/site PF_LINKS=$work/links MODELS="smollm2-135m-instruct smollm2-135m" \
  NUM_PROMPTS=${NUM_PROMPTS:-8} CONCURRENCY=${CONCURRENCY:-4} INPUT_LEN=32 OUTPUT_LEN=16 \
  MAX_NUM_SEQS=8 STEP_TIMEOUT=${STEP_TIMEOUT:-400} infra/bench/gpu_serve.sh "$work/out"
