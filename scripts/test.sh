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
# tests/it/schema_shared_crds.rs checks both profiles against the pinned releases' CRDs in ../shared/crds
# (or $WAF_E2E_SHARED_CRDS); a clone without them cannot run that check: say so last, loudly.
# tests/it/docker_runtime.rs runs Prometheus and Envoy as containers of images scripts/local-images.sh
# builds; without a Docker engine those tests cannot run: say so last, loudly. With one, they must pass.
notes=()
shared="${WAF_E2E_SHARED_CRDS:-../shared/crds}"
if [ ! -d "$shared" ]; then
  notes+=("NOTE: $shared is absent: the schema check against the pinned releases' CRDs (tests/it/schema_shared_crds.rs) did NOT RUN")
fi
if docker info >/dev/null 2>&1; then
  export WAF_E2E_REQUIRE_DOCKER=1
else
  notes+=("NOTE: no Docker engine answers \`docker info\`: the --runtime docker tests (tests/it/docker_runtime.rs) did NOT RUN")
fi
# The OWASP CRS regression corpus (FTW YAML, ../shared/crs-regression-v3.3.4 or $WAF_E2E_CRS_CORPUS) runs
# through the local stack in both modes after the tests, with the debug binary they built; a clone
# without it cannot run it: say so last, loudly. The corpus is never copied into the repository.
corpus="${WAF_E2E_CRS_CORPUS:-../shared/crs-regression-v3.3.4}"
if [ ! -d "$corpus" ]; then
  notes+=("NOTE: $corpus is absent: the CRS regression corpus (waf-e2e corpus, both modes) did NOT RUN")
fi
trap 'for n in "${notes[@]}"; do echo "$n" >&2; done' EXIT
scripts/install-deps.sh
# Most integration tests wait (for Prometheus' discovery, scrapes, Envoy's log flush) far more
# than they compute: run three per CPU. Measured on 2 CPUs: 270 s of tests at 2 at a time,
# 116 s at 6 (README, "The test command").
threads="${WAF_E2E_TEST_THREADS:-$(( $(nproc) * 3 ))}"
if cargo nextest --version >/dev/null 2>&1; then
  # Kind-only first, so the full run's summary closes the output.
  cargo nextest run --locked --no-default-features --lib
  cargo nextest run --locked --no-fail-fast --test-threads "$threads" "$@"
else
  cargo test --locked --no-default-features --lib
  cargo test --locked --no-fail-fast "$@" -- --test-threads "$threads"
fi
if [ -d "$corpus" ]; then
  "${CARGO_TARGET_DIR:-target}/debug/waf-e2e" corpus "$corpus" --mode both --overrides corpus/overrides.yaml \
    --junit "${CARGO_TARGET_DIR:-target}/waf-e2e-corpus.junit.xml"
fi
