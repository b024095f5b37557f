#!/usr/bin/env bash
# The multi-node test alone: three network namespaces on this machine, each a node with its own
# IPFS daemon and agent (containerd in two), images moving over the swarm, and a fourth for a real
# etcd + kube-apiserver the agents talk to. Needs root and the tools of e2e/deps.sh and
# e2e/chart/deps.sh (helm, for the chart's RBAC); run both once on a fresh machine.
set -euo pipefail
cd "$(dirname "$0")/.."
# The test starts the agent binary: build it first (a test crate cannot depend on a binary).
cargo build -p ipfs-image-agent --bin ipfs-image-agent
cargo test -p e2e-multinode --test multinode -- --nocapture "$@"
