#!/usr/bin/env bash
# Builds the cargo-fuzz targets in fuzz/ and runs each one for SECONDS (default 30) from its
# seed corpus (fuzz/corpus/<target>: recordings of real publishers, documented messages).
# Exits non-zero on the first crash, panic, leak, timeout or out-of-memory; the input that
# caused it is left in fuzz/artifacts/<target>/ and can be replayed with
#   (cd fuzz && RUSTC_BOOTSTRAP=1 cargo fuzz run <target> artifacts/<target>/<file>)
#
#   scripts/fuzz.sh [SECONDS] [TARGET...]
#
# New inputs found during a run go to a temporary directory, so the committed seed corpus does
# not grow. Builds go to fuzz/target (never the workspace's target directory).
set -euo pipefail
cd "$(dirname "$0")/.."

seconds="${1:-30}"
shift || true
targets=("$@")
[[ ${#targets[@]} -gt 0 ]] || targets=(rtmp_connection flv_aac provider_messages client_messages relay_body proxy_header)

command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked

# cargo-fuzz passes nightly-only flags (-Zsanitizer=address, -Cpasses=sancov-module); a stable
# toolchain accepts them with RUSTC_BOOTSTRAP. A nightly toolchain does not need it.
export RUSTC_BOOTSTRAP=1

cd fuzz
cargo fuzz build

scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
for target in "${targets[@]}"; do
  echo "== fuzz $target for ${seconds}s"
  mkdir -p "$scratch/$target"
  # -rss_limit_mb also caps any single allocation (malloc_limit_mb defaults to it): a peer
  # must never make us allocate anywhere near that. -timeout catches inputs that hang.
  log="$scratch/$target.log"
  extra=()
  # A connection buffers at most one RTMP message per parser (24-bit length: 16 MiB); any
  # single allocation far above that means a peer controls how much we allocate.
  [[ $target != rtmp_connection ]] || extra=(-malloc_limit_mb=64)
  if ! nice cargo fuzz run "$target" "$scratch/$target" "corpus/$target" -- \
    -max_total_time="$seconds" -timeout=10 -rss_limit_mb=1024 "${extra[@]}" \
    -print_final_stats=1 >"$log" 2>&1; then
    tail -n 60 "$log" >&2
    echo "fuzz: $target failed; the input is in fuzz/artifacts/$target/" >&2
    exit 1
  fi
  grep -E '^(Done|stat::number_of_executed_units|stat::peak_rss_mb)|cov: ' "$log" | tail -n 4 || true
done
echo "fuzz: all targets ran ${seconds}s without a crash"
