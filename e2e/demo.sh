#!/usr/bin/env bash
# The main job as a demo on a fresh Debian machine (run as root):
#
#   bash e2e/demo.sh           # a real single-node Kubernetes cluster (kubelet, containerd):
#                              # helm install → IpfsImage → Pods start from IPFS (e2e/node/run.sh)
#   bash e2e/demo.sh --local   # without Kubernetes: registry image → IPFS CID → localhost:5050 →
#                              # containerd pulls (ctr and CRI) → `echo hello` runs
set -euo pipefail
cd "$(dirname "$0")/.."
mode=${1:-node}
timed() { # LABEL CMD…: run CMD, then say how long it took
  local label=$1 start=$SECONDS
  shift
  echo "demo: $label…" >&2
  "$@"
  echo "demo: $label took $((SECONDS - start)) s" >&2
}
timed "installing and building the dependencies (Kubo, etcd, Kubernetes; cached after the first run)" bash e2e/deps.sh
case $mode in
  node | --node)
    timed "installing Helm" bash e2e/chart/deps.sh
    timed "building the operator and the agent (release)" cargo build --release --locked -p ipfs-image-operator -p ipfs-image-agent
    DEMO=1 bash e2e/node/run.sh
    ;;
  --local)
    timed "building the workspace" cargo build --workspace --bins
    cargo run -q -p testkit --bin demo
    ;;
  *) echo "usage: $0 [--local]" >&2; exit 2 ;;
esac
