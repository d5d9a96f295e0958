#!/bin/sh
# The main job, from a fresh Debian machine: installs what is missing, builds,
# starts agxqd on the CPU backend, runs the example inference app against it
# (8 threads sharing one client, every linear/mlp result checked) and stops
# the daemon.
set -eu
cd "$(dirname "$0")/.."

./scripts/install-deps.sh
cmake -S . -B build -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build build -j"$(nproc)"

dir=$(mktemp -d)
sock="$dir/agxqd.sock"
trap 'build/server/agxqd stop --socket "$sock" >/dev/null 2>&1 || true; rm -rf "$dir"' EXIT

build/server/agxqd start --socket "$sock" --backend cpu
build/examples/agxq-example --socket "$sock" --threads 8 --requests 300
build/server/agxqd status --socket "$sock"
build/server/agxqd stop --socket "$sock"
trap 'rm -rf "$dir"' EXIT
