#!/usr/bin/env bash
# Build and run the whole test suite (unit, pg, cluster, e2e, chaos labels) twice:
# a normal build with warnings as errors, then the same suite under
# AddressSanitizer + UndefinedBehaviorSanitizer; then the frame decoder's
# libFuzzer target (clang) for a fixed time. Installs its dependencies from
# Debian's packages first. Every PostgreSQL the tests start is stopped at the
# end, pass or fail.
#   scripts/test.sh                   everything
#   GR_SKIP_SAN=1 scripts/test.sh     without the sanitizer build
#   GR_FUZZ_SECONDS=600 scripts/test.sh   a longer fuzz run (default 20)
#   GR_SKIP_BENCH=1 scripts/test.sh   without the benchmark smoke run
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
bash scripts/deps.sh
# deps.sh installed Chromium and playwright-core: the browser test must run, not skip.
export GRANARY_E2E_REQUIRED=1
jobs=$(nproc 2>/dev/null || echo 2)

cleanup() {
  for d in "$root"/build-test/testpg "$root"/build-san/testpg "$root"/build-*/chaos-pg-*; do
    [ -d "$d" ] && bash "$root/scripts/pg.sh" stop "$d" || true
  done
}
trap cleanup EXIT

run_suite() {
  local dir=$1; shift
  cmake -S . -B "$dir" -DGR_WERROR=ON "$@" >/dev/null
  cmake --build "$dir" -j"$jobs" >/dev/null
  (cd "$dir" && ctest --output-on-failure --timeout 600 -j"$jobs")
}

echo "== build and test (RelWithDebInfo, -Werror) =="
run_suite build-test -DCMAKE_BUILD_TYPE=RelWithDebInfo
if [ -z "${GR_SKIP_SAN:-}" ]; then
  echo "== build and test under ASan + UBSan =="
  ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
    run_suite build-san -DCMAKE_BUILD_TYPE=Debug -DGR_ASAN=ON -DGR_UBSAN=ON
fi
echo "== fuzz the frame decoder (libFuzzer, ${GR_FUZZ_SECONDS:-20} s) =="
CC=clang cmake -S . -B build-fuzz -DGR_TESTS=OFF -DGR_FUZZ=ON >/dev/null
cmake --build build-fuzz --target fuzz_frame -j"$jobs" >/dev/null
(cd build-fuzz && GR_FUZZ_SECONDS=${GR_FUZZ_SECONDS:-20} ctest --output-on-failure -L fuzz)
if [ -z "${GR_SKIP_BENCH:-}" ]; then
  echo "== benchmarks, about a second each (a smoke test: figures are not checked) =="
  smoke_out=$(mktemp -d)
  BENCH_LEVELS="1 32" BENCH_OUT="$smoke_out" bash bench/run.sh 1
  rm -rf "$smoke_out"
fi
echo "all tests passed"
