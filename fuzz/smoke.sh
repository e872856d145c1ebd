#!/usr/bin/env bash
# Smoke run of the operation-sequence fuzz targets (CI): builds them with cargo-fuzz (nightly,
# ASan, debug assertions) and fuzzes each for SMOKE_SECONDS (30 by default) from the committed
# corpus `corpus/<target>/`. New inputs go to a scratch directory, so the committed corpus is
# only read. Exits non-zero on the first crash, timeout, out-of-memory or failed invariant; the
# input that did it is left in `artifacts/<target>/`.
#
#   fuzz/smoke.sh [target...]      (default: every seq_* target)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"

seconds="${SMOKE_SECONDS:-30}"
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(seq_producer seq_fetcher seq_group seq_group_member seq_transaction)

scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT

for t in "${targets[@]}"; do
    echo "==> cargo +nightly fuzz build $t"
    cargo +nightly fuzz build "$t"
done
for t in "${targets[@]}"; do
    echo "==> $t: ${seconds}s"
    mkdir -p "$scratch/$t" "corpus/$t"
    status=0
    cargo +nightly fuzz run "$t" "$scratch/$t" "corpus/$t" -- \
        -max_total_time="$seconds" -rss_limit_mb=2048 -timeout=10 -print_final_stats=1 \
        >"$scratch/$t.log" 2>&1 || status=$?
    grep -E '^(stat::number_of_executed_units|stat::peak_rss_mb)|^#[0-9]+ +DONE' "$scratch/$t.log" || true
    if [ "$status" -ne 0 ]; then
        tail -n 80 "$scratch/$t.log" >&2
        echo "error: $t failed (exit $status); the input is in fuzz/artifacts/$t/" >&2
        exit 1
    fi
done
echo "fuzz smoke: ${targets[*]} ran ${seconds}s each, no failure"
