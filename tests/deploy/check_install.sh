#!/usr/bin/env bash
# tests/deploy/check_install.sh BUILD_DIR SOURCE_DIR [EXTRA_CFLAGS]
# Installs the build into a temporary prefix and uses it as a user would,
# with nothing but that prefix: pkg-config finds the headers and libraries,
# an out-of-tree grain .so and a client program compile and link against it,
# the installed silo hosts the grains and the client calls them. Prints one
# line per check; exits 1 on any failure. Loopback only; bounded in time.
set -uo pipefail
build=$1
src=$(cd "$2" && pwd)
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

# The README's API sample compiles, warning-free, against the install alone.
awk '/^```c$/{f=1;next} /^```$/{if(f){exit}} f' "$src/README.md" >"$tmp/readme.c"
cc -O1 $extra -Wall -Wextra -Werror -Wno-unused-parameter -o "$tmp/readme" "$tmp/readme.c" \
  $(pkg-config --cflags --libs granary-main) -Wl,-rpath,"$libdir" &&
  ok "the README's API sample compiles with -Wall -Wextra -Werror" || bad "the README's API sample does not compile"

# The CLIs use only the public API: they build from tools/ against the
# installed tree alone (no source-tree include path).
cc -O1 $extra -o "$tmp/granary" "$src/tools/granary/main.c" $cflags $libs -Wl,-rpath,"$libdir" &&
  ok "tools/granary builds against the installed library alone" || bad "tools/granary does not build installed"
mcflags=$(pkg-config --cflags granary-main) && mlibs=$(pkg-config --libs granary-main) &&
  ok "pkg-config granary-main: $mlibs" || bad "pkg-config granary-main failed"
cc -O1 $extra -o "$tmp/silo" "$src/tools/silo/main.c" "$src/tools/silo/cli.c" "$src/tools/silo/migrate_state.c" $mcflags $libs -lpq -ldl \
  -Wl,-rpath,"$libdir" && ok "tools/silo builds against the installed library alone" ||
  bad "tools/silo does not build installed"
# A silo binary with the grain class linked in, through libgranary_main.
cc -O1 $extra -o "$tmp/counter_silo" "$src/examples/counter/counter.c" "$src/examples/counter/counter_silo.c" \
  $mcflags $mlibs -Wl,-rpath,"$libdir" && ok "a silo with linked-in classes builds with pkg-config granary-main" ||
  bad "counter_silo does not build with granary-main"
"$tmp/silo" --help >/dev/null 2>&1 && ok "the silo built from tools/ runs (--help)" || bad "tools/silo --help failed"
# Every public function is exported by the stock silo (a --grains module
# may call any of them).
missing=$(comm -23 <(grep -ho 'GR_EXTERN [^(]*(' "$tmp/moved/include/granary/"*.h | grep -o 'gr_[a-z_0-9]*(' |
  tr -d '(' | sort -u) <(nm -D --defined-only "$tmp/moved/bin/silo" | awk '{print $3}' | sort -u))
[ -z "$missing" ] && ok "the installed silo exports every public function" ||
  bad "the installed silo does not export: $missing"

# find_package(granary): the same grain module, client and linked silo from
# a CMake project that knows only the installed prefix.
mkdir -p "$tmp/cmk"
cat >"$tmp/cmk/CMakeLists.txt" <<EOF
cmake_minimum_required(VERSION 3.18)
project(granary_user C)
find_package(granary 0.2 REQUIRED)
add_library(counter MODULE $src/examples/counter/counter.c)
target_compile_definitions(counter PRIVATE GR_COUNTER_MODULE)
target_include_directories(counter PRIVATE \$<TARGET_PROPERTY:granary::granary,INTERFACE_INCLUDE_DIRECTORIES>)
set_target_properties(counter PROPERTIES PREFIX "")
add_executable(client $src/examples/counter/counter_client.c)
target_link_libraries(client PRIVATE granary::granary)
add_executable(counter_silo $src/examples/counter/counter.c $src/examples/counter/counter_silo.c)
target_link_libraries(counter_silo PRIVATE granary::main)
EOF
if cmake -S "$tmp/cmk" -B "$tmp/cmk/build" -DCMAKE_PREFIX_PATH="$tmp/moved" -DCMAKE_C_FLAGS="$extra" \
  -DCMAKE_EXE_LINKER_FLAGS="$extra" -DCMAKE_MODULE_LINKER_FLAGS="$extra" \
  -DCMAKE_BUILD_RPATH="$libdir" >"$tmp/cmk.log" 2>&1 && cmake --build "$tmp/cmk/build" >>"$tmp/cmk.log" 2>&1; then
  ok "find_package(granary): a grain module, a client and a linked silo build"
else
  bad "find_package(granary) project failed: $(tail -n 15 "$tmp/cmk.log")"
fi

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

# The CMake-built pieces together: the linked-in silo (granary::main) and
# the client (granary::granary); then the tools/ silo with the CMake module.
for silo_cmd in "$tmp/cmk/build/counter_silo run --memory" "$tmp/silo run --memory --grains $tmp/cmk/build/counter.so"; do
  port=$(free_port)
  $silo_cmd --listen "127.0.0.1:$port" >"$tmp/silo2.log" 2>&1 &
  pid=$!
  for _ in $(seq 1 100); do (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break; sleep 0.05; done
  out=$(timeout 20 "$tmp/cmk/build/client" "127.0.0.1:$port" cmake 3 2>&1)
  case "$out" in *"value: 3"*) ok "${silo_cmd%% *} serves the find_package client ($out)" ;;
  *) bad "${silo_cmd%% *} with the find_package client: $out $(tail -n 5 "$tmp/silo2.log")" ;; esac
  kill -TERM "$pid" && wait "$pid"
  pid=""
done
out=$(timeout 20 "$tmp/granary" call --retry-for 0 --silo "127.0.0.1:1" Counter/x get 2>&1)
rc=$?
[ "$rc" = 75 ] && ok "tools/granary built installed reports a refused connection as retryable (75)" ||
  bad "tools/granary exit $rc: $out"

echo "$pass passed, $fail failed"
[ "$fail" = 0 ]
