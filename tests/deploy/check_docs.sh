#!/usr/bin/env bash
# tests/deploy/check_docs.sh BUILD_DIR SOURCE_DIR - the Doxygen API reference
# builds from include/granary/*.h, and every public function (GR_EXTERN) has
# a page entry with its doc comment; the docs name only files that exist.
set -uo pipefail
build=$1
src=$2
fail=0
cmake --build "$build" --target docs >/dev/null 2>&1 || { echo "FAIL the docs target"; exit 1; }
html="$build/docs/html"
[ -f "$html/index.html" ] && echo "ok   $html/index.html" || { echo "FAIL no index.html"; exit 1; }
for f in $(grep -ho 'GR_EXTERN [^(]*(' "$src"/include/granary/*.h | grep -o 'gr_[a-z_0-9]*(' | tr -d '(' | sort -u); do
  if ! grep -rlq ">$f<\|>$f()" "$html" 2>/dev/null; then echo "FAIL $f is not in the API reference"; fail=1; fi
done
[ "$fail" = 0 ] && echo "ok   every public function is in the API reference"
# Paths the docs cite (src/..., tools/..., tests/..., examples/..., deploy/...) exist.
for p in $(grep -ohE '`(src|tools|tests|examples|deploy|include|scripts|clients|sql|bench)/[A-Za-z0-9_./-]+`' \
  "$src"/docs/*.md "$src"/README.md | tr -d '`' | sort -u); do
  case "$p" in *'*'*) continue ;; esac
  [ -e "$src/$p" ] || { echo "FAIL docs name $p, which does not exist"; fail=1; }
done
[ "$fail" = 0 ] && echo "ok   every path the docs name exists"
[ "$fail" = 0 ]
