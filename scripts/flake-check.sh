#!/usr/bin/env bash
# Runs the whole local suite N times (default 30) with the release binary, built once, and reports
# the pass count and the wall-time spread (min / median / max). Exits non-zero unless every run passed.
# Usage: scripts/flake-check.sh [N] [extra `waf-e2e run` args...]
set -euo pipefail
cd "$(dirname "$0")/.."
n="${1:-30}"
shift || true
cargo build --locked --release
bin="${CARGO_TARGET_DIR:-target}/release/waf-e2e"
logs="$(mktemp -d -t waf-e2e-flake-XXXXXX)"
passed=0
times=()
for i in $(seq 1 "$n"); do
  t0=$(date +%s.%N)
  set +e
  "$bin" run --stack local --diagnostics-dir "$logs/diag-$i" "$@" >"$logs/run-$i.out" 2>"$logs/run-$i.err"
  rc=$?
  set -e
  t1=$(date +%s.%N)
  secs=$(echo "$t1 - $t0" | bc -l)
  times+=("$secs")
  if [ "$rc" -eq 0 ]; then
    passed=$((passed + 1))
    printf 'run %2d/%d: pass  %6.2fs\n' "$i" "$n" "$secs"
  else
    printf 'run %2d/%d: EXIT %d %6.2fs (logs: %s/run-%d.*)\n' "$i" "$n" "$rc" "$secs" "$logs" "$i"
  fi
done
sorted=($(printf '%s\n' "${times[@]}" | sort -g))
count=${#sorted[@]}
median=$(printf '%s\n' "${sorted[@]}" | awk '{a[NR]=$1} END {if (NR % 2) print a[(NR+1)/2]; else print (a[NR/2] + a[NR/2+1]) / 2}')
printf 'flake-check: %d/%d passed; wall time min %.2fs, median %.2fs, max %.2fs\n' "$passed" "$n" "${sorted[0]}" "$median" "${sorted[$((count - 1))]}"
[ "$passed" -eq "$n" ] && rm -rf "$logs"
[ "$passed" -eq "$n" ]
