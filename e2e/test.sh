#!/usr/bin/env bash
# All the tests, on a fresh Debian machine (run as root). Every test starts the real daemons it
# needs (Kubo, registry, containerd, etcd and kube-apiserver, and for e2e/node a whole node with
# kubelet) on free loopback ports or inside network namespaces of its own, and stops them itself.
set -euo pipefail
cd "$(dirname "$0")/.."
bash e2e/deps.sh
# Helm (the API-server tests render the chart's RBAC with it) and the chart checks' validators.
bash e2e/chart/deps.sh
cargo fmt --all -- --check
cargo clippy --workspace --all-targets -- -D warnings
cargo build --workspace --all-targets
# The images of the real-node test are made from the release binaries.
cargo build --release --locked -p ipfs-image-operator -p ipfs-image-agent

logs=$(mktemp -d)
trap 'rm -rf "$logs"' EXIT
status=0
cargo test --workspace --all-targets --no-fail-fast 2>&1 | tee "$logs/cargo.log" || status=1
bash e2e/chart/test.sh 2>&1 | tee "$logs/chart.log" || status=1
# The real path on a real node: helm install → IpfsImage → Pods from IPFS (e2e/node/run.sh).
bash e2e/node/run.sh 2>&1 | tee "$logs/node.log" || status=1

# One closing line for the whole run: cargo's per-binary results plus the chart checks.
read -r passed failed < <(
  { grep -E '^test result:' "$logs/cargo.log" | sed -E 's/.* ([0-9]+) passed; ([0-9]+) failed.*/\1 \2/'
    grep -hE '^[0-9]+ passed, [0-9]+ failed$' "$logs/chart.log" "$logs/node.log" | sed -E 's/^([0-9]+) passed, ([0-9]+) failed$/\1 \2/'
  } | awk '{p += $1; f += $2} END {print p + 0, f + 0}')
[ "$failed" -eq 0 ] || status=1
[ "$passed" -gt 0 ] || { echo "no test ran" >&2; status=1; }
echo "total: $passed passed, $failed failed"
exit "$status"
