#!/usr/bin/env bash
# The differential check of job specs: what dstack 0.22.5's own job configurators compute for
# every run configuration of the corpus, against the records in
# crates/decide/tests/jobspec_corpus/ that `cargo test -p dstack-decide` holds our
# configurators to.
#
# Usage: tests/jobspec_compat/run.sh [--write] [NAME...]
#   (no flag) check that the records are still what dstack computes, then run the Rust side
#   --write   rewrite the records from dstack (review `git diff`, then run the Rust side)
# Uses the venv at $DSTACK_ORACLE_VENV (default .venv-dstack), creating it if needed.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
venv="${DSTACK_ORACLE_VENV:-$root/.venv-dstack}"

"$root/tests/compat/setup.sh"
"$venv/bin/python" "$here/oracle.py" "$@"
if [ "${1:-}" != "--write" ]; then
    cd "$root"
    log="$(mktemp)"
    trap 'rm -f "$log"' EXIT
    if ! cargo test --locked -q -p dstack-decide --test it jobspec -- --nocapture >"$log" 2>&1; then
        cat "$log" >&2
        exit 1
    fi
    grep -o "jobspec corpus:.*" "$log"
fi
