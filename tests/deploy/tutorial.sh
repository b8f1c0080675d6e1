#!/usr/bin/env bash
# tests/deploy/tutorial.sh BUILD_DIR SOURCE_DIR DATABASE_URL - follow
# docs/tutorial.md literally: its `sh` blocks run in order in one shell, and
# each block after a `<!-- file: NAME -->` line is written to NAME first,
# against Granary installed from BUILD_DIR into a temporary prefix (so the
# tutorial's own install step is skipped). `text` blocks (docker, helm) are
# not run. Bounded in time; loopback only.
set -uo pipefail
build=$1
src=$(cd "$2" && pwd)
url=$3
. "$src/scripts/ports.sh"
tmp=$(mktemp -d /tmp/granary-tutorial.XXXXXX)
trap 'pkill -9 -f "$tmp/prefix/bin/silo" 2>/dev/null; rm -rf "$tmp"' EXIT
cmake --install "$build" --prefix "$tmp/prefix" >/dev/null || { echo "FAIL cmake --install"; exit 1; }
python3 - "$src/docs/tutorial.md" >"$tmp/tutorial.sh" <<'PY'
import re, sys
text = open(sys.argv[1]).read()
out = ["set -euo pipefail"]
pending = None
for m in re.finditer(r"<!-- file: (\S+) -->\s*\n|```(\w+)\n(.*?)```", text, re.S):
    if m.group(1):
        pending = m.group(1)
        continue
    lang, body = m.group(2), m.group(3)
    if pending:
        out.append("cat > %s <<'GRANARY_TUTORIAL_EOF'\n%sGRANARY_TUTORIAL_EOF" % (pending, body))
        pending = None
    elif lang == "sh":
        out.append(body)
print("\n".join(out))
PY
# The deploy step is not run here (no docker, no helm), but every `--set`
# it shows must be a value the chart has.
for key in $(grep -oE -- '--set [a-zA-Z.]+=' "$src/docs/tutorial.md" | sed 's/--set //; s/=$//' | sort -u); do
  top=${key%%.*}
  leaf=${key##*.}
  if ! grep -qE "^$top:" "$src/deploy/helm/granary/values.yaml" ||
    ! grep -qE "^ *$leaf:" "$src/deploy/helm/granary/values.yaml"; then
    echo "FAIL docs/tutorial.md sets $key, which deploy/helm/granary/values.yaml does not have"
    exit 1
  fi
done
echo "ok   every --set in the tutorial's deploy step is a chart value"
cd "$tmp"
blocks=$(grep -c "" "$tmp/tutorial.sh")
export PREFIX="$tmp/prefix" PORT=$(free_port) DATABASE_URL="$url"
if timeout 180 bash "$tmp/tutorial.sh" >"$tmp/out.log" 2>&1; then
  echo "ok   docs/tutorial.md followed to the end ($blocks lines of shell)"
  grep -E "hello, " "$tmp/out.log"
  exit 0
fi
echo "FAIL docs/tutorial.md: the script stopped:"
tail -n 30 "$tmp/out.log"
exit 1
