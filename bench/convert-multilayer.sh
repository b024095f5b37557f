#!/usr/bin/env bash
# Benchmark (not a test): import images of several layers with `convert` (registry → Kubo), by
# default 8 layers × 16 MiB and 4 layers × 256 MiB, against the baseline measured in the same run:
# `skopeo copy` of the same image to an OCI layout on disk, plus adding as many fresh bytes of
# the same sizes to the same Kubo with the same add options (fresh, so that neither side re-adds
# blocks the repo already holds). Prints wall times, the ratio and the converter's peak RSS, and
# the same import with --blob-concurrency 1 (blobs one at a time, as before) for comparison.
# usage: bash bench/convert-multilayer.sh [LAYERSxMIB ...]   (default: 8x16 4x256; needs
#        `bash e2e/deps.sh` first)
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/lib.sh
shapes=("$@")
[ ${#shapes[@]} -gt 0 ] || shapes=(8x16 4x256)
cargo build -q --release -p ipfs-image-operator
bench_start multilayer
add_query="cid-version=1&raw-leaves=true&chunker=size-262144&hash=sha2-256&pin=false&progress=false"

for shape in "${shapes[@]}"; do
  layers=${shape%x*} mib=${shape#*x}
  name="multi-${layers}x${mib}"
  echo "bench: building $name ($layers incompressible layers of $mib MiB)" >&2
  rm -rf "$W/oci" "$W/copy" "$W/fresh"
  umoci init --layout "$W/oci" >/dev/null
  umoci new --image "$W/oci:img" >/dev/null
  for i in $(seq "$layers"); do
    umoci unpack --image "$W/oci:img" "$W/bundle" >/dev/null
    head -c $((mib * 1024 * 1024)) /dev/urandom > "$W/bundle/rootfs/layer-$i.bin"
    umoci repack --image "$W/oci:img" "$W/bundle" >/dev/null
    rm -rf "$W/bundle"
  done
  skopeo copy -q --dest-tls-verify=false "oci:$W/oci:img" "docker://$REG/bench/$name:1"

  # baseline: skopeo to disk, then the same sizes of fresh bytes into Kubo
  t0=$(date +%s.%N)
  skopeo copy -q --src-tls-verify=false "docker://$REG/bench/$name:1" "oci:$W/copy:img"
  t1=$(date +%s.%N)
  mkdir -p "$W/fresh"
  sizes=()
  for blob in "$W"/copy/blobs/sha256/*; do sizes+=("$(stat -c %s "$blob")"); done
  for i in "${!sizes[@]}"; do head -c "${sizes[$i]}" /dev/urandom > "$W/fresh/$i"; done
  t2=$(date +%s.%N)
  for f in "$W"/fresh/*; do
    curl -sf -X POST -F "file=@$f;type=application/octet-stream" "$API/api/v0/add?$add_query" >/dev/null
  done
  t3=$(date +%s.%N)
  # the converter
  /usr/bin/time -v -o "$W/time.txt" "$REL"/ipfs-image-operator --ipfs-api "$API" convert --plain-http \
    "$REG/bench/$name:1" >"$W/cid.txt" 2>"$W/convert.log"
  t4=$(date +%s.%N)
  rss_kb=$(sed -n 's/.*Maximum resident set size (kbytes): //p' "$W/time.txt")
  # the same import one blob at a time, after unpinning and collecting what the first run added
  # (re-adding blocks the repo holds would flatter it)
  for p in $(ipfs pin ls --type=recursive -q); do ipfs pin rm "$p" >/dev/null; done
  ipfs files rm -r --force /ipfs-image >/dev/null 2>&1 || true
  ipfs repo gc >/dev/null
  t5=$(date +%s.%N)
  "$REL"/ipfs-image-operator --ipfs-api "$API" convert --plain-http --blob-concurrency 1 \
    "$REG/bench/$name:1" >/dev/null 2>"$W/convert1.log"
  t6=$(date +%s.%N)
  python3 - "$name" "$t0" "$t1" "$t2" "$t3" "$t4" "$t5" "$t6" "$rss_kb" "$(du -sb "$W/copy/blobs" | cut -f1)" <<'PY'
import sys
name, t0, t1, t2, t3, t4, t5, t6, rss, size = sys.argv[1], *map(float, sys.argv[2:9]), int(sys.argv[9]), int(sys.argv[10])
skopeo, add, conv, one = t1 - t0, t3 - t2, t4 - t3, t6 - t5
base = skopeo + add
mib = size / 2**20
print(f"{name}: {mib:.0f} MiB of blobs")
print(f"  baseline  skopeo copy to disk {skopeo:6.2f} s + ipfs add {add:6.2f} s = {base:6.2f} s")
print(f"  convert   registry -> IPFS                          {conv:6.2f} s  {mib/conv:6.1f} MiB/s")
print(f"  ratio convert/baseline:                              {conv/base:6.2f}x (target <= 1.2x)")
print(f"  convert --blob-concurrency 1:                        {one:6.2f} s  ({one/base:.2f}x of the baseline)")
print(f"  converter peak RSS:                                  {rss/1024:6.1f} MiB")
PY
done
