#!/usr/bin/env bash
# All the tests, on a fresh Debian machine (run as root). Every test starts the real daemons it
# needs (IPFS, registry, containerd) on free loopback ports and stops them itself.
set -euo pipefail
cd "$(dirname "$0")/.."
bash e2e/deps.sh
cargo fmt --all -- --check
cargo clippy --workspace --all-targets -- -D warnings
cargo build --workspace --all-targets
cargo test --workspace --no-fail-fast
if [ -x e2e/chart/test.sh ] || [ -f e2e/chart/test.sh ]; then
  bash e2e/chart/test.sh
fi
