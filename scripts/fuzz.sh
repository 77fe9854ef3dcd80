#!/usr/bin/env bash
# Runs the property tests in tests/it/fuzz.rs (scenario loader, audit-line parser, audit-log reader,
# Prometheus body decoder) for about SECONDS seconds (default 60): rounds of PROPTEST_CASES cases
# per property, each round with fresh random inputs, until the time is up. Exits non-zero on the
# first failing or hanging round (proptest prints the minimal failing input).
# Usage: scripts/fuzz.sh [SECONDS] ; CASES=N scripts/fuzz.sh sets the cases per round (default 5000).
set -euo pipefail
cd "$(dirname "$0")/.."
seconds="${1:-60}"
cases="${CASES:-5000}"
cargo test --release --test it --no-run --quiet
start=$(date +%s)
rounds=0
while :; do
  now=$(date +%s)
  left=$(( start + seconds - now ))
  [ "$left" -gt 0 ] || break
  rounds=$((rounds + 1))
  # A round that outlives the budget by far is a hang: fail it rather than wait.
  if ! PROPTEST_CASES="$cases" timeout "$(( left + 120 ))" cargo test --release --quiet --test it fuzz:: -- --test-threads=2 >/tmp/waf-e2e-fuzz.$$.log 2>&1; then
    cat /tmp/waf-e2e-fuzz.$$.log
    rm -f /tmp/waf-e2e-fuzz.$$.log
    echo "fuzz: round $rounds FAILED (see above)" >&2
    exit 1
  fi
done
rm -f /tmp/waf-e2e-fuzz.$$.log
echo "fuzz: clean: $rounds round(s) x $cases cases x 7 properties in $(( $(date +%s) - start ))s"
