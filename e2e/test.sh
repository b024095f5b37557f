#!/usr/bin/env bash
# All the tests, on a fresh Debian machine (run as root). Every test starts the real daemons it
# needs (Kubo, registry, containerd, etcd and kube-apiserver, and for e2e/node a whole node with
# kubelet) on free loopback ports or inside network namespaces of its own, and stops them itself.
set -euo pipefail
cd "$(dirname "$0")/.."
logs=$(mktemp -d)
go_tools_pid=
cleanup() {
  [ -z "$go_tools_pid" ] || kill "$go_tools_pid" 2>/dev/null || true
  rm -rf "$logs"
}
trap cleanup EXIT
bash e2e/deps.sh --packages
# The Go tools (Kubo, etcd, Kubernetes, containerd 2.x) build while the Rust code builds: on a
# cold machine their module downloads and single-threaded links overlap with cargo's work.
echo "deps: building the Go tools in the background (cached after the first run)…" >&2
( set -o pipefail; bash e2e/deps.sh --go-tools 2>&1 | sed -u 's/^/[go tools] /' >&2 ) &
go_tools_pid=$!
# Helm (the API-server tests render the chart's RBAC with it) and the chart checks' validators.
bash e2e/chart/deps.sh
# The operator's crash tests kill it at named fault points, compiled in only with this feature
# (operator/tests/data_safety.rs); the release binaries below are built without it.
features=(--features ipfs-image-operator/failpoints)
cargo fmt --all -- --check
cargo clippy --workspace --all-targets "${features[@]}" -- -D warnings
cargo build --workspace --all-targets "${features[@]}"
# The images of the real-node test are made from the release binaries.
cargo build --release --locked -p ipfs-image-operator -p ipfs-image-agent
echo "deps: waiting for the Go tools…" >&2
go_tools_status=0
wait "$go_tools_pid" || go_tools_status=$?
go_tools_pid=
[ "$go_tools_status" = 0 ] || { echo "deps: building the Go tools failed" >&2; exit 1; }
status=0
cargo test --workspace --all-targets "${features[@]}" --no-fail-fast 2>&1 | tee "$logs/cargo.log" || status=1
bash e2e/chart/test.sh 2>&1 | tee "$logs/chart.log" || status=1
# The real path on a real node: helm install → IpfsImage → Pods from IPFS (e2e/node/run.sh).
bash e2e/node/run.sh 2>&1 | tee "$logs/node.log" || status=1
# Everything that runs containerd, again on containerd 2.x (the tests above ran Debian's 1.6).
echo "containerd 2.x run: $(e2e/.deps/bin/containerd2 --version) (the run above: $(containerd --version))"
# (--workspace: the same feature set as above, so cargo reuses the test binaries it built.)
TESTKIT_CONTAINERD=2 cargo test --workspace "${features[@]}" --test containerd_pull --test estargz \
  --test gc_safety --test multinode --test seed_egress --no-fail-fast 2>&1 | tee "$logs/cargo-containerd2.log" || status=1
NODE_CONTAINERD=2 bash e2e/node/run.sh 2>&1 | tee "$logs/node-containerd2.log" || status=1

# One closing line for the whole run: cargo's per-binary results plus the chart checks.
read -r passed failed < <(
  { grep -hE '^test result:' "$logs/cargo.log" "$logs/cargo-containerd2.log" | sed -E 's/.* ([0-9]+) passed; ([0-9]+) failed.*/\1 \2/'
    grep -hE '^[0-9]+ passed, [0-9]+ failed$' "$logs/chart.log" "$logs/node.log" "$logs/node-containerd2.log" | sed -E 's/^([0-9]+) passed, ([0-9]+) failed$/\1 \2/'
  } | awk '{p += $1; f += $2} END {print p + 0, f + 0}')
[ "$failed" -eq 0 ] || status=1
[ "$passed" -gt 0 ] || { echo "no test ran" >&2; status=1; }
echo "total: $passed passed, $failed failed"
exit "$status"
