#!/usr/bin/env bash
# Builds the test peers of tokio-blackbox from source with Go, from the Go
# module proxy only (no Docker, no release downloads):
#
#   jaeger            Jaeger v2 (Go module github.com/jaegertracing/jaeger
#                     v1.76.0 = Jaeger 2.13.0), pinned by tools/jaeger/go.mod
#                     and go.sum
#   otelcol-blackbox  an OpenTelemetry Collector built with the Collector
#                     Builder (ocb) from tools/otelcol/builder-config.yaml
#
# Usage: tools/build-peers.sh [--force] [jaeger] [otelcol]
#   (no component named = both; --force rebuilds even when up to date)
#
# Output: ${BLACKBOX_PEERS_DIR:-${CARGO_TARGET_DIR:-<repo>/target}/peers}/
#   {jaeger, otelcol-blackbox}, each with a .stamp file naming the pinned
#   version and a hash of the inputs; a re-run with the same stamp skips the
#   build. The Go module and build caches stay at Go's defaults (~/go/pkg/mod,
#   ~/.cache/go-build) so CI on the same machine reuses them; ocb itself is
#   installed into ${XDG_CACHE_HOME:-~/.cache}/tokio-blackbox/ocb-<version>/.
#
# From empty caches on a 2-core machine each build takes several minutes
# (see tools/README.md); with warm Go caches ~5 s each; up to date: ~50 ms.
set -euo pipefail

# The Collector release; must match every version in builder-config.yaml.
OCB_VERSION=v0.161.0

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PEERS_DIR="${BLACKBOX_PEERS_DIR:-${CARGO_TARGET_DIR:-$REPO/target}/peers}"
TOOLS_CACHE="${XDG_CACHE_HOME:-$HOME/.cache}/tokio-blackbox"

force=0
want_jaeger=0
want_otelcol=0
for arg in "$@"; do
  case "$arg" in
    --force) force=1 ;;
    jaeger) want_jaeger=1 ;;
    otelcol | otelcol-blackbox | collector) want_otelcol=1 ;;
    -h | --help)
      awk 'NR > 1 && !/^#/ { exit } NR > 1 { sub(/^# ?/, ""); print }' "${BASH_SOURCE[0]}"
      exit 0
      ;;
    *)
      echo "build-peers.sh: unknown argument '$arg' (accepted: --force, jaeger, otelcol)" >&2
      exit 2
      ;;
  esac
done
if [[ $want_jaeger == 0 && $want_otelcol == 0 ]]; then
  want_jaeger=1
  want_otelcol=1
fi

# Go: take the one on PATH, else the usual install location.
if ! command -v go >/dev/null 2>&1; then
  if [[ -x /usr/local/go/bin/go ]]; then
    export PATH="/usr/local/go/bin:$PATH"
  else
    echo "build-peers.sh: no 'go' on PATH and none at /usr/local/go/bin/go; install Go >= 1.25" >&2
    exit 1
  fi
fi

mkdir -p "$PEERS_DIR"
echo "build-peers: $(go version), peers dir $PEERS_DIR"

hash_files() {
  cat "$@" | sha256sum | cut -c1-16
}

# up_to_date BINARY STAMP_TEXT: true when BINARY exists and BINARY.stamp
# holds exactly STAMP_TEXT.
up_to_date() {
  [[ $force == 0 && -x "$1" && -f "$1.stamp" && "$(cat "$1.stamp")" == "$2" ]]
}

elapsed() {
  local s=$(($(date +%s) - $1))
  printf '%dm%02ds' $((s / 60)) $((s % 60))
}

build_jaeger() {
  local dir="$REPO/tools/jaeger"
  local version
  version="$(awk '$1 == "github.com/jaegertracing/jaeger" { print $2; exit }' "$dir/go.mod")"
  if [[ -z "$version" ]]; then
    echo "build-peers: tools/jaeger/go.mod does not require github.com/jaegertracing/jaeger" >&2
    exit 1
  fi
  local out="$PEERS_DIR/jaeger"
  local stamp="jaeger $version inputs $(hash_files "$dir/go.mod" "$dir/go.sum")"
  if up_to_date "$out" "$stamp"; then
    echo "build-peers: jaeger $version is up to date: $out"
    return
  fi
  echo "build-peers: building jaeger (github.com/jaegertracing/jaeger $version) -> $out"
  local t0
  t0=$(date +%s)
  # go.mod and go.sum pin every module; -mod=mod only lets go fill in go.sum
  # lines that a newer Go may want (it never changes the pinned versions of
  # the main module's requirements).
  # -buildvcs=false: the tools module sits inside this git checkout, and VCS
  # stamping fails in checkouts owned by another user (CI clones).
  (cd "$dir" && GOFLAGS="${GOFLAGS:-} -mod=mod -buildvcs=false" go build -trimpath -ldflags='-s -w' \
    -o "$out.tmp" github.com/jaegertracing/jaeger/cmd/jaeger)
  mv -f "$out.tmp" "$out"
  echo "$stamp" >"$out.stamp"
  echo "build-peers: built jaeger in $(elapsed "$t0"): $out"
}

build_otelcol() {
  local manifest="$REPO/tools/otelcol/builder-config.yaml"
  local out="$PEERS_DIR/otelcol-blackbox"
  local stamp="otelcol-blackbox ocb $OCB_VERSION inputs $(hash_files "$manifest")"
  if up_to_date "$out" "$stamp"; then
    echo "build-peers: otelcol-blackbox (collector $OCB_VERSION) is up to date: $out"
    return
  fi
  local t0
  t0=$(date +%s)

  local ocb_dir="$TOOLS_CACHE/ocb-$OCB_VERSION"
  local ocb="$ocb_dir/builder"
  if [[ ! -x "$ocb" ]]; then
    echo "build-peers: installing the Collector Builder go.opentelemetry.io/collector/cmd/builder@$OCB_VERSION -> $ocb"
    mkdir -p "$ocb_dir"
    (cd "$ocb_dir" && GOBIN="$ocb_dir" GOFLAGS= go install "go.opentelemetry.io/collector/cmd/builder@$OCB_VERSION")
  fi

  # ocb writes the generated sources (main.go, components.go, go.mod) and the
  # binary under output_path (./dist), relative to its working directory.
  local work="$PEERS_DIR/otelcol-build"
  rm -rf "$work"
  mkdir -p "$work"
  echo "build-peers: building otelcol-blackbox (collector $OCB_VERSION, manifest tools/otelcol/builder-config.yaml) -> $out"
  (cd "$work" && GOFLAGS="${GOFLAGS:-} -buildvcs=false" "$ocb" --config "$manifest")
  mv -f "$work/dist/otelcol-blackbox" "$out"
  echo "$stamp" >"$out.stamp"
  echo "build-peers: built otelcol-blackbox in $(elapsed "$t0"): $out"
}

[[ $want_jaeger == 1 ]] && build_jaeger
[[ $want_otelcol == 1 ]] && build_otelcol

echo "build-peers: done. Tests find the binaries in $PEERS_DIR"
echo "  (or set BLACKBOX_JAEGER_BIN / BLACKBOX_OTELCOL_BIN to override)"
