# Sourced by the GPU bench scripts, from the repo root, with $out set: installs carried
# msgspec/gguf wheels from .whl/ if present, makes `pagefleet` importable from the checkout
# (no pip install on a bare device machine) and records the device and versions in $out.
mkdir -p "$out"
if [ -d .whl ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/msgspec-*.whl .whl/gguf-*.whl
  export PYTHONPATH=/tmp/site
fi
mkdir -p /tmp/pf/pagefleet
for d in kernels workers platform; do ln -sfn "$PWD/$d" "/tmp/pf/pagefleet/$d"; done
export PYTHONPATH=/tmp/pf:$PWD:${PYTHONPATH:-} PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader | tee "$out/device.txt"
python3 -c "import torch, triton, transformers; print('torch', torch.__version__, 'triton', triton.__version__, 'transformers', transformers.__version__)" | tee -a "$out/device.txt"
