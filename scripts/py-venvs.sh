#!/usr/bin/env bash
# Makes the two Python virtual environments the Python package's tests (python/tests)
# drive, under $CARGO_TARGET_DIR (or target), and prints the path of each one's python,
# ours first:
#
#   py-venv        this repository's package, installed as a user installs it:
#                  pip install "./python[test,openssl]" (maturin, the build backend, comes
#                  from PyPI through pip's build isolation; a release build of the engine)
#   py-orig-venv   the original package, pip install mitm==1.5.0, the reference the tests
#                  compare ours with (it pins pyOpenSSL 23.1.1, toolbox, httpq: they
#                  install and import on Python 3.11 as they are)
#
# Quick when both are there already. --fresh makes ours again from nothing (as .ci/run
# does, so that the tests see the tree's code, never an older build).
#
#   read -r ours original < <(scripts/py-venvs.sh | paste -sd' ')
#   MITM_ORIGINAL_PYTHON=$original "$(dirname "$ours")/pytest" python/tests
set -euo pipefail
cd "$(dirname "$0")/.."
T="${CARGO_TARGET_DIR:-target}"
mkdir -p "$T"
T=$(realpath "$T")
ours="$T/py-venv"
original="$T/py-orig-venv"

fresh=false
[ "${1:-}" = "--fresh" ] && fresh=true

if $fresh || ! "$ours/bin/python" -c "import mitm._native, pytest, OpenSSL" 2>/dev/null; then
    python3 -m venv --clear "$ours" >&2
    "$ours/bin/pip" install --quiet --upgrade pip >&2
    "$ours/bin/pip" install --quiet "./python[test,openssl]" >&2
    # Not from the source tree: from the venv, as a user's program would.
    (cd / && "$ours/bin/python" -c "import mitm._native") >&2
fi

if ! (cd / && "$original/bin/python" -c "import mitm, sys; sys.exit(mitm.__version__ != '1.5.0')") 2>/dev/null; then
    python3 -m venv --clear "$original" >&2
    "$original/bin/pip" install --quiet "mitm==1.5.0" >&2
    (cd / && "$original/bin/python" -c "
import mitm, mitm.core, mitm.crypto, mitm.mitm, mitm.extension
assert mitm.__version__ == '1.5.0', mitm.__version__
") >&2
fi

echo "$ours/bin/python"
echo "$original/bin/python"
