#!/usr/bin/env bash
# Container images without Docker, sourced by e2e/node/run.sh (after node.sh): buildah images
# made from files on this machine, pushed to the node's registries with `buildah push`.
# - operator and agent: the release binaries, at the paths and with the users, entrypoints and
#   commands read from docker/*.Dockerfile (the images published from machines with Docker);
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

# dockerfile_field FILE KEY: the value of the last KEY instruction (USER, ENTRYPOINT, CMD) of a
# docker/*.Dockerfile, so the images built here and the published ones agree by construction.
dockerfile_field() {
  awk -v k="$2" '$1 == k {sub("^" k "[ \t]+", ""); v = $0} END {print v}' "$1"
}

# image_like_dockerfile DIR NAME DOCKERFILE: an image of DIR with the Dockerfile's user,
# entrypoint and command.
image_like_dockerfile() {
  local entrypoint cmd user
  entrypoint=$(dockerfile_field "$3" ENTRYPOINT)
  cmd=$(dockerfile_field "$3" CMD)
  user=$(dockerfile_field "$3" USER)
  [ -n "$entrypoint" ] && [ -n "$user" ] || node_die "$3: no ENTRYPOINT or USER"
  image_from_rootfs "$1" "$2" "$entrypoint" "$cmd" "$user"
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

  local component dockerfile
  for component in operator agent; do
    dockerfile=$NODE_ROOT/docker/$component.Dockerfile
    rootfs_add_base "$r/$component"
    # Where the Dockerfile puts the binary: the last word of its last COPY.
    rootfs_add_binary "$r/$component" "$NODE_ROOT/target/release/ipfs-image-$component" \
      "$(dockerfile_field "$dockerfile" COPY | awk '{print $NF}')"
  done
  image_like_dockerfile "$r/operator" "$OPERATOR_REPO:$tag" "$NODE_ROOT/docker/operator.Dockerfile"
  image_like_dockerfile "$r/agent" "$AGENT_REPO:$tag" "$NODE_ROOT/docker/agent.Dockerfile"

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
