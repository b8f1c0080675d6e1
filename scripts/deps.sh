#!/usr/bin/env bash
# Install what Granary needs to build and test: Debian's packages (the
# toolchain, libuv, libpq, uthash, cmocka, OpenSSL, PostgreSQL, Elixir (the Elixir client's tests),
# prometheus (its promtool checks /metrics), doxygen (the API reference), Redis and
# Erlang (bench/run.sh's baselines: redis-benchmark, Erlang distribution), and Chromium + Node.js
# for the dashboard's browser test), then playwright-core from npm into
# tests/e2e/node_modules (pinned by tests/e2e/package-lock.json).
# Idempotent: skips apt and npm when everything is already there.
set -euo pipefail
cd "$(dirname "$0")/.."
pkgs=(build-essential cmake pkg-config libuv1-dev libpq-dev uthash-dev libcmocka-dev
      libssl-dev openssl postgresql postgresql-contrib clang curl procps iproute2 chromium wrk elixir
      prometheus doxygen redis-server redis-tools erlang-nox)
# Node.js may come from elsewhere (nodesource, nvm); only ask Debian for it if absent.
command -v node >/dev/null 2>&1 || pkgs+=(nodejs)
command -v npm >/dev/null 2>&1 || pkgs+=(npm)
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -ne 0 ]; then
  SUDO=""
  [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  echo "installing: ${missing[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
# The browser test's driver library; the browser itself is Debian's Chromium.
want=$(sed -n 's/.*"playwright-core": "\(.*\)".*/\1/p' tests/e2e/package.json)
have=""
pw=tests/e2e/node_modules/playwright-core/package.json
[ -f "$pw" ] && have=$(sed -n 's/.*"version": "\(.*\)".*/\1/p' "$pw" | head -1)
if [ "$want" != "$have" ]; then
  echo "installing playwright-core $want into tests/e2e (npm ci)" >&2
  (cd tests/e2e && PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm ci --no-audit --no-fund --loglevel=error >/dev/null)
fi
