#!/usr/bin/env bash
# Install what the demo and the tests need on a fresh Debian machine (idempotent; run as root):
# Debian packages (registry, image tools, containerd, podman (it reads registries.conf as CRI-O does), runc, CNI plugins, iptables, protoc, openssl,
# matplotlib (e2e/dashboard draws the dashboard's panels with it)),
# and, built from their Go modules (wrapper modules under e2e/tools, go.sum checked in; cached by
# version outside the work tree; linked into e2e/.deps/bin): Kubo at the version the chart ships,
# Prometheus (the real-node test scrapes the chart's ServiceMonitors through its Kubernetes
# discovery, which Debian's package leaves out),
# etcd, Kubernetes (the control plane the API tests run against and the node e2e/node runs:
# kubelet, kube-proxy…) and containerd 2.x.
#
#   bash e2e/deps.sh              # both
#   bash e2e/deps.sh --packages   # the Debian packages only (what building the Rust code needs)
#   bash e2e/deps.sh --go-tools   # the Go tools only
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
what=${1:-all}
case $what in all | --packages | --go-tools) ;; *) echo "usage: $0 [--packages|--go-tools]" >&2; exit 2 ;; esac
pkgs=(docker-registry skopeo umoci busybox-static containerd runc apache2-utils protobuf-compiler buildah podman curl python3 unzip stargz-snapshotter iproute2 openssl
  containernetworking-plugins iptables conntrack gcc libc6-dev util-linux python3-matplotlib jq bc)
missing=()
for p in "${pkgs[@]}"; do dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p"); done
if [ "$what" != --go-tools ] && [ ${#missing[@]} -gt 0 ]; then
  echo "deps: installing ${missing[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  # The packages' postinst cannot start services here (no systemd); that is fine: we start our own.
  apt-get install -y -qq "${missing[@]}" >/dev/null
fi

[ "$what" != --packages ] || { echo "deps: packages ok" >&2; exit 0; }
command -v go >/dev/null || { echo "deps: Go (≥ 1.26) is required to build Kubo" >&2; exit 1; }
# shellcheck source=tools/go-tool.sh
. "$here/tools/go-tool.sh"

# Kubo: one version, the chart's (kubo.image.tag); the wrapper module must require the same.
kubo_version=$(awk '/^kubo:/ {k=1} k && /^    tag:/ {print $2; exit}' "$here/../charts/ipfs-image/values.yaml")
kubo_module=$(go_mod_version "$here/tools/kubo" github.com/ipfs/kubo)
if [ "$kubo_version" != "$kubo_module" ]; then
  echo "deps: the chart ships Kubo $kubo_version but e2e/tools/kubo/go.mod requires $kubo_module" >&2
  exit 1
fi
go_tool kubo "$kubo_version" "$here/tools/kubo" ipfs \
  -ldflags "-s -w -X github.com/ipfs/kubo.CurrentCommit=$kubo_version" github.com/ipfs/kubo/cmd/ipfs
echo "deps: $("$here/.deps/bin/ipfs" version) ($(readlink -f "$here/.deps/bin/ipfs"))" >&2

# etcd and Kubernetes: a real API server for every test that talks to Kubernetes.
etcd_version=$(go_mod_version "$here/tools/etcd" go.etcd.io/etcd/server/v3)
go_tool etcd "$etcd_version" "$here/tools/etcd" "etcd=server" -ldflags "-s -w" go.etcd.io/etcd/server/v3
echo "deps: $("$here/.deps/bin/etcd" --version | head -n 1)" >&2
k8s_version=$(go_mod_version "$here/tools/kubernetes" k8s.io/kubernetes)
k8s_ldflags() {
  # What upstream's build stamps, so /version (and Helm's kubeVersion checks) see the real version.
  local v=$1 info commit date minor
  info=$(cd "$here/tools/kubernetes" && go mod download -json "k8s.io/kubernetes@$v")
  commit=$(python3 -c 'import json,sys; print((json.load(sys.stdin).get("Origin") or {}).get("Hash", ""))' <<<"$info")
  date=$(python3 -c 'import json,sys; print(json.load(sys.stdin)["Time"])' <<<"$info")
  minor=${v#v1.}; minor=${minor%%.*}
  local p out="-s -w"
  for p in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    out+=" -X $p.gitVersion=$v -X $p.gitMajor=1 -X $p.gitMinor=$minor -X $p.gitTreeState=clean"
    out+=" -X $p.gitCommit=$commit -X $p.buildDate=$date"
  done
  echo "$out"
}
# The control plane and the node (e2e/node): one build compiles their shared packages once.
k8s_bins="kube-apiserver kubectl kube-controller-manager kube-scheduler kubelet kube-proxy"
for b in $k8s_bins; do
  [ -x "$tools_cache/kubernetes-$k8s_version-$(go env GOVERSION)/$b" ] || ldflags=$(k8s_ldflags "$k8s_version")
done
k8s_pkgs=()
for b in $k8s_bins; do k8s_pkgs+=("k8s.io/kubernetes/cmd/$b"); done
go_tool kubernetes "$k8s_version" "$here/tools/kubernetes" "$k8s_bins" \
  -tags selinux,notest,grpcnotrace -ldflags "${ldflags:-}" "${k8s_pkgs[@]}"
echo "deps: kube-apiserver $("$here/.deps/bin/kube-apiserver" --version | awk '{print $2}'), kubelet $("$here/.deps/bin/kubelet" --version | awk '{print $2}'), kubectl $("$here/.deps/bin/kubectl" version --client -o json | python3 -c 'import json,sys; print(json.load(sys.stdin)["clientVersion"]["gitVersion"])')" >&2
# containerd 2.x beside Debian's 1.6: every containerd test runs on both (its own shim too:
# containerd looks for containerd-shim-runc-v2 next to its own binary first).
containerd_version=$(go_mod_version "$here/tools/containerd" github.com/containerd/containerd/v2)
go_tool containerd "$containerd_version" "$here/tools/containerd" \
  "containerd2=containerd ctr2=ctr containerd-shim-runc-v2" -tags no_btrfs,no_devmapper,no_zfs \
  -ldflags "-s -w -X github.com/containerd/containerd/v2/version.Version=$containerd_version -X github.com/containerd/containerd/v2/version.Package=github.com/containerd/containerd/v2" \
  github.com/containerd/containerd/v2/cmd/containerd github.com/containerd/containerd/v2/cmd/ctr \
  github.com/containerd/containerd/v2/cmd/containerd-shim-runc-v2
echo "deps: $("$here/.deps/bin/containerd2" --version), and Debian's $(containerd --version | awk '{print $3}')" >&2
# Its Go module's v0.3XY.Z is Prometheus 3.XY.Z.
prom_version=$(go_mod_version "$here/tools/prometheus" github.com/prometheus/prometheus)
prom_release=${prom_version#v0.}; prom_release=${prom_release:0:1}.${prom_release:1}
go_tool prometheus "$prom_version" "$here/tools/prometheus" prometheus -tags remove_all_sd,enable_kubernetes_sd \
  -ldflags "-s -w -X github.com/prometheus/common/version.Version=$prom_release" \
  github.com/prometheus/prometheus/cmd/prometheus
echo "deps: $("$here/.deps/bin/prometheus" --version 2>&1 | head -n 1)" >&2
echo "deps: ok" >&2
