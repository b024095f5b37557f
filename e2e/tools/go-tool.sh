#!/usr/bin/env bash
# go_tool NAME VERSION MODULE_DIR OUTPUTS GO_BUILD_ARGS…
# OUTPUTS: the binaries to keep, space-separated; `etcd=server` keeps Go's `server` as `etcd`.
# Builds Go programs from a wrapper module under e2e/tools/ (its go.mod pins the upstream module,
# its go.sum is checked in) into a cache keyed by name, version and Go version, outside the work
# tree, so a warm machine skips the build. Links the binaries into e2e/.deps/bin.
# Sourced by e2e/deps.sh.
tools_cache=${IPFS_IMAGE_TOOLS_CACHE:-/var/cache/ipfs-image-tools}
deps_bin="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)/.deps/bin"

go_tool() {
  local name=$1 version=$2 moddir=$3 outs=$4
  shift 4
  local gov; gov=$(go env GOVERSION)
  local dir="$tools_cache/$name-$version-$gov"
  local missing=0 o
  for o in $outs; do [ -x "$dir/${o%%=*}" ] || missing=1; done
  if [ "$missing" = 1 ]; then
    echo "deps: building $name $version with $gov (cached in $dir; a cold build takes minutes)…" >&2
    local start=$SECONDS tmp="$dir.tmp.$$"
    rm -rf "$tmp"; mkdir -p "$tmp"
    # -mod=readonly: the checked-in go.sum must already hold every module; nothing is re-resolved.
    (cd "$moddir" && CGO_ENABLED=${CGO_ENABLED:-0} GOFLAGS=-mod=readonly go build -trimpath -o "$tmp/" "$@") || {
      rm -rf "$tmp"; echo "deps: building $name $version failed" >&2; return 1; }
    for o in $outs; do case $o in *=*) mv "$tmp/${o#*=}" "$tmp/${o%%=*}" ;; esac; done
    rm -rf "$dir"; mv "$tmp" "$dir"
    echo "deps: built $name $version in $((SECONDS - start)) s" >&2
  fi
  mkdir -p "$deps_bin"
  for o in $outs; do ln -sfn "$dir/${o%%=*}" "$deps_bin/${o%%=*}"; done
}

# The module version a wrapper's go.mod requires.
go_mod_version() { awk -v m="$2" '$1 == "require" && $2 == m {print $3} $1 == m && !/=>/ {print $2}' "$1/go.mod" | head -n 1; }
