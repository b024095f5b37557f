#!/usr/bin/env bash
# Regenerates manifests/install.yaml from the Helm chart with default values, after copying the
# generated CRD (crds/ipfsimage.dev_ipfsimages.yaml) into the chart's crds/:
#   e2e/chart/render-install.sh            # writes charts/ipfs-image/crds/ and manifests/install.yaml
#   e2e/chart/render-install.sh --stdout   # prints it instead (e2e/chart/test.sh diffs this)
# Needs helm 3 (e2e/chart/deps.sh installs one under e2e/.deps/helm/bin).
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
helm=${HELM:-}
if [ -z "$helm" ]; then
  if [ -x "$root/e2e/.deps/helm/bin/helm" ]; then helm="$root/e2e/.deps/helm/bin/helm"; else helm=helm; fi
fi

render() {
  cat <<'HEADER'
# ipfs-image-operator: everything for `kubectl apply -f manifests/install.yaml`.
#
# Generated; do not edit. It is the Helm chart charts/ipfs-image with default values:
#   helm template ipfs-image charts/ipfs-image --namespace ipfs-image --include-crds \
#     --set swarmKey.existingSecret=ipfs-image-swarm-key
# with the Namespace below added. The private network's key is not in this file (everyone
# applying it would share one): create it once, and the Pods start when it exists:
#   kubectl -n ipfs-image create secret generic ipfs-image-swarm-key --from-file=swarm.key=<(
#     printf '/key/swarm/psk/1.0.0/\n/base16/\n%s\n' "$(od -vN 32 -An -tx1 /dev/urandom | tr -d ' \n')") Regenerate with e2e/chart/render-install.sh;
# e2e/chart/test.sh fails when this file differs from a fresh render.
#
# containerd on every node must read registry hosts from /etc/containerd/certs.d
# (config_path); see the README. Use the chart to change any setting.
---
apiVersion: v1
kind: Namespace
metadata:
  name: ipfs-image
  labels:
    app.kubernetes.io/name: ipfs-image
    app.kubernetes.io/part-of: ipfs-image-operator
    # The agent needs hostNetwork and hostPath volumes (containerd's config_path, its Kubo repo).
    pod-security.kubernetes.io/enforce: privileged
HEADER
  "$helm" template ipfs-image "$root/charts/ipfs-image" --namespace ipfs-image --include-crds \
    --set swarmKey.existingSecret=ipfs-image-swarm-key
}

if [ "${1:-}" = --stdout ]; then
  render
else
  cp "$root/crds/ipfsimage.dev_ipfsimages.yaml" "$root/charts/ipfs-image/crds/ipfsimage.dev_ipfsimages.yaml"
  out="$root/manifests/install.yaml"
  render >"$out.tmp"
  mv "$out.tmp" "$out"
  echo "wrote $out" >&2
fi
