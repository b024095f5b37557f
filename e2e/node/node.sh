#!/usr/bin/env bash
# A single-node Kubernetes cluster on this machine, without Docker, sourced by e2e/node/run.sh:
# etcd, kube-apiserver, kube-controller-manager, kube-scheduler, kube-proxy, containerd and
# kubelet (all built from pinned sources by e2e/deps.sh, containerd and runc from Debian),
# plus two registries (`infra`: our own images; `source`: the images users import).
#
# Isolation:
# - network: a namespace of our own (`iin-<pid>`) with loopback and a veth pair whose both ends
#   are inside it: one holds the node IP, and the default route points into it, so whatever is
#   not for the node, a pod or a service ends at the other end, which drops it: no packet
#   leaves the namespace. Pod and service ranges are routed inside it only.
# - mounts: a persistent mount namespace of our own (bound to a file in the work dir) with
#   shared propagation inside it, so kubelet's and runc's mounts never reach the machine's `/`.
# - cgroups: kubelet's cgroup root is `/iin-<pid>` in every hierarchy.
# - files: everything lives in the work dir ($NODE_WORK), removed afterwards.
# Processes run with `nsenter --net --mount` (not `ip netns exec`, whose private /sys breaks
# runc). node_down stops what node_up started, by PID, then anything still left in our
# namespace or cgroups (pods' processes), also when a step failed.

NODE_NAME=ipfs-image-node
NODE_IP=10.250.0.2
POD_CIDR=10.244.0.0/24
SERVICE_CIDR=10.96.0.0/24
SERVICE_API_IP=10.96.0.1
INFRA_REGISTRY=$NODE_IP:5100
SOURCE_REGISTRY=$NODE_IP:5200
NODE_PREFIX=iin-
# kubelet sets these kernel-wide sysctls at start (protectKernelDefaults: false); node_up
# records them and node_down puts them back, so the machine keeps its own settings.
# Fixed paths some node components write to (libcni's cache, kubelet's container log links,
# containerd's shim sockets): bind-mounted from the work dir inside our mount namespace.
NODE_PRIVATE_DIRS=(/var/lib/cni /var/log/containers /var/log/pods /run/containerd)
KERNEL_TUNABLES=(vm/overcommit_memory vm/panic_on_oom kernel/panic kernel/panic_on_oops
  kernel/keys/root_maxkeys kernel/keys/root_maxbytes)

node_log() { printf '\n=== %s\n' "$*" >&2; }
node_die() { printf 'FAIL: %s\n' "$*" >&2; exit 1; }

# in_node CMD…: run CMD in the node's network and mount namespaces.
in_node() { nsenter --net="/run/netns/$NODE_NETNS" --mount="$NODE_WORK/mnt/ns" -- "$@"; }
# in_net CMD…: the node's network only (for tools whose files live in the machine's mounts).
in_net() { nsenter --net="/run/netns/$NODE_NETNS" -- "$@"; }
k() { in_node "$NODE_BIN/kubectl" --kubeconfig "$NODE_WORK/pki/admin.kubeconfig" "$@"; }
node_ctr() { in_node "$NODE_CTR" --address "$NODE_WORK/containerd/containerd.sock" "$@"; }

# NODE_CONTAINERD=1 (default): Debian's containerd 1.6; 2: containerd 2.x built by e2e/deps.sh.
node_select_containerd() {
  case ${NODE_CONTAINERD:-1} in
    1) NODE_CONTAINERD_BIN=$(command -v containerd); NODE_CTR=$(command -v ctr) ;;
    2) NODE_CONTAINERD_BIN=$(readlink -f "$NODE_BIN/containerd2"); NODE_CTR=$NODE_BIN/ctr2 ;;
    *) node_die "NODE_CONTAINERD must be 1 or 2" ;;
  esac
  [ -x "$NODE_CONTAINERD_BIN" ] || node_die "$NODE_CONTAINERD_BIN is missing: run bash e2e/deps.sh"
}

# start_daemon NAME CMD…: start CMD in the node, log to $NODE_WORK/logs/NAME.log, record its PID.
start_daemon() {
  local name=$1; shift
  # A plain command (not the in_node function), so $! is the daemon itself: nsenter and
  # setsid exec it.
  nsenter --net="/run/netns/$NODE_NETNS" --mount="$NODE_WORK/mnt/ns" -- setsid "$@" \
    >"$NODE_WORK/logs/$name.log" 2>&1 </dev/null &
  echo "$!" >"$NODE_WORK/pids/$name"
  NODE_DAEMONS+=("$name")
}

# wait_for WHAT SECONDS CMD…: poll CMD until it succeeds (fails when a daemon we started died).
wait_for() {
  local what=$1 deadline=$((SECONDS + $2)) name
  shift 2
  until "$@" >/dev/null 2>&1; do
    for name in "${NODE_DAEMONS[@]}"; do
      kill -0 "$(cat "$NODE_WORK/pids/$name")" 2>/dev/null ||
        node_die "$name exited while waiting for $what: $(tail -n 20 "$NODE_WORK/logs/$name.log")"
    done
    [ "$SECONDS" -lt "$deadline" ] || node_die "$what not ready after $2 s"
    sleep 0.5
  done
}

# Namespaces and cgroups left by a run that was killed before its cleanup (its PID is gone).
node_sweep_stale() {
  local ns pid
  for ns in $(ip netns list | awk -v p="$NODE_PREFIX" 'index($1, p) == 1 {print $1}'); do
    pid=${ns#"$NODE_PREFIX"}
    if ! kill -0 "$pid" 2>/dev/null; then
      echo "node: removing $ns, left by run $pid" >&2
      NODE_NETNS=$ns NODE_ID=$pid node_kill_leftovers
      ip netns delete "$ns" || true
      node_remove_cgroups "/$ns"
    fi
  done
}

node_remove_cgroups() {
  local root=$1 h
  for h in /sys/fs/cgroup/*/; do
    [ -d "$h$root" ] && find "$h$root" -depth -type d -exec rmdir {} \; 2>/dev/null
  done
  return 0
}

# Every process in our network namespace or our cgroups: only what this run started.
node_kill_leftovers() {
  local pids
  pids=$( { ip netns pids "$NODE_NETNS" 2>/dev/null || true
            find "/sys/fs/cgroup/pids/$NODE_PREFIX$NODE_ID" -name cgroup.procs -exec cat {} + 2>/dev/null || true
          } | sort -u)
  [ -n "$pids" ] && kill -KILL $pids 2>/dev/null
  return 0
}

# PKI: a CA, serving certs for the API server, client certs for each component and the admin.
node_pki() {
  local d=$NODE_WORK/pki
  mkdir -p "$d"
  openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj /CN=ipfs-image-node-ca \
    -keyout "$d/ca.key" -out "$d/ca.crt" -addext basicConstraints=critical,CA:TRUE \
    -addext keyUsage=critical,keyCertSign,cRLSign 2>/dev/null
  openssl genrsa -out "$d/sa.key" 2048 2>/dev/null
  openssl rsa -in "$d/sa.key" -pubout -out "$d/sa.pub" 2>/dev/null
  # cert NAME SUBJECT EXT_USAGE [SANS]
  cert() {
    openssl req -newkey rsa:2048 -nodes -subj "$2" -keyout "$d/$1.key" -out "$d/$1.csr" 2>/dev/null
    {
      echo "basicConstraints=CA:FALSE"
      echo "keyUsage=critical,digitalSignature,keyEncipherment"
      echo "extendedKeyUsage=$3"
      [ -n "${4:-}" ] && echo "subjectAltName=$4"
    } >"$d/$1.ext"
    openssl x509 -req -in "$d/$1.csr" -CA "$d/ca.crt" -CAkey "$d/ca.key" -CAcreateserial -days 2 \
      -extfile "$d/$1.ext" -out "$d/$1.crt" 2>/dev/null
  }
  cert apiserver /CN=kube-apiserver serverAuth \
    "IP:$NODE_IP,IP:$SERVICE_API_IP,IP:127.0.0.1,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local"
  cert kubelet-serving "/CN=$NODE_NAME" serverAuth "IP:$NODE_IP,DNS:$NODE_NAME"
  cert apiserver-kubelet-client "/O=kubeadm:cluster-admins/CN=kube-apiserver-kubelet-client" clientAuth
  cert admin "/O=system:masters/CN=admin" clientAuth
  cert kubelet "/O=system:nodes/CN=system:node:$NODE_NAME" clientAuth
  cert controller-manager /CN=system:kube-controller-manager clientAuth
  cert scheduler /CN=system:kube-scheduler clientAuth
  cert kube-proxy /CN=system:kube-proxy clientAuth
  local user
  for user in admin kubelet controller-manager scheduler kube-proxy; do
    cat >"$d/$user.kubeconfig" <<YAML
apiVersion: v1
kind: Config
clusters:
  - name: node
    cluster: {server: "https://$NODE_IP:6443", certificate-authority: "$d/ca.crt"}
users:
  - name: $user
    user: {client-certificate: "$d/$user.crt", client-key: "$d/$user.key"}
contexts:
  - name: node
    context: {cluster: node, user: $user}
current-context: node
YAML
  done
}

node_configs() {
  local w=$NODE_WORK
  mkdir -p "$w/containerd" "$w/etc-containerd" "$w/cni/net.d" "$w/cni/state" "$w/etc-containerd/certs.d" "$w/kubelet" "$w/etcd"
  if [ "${NODE_CONTAINERD:-1}" = 1 ]; then containerd1_config; else containerd2_config; fi >"$w/etc-containerd/config.toml"
  # One bridge on the node, host-local addresses from the pod range; no masquerade (nothing
  # is routed out of the namespace anyway).
  cat >"$w/cni/net.d/10-bridge.conflist" <<JSON
{
  "cniVersion": "1.0.0",
  "name": "ipfs-image-node",
  "plugins": [
    {
      "type": "bridge",
      "bridge": "cni0",
      "isGateway": true,
      "ipMasq": false,
      "hairpinMode": true,
      "ipam": {
        "type": "host-local",
        "dataDir": "$w/cni/state/ipam",
        "ranges": [[{"subnet": "$POD_CIDR"}]],
        "routes": [{"dst": "0.0.0.0/0"}]
      }
    }
  ]
}
JSON
  # The registries our own images and the demo images come from speak plain HTTP.
  local reg
  for reg in "$INFRA_REGISTRY" "$SOURCE_REGISTRY"; do
    mkdir -p "$w/etc-containerd/certs.d/$reg"
    printf 'server = "http://%s"\n\n[host."http://%s"]\n  capabilities = ["pull", "resolve"]\n' \
      "$reg" "$reg" >"$w/etc-containerd/certs.d/$reg/hosts.toml"
  done
  : >"$w/resolv.conf"
  cat >"$w/kubelet/config.yaml" <<YAML
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
# This machine: cgroup v1, no systemd, swap allowed.
failCgroupV1: false
cgroupDriver: cgroupfs
cgroupRoot: /$NODE_NETNS
failSwapOn: false
containerRuntimeEndpoint: unix://$w/containerd/containerd.sock
address: $NODE_IP
healthzBindAddress: 127.0.0.1
readOnlyPort: 0
tlsCertFile: $w/pki/kubelet-serving.crt
tlsPrivateKeyFile: $w/pki/kubelet-serving.key
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: true}
  x509: {clientCAFile: $w/pki/ca.crt}
authorization: {mode: Webhook}
# No cluster DNS in this cluster; pods get an empty resolv.conf of ours, not the machine's.
resolvConf: $w/resolv.conf
# kubelet sets vm.overcommit_memory, kernel.panic… itself (node_down restores them).
protectKernelDefaults: false
# The test machine's disk may be fuller than kubelet's defaults allow.
evictionHard: {memory.available: 100Mi, nodefs.available: "1%", imagefs.available: "1%", nodefs.inodesFree: "1%"}
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
serializeImagePulls: false
podLogsDir: $w/pod-logs
YAML
  cat >"$w/kube-proxy.yaml" <<YAML
apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
clientConnection: {kubeconfig: $w/pki/kube-proxy.kubeconfig}
mode: iptables
hostnameOverride: $NODE_NAME
bindAddress: $NODE_IP
healthzBindAddress: 127.0.0.1:10256
metricsBindAddress: 127.0.0.1:10249
clusterCIDR: $POD_CIDR
# 0: leave the machine's conntrack limits and timeouts alone (they are not per namespace).
# Keep the OOM score we have (lowering it needs CAP_SYS_RESOURCE).
oomScoreAdj: 0
conntrack: {maxPerCore: 0, min: 0, tcpEstablishedTimeout: 0s, tcpCloseWaitTimeout: 0s}
YAML
}

# containerd_base_config VERSION: what both config versions share (paths in the work dir, no
# snapshotters this machine lacks; an ID a version does not know is ignored).
containerd_base_config() {
  local w=$NODE_WORK
  cat <<TOML
version = $1
root = "$w/containerd/root"
state = "$w/containerd/state"
disabled_plugins = ["io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs",
  "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.aufs",
  "io.containerd.snapshotter.v1.erofs"]
[grpc]
  address = "$w/containerd/containerd.sock"
[ttrpc]
  address = "$w/containerd/containerd.sock.ttrpc"
[plugins."io.containerd.internal.v1.opt"]
  path = "$w/containerd/opt"
TOML
}

# containerd 1.6's config (version 2: the CRI plugin is io.containerd.grpc.v1.cri).
containerd1_config() {
  local w=$NODE_WORK
  containerd_base_config 2
  cat <<TOML
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "$PAUSE_IMAGE"
  stream_server_address = "127.0.0.1"
  # Pod network namespaces under containerd's state dir, not the machine's /var/run/netns.
  netns_mounts_under_state_dir = true
  enable_selinux = false
  # kubelet asks for negative OOM scores (-998 for sandboxes); without CAP_SYS_RESOURCE (as on
  # these machines) runc cannot set them, so keep every score at or above containerd's own.
  restrict_oom_score_adj = true
[plugins."io.containerd.grpc.v1.cri".containerd]
  snapshotter = "overlayfs"
  default_runtime_name = "runc"
[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
  runtime_type = "io.containerd.runc.v2"
[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
  SystemdCgroup = false
  Root = "$w/containerd/runc"
[plugins."io.containerd.grpc.v1.cri".cni]
  bin_dir = "/usr/lib/cni"
  conf_dir = "$w/cni/net.d"
[plugins."io.containerd.grpc.v1.cri".registry]
  config_path = "$w/etc-containerd/certs.d"
TOML
}

# containerd 2.x's config (version 3: CRI images and runtime are plugins of their own).
containerd2_config() {
  local w=$NODE_WORK
  containerd_base_config 3
  cat <<TOML
[plugins."io.containerd.grpc.v1.cri"]
  stream_server_address = "127.0.0.1"
[plugins."io.containerd.cri.v1.images"]
  snapshotter = "overlayfs"
[plugins."io.containerd.cri.v1.images".pinned_images]
  sandbox = "$PAUSE_IMAGE"
[plugins."io.containerd.cri.v1.images".registry]
  config_path = "$w/etc-containerd/certs.d"
[plugins."io.containerd.cri.v1.runtime"]
  enable_selinux = false
  # As for 1.6: no CAP_SYS_RESOURCE here, so no negative OOM scores.
  restrict_oom_score_adj = true
  netns_mounts_under_state_dir = true
[plugins."io.containerd.cri.v1.runtime".containerd]
  default_runtime_name = "runc"
[plugins."io.containerd.cri.v1.runtime".containerd.runtimes.runc]
  runtime_type = "io.containerd.runc.v2"
[plugins."io.containerd.cri.v1.runtime".containerd.runtimes.runc.options]
  SystemdCgroup = false
  Root = "$w/containerd/runc"
[plugins."io.containerd.cri.v1.runtime".cni]
  bin_dirs = ["/usr/lib/cni"]
  conf_dir = "$w/cni/net.d"
TOML
}

# registry_start NAME ADDR: docker-registry (Debian's distribution) with its data in the work dir.
registry_start() {
  local name=$1 addr=$2 d=$NODE_WORK/registry-$1
  mkdir -p "$d/data"
  printf 'version: 0.1\nlog: {level: warn}\nstorage: {filesystem: {rootdirectory: %s}, delete: {enabled: true}}\nhttp: {addr: %s}\n' \
    "$d/data" "$addr" >"$d/config.yml"
  start_daemon "registry-$name" docker-registry serve "$d/config.yml"
  wait_for "registry $name" 30 in_net curl -fsS "http://$addr/v2/"
}

registry_stop() { node_stop_daemon "registry-$1"; }

node_stop_daemon() {
  local name=$1 pid i
  [ -f "$NODE_WORK/pids/$name" ] || return 0
  pid=$(cat "$NODE_WORK/pids/$name")
  kill -TERM "$pid" 2>/dev/null || { rm -f "$NODE_WORK/pids/$name"; return 0; }
  for i in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  kill -KILL "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
  rm -f "$NODE_WORK/pids/$name"
  local rest=()
  for i in "${NODE_DAEMONS[@]}"; do [ "$i" = "$name" ] || rest+=("$i"); done
  NODE_DAEMONS=("${rest[@]}")
}

# node_up: the namespaces, the PKI, the control plane, containerd, kubelet and kube-proxy, and
# both registries. Needs NODE_WORK (an empty directory) and NODE_BIN (e2e/.deps/bin).
node_up() {
  NODE_ID=$$
  NODE_NETNS=$NODE_PREFIX$NODE_ID
  NODE_DAEMONS=()
  PAUSE_IMAGE=registry.k8s.io/pause:3.10
  node_select_containerd
  mkdir -p "$NODE_WORK/logs" "$NODE_WORK/pids" "$NODE_WORK/mnt"
  node_sweep_stale

  local t
  for t in "${KERNEL_TUNABLES[@]}"; do cat "/proc/sys/$t"; done >"$NODE_WORK/kernel-tunables"

  node_log "node: network namespace $NODE_NETNS (node IP $NODE_IP, pods $POD_CIDR, services $SERVICE_CIDR)"
  ip netns add "$NODE_NETNS"
  in_net ip link set lo up
  # A veth pair with both ends in the namespace: node0 holds the node IP, node1 has no
  # address and swallows whatever is sent to it.
  in_net ip link add node0 type veth peer name node1
  in_net ip addr add "$NODE_IP/24" dev node0
  in_net ip link set node1 up
  in_net ip link set node0 up
  # kubelet and kube-proxy want a default route; this one ends in node1.
  in_net ip route add default dev node0
  in_net sysctl -qw net.ipv4.ip_forward=1

  # A persistent mount namespace: private to the machine, shared inside (kubelet's volume
  # mounts must propagate to containerd's containers).
  mount --bind "$NODE_WORK/mnt" "$NODE_WORK/mnt"
  mount --make-private "$NODE_WORK/mnt"
  touch "$NODE_WORK/mnt/ns"
  unshare --mount="$NODE_WORK/mnt/ns" --propagation private sh -c 'mount --make-rshared /'

  # Directories kubelet, containerd and the CNI plugins write to whatever their config says:
  # inside our mount namespace each is a directory of the work dir.
  local dir
  : >"$NODE_WORK/created-dirs"
  for dir in "${NODE_PRIVATE_DIRS[@]}"; do
    [ -d "$dir" ] || { mkdir -p "$dir"; echo "$dir" >>"$NODE_WORK/created-dirs"; }
    mkdir -p "$NODE_WORK/private$dir"
    in_node mount --bind "$NODE_WORK/private$dir" "$dir"
  done

  # Cgroups of this run's pods, one root in every hierarchy.
  local h
  for h in /sys/fs/cgroup/*/; do
    case $h in */unified/) continue ;; esac
    mkdir -p "$h$NODE_NETNS"
  done

  node_pki
  node_configs

  node_log "node: starting etcd and the control plane"
  start_daemon etcd "$NODE_BIN/etcd" --data-dir "$NODE_WORK/etcd" --unsafe-no-fsync \
    --listen-client-urls http://127.0.0.1:2379 --advertise-client-urls http://127.0.0.1:2379 \
    --listen-peer-urls http://127.0.0.1:2380 --initial-advertise-peer-urls http://127.0.0.1:2380 \
    --initial-cluster default=http://127.0.0.1:2380 --listen-metrics-urls=
  wait_for etcd 60 in_net curl -fsS http://127.0.0.1:2379/health
  local p=$NODE_WORK/pki
  start_daemon kube-apiserver "$NODE_BIN/kube-apiserver" \
    --etcd-servers=http://127.0.0.1:2379 \
    --bind-address="$NODE_IP" --advertise-address="$NODE_IP" --secure-port=6443 \
    --service-cluster-ip-range="$SERVICE_CIDR" \
    --tls-cert-file="$p/apiserver.crt" --tls-private-key-file="$p/apiserver.key" \
    --client-ca-file="$p/ca.crt" \
    --kubelet-client-certificate="$p/apiserver-kubelet-client.crt" \
    --kubelet-client-key="$p/apiserver-kubelet-client.key" \
    --kubelet-certificate-authority="$p/ca.crt" \
    --service-account-issuer=https://kubernetes.default.svc.cluster.local \
    --service-account-key-file="$p/sa.pub" --service-account-signing-key-file="$p/sa.key" \
    --authorization-mode=Node,RBAC --enable-admission-plugins=NodeRestriction \
    --allow-privileged=true --profiling=false \
    --kubelet-preferred-address-types=InternalIP
  wait_for kube-apiserver 120 k get --raw /readyz
  # The admin cert is in system:masters; kubelet's serving cert is checked against our CA.
  k create clusterrolebinding apiserver-kubelet-client --clusterrole=system:kubelet-api-admin \
    --user=kube-apiserver-kubelet-client >/dev/null
  start_daemon kube-controller-manager "$NODE_BIN/kube-controller-manager" \
    --kubeconfig="$p/controller-manager.kubeconfig" \
    --authentication-kubeconfig="$p/controller-manager.kubeconfig" \
    --authorization-kubeconfig="$p/controller-manager.kubeconfig" \
    --bind-address=127.0.0.1 --use-service-account-credentials=true \
    --service-account-private-key-file="$p/sa.key" --root-ca-file="$p/ca.crt" \
    --cluster-signing-cert-file="$p/ca.crt" --cluster-signing-key-file="$p/ca.key" \
    --controllers='*,-nodeipam,-service,-route,-cloud-node-lifecycle' --leader-elect=false
  start_daemon kube-scheduler "$NODE_BIN/kube-scheduler" \
    --kubeconfig="$p/scheduler.kubeconfig" \
    --authentication-kubeconfig="$p/scheduler.kubeconfig" \
    --authorization-kubeconfig="$p/scheduler.kubeconfig" \
    --bind-address=127.0.0.1 --leader-elect=false

  node_log "node: starting containerd, kubelet and kube-proxy"
  # Its own runc shim first: Debian's (1.6) is also on PATH, and a 2.x daemon cannot use it.
  start_daemon containerd env PATH="$(dirname "$NODE_CONTAINERD_BIN"):$PATH" \
    "$NODE_CONTAINERD_BIN" --config "$NODE_WORK/etc-containerd/config.toml"
  wait_for containerd 60 node_ctr version
  node_import_pause
  start_daemon kubelet "$NODE_BIN/kubelet" --config="$NODE_WORK/kubelet/config.yaml" \
    --kubeconfig="$p/kubelet.kubeconfig" --root-dir="$NODE_WORK/kubelet" \
    --hostname-override="$NODE_NAME" --node-ip="$NODE_IP" --cert-dir="$NODE_WORK/kubelet/pki"
  start_daemon kube-proxy "$NODE_BIN/kube-proxy" --config="$NODE_WORK/kube-proxy.yaml"
  wait_for "node $NODE_NAME Ready" 180 node_ready

  node_log "node: starting the registries ($INFRA_REGISTRY: our images; $SOURCE_REGISTRY: images to import)"
  registry_start infra "$INFRA_REGISTRY"
  registry_start source "$SOURCE_REGISTRY"
}

node_ready() {
  [ "$(k get node "$NODE_NAME" -o jsonpath='{.status.conditions[?(@.type=="Ready")].status}')" = True ]
}

# The sandbox ("pause") image, built from the pinned Kubernetes module's pause.c and imported.
node_import_pause() {
  local src
  src=$(cd "$NODE_ROOT/e2e/tools/kubernetes" && go list -m -f '{{.Dir}}' k8s.io/kubernetes)/build/pause/linux
  mkdir -p "$NODE_WORK/pause"
  gcc -Os -static -DVERSION=3.10-ipfs-image -o "$NODE_WORK/pause/pause" "$src/pause.c"
  image_from_rootfs "$NODE_WORK/pause" "$PAUSE_IMAGE" '["/pause"]' '' 65535:65535
  buildah_ push -q "$PAUSE_IMAGE" "docker-archive:$NODE_WORK/pause.tar:$PAUSE_IMAGE" >/dev/null
  node_ctr -n k8s.io images import "$NODE_WORK/pause.tar" >/dev/null
}

buildah_() {
  buildah --root "$NODE_WORK/buildah/root" --runroot "$NODE_WORK/buildah/run" --storage-driver vfs "$@"
}

# image_from_rootfs DIR NAME ENTRYPOINT_JSON CMD_JSON USER [ENV…]: an image holding exactly DIR.
image_from_rootfs() {
  local dir=$1 name=$2 entrypoint=$3 cmd=$4 user=$5 c e
  shift 5
  c=$(buildah_ from scratch)
  buildah_ copy "$c" "$dir" / >/dev/null
  buildah_ config --entrypoint "$entrypoint" --user "$user" \
    --env PATH=/usr/local/bin:/usr/bin:/bin "$c"
  [ -n "$cmd" ] && buildah_ config --cmd "$cmd" "$c"
  for e in "$@"; do buildah_ config --env "$e" "$c"; done
  buildah_ commit -q --rm "$c" "$name" >/dev/null
}

# node_down: stop everything node_up started (kubelet first, so it restarts nothing), restore
# the kernel settings, remove the namespaces, cgroups and the work dir.
node_down() {
  [ -n "${NODE_NETNS:-}" ] || return 0
  local dir
  node_stop_daemon kube-proxy
  node_stop_daemon kubelet
  # The pods' containers: killed through containerd while it still runs.
  if [ -f "$NODE_WORK/pids/containerd" ]; then
    local id
    for id in $(node_ctr -n k8s.io tasks ls -q 2>/dev/null); do
      node_ctr -n k8s.io tasks kill -s SIGKILL "$id" >/dev/null 2>&1 || true
    done
  fi
  local name
  for name in prometheus registry-source registry-infra containerd kube-scheduler kube-controller-manager \
    kube-apiserver etcd; do
    node_stop_daemon "$name"
  done
  node_kill_leftovers
  if [ -f "$NODE_WORK/kernel-tunables" ]; then
    local t i=0 values
    mapfile -t values <"$NODE_WORK/kernel-tunables"
    for t in "${KERNEL_TUNABLES[@]}"; do
      [ "$(cat "/proc/sys/$t")" = "${values[$i]}" ] || echo "${values[$i]}" >"/proc/sys/$t"
      i=$((i + 1))
    done
  fi
  umount "$NODE_WORK/mnt/ns" 2>/dev/null || true
  # The mount points we had to create on the machine (empty: their content was ours).
  [ -f "$NODE_WORK/created-dirs" ] && while read -r dir; do rmdir "$dir" 2>/dev/null || true; done <"$NODE_WORK/created-dirs"
  umount "$NODE_WORK/mnt" 2>/dev/null || true
  ip netns delete "$NODE_NETNS" 2>/dev/null || true
  node_remove_cgroups "/$NODE_NETNS"
  NODE_NETNS=
}
