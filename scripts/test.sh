#!/usr/bin/env bash
# The project's test command: installs the system packages the tests need, then builds and runs
# every test, including a real local-stack run of every scenario (see README).
#
# Everything is built once, in one profile (dev) with one dependency graph: the kind-only build
# (without the `reference-proxy` feature, so without libmodsecurity) is proven by running the
# library's unit tests without that feature. Those share every dependency artifact with the full
# test build; a `cargo check` would compile every dependency a second time, as metadata only.
# `--locked`: build exactly the dependency versions in Cargo.lock, never re-resolve them.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
if cargo nextest --version >/dev/null 2>&1; then
  # Kind-only first, so the full run's summary closes the output.
  cargo nextest run --locked --no-default-features --lib
  cargo nextest run --locked --no-fail-fast "$@"
else
  cargo test --locked --no-default-features --lib
  cargo test --locked --no-fail-fast "$@"
fi
