#!/usr/bin/env bash
# Benchmark of the agent's registry (not a test): blob throughput vs `ipfs cat` and vs the Debian
# registry, cached manifest HEAD p50/p99, containerd pull through the agent vs from the registry.
# usage: BENCH_LAYER_MIB=300 bash bench/agent.sh        (after `bash e2e/deps.sh`)
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build -q --release -p ipfs-image-operator -p ipfs-image-agent -p testkit --bins
exec "${CARGO_TARGET_DIR:-target}/release/bench-agent"
