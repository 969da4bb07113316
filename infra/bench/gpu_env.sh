# Sourced by the GPU bench scripts, from the repo root, with $out set: installs the carried
# wheels (infra/bench/gpu_wheels.sh) from .whl/ if present, makes `pagefleet` importable from the
# checkout (no pip install on a bare device machine) and records the device and versions in $out.
# PF_WHEELS, PF_SITE and PF_LINKS move the wheels, the install target and the import links (the
# CPU rehearsal in docs/benchmarks.md uses its own, beside other checkouts on one machine).
mkdir -p "$out"
wheels_dir=${PF_WHEELS:-.whl}; site_dir=${PF_SITE:-/tmp/site}; links_dir=${PF_LINKS:-/tmp/pf}
if compgen -G "$wheels_dir/*.whl" > /dev/null; then
  timeout 120 python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target "$site_dir" "$wheels_dir"/*.whl
  export PYTHONPATH=$site_dir${PYTHONPATH:+:$PYTHONPATH} PATH=$site_dir/bin:$PATH
fi
mkdir -p "$links_dir/pagefleet"
for d in kernels workers platform; do ln -sfn "$PWD/$d" "$links_dir/pagefleet/$d"; done
export PYTHONPATH=$links_dir:$PWD:${PYTHONPATH:-} PYTHONUNBUFFERED=1
if command -v nvidia-smi > /dev/null; then
  timeout 30 nvidia-smi --query-gpu=name,memory.total --format=csv,noheader | tee "$out/device.txt"
else
  echo "no nvidia-smi: $(uname -m) $(nproc) CPUs" | tee "$out/device.txt"
fi
timeout 120 python3 -c "import sys, torch, triton, transformers; print('python', sys.version.split()[0], 'torch', torch.__version__, 'triton', triton.__version__, 'transformers', transformers.__version__)" | tee -a "$out/device.txt"
