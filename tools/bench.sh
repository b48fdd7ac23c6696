#!/usr/bin/env bash
# The side-by-side overhead comparison of issue 9 (bench/, package blackbox-bench).
#
#   tools/bench.sh [--rounds R] [--secs S] [--bytes-secs S]   full comparison → BENCHMARKS.md
#   tools/bench.sh --ci                                       instruction counts vs bench/baseline.toml
#   tools/bench.sh --ci --record                              ... and write them as the new baseline
#
# Full mode builds two binaries: the normal one (every variant but console) in
# $CARGO_TARGET_DIR (default target-bench/), and the console one with
# `--features console` in $BENCH_CONSOLE_TARGET_DIR (default
# target-bench-console/): Tokio's `tracing` feature, which console-subscriber
# needs, would otherwise be unified into every variant of the build. Then
# `blackbox-bench compare` runs every variant against plain, interleaved, one
# process a run, and writes BENCHMARKS.md with the callgrind counts of --ci.
#
# --ci: under valgrind --tool=callgrind, the fixed workloads of `blackbox-bench
# count` (current-thread runtime; collection toggled on only inside
# `bench_measured_region`, so the recorder's background threads and the
# setup are not counted) for plain, registry and blackbox. Instructions added
# = (blackbox − baseline variant − clock) / units, where baseline is plain for
# polls and registry for request spans, and clock is the inclusive cost of the
# clock reads (the symbols in bench/baseline.toml's clock_symbols): valgrind
# hides the invariant TSC, so the clock falls back from one rdtsc to
# clock_gettime, an artefact of valgrind that the count leaves out (natively a
# read is one rdtsc). The request number also leaves out the difference in
# glibc's allocator entry points (inclusive): the same calls cost more or less
# with the heap's layout. Fails when either number grows more than 10% over
# bench/baseline.toml. Takes ~30 s once the bench is built.
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$REPO/target-bench}"
CONSOLE_DIR="${BENCH_CONSOLE_TARGET_DIR:-$REPO/target-bench-console}"
JOBS="${BENCH_JOBS:-1}"

ci=0 record=0 pass=()
while [ $# -gt 0 ]; do
  case "$1" in
    --ci) ci=1 ;;
    --record) record=1 ;;
    *) pass+=("$1") ;;
  esac
  shift
done

build() { cargo build --release -q -j"$JOBS" -p blackbox-bench "$@"; }
# --ci needs plain, registry and blackbox only: built without dial9 (the
# largest dependency tree) so a CI run from empty caches stays short.
if [ "$ci" = 1 ]; then build --no-default-features; else build; fi
bin="$CARGO_TARGET_DIR/release/blackbox-bench"

# Instruction counts: prints a markdown table, sets POLL and REQUEST.
count() {
  local out n_polls=20000 n_requests=5000 n_polls_1k=200000
  out="$(mktemp -d)"
  clock_re=$(sed -n 's/^clock_symbols *= *"\(.*\)"/\1/p' bench/baseline.toml)
  cg() { # variant workload n → instructions collected; also the clock's share
    valgrind --tool=callgrind --toggle-collect=bench_measured_region --collect-atstart=no \
      --callgrind-out-file="$out/$1.$2" "$bin" count "$1" "$2" --n "$3" >"$out/$1.$2.log" 2>&1 \
      || { cat "$out/$1.$2.log" >&2; exit 1; }
    awk '/^totals:/ {print $2}' "$out/$1.$2"
  }
  clock() { # inclusive Ir of the recorder's clock-read function(s)
    callgrind_annotate --inclusive=yes --threshold=100 "$out/$1.$2" 2>/dev/null \
      | awk -v re="$clock_re" '$0 ~ re {gsub(",", "", $1); s += $1} END {print s + 0}'
  }
  units() { sed -n 's/.*units=\([0-9]*\).*/\1/p' "$out/$1.$2.log"; }
  alloc() { # inclusive Ir of glibc's allocator entry points (matched by their exported names)
    callgrind_annotate --inclusive=yes --threshold=100 "$out/$1.$2" 2>/dev/null \
      | awk '/libc\.so/ && /:(malloc|free|calloc|realloc|posix_memalign|aligned_alloc|memalign)(@[^ ]*)? / {gsub(",", "", $1); s += $1} END {print s + 0}'
  }
  p_plain=$(cg plain polls $n_polls); p_bb=$(cg blackbox polls $n_polls)
  # 1,000 tasks from 8 spawn sites: a per-task or per-location cache that
  # stops hitting on a service's task count shows here.
  k_plain=$(cg plain polls-1k $n_polls_1k); k_bb=$(cg blackbox polls-1k $n_polls_1k)
  r_reg=$(cg registry requests $n_requests); r_bb=$(cg blackbox requests $n_requests)
  r_plain=$(cg plain requests $n_requests)
  polls=$(units blackbox polls); reqs=$(units blackbox requests)
  p_clock=$(( $(clock blackbox polls) - $(clock plain polls) ))
  r_clock=$(( $(clock blackbox requests) - $(clock registry requests) ))
  POLL=$(( (p_bb - p_plain - p_clock) / polls ))
  polls_1k=$(units blackbox polls-1k)
  k_clock=$(( $(clock blackbox polls-1k) - $(clock plain polls-1k) ))
  POLL_1K=$(( (k_bb - k_plain - k_clock) / polls_1k ))
  r_alloc=$(( $(alloc blackbox requests) - $(alloc registry requests) ))
  REQUEST_ALL=$(( (r_bb - r_reg - r_clock) / reqs ))
  REQUEST=$(( (r_bb - r_reg - r_clock - r_alloc) / reqs ))
  REGISTRY=$(( (r_reg - r_plain) / reqs ))
  cat <<EOF
\`tools/bench.sh --ci\`: valgrind --tool=callgrind, collection only inside \`bench_measured_region\`
(a current-thread runtime running the workload), $polls polls (4 tasks) and $reqs sequential requests.
Added = (blackbox − baseline − clock reads) / units; the clock reads (\`$clock_re\`,
inclusive) are left out because under valgrind the clock falls back from \`rdtsc\` to
\`clock_gettime\` (natively one \`rdtsc\` a read).

| what | instructions | baseline | clock reads left out |
|---|---|---|---|
| plain, per poll | $(( p_plain / polls )) | - | - |
| added by blackbox per poll (both poll hooks, spawn and terminate shared out) | $POLL | plain | $(( p_clock / polls )) per poll |
| the same on 1,000 tasks from 8 spawn sites ($polls_1k polls) | $POLL_1K | plain | $(( k_clock / polls_1k )) per poll |
| registry, per request (its span: new, enter/exit ×3, close) over plain | $REGISTRY | plain | - |
| added by blackbox per request (layer on the request span + hooks of its ~5 polls), the allocator included | $REQUEST_ALL | registry | $(( r_clock / reqs )) per request |
| the same without the allocator's difference (checked against the baseline) | $REQUEST | registry | $(( r_alloc / reqs )) per request in the allocator |

The allocator (glibc's \`malloc\`, \`free\`, \`posix_memalign\`, … inclusive) is left out of the
checked request number: the recorder allocates nothing per request, and the same calls cost
±200 instructions a request with the heap's layout (a build of the workload moves it).
EOF
  rm -rf "$out"
}

if [ "$ci" = 1 ]; then
  command -v valgrind >/dev/null || { echo "tools/bench.sh --ci needs valgrind" >&2; exit 1; }
  count
  base_poll=$(sed -n 's/^poll *= *\([0-9]*\).*/\1/p' bench/baseline.toml)
  base_req=$(sed -n 's/^request *= *\([0-9]*\).*/\1/p' bench/baseline.toml)
  base_poll_1k=$(sed -n 's/^poll_1k *= *\([0-9]*\).*/\1/p' bench/baseline.toml)
  if [ "$record" = 1 ]; then
    sed -i "s/^poll *= *[0-9]*/poll = $POLL/; s/^poll_1k *= *[0-9]*/poll_1k = $POLL_1K/; s/^request *= *[0-9]*/request = $REQUEST/" bench/baseline.toml
    echo "recorded in bench/baseline.toml: poll = $POLL, poll_1k = $POLL_1K, request = $REQUEST"
    exit 0
  fi
  fail=0
  for pair in "poll $POLL $base_poll" "poll_1k $POLL_1K $base_poll_1k" "request $REQUEST $base_req"; do
    set -- $pair
    limit=$(( $3 + $3 / 10 ))
    if [ "$2" -gt "$limit" ]; then
      echo "FAIL: instructions added per $1: $2, more than 10% over the recorded $3 (limit $limit)" >&2
      fail=1
    else
      echo "ok: instructions added per $1: $2 (recorded $3, limit $limit)"
    fi
  done
  exit $fail
fi

# Full comparison.
console_args=()
if CARGO_TARGET_DIR="$CONSOLE_DIR" build --features console; then
  console_args=(--console-bin "$CONSOLE_DIR/release/blackbox-bench")
else
  echo "the console build failed: comparing without the console variant" >&2
fi
cg_table="$(mktemp)"
if command -v valgrind >/dev/null; then count >"$cg_table"; fi
"$bin" compare "${pass[@]}" "${console_args[@]}" --callgrind "$cg_table" \
  --command "tools/bench.sh ${pass[*]}" --out "$REPO/BENCHMARKS.md"
rm -f "$cg_table"
