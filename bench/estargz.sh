#!/usr/bin/env bash
# Benchmark (not a test): `convert` with and without `--estargz` on the same image (throughput,
# peak RSS), then, through the agent, the bytes and time to read one small file lazily (footer,
# TOC and one chunk by Range requests, each verified) against pulling the whole layer.
# The image: busybox-free, one layer of SIZE_MIB MiB of incompressible files (8 MiB each), 2000
# small compressible text files, and /etc/motd (the file read lazily).
# usage: bash bench/estargz.sh [SIZE_MIB=128]     (needs `bash e2e/deps.sh` first)
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/lib.sh
SIZE_MIB=${1:-128}
cargo build -q --release -p ipfs-image-operator -p ipfs-image-agent --bins
cargo build -q --release -p ipfs-oci --example estargz_read
now() { date +%s.%N; }
bench_start estargz

# the image
umoci init --layout "$W/oci" >/dev/null
umoci new --image "$W/oci:big" >/dev/null
umoci unpack --image "$W/oci:big" "$W/bundle" >/dev/null
R=$W/bundle/rootfs
mkdir -p "$R/data" "$R/etc" "$R/usr/share/text"
for i in $(seq 1 $(( (SIZE_MIB + 7) / 8 ))); do head -c $((8 * 1024 * 1024)) /dev/urandom > "$R/data/blob$i.bin"; done
python3 - "$R/usr/share/text" <<'PY'
import base64, os, sys
for i in range(2000):
    with open(os.path.join(sys.argv[1], f"f{i:04}.txt"), "w") as f:
        f.write((f"line {i} " + base64.b64encode(os.urandom(24)).decode() + "\n") * 64)
PY
echo "read lazily, one file out of a large layer" > "$R/etc/motd"
umoci repack --image "$W/oci:big" "$W/bundle" >/dev/null
rm -rf "$W/bundle"
skopeo copy -q --dest-tls-verify=false "oci:$W/oci:big" "docker://$REG/bench/big:1"
LAYER_BYTES=$(stat -c %s "$W/oci/blobs/sha256/$(ls -S "$W/oci/blobs/sha256" | head -1)")

convert() { # label, extra args → CID; records seconds and peak RSS
  local t0 t1
  t0=$(now)
  /usr/bin/time -v -o "$W/time-$1.txt" "$REL"/ipfs-image-operator --ipfs-api "$API" convert --plain-http "${@:2}" "$REG/bench/big:1" >"$W/cid-$1.txt" 2>"$W/convert-$1.log"
  t1=$(now)
  echo "$(python3 -c "print($t1-$t0)") $(sed -n 's/.*Maximum resident set size (kbytes): //p' "$W/time-$1.txt") $(tail -1 "$W/cid-$1.txt")"
}
read -r PLAIN_S PLAIN_RSS PLAIN_CID < <(convert plain)
read -r ESGZ_S ESGZ_RSS ESGZ_CID < <(convert estargz --estargz)

# the agent, and the layers of both images as it serves them
AGENT=127.0.0.1:$(port)
"$REL"/ipfs-image-agent --ipfs-api "$API" serve --listen "$AGENT" --metrics-listen "127.0.0.1:$(port)" >"$W/agent.log" 2>&1 & pids+=($!)
for _ in $(seq 100); do curl -sf "http://$AGENT/v2/" >/dev/null && break; sleep 0.1; done
layer() { # CID → "digest size toc-digest" of the largest layer of its amd64 (only) manifest
  python3 - "http://$AGENT/v2/ipfs/$1" <<'PY'
import json, sys, urllib.request
base = sys.argv[1]
def get(ref):
    req = urllib.request.Request(f"{base}/manifests/{ref}", headers={"Accept": "application/vnd.oci.image.index.v1+json, application/vnd.oci.image.manifest.v1+json"})
    return json.load(urllib.request.urlopen(req))
index = get("latest")
manifest = get(index["manifests"][0]["digest"])
l = max(manifest["layers"], key=lambda l: l["size"])
print(l["digest"], l["size"], l.get("annotations", {}).get("containerd.io/snapshot/stargz/toc.digest", "-"))
PY
}
read -r PLAIN_DIGEST PLAIN_SIZE _ < <(layer "$PLAIN_CID")
read -r ESGZ_DIGEST ESGZ_SIZE TOC < <(layer "$ESGZ_CID")
pull() { curl -sf -o /dev/null -w '%{size_download} %{time_total}\n' "http://$AGENT/v2/ipfs/$1/blobs/$2"; }
read -r PLAIN_PULL_B PLAIN_PULL_S < <(pull "$PLAIN_CID" "$PLAIN_DIGEST")
read -r ESGZ_PULL_B ESGZ_PULL_S < <(pull "$ESGZ_CID" "$ESGZ_DIGEST")
LAZY=$("$REL"/examples/estargz_read "http://$AGENT" "ipfs/$ESGZ_CID" "$ESGZ_DIGEST" etc/motd "$TOC")
WANT="sha256:$(echo "read lazily, one file out of a large layer" | sha256sum | cut -d' ' -f1)"
GOT=$(echo "$LAZY" | python3 -c 'import json,sys; print(json.load(sys.stdin)["file_digest"])')
[ "$GOT" = "$WANT" ] || { echo "lazy read returned $GOT, expected $WANT" >&2; exit 1; }

python3 - "$KIND" "$LAYER_BYTES" "$PLAIN_S" "$PLAIN_RSS" "$ESGZ_S" "$ESGZ_RSS" "$PLAIN_SIZE" "$ESGZ_SIZE" \
  "$PLAIN_PULL_B" "$PLAIN_PULL_S" "$ESGZ_PULL_B" "$ESGZ_PULL_S" "$LAZY" <<'PY'
import json, sys
a = sys.argv[1:]
kind, src = a[0], int(a[1])
plain_s, plain_rss, esgz_s, esgz_rss = float(a[2]), int(a[3]), float(a[4]), int(a[5])
plain_size, esgz_size = int(a[6]), int(a[7])
plain_pull_b, plain_pull_s, esgz_pull_b, esgz_pull_s = int(a[8]), float(a[9]), int(a[10]), float(a[11])
lazy = json.loads(a[12])
mib = src / 2**20
print(f"daemon: {kind}; source layer: {mib:.1f} MiB gzip (incompressible files + 2000 small text files)")
print(f"convert            {plain_s:7.2f} s  {mib/plain_s:7.1f} MiB/s  peak RSS {plain_rss/1024:6.1f} MiB  layer {plain_size} B")
print(f"convert --estargz  {esgz_s:7.2f} s  {mib/esgz_s:7.1f} MiB/s  peak RSS {esgz_rss/1024:6.1f} MiB  layer {esgz_size} B ({(esgz_size/plain_size-1)*100:+.2f}%)")
print(f"pull whole layer via agent (gzip):    {plain_pull_b:>11} B  {plain_pull_s:7.3f} s")
print(f"pull whole layer via agent (eStargz): {esgz_pull_b:>11} B  {esgz_pull_s:7.3f} s")
print(f"lazy read of /etc/motd (eStargz):     {lazy['transferred']:>11} B  {lazy['seconds']:7.3f} s  "
      f"{lazy['requests']} requests, {lazy['transferred']*100/esgz_size:.4f}% of the layer, {lazy['file_bytes']} B file")
PY
