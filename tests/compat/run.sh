#!/usr/bin/env bash
# The differential check: our corpus against the real dstack 0.22.5 parser.
#
# Usage: tests/compat/run.sh [--write-json]
# Uses the venv at $DSTACK_ORACLE_VENV (default .venv-dstack), creating it if needed.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
venv="${DSTACK_ORACLE_VENV:-$root/.venv-dstack}"

"$here/setup.sh"
exec "$venv/bin/python" "$here/check.py" "$@"
