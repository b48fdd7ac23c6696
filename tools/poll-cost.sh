#!/usr/bin/env bash
# Counts the instructions the recorder's hooks add per task poll, with
# valgrind's callgrind: instruction counts do not depend on how busy the
# machine is. Runs benches/poll_cost.rs (4 tasks x 30,000 yield_now polls on
# 2 workers) collecting only inside the hook closures, and divides by polls.
#
#   tools/poll-cost.sh
#
# Note: under valgrind the CPU does not report an invariant TSC, so the clock
# falls back from `rdtsc` to clock_gettime; the script reports the clock's
# share separately (the `quanta::Clock::raw` and clock_gettime calls).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-target}"
bin=$(cargo bench --bench poll_cost --no-run --message-format=json 2>/dev/null \
  | grep -o '"executable":"[^"]*poll_cost[^"]*"' | tail -1 | cut -d'"' -f4)
yields=30000
polls=$((4 * (yields + 1)))
out=$(mktemp -d)
polls_fmt=$(echo "$polls" | sed ':a;s/\B[0-9]\{3\}\>/,&/;ta')
clock_read=0
for mode in clock_only hooks hooks_schedule_delay; do
  POLL_COST_MODE=$mode POLL_COST_YIELDS=$yields valgrind --tool=callgrind \
    --callgrind-out-file="$out/$mode" "$bin" >/dev/null 2>&1
  callgrind_annotate --inclusive=yes --auto=yes "$out/$mode" >"$out/$mode.txt" 2>/dev/null || true
  # Tokio calls each poll hook exactly once per poll; the call lines carry the
  # count, e.g. "=> src/hooks.rs:...install::{{closure}} (120,004x)".
  closure="install::{{closure}}"
  [ "$mode" = clock_only ] && closure="main::{{closure}}"
  hooks=$(awk -v pat="$closure (${polls_fmt}x)" \
    'index($0, pat) {gsub(",", "", $1); s += $1} END {print s + 0}' "$out/$mode.txt")

  per_poll=$(( hooks / polls ))
  if [ "$mode" = clock_only ]; then
    # Two clock reads per poll and nothing else: one read's cost under valgrind.
    clock_read=$(( per_poll / 2 ))
    echo "clock: $clock_read instructions per clock read under valgrind (clock_gettime; natively one inline rdtsc)"
    continue
  fi
  own=$(( per_poll - clock_read ))
  echo "$mode: $per_poll instructions per poll in the two poll hooks, both events, one clock read included;" \
    "the recorder's own: $own (without the clock read)"
  echo "$mode $own" >>"$out/own"
done
# For CI (tools/bench.sh and .ci): the recorder's own instructions per poll.
if [ -n "${POLL_COST_OUT:-}" ]; then cp "$out/own" "$POLL_COST_OUT"; fi
rm -rf "$out"
