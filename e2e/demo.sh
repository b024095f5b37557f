#!/usr/bin/env bash
# The main job as a local demo on a fresh Debian machine (run as root):
# registry image → IPFS CID → localhost:5050 → containerd pulls (ctr and CRI) → `echo hello` runs.
set -euo pipefail
cd "$(dirname "$0")/.."
bash e2e/deps.sh
cargo build --workspace --bins
cargo run -q -p testkit --bin demo
