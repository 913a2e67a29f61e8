#!/usr/bin/env bash
# Runs the cargo-fuzz targets in fuzz/ for a while each and says whether any crashed.
#
#   scripts/fuzz.sh [SECONDS] [TARGET...]
#
# SECONDS is the time per target (default 60); TARGETs default to every target in
# fuzz/fuzz_targets/. Targets run one after another: to use two cores, start two of
# these with different targets. Exits non-zero if any target crashed (a panic, a
# sanitizer report, a timeout or running out of memory).
#
# Works on stable Rust: cargo-fuzz asks rustc for `-Zsanitizer=address`, which
# RUSTC_BOOTSTRAP=1 lets a stable compiler accept (the stable toolchain ships the ASan
# runtime). FUZZ_SANITIZER=none fuzzes without ASan; the script also falls back to it
# by itself if an ASan build fails.
#
# Files: fuzz/corpus/<target>/seed-* are the tracked seeds (read only); what libFuzzer
# finds goes to fuzz/corpus-run/<target>/ (ignored, kept between runs); crashing
# inputs to fuzz/artifacts/<target>/; the full log of each run to
# fuzz/logs/<target>.log. Inputs in fuzz/regressions/<target>/ (crashes found
# earlier) are replayed first. The targets that read capture files through their
# public readers (flow_file, har) write each input to a scratch file,
# /dev/shm/mitm-fuzz-<pid>-* (in $TMPDIR without /dev/shm), left there only if the
# run crashes or is killed.
#
# Targets: the HTTP/1 heads, chunked bodies, CONNECT authorities, protocol detection,
# ClientHellos and SOCKS5 handshakes; tnetstring (mitmproxy's typed netstrings, a
# round trip through the encoder), flow_file (mitmproxy flow files, and what our
# writer saves of them reads back), har (HAR files, likewise), filter (the filter
# language, matched against fixed records), websocket (frames in pieces and whole,
# encoder round trip, message assembly) and mode_spec (`--mode` specs, shown and
# parsed again).
#
# Environment: FUZZ_SANITIZER (address|none, default address), FUZZ_ARGS (more
# libFuzzer options, e.g. "-max_len=16384"), FUZZ_TIMEOUT (seconds one input may take
# before it counts as a hang, default 25).
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
fuzz="$root/fuzz"

usage() {
    sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//'
}

# Everything runs from main, so bash has read the whole file before it starts (an
# edit to the script during a long run cannot derail it).
main() {
    secs=60
    if [[ $# -gt 0 && ( $1 == -h || $1 == --help ) ]]; then
        usage
        exit 0
    fi
    if [[ $# -gt 0 && $1 =~ ^[0-9]+$ ]]; then
        secs=$1
        shift
    fi
    if [[ $secs -lt 1 ]]; then
        echo "fuzz.sh: SECONDS must be at least 1" >&2
        exit 2
    fi

    mapfile -t all < <(find "$fuzz/fuzz_targets" -maxdepth 1 -name '*.rs' -printf '%f\n' | sed 's/\.rs$//' | sort)
    if [[ $# -gt 0 ]]; then
        targets=("$@")
    else
        targets=("${all[@]}")
    fi
    for t in "${targets[@]}"; do
        if [[ ! -f "$fuzz/fuzz_targets/$t.rs" ]]; then
            echo "fuzz.sh: no target '$t' (targets: ${all[*]})" >&2
            exit 2
        fi
    done

    if ! cargo fuzz --version >/dev/null 2>&1; then
        echo "== installing cargo-fuzz"
        cargo install --locked cargo-fuzz
    fi

    export RUSTC_BOOTSTRAP=1
    sanitizer=${FUZZ_SANITIZER:-address}
    hang=${FUZZ_TIMEOUT:-25}
    read -r -a extra <<<"${FUZZ_ARGS:-}"

    # The fuzz workspace has its own lock file (ignored): start it from the root's, so the
    # library is fuzzed with the dependency versions its tests use.
    if [[ ! -f "$fuzz/Cargo.lock" && -f "$root/Cargo.lock" ]]; then
        cp "$root/Cargo.lock" "$fuzz/Cargo.lock"
    fi

    cd "$root"
    fuzzcmd=(cargo fuzz)
    build() {
        "${fuzzcmd[@]}" build --fuzz-dir "$fuzz" --sanitizer "$sanitizer"
    }

    # One build for every target (they share the library build); `cargo fuzz run` below
    # then only rebuilds if src/ changed in the meantime.
    echo "== building the fuzz targets (sanitizer: $sanitizer)"
    if ! build; then
        if [[ $sanitizer == none ]]; then
            echo "fuzz.sh: building the fuzz targets failed" >&2
            exit 2
        fi
        echo "fuzz.sh: the $sanitizer build failed; trying --sanitizer none" >&2
        sanitizer=none
        if ! build; then
            echo "fuzz.sh: building the fuzz targets failed without a sanitizer too" >&2
            exit 2
        fi
    fi

    mkdir -p "$fuzz/logs"
    declare -A runs result
    failed=0
    for t in "${targets[@]}"; do
        log="$fuzz/logs/$t.log"
        : >"$log"
        dict=()
        if [[ -f "$fuzz/dicts/$t.dict" ]]; then
            dict=("-dict=$fuzz/dicts/$t.dict")
        fi

        # Crashes found before: each must now pass.
        mapfile -t old < <(find "$fuzz/regressions/$t" -type f 2>/dev/null | sort)
        if [[ ${#old[@]} -gt 0 ]]; then
            echo "== $t: replaying ${#old[@]} regression input(s)"
            if ! "${fuzzcmd[@]}" run --fuzz-dir "$fuzz" --sanitizer "$sanitizer" "$t" "${old[@]}" \
                -- "-timeout=$hang" >>"$log" 2>&1; then
                echo "   $t: a regression input crashes (see $log)"
                runs[$t]=0
                result[$t]="CRASHED (regression input)"
                failed=1
                continue
            fi
        fi

        mkdir -p "$fuzz/corpus-run/$t" "$fuzz/corpus/$t"
        echo "== $t: fuzzing for ${secs}s (log: ${log#"$root"/})"
        rc=0
        "${fuzzcmd[@]}" run --fuzz-dir "$fuzz" --sanitizer "$sanitizer" "$t" \
            "$fuzz/corpus-run/$t" "$fuzz/corpus/$t" -- \
            "-max_total_time=$secs" "-timeout=$hang" -print_final_stats=1 \
            "${dict[@]}" "${extra[@]}" >>"$log" 2>&1 || rc=$?

        # libFuzzer ends a clean run with "Done N runs in S second(s)"; a crash ends it
        # with the input written to the artifact directory instead.
        done_line=$(grep -E '^Done [0-9]+ runs' "$log" | tail -n 1 || true)
        if [[ -n $done_line ]]; then
            runs[$t]=$(awk '{print $2}' <<<"$done_line")
        else
            # After a crash the count is on the last status line ("#N ...") or in the
            # final stats.
            runs[$t]=$(grep -oE '^(#[0-9]+|stat::number_of_executed_units: *[0-9]+)' "$log" |
                grep -oE '[0-9]+$' | tail -n 1 || true)
            runs[$t]=${runs[$t]:-0}
        fi
        if [[ $rc -eq 0 && -n $done_line ]]; then
            result[$t]="ok, no crash"
        else
            failed=1
            artifact=$(grep -oE 'Test unit written to [^ ]+' "$log" | tail -n 1 | sed 's/^Test unit written to //' || true)
            why=$(grep -m1 -E "panicked at|ERROR: (AddressSanitizer|libFuzzer)|SUMMARY: " "$log" || true)
            result[$t]="CRASHED (exit $rc)${artifact:+: $artifact}"
            if grep -q "panicked at" "$log"; then
                # The panic's location and message.
                echo "   $t crashed:"
                grep -A1 -m1 "panicked at" "$log" | sed 's/^/   | /'
            else
                echo "   $t crashed: ${why:-see $log}"
            fi
        fi
        echo "   $t: ${runs[$t]} runs, ${result[$t]}"
    done

    echo
    echo "== summary (${secs}s per target, sanitizer: $sanitizer)"
    for t in "${targets[@]}"; do
        printf '%-20s %12s runs  %s\n' "$t" "${runs[$t]}" "${result[$t]}"
    done
    exit "$failed"
}

main "$@"
