#!/usr/bin/env bash
# Where the platform's processes spend their time during a `gpu_serve.sh` run: py-spy samples
# the gateway, the worker and its engine core (and the bench client) while the load runs, as
# raw collapsed stacks (one line per stack with its sample count; `sort -k2` or a flame-graph
# tool reads them). Needs py-spy's wheel in the carried folder (gpu_wheels.sh adds it) and
# ptrace permission for processes of the same user (py-spy says so if it has none).
# Usage: infra/bench/gpu_serve_profile.sh OUT_DIR  (gpu_serve.sh's environment; PROFILE_S [40]:
# how long each process is sampled from the moment the worker's engine core exists).
set -uo pipefail
out=${1:?usage: infra/bench/gpu_serve_profile.sh OUT_DIR}
here=$(dirname "$0")
export PATH=${PF_SITE:-/tmp/site}/bin:$PATH  # where gpu_serve.sh's gpu_env.sh installs py-spy
"$here/gpu_serve.sh" "$out" > "$out/serve.txt" 2>&1 &
serve=$!
worker="" core=""
for _ in $(seq 1200); do  # the worker starts after the gateway; its core is its only child
  worker=$(pgrep -f "pagefleet.platform.cli worker" | head -1)
  [ -n "$worker" ] && core=$(pgrep -P "$worker" | head -1)
  [ -n "$core" ] && break
  sleep 0.25
done
gateway=$(pgrep -f "pagefleet.platform.cli gateway" | head -1)
client=$(pgrep -f "pagefleet.platform.cli bench serve" | head -1)
for name in gateway worker core client; do
  pid=${!name}
  [ -n "$pid" ] && py-spy record --duration "${PROFILE_S:-40}" --rate 200 --format raw \
    --output "$out/pyspy_$name.txt" --pid "$pid" > "$out/pyspy_$name.log" 2>&1 &
done
wait "$serve"
wait
