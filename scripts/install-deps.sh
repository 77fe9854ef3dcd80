#!/usr/bin/env bash
# Installs what the local stack and the build need on a fresh Debian/Ubuntu machine:
# Prometheus (real, scraped and queried by the tests), libmodsecurity + the OWASP CRS (the
# reference proxy's WAF engine) and pkg-config (to link libmodsecurity). Idempotent.
set -euo pipefail
packages=(prometheus libmodsecurity-dev modsecurity-crs pkg-config)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
  echo "install-deps: all present (${packages[*]})"
  exit 0
fi
sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"
echo "install-deps: installing ${missing[*]}"
$sudo apt-get update -qq
# --no-install-recommends: the prometheus package recommends exporters the harness does not use.
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
# The Debian package starts a system Prometheus on :9090 where an init system runs; the harness
# starts its own on free loopback ports and does not need it.
