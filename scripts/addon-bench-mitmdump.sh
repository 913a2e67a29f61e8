#!/usr/bin/env bash
# Starts `mitmdump -q -s ADDON` on a free loopback port and, once it accepts
# connections, prints the line mitm-bench's --proxy-cmd waits for
# (`mitm listening on http://ADDR`); then waits for mitmdump. mitmdump tells its address
# only in its own words, hence this wrapper. mitm-bench then measures this shell's CPU,
# not mitmdump's: its throughput figures hold, its proxy CPU and RSS for this path do not.
#
#   scripts/addon-bench-mitmdump.sh MITMDUMP ADDON
set -euo pipefail
mitmdump=$1
addon=$2
port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
# mitm-bench stops a proxy with SIGKILL: mitmdump goes with this shell.
setpriv --pdeathsig KILL "$mitmdump" -q --listen-host 127.0.0.1 --listen-port "$port" -s "$addon" \
    --set "confdir=${MITM_BENCH_DIR:-$(mktemp -d)}" &
child=$!
trap 'kill "$child" 2>/dev/null' EXIT TERM INT
for _ in $(seq 1 300); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
        echo "mitm listening on http://127.0.0.1:$port"
        wait "$child"
        exit $?
    fi
    kill -0 "$child" 2>/dev/null || { echo "mitmdump exited before it listened" >&2; exit 1; }
    sleep 0.1
done
echo "mitmdump did not listen on 127.0.0.1:$port within 30 s" >&2
exit 1
