#!/usr/bin/env bash
# The main job on any machine: every scenario on the local stack (real Prometheus, real
# ModSecurity + CRS, the reference proxy standing in for Envoy + the WAF filter), with JUnit.
# On a machine with docker and kind, `cargo run --release -- run` runs the same scenarios on kind.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
cargo run --release --quiet -- run --stack local --junit target/waf-e2e-local.junit.xml "$@"
