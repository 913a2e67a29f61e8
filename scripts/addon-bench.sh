#!/usr/bin/env bash
# Speed of mitmproxy addon scripts on our engine (issue 23), in one mitm-bench run: the
# http-ka load (plain HTTP/1.1, 1 KiB responses, 32 keep-alive connections) directly,
# through the release `mitm` binary with no script (plain), through the Python
# package's `mitm -s scripts/addon-bench-addon.py` and through mitmdump 11 with the
# same script, paired in every round; medians, with the issue's goals checked (the
# addon on our engine at least half of plain and at least 20x mitmdump).
#
#   scripts/addon-bench.sh [mitm-bench options, e.g. --duration 5 --repeat 5]
#
# Needs: `cargo build --release --bins`; the package in a venv (scripts/py-venvs.sh
# makes target/py-venv, or $ADDON_BENCH_VENV); mitmdump 11 (scripts/test-venv.sh makes
# target/ci-venv, or $ADDON_BENCH_MITMDUMP). mitmdump's figures come through a wrapper
# (scripts/addon-bench-mitmdump.sh): its throughput holds, its CPU and RSS columns do not.
set -euo pipefail
cd "$(dirname "$0")/.."
target=${CARGO_TARGET_DIR:-target}
case $target in /*) ;; *) target=$PWD/$target ;; esac
venv=${ADDON_BENCH_VENV:-$target/py-venv}
mitmdump=${ADDON_BENCH_MITMDUMP:-$target/ci-venv/bin/mitmdump}
addon=$PWD/scripts/addon-bench-addon.py
for need in "$target/release/mitm-bench" "$venv/bin/mitm" "$mitmdump"; do
    [ -x "$need" ] || { echo "$need is missing (see the comment at the top of $0)" >&2; exit 2; }
done
"$target/release/mitm-bench" \
    --proxy-cmd "addon=$venv/bin/mitm -q --host 127.0.0.1 --port 0 -s $addon" \
    --proxy-cmd "mitmdump=$PWD/scripts/addon-bench-mitmdump.sh $mitmdump $addon" \
    --goal "addon/mitm>=0.5" \
    --goal "addon/mitmdump>=20" \
    "$@"
