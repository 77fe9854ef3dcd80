#!/usr/bin/env bash
# Benchmarks the local suite with the release binary:
#   - each scenario alone vs all scenarios together, sequential (--jobs 1) vs concurrent (default --jobs);
#   - the settle latency per scenario (last response -> first scrape after it, the summary's `settle`
#     column) against the scrape interval, the floor: a scrape cannot be triggered, only awaited.
# Prints tables and checks the targets: all-concurrent <= 1.5 x the slowest single scenario, and
# every settle <= 2 scrape intervals. Exits non-zero if a run fails or a target is missed.
# Then the inner loop (issue 10): a fresh one-scenario run against the same scenario attached to a
# running `waf-e2e up`, the fresh run with `--runtime docker` (local images), and `waf-e2e watch`'s
# time from a change to the verdict. Target: the
# attached re-run takes at most half the fresh run's wall time.
# Then the scaling (issue 15): the 10 shipped scenarios against 50 (5 renamed copies of each,
# generated into the temporary directory), each with --jobs equal to its count: wall times, their
# ratio (target <= 1.3x), requests per second and the mean of each phase; the same for the isolated
# scenarios alone, since exclusive ones (gateway-wide exact counts) hold the gateway one after another
# by contract, each for at least two scrape intervals.
# Then the CRS regression corpus in both modes (target: within 60 s after the stack is up).
# Usage: scripts/bench.sh [SCRAPE_INTERVAL_MS] [inner|scaling|corpus]   (default 500, the CLI's default;
# `inner`: only the inner loop; `scaling`: only the scaling; `corpus`: only the corpus)
# WAF_E2E_BIN=path uses that binary instead of building the release one.
set -euo pipefail
cd "$(dirname "$0")/.."
interval_ms="${1:-500}"
only="${2:-all}"
if [ -z "${WAF_E2E_BIN:-}" ]; then cargo build --locked --release; fi
bin="${WAF_E2E_BIN:-${CARGO_TARGET_DIR:-target}/release/waf-e2e}"
work="$(mktemp -d -t waf-e2e-bench-XXXXXX)"
bg_pids=()
cleanup() {
  for pid in "${bg_pids[@]}"; do kill -INT "$pid" 2>/dev/null || true; done
  for pid in "${bg_pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT

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

# The summary table's rows: scenario result total install gate baseline traffic settle confirm audit audit-latency.
rows() { awk '/^scenario +result/ {on=1; next} / passed, / {on=0} on && NF == 11 {print}' "$1"; }

# wait_for FILE PATTERN COUNT: until FILE holds COUNT lines matching PATTERN (bounded: 120 s).
wait_for() {
  local i n
  for i in $(seq 1200); do
    n=$(grep -c -- "$2" "$1" 2>/dev/null) || n=0
    if [ "${n:-0}" -ge "$3" ]; then return 0; fi
    sleep 0.1
  done
  echo "bench: timed out waiting for $3 line(s) matching '$2' in $1" >&2; cat "$1" >&2; exit 1
}

inner_loop() {
  local one=sqli-blocked state="$work/up.json" fresh attached warm
  echo "inner loop: scenario $one"
  fresh=$(run fresh-one --scenario "$one")
  # The same fresh run with Prometheus and Envoy as containers (images built from this machine's binaries).
  local docker_fresh="" docker_flags
  if docker info >/dev/null 2>&1; then
    docker_flags=$(scripts/local-images.sh 2>/dev/null | tail -1)
    # shellcheck disable=SC2086 # the flags are words
    docker_fresh=$(run fresh-one-docker --scenario "$one" $docker_flags)
  fi
  "$bin" up --state "$state" --scrape-interval-ms "$interval_ms" >"$work/up.out" 2>"$work/up.err" &
  bg_pids+=($!)
  wait_for "$work/up.out" "attach with" 1
  warm=$(run attached-warmup --attach --state "$state" --scenario "$one")
  attached=$(run attached-one --attach --state "$state" --scenario "$one")
  kill -INT "${bg_pids[0]}"; wait "${bg_pids[0]}" || true
  mkdir -p "$work/watch/scenarios"
  cp "scenarios/$one.yaml" "$work/watch/scenarios/"
  cp -r fixtures/rendered "$work/watch/rendered"
  "$bin" watch --scenarios "$work/watch/scenarios" --rendered "$work/watch/rendered" --scrape-interval-ms "$interval_ms" \
    --diagnostics-dir "$work/diag-watch" >"$work/watch.out" 2>"$work/watch.err" &
  bg_pids+=($!)
  wait_for "$work/watch.out" "initial run (" 1
  printf '\n# edited by bench.sh\n' >>"$work/watch/scenarios/$one.yaml"
  wait_for "$work/watch.out" "^changed:" 1
  kill -INT "${bg_pids[1]}"; wait "${bg_pids[1]}" || true
  local watch_line; watch_line=$(grep "^changed:" "$work/watch.out" | head -1)
  printf '%-52s %8.2fs\n' "fresh run of $one (wall)" "$fresh"
  if [ -n "$docker_fresh" ]; then
    printf '%-52s %8.2fs\n' "fresh run of $one, --runtime docker (wall)" "$docker_fresh"
  else
    echo "fresh run of $one, --runtime docker: NOT MEASURED (no Docker engine answers)"
  fi
  printf '%-52s %8.2fs\n' "first attached run (Prometheus discovering Envoy)" "$warm"
  printf '%-52s %8.2fs\n' "attached re-run of $one (wall)" "$attached"
  printf '%-52s %8.2fx (target <= 0.50x)\n' "attached / fresh" "$(echo "$attached / $fresh" | bc -l)"
  echo "watch: ${watch_line}"
  if [ "$(echo "$attached > $fresh / 2" | bc -l)" -eq 1 ]; then echo "bench: MISSED: the attached re-run takes more than half the fresh run"; return 1; fi
  echo "bench: inner-loop target met"
}

# copies DIR N: N renamed copies (`<name>-cK`) of every shipped scenario into DIR; with `isolated`
# as a third argument, only the scenarios that are not exclusive.
copies() {
  local dir="$1" n="$2" f name k
  mkdir -p "$dir"
  for f in scenarios/*.yaml; do
    if [ "${3:-}" = isolated ] && grep -q '^exclusive: *true' "$f"; then continue; fi
    name=$(awk '/^name:/ {print $2; exit}' "$f")
    for k in $(seq "$n"); do sed "s/^name: .*/name: $name-c$k/" "$f" >"$dir/$name-c$k.yaml"; done
  done
}

# requests DIR: how many requests a run of DIR's scenarios sends (summed from `waf-e2e plan`).
requests() { "$bin" plan --stack local --scenarios "$1" | awk '/send [0-9]+ request/ {for (i = 1; i < NF; i++) if ($i == "send") n += $(i + 1)} END {print n + 0}'; }

# phases NAME: the mean of each phase column over the run's summary rows.
phases() {
  rows "$work/$1.out" | awk '{for (i = 4; i <= 10; i++) {v = $i; sub("s", "", v); t[i] += v}; n++}
    END {printf "install %.2fs gate %.2fs baseline %.2fs traffic %.2fs settle %.2fs confirm %.2fs audit %.2fs", t[4]/n, t[5]/n, t[6]/n, t[7]/n, t[8]/n, t[9]/n, t[10]/n}'
}

# scale_pair LABEL SMALL_DIR LARGE_DIR: runs both sets (each with --jobs its count), prints walls,
# ratio, requests per second and mean phases; sets $ratio.
scale_pair() {
  local label="$1" small="$2" large="$3" n_small n_large w_small w_large r_small r_large
  n_small=$(ls "$small"/*.yaml | wc -l); n_large=$(ls "$large"/*.yaml | wc -l)
  r_small=$(requests "$small"); r_large=$(requests "$large")
  w_small=$(run "scale-$label-$n_small" --scenarios "$small" --jobs "$n_small")
  w_large=$(run "scale-$label-$n_large" --scenarios "$large" --jobs "$n_large")
  ratio=$(echo "$w_large / $w_small" | bc -l)
  printf '%-34s %8.2fs %5d requests %7.1f req/s   mean %s\n' "$n_small $label scenarios" "$w_small" "$r_small" "$(echo "$r_small / $w_small" | bc -l)" "$(phases "scale-$label-$n_small")"
  printf '%-34s %8.2fs %5d requests %7.1f req/s   mean %s\n' "$n_large $label scenarios" "$w_large" "$r_large" "$(echo "$r_large / $w_large" | bc -l)" "$(phases "scale-$label-$n_large")"
  printf '%-34s %8.2fx (target <= 1.30x)\n' "$n_large / $n_small ($label)" "$ratio"
}

scaling() {
  echo "scaling: the shipped scenarios against 5 renamed copies of each"
  copies "$work/scale-all-50" 5
  copies "$work/scale-iso-9" 1 isolated
  copies "$work/scale-iso-45" 5 isolated
  local status=0 exclusive
  scale_pair all scenarios "$work/scale-all-50"
  if [ "$(echo "$ratio > 1.3" | bc -l)" -eq 1 ]; then
    # Each exclusive scenario holds the gateway alone for its own two scrapes (the one after its
    # traffic, and one more): its note says how long. Those windows run one after another.
    exclusive=$(grep -o 'held the gateway alone for [0-9.]*s' "$work/scale-all-50.out" | awk '{v = $6; sub("s", "", v); t += v; n++}
      END {printf "%d exclusive window(s), one after another, %.2fs in all; the floor is 2 scrape intervals each, %.2fs", n, t, n * 2 * '"$interval_ms"' / 1000}')
    echo "bench: MISSED: 50 scenarios take more than 1.3x the 10 ($exclusive)"
    status=1
  fi
  scale_pair isolated "$work/scale-iso-9" "$work/scale-iso-45"
  if [ "$(echo "$ratio > 1.3" | bc -l)" -eq 1 ]; then echo "bench: MISSED: 45 isolated scenarios take more than 1.3x the 9"; status=1; fi
  [ "$status" -eq 0 ] && echo "bench: scaling target met"
  return "$status"
}

# The CRS regression corpus (issue 15): both modes on one local stack; prints the wall time per
# mode and in total after the stack is up (target: within 60 s), requests per second, the counts
# per rule family and the number of overridden tests. Without the corpus: NOT MEASURED.
corpus_bench() {
  local corpus="${WAF_E2E_CRS_CORPUS:-../shared/crs-regression-v3.3.4}"
  if [ ! -d "$corpus" ]; then echo "corpus: NOT MEASURED ($corpus is absent)"; return 0; fi
  if ! "$bin" corpus "$corpus" --mode both --overrides corpus/overrides.yaml --scrape-interval-ms "$interval_ms" \
      --report json "$work/corpus.json" >"$work/corpus.out" 2>"$work/corpus.err"; then
    echo "bench: the corpus run failed:" >&2; cat "$work/corpus.out" "$work/corpus.err" >&2; return 1
  fi
  local rc=0
  python3 - "$work/corpus.json" <<'PY' || rc=$?
import json, sys
run = json.load(open(sys.argv[1]))
for m in run["modes"]:
    print(f"corpus {m['mode']:<9} {m['requests']:5d} requests  traffic {m['traffic_seconds']:6.2f}s ({m['requests_per_second']:5.0f} requests/s)  mode {m['wall_seconds']:6.2f}s")
total = run["seconds_after_stack_up"]
print(f"corpus, both modes, after the stack is up: {total:.2f}s (target <= 60s)")
print(f"{'family':<7} {'tests':>6} {'passed':>7} {'overridden':>10} {'failed':>7} {'disabled':>9} {'decisions':>10}")
for f, r in run["families"].items():
    print(f"{f:<7} {r['tests']:6d} {r['passed']:7d} {r['overridden'] + r['overridden_but_passing']:10d} {r['failed'] + r['answered_by_envoy']:7d} {r['disabled']:9d} {r['decisions']:10d}")
overridden = sum(r["overridden"] + r["overridden_but_passing"] for r in run["families"].values())
print(f"overridden tests: {overridden} of {len(run['tests'])} ({100 * overridden / len(run['tests']):.1f}%)")
sys.exit(0 if total <= 60 else 1)
PY
  if [ "$rc" -ne 0 ]; then echo "bench: MISSED: the corpus took more than 60 s after the stack was up"; return 1; fi
  echo "bench: corpus target met"
}

if [ "$only" = inner ]; then inner_loop; exit $?; fi
if [ "$only" = scaling ]; then scaling; exit $?; fi
if [ "$only" = corpus ]; then corpus_bench; exit $?; fi

scenarios=$(awk '/^name:/ {print $2}' scenarios/*.yaml | sort)
printf '%-24s %9s %9s\n' "scenario (alone)" "wall" "settle"
slowest=0
for s in $scenarios; do
  wall=$(run "alone-$s" --scenario "$s")
  settle=$(rows "$work/alone-$s.out" | awk '{sub("s","",$8); print $8}')
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
while read -r name _ _ _ _ baseline _ settle _ audit latency; do
  settle=${settle%s}
  intervals=$(echo "$settle * 1000 / $interval_ms" | bc -l)
  printf '%-24s %7.2fs %9.2fx %9s %9s %10s\n' "$name" "$settle" "$intervals" "$baseline" "$audit" "$latency"
  if [ "$(echo "$settle > $limit" | bc -l)" -eq 1 ]; then over=1; fi
done < <(rows "$work/all-conc.out")
status=0
if [ "$(echo "$ratio > 1.5" | bc -l)" -eq 1 ]; then echo "bench: MISSED: concurrent run is more than 1.5x the slowest single scenario"; status=1; fi
if [ "$over" -eq 1 ]; then echo "bench: MISSED: a settle latency exceeds two scrape intervals"; status=1; fi
[ "$status" -eq 0 ] && echo "bench: targets met"
echo
inner_loop || status=1
echo
scaling || status=1
echo
corpus_bench || status=1
exit "$status"
