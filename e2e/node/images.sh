#!/usr/bin/env bash
# Container images without Docker, sourced by e2e/node/run.sh (after node.sh): buildah images
# made from files on this machine, pushed to the node's registries with `buildah push`.
# - operator and agent: the release binaries, at the paths and with the users, entrypoints and
#   commands of docker/*.Dockerfile (the images published from machines with Docker);
# - kubo: the Kubo binary e2e/deps.sh built (the chart's version) plus busybox, for the
#   chart's init script and probes (`/bin/sh`, `stat`, `chown`…);
# - demo images in the source registry: busybox (imported into IPFS by the test) and a
#   second one no IpfsImage holds (pulled from upstream through the mirror's fallback).

# rootfs_add_binary DIR BIN DEST: BIN at DEST in DIR, with the shared libraries it loads.
rootfs_add_binary() {
  local dir=$1 bin=$2 dest=$3 lib
  install -D -m 0755 "$bin" "$dir$dest"
  for lib in $(ldd "$bin" 2>/dev/null | awk '$2 == "=>" && $3 ~ /^\// {print $3} $1 ~ /^\// {print $1}'); do
    [ -e "$dir$lib" ] || install -D -m 0755 "$(readlink -f "$lib")" "$dir$lib"
  done
}

# rootfs_add_busybox DIR: /bin/busybox and a link per applet.
rootfs_add_busybox() {
  local dir=$1 applet
  install -D -m 0755 /bin/busybox "$dir/bin/busybox"
  for applet in $(/bin/busybox --list); do
    [ -e "$dir/bin/$applet" ] || ln -s busybox "$dir/bin/$applet"
  done
}

# rootfs_add_base DIR: the few files every image here needs (CA roots for HTTPS registries,
# a tmp dir, passwd entries for the users the chart runs as).
rootfs_add_base() {
  local dir=$1
  mkdir -p "$dir/etc/ssl/certs" "$dir/tmp"
  chmod 1777 "$dir/tmp"
  [ -f /etc/ssl/certs/ca-certificates.crt ] && cp /etc/ssl/certs/ca-certificates.crt "$dir/etc/ssl/certs/"
  printf 'root:x:0:0:root:/root:/sbin/nologin\nipfs:x:1000:100::/data/ipfs:/sbin/nologin\nnonroot:x:65532:65532::/home/nonroot:/sbin/nologin\n' >"$dir/etc/passwd"
  printf 'root:x:0:\nusers:x:100:\nnonroot:x:65532:\n' >"$dir/etc/group"
}

# images_push NAME REF: push a local buildah image to a registry of the node (plain HTTP).
images_push() {
  in_net buildah --root "$NODE_WORK/buildah/root" --runroot "$NODE_WORK/buildah/run" \
    --storage-driver vfs push -q --tls-verify=false "$1" "docker://$2" >/dev/null
}

# build_images TAG: operator, agent and kubo images in the infra registry, and the demo images
# in the source registry. Sets OPERATOR_REPO, AGENT_REPO, KUBO_REPO, KUBO_TAG.
build_images() {
  local tag=$1 r=$NODE_WORK/rootfs
  OPERATOR_REPO=$INFRA_REGISTRY/ipfs-image/operator
  AGENT_REPO=$INFRA_REGISTRY/ipfs-image/agent
  KUBO_REPO=$INFRA_REGISTRY/ipfs-image/kubo
  KUBO_TAG=$("$NODE_BIN/ipfs" version --number)
  KUBO_TAG=v${KUBO_TAG#v}

  rootfs_add_base "$r/operator"
  rootfs_add_binary "$r/operator" "$NODE_ROOT/target/release/ipfs-image-operator" /usr/local/bin/ipfs-image-operator
  image_from_rootfs "$r/operator" "$OPERATOR_REPO:$tag" '["/usr/local/bin/ipfs-image-operator"]' '["run"]' 65532:65532

  rootfs_add_base "$r/agent"
  rootfs_add_binary "$r/agent" "$NODE_ROOT/target/release/ipfs-image-agent" /usr/local/bin/ipfs-image-agent
  image_from_rootfs "$r/agent" "$AGENT_REPO:$tag" '["/usr/local/bin/ipfs-image-agent"]' '["serve"]' 0:0

  rootfs_add_base "$r/kubo"
  rootfs_add_busybox "$r/kubo"
  rootfs_add_binary "$r/kubo" "$(readlink -f "$NODE_BIN/ipfs")" /usr/local/bin/ipfs
  mkdir -p "$r/kubo/data/ipfs"
  image_from_rootfs "$r/kubo" "$KUBO_REPO:$KUBO_TAG" '[]' '["ipfs", "daemon"]' 1000:100 IPFS_PATH=/data/ipfs

  # Demo images: busybox, and the same plus one file (so no layer is shared with the first).
  rootfs_add_busybox "$r/busybox"
  mkdir -p "$r/busybox/tmp"
  image_from_rootfs "$r/busybox" "$SOURCE_REGISTRY/demo/busybox:1" '[]' '["sh"]' 0:0
  cp -a "$r/busybox" "$r/upstream-only"
  echo "pulled from upstream, never imported" >"$r/upstream-only/upstream-only.txt"
  image_from_rootfs "$r/upstream-only" "$SOURCE_REGISTRY/demo/upstream-only:1" '[]' '["sh"]' 0:0

  local ref
  for ref in "$OPERATOR_REPO:$tag" "$AGENT_REPO:$tag" "$KUBO_REPO:$KUBO_TAG" \
    "$SOURCE_REGISTRY/demo/busybox:1" "$SOURCE_REGISTRY/demo/upstream-only:1"; do
    images_push "$ref" "$ref"
    echo "images: pushed $ref" >&2
  done
}
