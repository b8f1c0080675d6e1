#!/usr/bin/env bash
# tests/deploy/check_install.sh BUILD_DIR SOURCE_DIR [EXTRA_CFLAGS]
# Installs the build into a temporary prefix and uses it as a user would,
# with nothing but that prefix: pkg-config finds the headers and libraries,
# an out-of-tree grain .so and a client program compile and link against it,
# the installed silo hosts the grains and the client calls them. Prints one
# line per check; exits 1 on any failure. Loopback only; bounded in time.
set -uo pipefail
build=$1
src=$2
extra=${3:-} # the build's sanitizer flags, if any: user programs must match an instrumented library
fail=0
pass=0
ok() { echo "ok   $*"; pass=$((pass + 1)); }
bad() { echo "FAIL $*"; fail=$((fail + 1)); }
tmp=$(mktemp -d)
pid=""
cleanup() { [ -n "$pid" ] && kill -9 "$pid" 2>/dev/null; rm -rf "$tmp"; }
trap cleanup EXIT

cmake --install "$build" --prefix "$tmp/stage" >/dev/null && ok "cmake --install into a temporary prefix" ||
  bad "cmake --install failed"
# Copied elsewhere after install: the .pc file must not name the install prefix.
mv "$tmp/stage" "$tmp/moved"
pc=$(find "$tmp/moved" -name granary.pc | head -n 1)
export PKG_CONFIG_PATH=$(dirname "$pc")
cflags=$(pkg-config --cflags granary) && libs=$(pkg-config --libs granary) && ok "pkg-config: $cflags $libs" ||
  bad "pkg-config granary failed"
grep -q '^Requires: libuv' "$pc" && ok "granary.pc requires libuv (public)" || bad "granary.pc lacks Requires: libuv"
libdir=$(pkg-config --variable=libdir granary)
# A grain module takes only the headers: the silo that loads it provides the
# runtime (linking libgranary into the .so would give it a second copy).
cc -O1 $extra -fPIC -shared -DGR_COUNTER_MODULE -o "$tmp/counter.so" "$src/examples/counter/counter.c" $cflags &&
  ok "a grain .so builds with pkg-config --cflags" || bad "the grain .so does not build"
cc -O1 $extra -o "$tmp/client" "$src/examples/counter/counter_client.c" $cflags $libs -Wl,-rpath,"$libdir" 2>/dev/null &&
  ok "a client builds with pkg-config" || bad "the client does not build"

. "$src/scripts/ports.sh"
port=$(free_port)
"$tmp/moved/bin/silo" run --memory --listen "127.0.0.1:$port" --grains "$tmp/counter.so" >"$tmp/silo.log" 2>&1 &
pid=$!
for _ in $(seq 1 100); do (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break; sleep 0.05; done
out=$(timeout 20 "$tmp/client" "127.0.0.1:$port" installed 5 2>&1)
case "$out" in *"value: 5"*) ok "the installed silo hosts the .so and the client calls it ($out)" ;;
*) bad "client against the installed silo: $out $(tail -n 5 "$tmp/silo.log")" ;; esac
kill -TERM "$pid" && wait "$pid"
rc=$?
pid=""
[ "$rc" = 0 ] && ok "the installed silo stops with 0 on SIGTERM" || bad "the installed silo exited $rc"

echo "$pass passed, $fail failed"
[ "$fail" = 0 ]
