#!/usr/bin/env bash
# Benchmark (not a test): convert an image with one large layer (default 1 GiB) and report the
# converter's peak RSS and wall time, against adding the same layer bytes straight to the same
# IPFS daemon with curl (the baseline, measured in the same run).
# usage: bash bench/convert-large-layer.sh [SIZE_MIB=1024]     (needs `bash e2e/deps.sh` first)
set -euo pipefail
cd "$(dirname "$0")/.."
# Release binaries, wherever cargo puts them.
REL="${CARGO_TARGET_DIR:-target}/release"
SIZE_MIB=${1:-1024}
command -v /usr/bin/time >/dev/null || { apt-get install -y -qq time >/dev/null; }
cargo build -q --release -p ipfs-image-operator -p testkit --bins
W=$(mktemp -d /tmp/bench-convert.XXXXXX)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$W"; }
trap cleanup EXIT
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# registry
REG=127.0.0.1:$(port)
mkdir -p "$W/reg"
printf 'version: 0.1\nlog: {level: warn}\nstorage: {filesystem: {rootdirectory: %s}}\nhttp: {addr: %s}\n' "$W/reg" "$REG" > "$W/reg.yml"
docker-registry serve "$W/reg.yml" >"$W/reg.log" 2>&1 & pids+=($!)
# IPFS: Kubo from PATH, else js-ipfs (same configuration as the tests: loopback, no bootstrap)
API_PORT=$(port); SWARM_PORT=$(port)
if command -v ipfs >/dev/null; then IPFS=(ipfs); KIND=kubo; else IPFS=("$PWD/e2e/.deps/jsipfs/node_modules/.bin/jsipfs"); KIND=js-ipfs; fi
export IPFS_PATH=$W/ipfs NODE_ENV=test
"${IPFS[@]}" init --profile test >/dev/null 2>&1 || "${IPFS[@]}" init --profile test --emptyRepo >/dev/null
python3 - "$IPFS_PATH/config" "$API_PORT" "$SWARM_PORT" <<'PY'
import json, sys
p, api, sw = sys.argv[1:]
c = json.load(open(p))
c["Addresses"].update(API=f"/ip4/127.0.0.1/tcp/{api}", Gateway=[], Swarm=[f"/ip4/127.0.0.1/tcp/{sw}"], Announce=[], NoAnnounce=[])
c["Addresses"].pop("RPC", None); c["Addresses"]["Delegates"] = []
c["Bootstrap"] = []; c["Discovery"] = {"MDNS": {"Enabled": False}}; c["Routing"] = {"Type": "none"}; c["AutoConf"] = {"Enabled": False}
json.dump(c, open(p, "w"), indent=1)
PY
"${IPFS[@]}" daemon $([ $KIND = js-ipfs ] && echo --enable-preload=false) >"$W/ipfs.log" 2>&1 & pids+=($!)
API=http://127.0.0.1:$API_PORT
for _ in $(seq 200); do curl -sf -X POST "$API/api/v0/id" >/dev/null && curl -sf "http://$REG/v2/" >/dev/null && break; sleep 0.2; done
curl -sf -X POST "$API/api/v0/id" >/dev/null

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
