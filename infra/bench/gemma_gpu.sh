#!/usr/bin/env bash
# Gemma on the device machine, from the repo root: the windowed/soft-capped kernel tests at GPU
# size, tests/gpu/test_gemma_cuda.py (Triton + CUDA graphs equal transformers), and
# `bench engine` on the gemma-2-9b / gemma-3-12b dummy presets. The image lacks msgspec and
# gguf: put their cp312 manylinux wheels in .whl/ and carry it. KERNEL_TESTS (a pytest -k
# expression) and MODELS narrow what runs; results go to $OUT/log.txt and $OUT/<model>.json.
set -u; o=$OUT; python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl
mkdir -p /tmp/pf/pagefleet; for d in kernels workers platform; do ln -sfn "$PWD/$d" /tmp/pf/pagefleet/$d; done
export PYTHONPATH=/tmp/pf:$PWD:/tmp/site PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name --format=csv,noheader | tee $o/log.txt
python3 -c "import torch,triton,transformers;print(torch.__version__,triton.__version__,transformers.__version__)" | tee -a $o/log.txt
timeout 200 python3 -m pytest -q -p no:cacheprovider --confcutdir=tests/unit -x tests/unit/kernels/test_kernel_paged_decode_attention.py tests/unit/kernels/test_kernel_paged_prefill_attention.py tests/unit/workers/attention/test_triton_backend.py -k "${KERNEL_TESTS:-}" 2>&1 | tail -4 | tee -a $o/log.txt
timeout 150 python3 -m pytest -q -p no:cacheprovider --noconftest -x tests/gpu/test_gemma_cuda.py 2>&1 | tail -15 | tee -a $o/log.txt
for m in ${MODELS:-gemma-2-9b gemma-3-12b}; do timeout 120 python3 infra/bench/bench_engine_main.py --model $m --load-format dummy --num-prompts 300 --hf none --json $o/$m.json 2>&1 | grep -v Warn | tail -6 | tee -a $o/log.txt; done
