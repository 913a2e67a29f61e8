#!/usr/bin/env bash
# The Python package's speed (issue 22), in one mitm-bench run: the http-ka load (plain
# HTTP/1.1, 1 KiB responses, 32 keep-alive connections) directly, through the release
# `mitm` binary, through this repository's Python package (`MITM` with one Python
# middleware counting the bytes of both data hooks: scripts/py-bench-proxy.py), and
# through the original mitm 1.5.0 with the same script, paired in every round; medians
# of the rounds, with the issue's goals checked (the package at least 20x the
# original's requests/s and at least half the binary's).
#
#   scripts/py-bench.sh [mitm-bench options, e.g. --duration 5 --repeat 5]
#
# Builds what it needs: `cargo build --release --bins`, the package with `maturin
# develop --release` into a venv ($PY_BENCH_VENV, default $CARGO_TARGET_DIR/py-bench/venv),
# and mitm==1.5.0 from PyPI into another ($PY_BENCH_ORIG_VENV, default .../orig-venv).
# PY_BENCH_SKIP_BUILD=1 skips the builds (venvs ready, binaries built).
#
# The original sends every plain request to port 80 of the Host field's host, so the
# origin listens on port 80 of a loopback address picked at random in 127.77.0.0/16
# (binding port 80 needs root, or net.ipv4.ip_unprivileged_port_start <= 80); every
# path goes to that same origin. The original's relay waits up to 15 s for a silent
# side before it lets go of a connection: the keep-alive load never leaves a side
# silent while it is measured, so this does not weigh on its figures.
set -euo pipefail
cd "$(dirname "$0")/.."

target=${CARGO_TARGET_DIR:-target}
case $target in /*) ;; *) target=$PWD/$target ;; esac
work=$target/py-bench
venv=${PY_BENCH_VENV:-$work/venv}
orig=${PY_BENCH_ORIG_VENV:-$work/orig-venv}

if [ "${PY_BENCH_SKIP_BUILD:-}" != 1 ]; then
    echo "== cargo build --release --bins" >&2
    cargo build --release --bins
    echo "== the package, maturin develop --release, into $venv" >&2
    [ -x "$venv/bin/python" ] || python3 -m venv "$venv"
    "$venv/bin/python" -c "import maturin" 2>/dev/null || "$venv/bin/pip" install -q maturin
    (cd python && VIRTUAL_ENV=$venv PATH=$venv/bin:$PATH maturin develop --release -q)
    echo "== the original, mitm==1.5.0, into $orig" >&2
    [ -x "$orig/bin/python" ] || python3 -m venv "$orig"
    "$orig/bin/python" -c "import mitm" 2>/dev/null || "$orig/bin/pip" install -q "mitm==1.5.0"
fi

origin=127.77.$((RANDOM % 250 + 1)).$((RANDOM % 250 + 1)):80
script=$PWD/scripts/py-bench-proxy.py
"$target/release/mitm-bench" \
    --origin-addr "$origin" \
    --proxy-cmd "python=$venv/bin/python $script" \
    --proxy-cmd "original=$orig/bin/python $script" \
    --goal "python/original>=20" \
    --goal "python/mitm>=0.5" \
    "$@"
