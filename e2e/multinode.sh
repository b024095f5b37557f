#!/usr/bin/env bash
# The multi-node tests alone: three network namespaces on this machine, each a node with its own
# IPFS daemon and agent (containerd in two), images moving over the swarm, and a fourth for a real
# etcd + kube-apiserver the agents talk to (tests/multinode.rs); then the seed-egress guard, three
# nodes pulling one image at once over tc-shaped links (tests/seed_egress.rs). Needs root and the tools of e2e/deps.sh and
# e2e/chart/deps.sh (helm, for the chart's RBAC); run both once on a fresh machine.
set -euo pipefail
cd "$(dirname "$0")/.."
# The test starts the agent binary: build it first (a test crate cannot depend on a binary).
cargo build -p ipfs-image-agent --bin ipfs-image-agent
cargo test -p e2e-multinode --test multinode --test seed_egress -- --nocapture "$@"
