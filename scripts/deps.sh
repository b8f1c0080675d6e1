#!/usr/bin/env bash
# Install what Granary needs to build and test, from Debian's packages.
# Idempotent: skips apt entirely when everything is already there.
set -euo pipefail
pkgs=(build-essential cmake pkg-config libuv1-dev libpq-dev uthash-dev libcmocka-dev
      postgresql postgresql-contrib clang curl procps iproute2)
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0
SUDO=""
[ "$(id -u)" -ne 0 ] && SUDO="sudo"
echo "installing: ${missing[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
