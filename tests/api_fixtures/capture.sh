#!/usr/bin/env bash
# Regenerates crates/api/tests/fixtures from the real dstack 0.22.5 server (see capture.py),
# then checks our round trip of them with the real pydantic models (check_models.py).
# The oracle venv is $DSTACK_ORACLE_VENV (default .venv-dstack at the repository root; tests/compat/setup.sh makes it).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
venv="${DSTACK_ORACLE_VENV:-$root/.venv-dstack}"
"$venv/bin/python" "$here/capture.py" --venv "$venv" "$@"
DSTACK_CHECK_PY="$venv/bin/python" cargo test --manifest-path "$root/Cargo.toml" -p dstack-api --test runs
