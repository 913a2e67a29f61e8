#!/usr/bin/env bash
# Peak memory and time of `mitm read` over a capture of N flows (100 000 by default) in
# each format, beside `mitmdump -nr` over the same flow file (issue 20, item 6: readers
# that stream; the figures are logged in docs/performance.md).
#
#   scripts/read-memory.sh [N] [MITM]    # MITM: the binary to measure
#                                        # (default: a release build, built here)
#
# The captures are made by our own writers: a HAR of N entries (each a GET with a few
# header fields and a small text body, about 1 KB, as a browser writes them) generated
# here, then `mitm convert` to a flow file and an SQLite database. Each read goes to
# /dev/null under `/usr/bin/time -v`; "Maximum resident set size" is the peak.
# `mitmdump` comes from $MITM_TEST_VENV (scripts/test-venv.sh), skipped when absent or
# when NO_MITMDUMP is set (it takes about two minutes for 100 000 flows).
set -euo pipefail

N=${1:-100000}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
if [[ -n "${2:-}" ]]; then
    MITM=$2
else
    (cd "$ROOT" && cargo build --release --bins --quiet)
    MITM=${CARGO_TARGET_DIR:-$ROOT/target}/release/mitm
fi
DIR=$(mktemp -d)
trap 'rm -rf "$DIR"' EXIT

python3 - "$N" "$DIR/big.har" <<'PY'
import json, sys
n, path = int(sys.argv[1]), sys.argv[2]
with open(path, "w") as out:
    out.write('{"log": {"version": "1.2", "creator": {"name": "read-memory.sh", "version": "1"},\n'
              ' "pages": [{"id": "page_1", "title": "read-memory", "startedDateTime": "2026-01-01T00:00:00.000Z", "pageTimings": {}}],\n'
              ' "entries": [\n')
    for i in range(n):
        body = json.dumps({"id": i, "name": f"item {i}", "tags": ["a", "b"]})
        entry = {
            "startedDateTime": f"2026-01-01T{i // 3600000 % 24:02d}:{i // 60000 % 60:02d}:{i // 1000 % 60:02d}.{i % 1000:03d}Z",
            "time": 3.5,
            "request": {
                "method": "GET", "url": f"http://big.localhost:8080/api/items/{i}?page={i % 7}",
                "httpVersion": "HTTP/1.1",
                "headers": [
                    {"name": "Host", "value": "big.localhost:8080"},
                    {"name": "User-Agent", "value": "Mozilla/5.0 (X11; Linux x86_64) read-memory/1.0"},
                    {"name": "Accept", "value": "application/json"},
                    {"name": "Accept-Language", "value": "en-US,en;q=0.9"},
                ],
                "queryString": [{"name": "page", "value": str(i % 7)}], "cookies": [],
                "headersSize": -1, "bodySize": 0,
            },
            "response": {
                "status": 200, "statusText": "OK", "httpVersion": "HTTP/1.1",
                "headers": [
                    {"name": "Content-Type", "value": "application/json"},
                    {"name": "Content-Length", "value": str(len(body))},
                    {"name": "Cache-Control", "value": "no-store"},
                ],
                "cookies": [], "redirectURL": "", "headersSize": -1, "bodySize": len(body),
                "content": {"size": len(body), "mimeType": "application/json", "text": body},
            },
            "cache": {}, "serverIPAddress": "127.0.0.1",
            "timings": {"blocked": -1, "dns": -1, "connect": -1, "ssl": -1, "send": 0.5, "wait": 2.5, "receive": 0.5},
        }
        out.write(("," if i else "") + json.dumps(entry) + "\n")
    out.write("]}}\n")
PY
"$MITM" -q convert "$DIR/big.har" "$DIR/big.flows" 2>/dev/null
"$MITM" -q convert "$DIR/big.har" "$DIR/big.sqlite" 2>/dev/null

# Runs "$@" with its output to /dev/null; prints its peak RSS (MB) and wall time.
measure() {
    local label=$1
    shift
    /usr/bin/time -v "$@" >/dev/null 2>"$DIR/time.txt" || {
        echo "$label: failed"; tail -5 "$DIR/time.txt"; return
    }
    local kb wall
    kb=$(awk -F': ' '/Maximum resident set size/ {print $2}' "$DIR/time.txt")
    wall=$(awk -F': ' '/Elapsed \(wall clock\)/ {print $2}' "$DIR/time.txt")
    printf '%-34s %8.1f MB peak RSS  %10s wall\n' "$label" "$(echo "$kb / 1024" | bc -l)" "$wall"
}

echo "$N flows; files: $(du -m "$DIR/big.har" | cut -f1) MB HAR, $(du -m "$DIR/big.flows" | cut -f1) MB flows, $(du -m "$DIR/big.sqlite" | cut -f1) MB SQLite"
echo "mitm: $MITM"
for f in flows har sqlite; do
    measure "mitm read big.$f" "$MITM" read "$DIR/big.$f"
done
measure "mitm read big.har --filter '~c 404'" "$MITM" read "$DIR/big.har" --filter '~c 404'
measure "mitm convert big.har out.flows" "$MITM" -q convert "$DIR/big.har" "$DIR/out.flows"
measure "mitm convert big.flows out.sqlite" "$MITM" -q convert "$DIR/big.flows" "$DIR/out.sqlite"
measure "mitm convert big.sqlite out.har" "$MITM" -q convert "$DIR/big.sqlite" "$DIR/out.har"
# The proxy with `--server-replay FILE`, up to the line saying it listens: the peak RSS
# of reading the file into the replay's index (which keeps every response, as it must).
server_replay() {
    local f=$1 pid kb
    "$MITM" --server-replay "$DIR/big.$f" --port 0 --log none --ca-dir "$DIR/ca" \
        >"$DIR/replay.txt" 2>&1 &
    pid=$!
    until grep -q "mitm listening" "$DIR/replay.txt"; do
        kill -0 "$pid" 2>/dev/null || { echo "--server-replay big.$f: failed"; return; }
        sleep 0.1
    done
    kb=$(awk '/VmHWM/ {print $2}' "/proc/$pid/status")
    kill "$pid"
    wait "$pid" || true
    printf '%-34s %8.1f MB peak RSS\n' "mitm --server-replay big.$f" "$(echo "$kb / 1024" | bc -l)"
}
for f in flows har sqlite; do
    server_replay "$f"
done

# `mitm web FILE`, up to the line giving the UI's address: the peak RSS and time of
# loading the file (HAR and flow files are copied into a temporary SQLite database).
web() {
    local f=$1 pid kb start end
    start=$(date +%s.%N)
    "$MITM" web "$DIR/big.$f" --web-port 0 --ca-dir "$DIR/ca" >"$DIR/web.txt" 2>&1 &
    pid=$!
    until grep -q "web UI" "$DIR/web.txt"; do
        kill -0 "$pid" 2>/dev/null || { echo "web big.$f: failed"; return; }
        sleep 0.05
    done
    end=$(date +%s.%N)
    kb=$(awk '/VmHWM/ {print $2}' "/proc/$pid/status")
    kill "$pid"
    wait "$pid" || true
    printf '%-34s %8.1f MB peak RSS  %10.2f s to serve\n' "mitm web big.$f" \
        "$(echo "$kb / 1024" | bc -l)" "$(echo "$end - $start" | bc -l)"
}
for f in flows har sqlite; do
    web "$f"
done

if [[ -n "${NO_MITMDUMP:-}" ]]; then
    :
elif [[ -x "${MITM_TEST_VENV:-}/bin/mitmdump" ]]; then
    measure "mitmdump -nr big.flows" "$MITM_TEST_VENV/bin/mitmdump" -nr "$DIR/big.flows"
else
    echo "mitmdump: not found (set MITM_TEST_VENV, see scripts/test-venv.sh)"
fi
