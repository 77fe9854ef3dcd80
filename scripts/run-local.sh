#!/usr/bin/env bash
# The main job on any machine: every scenario on the local stack (a real Envoy 1.37.0 and a real
# Prometheus, the stand-in WAF filter deciding with ModSecurity + CRS), with JUnit.
# Extra arguments go to `waf-e2e run`, e.g. `$(scripts/local-images.sh | tail -1)` for containers.
# On a machine with docker and kind, `cargo run -- run` runs the same scenarios on kind.
#
# It builds in cargo's dev profile, like scripts/test.sh, so whichever of the two runs second
# reuses most of the first one's build; cargo prints its progress on stderr.
# `--locked`: build exactly the dependency versions in Cargo.lock, never re-resolve them.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
cargo run --locked -- run --stack local --junit target/waf-e2e-local.junit.xml "$@"
