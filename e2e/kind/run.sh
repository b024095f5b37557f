#!/usr/bin/env bash
# End-to-end test on a real Kubernetes cluster in Docker (kind). Needs docker, kind, kubectl and
# helm on PATH, and internet access (Docker Hub for busybox, crates.io for the image builds).
#
#   e2e/kind/run.sh                  # build, install, test, delete the cluster
#   KEEP_CLUSTER=1 e2e/kind/run.sh   # leave the cluster running afterwards
#   SKIP_BUILD=1 e2e/kind/run.sh     # reuse images already built with IMAGE_TAG
#
# What it does:
#  1. creates a kind cluster (control plane + worker) whose containerd reads registry hosts
#     from /etc/containerd/certs.d (kind-config.yaml);
#  2. builds the operator and agent images (docker/*.Dockerfile) and `kind load`s them;
#  3. installs charts/ipfs-image with helm and waits for the operator and an agent per node;
#  4. checks that the agent wrote containerd hosts.toml files on every node;
#  5. applies an IpfsImage importing docker.io/library/busybox:1.36 and waits for Ready;
#  6. runs a Pod from localhost:5050/ipfs/<CID> on the worker and a Pod from the original
#     reference on the control-plane node; both must complete and print the expected output,
#     the agent on each node must have served bytes, and the original reference must keep its
#     registry digest (digest-preserving mirror);
#  7. uninstalls and checks that containerd's certs.d is as it was before the install;
#  8. deletes the cluster on exit (and prints diagnostics first when something failed).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)

cluster=${KIND_CLUSTER_NAME:-ipfs-image-e2e}
tag=${IMAGE_TAG:-e2e}
ns=ipfs-image
test_ns=ipfs-image-e2e
release=ipfs-image
operator_image=ghcr.io/ipfs-image-operator/ipfs-image-operator:$tag
agent_image=ghcr.io/ipfs-image-operator/ipfs-image-agent:$tag
source_image=docker.io/library/busybox:1.36
certs_d=/etc/containerd/certs.d

log() { printf '\n=== %s\n' "$*" >&2; }
die() { printf 'FAIL: %s\n' "$*" >&2; exit 1; }

for tool in docker kind kubectl helm; do
  command -v "$tool" >/dev/null || die "$tool is not on PATH (needs docker, kind, kubectl, helm)"
done
helm version --short | grep -q '^v3\.' || die "helm 3 is required"
if kind get clusters 2>/dev/null | grep -qx "$cluster"; then
  die "a kind cluster named $cluster exists already: delete it (kind delete cluster --name $cluster) or set KIND_CLUSTER_NAME"
fi

# A kubeconfig of our own: the user's current context is never touched.
work=$(mktemp -d)
export KUBECONFIG=$work/kubeconfig

diagnose() {
  log "diagnostics"
  kubectl get nodes -o wide || true
  kubectl get all,pvc,ipfsimages -A -o wide || true
  kubectl -n "$test_ns" get ipfsimages -o yaml || true
  kubectl -n "$ns" describe pods || true
  kubectl -n "$ns" logs -l "app.kubernetes.io/instance=$release" --all-containers --prefix --tail=200 || true
  kubectl -n "$test_ns" describe pods || true
  kubectl get events -A --sort-by=.lastTimestamp | tail -50 || true
  for node in $(kind get nodes --name "$cluster" 2>/dev/null); do
    echo "--- $node:$certs_d"
    docker exec "$node" sh -c "find $certs_d -type f -exec sh -c 'echo \"# {}\"; cat {}' \\;" || true
  done
}
finish() {
  local rc=$?
  if [ "$rc" != 0 ]; then diagnose; fi
  if [ "${KEEP_CLUSTER:-0}" = 1 ]; then
    log "keeping cluster $cluster (KUBECONFIG=$KUBECONFIG); delete it with: kind delete cluster --name $cluster"
  else
    log "deleting cluster $cluster"
    kind delete cluster --name "$cluster" >/dev/null 2>&1 || true
    rm -rf "$work"
  fi
  if [ "$rc" = 0 ]; then log "PASS"; else log "FAIL (exit $rc)"; fi
  exit "$rc"
}
trap finish EXIT

# node_certs NODE: a fingerprint of containerd's certs.d on a node (files and their hashes).
node_certs() {
  docker exec "$1" sh -c "cd $certs_d 2>/dev/null && find . -type f | sort | xargs -r sha256sum" || true
}

# wait_pod NS NAME TIMEOUT: until the Pod Succeeded; fails early when it Failed.
wait_pod() {
  local pns=$1 name=$2 deadline=$((SECONDS + $3)) phase reason
  while [ "$SECONDS" -lt "$deadline" ]; do
    phase=$(kubectl -n "$pns" get pod "$name" -o jsonpath='{.status.phase}')
    case $phase in
      Succeeded) return 0 ;;
      Failed) die "pod $name failed" ;;
    esac
    reason=$(kubectl -n "$pns" get pod "$name" -o jsonpath='{.status.containerStatuses[0].state.waiting.reason}')
    echo "pod $name: ${phase:-?} ${reason}" >&2
    sleep 5
  done
  die "pod $name did not complete in $3s"
}

# served_bytes NODE: ipfs_image_agent_bytes_served_total summed over labels, from NODE's agent.
served_bytes() {
  local pod
  pod=$(kubectl -n "$ns" get pods -l app.kubernetes.io/component=agent \
    --field-selector "spec.nodeName=$1" -o jsonpath='{.items[0].metadata.name}')
  kubectl get --raw "/api/v1/namespaces/$ns/pods/$pod:9101/proxy/metrics" |
    awk '/^ipfs_image_agent_bytes_served_total/ { sum += $NF } END { printf "%d\n", sum }'
}

log "creating kind cluster $cluster"
kind create cluster --name "$cluster" --config "$here/kind-config.yaml" --kubeconfig "$KUBECONFIG" --wait 120s
control_plane=$(kubectl get nodes -l node-role.kubernetes.io/control-plane -o jsonpath='{.items[0].metadata.name}')
worker=$(kubectl get nodes -l '!node-role.kubernetes.io/control-plane' -o jsonpath='{.items[0].metadata.name}')
if [ -z "$control_plane" ] || [ -z "$worker" ]; then die "expected a control-plane and a worker node"; fi
declare -A certs_before
for node in "$control_plane" "$worker"; do certs_before[$node]=$(node_certs "$node"); done

if [ "${SKIP_BUILD:-0}" != 1 ]; then
  log "building images (first build compiles the workspace: several minutes)"
  DOCKER_BUILDKIT=1 docker build -f "$root/docker/operator.Dockerfile" -t "$operator_image" "$root"
  DOCKER_BUILDKIT=1 docker build -f "$root/docker/agent.Dockerfile" -t "$agent_image" "$root"
fi
log "loading images into the cluster"
kind load docker-image --name "$cluster" "$operator_image" "$agent_image"

log "installing the chart"
kubectl create namespace "$ns"
# The agent needs hostNetwork and hostPath volumes.
kubectl label namespace "$ns" pod-security.kubernetes.io/enforce=privileged
# A private IPFS network: every Kubo gets the same swarm.key, so the images that flow below
# prove the key works end to end (a node without it could not fetch a block).
swarm_key="$work/swarm.key"
printf '/key/swarm/psk/1.0.0/\n/base16/\n%s\n' "$(od -vN 32 -An -tx1 /dev/urandom | tr -d ' \n')" >"$swarm_key"
helm install "$release" "$root/charts/ipfs-image" --namespace "$ns" \
  --set operator.image.tag="$tag" --set operator.image.pullPolicy=Never \
  --set agent.image.tag="$tag" --set agent.image.pullPolicy=Never \
  --set operator.persistence.size=2Gi --set operator.kubo.storageMax=1GB \
  --set swarmKey.enabled=true --set-file swarmKey.key="$swarm_key" \
  --set "agent.mirrorNamespaces={$ns,$test_ns}" \
  --wait --timeout 10m
kubectl -n "$ns" rollout status deployment/"$release"-operator --timeout=5m
kubectl -n "$ns" rollout status daemonset/"$release"-agent --timeout=5m
agents=$(kubectl -n "$ns" get pods -l app.kubernetes.io/component=agent -o name | wc -l)
[ "$agents" = 2 ] || die "expected an agent on each of the 2 nodes, found $agents"

log "checking peering: every Pod published its Kubo peer, every agent's Kubo is connected to the operator's"
operator_pod=$(kubectl -n "$ns" get pods -l app.kubernetes.io/component=operator -o jsonpath='{.items[0].metadata.name}')
peer_id() { # POD: the peer ID its ipfsimage.dev/peer annotation publishes
  local json
  for _ in $(seq 60); do
    json=$(kubectl -n "$ns" get pod "$1" -o jsonpath='{.metadata.annotations.ipfsimage\.dev/peer}')
    if [ -n "$json" ]; then python3 -c 'import json,sys; print(json.loads(sys.argv[1])["id"])' "$json"; return; fi
    sleep 2
  done
  die "pod $1 never published its IPFS peer"
}
operator_peer=$(peer_id "$operator_pod")
for pod in $(kubectl -n "$ns" get pods -l app.kubernetes.io/component=agent -o jsonpath='{.items[*].metadata.name}'); do
  peer_id "$pod" >/dev/null
  connected=0
  for _ in $(seq 60); do
    if kubectl -n "$ns" exec "$pod" -c kubo -- ipfs swarm peers | grep -q "/p2p/$operator_peer\$"; then connected=1; break; fi
    sleep 2
  done
  [ "$connected" = 1 ] || die "$pod: its Kubo is not connected to the operator's ($operator_peer)"
  kubectl -n "$ns" exec "$pod" -c kubo -- sh -c 'test -s "$IPFS_PATH/swarm.key"' ||
    die "$pod: no swarm.key in its Kubo repo"
done

log "checking containerd hosts.toml on every node"
for node in "$control_plane" "$worker"; do
  docker exec "$node" cat "$certs_d/docker.io/hosts.toml" | grep -q '127.0.0.1:5050' ||
    die "$node: $certs_d/docker.io/hosts.toml does not point at the mirror"
  docker exec "$node" test -f "$certs_d/localhost:5050/hosts.toml" ||
    die "$node: no $certs_d/localhost:5050/hosts.toml"
done

log "importing $source_image"
kubectl create namespace "$test_ns"
kubectl apply -f - <<YAML
apiVersion: ipfsimage.dev/v1alpha1
kind: IpfsImage
metadata:
  name: busybox
  namespace: $test_ns
spec:
  source: $source_image
YAML
kubectl -n "$test_ns" wait ipfsimage/busybox --for=condition=Ready --timeout=10m
kubectl -n "$test_ns" get ipfsimages -o wide
cid=$(kubectl -n "$test_ns" get ipfsimage busybox -o jsonpath='{.status.cid}')
image=$(kubectl -n "$test_ns" get ipfsimage busybox -o jsonpath='{.status.image}')
source_digest=$(kubectl -n "$test_ns" get ipfsimage busybox -o jsonpath='{.status.sourceDigest}')
[[ $cid =~ ^b[a-z2-7]{20,}$ ]] || die "status.cid is not a base32 CIDv1: '$cid'"
[ "$image" = "localhost:5050/ipfs/$cid" ] || die "status.image is '$image', want localhost:5050/ipfs/$cid"
[[ $source_digest =~ ^sha256:[0-9a-f]{64}$ ]] || die "status.sourceDigest is '$source_digest'"
echo "CID $cid, source digest $source_digest" >&2

# run_pod NAME NODE IMAGE: a busybox Pod on NODE that prints two lines and exits.
run_pod() {
  kubectl apply -f - <<YAML
apiVersion: v1
kind: Pod
metadata:
  name: $1
  namespace: $test_ns
spec:
  nodeName: $2
  restartPolicy: Never
  tolerations:
    - operator: Exists
  containers:
    - name: main
      image: $3
      imagePullPolicy: Always
      command: ["sh", "-c", "echo ipfs-image-e2e-ok; busybox | head -n 1"]
YAML
}
# check_pod NAME: completed with the expected output.
check_pod() {
  wait_pod "$test_ns" "$1" 300
  local out
  out=$(kubectl -n "$test_ns" logs "$1")
  echo "$1: $out" >&2
  grep -qx 'ipfs-image-e2e-ok' <<<"$out" || die "$1: unexpected output"
  grep -q '^BusyBox v1\.36' <<<"$out" || die "$1: not busybox 1.36"
}

log "running a Pod from $image on $worker"
before=$(served_bytes "$worker")
run_pod from-ipfs "$worker" "$image"
check_pod from-ipfs
after=$(served_bytes "$worker")
[ "$after" -gt "$before" ] || die "the agent on $worker served no bytes for $image"

log "running a Pod from $source_image on $control_plane (mirror mode)"
before=$(served_bytes "$control_plane")
run_pod from-mirror "$control_plane" "$source_image"
check_pod from-mirror
after=$(served_bytes "$control_plane")
[ "$after" -gt "$before" ] || die "the agent on $control_plane served nothing: $source_image was pulled upstream"
image_id=$(kubectl -n "$test_ns" get pod from-mirror -o jsonpath='{.status.containerStatuses[0].imageID}')
[ "${image_id##*@}" = "$source_digest" ] ||
  die "from-mirror runs $image_id, not the original digest $source_digest"

log "uninstalling"
kubectl delete namespace "$test_ns" --wait=true --timeout=5m
helm uninstall "$release" --namespace "$ns" --wait --timeout 5m
kubectl -n "$ns" wait --for=delete pod -l app.kubernetes.io/component=agent --timeout=2m || true
for node in "$control_plane" "$worker"; do
  [ "$(node_certs "$node")" = "${certs_before[$node]}" ] ||
    die "$node: $certs_d differs from before the install: $(node_certs "$node")"
done
