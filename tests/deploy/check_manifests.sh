#!/usr/bin/env bash
# tests/deploy/check_manifests.sh SILO_BINARY SOURCE_DIR
# Offline checks that deploy/ (Dockerfile, Kubernetes manifests, Helm chart)
# only uses settings, ports, commands and probe paths the silo accepts, that
# the grace period covers the drain, and that the silo starts with the
# manifests' environment. Prints one line per check; exits 1 on any failure.
set -uo pipefail
silo=$1
src=$2
fail=0
pass=0
ok() { echo "ok   $*"; pass=$((pass + 1)); }
bad() { echo "FAIL $*"; fail=$((fail + 1)); }

help=$("$silo" --help)
files=$(find "$src/deploy" -type f \( -name '*.yaml' -o -name '*.tpl' -o -name 'Dockerfile' \))

# 1. Every GRANARY_* variable is one the silo documents in --help.
for v in $(grep -ohE 'GRANARY_[A-Z_]+' $files | sort -u); do
  if grep -q "env: $v\b" <<<"$help"; then ok "env $v is a silo setting"; else bad "env $v is not a silo setting"; fi
done
# POD_IP / POD_NAME come from the downward API and are read by the silo.
for f in "$src"/deploy/kubernetes/deployment.yaml "$src"/deploy/kubernetes/statefulset.yaml "$src"/deploy/helm/granary/templates/deployment.yaml; do
  for v in POD_IP POD_NAME; do
    grep -q "name: $v" "$f" && ok "$(basename "$f") sets $v" || bad "$(basename "$f") lacks $v (downward API)"
  done
done
grep -q 'POD_IP' <<<"$help" && ok "silo reads POD_IP" || bad "silo --help does not mention POD_IP"

# 2. Probe paths exist.
for p in $(grep -ohE 'path: /[a-z]+' $files | awk '{print $2}' | sort -u); do
  case "$p" in /healthz|/readyz|/metrics) ok "probe path $p is served" ;; *) bad "probe path $p is not served by the silo" ;; esac
done

# 3. Ports: the env's listen/http ports are the containerPorts named grains/http.
for f in "$src"/deploy/kubernetes/deployment.yaml "$src"/deploy/kubernetes/statefulset.yaml; do
  lp=$(grep -oE 'GRANARY_LISTEN, value: "[^"]*"' "$f" | grep -oE '[0-9]+"$' | tr -d '"')
  hp=$(grep -oE 'GRANARY_HTTP, value: "[^"]*"' "$f" | grep -oE '[0-9]+"$' | tr -d '"')
  grep -q "name: grains, containerPort: $lp}" "$f" && ok "$(basename "$f") grains port $lp" || bad "$(basename "$f") grains containerPort != GRANARY_LISTEN port $lp"
  grep -q "name: http, containerPort: $hp}" "$f" && ok "$(basename "$f") http port $hp" || bad "$(basename "$f") http containerPort != GRANARY_HTTP port $hp"
  grep -q "port: http" "$f" && ok "$(basename "$f") probes use the http port" || bad "$(basename "$f") probes do not use the http port"
done
grep -q 'EXPOSE 7700 7780' "$src/deploy/Dockerfile" && ok "Dockerfile exposes 7700 7780" || bad "Dockerfile EXPOSE does not match the ports"

# 4. The grace period covers drain timeout + preStop sleep.
f="$src/deploy/kubernetes/deployment.yaml"
grace=$(grep -oE 'terminationGracePeriodSeconds: [0-9]+' "$f" | awk '{print $2}')
drain=$(grep -oE 'GRANARY_DRAIN_TIMEOUT_MS, value: "[0-9]+"' "$f" | grep -oE '[0-9]+')
sleep_s=$(grep -oE '"sleep", "[0-9]+"' "$f" | grep -oE '[0-9]+')
if [ $((drain / 1000 + sleep_s)) -lt "$grace" ]; then ok "grace ${grace}s > drain $((drain / 1000))s + preStop ${sleep_s}s"; else bad "grace ${grace}s does not cover drain + preStop"; fi

# 5. Commands used as args are silo commands.
for c in $(grep -ohE 'args: \["[a-z]+"\]' $files | grep -oE '"[a-z]+"' | tr -d '"' | sort -u); do
  grep -qE "silo( \[)?$c\b|silo \[run\]" <<<"$help" && grep -q "$c" <<<"$help" && ok "command $c exists" || bad "command $c is not a silo command"
done

# 6. The silo starts with the deployment's literal environment (memory
#    storage and loopback ports instead of the database and pod ports).
envs=()
while read -r name value; do
  case "$name" in GRANARY_LISTEN|GRANARY_HTTP) continue ;; esac
  envs+=("$name=$value")
done < <(grep -oE '\{name: GRANARY_[A-Z_]+, value: "[^"]*"\}' "$f" | sed -E 's/\{name: ([A-Z_]+), value: "([^"]*)"\}/\1 \2/')
log=$(mktemp)
env -i PATH="$PATH" "${envs[@]}" GRANARY_LISTEN=127.0.0.1:0 GRANARY_HTTP=127.0.0.1:0 \
  "$silo" run --memory --grains "$(dirname "$silo")/examples/counter.so" >"$log" 2>&1 &
pid=$!
sleep 1
if kill -0 "$pid" 2>/dev/null; then
  kill -TERM "$pid"; wait "$pid"; rc=$?
  [ "$rc" = 0 ] && ok "silo starts with the manifest environment (${#envs[@]} settings) and stops with 0" || bad "silo exited $rc on SIGTERM"
else
  wait "$pid"; bad "silo refused the manifest environment: $(cat "$log")"
fi
rm -f "$log"

# 7. Security (docs/security.md): every silo pod runs as non-root with a
#    read-only root, no privilege escalation, no capabilities; the silo
#    secret and HTTP token come from the Secret; a NetworkPolicy exists.
for f in "$src"/deploy/kubernetes/deployment.yaml "$src"/deploy/kubernetes/statefulset.yaml "$src"/deploy/helm/granary/templates/deployment.yaml; do
  for k in 'runAsNonRoot: true' 'readOnlyRootFilesystem: true' 'allowPrivilegeEscalation: false' 'drop: \["ALL"\]' \
           'name: GRANARY_SILO_SECRET' 'name: GRANARY_HTTP_TOKEN'; do
    grep -q "$k" "$f" && ok "$(basename "$f") has $k" || bad "$(basename "$f") lacks $k"
  done
done
for k in silo-secret http-token; do
  grep -q "$k:" "$src/deploy/kubernetes/secret.yaml" && ok "secret.yaml has $k" || bad "secret.yaml lacks $k"
  grep -q "$k:" "$src/deploy/helm/granary/templates/secret.yaml" && ok "helm secret has $k" || bad "helm secret lacks $k"
done
for f in "$src/deploy/kubernetes/networkpolicy.yaml" "$src/deploy/helm/granary/templates/networkpolicy.yaml"; do
  grep -q 'kind: NetworkPolicy' "$f" && ok "$(basename "$(dirname "$f")")/$(basename "$f") is a NetworkPolicy" || bad "no NetworkPolicy in $f"
done

echo "$pass passed, $fail failed"
[ "$fail" = 0 ]
