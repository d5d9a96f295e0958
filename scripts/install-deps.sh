#!/bin/sh
# Installs the Debian packages agxq needs to build, run and test (clang and
# libclang-rt-dev: the libFuzzer targets scripts/test.sh runs).
# Installs only what is missing, so it works offline once they are present.
set -eu

pkgs="build-essential cmake pkg-config libevent-dev libprotobuf-c-dev \
protobuf-c-compiler libzstd-dev libopenblas-dev clang libclang-rt-dev"
missing=""
for p in $pkgs; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" ||
		missing="$missing $p"
done
[ -z "$missing" ] && exit 0

sudo=""
[ "$(id -u)" -ne 0 ] && sudo="sudo"
echo "agxq: installing$missing" >&2
$sudo apt-get update -qq
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends $missing
