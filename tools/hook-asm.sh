#!/usr/bin/env bash
# Counts, natively, the instructions of the two poll hooks' fast paths on the
# TSC clock: what callgrind cannot show (under valgrind the CPU reports no
# invariant TSC, so tools/poll-cost.sh runs the other clock's path).
#
#   tools/hook-asm.sh            # the bench profile as it is
#   tools/hook-asm.sh --lto      # with lto = "thin", as a production build may be
#   SHOW=1 tools/hook-asm.sh     # and print the instructions
#
# It builds benches/poll_cost.rs, disassembles the hook closures
# (`BlackboxHooks::install::{{closure}}`) and counts each one's fall-through
# path from its entry to its first `ret`: the path a poll takes when the
# thread's segment has room (every jump on it is a not-taken branch to the
# slow path). The poll start is the closure that reads the TSC without first
# testing a setting (no `cmpb`); the poll end is the one that reads no clock,
# stores 0 (the thread's current task) and writes one word (adds 0x10001 to
# the segment's fill: the spawn and terminate hooks write two or three). The `rdtsc` sequence (from the
# `rdtsc` to the `or` that joins its two halves) is reported apart.
#
# What `--lto` used to change: a library is compiled as position-independent
# code, so its thread-local accesses are general-dynamic (a call to
# __tls_get_addr) when registers are allocated; the linker relaxes them to one
# `%fs` access, but the registers saved around the "call" stay (67
# instructions). `install` is `#[inline]` now, so the closures are compiled in
# the program's crate, whose accesses are `%fs`-relative from the start: the
# same count (53 then) with or without LTO. Since the poll hooks hold the
# values they compare, read their fill from the segment and carry the spawn
# location as address bits (no cache lookup): 42.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
if [ "${1:-}" = --lto ]; then
  export CARGO_PROFILE_BENCH_LTO=thin
  export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-target}/lto"
fi
bin=$(cargo bench --bench poll_cost --no-run --message-format=json 2>/dev/null \
  | grep -o '"executable":"[^"]*poll_cost[^"]*"' | tail -1 | cut -d'"' -f4)
asm=$(mktemp)
trap 'rm -f "$asm"' EXIT
objdump -d --no-show-raw-insn -C "$bin" >"$asm"
awk -v show="${SHOW:-}" '
/^[0-9a-f]+ <.*>:$/ { inf = ($0 ~ /install::\{\{closure\}\}>:$/); n = 0; done = 0; body = ""; clock = 0; inclock = 0; next }
inf && !done && /^ +[0-9a-f]+:/ {
  n++; body = body "\n" $0
  if ($0 ~ /\trdtsc/) inclock = 1
  if (inclock) { clock++; if ($0 ~ /\tor /) inclock = 0 }
  if ($0 ~ /\tret/) {
    done = 1; what = ""
    if (body ~ /rdtsc/ && body !~ /cmpb/) what = "poll start"
    else if (body !~ /rdtsc/ && body ~ /movq +\$0x0,/ && body ~ /\$0x10001,/) what = "poll end"
    if (what == "") next
    own = n - clock
    printf "%s: %d instructions on its fast path (%d without the rdtsc sequence)\n", what, n, own
    total += own
    if (show) print body "\n"
  }
}
END { printf "both hooks: %d instructions, the clock read left out\n", total }
' "$asm"
