#!/bin/sh
# The whole test suite, from a fresh Debian machine: installs what is
# missing, builds with warnings as errors and runs every test (ctest).
# Tests that need a GPU report "skipped: no GPU" where there is none.
set -eu
cd "$(dirname "$0")/.."

./scripts/install-deps.sh
cmake -S . -B build-test -DCMAKE_BUILD_TYPE=RelWithDebInfo -DAGXQ_WERROR=ON >/dev/null
cmake --build build-test -j"$(nproc)"
cd build-test
ctest --output-on-failure -j"$(nproc)" --timeout 300
