#!/usr/bin/env bash
# Install what the demo and the tests need on a fresh Debian machine (idempotent; run as root):
# Debian packages (registry, image tools, containerd, runc, protoc), and Kubo built from its Go
# module at the version the chart ships (cached outside the work tree; linked into e2e/.deps/bin).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
pkgs=(docker-registry skopeo umoci busybox-static containerd runc apache2-utils protobuf-compiler buildah curl python3 unzip stargz-snapshotter iproute2)
missing=()
for p in "${pkgs[@]}"; do dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p"); done
if [ ${#missing[@]} -gt 0 ]; then
  echo "deps: installing ${missing[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  # The packages' postinst cannot start services here (no systemd); that is fine: we start our own.
  apt-get install -y -qq "${missing[@]}" >/dev/null
fi

command -v go >/dev/null || { echo "deps: Go (≥ 1.26) is required to build Kubo" >&2; exit 1; }
# shellcheck source=tools/go-tool.sh
. "$here/tools/go-tool.sh"

# Kubo: one version, the chart's (kubo.image.tag); the wrapper module must require the same.
kubo_version=$(awk '/^kubo:/ {k=1} k && /^    tag:/ {print $2; exit}' "$here/../charts/ipfs-image/values.yaml")
kubo_module=$(go_mod_version "$here/tools/kubo" github.com/ipfs/kubo)
if [ "$kubo_version" != "$kubo_module" ]; then
  echo "deps: the chart ships Kubo $kubo_version but e2e/tools/kubo/go.mod requires $kubo_module" >&2
  exit 1
fi
go_tool kubo "$kubo_version" "$here/tools/kubo" ipfs \
  -ldflags "-s -w -X github.com/ipfs/kubo.CurrentCommit=$kubo_version" github.com/ipfs/kubo/cmd/ipfs
echo "deps: $("$here/.deps/bin/ipfs" version) ($(readlink -f "$here/.deps/bin/ipfs"))" >&2
echo "deps: ok" >&2
