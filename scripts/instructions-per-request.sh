#!/usr/bin/env bash
# Counts the instructions the proxy's process executes per keep-alive HTTP request,
# with valgrind's callgrind: deterministic for a given binary, whatever else the
# machine is doing, so two builds can be compared where timings are too noisy.
#
#   scripts/instructions-per-request.sh [MITM_BINARY] [N]
#
# Runs the binary (default target/release/mitm) under callgrind twice, serving N and
# then 2N keep-alive GETs of a 1 KiB body from a Python origin on loopback, through one
# client connection; prints (total at 2N - total at N) / N, which leaves start-up out.
# Needs valgrind and python3. Default N: 2000.
set -euo pipefail
cd "$(dirname "$0")/.."
bin=$(realpath "${1:-target/release/mitm}")
n=${2:-2000}
work=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null; rm -rf "$work"' EXIT

cat >"$work/origin.py" <<'EOF'
import asyncio, sys
RESP = (b"HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\n"
        b"Content-Length: 1024\r\n\r\n" + b"x" * 1024)
async def handle(r, w):
    buf = b""
    while data := await r.read(65536):
        buf += data
        while b"\r\n\r\n" in buf:
            _, buf = buf.split(b"\r\n\r\n", 1)
            w.write(RESP)
        await w.drain()
    w.close()
async def main():
    srv = await asyncio.start_server(handle, "127.0.0.1", 0)
    print(srv.sockets[0].getsockname()[1], flush=True)
    async with srv:
        await srv.serve_forever()
asyncio.run(main())
EOF
cat >"$work/client.py" <<'EOF'
import socket, sys
proxy, origin, n = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
s = socket.create_connection(("127.0.0.1", proxy))
s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
req = (f"GET http://127.0.0.1:{origin}/1k HTTP/1.1\r\nHost: 127.0.0.1:{origin}\r\n"
       "User-Agent: count\r\nAccept: */*\r\n\r\n").encode()
buf = b""
for _ in range(n):
    s.sendall(req)
    while True:
        if b"\r\n\r\n" in buf:
            head, rest = buf.split(b"\r\n\r\n", 1)
            length = int([l.split(b":")[1] for l in head.split(b"\r\n")
                          if l.lower().startswith(b"content-length")][0])
            if len(rest) >= length:
                buf = rest[length:]
                break
        buf += s.recv(65536)
s.close()
EOF

python3 "$work/origin.py" >"$work/origin.port" &
while [ ! -s "$work/origin.port" ]; do sleep 0.1; done
origin=$(cat "$work/origin.port")

# Instructions of one run of the proxy serving $1 requests.
count() {
    local out="$work/cg.$1" banner="$work/banner.$1"
    valgrind --tool=callgrind --callgrind-out-file="$out" "$bin" --port 0 --log none -q \
        --ca-dir "$work/ca" >"$banner" 2>"$work/valgrind.$1" &
    local pid=$!
    until grep -q "mitm listening on" "$banner" 2>/dev/null; do sleep 0.2; done
    local port
    port=$(sed -n 's|^mitm listening on http://127.0.0.1:\([0-9]*\).*|\1|p' "$banner")
    python3 "$work/client.py" "$port" "$origin" "$1"
    kill -INT "$pid"
    wait "$pid" || true
    sed -n 's/^summary: //p' "$out"
}
first=$(count "$n")
second=$(count $((2 * n)))
echo "$bin: $(( (second - first) / n )) instructions per request ($n vs $((2 * n)) requests: $first, $second)"
