#!/usr/bin/env bash
# Creates the oracle's virtual environment with dstack 0.22.5 (with its server, whose
# plan-time checks the oracle also runs), once.
#
# The venv lives at $DSTACK_ORACLE_VENV (default: .venv-dstack at the repository root, which
# is gitignored). Running this again is a no-op when the right dstack is already installed.
set -euo pipefail

DSTACK_VERSION=0.22.5
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
venv="${DSTACK_ORACLE_VENV:-$root/.venv-dstack}"
python="$venv/bin/python"

installed() {
    [ -x "$python" ] \
        && [ "$("$python" -c 'import dstack.version as v; print(v.__version__)' 2>/dev/null)" = "$DSTACK_VERSION" ] \
        && "$python" -c 'import dstack._internal.server.services.runs.spec' 2>/dev/null
}

if installed; then
    exit 0
fi

if [ ! -x "$python" ]; then
    echo "setup: creating $venv" >&2
    python3 -m venv "$venv" || { echo "setup: error: could not create a venv at $venv (is python3-venv installed?)" >&2; exit 1; }
fi

echo "setup: installing dstack[server]==$DSTACK_VERSION into $venv" >&2
log="$(mktemp)"
trap 'rm -f "$log"' EXIT
if ! "$python" -m pip install --quiet --disable-pip-version-check "dstack[server]==$DSTACK_VERSION" >"$log" 2>&1; then
    cat "$log" >&2
    echo "setup: error: pip install dstack[server]==$DSTACK_VERSION failed" >&2
    exit 1
fi

if ! installed; then
    echo "setup: error: dstack $DSTACK_VERSION is still not importable from $python" >&2
    exit 1
fi
