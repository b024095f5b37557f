# Shared by the bench scripts (sourced after `cd` to the repository root): where the release
# binaries are, a work directory removed on exit, and a Debian registry and an IPFS daemon on free
# loopback ports, configured as in the tests (no bootstrap, no MDNS, no routing).
# REL="${CARGO_TARGET_DIR:-target}/release"; `bench_start NAME` sets W, REG, API and KIND.
REL="${CARGO_TARGET_DIR:-target}/release"
command -v /usr/bin/time >/dev/null || { apt-get install -y -qq time >/dev/null; }
pids=()
bench_cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$W"; }
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

bench_start() {
  W=$(mktemp -d "/tmp/bench-$1.XXXXXX")
  trap bench_cleanup EXIT
  # registry
  REG=127.0.0.1:$(port)
  mkdir -p "$W/reg"
  printf 'version: 0.1\nlog: {level: warn}\nstorage: {filesystem: {rootdirectory: %s}}\nhttp: {addr: %s}\n' "$W/reg" "$REG" > "$W/reg.yml"
  docker-registry serve "$W/reg.yml" >"$W/reg.log" 2>&1 & pids+=($!)
  # IPFS: Kubo from PATH, else js-ipfs
  local api_port swarm_port ipfs
  api_port=$(port); swarm_port=$(port)
  if command -v ipfs >/dev/null; then ipfs=(ipfs); KIND=kubo; else ipfs=("$PWD/e2e/.deps/jsipfs/node_modules/.bin/jsipfs"); KIND=js-ipfs; fi
  export IPFS_PATH=$W/ipfs NODE_ENV=test
  "${ipfs[@]}" init --profile test >/dev/null 2>&1 || "${ipfs[@]}" init --profile test --emptyRepo >/dev/null
  python3 - "$IPFS_PATH/config" "$api_port" "$swarm_port" <<'PY'
import json, sys
p, api, sw = sys.argv[1:]
c = json.load(open(p))
c["Addresses"].update(API=f"/ip4/127.0.0.1/tcp/{api}", Gateway=[], Swarm=[f"/ip4/127.0.0.1/tcp/{sw}"], Announce=[], NoAnnounce=[])
c["Addresses"].pop("RPC", None); c["Addresses"]["Delegates"] = []
c["Bootstrap"] = []; c["Discovery"] = {"MDNS": {"Enabled": False}}; c["Routing"] = {"Type": "none"}; c["AutoConf"] = {"Enabled": False}
json.dump(c, open(p, "w"), indent=1)
PY
  "${ipfs[@]}" daemon $([ $KIND = js-ipfs ] && echo --enable-preload=false) >"$W/ipfs.log" 2>&1 & pids+=($!)
  API=http://127.0.0.1:$api_port
  for _ in $(seq 200); do curl -sf -X POST "$API/api/v0/id" >/dev/null && curl -sf "http://$REG/v2/" >/dev/null && break; sleep 0.2; done
  curl -sf -X POST "$API/api/v0/id" >/dev/null
}
