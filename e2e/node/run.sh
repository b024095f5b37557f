#!/usr/bin/env bash
# The real path on a real single-node Kubernetes cluster on this machine (no Docker; run as
# root on Debian after e2e/deps.sh): `helm install` → IpfsImage → Pods start from IPFS.
#
#   bash e2e/node/run.sh           # the test: each step is a check; prints "N passed, M failed"
#   DEMO=1 bash e2e/node/run.sh    # the same steps, printing what a user would look at
#   KEEP_NODE=1 …                  # leave the node running at the end (prints how to reach it)
# Steps (each asserted on what the API server, containerd or Kubo report):
#  1. helm install the chart, unchanged, with values for image repositories and node paths only;
#     the operator Deployment and the agent DaemonSet become Ready, each with its Kubo;
#  2. an IpfsImage for an image in the source registry becomes Ready with its CID;
#  3. a Pod from localhost:5050/ipfs/<CID> runs to completion and prints what it should;
#  4. with the source registry stopped, a Deployment using the original reference starts,
#     pulled through the node's mirror, with the original digest;
#  5. a Pod whose image no IpfsImage holds is pulled from upstream through the fallback;
#  6. a Prometheus scraping the agent and the operator as the chart's ServiceMonitors say (it
#     ran since step 1) answers every query of every panel of the chart's dashboard;
#  7. deleting the IpfsImage unpins it from the operator's Kubo;
#  8. helm uninstall leaves containerd's hosts.toml files as they were before the install.
#
#   DASHBOARD_PNG=DIR …            # also draw the dashboard's rows from that Prometheus to DIR
set -euo pipefail
NODE_ROOT=$(cd "$(dirname "$0")/../.." && pwd)
NODE_BIN=$NODE_ROOT/e2e/.deps/bin
HELM=$NODE_ROOT/e2e/.deps/helm/bin/helm
# shellcheck source=node.sh
. "$NODE_ROOT/e2e/node/node.sh"
# shellcheck source=images.sh
. "$NODE_ROOT/e2e/node/images.sh"

demo=${DEMO:-0}
ns=ipfs-image
app_ns=demo
release=ipfs-image
tag=node-e2e
passed=0
failed=0
current_step=

# show CMD…: in the demo, print the command and what it prints (what a user would look at).
show() {
  if [ "$demo" = 1 ]; then
    printf '\n$ %s\n' "$*" >&2
    "$@" >&2
  fi
}
step() {
  current_step=$1
  node_log "step $1"
  step_start=$SECONDS
}
step_times=()
step_ok() {
  passed=$((passed + 1))
  echo "ok: step $current_step ($((SECONDS - step_start)) s)" >&2
  step_times+=("$(printf '%4d s  %s' "$((SECONDS - step_start))" "$current_step")")
  current_step=
}
h() { in_node "$HELM" --kubeconfig "$NODE_WORK/pki/admin.kubeconfig" "$@"; }

diagnose() {
  node_log "diagnostics"
  k get nodes -o wide || true
  k get all,ipfsimages -A -o wide || true
  k -n "$app_ns" get ipfsimages -o yaml || true
  k -n "$ns" describe pods || true
  k -n "$ns" logs -l "app.kubernetes.io/instance=$release" --all-containers --prefix --tail=100 || true
  k -n "$app_ns" describe pods || true
  k get events -A --sort-by=.lastTimestamp | tail -40 || true
  local f
  for f in kubelet containerd kube-apiserver kube-controller-manager; do
    echo "--- $f.log (tail)"; tail -n 30 "$NODE_WORK/logs/$f.log" 2>/dev/null || true
  done
  find "$NODE_WORK/etc-containerd/certs.d" -type f -exec sh -c 'echo "# $1"; cat "$1"' _ {} \; || true
}

finish() {
  local rc=$?
  if [ -n "$current_step" ]; then
    failed=$((failed + 1))
    echo "FAIL: step $current_step" >&2
  fi
  # A failure outside the steps (the node, the images) counts as one failed check too.
  [ "$rc" = 0 ] || [ "$failed" -gt 0 ] || failed=1
  [ "$rc" = 0 ] || diagnose
  if [ "${KEEP_NODE:-0}" = 1 ] && [ -n "${NODE_NETNS:-}" ]; then
    node_log "keeping the node: nsenter --net=/run/netns/$NODE_NETNS --mount=$NODE_WORK/mnt/ns $NODE_BIN/kubectl --kubeconfig $NODE_WORK/pki/admin.kubeconfig get pods -A"
  else
    node_log "stopping the node"
    node_down
    rm -rf "$NODE_WORK"
  fi
  if [ ${#step_times[@]} -gt 0 ]; then
    echo "steps (time, step):" >&2
    printf '  %s\n' "${step_times[@]}" >&2
  fi
  echo "$passed passed, $failed failed"
  [ "$rc" = 0 ] && [ "$failed" = 0 ] || exit 1
}

# wait_pod NS NAME SECONDS: until the Pod Succeeded (fails at once when it Failed).
wait_pod() {
  local deadline=$((SECONDS + $3)) phase
  while :; do
    phase=$(k -n "$1" get pod "$2" -o jsonpath='{.status.phase}')
    case $phase in
      Succeeded) return 0 ;;
      Failed) node_die "pod $2 failed" ;;
    esac
    [ "$SECONDS" -lt "$deadline" ] || node_die "pod $2 did not complete in $3 s (phase ${phase:-none})"
    sleep 1
  done
}

# agent_metric NAME LABELS: a counter of the node's agent (0 when absent).
agent_metric() {
  in_net curl -fsS "http://127.0.0.1:9101/metrics" |
    awk -v m="$1{$2}" 'index($0, m) == 1 {print $NF; found = 1} END {if (!found) print 0}'
}

# certs_fingerprint: every file under containerd's config_path with its hash.
certs_fingerprint() { (cd "$NODE_WORK/etc-containerd/certs.d" && find . -type f | sort | xargs -r sha256sum); }

# run_pod NAME IMAGE COMMAND: a Pod that runs COMMAND once.
run_pod() {
  k apply -f - >/dev/null <<YAML
apiVersion: v1
kind: Pod
metadata: {name: $1, namespace: $app_ns}
spec:
  restartPolicy: Never
  containers:
    - name: main
      image: $2
      imagePullPolicy: Always
      command: ["sh", "-c", "$3"]
YAML
}

[ "$(id -u)" = 0 ] || node_die "run as root (network namespaces, mounts, cgroups)"
for tool in "$NODE_BIN/kubelet" "$NODE_BIN/kube-apiserver" "$NODE_BIN/etcd" "$NODE_BIN/ipfs" "$HELM" \
  containerd runc buildah docker-registry nsenter unshare ip gcc "$NODE_BIN/prometheus"; do
  command -v "$tool" >/dev/null || node_die "$tool is missing: run bash e2e/deps.sh and bash e2e/chart/deps.sh"
done
for bin in ipfs-image-operator ipfs-image-agent; do
  [ -x "$NODE_ROOT/target/release/$bin" ] || node_die "target/release/$bin is missing: cargo build --release -p $bin"
done

NODE_WORK=$(mktemp -d /var/tmp/ipfs-image-node.XXXXXX)
trap finish EXIT
started=$SECONDS
node_up
echo "node: up in $((SECONDS - started)) s" >&2
show k get nodes -o wide

node_log "images: building the operator, agent and Kubo images with buildah"
images_start=$SECONDS
build_images "$tag"
echo "images: built and pushed in $((SECONDS - images_start)) s" >&2
chart_kubo_tag=$(awk '/^kubo:/ {k=1} k && /^    tag:/ {print $2; exit}' "$NODE_ROOT/charts/ipfs-image/values.yaml")
[ "$chart_kubo_tag" = "$KUBO_TAG" ] || node_die "the Kubo image is $KUBO_TAG but the chart ships $chart_kubo_tag"

kubelet_version=$(k get node "$NODE_NAME" -o jsonpath='{.status.nodeInfo.kubeletVersion}')
runtime_version=$(k get node "$NODE_NAME" -o jsonpath='{.status.nodeInfo.containerRuntimeVersion}')
echo "versions: kubelet $kubelet_version, runtime $runtime_version, kube-apiserver $(k version -o json | python3 -c 'import json,sys; print(json.load(sys.stdin)["serverVersion"]["gitVersion"])'), Kubo $KUBO_TAG" >&2
[[ $kubelet_version == v1.* ]] || node_die "kubelet reports version '$kubelet_version'"

certs_before=$(certs_fingerprint)

step "1: helm install; the operator Deployment and the agent DaemonSet become Ready, each with its Kubo"
cat >"$NODE_WORK/values.yaml" <<YAML
# Image repositories (this node's registry), this node's paths, and the source registry
# (plain HTTP, mirrored); nothing else.
operator:
  image: {repository: $OPERATOR_REPO, tag: $tag}
  persistence: {enabled: false}
  plainHttpRegistries: ["$SOURCE_REGISTRY"]
agent:
  image: {repository: $AGENT_REPO, tag: $tag}
  registries: ["$SOURCE_REGISTRY=http://$SOURCE_REGISTRY"]
  # The demo's IpfsImages live in $app_ns: the administrator lets them answer references.
  mirrorNamespaces: ["$ns", "$app_ns"]
  statePath: $NODE_WORK/agent-state
  kubo:
    repo: {hostPath: $NODE_WORK/agent-kubo}
kubo:
  image: {repository: $KUBO_REPO}
containerd:
  configPath: $NODE_WORK/etc-containerd/certs.d
  configFile: $NODE_WORK/etc-containerd/config.toml
# Scraped by this test's Prometheus (step 6), often enough to see a short run.
metrics:
  serviceMonitor: {enabled: true, interval: 5s, scrapeTimeout: 4s}
  grafanaDashboard: {enabled: true}
YAML
show cat "$NODE_WORK/values.yaml"
# The ServiceMonitor kind, as a cluster with prometheus-operator has it.
k apply -f "$NODE_ROOT/e2e/node/servicemonitor-crd.yaml" >/dev/null
k wait crd/servicemonitors.monitoring.coreos.com --for=condition=Established --timeout=60s >/dev/null
h install "$release" "$NODE_ROOT/charts/ipfs-image" --namespace "$ns" --create-namespace \
  --values "$NODE_WORK/values.yaml" --wait --timeout 3m >/dev/null
k -n "$ns" rollout status "deployment/$release-operator" --timeout=2m >/dev/null
k -n "$ns" rollout status "daemonset/$release-agent" --timeout=2m >/dev/null
for component in operator agent; do
  ready=$(k -n "$ns" get pods -l "app.kubernetes.io/component=$component" \
    -o jsonpath='{range .items[*]}{range .status.containerStatuses[*]}{.name}={.ready} {end}{end}')
  echo "$component: $ready" >&2
  grep -q 'kubo=true' <<<"$ready" || node_die "$component: its Kubo container is not ready ($ready)"
  ! grep -q '=false' <<<"$ready" || node_die "$component: a container is not ready ($ready)"
done
operator_pod=$(k -n "$ns" get pods -l app.kubernetes.io/component=operator -o jsonpath='{.items[0].metadata.name}')
pod_kubo=$(k -n "$ns" exec "$operator_pod" -c kubo -- ipfs version --number)
[ "v${pod_kubo#v}" = "$KUBO_TAG" ] || node_die "the operator's Kubo is $pod_kubo, want $KUBO_TAG"
grep -q "127.0.0.1:5050" "$NODE_WORK/etc-containerd/certs.d/$SOURCE_REGISTRY/hosts.toml" ||
  node_die "the agent did not point $SOURCE_REGISTRY at the mirror"
# The agent read this node's containerd config and found that containerd uses the mirror.
agent_pod=$(k -n "$ns" get pods -l app.kubernetes.io/component=agent -o jsonpath='{.items[0].metadata.name}')
configure_log=$(k -n "$ns" logs "$agent_pod" -c configure-containerd)
grep -q "containerd reads the mirror's hosts.toml" <<<"$configure_log" ||
  node_die "configure-containerd did not check containerd's config: $configure_log"
! grep -q "MIRROR NOT USED" <<<"$configure_log" || node_die "configure-containerd: $configure_log"
# A private IPFS network by default: the chart generated a key, both Kubos run with it, and on
# the node's disk only Kubo's user can read it.
swarm_secret=$release-swarm-key
swarm_key=$(k -n "$ns" get secret "$swarm_secret" -o jsonpath='{.data.swarm\.key}' | base64 -d)
grep -Eq '^[0-9a-f]{64}$' <<<"$(sed -n 3p <<<"$swarm_key")" || node_die "the generated swarm key is malformed: $swarm_key"
k -n "$ns" exec "$operator_pod" -c kubo -- test -f /data/ipfs/swarm.key || node_die "the operator's Kubo has no swarm.key"
key_mode=$(stat -c '%a %u' "$NODE_WORK/agent-kubo/swarm.key") || node_die "the agent's Kubo repo has no swarm.key"
[ "$key_mode" = "400 1000" ] || node_die "the agent's swarm.key is mode/uid $key_mode, want 400 1000"
repo_mode=$(stat -c '%a' "$NODE_WORK/agent-kubo")
[ "$repo_mode" = 700 ] || node_die "the agent's Kubo repo is mode $repo_mode, want 700"
cmp -s <(printf '%s\n' "$swarm_key") "$NODE_WORK/agent-kubo/swarm.key" || node_die "the agent's swarm.key is not the Secret's"
# An upgrade keeps the key (looked up, not generated again), so no Pod is rolled for it.
h upgrade "$release" "$NODE_ROOT/charts/ipfs-image" --namespace "$ns" --reuse-values --wait --timeout 3m >/dev/null
[ "$(k -n "$ns" get secret "$swarm_secret" -o jsonpath='{.data.swarm\.key}' | base64 -d)" = "$swarm_key" ] ||
  node_die "helm upgrade replaced the swarm key"
[ "$(k -n "$ns" get pods -l app.kubernetes.io/component=operator -o jsonpath='{.items[0].metadata.name}')" = "$operator_pod" ] ||
  node_die "helm upgrade rolled the operator Pod"
echo "private network: generated key kept across helm upgrade, agent's swarm.key $key_mode" >&2
# The agent reads blobs through its Kubo's loopback gateway (found through Kubo's RPC API).
agent_uses_gateway() { grep -q "reading blobs through Kubo's gateway" <<<"$(k -n "$ns" logs "$agent_pod" -c agent)"; }
wait_for "the agent to read blobs through Kubo's gateway" 60 agent_uses_gateway
show k -n "$ns" get deployments,daemonsets,pods -o wide
# A Prometheus from now on, with the scrape config the installed ServiceMonitors imply.
prom_url=http://127.0.0.1:9390
k -n "$ns" get servicemonitors -o json |
  python3 "$NODE_ROOT/e2e/dashboard/prometheus.py" scrape-config --kubeconfig "$NODE_WORK/pki/admin.kubeconfig" \
    >"$NODE_WORK/prometheus.yml"
service_monitors=$(k -n "$ns" get servicemonitors -o name | wc -l)
[ "$service_monitors" -ge 2 ] || node_die "the chart installed $service_monitors ServiceMonitors, want the operator's and the agent's"
start_daemon prometheus "$NODE_BIN/prometheus" --config.file="$NODE_WORK/prometheus.yml" \
  --storage.tsdb.path="$NODE_WORK/prometheus" --web.listen-address=127.0.0.1:9390
wait_for "Prometheus" 60 in_net curl -fsS "$prom_url/-/ready"
# Both targets scraped before the steps that move the counters.
in_net python3 "$NODE_ROOT/e2e/dashboard/prometheus.py" wait-up --prometheus "$prom_url" \
  --jobs "$service_monitors" --timeout 120 >&2
step_ok

step "2: an IpfsImage becomes Ready with its CID"
source_image=$SOURCE_REGISTRY/demo/busybox:1
k create namespace "$app_ns" >/dev/null
k apply -f - >/dev/null <<YAML
apiVersion: ipfsimage.dev/v1alpha1
kind: IpfsImage
metadata: {name: busybox, namespace: $app_ns}
spec:
  source: $source_image
  # Pinned on the node before any Pod asks; Ready once the node holds it.
  prefetch: {nodeSelector: {}}
  minReplicas: 1
YAML
k -n "$app_ns" wait ipfsimage/busybox --for=condition=Ready --timeout=5m >/dev/null
cid=$(k -n "$app_ns" get ipfsimage busybox -o jsonpath='{.status.cid}')
image=$(k -n "$app_ns" get ipfsimage busybox -o jsonpath='{.status.image}')
source_digest=$(k -n "$app_ns" get ipfsimage busybox -o jsonpath='{.status.sourceDigest}')
phase=$(k -n "$app_ns" get ipfsimage busybox -o jsonpath='{.status.phase}')
# The pinned root: the OCI layout directory that holds the image (status.cid is its index).
layout_cid=$(k -n "$app_ns" get ipfsimage busybox -o jsonpath='{.status.layoutCid}')
[ "$phase" = Ready ] || node_die "phase is '$phase'"
[[ $cid =~ ^b[a-z2-7]{20,}$ ]] || node_die "status.cid is not a base32 CIDv1: '$cid'"
[ "$image" = "localhost:5050/ipfs/$cid" ] || node_die "status.image is '$image'"
registry_digest=$(in_net curl -fsSI -H 'Accept: application/vnd.oci.image.manifest.v1+json' \
  "http://$SOURCE_REGISTRY/v2/demo/busybox/manifests/1" | awk -F': ' 'tolower($1) == "docker-content-digest" {print $2}' | tr -d '\r')
[ "$source_digest" = "$registry_digest" ] || node_die "status.sourceDigest $source_digest is not the registry's $registry_digest"
# What a person reads: kubectl get's columns (the CRD's printer columns, as the API server
# returns them in its Table), and their values.
size_text=$(k -n "$app_ns" get ipfsimage busybox -o jsonpath='{.status.summary.size}')
[[ $size_text =~ ^[0-9.]+(B|KiB|MiB)$ ]] || node_die "status.summary.size is '$size_text'"
columns() { tr -s ' ' <<<"$1" | sed -n "$2p"; }
table=$(k -n "$app_ns" get ipfsimg)
[ "$(columns "$table" 1)" = "NAME SOURCE CID PHASE SIZE NODES AGE" ] || node_die "kubectl get ipfsimg shows:
$table"
[[ "$(columns "$table" 2)" == "busybox $source_image $cid Ready $size_text 1/1 "* ]] || node_die "kubectl get ipfsimg shows:
$table"
table=$(k -n "$app_ns" get ipfsimg -o wide)
[ "$(columns "$table" 1)" = "NAME SOURCE CID PHASE SIZE NODES AGE PLATFORMS CHECKED IMAGE" ] ||
  node_die "kubectl get ipfsimg -o wide shows:
$table"
wide_row=$(columns "$table" 2)
[[ $wide_row == *" $image" && $wide_row == *linux/* ]] || node_die "kubectl get ipfsimg -o wide shows:
$table"
show k -n "$app_ns" get ipfsimg -o wide
step_ok

step "3: a Pod from localhost:5050/ipfs/<CID> runs to completion"
served_before=$(agent_metric ipfs_image_agent_bytes_served_total '')
run_pod from-ipfs "$image" "echo hello from IPFS; cat /proc/1/cgroup >/dev/null"
wait_pod "$app_ns" from-ipfs 180
out=$(k -n "$app_ns" logs from-ipfs)
[ "$out" = "hello from IPFS" ] || node_die "from-ipfs printed '$out'"
pod_image=$(k -n "$app_ns" get pod from-ipfs -o jsonpath='{.status.containerStatuses[0].image}')
# A reference without a tag is `:latest` to kubelet and containerd.
[ "$pod_image" = "$image:latest" ] || node_die "from-ipfs runs $pod_image"
# (Whole output first: `ctr … | grep -q` under pipefail fails when grep stops reading and ctr,
# still writing, dies of SIGPIPE; seen on containerd 2.4.)
grep -qx "$image:latest" <<<"$(node_ctr -n k8s.io images ls -q)" || node_die "containerd does not hold $image"
show k -n "$app_ns" logs from-ipfs
step_ok

step "4: with the source registry stopped, a Deployment with the original reference starts through the mirror"
registry_stop source
! in_net curl -fsS --max-time 2 "http://$SOURCE_REGISTRY/v2/" >/dev/null 2>&1 || node_die "the source registry still answers"
hits_before=$(agent_metric ipfs_image_agent_mirror_requests_total "registry=\"$SOURCE_REGISTRY\",result=\"hit\"")
k -n "$app_ns" apply -f - >/dev/null <<YAML
apiVersion: apps/v1
kind: Deployment
metadata: {name: original-ref}
spec:
  replicas: 1
  selector: {matchLabels: {app: original-ref}}
  template:
    metadata: {labels: {app: original-ref}}
    spec:
      # sleep as PID 1 ignores SIGTERM: do not wait 30 s for it at the end.
      terminationGracePeriodSeconds: 1
      containers:
        - name: main
          image: $source_image
          imagePullPolicy: Always
          command: ["sh", "-c", "echo started from the mirror; exec sleep 3600"]
YAML
k -n "$app_ns" rollout status deployment/original-ref --timeout=3m >/dev/null
image_id=$(k -n "$app_ns" get pods -l app=original-ref -o jsonpath='{.items[0].status.containerStatuses[0].imageID}')
[ "${image_id##*@}" = "$source_digest" ] || node_die "the Deployment runs $image_id, not $source_image@$source_digest"
hits_after=$(agent_metric ipfs_image_agent_mirror_requests_total "registry=\"$SOURCE_REGISTRY\",result=\"hit\"")
[ "$hits_after" -gt "$hits_before" ] || node_die "the agent's mirror answered no request for $SOURCE_REGISTRY"
show k -n "$app_ns" get pods -l app=original-ref -o jsonpath='{.items[0].status.containerStatuses[0].imageID}{"\n"}'
step_ok

step "5: an image no IpfsImage holds comes from upstream through the fallback"
registry_start source "$SOURCE_REGISTRY"
misses_before=$(agent_metric ipfs_image_agent_mirror_requests_total "registry=\"$SOURCE_REGISTRY\",result=\"miss\"")
run_pod upstream-only "$SOURCE_REGISTRY/demo/upstream-only:1" "cat /upstream-only.txt"
wait_pod "$app_ns" upstream-only 180
out=$(k -n "$app_ns" logs upstream-only)
[ "$out" = "pulled from upstream, never imported" ] || node_die "upstream-only printed '$out'"
misses_after=$(agent_metric ipfs_image_agent_mirror_requests_total "registry=\"$SOURCE_REGISTRY\",result=\"miss\"")
[ "$misses_after" -gt "$misses_before" ] || node_die "the pull did not ask the mirror first (no miss counted)"
upstream_digest=$(in_net curl -fsSI -H 'Accept: application/vnd.oci.image.manifest.v1+json' \
  "http://$SOURCE_REGISTRY/v2/demo/upstream-only/manifests/1" | awk -F': ' 'tolower($1) == "docker-content-digest" {print $2}' | tr -d '\r')
image_id=$(k -n "$app_ns" get pod upstream-only -o jsonpath='{.status.containerStatuses[0].imageID}')
[ "${image_id##*@}" = "$upstream_digest" ] || node_die "upstream-only runs $image_id, not the registry's $upstream_digest"
show k -n "$app_ns" logs upstream-only
step_ok

step "6: a real Prometheus answers every query of the installed dashboard, after a pull and an import"
# The dashboard as installed (the chart's ConfigMap), not the file in the work tree.
k -n "$ns" get configmap "$release-dashboard" -o jsonpath='{.data.ipfs-image\.json}' >"$NODE_WORK/dashboard.json"
in_net python3 "$NODE_ROOT/e2e/dashboard/prometheus.py" check --prometheus "$prom_url" \
  --dashboard "$NODE_WORK/dashboard.json" --jobs "$service_monitors" --window 10m --timeout 120 >&2
# What failed along the way, as the operator counted it (informational: retries are normal).
in_net curl -fsS "$prom_url/api/v1/query" --data-urlencode 'query=sum by (reason) (ipfs_image_operator_reconcile_failures_total) > 0' |
  python3 -c 'import json,sys; r=json.load(sys.stdin)["data"]["result"]; print("reconcile failures so far:", {x["metric"]["reason"]: x["value"][1] for x in r} or "none")' >&2
if [ -n "${DASHBOARD_PNG:-}" ]; then
  mkdir -p "$DASHBOARD_PNG"
  # Debian's python3 (e2e/deps.sh installs its matplotlib), not whatever python3 is first in PATH.
  in_net /usr/bin/python3 "$NODE_ROOT/e2e/dashboard/prometheus.py" render --prometheus "$prom_url" \
    --dashboard "$NODE_WORK/dashboard.json" --out "$(cd "$DASHBOARD_PNG" && pwd)" --minutes $(((SECONDS - started) / 60 + 1)) >&2
fi
step_ok

step "7: deleting the IpfsImage unpins it"
pinned() { grep -qx "$layout_cid" <<<"$(k -n "$ns" exec "$operator_pod" -c kubo -- ipfs pin ls --type=recursive --quiet)"; }
pinned || node_die "$layout_cid (the layout of $cid) is not pinned in the operator's Kubo before the delete"
k -n "$app_ns" delete ipfsimage busybox --wait=true --timeout=2m >/dev/null
deadline=$((SECONDS + 60))
while pinned; do
  [ "$SECONDS" -lt "$deadline" ] || node_die "$layout_cid is still pinned 60 s after the IpfsImage was deleted"
  sleep 1
done
show k -n "$app_ns" get ipfsimg
step_ok

step "8: the README's uninstall order ends with no finalizer left, and leaves containerd's hosts.toml files as they were"
# IpfsImages in two namespaces, each holding the operator's finalizer: what would hang if the
# operator went first.
for where in "$app_ns" "$ns"; do
  k apply -f - >/dev/null <<YAML
apiVersion: ipfsimage.dev/v1alpha1
kind: IpfsImage
metadata: {name: left-behind, namespace: $where}
spec: {source: $source_image}
YAML
done
deadline=$((SECONDS + 60))
for where in "$app_ns" "$ns"; do
  until [[ $(k -n "$where" get ipfsimg left-behind -o jsonpath='{.metadata.finalizers}') == *ipfsimage.dev/* ]]; do
    [ "$SECONDS" -lt "$deadline" ] || node_die "the operator put no finalizer on $where/left-behind in 60 s"
    sleep 1
  done
done
# The README's sequence, verbatim but for a bound on each wait.
in_node timeout 120 "$NODE_BIN/kubectl" --kubeconfig "$NODE_WORK/pki/admin.kubeconfig" delete ipfsimages --all --all-namespaces --wait >/dev/null ||
  node_die "kubectl delete ipfsimages --all --all-namespaces --wait did not end in 120 s: $(k get ipfsimg -A -o jsonpath='{range .items[*]}{.metadata.namespace}/{.metadata.name} {.metadata.finalizers}{"\n"}{end}')"
[ -z "$(k get ipfsimg -A -o name)" ] || node_die "IpfsImages are left after the delete"
h uninstall "$release" --namespace "$ns" --wait --timeout 3m >/dev/null
in_node timeout 60 "$NODE_BIN/kubectl" --kubeconfig "$NODE_WORK/pki/admin.kubeconfig" delete crd ipfsimages.ipfsimage.dev --wait >/dev/null ||
  node_die "kubectl delete crd ipfsimages.ipfsimage.dev did not end in 60 s"
k delete namespace "$app_ns" --wait=true --timeout=2m >/dev/null
k -n "$ns" wait --for=delete pod -l app.kubernetes.io/component=agent --timeout=2m >/dev/null 2>&1 || true
[ -z "$(k -n "$ns" get pods -o name)" ] || node_die "pods are left in $ns after the uninstall"
certs_after=$(certs_fingerprint)
[ "$certs_after" = "$certs_before" ] || node_die "containerd's certs.d differs: before
$certs_before
after
$certs_after"
show certs_fingerprint
step_ok
echo "node: all steps in $((SECONDS - started)) s" >&2
