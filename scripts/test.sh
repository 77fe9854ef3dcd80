#!/usr/bin/env bash
# The project's test command: installs the system packages the tests need, then builds and runs
# every test, including a real local-stack run of every scenario (see README).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
# The kind-only build must not need libmodsecurity (checked first so the test summary ends the output).
cargo check --no-default-features --all-targets
if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --no-fail-fast "$@"
else
  cargo test --no-fail-fast "$@"
fi
