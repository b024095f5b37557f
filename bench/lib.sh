# Shared by the bench scripts (sourced after `cd` to the repository root): where the release
# binaries are, a work directory removed on exit, and a Debian registry and Kubo on free loopback
# ports, configured as in the tests and the chart (no bootstrap, no MDNS, no routing, GC on).
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
  # IPFS: the Kubo e2e/deps.sh built, configured by the chart's own kubo-init script
  local api_port swarm_port
  api_port=$(port); swarm_port=$(port)
  [ -x e2e/.deps/bin/ipfs ] || { echo "bench: no Kubo; run bash e2e/deps.sh first" >&2; exit 1; }
  export PATH="$PWD/e2e/.deps/bin:$PATH" IPFS_PATH=$W/ipfs IPFS_TELEMETRY=off
  KIND="kubo $(ipfs version -n)"
  KUBO_API_PORT=$api_port KUBO_SWARM_ADDRESSES="[\"/ip4/127.0.0.1/tcp/$swarm_port\"]" KUBO_STORAGE_MAX=100GB \
    KUBO_ROUTING_TYPE=none sh charts/ipfs-image/files/configure-kubo.sh >"$W/kubo-init.log" 2>&1
  echo "bench: $KIND" >&2
  ipfs daemon --migrate=true --enable-gc --agent-version-suffix=ipfs-image >"$W/ipfs.log" 2>&1 & pids+=($!)
  API=http://127.0.0.1:$api_port
  for _ in $(seq 200); do curl -sf -X POST "$API/api/v0/id" >/dev/null && curl -sf "http://$REG/v2/" >/dev/null && break; sleep 0.2; done
  curl -sf -X POST "$API/api/v0/id" >/dev/null
}
