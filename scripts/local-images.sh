#!/usr/bin/env bash
# Builds the images `--runtime docker` runs, from the binaries installed on this machine, for places
# where no registry can be reached (the official images cannot be pulled there):
#   waf-e2e-local/prometheus:v<version>  from `prometheus` on PATH (Debian's package)
#   waf-e2e-local/envoy:v<version>       from the project-local Envoy (.tools/pip, scripts/install-deps.sh)
# Each is FROM scratch: the binary at the path the official image has it, plus the shared libraries
# `ldd` lists and the dynamic loader. Idempotent (docker's cache makes a rebuild take a second).
# The LAST line printed is the flags that select these images, e.g.
#   --runtime docker --prometheus-image waf-e2e-local/prometheus:v2.42.0 --envoy-image waf-e2e-local/envoy:v1.37.0
set -euo pipefail
cd "$(dirname "$0")/.."

die() { echo "local-images: $*" >&2; exit 1; }
command -v docker >/dev/null || die "docker is not installed"
docker info >/dev/null 2>&1 || die "the Docker engine does not answer (is it running, and may this user use it?)"
prometheus=$(command -v prometheus) || die "prometheus is not on PATH: run scripts/install-deps.sh"
envoy=${WAF_E2E_ENVOY:-.tools/pip/envoy/_bin/envoy}
[ -x "$envoy" ] || die "no Envoy at $envoy: run scripts/install-deps.sh (or set WAF_E2E_ENVOY)"

prometheus_version=$("$prometheus" --version 2>&1 | sed -n 's/^prometheus, version \([0-9][0-9.]*\).*/\1/p' | head -1)
envoy_version=$("$envoy" --version | sed -n 's/.*version: [0-9a-f]*\/\([0-9][0-9.]*\)\/.*/\1/p' | head -1)
[ -n "$prometheus_version" ] || die "could not read the version of $prometheus"
[ -n "$envoy_version" ] || die "could not read the version of $envoy"

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# build IMAGE BINARY PATH-IN-IMAGE: a FROM scratch image holding BINARY at PATH-IN-IMAGE, its libraries and loader.
build() {
  local image=$1 binary=$2 inside=$3 context
  context=$(mktemp -d -p "$work")
  mkdir -p "$context/rootfs$(dirname "$inside")" "$context/rootfs/tmp"
  cp -L "$binary" "$context/rootfs$inside"
  # Every absolute path ldd prints: the libraries (after "=>") and the loader (alone on its line).
  ldd "$binary" | grep -o '/[^ )]*' | sort -u | while read -r lib; do
    mkdir -p "$context/rootfs$(dirname "$lib")"
    cp -L "$lib" "$context/rootfs$lib"
  done
  chmod 1777 "$context/rootfs/tmp"
  cat > "$context/Dockerfile" <<EOF
FROM scratch
COPY rootfs/ /
ENTRYPOINT ["$inside"]
LABEL io.waf-e2e.built-from="$binary"
EOF
  # The output is shown only when the build fails (the legacy builder warns on every build).
  docker build --quiet --tag "$image" "$context" >"$context/build.log" 2>&1 || { cat "$context/build.log" >&2; die "building $image failed"; }
  echo "local-images: built $image from $binary ($(du -sh "$context/rootfs" | cut -f1))" >&2
}

prometheus_image="waf-e2e-local/prometheus:v${prometheus_version}"
envoy_image="waf-e2e-local/envoy:v${envoy_version}"
build "$prometheus_image" "$prometheus" /bin/prometheus
build "$envoy_image" "$envoy" /usr/local/bin/envoy
echo "--runtime docker --prometheus-image ${prometheus_image} --envoy-image ${envoy_image}"
