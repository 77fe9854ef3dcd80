#!/usr/bin/env bash
# Benchmarks the local suite with the release binary:
#   - each scenario alone vs all scenarios together, sequential (--jobs 1) vs concurrent (default --jobs);
#   - the settle latency per scenario (last response -> first scrape after it, the summary's `settle`
#     column) against the scrape interval, the floor: a scrape cannot be triggered, only awaited.
# Prints tables and checks the targets: all-concurrent <= 1.5 x the slowest single scenario, and
# every settle <= 2 scrape intervals. Exits non-zero if a run fails or a target is missed.
# Usage: scripts/bench.sh [SCRAPE_INTERVAL_MS]   (default 500, the CLI's default)
set -euo pipefail
cd "$(dirname "$0")/.."
interval_ms="${1:-500}"
cargo build --locked --release
bin="${CARGO_TARGET_DIR:-target}/release/waf-e2e"
work="$(mktemp -d -t waf-e2e-bench-XXXXXX)"
trap 'rm -rf "$work"' EXIT

# run NAME ARGS... : runs waf-e2e, stores stdout in $work/NAME.out, prints the wall time in seconds.
run() {
  local name="$1"; shift
  local t0 t1
  t0=$(date +%s.%N)
  if ! "$bin" run --stack local --scrape-interval-ms "$interval_ms" --diagnostics-dir "$work/diag-$name" "$@" >"$work/$name.out" 2>"$work/$name.err"; then
    echo "bench: run $name failed:" >&2
    cat "$work/$name.out" "$work/$name.err" >&2
    exit 1
  fi
  t1=$(date +%s.%N)
  echo "$t1 - $t0" | bc -l
}

# The summary table's rows: scenario result total install baseline traffic settle confirm audit audit-latency.
rows() { awk '/^scenario +result/ {on=1; next} / passed, / {on=0} on && NF == 10 {print}' "$1"; }

scenarios=$(awk '/^name:/ {print $2}' scenarios/*.yaml | sort)
printf '%-24s %9s %9s\n' "scenario (alone)" "wall" "settle"
slowest=0
for s in $scenarios; do
  wall=$(run "alone-$s" --scenario "$s")
  settle=$(rows "$work/alone-$s.out" | awk '{sub("s","",$7); print $7}')
  printf '%-24s %8.2fs %8.2fs\n' "$s" "$wall" "$settle"
  slowest=$(echo "if ($wall > $slowest) $wall else $slowest" | bc -l)
done
all_seq=$(run all-seq --jobs 1)
all_conc=$(run all-conc)
count=$(echo "$scenarios" | wc -w)
echo
printf '%-40s %8.2fs\n' "slowest single scenario (wall)" "$slowest"
printf '%-40s %8.2fs\n' "all $count scenarios, --jobs 1 (wall)" "$all_seq"
printf '%-40s %8.2fs\n' "all $count scenarios, default --jobs (wall)" "$all_conc"
ratio=$(echo "$all_conc / $slowest" | bc -l)
printf '%-40s %8.2fx (target <= 1.50x)\n' "concurrent / slowest single" "$ratio"
echo
limit=$(echo "2 * $interval_ms / 1000" | bc -l)
printf 'settle latency in the concurrent run (scrape interval %.2fs = the floor, limit 2 intervals = %.2fs)\n' "$(echo "$interval_ms / 1000" | bc -l)" "$limit"
printf '%-24s %8s %10s %9s %9s %10s\n' "scenario" "settle" "intervals" "baseline" "audit" "audit lat"
over=0
while read -r name _ _ _ baseline _ settle _ audit latency; do
  settle=${settle%s}
  intervals=$(echo "$settle * 1000 / $interval_ms" | bc -l)
  printf '%-24s %7.2fs %9.2fx %9s %9s %10s\n' "$name" "$settle" "$intervals" "$baseline" "$audit" "$latency"
  if [ "$(echo "$settle > $limit" | bc -l)" -eq 1 ]; then over=1; fi
done < <(rows "$work/all-conc.out")
status=0
if [ "$(echo "$ratio > 1.5" | bc -l)" -eq 1 ]; then echo "bench: MISSED: concurrent run is more than 1.5x the slowest single scenario"; status=1; fi
if [ "$over" -eq 1 ]; then echo "bench: MISSED: a settle latency exceeds two scrape intervals"; status=1; fi
[ "$status" -eq 0 ] && echo "bench: targets met"
exit "$status"
