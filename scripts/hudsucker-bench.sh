#!/usr/bin/env bash
# mitm against hudsucker on the same loads, paired in every round (issue 24): each
# scenario direct, through the release `mitm` binary, and through a no-op intercepting
# proxy built on hudsucker (scripts/hudsucker-noop/main.rs: its default features,
# rustls with aws-lc-rs; handlers that pass everything as it came).
#
#   scripts/hudsucker-bench.sh [mitm-bench options, e.g. --duration 5 --repeat 3]
#
# Default scenarios: https-bulk, https-ka, https-newconn, http-ka (give --only to
# choose). The hudsucker proxy is built in a crate of its own outside the repository,
# $CARGO_TARGET_DIR/hudsucker-noop (or target/hudsucker-noop), against hudsucker
# $HUDSUCKER_VERSION (default 0.25) from crates.io; its Cargo.lock stays there, so a
# second run builds nothing. It reads the CA the bench's clients trust and the origin's
# CA from the files mitm-bench puts in each proxy command's own $MITM_BENCH_DIR
# (ca.pem, ca.key, upstream-ca.pem). HUDSUCKER_BENCH_SKIP_BUILD=1 skips
# `cargo build --release --bins` of this repository (binaries built already).
set -euo pipefail
cd "$(dirname "$0")/.."

target=${CARGO_TARGET_DIR:-target}
case $target in /*) ;; *) target=$PWD/$target ;; esac
crate=$target/hudsucker-noop
version=${HUDSUCKER_VERSION:-0.25}

if [ "${HUDSUCKER_BENCH_SKIP_BUILD:-}" != 1 ]; then
    echo "== cargo build --release --bins" >&2
    cargo build --release --bins
fi

mkdir -p "$crate/src"
cat >"$crate/Cargo.toml.new" <<TOML
[package]
name = "hudsucker-noop"
version = "0.0.0"
edition = "2021"
publish = false

[dependencies]
hudsucker = "$version"
hyper-rustls = { version = "0.27", default-features = false, features = ["http1", "tls12"] }
tokio = { version = "1", features = ["macros", "rt-multi-thread", "net"] }
tower-service = "0.3"

[profile.release]
debug = 1

# Not a member of any workspace above it.
[workspace]
TOML
cmp -s "$crate/Cargo.toml.new" "$crate/Cargo.toml" || mv "$crate/Cargo.toml.new" "$crate/Cargo.toml"
rm -f "$crate/Cargo.toml.new"
cmp -s scripts/hudsucker-noop/main.rs "$crate/src/main.rs" ||
    cp scripts/hudsucker-noop/main.rs "$crate/src/main.rs"
echo "== hudsucker $version no-op proxy, cargo build --release in $crate" >&2
(cd "$crate" && CARGO_TARGET_DIR="$crate/target" cargo build --release -q)
echo "== $(cd "$crate" && cargo tree -q -e normal --depth 1 | grep -E '^(├|└)── hudsucker' | sed 's/^.── //')" >&2

only=()
case " $* " in
*" --only "* | *" --only="*) ;;
*) only=(--only https-bulk,https-ka,https-newconn,http-ka) ;;
esac
hud=$crate/target/release/hudsucker-noop
exec "$target/release/mitm-bench" "${only[@]}" \
    --proxy-cmd "hudsucker=$hud \$MITM_BENCH_DIR/ca.pem \$MITM_BENCH_DIR/ca.key \$MITM_BENCH_DIR/upstream-ca.pem" \
    "$@"
