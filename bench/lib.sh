# bench/lib.sh - sourced by the bench scripts (run from the repository root):
# installs what is missing, builds Release into build-bench, makes a work
# directory and a throwaway PostgreSQL (migrated), and removes, stops and
# kills all of it on exit. Sets B (the build dir), work, url and pids (add
# the pid of every process you start, it is killed on exit); free_port
# (scripts/ports.sh) prints a free 127.0.0.1 port; pgbin is PostgreSQL's bin directory.
bench_setup() { # bench_setup NAME
  root=$(pwd)
  pgbin=$(pg_config --bindir)
  bash scripts/deps.sh
  cmake -S . -B build-bench -DCMAKE_BUILD_TYPE=Release -DGR_TESTS=OFF >/dev/null
  cmake --build build-bench -j"$(nproc)" >/dev/null
  B=build-bench
  work=$(mktemp -d "/tmp/granary-$1.XXXXXX")
  chmod 755 "$work" # the PostgreSQL server runs as the postgres user
  pids=()
  trap bench_cleanup EXIT
  url=$(bash scripts/pg.sh start "$work/pg")
  $B/silo migrate --database "$url" >/dev/null
}

bench_cleanup() {
  for p in "${pids[@]}"; do { kill -9 "$p"; wait "$p"; } 2>/dev/null || true; done
  bash "$root/scripts/pg.sh" stop "$work/pg" >/dev/null 2>&1 || true
  rm -rf "$work"
}

. scripts/ports.sh
