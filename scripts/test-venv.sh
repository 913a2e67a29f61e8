#!/usr/bin/env bash
# Makes the Python virtual environment the capture tests drive (mitmproxy, to read and
# write its flow files; jsonschema, to validate HAR), in $CARGO_TARGET_DIR/ci-venv (or
# target/ci-venv), and prints its path. Quick when it is there already. A second one
# inside it, ci-venv/mitmproxy10, has mitmproxy 10, whose files the tests read too.
#
#   export MITM_TEST_VENV=$(scripts/test-venv.sh)
set -euo pipefail
cd "$(dirname "$0")/.."
venv="${CARGO_TARGET_DIR:-target}/ci-venv"
mkdir -p "$(dirname "$venv")"
if [ ! -x "$venv/bin/mitmdump" ] || ! "$venv/bin/python" -c "import jsonschema" 2>/dev/null; then
    python3 -m venv "$venv" >&2
    # mitmproxy 11 is the newest line that runs on Python 3.11 (Debian 12's).
    "$venv/bin/pip" install --quiet "mitmproxy>=11,<12" "jsonschema>=4,<5" >&2
fi
if [ ! -x "$venv/mitmproxy10/bin/mitmdump" ]; then
    python3 -m venv "$venv/mitmproxy10" >&2
    "$venv/mitmproxy10/bin/pip" install --quiet "mitmproxy>=10,<11" >&2
fi
realpath "$venv"
