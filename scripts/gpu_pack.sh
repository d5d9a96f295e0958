#!/bin/sh
# gpu_pack.sh: packs a build for the GPU host, which has no -dev packages:
# agxqd, the examples, the GPU-facing tests and the client libraries of
# BUILD (default build-gpu), with the shared libraries they use from
# libevent, protobuf-c, zstd and OpenBLAS (and gfortran, quadmath) in
# client/, into OUT (default build-gpu-carry/bins.tgz). OLD=DIR adds
# another build's agxqd and agxq-bench-rows under old/ (and its client
# libraries under old/client/), for old-against-new steps in one call.
#
#   BUILD=build-gpu [OLD=/tmp/oldtree/build-gpu] scripts/gpu_pack.sh
#
# On the GPU host: tar -C build-gpu-carry -xzf build-gpu-carry/bins.tgz,
# then LD_LIBRARY_PATH=$PWD/build-gpu-carry/client (gpu_*.sh set it from
# BUILD=build-gpu-carry); an old/ binary wants old/client first.
set -eu
b=${BUILD:-build-gpu}
out=${OUT:-build-gpu-carry/bins.tgz}
if [ ! -x "$b/server/agxqd" ] || [ ! -e "$b/client/libagxq_direct.so" ]; then
	echo "gpu_pack: no agxqd or libagxq_direct in $b (build it first)" >&2
	exit 1
fi
s=$(mktemp -d)
trap 'rm -rf "$s"' EXIT
mkdir -p "$s/server" "$s/examples" "$s/tests" "$s/client"
cp "$b/server/agxqd" "$s/server/"
for e in agxq-bench agxq-example agxq-bench-rows; do
	cp "$b/examples/$e" "$s/examples/"
done
for t in test_cuda test_shm test_batching test_ring; do
	if [ -x "$b/tests/$t" ]; then
		cp "$b/tests/$t" "$s/tests/"
	fi
done
cp -P "$b"/client/libagxq*.so* "$s/client/"
if [ -n "${OLD:-}" ]; then
	mkdir -p "$s/old/client"
	cp "$OLD/server/agxqd" "$OLD/examples/agxq-bench-rows" "$s/old/"
	cp -P "$OLD"/client/libagxq*.so* "$s/old/client/"
fi
# The dependencies' shared libraries, where the build links them shared
# (a build with AGXQ_STATIC_DEPS=ON has none to carry).
for l in $(ldd "$b/server/agxqd" "$b/client/libagxq_direct.so" |
    awk '/=>/ { print $3 }' | sort -u |
    grep -E 'protobuf-c|zstd|libevent|openblas|gfortran|quadmath' || true); do
	cp -L "$l" "$s/client/$(basename "$l")"
done
strip "$s"/server/* "$s"/examples/* "$s"/tests/* 2>/dev/null || true
if [ -d "$s/old" ]; then
	strip "$s/old/agxqd" "$s/old/agxq-bench-rows"
fi
mkdir -p "$(dirname "$out")"
tar -C "$s" -czf "$out" .
echo "gpu_pack: $out ($(du -h "$out" | cut -f1)): $(tar -tzf "$out" | grep -c '[^/]$') files"
