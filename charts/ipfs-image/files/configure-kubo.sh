#!/bin/sh
# Configures the Kubo repo at $IPFS_PATH (see DESIGN.md §5 of ipfs-image-operator):
# the RPC API on 127.0.0.1 only, the HTTP gateway on 127.0.0.1 only when asked for (the agent
# reads blobs there) and otherwise none, no public bootstrap, no mDNS, no AutoConf,
# no AutoTLS, no telemetry, routing and storage limits from the chart's values, and the
# private network key when one is given.
set -eu
: "${IPFS_PATH:?}" "${KUBO_SWARM_ADDRESSES:?}" "${KUBO_STORAGE_MAX:?}" "${KUBO_ROUTING_TYPE:?}"
: "${KUBO_BOOTSTRAP:=[]}" "${KUBO_PRIVATE_NETWORK:=false}" "${KUBO_SWARM_KEY_FILE:=/swarm-key/swarm.key}"
# The API port only (the tests run many daemons side by side); its address is always loopback.
: "${KUBO_API_PORT:=5001}"
api="/ip4/127.0.0.1/tcp/$KUBO_API_PORT"
# The gateway: loopback only, and only for the node agents (KUBO_GATEWAY_PORT set).
: "${KUBO_GATEWAY_PORT:=}"
if [ -n "$KUBO_GATEWAY_PORT" ]; then gateway="[\"/ip4/127.0.0.1/tcp/$KUBO_GATEWAY_PORT\"]"; else gateway='[]'; fi
here=$(dirname "$0")

if [ ! -f "$IPFS_PATH/config" ]; then
  echo "kubo-init: creating a new repo in $IPFS_PATH"
  ipfs init
fi
cfg() { ipfs config "$@"; }
# The RPC API is an admin API: loopback only, never exposed (not even to the pod network).
cfg Addresses.API "$api"
# The agent's registry is the only way images leave a node: no gateway, or one on loopback for
# the agent, which streams blobs from it at about half the CPU of RPC `cat` (bench/agent.sh).
cfg --json Addresses.Gateway "$gateway"
cfg --json Addresses.Swarm "$KUBO_SWARM_ADDRESSES"
# Peers come from Kubernetes (the agents connect to each other and to the operator's seed),
# not from the public network.
cfg --json Bootstrap "$KUBO_BOOTSTRAP"
cfg --json Discovery.MDNS.Enabled false
# AutoConf would fetch bootstrap peers, resolvers and routers from the internet; without it
# no "auto" placeholder may remain.
cfg --json AutoConf.Enabled false
cfg --json Routing.DelegatedRouters '[]'
cfg --json Ipns.DelegatedPublishers '[]'
cfg --json DNS.Resolvers '{}'
cfg Routing.Type "$KUBO_ROUTING_TYPE"
cfg --json AutoTLS.Enabled false
cfg --json Swarm.DisableNatPortMap true
cfg --json Swarm.RelayClient.Enabled false
cfg --json Swarm.RelayService.Enabled false
cfg Plugins.Plugins.telemetry.Config.Mode off
cfg Datastore.StorageMax "$KUBO_STORAGE_MAX"

# Transports at Kubo's defaults. In a private network (Kubo reads $IPFS_PATH/swarm.key at
# start) that means TCP only: QUIC, WebTransport and WebRTC cannot carry a pre-shared key,
# and Kubo turns them off by itself when they are left unset.
cfg --json Swarm.Transports.Network '{}'
if [ "$KUBO_PRIVATE_NETWORK" = true ]; then
  # Readable by Kubo's user only from the first byte (umask), then read-only; plain cp and
  # chmod, since not every busybox has `install`.
  rm -f "$IPFS_PATH/swarm.key.new"
  (umask 077 && cp "$KUBO_SWARM_KEY_FILE" "$IPFS_PATH/swarm.key.new")
  chmod 0400 "$IPFS_PATH/swarm.key.new"
  mv -f "$IPFS_PATH/swarm.key.new" "$IPFS_PATH/swarm.key"
  echo "kubo-init: private network (swarm.key installed)"
else
  rm -f "$IPFS_PATH/swarm.key"
fi

# kubo.extraConfig, applied last so it wins: one key/value file pair per entry.
for keyfile in "$here"/extra-*.key; do
  [ -e "$keyfile" ] || continue
  cfg --json "$(cat "$keyfile")" "$(cat "${keyfile%.key}.json")"
done
# extraConfig may tune anything but where the admin API and the gateway listen.
if [ "$(cfg Addresses.API)" != "$api" ] || [ "$(cfg --json Addresses.Gateway | tr -d ' \n')" != "$gateway" ]; then
  echo "kubo-init: kubo.extraConfig may not change Addresses.API or Addresses.Gateway; keeping the API on $api and the gateway at $gateway" >&2
  cfg Addresses.API "$api"
  cfg --json Addresses.Gateway "$gateway"
fi
echo "kubo-init: configured; RPC API on $api, gateway $gateway, swarm on $KUBO_SWARM_ADDRESSES"
