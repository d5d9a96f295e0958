#!/bin/sh
# The whole test suite, from a fresh Debian machine: installs what is
# missing, builds with warnings as errors and runs every test (ctest).
# Tests that need a GPU report "skipped: no GPU" where there is none.
#
# Then, unless AGXQ_TEST_QUICK=1:
#  - the whole suite again under ASan + UBSan (leak checking on; every
#    process, the daemons included, writes its reports under
#    build-test-asan/san/, and any report fails the run);
#  - the concurrency tests under TSan, with OPENBLAS_NUM_THREADS=1 so that
#    OpenBLAS (not instrumented) starts no threads of its own;
#  - each libFuzzer target for AGXQ_FUZZ_SECONDS (default 30) seconds,
#    built with clang, starting from its committed corpus.
# Sanitizer and fuzz builds leave the CUDA backend out.
set -eu
cd "$(dirname "$0")/.."

jobs="$(nproc)"
t0="$(date +%s)"

# Prints a stage's name and the time so far.
stage() {
	echo "agxq: $1 ($(($(date +%s) - t0)) s)" >&2
}

# Fails when any sanitizer wrote a report into directory $1.
check_reports() {
	if [ -n "$(ls -A "$1" 2>/dev/null)" ]; then
		for f in "$1"/*; do
			echo "==== $f" >&2
			cat "$f" >&2
		done
		echo "agxq: sanitizer reports in $1" >&2
		return 1
	fi
}

./scripts/install-deps.sh
stage "plain build"
cmake -S . -B build-test -DCMAKE_BUILD_TYPE=RelWithDebInfo -DAGXQ_WERROR=ON >/dev/null
cmake --build build-test -j"$jobs"
(cd build-test && ctest --output-on-failure -j"$jobs" --timeout 300)

[ "${AGXQ_TEST_QUICK:-0}" = 1 ] && exit 0

stage "ASan + UBSan build"
cmake -S . -B build-test-asan -DCMAKE_BUILD_TYPE=RelWithDebInfo -DAGXQ_WERROR=ON \
	-DAGXQ_CUDA=OFF -DAGXQ_ASAN=ON -DAGXQ_UBSAN=ON >/dev/null
cmake --build build-test-asan -j"$jobs"
san="$PWD/build-test-asan/san"
rm -rf "$san"
mkdir -p "$san"
stage "ASan + UBSan tests"
(cd build-test-asan &&
	ASAN_OPTIONS="detect_leaks=1:abort_on_error=0:log_path=$san/asan" \
	UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1:log_path=$san/ubsan" \
	ctest --output-on-failure -j"$jobs" --timeout 300 -E '^(bench_quick|fuzz_)')
check_reports "$san"

stage "TSan build"
cmake -S . -B build-test-tsan -DCMAKE_BUILD_TYPE=RelWithDebInfo -DAGXQ_WERROR=ON \
	-DAGXQ_CUDA=OFF -DAGXQ_TSAN=ON >/dev/null
cmake --build build-test-tsan -j"$jobs" --target agxqd test_daemon \
	test_client_unit test_batching test_batcher test_faults test_ioloops test_ring \
	agxq-soak
tsan="$PWD/build-test-tsan/san"
rm -rf "$tsan"
mkdir -p "$tsan"
stage "TSan tests"
# ignore_noninstrumented_modules: on a 2-core VM with Linux 6.18 (2026-12-05)
# TSan clients against a TSan agxqd crawled (soak_short: 0 requests in 10 s,
# also at 13c36fb; one client alone 7k in 4 s) unless TSan left what the
# libraries built without it do (OpenBLAS, libevent, protobuf-c) alone. Our
# own code stays checked.
(cd build-test-tsan &&
	OPENBLAS_NUM_THREADS=1 \
	TSAN_OPTIONS="halt_on_error=1:second_deadlock_stack=1:ignore_noninstrumented_modules=1:log_path=$tsan/tsan" \
	ctest --output-on-failure -j"$jobs" --timeout 300 \
	-R '^(test_daemon|test_client_unit|test_batching|test_batcher|test_faults|test_ioloops|test_ring|soak_short)$')
check_reports "$tsan"

stage "fuzzing"
CC=clang cmake -S . -B build-test-fuzz -DCMAKE_BUILD_TYPE=RelWithDebInfo \
	-DAGXQ_WERROR=ON -DAGXQ_CUDA=OFF -DAGXQ_FUZZ=ON >/dev/null
cmake --build build-test-fuzz -j"$jobs" --target fuzz_codec fuzz_message fuzz_graph \
	fuzz_rawinfer
for t in codec message graph rawinfer; do
	work="build-test-fuzz/corpus_$t"
	mkdir -p "$work"
	# New inputs go to the scratch corpus; the committed one is read only.
	build-test-fuzz/tests/fuzz/fuzz_$t -max_total_time="${AGXQ_FUZZ_SECONDS:-30}" \
		-timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
		-artifact_prefix="build-test-fuzz/crash-$t-" \
		"$work" "tests/fuzz/corpus_$t" 2>build-test-fuzz/fuzz_$t.log ||
		{ tail -n 60 build-test-fuzz/fuzz_$t.log >&2; exit 1; }
	grep -E '^stat::number_of_executed_units' build-test-fuzz/fuzz_$t.log |
		sed "s/^/agxq: fuzz_$t /" >&2
done
stage "all passed"
