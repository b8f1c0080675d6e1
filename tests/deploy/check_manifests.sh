#!/usr/bin/env bash
# tests/deploy/check_manifests.sh SILO_BINARY SOURCE_DIR
# Offline checks that deploy/ (Dockerfiles, Kubernetes manifests, Helm chart)
# only uses settings, ports, commands and probe paths the silo accepts, that
# the grace period covers the drain, and that the silo starts with the
# manifests' environment; that the plain manifests agree with each other
# (the StatefulSet alternative is the Deployment's pods, no two workloads
# select the same pods, probes, spread, the migrate Job); that the image
# carries only what runs and the build context only sources (.dockerignore);
# and, through tests/deploy/render_chart.py, the Helm chart rendered without
# Helm. Prints one line per check; exits 1 on any failure. Needs python3
# (PyYAML optional).
set -uo pipefail
silo=$1
src=$2
fail=0
pass=0
ok() { echo "ok   $*"; pass=$((pass + 1)); }
bad() { echo "FAIL $*"; fail=$((fail + 1)); }

help=$("$silo" --help)
files=$(find "$src/deploy" -type f \( -name '*.yaml' -o -name '*.tpl' -o -name 'Dockerfile*' \))
k8s=$src/deploy/kubernetes
sts=$k8s/alternatives/statefulset.yaml

# 1. Every GRANARY_* variable is one the silo documents in --help.
for v in $(grep -ohE 'GRANARY_[A-Z_]+' $files | sort -u); do
  if grep -q "env: $v\b" <<<"$help"; then ok "env $v is a silo setting"; else bad "env $v is not a silo setting"; fi
done
# POD_IP / POD_NAME come from the downward API and are read by the silo.
for f in "$k8s/deployment.yaml" "$sts" "$src"/deploy/helm/granary/templates/deployment.yaml; do
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
for f in "$k8s/deployment.yaml" "$sts"; do
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
for f in "$k8s/deployment.yaml" "$sts" "$src"/deploy/helm/granary/templates/deployment.yaml; do
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

# Python checks print "ok   ..." / "FAIL ..." lines: count them here; a
# crash (no FAIL line but a non-zero exit) is a failure too.
relay() {
  local out rc line failed=0
  out=$("$@" 2>&1)
  rc=$?
  while IFS= read -r line; do
    case "$line" in
      "ok   "*) ok "${line#ok   }" ;;
      "FAIL "*) bad "${line#FAIL }"; failed=1 ;;
      *" passed, "*" failed") ;;
      "") ;;
      *) echo "     $line" ;;
    esac
  done <<<"$out"
  [ "$rc" = 0 ] || [ "$failed" = 1 ] || bad "$(basename "$2") exited $rc"
}
export PYTHONPATH="$src/tests/deploy${PYTHONPATH:+:$PYTHONPATH}"

# 8. The plain manifests, parsed (render_chart.py's YAML loader: PyYAML, or
#    its own parser without it). alternatives/statefulset.yaml is the
#    Deployment's pods under a StatefulSet: same env, same pod template. The
#    workloads `kubectl apply -f deploy/kubernetes/` applies (the top level;
#    alternatives/ is not descended into) never select each other's pods.
relay python3 - "$k8s" <<'PY'
import glob, os, sys
import render_chart as rc
k8s = sys.argv[1]
def load(path):
    with open(path) as f:
        text = f.read()
    docs = [rc.load_yaml(d, path) for d in rc.split_documents(text) if d.strip()]
    if rc.pyyaml is not None:
        mine = [rc.mini_load(d, path) for d in rc.split_documents(text) if d.strip()]
        if mine != docs:
            print(f"FAIL {os.path.relpath(path, k8s)}: the built-in YAML parser disagrees with PyYAML")
    return [d for d in docs if d]
def say(cond, good, badmsg):
    print(("ok   " + good) if cond else ("FAIL " + badmsg))
top = {p: load(p) for p in sorted(glob.glob(os.path.join(k8s, "*.yaml")))}
alts = {p: load(p) for p in sorted(glob.glob(os.path.join(k8s, "alternatives", "*.yaml")))}
objs = [(os.path.basename(p), o) for p, docs in top.items() for o in docs]
print(f"ok   {len(objs)} objects in {len(top)} top-level manifests and {len(alts)} alternatives parse "
      f"({'PyYAML' if rc.pyyaml else 'built-in parser'})")
dep = [o for _, o in objs if o["kind"] == "Deployment"][0]
sts = [o for docs in alts.values() for o in docs if o["kind"] == "StatefulSet"][0]
dspec, sspec = rc.pod_spec(dep), rc.pod_spec(sts)
def envs(spec):
    return {c["name"]: c.get("env") or [] for c in rc.all_containers(spec)}
de, se = envs(dspec), envs(sspec)
diff = sorted(n for n in set(de) | set(se) if de.get(n) != se.get(n))
say(not diff, f"deployment.yaml and alternatives/statefulset.yaml have the same env "
              f"({sum(len(v) for v in de.values())} vars in {', '.join(sorted(de))})",
    f"the env of containers {diff} differs between deployment.yaml and alternatives/statefulset.yaml")
say(dep["spec"]["template"] == sts["spec"]["template"],
    "alternatives/statefulset.yaml's pod template is deployment.yaml's",
    "the pod templates of deployment.yaml and alternatives/statefulset.yaml have drifted apart")
for p in alts:
    with open(p) as f:
        head = f.read(400)
    say("ALTERNATIVE" in head and "never both" in head, f"alternatives/{os.path.basename(p)} says it replaces, "
        "never joins, deployment.yaml", f"alternatives/{os.path.basename(p)} lacks the 'ALTERNATIVE ... never both' header")
# Workloads applied together must not select each other's pods.
wl = [(f"{n}:{o['kind']}/{o['metadata']['name']}", o) for n, o in objs if o["kind"] in rc.WORKLOADS + ("Job",)]
clash = []
for a, oa in wl:
    sel = ((oa["spec"].get("selector") or {}).get("matchLabels")) or {}
    own = (oa["spec"]["template"].get("metadata") or {}).get("labels") or {}
    if oa["kind"] != "Job" and not rc.selects(sel, own):
        clash.append(f"{a} does not select its own pods")
    for b, ob in wl:
        lb = (ob["spec"]["template"].get("metadata") or {}).get("labels") or {}
        if a != b and sel and rc.selects(sel, lb):
            clash.append(f"{a} selects the pods of {b}")
say(not clash, f"no two of the {len(wl)} workloads in deploy/kubernetes/ select the same pods",
    "; ".join(clash))
silo_pods = dep["spec"]["template"]["metadata"]["labels"]
for n, o in objs:
    s = (o.get("spec") or {})
    sel = {"Service": s.get("selector"), "PodDisruptionBudget": (s.get("selector") or {}).get("matchLabels"),
           "NetworkPolicy": (s.get("podSelector") or {}).get("matchLabels")}.get(o["kind"])
    if sel is not None:
        say(rc.selects(sel, silo_pods), f"{n}: the {o['kind']} selects the silo pods",
            f"{n}: the {o['kind']} selector {sel} misses the silo pods {silo_pods}")
job = [o for _, o in objs if o["kind"] == "Job"][0]
jspec = rc.pod_spec(job)
svc = [o for _, o in objs if o["kind"] == "Service"][0]
say(not rc.selects(svc["spec"]["selector"], job["spec"]["template"].get("metadata", {}).get("labels") or {}),
    "migrate-job.yaml: its pods are not behind the Service", "migrate-job.yaml: the Service selects its pods")
for name, spec in (("deployment.yaml", dspec), ("alternatives/statefulset.yaml", sspec)):
    pp = rc.probe_problems(spec)
    rp = rc.silo_container(spec)["readinessProbe"]
    say(not pp, f"{name}: readiness every {rp.get('periodSeconds')}s, timeout {rp.get('timeoutSeconds')}s, "
                f"{rp.get('failureThreshold')} failures; liveness conservative", f"{name}: {'; '.join(pp)}")
    sp = rc.spread_problems(spec, silo_pods)
    say(not sp, f"{name}: spread over nodes (hostname, ScheduleAnyway)", f"{name}: {'; '.join(sp)}")
for name, spec in (("deployment.yaml", dspec), ("alternatives/statefulset.yaml", sspec), ("migrate-job.yaml", jspec)):
    sp = rc.security_problems(spec)
    say(not sp, f"{name}: every container (init ones too) non-root, read-only, no capabilities",
        f"{name}: {'; '.join(sp)}")
image = rc.silo_container(dspec)["image"]
inits = [c for c in dspec.get("initContainers") or [] if c.get("args") == ["migrate"]]
say(len(inits) == 1 and inits[0]["image"] == image,
    f"deployment.yaml runs `silo migrate` as an initContainer of the same image ({image})",
    f"deployment.yaml: migrate initContainers {[c.get('image') for c in inits]} vs silo image {image}")
jimg = jspec["containers"][0]["image"]
tag = image.rsplit(":", 1)[-1] if ":" in image.rsplit("/", 1)[-1] else "latest"
say(jimg == image and job["metadata"]["name"].endswith("-" + tag) and job["spec"].get("ttlSecondsAfterFinished"),
    f"migrate-job.yaml: image {jimg} is the Deployment's, its name {job['metadata']['name']} carries the tag, "
    f"ttlSecondsAfterFinished removes finished Jobs",
    f"migrate-job.yaml: image {jimg} (Deployment {image}), name {job['metadata']['name']} (must end with -{tag}), "
    f"ttlSecondsAfterFinished {job['spec'].get('ttlSecondsAfterFinished')}")
PY

# 9. The image: the build context (.dockerignore) leaves out build trees,
#    node_modules, .git and logs but no source the build needs; the runtime
#    stage carries only binaries, grains modules and runtime packages;
#    Dockerfile.grains builds a .so against the sdk stage's headers and runs it.
relay python3 - "$src" <<'PY'
import os, re, subprocess, sys
src = sys.argv[1]
def say(cond, good, badmsg):
    print(("ok   " + good) if cond else ("FAIL " + badmsg))

# .dockerignore, matched as Docker does (moby/patternmatcher): ** spans
# directories, a pattern that matches a parent directory excludes its files,
# the last matching pattern wins, ! re-includes.
path = os.path.join(src, ".dockerignore")
if not os.path.exists(path):
    say(False, "", "no .dockerignore at the repository root: COPY . . sends build trees, .git, node_modules")
    sys.exit(0)
pats = []
for line in open(path):
    line = line.strip()
    if not line or line.startswith("#"):
        continue
    neg = line.startswith("!")
    p = os.path.normpath(line[1:] if neg else line).lstrip("/")
    rx, i = "", 0
    while i < len(p):
        c = p[i]
        if c == "*" and p[i + 1:i + 2] == "*":
            i += 2
            if p[i:i + 1] == "/":
                i += 1
            rx += ".*" if i >= len(p) else "(.*/)?"
            continue
        rx += "[^/]*" if c == "*" else "[^/]" if c == "?" else re.escape(c)
        i += 1
    pats.append((re.compile("^" + rx + "$"), neg, line))
def excluded(f):
    parts = f.split("/")
    hit = False
    for rx, neg, _ in pats:
        if rx.match(f) or any(rx.match("/".join(parts[:i])) for i in range(1, len(parts))):
            hit = not neg
    return hit
lines = [l for _, _, l in pats]
for want in ("build*", "**/node_modules", ".git"):
    say(want in lines, f".dockerignore has {want}", f".dockerignore lacks {want}")
junk = ["build/silo", "build/test_silo.log", "build-san/CMakeCache.txt", "build-bench/bench/x", ".git/HEAD",
        "tests/e2e/node_modules/playwright-core/package.json", "clients/node/node_modules/ws/index.js",
        "clients/elixir/_build/dev/lib/granary/ebin/Elixir.Granary.beam", "clients/elixir/deps/jason/mix.exs",
        "clients/python/__pycache__/granary.cpython-311.pyc", "chaos-kill.log", "src/base/util.o",
        "examples/counter/counter.so", "libgranary.a"]
kept = [j for j in junk if not excluded(j)]
say(not kept, f".dockerignore keeps build trees, .git, node_modules, clients' outputs, logs and objects out "
              f"({len(junk)} sample paths)", f".dockerignore lets in: {kept}")
try:
    tracked = subprocess.run(["git", "-C", src, "ls-files"], capture_output=True, text=True, check=True).stdout.split()
except (OSError, subprocess.CalledProcessError):
    tracked = [os.path.relpath(os.path.join(d, f), src).replace(os.sep, "/")
               for top in ("include", "src", "sql", "cmake", "tools", "examples", "bench")
               for d, _, fs in os.walk(os.path.join(src, top)) for f in fs]
needed = [f for f in tracked if f.split("/")[0] in ("include", "src", "sql", "cmake", "tools", "examples", "bench")
          or (f.count("/") == 0 and (f == "CMakeLists.txt" or f.endswith(".pc.in")))]
lost = [f for f in needed if excluded(f)]
say(needed and not lost, f".dockerignore keeps all {len(needed)} source files the image builds from",
    f".dockerignore drops sources the build needs: {lost[:10]}")

def stages(path):
    text = open(path).read().replace("\\\n", " ")
    out = []
    for line in text.split("\n"):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        m = re.match(r"FROM\s+(\S+)(?:\s+AS\s+(\S+))?", line, re.I)
        if m:
            out.append({"base": m.group(1), "name": m.group(2), "lines": []})
        elif out:
            out[-1]["lines"].append(line)
        else:
            out.append({"base": None, "name": "<args>", "lines": [line]})
    return out
st = stages(os.path.join(src, "deploy", "Dockerfile"))
named = {s["name"]: s for s in st if s["name"]}
rt = st[-1]
copies = [l for l in rt["lines"] if l.upper().startswith("COPY")]
def sources(l):
    w = [x for x in re.sub(r'[\[\]",]', " ", l).split()[1:] if not x.startswith("--")]
    return w[:-1]
srcs = [s for l in copies for s in sources(l)]
allowed = re.compile(r"^/opt/granary/(bin/(silo|granary)|lib/libgranary\.so[.0-9]*|lib/granary/[A-Za-z0-9_.-]+\.so)$")
badsrc = [s for s in srcs if not allowed.match(s)]
say(srcs and not badsrc and not any("include" in s or re.search(r"\.a$", s) for s in srcs),
    f"runtime stage copies only {', '.join(srcs)} (no headers, no static library)",
    f"runtime stage copies {badsrc or srcs}: only the binaries, libgranary.so and grains modules belong there")
run = " ".join(l for l in rt["lines"] if l.upper().startswith("RUN"))
pk = set(re.findall(r"\b(lib[a-z0-9.+-]+|build-essential|cmake|gcc|pkg-config|ca-certificates)\b", run))
say({"libuv1", "libpq5", "libssl3"} <= pk and not any(p.endswith("-dev") or p in ("build-essential", "cmake", "gcc")
                                                     for p in pk),
    f"runtime stage installs {' '.join(sorted(pk))} (no -dev packages, no compiler)",
    f"runtime stage packages: {sorted(pk)} (want libuv1 libpq5 libssl3, nothing -dev)")
env = " ".join(l for l in rt["lines"] if l.upper().startswith("ENV"))
g = re.search(r"GRANARY_GRAINS=(\S+)", env)
dests = [re.sub(r'[\[\]",]', " ", l).split()[-1] for l in copies]
say(g and g.group(1) in dests, f"the image's GRANARY_GRAINS {g and g.group(1)} is copied into it",
    f"GRANARY_GRAINS {g and g.group(1)} is not among the runtime stage's COPY destinations {dests}")
b = " ".join(named.get("build", {}).get("lines", []))
need = ["cmake", "pkg-config", "libuv1-dev", "libpq-dev", "libssl-dev", "uthash-dev"]
say(all(re.search(r"\b" + re.escape(p) + r"\b", b) for p in need),
    "build stage installs " + " ".join(need) + " (CMakeLists.txt requires them)",
    f"build stage lacks some of {need}")
sdk = named.get("sdk")
say(sdk and any("/opt/granary" in l and l.upper().startswith("COPY") for l in sdk["lines"])
    and any("PKG_CONFIG_PATH=/opt/granary/lib/pkgconfig" in l for l in sdk["lines"]),
    "the sdk stage has the installed tree and PKG_CONFIG_PATH for pkg-config granary",
    "no sdk stage with /opt/granary and PKG_CONFIG_PATH")

gpath = os.path.join(src, "deploy", "Dockerfile.grains")
if not os.path.exists(gpath):
    say(False, "", "no deploy/Dockerfile.grains")
    sys.exit(0)
gs = stages(gpath)
args = " ".join(gs[0]["lines"]) if gs[0]["name"] == "<args>" else ""
final = gs[-1]
builders = [s for s in gs[1:-1]]
brun = " ".join(l for s in builders for l in s["lines"] if l.upper().startswith("RUN"))
m = re.search(r"ARG\s+BASE_IMAGE=(\S+)", args)
say(final["base"] == "${BASE_IMAGE}" and m and m.group(1).split(":")[0] == "granary",
    f"Dockerfile.grains starts FROM the stock image ({m and m.group(1)})",
    f"Dockerfile.grains' final stage is FROM {final['base']} (want ${{BASE_IMAGE}}, default granary:...)")
say(builders and "pkg-config --cflags granary" in brun and "-shared" in brun and "-fPIC" in brun
    and "--libs" not in brun and "-lgranary" not in brun,
    "Dockerfile.grains builds the .so with -shared -fPIC $(pkg-config --cflags granary), without linking libgranary",
    "Dockerfile.grains does not build a .so with pkg-config --cflags granary (and no --libs)")
fl = " ".join(final["lines"])
say(re.search(r"COPY\s+--from=\S+\s+\S+\.so\s+/opt/granary/grains/yours\.so", fl)
    and re.search(r'CMD\s+\[\s*"run",\s*"--grains",\s*"/opt/granary/grains/yours\.so"\s*\]', fl)
    and "GRANARY_GRAINS=/opt/granary/grains/yours.so" in fl,
    "Dockerfile.grains installs /opt/granary/grains/yours.so and runs silo run --grains with it (and GRANARY_GRAINS)",
    "Dockerfile.grains does not copy /opt/granary/grains/yours.so and run `silo run --grains` with it")
PY

# 10. The Helm chart, rendered without Helm (tests/deploy/render_chart.py).
relay python3 "$src/tests/deploy/render_chart.py" "$silo" "$src"

echo "$pass passed, $fail failed"
[ "$fail" = 0 ]
