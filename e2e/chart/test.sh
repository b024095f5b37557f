#!/usr/bin/env bash
# Tests the Helm chart charts/ipfs-image and the plain manifests rendered from it, offline:
#   helm lint / helm template (default values and e2e/chart/all-features.yaml), Kubernetes'
#   own schemas (kubernetes-validate, Kubernetes 1.32), the CRD schema for the examples
#   (check-jsonschema), assertions on the rendered objects (e2e/chart/assertions.py), the
#   values schema, the Kubo init script (run against a stub `ipfs`), the CRD copy, and
#   manifests/install.yaml against a fresh render (regenerate it with
#   e2e/chart/render-install.sh).
# Run as root on Debian (installs its tools on first run, see e2e/chart/deps.sh); idempotent.
# Prints `ok - <name>` / `not ok - <name>` per check and `N passed, M failed` at the end;
# exits non-zero when anything failed.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
chart="$root/charts/ipfs-image"

bash "$here/deps.sh"
if [ -x "$root/e2e/.deps/helm/bin/helm" ]; then helm="$root/e2e/.deps/helm/bin/helm"; else helm=$(command -v helm); fi
venv="$root/e2e/.deps/pyvenv/bin"
py="$venv/python"
kv=("$venv/kubernetes-validate" --strict -k 1.32.0)
cj="$venv/check-jsonschema"
export HELM="$helm"

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

passed=0
failed=0
ok() { echo "ok - $1"; passed=$((passed + 1)); }
not_ok() { echo "not ok - $1"; failed=$((failed + 1)); }
# check NAME CMD...: passes when CMD exits 0; prints its output (indented) when it does not.
check() {
  local name=$1; shift
  if "$@" >"$tmp/out" 2>&1; then ok "$name"; else not_ok "$name"; sed 's/^/    /' "$tmp/out" | tail -40; fi
}
# check_fails NAME CMD...: passes when CMD exits non-zero (something that must be rejected).
check_fails() {
  local name=$1; shift
  if "$@" >"$tmp/out" 2>&1; then not_ok "$name"; echo "    (was accepted)"; else ok "$name"; fi
}
# check_output NAME PATTERN CMD...: passes when CMD fails and its output matches PATTERN.
check_fails_with() {
  local name=$1 pattern=$2; shift 2
  if "$@" >"$tmp/out" 2>&1; then
    not_ok "$name"; echo "    (was accepted)"
  elif grep -Eq -- "$pattern" "$tmp/out"; then
    ok "$name"
  else
    not_ok "$name"; echo "    (failed, but not with /$pattern/):"; sed 's/^/    /' "$tmp/out" | tail -10
  fi
}
fail() { echo "$*"; return 1; }
# run_tap CMD...: CMD prints ok/not ok lines itself; count them.
run_tap() {
  local line
  "$@" >"$tmp/tap" 2>&1 || echo "not ok - $* exited non-zero" >>"$tmp/tap"
  while IFS= read -r line; do
    echo "$line"
    case $line in
      "ok - "*) passed=$((passed + 1)) ;;
      "not ok - "*) failed=$((failed + 1)) ;;
    esac
  done <"$tmp/tap"
}

all="$here/all-features.yaml"
render() { "$helm" template ipfs-image "$chart" --namespace ipfs-image "$@"; }

# --- lint and render --------------------------------------------------------------------------
check "helm lint (default values)" "$helm" lint --strict "$chart"
check "helm lint (all optional features on)" "$helm" lint --strict "$chart" -f "$all"
render_to() { local out=$1; shift; render "$@" >"$out"; }
check "helm template (default values)" render_to "$tmp/default.yaml" --include-crds
check "helm template (all optional features on)" render_to "$tmp/all.yaml" -f "$all"
check "helm template (swarmKey.enabled=false)" render_to "$tmp/public.yaml" --set swarmKey.enabled=false
variants=( # helm arguments, split on spaces
  "--set swarmKey.enabled=true,swarmKey.existingSecret=ipfs-swarm-key"
  "--set operator.persistence.enabled=false,agent.kubo.repo.type=emptyDir"
  "--set operator.persistence.existingClaim=seed,fullnameOverride=ipfs,operator.serviceAccount.create=false,agent.serviceAccount.create=false"
  "--set-json agent.registries=[] --set agent.mirrorAllRegistries=true,metrics.serviceMonitor.enabled=true"
  "--set runtime=crio"
  "--set containerd.configFile="
)
i=0
for v in "${variants[@]}"; do
  i=$((i + 1))
  read -ra vargs <<<"$v"
  check "helm template variant $i ($v)" render_to "$tmp/variant$i.yaml" "${vargs[@]}"
done

# NOTES.txt is not part of `helm template`'s output: render it through tpl in a copy of the chart.
cp -r "$chart" "$tmp/chart-notes"
cp "$chart/templates/NOTES.txt" "$tmp/chart-notes/notes.txt"
echo 'notes: {{ tpl (.Files.Get "notes.txt") . | toJson }}' >"$tmp/chart-notes/templates/zz-notes.yaml"
notes_ok() {
  "$helm" template ipfs-image "$tmp/chart-notes" -n ipfs-image --show-only templates/zz-notes.yaml >"$tmp/notes.yaml" || return 1
  "$py" -c 'import sys,yaml; print(yaml.safe_load(open(sys.argv[1]))["notes"])' "$tmp/notes.yaml" >"$tmp/notes.txt" || return 1
  local want
  for want in 'kubectl get ipfsimg -A' 'kubectl get ipfsimg -o wide' 'localhost:5050/ipfs/<CID>' \
    'manifests/examples/ipfsimage.yaml' 'rollout status daemonset/ipfs-image-agent'; do
    grep -qF -- "$want" "$tmp/notes.txt" || fail "NOTES lack: $want" || return 1
  done
}
check "NOTES.txt renders and says how to check the install" notes_ok

# --- Kubernetes schemas -----------------------------------------------------------------------
# kubernetes-validate knows the built-in kinds (and CustomResourceDefinition); custom resources
# (ServiceMonitor) go to a separate file and are checked for shape by assertions.py.
split_known() { # IN OUT_KNOWN OUT_CUSTOM
  "$py" - "$@" <<'PY'
import sys, yaml
src, known, custom = sys.argv[1:4]
docs = [d for d in yaml.safe_load_all(open(src)) if d]
builtin = lambda d: "." not in d["apiVersion"].split("/")[0] or d["apiVersion"].split("/")[0].endswith(".k8s.io")
with open(known, "w") as k, open(custom, "w") as c:
    yaml.safe_dump_all([d for d in docs if builtin(d)], k, sort_keys=False)
    yaml.safe_dump_all([d for d in docs if not builtin(d)], c, sort_keys=False)
if not any(builtin(d) for d in docs):
    sys.exit("no objects")
PY
}
validate() { # FILE (scratch files go to $tmp, never next to FILE)
  local base
  base="$tmp/validate-$(basename "$1")"
  split_known "$1" "$base.known" "$base.custom" || return 1
  "${kv[@]}" "$base.known" >"$base.kv" 2>&1 || { cat "$base.kv"; return 1; }
  if grep -E '^(ERROR|WARN)' "$base.kv"; then return 1; fi
}
check "kubernetes-validate --strict 1.32 (default render, with the CRD)" validate "$tmp/default.yaml"
check "kubernetes-validate --strict 1.32 (all optional features on)" validate "$tmp/all.yaml"
for j in $(seq 1 $i); do
  check "kubernetes-validate --strict 1.32 (variant $j)" validate "$tmp/variant$j.yaml"
done
check "kubernetes-validate --strict 1.32 (manifests/install.yaml)" validate "$root/manifests/install.yaml"
# The validator must bite: an unknown field in a Deployment is an error.
"$py" - "$tmp/default.yaml" "$tmp/planted.yaml" <<'PY'
import sys, yaml
docs = [d for d in yaml.safe_load_all(open(sys.argv[1])) if d]
dep = next(d for d in docs if d["kind"] == "Deployment")
dep["spec"]["template"]["spec"]["containers"][0]["hostNetwrok"] = True
yaml.safe_dump(dep, open(sys.argv[2], "w"))
PY
check_fails "kubernetes-validate rejects a planted unknown field (self-check)" "${kv[@]}" "$tmp/planted.yaml"

# --- the CRD, the dashboard and the examples --------------------------------------------------
check "the chart's dashboard is what e2e/dashboard/dashboard.py writes" \
  python3 "$root/e2e/dashboard/dashboard.py" --check
check "chart crds/ is a copy of crds/ipfsimage.dev_ipfsimages.yaml (sync: e2e/chart/render-install.sh)" \
  cmp "$root/crds/ipfsimage.dev_ipfsimages.yaml" "$chart/crds/ipfsimage.dev_ipfsimages.yaml"
check "extract the IpfsImage schema from the CRD" \
  "$py" "$here/crd_schema.py" "$root/crds/ipfsimage.dev_ipfsimages.yaml" v1alpha1 "$tmp/ipfsimage.schema.json"
# The agents' admission policy names every status field but `nodes` as one an agent never
# changes; a field added to the CRD must be added there too.
policy_fields_ok() {
  "$py" - "$root/crds/ipfsimage.dev_ipfsimages.yaml" "$tmp/default.yaml" <<'PY'
import re, sys, yaml
crd = yaml.safe_load(open(sys.argv[1]))
status = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["status"]["properties"]
want = sorted(k for k in status if k != "nodes")
docs = [d for d in yaml.safe_load_all(open(sys.argv[2])) if d]
vap = next(d for d in docs if d["kind"] == "ValidatingAdmissionPolicy" and d["metadata"]["name"].endswith("-agent-writes"))
text = "\n".join(v["expression"] for v in vap["spec"]["validations"])
got = re.findall(r"has\(oldObject\.status\.([A-Za-z]+)\)", text)
got = sorted(set(got) - {"nodes"})
assert got == want, f"the policy checks {got}, the CRD's status has {want}"
PY
}
check "the agents' admission policy covers every status field of the CRD but nodes" policy_fields_ok
examples=("$root"/manifests/examples/*.yaml)
if [ -e "${examples[0]}" ]; then
  for ex in "${examples[@]}"; do
    check "example ${ex#"$root"/} validates against the CRD schema" "$cj" --schemafile "$tmp/ipfsimage.schema.json" "$ex"
  done
else
  not_ok "manifests/examples/*.yaml exist"
fi
cat >"$tmp/bad-example.yaml" <<'EOF'
apiVersion: ipfsimage.dev/v1alpha1
kind: IpfsImage
metadata:
  name: bad
spec:
  cid: not-a-cid
  platfrom: [linux/amd64]
EOF
check_fails "CRD schema rejects a bad IpfsImage (self-check)" "$cj" --schemafile "$tmp/ipfsimage.schema.json" "$tmp/bad-example.yaml"

# --- assertions on the rendered objects -------------------------------------------------------
run_tap "$py" "$here/assertions.py" "default=$tmp/default.yaml" "all-features=$tmp/all.yaml" \
  "crio=$tmp/variant5.yaml" "unchecked-containerd=$tmp/variant6.yaml"
run_tap "$py" "$here/assertions.py" --self-test "$tmp/default.yaml"

# --- values schema ----------------------------------------------------------------------------
check "values.schema.json is a valid JSON Schema" "$cj" --check-metaschema "$chart/values.schema.json"
check_fails_with "helm lint rejects an unknown top-level value (--set bogus=1)" 'bogus' \
  "$helm" lint "$chart" --set bogus=1
check_fails_with "helm template rejects an unknown top-level value (--set bogus=1)" 'bogus' \
  "$helm" template ipfs-image "$chart" --set bogus=1
check_fails_with "values schema rejects an unknown nested value (--set agent.bogus=1)" 'bogus' \
  "$helm" template ipfs-image "$chart" --set agent.bogus=1
check_fails_with "values schema rejects kubo.image.tag=latest" 'tag' \
  "$helm" template ipfs-image "$chart" --set kubo.image.tag=latest
check_fails_with "values schema rejects port 5001 for metrics" 'metricsPort' \
  "$helm" template ipfs-image "$chart" --set agent.metricsPort=5001
check_fails_with "values schema refuses kubo.extraConfig moving the RPC API" 'extraConfig' \
  "$helm" template ipfs-image "$chart" --set-json 'kubo.extraConfig={"Addresses.API":"/ip4/0.0.0.0/tcp/5001"}'
check_fails_with "values schema refuses kubo.extraConfig replacing Addresses" 'extraConfig' \
  "$helm" template ipfs-image "$chart" --set-json 'kubo.extraConfig={"Addresses":{"API":"/ip4/0.0.0.0/tcp/5001"}}'
check_fails_with "values schema refuses kubo.extraConfig moving the gateway" 'extraConfig' \
  "$helm" template ipfs-image "$chart" --set-json 'kubo.extraConfig={"Addresses.Gateway":["/ip4/0.0.0.0/tcp/8080"]}'
check_fails_with "operator.replicas=2 with a PVC fails with a clear message" 'keep operator.replicas: 1' \
  "$helm" template ipfs-image "$chart" --set operator.replicas=2
check_fails_with "runtime=crio with mirrorAllRegistries fails with a clear message" 'no catch-all mirror' \
  "$helm" template ipfs-image "$chart" --set runtime=crio,agent.mirrorAllRegistries=true
check_fails_with "values schema rejects an unknown runtime" 'runtime' \
  "$helm" template ipfs-image "$chart" --set runtime=docker

# --- the Kubo init script, run against a stub `ipfs` -------------------------------------------
kubo_init() { # RENDER CASE-DIR [ENV=VALUE...]: runs configure-kubo.sh from RENDER's ConfigMap
  local render=$1 dir=$2; shift 2
  mkdir -p "$dir/bin" "$dir/repo" "$dir/init"
  "$py" - "$render" "$dir/init" <<'PY' || return 1
import sys, yaml
docs = [d for d in yaml.safe_load_all(open(sys.argv[1])) if d]
cm = next(d for d in docs if d["kind"] == "ConfigMap" and d["metadata"]["name"].endswith("-kubo-init"))
for k, v in cm["data"].items():
    open(f"{sys.argv[2]}/{k}", "w").write(v)
PY
  # The stub records every call; `ipfs init` creates the config file like Kubo does.
  cat >"$dir/bin/ipfs" <<'EOF'
#!/bin/sh
printf '%s\n' "$*" >>"$IPFS_PATH/calls"
if [ "$1" = init ]; then echo '{}' >"$IPFS_PATH/config"; fi
EOF
  chmod +x "$dir/bin/ipfs"
  # The Kubo image's shell and tools are busybox's; with a busybox here, only its applets are on
  # PATH (Debian's has no `install`, for one).
  local shell=(sh) path="$dir/bin:/usr/bin:/bin" bb
  if bb=$(command -v busybox); then
    shell=("$bb" sh) path="$dir/bin:$dir/applets"
    mkdir -p "$dir/applets"
    for applet in $("$bb" --list); do ln -sf "$bb" "$dir/applets/$applet"; done
  fi
  env -i PATH="$path" IPFS_PATH="$dir/repo" "$@" "${shell[@]}" "$dir/init/configure-kubo.sh"
}
kubo_env() { # RENDER COMPONENT: the env of the kubo-init container as NAME=VALUE words
  "$py" - "$@" <<'PY'
import sys, yaml
docs = [d for d in yaml.safe_load_all(open(sys.argv[1])) if d]
kind = "Deployment" if sys.argv[2] == "operator" else "DaemonSet"
w = next(d for d in docs if d["kind"] == kind)
c = next(c for c in w["spec"]["template"]["spec"]["initContainers"] if c["name"] == "kubo-init")
print("\n".join(f"{e['name']}={e['value']}" for e in c["env"] if e["name"] != "IPFS_PATH"))
PY
}
# `set -e` does not apply inside functions run by check (an `if` context): every step says
# `|| fail ...` or `|| return 1`.
has_call() { grep -qxF -- "$2" "$1/repo/calls" || fail "missing call: ipfs $2"; }
kubo_case_default() {
  local d="$tmp/kubo-default" envs
  mapfile -t envs < <(kubo_env "$tmp/default.yaml" agent)
  printf '/key/swarm/psk/1.0.0/\n/base16/\n%064d\n' 1 >"$tmp/default-swarm.key"
  kubo_init "$tmp/default.yaml" "$d" "${envs[@]}" KUBO_SWARM_KEY_FILE="$tmp/default-swarm.key" || return 1
  # a restart: the repo exists
  kubo_init "$tmp/default.yaml" "$d" "${envs[@]}" KUBO_SWARM_KEY_FILE="$tmp/default-swarm.key" || return 1
  [ "$(grep -c '^init' "$d/repo/calls")" = 1 ] || fail "ipfs init ran $(grep -c '^init' "$d/repo/calls") times"
  has_call "$d" 'config Addresses.API /ip4/127.0.0.1/tcp/5001' || return 1
  # The agent's Kubo has a gateway, on loopback only (the agent reads blobs there).
  has_call "$d" 'config --json Addresses.Gateway ["/ip4/127.0.0.1/tcp/5080"]' || return 1
  has_call "$d" 'config --json Bootstrap []' || return 1
  has_call "$d" 'config --json Discovery.MDNS.Enabled false' || return 1
  has_call "$d" 'config --json AutoConf.Enabled false' || return 1
  has_call "$d" 'config --json Routing.DelegatedRouters []' || return 1
  has_call "$d" 'config --json DNS.Resolvers {}' || return 1
  has_call "$d" 'config Routing.Type none' || return 1
  has_call "$d" 'config Datastore.StorageMax 20GB' || return 1
  has_call "$d" 'config Plugins.Plugins.telemetry.Config.Mode off' || return 1
  # A private network by default: the key installed, TCP only.
  has_call "$d" 'config --json Addresses.Swarm ["/ip4/0.0.0.0/tcp/4001","/ip6/::/tcp/4001"]' || return 1
  cmp "$tmp/default-swarm.key" "$d/repo/swarm.key" || fail "the default render does not install the swarm key"
  if grep -v '^config Addresses.API' "$d/repo/calls" | grep -q '/tcp/5001'; then fail "5001 configured elsewhere"; fi
}
kubo_case_public() {
  local d="$tmp/kubo-public" envs
  mapfile -t envs < <(kubo_env "$tmp/public.yaml" agent)
  kubo_init "$tmp/public.yaml" "$d" "${envs[@]}" || return 1
  has_call "$d" 'config --json Addresses.Swarm ["/ip4/0.0.0.0/tcp/4001","/ip6/::/tcp/4001","/ip4/0.0.0.0/udp/4001/quic-v1","/ip6/::/udp/4001/quic-v1"]' || return 1
  if [ -e "$d/repo/swarm.key" ]; then fail "swarm.key without a private network"; fi
  if grep -q 'kind: Secret' "$tmp/public.yaml"; then fail "a Secret rendered with swarmKey.enabled=false"; fi
}
# The generated key is random (two renders differ), never one key for every installation.
swarm_key_of() { "$py" -c 'import sys, yaml; print(next(d for d in yaml.safe_load_all(open(sys.argv[1])) if d and d["kind"] == "Secret")["stringData"]["swarm.key"])' "$1"; }
keys_differ() {
  render_to "$tmp/default-again.yaml" || return 1
  [ "$(swarm_key_of "$tmp/default.yaml")" != "$(swarm_key_of "$tmp/default-again.yaml")" ] || fail "two renders generated the same swarm key"
}
kubo_case_private() {
  local d="$tmp/kubo-private" envs first last
  mapfile -t envs < <(kubo_env "$tmp/all.yaml" operator)
  printf '/key/swarm/psk/1.0.0/\n/base16/\n%064d\n' 0 >"$tmp/swarm.key"
  kubo_init "$tmp/all.yaml" "$d" "${envs[@]}" KUBO_SWARM_KEY_FILE="$tmp/swarm.key" || return 1
  cmp "$tmp/swarm.key" "$d/repo/swarm.key" || return 1
  [ "$(stat -c %a "$d/repo/swarm.key")" = 400 ] || fail "swarm.key mode $(stat -c %a "$d/repo/swarm.key")"
  if grep -q quic "$d/repo/calls"; then fail "QUIC address in a private network"; fi
  has_call "$d" 'config --json Addresses.Gateway []' || return 1 # the operator's Kubo: no gateway
  has_call "$d" 'config Routing.Type dhtclient' || return 1
  has_call "$d" 'config --json Bootstrap ["/dns4/seed.example.com/tcp/4001/p2p/12D3KooWLs7k7pQ4yXzSY4yiB3YSEhGdv6cKw8zTdVNpyBSRhXHQ"]' || return 1
  has_call "$d" 'config --json Swarm.ConnMgr.HighWater 200' || return 1
  has_call "$d" 'config --json Swarm.ResourceMgr.Enabled true' || return 1
  # extraConfig comes after the chart's own settings, so it wins
  first=$(grep -n 'Swarm.ConnMgr.HighWater' "$d/repo/calls" | cut -d: -f1)
  last=$(grep -n 'Datastore.StorageMax' "$d/repo/calls" | cut -d: -f1)
  [ "$first" -gt "$last" ] || fail "extraConfig applied before the chart's settings"
  # turning the private network off again removes the key
  mapfile -t envs < <(kubo_env "$tmp/public.yaml" operator)
  kubo_init "$tmp/public.yaml" "$d" "${envs[@]}" || return 1
  if [ -e "$d/repo/swarm.key" ]; then fail "swarm.key left behind"; fi
}
check "kubo-init script (sh, stub ipfs): API and the agent's gateway on 127.0.0.1, no bootstrap/mDNS/AutoConf, init once, private network" kubo_case_default
check "kubo-init script (sh, stub ipfs): swarmKey.enabled=false: QUIC too, no key, no Secret" kubo_case_public
check "the generated swarm key differs between two renders" keys_differ
check "kubo-init script (sh, stub ipfs): private network key installed 0400, TCP only, extraConfig last, no gateway on the operator's Kubo" kubo_case_private

# --- plain manifests, Dockerfiles, scripts, kind e2e ------------------------------------------
check "manifests/install.yaml equals a fresh render (regenerate: e2e/chart/render-install.sh)" \
  bash -c "'$here/render-install.sh' --stdout | diff -u '$root/manifests/install.yaml' -"
check "shell scripts parse (bash -n)" bash -c "for f in '$here'/*.sh '$root'/e2e/*.sh '$root'/e2e/node/*.sh '$root'/e2e/kind/*.sh '$root'/bench/*.sh; do bash -n \"\$f\" || exit 1; done"
kind_config_ok() {
  "$py" - "$root/e2e/kind/kind-config.yaml" <<'PY'
import sys, yaml
c = yaml.safe_load(open(sys.argv[1]))
assert c["kind"] == "Cluster" and c["apiVersion"] == "kind.x-k8s.io/v1alpha4", c
patches = "\n".join(c["containerdConfigPatches"])
assert 'config_path = "/etc/containerd/certs.d"' in patches, patches
assert sum(1 for n in c["nodes"] if n["role"] == "worker") >= 1, "needs a worker besides the control plane"
PY
}
check "kind cluster config sets containerd config_path, has a worker" kind_config_ok
dockerfiles_ok() {
  local f pkg
  for f in operator agent; do
    pkg=ipfs-image-$([ $f = operator ] && echo operator || echo agent)
    grep -q '^FROM rust:1\.95-bookworm AS build' "$root/docker/$f.Dockerfile" || fail "$f: builder image" || return 1
    grep -q "cargo build --release --locked -p $pkg" "$root/docker/$f.Dockerfile" || fail "$f: cargo build --locked" || return 1
    grep -q '^FROM gcr.io/distroless/cc-debian12' "$root/docker/$f.Dockerfile" || fail "$f: runtime image" || return 1
    grep -q "^ENTRYPOINT \[\"/usr/local/bin/$pkg\"\]" "$root/docker/$f.Dockerfile" || fail "$f: entrypoint" || return 1
  done
  grep -q '^USER 65532:65532' "$root/docker/operator.Dockerfile" || fail "operator: not nonroot" || return 1
  grep -q '^USER 0:0' "$root/docker/agent.Dockerfile" || fail "agent: USER 0:0" || return 1
  # the chart's preStop runs the agent binary by this path
  grep -q '"/usr/local/bin/ipfs-image-agent", "cleanup"' "$chart/templates/agent-daemonset.yaml" || fail "preStop path"
}
check "Dockerfiles: rust:1.95-bookworm build with --locked, distroless runtime, nonroot operator" dockerfiles_ok

echo "$passed passed, $failed failed"
[ "$failed" = 0 ]
