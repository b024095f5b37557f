#!/usr/bin/env bash
# Benchmark (not a test): one image pulled by many nodes at once, over IPFS and from the source
# registry, on network-namespace nodes joined by a bridge whose links are shaped with `tc`.
#
# Every node is a network namespace with its own Kubo (configured by the chart's kubo-init script:
# no bootstrap, no MDNS, routing none, the private network the chart turns on by default), its own
# agent (`ipfs-image-agent serve` on the node's 127.0.0.1:5050, `--peer` for the seed and every
# other node, as the agents follow each other's Pods in a cluster) and its own containerd, whose
# hosts.toml (`configure-containerd`) makes the agent the mirror. A seed namespace plays the
# operator: its Kubo holds the image (`convert` from the source registry, which also lives in the
# seed namespace, behind the same shaped link). The bridge lives in a "switch" namespace of its
# own; nothing is in the root namespace and no namespace has a route anywhere else. Each link is
# shaped both ways (HTB, on the switch's port towards the node and on the node's own end).
#
# Scenarios, each printed as a table with its baseline from the same run:
#   1. all nodes pull through containerd at once (image imported on the seed, not prefetched):
#      per-node pull time p50/max and the seed's egress as a multiple of the image size (Kubo's
#      bitswap DataSent and the seed link's tx bytes); baseline: the same pulls straight from the
#      source registry at once;
#   2. rolling: the nodes pull one after another, same figures;
#   3. prefetched: the layout pinned on every node first (`ipfs pin add`, what the agent's
#      prefetch does); time from pull to the first container started (`ctr run`), one node at a
#      time, vs the same from a registry on the node's own disk (127.0.0.1 inside its namespace);
#   4. growth: scenario 1 for N = 2, 5, 8 (both ways).
# Every pull starts from an empty containerd (image and content removed, checked) and, for the
# IPFS ones, an empty node cache (`repo gc` on every node; the seed keeps its pin).
#
# usage: bash bench/cluster.sh [--nodes N] [--rate RATE] [--size MIB] [--growth "2 5 8"]
#                              [--scenarios "1 2 3 4"] [--keep-logs DIR]
#        defaults: 5 nodes, 1gbit (tc rate syntax), one 300 MiB layer (plus a busybox layer).
#        Needs root, iproute2 (ip, tc), containerd/ctr, umoci, skopeo, docker-registry, jq, bc and
#        the Kubo of `bash e2e/deps.sh` (which installs all of them). Stops and removes everything it started on exit, also on failure.
set -euo pipefail
cd "$(dirname "$0")/.."

NODES=5 RATE=1gbit SIZE_MIB=300 GROWTH="2 5 8" SCENARIOS="1 2 3 4" KEEP_LOGS=
while [ $# -gt 0 ]; do
  case "$1" in
    --nodes) NODES=$2; shift 2 ;;
    --rate) RATE=$2; shift 2 ;;
    --size) SIZE_MIB=$2; shift 2 ;;
    --growth) GROWTH=$2; shift 2 ;;
    --scenarios) SCENARIOS=$2; shift 2 ;;
    --keep-logs) KEEP_LOGS=$2; shift 2 ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) echo "bench: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
done
[[ "$NODES" =~ ^[0-9]+$ ]] && [ "$NODES" -ge 1 ] && [ "$NODES" -le 200 ] || { echo "bench: --nodes 1..200" >&2; exit 2; }
want() { [[ " $SCENARIOS " == *" $1 "* ]]; }
MAXN=$NODES
if want 4; then for n in $GROWTH; do [ "$n" -le "$MAXN" ] || MAXN=$n; done; fi

REL="${CARGO_TARGET_DIR:-target}/release"
[ "$(id -u)" = 0 ] || { echo "bench: needs root (network namespaces, containerd)" >&2; exit 1; }
[ -x e2e/.deps/bin/ipfs ] || { echo "bench: no Kubo; run bash e2e/deps.sh first" >&2; exit 1; }
for t in ip tc nsenter ctr containerd umoci skopeo docker-registry jq bc curl busybox python3; do
  command -v "$t" >/dev/null || { echo "bench: $t is missing (bash e2e/deps.sh installs the packages)" >&2; exit 1; }
done
cargo build -q --release -p ipfs-image-operator -p ipfs-image-agent
AGENT=$(readlink -f "$REL/ipfs-image-agent") OPERATOR=$(readlink -f "$REL/ipfs-image-operator")
# Kubo by its path, and e2e/.deps/bin on PATH only for the kubo-init script: that directory also
# holds containerd 2.x's runc shim, which Debian's containerd 1.6 must not find first.
IPFS=$(readlink -f e2e/.deps/bin/ipfs) DEPS_BIN=$PWD/e2e/.deps/bin
export IPFS_TELEMETRY=off

# ---- what we start, and how it all goes away -------------------------------------------------
W=$(mktemp -d /tmp/bench-cluster.XXXXXX)
TAG="icb$$"            # namespace names: icb<pid>-sw, icb<pid>-seed, icb<pid>-n<i>
pids=()                # every daemon we started, by PID (nsenter execs, so $! is the daemon)
nss=()                 # every namespace we created
sockets=()             # containerd sockets (their tasks are stopped before containerd)
kubo_pids=() agent_pids=()
helpers=()             # background subshells of this script (pulls, the want-list sampler)
# Still a running child of this script (a PID recorded long ago may since belong to someone else).
ours() { [ "$(awk '/^State:/ {s = $2} /^PPid:/ {p = $2} END {if (s != "Z") print p}' "/proc/$1/status" 2>/dev/null)" = "$$" ]; }
cleanup() {
  local status=$?
  set +e
  trap - EXIT INT TERM
  [ -z "$KEEP_LOGS" ] || { mkdir -p "$KEEP_LOGS"; (cd "$W" && find . -name '*.log' -exec cp --parents {} "$KEEP_LOGS" \;); }
  for s in "${sockets[@]}"; do
    for t in $(ctr -a "$s" tasks ls -q 2>/dev/null); do ctr -a "$s" tasks kill -s KILL "$t" >/dev/null 2>&1; ctr -a "$s" tasks rm -f "$t" >/dev/null 2>&1; done
    for c in $(ctr -a "$s" containers ls -q 2>/dev/null); do ctr -a "$s" containers rm "$c" >/dev/null 2>&1; done
  done
  touch "$W/stop-sampling"
  for p in "${helpers[@]}" "${pids[@]}"; do ours "$p" && kill "$p" 2>/dev/null; done
  for _ in $(seq 50); do
    local alive=0
    for p in "${pids[@]}"; do ours "$p" && alive=1; done
    [ $alive = 0 ] && break
    sleep 0.2
  done
  for p in "${pids[@]}"; do ours "$p" && kill -KILL "$p" 2>/dev/null; done
  for p in "${helpers[@]}" "${pids[@]}"; do wait "$p" 2>/dev/null; done
  # Mounts containerd left under our directory (container rootfs), deepest first.
  awk -v w="$W" '$2 ~ "^"w {print $2}' /proc/mounts | sort -r | while read -r m; do umount -l "$m"; done
  # Deleting a namespace deletes its veth ends (and so the pairs) and the bridge.
  for ((i = ${#nss[@]} - 1; i >= 0; i--)); do ip netns delete "${nss[$i]}" 2>/dev/null; done
  rm -rf "$W"
  [ $status = 0 ] || echo "bench: failed (status $status); everything it started is stopped and removed" >&2
  exit $status
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

in_ns() { local ns=$1; shift; nsenter --net="/var/run/netns/$ns" "$@"; }
# Start a daemon in namespace $1 with its output in $2; its PID is recorded.
spawn() { local ns=$1 log=$2; shift 2; nsenter --net="/var/run/netns/$ns" "$@" >"$log" 2>&1 & pids+=($!); }
# Poll `cmd` (in namespace ns) until it succeeds, for at most $2 seconds.
wait_for() {
  local what=$1 secs=$2; shift 2
  local end=$((SECONDS + secs))
  until "$@" >/dev/null 2>&1; do
    [ $SECONDS -lt $end ] || { echo "bench: timed out waiting for $what" >&2; return 1; }
    sleep 0.1
  done
}
now() { date +%s.%N; }

# ---- the network -------------------------------------------------------------------------------
SUBNET=10.233.0
SW="$TAG-sw"
ip netns add "$SW"; nss+=("$SW")
ip -n "$SW" link set lo up
ip -n "$SW" link add br0 type bridge stp_state 0
ip -n "$SW" link set br0 up
shape() { # shape dev $2 in namespace $1 (egress) to $RATE
  tc -n "$1" qdisc add dev "$2" root handle 1: htb default 1
  tc -n "$1" class add dev "$2" parent 1: classid 1:1 htb rate "$RATE" ceil "$RATE" quantum 60000
}
# node_ns NAME INDEX: a namespace on the bridge at $SUBNET.INDEX, its link shaped both ways.
add_node_ns() {
  local ns="$TAG-$1" ip_last=$2 port="p$2"
  ip netns add "$ns"; nss+=("$ns")
  ip link add veth0 netns "$ns" type veth peer name "$port" netns "$SW"
  ip -n "$SW" link set "$port" master br0
  ip -n "$SW" link set "$port" up
  ip -n "$ns" addr add "$SUBNET.$ip_last/24" dev veth0
  ip -n "$ns" link set veth0 up
  ip -n "$ns" link set lo up
  shape "$SW" "$port"   # switch -> node: the node's download
  shape "$ns" veth0     # node -> switch: the node's upload
}
# Bytes the namespace's veth0 sent (all protocols, as the kernel counts them).
tx_bytes() { ip -n "$1" -s -j link show veth0 | jq '.[0].stats64.tx.bytes'; }

# ---- Kubo, agents, containerd ------------------------------------------------------------------
head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n' > "$W/key.hex"
printf '/key/swarm/psk/1.0.0/\n/base16/\n%s\n' "$(cat "$W/key.hex")" > "$W/swarm.key"
# kubo NAME IP [gateway]: configure (chart script) and start Kubo in namespace $TAG-NAME.
kubo() {
  local name=$1 ip=$2 gw=${3:-} ns="$TAG-$1" repo="$W/$1/ipfs"
  mkdir -p "$W/$name"
  IPFS_PATH=$repo KUBO_API_PORT=5001 KUBO_GATEWAY_PORT=$gw KUBO_SWARM_ADDRESSES="[\"/ip4/$ip/tcp/4001\"]" \
    KUBO_STORAGE_MAX=100GB KUBO_ROUTING_TYPE=none KUBO_BOOTSTRAP='[]' KUBO_PRIVATE_NETWORK=true \
    KUBO_SWARM_KEY_FILE="$W/swarm.key" PATH="$DEPS_BIN:$PATH" sh charts/ipfs-image/files/configure-kubo.sh >"$W/$name/kubo-init.log" 2>&1
  local cfg="$repo/config"
  [ "$(jq -c .Bootstrap "$cfg")" = '[]' ] && [ "$(jq .Discovery.MDNS.Enabled "$cfg")" = false ] \
    && [ "$(jq -r .Routing.Type "$cfg")" = none ] || { echo "bench: $name's Kubo could reach out" >&2; exit 1; }
  spawn "$ns" "$W/$name/ipfs.log" env IPFS_PATH="$repo" IPFS_TELEMETRY=off LIBP2P_FORCE_PNET=1 \
    "$IPFS" daemon --migrate=true --enable-gc --agent-version-suffix=ipfs-image
  kubo_pids+=("${pids[-1]}")
}
api() { in_ns "$TAG-$1" curl -sf -X POST "http://127.0.0.1:5001/api/v0/$2"; }
peer_id() { jq -r .Identity.PeerID "$W/$1/ipfs/config"; }

echo "bench: $MAXN nodes + seed, links shaped to $RATE, one ${SIZE_MIB} MiB layer; $("$IPFS" version)" >&2
add_node_ns seed 2
for i in $(seq "$MAXN"); do add_node_ns "n$i" $((10 + i)); done
kubo seed "$SUBNET.2"
for i in $(seq "$MAXN"); do kubo "n$i" "$SUBNET.$((10 + i))" 8080; done
for n in seed $(seq -f 'n%g' "$MAXN"); do wait_for "$n's Kubo" 60 api "$n" id; done
addr() { echo "/ip4/$SUBNET.$2/tcp/4001/p2p/$(peer_id "$1")"; }
SEED_ADDR=$(addr seed 2)

# The source registry, in the seed namespace on its bridge address (behind the seed's link).
REG="$SUBNET.2:5000"
registry() { # registry NS DIR ADDR
  mkdir -p "$2/data"
  printf 'version: 0.1\nlog: {level: warn}\nstorage: {filesystem: {rootdirectory: %s}, delete: {enabled: true}}\nhttp: {addr: %s}\n' \
    "$2/data" "$3" > "$2/registry.yml"
  spawn "$1" "$2/registry.log" docker-registry serve "$2/registry.yml"
}
registry "$TAG-seed" "$W/seed/reg" "$REG"
wait_for "the source registry" 30 in_ns "$TAG-seed" curl -sf "http://$REG/v2/"

for i in $(seq "$MAXN"); do
  ns="$TAG-n$i" d="$W/n$i"
  peers=(--peer "$SEED_ADDR")
  for j in $(seq "$MAXN"); do [ "$j" = "$i" ] || peers+=(--peer "$(addr "n$j" $((10 + j)))"); done
  spawn "$ns" "$d/agent.log" env RUST_LOG=info "$AGENT" --ipfs-api http://127.0.0.1:5001 serve \
    --listen 127.0.0.1:5050 --metrics-listen 127.0.0.1:9090 "${peers[@]}"
  agent_pids+=("${pids[-1]}")
  mkdir -p "$d/ctd/certs.d"
  printf 'version = 2\nroot = "%s"\nstate = "%s"\n[grpc]\n  address = "%s"\n[ttrpc]\n  address = "%s.ttrpc"\n[plugins."io.containerd.grpc.v1.cri"]\n  disable_tcp_service = true\n  stream_server_address = "127.0.0.1"\n  stream_server_port = "0"\n[plugins."io.containerd.grpc.v1.cri".registry]\n  config_path = "%s"\n' \
    "$d/ctd/root" "$d/ctd/state" "$d/ctd/ctd.sock" "$d/ctd/ctd.sock" "$d/ctd/certs.d" > "$d/ctd/config.toml"
  spawn "$ns" "$d/containerd.log" containerd --config "$d/ctd/config.toml"
  sockets+=("$d/ctd/ctd.sock")
  "$AGENT" configure-containerd --config-path "$d/ctd/certs.d" --local-host 127.0.0.1:5050 \
    --mirror-endpoint http://127.0.0.1:5050 >"$d/configure-containerd.log" 2>&1
done
for i in $(seq "$MAXN"); do
  wait_for "n$i's agent" 60 in_ns "$TAG-n$i" curl -sf http://127.0.0.1:5050/v2/
  wait_for "n$i's containerd" 60 ctr -a "$W/n$i/ctd/ctd.sock" version
done
# Every node's Kubo connected to the seed and to every other node (the agents dial them).
connected() { [ "$(api "$1" swarm/peers | jq '.Peers // [] | length')" -ge "$2" ]; }
for i in $(seq "$MAXN"); do wait_for "n$i's agent to connect its Kubo to all $MAXN peers" 120 connected "n$i" "$MAXN"; done

# ---- the image ---------------------------------------------------------------------------------
echo "bench: building the image (busybox + ${SIZE_MIB} MiB of noise)" >&2
umoci init --layout "$W/oci" >/dev/null
umoci new --image "$W/oci:img" >/dev/null
umoci unpack --image "$W/oci:img" "$W/bundle" >/dev/null
mkdir -p "$W/bundle/rootfs/bin"; cp "$(readlink -f "$(command -v busybox)")" "$W/bundle/rootfs/bin/busybox"
ln -s busybox "$W/bundle/rootfs/bin/sh"
umoci repack --image "$W/oci:img" "$W/bundle" >/dev/null; rm -rf "$W/bundle"
umoci unpack --image "$W/oci:img" "$W/bundle" >/dev/null
head -c $((SIZE_MIB * 1024 * 1024)) /dev/urandom > "$W/bundle/rootfs/noise.bin"
umoci repack --image "$W/oci:img" "$W/bundle" >/dev/null; rm -rf "$W/bundle"
umoci config --image "$W/oci:img" --os linux --architecture amd64 --config.cmd /bin/sh --config.env PATH=/bin >/dev/null
in_ns "$TAG-seed" skopeo copy -q --dest-tls-verify=false "oci:$W/oci:img" "docker://$REG/bench/img:1"
rm -rf "$W/oci"
echo "bench: converting on the seed (registry -> the seed's Kubo)" >&2
in_ns "$TAG-seed" "$OPERATOR" --ipfs-api http://127.0.0.1:5001 --log-format json convert --plain-http \
  "$REG/bench/img:1" >"$W/cid.txt" 2>"$W/convert.log"
CID=$(tail -n1 "$W/cid.txt")
converted=$(grep '"converted"' "$W/convert.log" | tail -n1)
LAYOUT=$(jq -r '.fields.layout // .layout' <<<"$converted")
SIZE=$(jq -r '.fields.bytes // .bytes' <<<"$converted")
[ -n "$CID" ] && [ "$LAYOUT" != null ] && [ "$SIZE" -gt 0 ] || { echo "bench: convert said nothing usable:" >&2; cat "$W/convert.log" >&2; exit 1; }
echo "bench: image $CID, layout $LAYOUT, $SIZE bytes of blobs" >&2
IPFS_REF="127.0.0.1:5050/ipfs/$CID:latest"
REG_REF="$REG/bench/img:1"
LOCAL_REF="127.0.0.1:5000/bench/img:1"

# ---- measurements ------------------------------------------------------------------------------
ctr_n() { local i=$1; shift; in_ns "$TAG-n$i" ctr -a "$W/n$i/ctd/ctd.sock" "$@"; }
# pull_cmd I WAY: pull the image on node I through the agent (ipfs) or from a registry.
pull_cmd() {
  case "$2" in
    ipfs) ctr_n "$1" images pull --hosts-dir "$W/n$1/ctd/certs.d" "$IPFS_REF" ;;
    registry) ctr_n "$1" images pull --plain-http "$REG_REF" ;;
    local) ctr_n "$1" images pull --plain-http "$LOCAL_REF" ;;
  esac
}
ref_of() { case "$1" in ipfs) echo "$IPFS_REF" ;; registry) echo "$REG_REF" ;; local) echo "$LOCAL_REF" ;; esac; }
# Forget the image on node I (containerd: image, content and snapshots); check it is all gone.
forget() {
  local i=$1 ref
  for w in ipfs registry local; do
    ref=$(ref_of "$w")
    ctr_n "$i" images ls -q | grep -qxF "$ref" && ctr_n "$i" images rm --sync "$ref" >/dev/null
  done
  [ -z "$(ctr_n "$i" content ls -q)" ] || { echo "bench: n$i's containerd kept content" >&2; ctr_n "$i" content ls >&2; exit 1; }
}
# Empty every node's IPFS cache (the seed keeps its pinned image).
gc_nodes() {
  for i in $(seq "$MAXN"); do
    api "n$i" "repo/gc?quiet=true" >/dev/null
    forget "$i"
  done
}
bitswap_sent() { api "$1" bitswap/stat | jq '.DataSent'; }
bitswap_recv() { api "$1" bitswap/stat | jq '.DataReceived'; }
bitswap_dup() { api "$1" bitswap/stat | jq '.DupDataReceived'; }
# A counter read again until it stops moving (blocks still in flight when the last pull ended).
settled() { local a b; a=$("$@"); while sleep 0.5; b=$("$@"); [ "$a" != "$b" ]; do a=$b; done; echo "$a"; }

# Times the agents found Kubo's gateway silent mid-blob for their --ipfs-timeout (10 s unless
# AGENT_IPFS_TIMEOUT is set, which the agents inherit) and reopened the stream.
stalls() { cat "$W"/n*/agent.log | grep -c 'IPFS stream broke' || true; }
# CPU seconds (user + system) the given PIDs have used so far.
TCK=$(getconf CLK_TCK)
cpu_of() { local p t=0; for p in "$@"; do t=$((t + $(awk '{print $14 + $15}' "/proc/$p/stat" 2>/dev/null || echo 0))); done; echo "$t"; }
# Busy and total jiffies of the whole machine (other work on it included).
machine() { awk '/^cpu /{print $2+$3+$4+$7+$8+$9, $2+$3+$4+$5+$6+$7+$8+$9}' /proc/stat; }
# Sample the want-list length of nodes 1..$1 every 0.2 s until $W/stop-sampling exists; each
# node's largest goes to $W/want.<i>.
sample_wants() {
  local n=$1 i len
  for i in $(seq "$n"); do echo 0 > "$W/want.$i"; done
  while [ ! -e "$W/stop-sampling" ]; do
    for i in $(seq "$n"); do
      len=$(api "n$i" bitswap/wantlist | jq '.Keys // [] | length') || len=0
      [ "$len" -le "$(cat "$W/want.$i")" ] || echo "$len" > "$W/want.$i"
    done
    sleep 0.2
  done
}

# timed_pull I WAY OUT [run]: pull on node I, write "seconds" to OUT (and run a container).
timed_pull() {
  local i=$1 way=$2 out=$3 run=${4:-} t0 t1
  t0=$(now)
  pull_cmd "$i" "$way" >"$W/n$i/pull-$way.log" 2>&1 || { echo "bench: pull on n$i ($way) failed:" >&2; cat "$W/n$i/pull-$way.log" >&2; return 1; }
  if [ -n "$run" ]; then ctr_n "$i" run --rm "$(ref_of "$way")" "bench-$i" /bin/busybox true >>"$W/n$i/pull-$way.log" 2>&1; fi
  t1=$(now)
  echo "$t1 - $t0" | bc -l > "$out"
}
stats() { # p50 and max of the numbers on stdin: "p50 max"
  sort -g | awk '{v[NR]=$1} END {m=(NR%2)?v[(NR+1)/2]:(v[NR/2]+v[NR/2+1])/2; printf "%.2f %.2f\n", m, v[NR]}'
}
# round N MODE WAY: N nodes pull (MODE all = at once, rolling = one after another) by WAY; sets
# R_P50 R_MAX R_TIMES (each node's seconds) R_BITSWAP R_LINK (seed egress, bytes) R_DUP R_WALL,
# and R_CPU (CPU seconds of the Kubos, the agents; the machine's busy share) and R_WANT (each
# node's largest want-list, IPFS rounds).
round() {
  local n=$1 mode=$2 way=$3 i t0 s0 l0 d0=0 k0 a0 m0 sampler=
  gc_nodes
  s0=$(bitswap_sent seed); l0=$(tx_bytes "$TAG-seed")
  for i in $(seq "$n"); do d0=$((d0 + $(bitswap_dup "n$i"))); done
  rm -f "$W"/t.* "$W"/want.* "$W/stop-sampling"
  if [ "$way" = ipfs ]; then sample_wants "$n" & sampler=$!; helpers+=($!); fi
  k0=$(cpu_of "${kubo_pids[@]}"); a0=$(cpu_of "${agent_pids[@]}"); m0=$(machine)
  local st0; st0=$(stalls)
  t0=$(now)
  if [ "$mode" = all ]; then
    local jobs=()
    for i in $(seq "$n"); do timed_pull "$i" "$way" "$W/t.$i" & jobs+=($!); helpers+=($!); done
    for j in "${jobs[@]}"; do wait "$j"; done
  else
    for i in $(seq "$n"); do timed_pull "$i" "$way" "$W/t.$i"; done
  fi
  R_WALL=$(echo "$(now) - $t0" | bc -l)
  local k1 a1 m1; k1=$(cpu_of "${kubo_pids[@]}"); a1=$(cpu_of "${agent_pids[@]}"); m1=$(machine)
  R_CPU=$(python3 -c "import sys; k0,k1,a0,a1,t=map(int,sys.argv[1:6]); b0,j0,b1,j1=map(int,sys.argv[6:10])
print(f'CPU over the round ({float(sys.argv[10]):.1f} s): Kubos {(k1-k0)/t:.1f} s, agents {(a1-a0)/t:.1f} s; machine busy {100*(b1-b0)/max(j1-j0,1):.0f}% of its {sys.argv[11]} cores')" \
    "$k0" "$k1" "$a0" "$a1" "$TCK" $m0 $m1 "$R_WALL" "$(nproc)")
  R_WANT=- R_STALLS=$(( $(stalls) - st0 ))
  if [ -n "$sampler" ]; then
    touch "$W/stop-sampling"; wait "$sampler"
    R_WANT=$(for i in $(seq "$n"); do printf '%s ' "$(cat "$W/want.$i")"; done)
  fi
  R_TIMES=$(for i in $(seq "$n"); do printf '%.2f ' "$(cat "$W/t.$i")"; done)
  read -r R_P50 R_MAX < <(for i in $(seq "$n"); do cat "$W/t.$i"; done | stats)
  # Pulls after the first (rolling): p50/max of nodes 2..n.
  R_REST="-"; [ "$n" -lt 2 ] || R_REST=$(for i in $(seq 2 "$n"); do cat "$W/t.$i"; done | stats)
  R_BITSWAP=$(( $(settled bitswap_sent seed) - s0 ))
  R_LINK=$(( $(settled tx_bytes "$TAG-seed") - l0 ))
  R_DUP=-$d0; for i in $(seq "$n"); do R_DUP=$((R_DUP + $(bitswap_dup "n$i"))); done
}
x() { echo "scale=2; $1 / $SIZE" | bc -l | sed 's/^\./0./'; }
ratio() { echo "scale=2; $1 / $2" | bc -l | sed 's/^\./0./'; }
hdr() { printf '\n%s\n' "$1"; printf '%-34s %8s %8s %14s %14s\n' "" "p50 s" "max s" "seed bitswap" "seed link tx"; }
row() { printf '%-34s %8s %8s %14s %14s\n' "$1" "$R_P50" "$R_MAX" "$2" "$(x "$R_LINK")x"; }
MIB=$(echo "scale=1; $SIZE / 1048576" | bc -l)
echo
echo "bench/cluster.sh: $NODES nodes (+ seed), every link $RATE, image $MIB MiB of blobs (one ${SIZE_MIB} MiB layer), $("$IPFS" version), containerd $(containerd --version | awk '{print $3}'), $(nproc) cores"
echo "(seed egress as a multiple of the image size; pull time = ctr images pull, unpack included)"

if want 1; then
  round "$NODES" all ipfs
  ip_p50=$R_P50 ip_max=$R_MAX ip_bs=$R_BITSWAP ip_link=$R_LINK ip_dup=$R_DUP ip_times=$R_TIMES
  ip_cpu=$R_CPU ip_want=$R_WANT ip_stalls=$R_STALLS
  round "$NODES" all registry
  hdr "1. all $NODES nodes pull at once (imported, not prefetched)"
  R_P50=$ip_p50 R_MAX=$ip_max R_LINK=$ip_link row "IPFS (agent, bitswap)" "$(x "$ip_bs")x"
  row "baseline: source registry" "-"
  echo "   p50 IPFS/registry: $(ratio "$ip_p50" "$R_P50")x (target <= 0.5x); seed egress $(x "$ip_bs")x (target <= 2x)"
  echo "   per node, IPFS: $ip_times s; registry: $R_TIMES s; duplicate bitswap data received by the nodes: $(x "$ip_dup")x"
  echo "   IPFS: $ip_cpu; largest want-list per node: $ip_want blocks; agent streams reopened after --ipfs-timeout (10 s unless AGENT_IPFS_TIMEOUT) of silence: $ip_stalls"
  echo "   registry: $R_CPU"
fi

if want 2; then
  round "$NODES" rolling ipfs
  ip_p50=$R_P50 ip_max=$R_MAX ip_bs=$R_BITSWAP ip_link=$R_LINK ip_rest=$R_REST ip_times=$R_TIMES
  ip_cpu=$R_CPU ip_want=$R_WANT ip_stalls=$R_STALLS
  round "$NODES" rolling registry
  hdr "2. rolling: $NODES nodes pull one after another"
  R_P50=$ip_p50 R_MAX=$ip_max R_LINK=$ip_link row "IPFS (agent, bitswap)" "$(x "$ip_bs")x"
  row "baseline: source registry" "-"
  read -r a _ <<<"$ip_rest"; read -r b _ <<<"$R_REST"
  echo "   pulls after the first, p50/max: IPFS $ip_rest s, registry $R_REST s: $(ratio "$a" "$b")x (target <= 0.5x)"
  echo "   per node, IPFS: $ip_times s; registry: $R_TIMES s"
  echo "   IPFS: $ip_cpu; largest want-list per node: $ip_want blocks; agent streams reopened after --ipfs-timeout (10 s unless AGENT_IPFS_TIMEOUT) of silence: $ip_stalls"
  echo "   registry: $R_CPU"
fi

if want 3; then
  gc_nodes
  # A registry on each node's own disk, on its own 127.0.0.1 (the seed registry's files, copied).
  for i in $(seq "$NODES"); do
    mkdir -p "$W/n$i/reg"; cp -a "$W/seed/reg/data" "$W/n$i/reg/data"
    registry "$TAG-n$i" "$W/n$i/reg" 127.0.0.1:5000
  done
  for i in $(seq "$NODES"); do wait_for "n$i's local registry" 30 in_ns "$TAG-n$i" curl -sf http://127.0.0.1:5000/v2/; done
  # Prefetch: the layout pinned on every node at once (what the agent's prefetch does).
  # Timed per node and with the seed's egress: Kubo's own DAG fetch (pin add walks the DAG with
  # many blocks in flight), against which the pulls above (the gateway's sequential reader) compare.
  # One attempt may stall for good (a want no peer that has the block still holds; see the
  # README): each is cut off after 30 s and retried, a new request being a new bitswap session.
  pin_one() {
    local t0 tries=0; t0=$(now)
    until api "n$1" "pin/add?arg=$LAYOUT&progress=false&timeout=30s" >/dev/null; do
      tries=$((tries + 1)); [ $tries -lt 20 ] || { echo "bench: n$1 could not pin the layout" >&2; return 1; }
    done
    echo "$(now) - $t0" | bc -l > "$W/pin.$1"; echo "$tries" > "$W/pin-retries.$1"
  }
  s0=$(bitswap_sent seed); t0=$(now); jobs=()
  for i in $(seq "$NODES"); do pin_one "$i" & jobs+=($!); helpers+=($!); done
  for j in "${jobs[@]}"; do wait "$j"; done
  prefetch=$(echo "$(now) - $t0" | bc -l)
  pin_sent=$(( $(settled bitswap_sent seed) - s0 ))
  read -r PIN50 PINMAX < <(for i in $(seq "$NODES"); do cat "$W/pin.$i"; done | stats)
  PIN_RETRIES=$(for i in $(seq "$NODES"); do printf '%s ' "$(cat "$W/pin-retries.$i")"; done)
  recv0=0; for i in $(seq "$NODES"); do recv0=$((recv0 + $(bitswap_recv "n$i"))); done
  for i in $(seq "$NODES"); do timed_pull "$i" ipfs "$W/p.$i" run; forget "$i"; done
  recv1=0; for i in $(seq "$NODES"); do recv1=$((recv1 + $(settled bitswap_recv "n$i"))); done
  for i in $(seq "$NODES"); do timed_pull "$i" local "$W/l.$i" run; forget "$i"; done
  read -r P50 MAX < <(for i in $(seq "$NODES"); do cat "$W/p.$i"; done | stats)
  read -r L50 LMAX < <(for i in $(seq "$NODES"); do cat "$W/l.$i"; done | stats)
  printf '\n%s\n' "3. prefetched: pull + first container start (ctr run), one node at a time, $NODES nodes"
  printf '%-34s %8s %8s\n' "" "p50 s" "max s"
  printf '%-34s %8s %8s\n' "IPFS, layout pinned on every node" "$P50" "$MAX" "baseline: registry on the node" "$L50" "$LMAX"
  echo "   p50 IPFS/local: $(ratio "$P50" "$L50")x (target <= 1.2x); bitswap data received during these pulls: $((recv1 - recv0)) bytes"
  echo "   the prefetch itself, all $NODES nodes pinning at once (ipfs pin add of the layout): p50 $PIN50 s, max $PINMAX s, all done in $(printf '%.2f' "$prefetch") s; seed egress $(x "$pin_sent")x; attempts cut off after 30 s, per node: $PIN_RETRIES"
  for i in $(seq "$NODES"); do api "n$i" "pin/rm?arg=$LAYOUT" >/dev/null; done
fi

if want 4; then
  printf '\n%s\n' "4. growth: all nodes pull at once, N = $GROWTH"
  printf '%-4s %10s %10s %12s %12s %10s %10s %12s %8s\n' N "IPFS p50" "IPFS max" "seed bitswap" "seed link" "reg p50" "reg max" "reg link" "stalls"
  for n in $GROWTH; do
    round "$n" all ipfs
    a50=$R_P50 amax=$R_MAX abs=$R_BITSWAP alink=$R_LINK ast=$R_STALLS
    round "$n" all registry
    printf '%-4s %10s %10s %12s %12s %10s %10s %12s %8s\n' "$n" "$a50" "$amax" "$(x "$abs")x" "$(x "$alink")x" "$R_P50" "$R_MAX" "$(x "$R_LINK")x" "$ast"
  done
  echo "   stalls: the agents' Kubo gateway streams reopened after --ipfs-timeout of silence, IPFS rounds"
fi
