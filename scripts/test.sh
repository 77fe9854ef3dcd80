#!/usr/bin/env bash
# The project's test command: installs the system packages the tests need, then builds and runs
# every test, including a real local-stack run of every scenario (see README).
set -euo pipefail
cd "$(dirname "$0")/.."
# tests/schema_shared_crds.rs checks both profiles against the pinned releases' CRDs in ../shared/crds
# (or $WAF_E2E_SHARED_CRDS); a clone without them cannot run that check: say so last, loudly.
shared="${WAF_E2E_SHARED_CRDS:-../shared/crds}"
if [ ! -d "$shared" ]; then
  trap 'echo "NOTE: $shared is absent: the schema check against the pinned releases CRDs (tests/schema_shared_crds.rs) did NOT RUN" >&2' EXIT
fi
scripts/install-deps.sh
# The kind-only build must not need libmodsecurity (checked first so the test summary ends the output).
cargo check --no-default-features --all-targets
if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --no-fail-fast "$@"
else
  cargo test --no-fail-fast "$@"
fi
