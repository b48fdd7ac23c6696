#!/usr/bin/env bash
# Runs every test of tokio-blackbox, from a fresh machine with Rust and Go:
#
#   tools/test-all.sh
#
# 0. installs chromium and valgrind from Debian's packages if missing;
# 1. builds the test peers (Jaeger v2, an OpenTelemetry Collector) from the Go
#    module proxy (tools/build-peers.sh; cached after the first run);
# 2. formatting and clippy (warnings are errors); the library's default
#    dependency tree carries none of the command's crates (clap, indicatif, trycmd);
# 3. unit, integration and doc tests of the library and the command (cli/,
#    both default members) with --cfg tokio_unstable (the default, from
#    .cargo/config.toml): real runtimes, real Jaeger and Collector;
#    then services/ (a service as users write one, with our crate added
#    as the README says) against Jaeger, built alone so only its features unify;
# 4. the tests again without tokio_unstable (what a plain build records);
# 5. loom models of the segments, the open-request table and the location table (--cfg blackbox_loom);
# 6. benches build, docs build without warnings;
# 7. the overhead harness's light mode (tools/bench.sh --ci): instructions
#    added per poll and per request span under callgrind, failing over +10%
#    of bench/baseline.toml;
# 8. both packages publish (`cargo publish --workspace --dry-run`) and ship
#    only what a user needs;
# 9. the README's demo command runs and captures its slow requests.
#
# Build outputs go to CARGO_TARGET_DIR (default: target/); the variants of
# steps 4 and 5 use their own folders beside it so they do not evict each other.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$REPO/target}"
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"
export RUST_BACKTRACE=1
step() { printf '\n=== %s (%s)\n' "$1" "$(date -u +%H:%M:%S)"; }
# Every cargo test's output also goes to this log, to total the results at the end.
results="$(mktemp)"
trap 'rm -f "$results"' EXIT
ctest() { cargo test "$@" 2>&1 | tee -a "$results"; }

step "system packages"
# Chromium renders the HTML timeline in its test; valgrind counts instructions
# (tools/poll-cost.sh); openssl makes the TLS test's certificates. Installed from Debian's packages when missing.
need=()
command -v chromium >/dev/null 2>&1 || need+=(chromium)
command -v valgrind >/dev/null 2>&1 || need+=(valgrind)
command -v openssl >/dev/null 2>&1 || need+=(openssl)
if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    DEBIAN_FRONTEND=noninteractive apt-get update -q
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${need[@]}"
  else
    echo "missing: ${need[*]} (install them, e.g. apt-get install ${need[*]})" >&2
    exit 1
  fi
fi
echo "chromium: $(command -v chromium), valgrind: $(command -v valgrind), openssl: $(command -v openssl)"

step "test peers: jaeger and otelcol"
tools/build-peers.sh
export BLACKBOX_PEERS_DIR="${BLACKBOX_PEERS_DIR:-$CARGO_TARGET_DIR/peers}"

step "rustfmt"
cargo fmt --all -- --check

step "clippy"
# The default members: the library and the command (cli/).
cargo clippy --all-targets --all-features -- -D warnings
# The bench and tokio-tracing-check members (not default members: checked by name).
cargo clippy -p blackbox-bench --all-targets -- -D warnings
cargo clippy -p tokio-blackbox-tokio-tracing-check --all-targets -- -D warnings
cargo clippy -p tokio-blackbox-services --all-targets -- -D warnings

step "the library's default dependencies carry no command crate"
# What a service that depends on tokio-blackbox builds: no clap, indicatif or
# trycmd (reqwest and tonic only as the OTLP exporter needs them).
lib_tree="$(cargo tree -e normal -p tokio-blackbox --prefix none --format '{p}')"
if grep -E '^(clap|indicatif|trycmd) ' <<<"$lib_tree"; then
  echo "the library's default dependency tree has a command dependency (above)" >&2
  exit 1
fi
echo "none of clap, indicatif, trycmd in the library's $(sort -u <<<"$lib_tree" | wc -l) dependencies"

step "the library turns on no feature of opentelemetry-otlp that changes the app's exporter"
# An HTTP client feature switches the app's exporter to that client (Cargo
# unifies features); TLS providers and http-json likewise change the app.
otlp_features="$(cargo tree -p tokio-blackbox -e features,normal -i opentelemetry-otlp | grep -oE 'opentelemetry-otlp feature "[a-z-]+"' | sort -u)"
if grep -E '"(reqwest-client|hyper-client|reqwest-blocking-client|reqwest-rustls|tls-ring|tls-aws-lc|tls-roots|tls-webpki-roots|http-json|zstd-http|zstd-tonic)"' <<<"$otlp_features"; then
  echo "the library's default features turn on the opentelemetry-otlp features above" >&2
  exit 1
fi
echo "$otlp_features" | tr '\n' ' '; echo

step "tests (tokio_unstable)"
# The soak (tests/runtimes_come_and_go.rs) runs for two minutes here, at
# about 300,000 events/s; 20 s when run on its own.
export SOAK_SECS="${SOAK_SECS:-120}"
ctest --all-features --no-fail-fast

step "tests with Tokio's tracing feature (tokio-tracing-check/)"
# Its own package, built alone: Tokio's `tracing` feature reaches only this
# build, not the library's other tests (workspace features unify per build).
ctest -p tokio-blackbox-tokio-tracing-check

step "a real service (services/) against Jaeger, over OTLP/HTTP and gRPC"
# Its own package, built alone: only its dependencies' features unify, as in
# a user's service (the command's and the tests' features stay out).
ctest -p tokio-blackbox-services

step "tests without tokio_unstable"
RUSTFLAGS="" CARGO_TARGET_DIR="$CARGO_TARGET_DIR/no-unstable" \
  ctest --lib --test without_tokio_unstable

step "loom models of the segments, the request table and the address table"
RUSTFLAGS="--cfg tokio_unstable --cfg blackbox_loom" LOOM_MAX_PREEMPTIONS=3 \
  CARGO_TARGET_DIR="$CARGO_TARGET_DIR/loom" ctest --release --lib -- segments:: requests:: capture::address_table::

step "benches build"
# The library's and the command's (cli/benches/summary.rs).
cargo bench --no-run

step "overhead harness, light mode: instruction counts vs bench/baseline.toml"
BENCH_JOBS="${BENCH_JOBS:-$(nproc)}" tools/bench.sh --ci

step "docs"
# The default members: the library and the command (cli/).
RUSTDOCFLAGS="-D warnings" cargo doc --no-deps --all-features

step "the packages publish: cargo publish --workspace --dry-run"
# Both packages (the library and the command) are packaged and built from
# their packaged sources, the command against the packaged library (issue
# 29). A package holds only what a user needs: no tests, tools, benches,
# deployment files or measurements.
for pkg in tokio-blackbox tokio-blackbox-cli; do
  listed="$(cargo package -p "$pkg" --list --allow-dirty 2>/dev/null)"
  if grep -E '^(tests|tools|benches|deploy|bench|rel)/|\.bbx$|^BENCHMARKS\.md$|^RELIABILITY\.md$' <<<"$listed"; then
    echo "the package $pkg ships the files above" >&2
    exit 1
  fi
  echo "$pkg: $(wc -l <<<"$listed") files"
done
# A packaged crate of an earlier run has the same version (0.1.0), and cargo
# reuses its unpacked copy (under CARGO_HOME, keyed by the local registry's
# path) for the command's verification build: start from none of either.
# Cargo also takes a registry crate's build for immutable: the library
# built from an earlier run's package would be linked as it was.
rm -rf "$CARGO_TARGET_DIR/package"
rm -rf "${CARGO_HOME:-$HOME/.cargo}"/registry/src/*/tokio-blackbox-[0-9]*
rm -rf "$CARGO_TARGET_DIR"/debug/.fingerprint/tokio-blackbox-* "$CARGO_TARGET_DIR"/debug/deps/libtokio_blackbox-*
cargo publish --workspace --dry-run --allow-dirty 2>&1 | grep -vE '^warning: ignoring (test|benchmark|example) ' | tail -5

step "the README's demo"
demo_dir="$(mktemp -d)"
# From the repository root, as the README says: .cargo/config.toml (with
# --cfg tokio_unstable) is found from the working directory.
env -u OTEL_EXPORTER_OTLP_ENDPOINT -u OTEL_EXPORTER_OTLP_TRACES_ENDPOINT BLACKBOX_DIR="$demo_dir" \
  cargo run --release --example demo -- --duration 4s | tee "$demo_dir/demo.out"
grep -q "task hooks: on" "$demo_dir/demo.out" || { echo "the demo ran without task hooks" >&2; exit 1; }
windows=$(grep -c '"blackbox.window"' "$demo_dir/traces.otlp.jsonl" || true)
rm -rf "$demo_dir"
if [ "${windows:-0}" -lt 1 ]; then
  echo "the demo captured no window" >&2
  exit 1
fi
echo "the demo wrote $windows export request(s) with a blackbox.window span"

step "all tests passed"
awk '/^test result:/ {p += $4; f += $6} END {printf "tests: %d passed, %d failed\n", p, f}' "$results"
