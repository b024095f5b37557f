#!/usr/bin/env bash
# Install what the demo and the tests need on a fresh Debian machine (idempotent; run as root):
# Debian packages (registry, image tools, containerd, runc, protoc) and, when Kubo (`ipfs`) is not
# on PATH, the pinned js-ipfs test daemon under e2e/.deps/jsipfs.
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
# js-ipfs: the Kubo-compatible daemon used when no Kubo binary is available (see e2e/js-ipfs/).
js="$here/.deps/jsipfs"
if [ ! -x "$js/node_modules/.bin/jsipfs" ]; then
  command -v npm >/dev/null || { echo "deps: npm is required for js-ipfs (or put Kubo's ipfs on PATH)" >&2; exit 1; }
  mkdir -p "$js"
  cp "$here/js-ipfs/package.json" "$here/js-ipfs/package-lock.json" "$js/"
  (cd "$js" && npm install --omit=optional --no-audit --no-fund --loglevel=error >/dev/null)
fi
echo "deps: ok" >&2
