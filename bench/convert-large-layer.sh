#!/usr/bin/env bash
# Benchmark (not a test): convert an image with one large layer (default 1 GiB) and report the
# converter's peak RSS and wall time, against adding the same layer bytes straight to the same
# IPFS daemon with curl (the baseline, measured in the same run).
# usage: bash bench/convert-large-layer.sh [SIZE_MIB=1024]     (needs `bash e2e/deps.sh` first)
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/lib.sh
SIZE_MIB=${1:-1024}
cargo build -q --release -p ipfs-image-operator -p testkit --bins
bench_start convert

# an image with one big incompressible layer
umoci init --layout "$W/oci" >/dev/null
umoci new --image "$W/oci:big" >/dev/null
umoci unpack --image "$W/oci:big" "$W/bundle" >/dev/null
head -c $((SIZE_MIB * 1024 * 1024)) /dev/urandom > "$W/bundle/rootfs/big.bin"
umoci repack --image "$W/oci:big" "$W/bundle" >/dev/null
rm -rf "$W/bundle"
skopeo copy -q --dest-tls-verify=false "oci:$W/oci:big" "docker://$REG/bench/big:1"
LAYER=$(ls -S "$W/oci/blobs/sha256" | head -1)
LAYER_BYTES=$(stat -c %s "$W/oci/blobs/sha256/$LAYER")

# baseline: as many fresh bytes straight into the daemon, same add options. Fresh, not the layer
# itself: re-adding blocks the repo already holds is cheaper and would flatter whichever runs second.
head -c "$LAYER_BYTES" /dev/urandom > "$W/baseline.bin"
t0=$(date +%s.%N)
curl -sf -X POST -F "file=@$W/baseline.bin;type=application/octet-stream" \
  "$API/api/v0/add?cid-version=1&raw-leaves=true&chunker=size-262144&hash=sha2-256&pin=false&progress=false" >/dev/null
t1=$(date +%s.%N)
# the converter
/usr/bin/time -v -o "$W/time.txt" "$REL"/ipfs-image-operator --ipfs-api "$API" convert --plain-http "$REG/bench/big:1" >"$W/cid.txt" 2>"$W/convert.log"
t2=$(date +%s.%N)
RSS_KB=$(sed -n 's/.*Maximum resident set size (kbytes): //p' "$W/time.txt")
python3 - "$KIND" "$LAYER_BYTES" "$t0" "$t1" "$t2" "$RSS_KB" "$(tail -1 "$W/cid.txt")" <<'PY'
import sys
kind, size, t0, t1, t2, rss, cid = sys.argv[1], int(sys.argv[2]), *map(float, sys.argv[3:6]), int(sys.argv[6]), sys.argv[7]
base, conv = t1 - t0, t2 - t1
mib = size / 2**20
print(f"daemon: {kind}; layer: {mib:.0f} MiB (gzip, incompressible)")
print(f"baseline  ipfs add (curl, from disk):        {base:7.2f} s  {mib/base:7.1f} MiB/s")
print(f"convert   registry -> IPFS (streaming):       {conv:7.2f} s  {mib/conv:7.1f} MiB/s")
print(f"ratio convert/baseline time:                   {conv/base:7.2f}x")
print(f"converter peak RSS:                            {rss/1024:7.1f} MiB (target < 100 MiB)")
print(f"CID: {cid}")
PY
