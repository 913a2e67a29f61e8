#!/usr/bin/env bash
# Compares two builds of `mitm` with mitm-bench in one run: for each scenario, the
# baseline binary, then the current one, so that both meet the same machine state.
#
#   scripts/bench-compare.sh BASELINE_MITM [mitm-bench options...]
#
# BASELINE_MITM is a `mitm` binary built from the revision to compare against, e.g.:
#   git worktree add --detach /tmp/base <rev>
#   (cd /tmp/base && CARGO_TARGET_DIR=/tmp/base-target cargo build --release --bins)
#   scripts/bench-compare.sh /tmp/base-target/release/mitm
#
# The current build is target/release/mitm (build it first). Prints each scenario's
# table for both, baseline first (current first with BENCH_ORDER=current-first, to
# see how much of a difference the order makes; SCENARIOS="a b" for some scenarios
# only); every run's output goes to target/bench-compare/.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ $# -lt 1 ] || [ ! -x "$1" ]; then
    echo "usage: $0 BASELINE_MITM [mitm-bench options...]" >&2
    exit 2
fi
base=$(realpath "$1")
shift
current=target/release/mitm
bench=target/release/mitm-bench
for bin in "$current" "$bench"; do
    if [ ! -x "$bin" ]; then
        echo "$bin is missing: run cargo build --release --bins first" >&2
        exit 2
    fi
done
out=target/bench-compare
mkdir -p "$out"
# SCENARIOS="http-ka https-ka" runs only those (mitm-bench's own --only would be
# overridden by the one given per scenario here).
read -r -a scenarios <<<"${SCENARIOS:-http-ka https-ka upstream-ka socks5-ka https-newconn http-bulk https-bulk hosts-cold idle}"
order=(baseline current)
[ "${BENCH_ORDER:-}" = current-first ] && order=(current baseline)
for scenario in "${scenarios[@]}"; do
    for which in "${order[@]}"; do
        bin=$base
        [ "$which" = current ] && bin=$current
        echo "== $scenario, $which"
        # A scenario a build cannot run (a mode it lacks) fails alone: its table row
        # says FAILED, and the others still run.
        "$bench" --only "$scenario" --proxy-bin "$bin" "$@" \
            >"$out/$scenario-$which.txt" 2>"$out/$scenario-$which.log" ||
            echo "(failed: see $out/$scenario-$which.log)"
        sed -n '/^scenario/,/^$/p' "$out/$scenario-$which.txt"
    done
done
