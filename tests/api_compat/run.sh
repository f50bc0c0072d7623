#!/usr/bin/env bash
# API conformance: start a server, drive it with the real dstack 0.22.5 client (check.py),
# stop the server, exit with check.py's status.
#
# Usage: tests/api_compat/run.sh SERVER_KIND [check.py options, e.g. -k NAME -v]
#   SERVER_KIND  dstack  the real dstack 0.22.5 server from the oracle venv (the reference)
#                rust    our server: ${DSTACK_RS_BIN:-${CARGO_TARGET_DIR:-target}/debug/dstack} server ...
#
# The oracle venv is $DSTACK_ORACLE_VENV (default .venv-dstack), created by
# tests/compat/setup.sh when missing. Everything the server writes (its data dir, and the
# ~/.dstack/config.yml that `dstack server` updates) goes to a temp dir, removed at exit
# (set API_COMPAT_KEEP=1 to keep it). Prints the server's start-to-healthy time and RSS.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
venv="${DSTACK_ORACLE_VENV:-$root/.venv-dstack}"
python="$venv/bin/python"

kind="${1:-}"
case "$kind" in
    dstack | rust) shift ;;
    *)
        echo "usage: $0 dstack|rust [check.py options]" >&2
        exit 2
        ;;
esac

"$root/tests/compat/setup.sh"

tmp="$(mktemp -d "${TMPDIR:-/tmp}/dstack-api-compat.XXXXXX")"
mkdir -p "$tmp/home"
server_pid=""
# Processes started for this run that outlive the server by design (ours: the local fleet's
# dstack-shim and its dstack-runners, whose command lines name this temp dir), with all
# their descendants (the jobs run in their own process groups). Killed by pid.
kill_leftovers() {
    local pids="" next all=""
    pids="$(pgrep -f -- "$tmp/" | grep -vx "$$" | tr '\n' ' ' | xargs || true)"
    while [ -n "$pids" ]; do
        all="$all $pids"
        next="$(ps -o pid= --ppid "$(echo "$pids" | tr ' ' ',')" 2>/dev/null | xargs || true)"
        pids="$next"
    done
    all="$(echo "$all" | xargs)"
    [ -n "$all" ] || return 0
    # shellcheck disable=SC2086
    kill -TERM $all 2>/dev/null || true
    for _ in $(seq 1 50); do
        # shellcheck disable=SC2086
        ps -o pid= -p "$(echo $all | tr ' ' ',')" >/dev/null 2>&1 || break
        sleep 0.1
    done
    # shellcheck disable=SC2086
    kill -KILL $all 2>/dev/null || true
}
cleanup() {
    local rc=$?
    if [ -n "$server_pid" ] && kill -0 "$server_pid" 2>/dev/null; then
        kill -TERM "$server_pid" 2>/dev/null || true
        for _ in $(seq 1 100); do
            kill -0 "$server_pid" 2>/dev/null || break
            sleep 0.1
        done
        kill -KILL "$server_pid" 2>/dev/null || true
        wait "$server_pid" 2>/dev/null || true
    fi
    kill_leftovers
    if [ "$rc" -ne 0 ] && [ -f "$tmp/server.log" ]; then
        echo "--- last 40 lines of the server log ($tmp/server.log) ---" >&2
        tail -n 40 "$tmp/server.log" >&2 || true
    fi
    if [ -z "${API_COMPAT_KEEP:-}" ]; then
        rm -rf "$tmp"
    else
        echo "api-compat: kept $tmp" >&2
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

port="$("$python" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')"
token="api-compat-$("$python" -c 'import uuid; print(uuid.uuid4().hex)')"
url="http://127.0.0.1:$port"

case "$kind" in
    dstack) server_cmd=("$venv/bin/dstack" server) ;;
    rust)
        bin="${DSTACK_RS_BIN:-${CARGO_TARGET_DIR:-$root/target}/debug/dstack}"
        if [ ! -x "$bin" ]; then
            echo "api-compat: error: $bin not found (build it, or set DSTACK_RS_BIN)" >&2
            exit 1
        fi
        server_cmd=("$bin" server)
        ;;
esac

# HOME: `dstack server` writes ~/.dstack/config.yml for the admin token.
# DSTACK_DEFAULT_CREDS_DISABLED: no probing of cloud default credentials.
# DSTACK_DO_NOT_UPDATE_DEFAULT_PROJECT: never prompt about that config.yml.
# The real server still tries to download gpuhunt catalogs in the background; offline that
# only logs errors.
# The repos case serves a Git repo over HTTPS with a certificate it writes here; the server
# (and our shim and runners, which inherit its environment) trust it through GIT_SSL_CAINFO.
export API_COMPAT_GIT_STATE="$tmp/git-https"
mkdir -p "$API_COMPAT_GIT_STATE"

start_ns="$(date +%s%N)"
env -u DSTACK_SERVER_URL -u DSTACK_PROJECT -u DSTACK_SERVER_HOST -u DSTACK_SERVER_PORT \
    HOME="$tmp/home" \
    DSTACK_SERVER_DIR="$tmp/server" \
    DSTACK_DEFAULT_CREDS_DISABLED=1 \
    DSTACK_DO_NOT_UPDATE_DEFAULT_PROJECT=1 \
    GIT_SSL_CAINFO="$API_COMPAT_GIT_STATE/cert.pem" \
    "${server_cmd[@]}" --host 127.0.0.1 --port "$port" --token "$token" \
    >"$tmp/server.log" 2>&1 </dev/null &
server_pid=$!

healthy=""
for _ in $(seq 1 1200); do
    if ! kill -0 "$server_pid" 2>/dev/null; then
        echo "api-compat: error: the $kind server exited during startup" >&2
        exit 1
    fi
    if "$python" - "$url" <<'EOF' 2>/dev/null; then
import sys, urllib.request
with urllib.request.urlopen(sys.argv[1] + "/healthcheck", timeout=2) as r:
    sys.exit(0 if r.status == 200 else 1)
EOF
        healthy=1
        break
    fi
    sleep 0.1
done
if [ -z "$healthy" ]; then
    echo "api-compat: error: the $kind server was not healthy at $url/healthcheck after 120 s" >&2
    exit 1
fi
end_ns="$(date +%s%N)"
# RSS of the server and all its descendants, in MiB.
rss_kib() {
    local pids="$1" all="$1" next
    while [ -n "$pids" ]; do
        next="$(ps -o pid= --ppid "$(echo "$pids" | tr ' ' ',')" 2>/dev/null | tr -s ' \n' ' ' || true)"
        next="$(echo "$next" | xargs)"
        [ -n "$next" ] && all="$all $next"
        pids="$next"
    done
    ps -o rss= -p "$(echo "$all" | tr ' ' ',')" | awk '{s+=$1} END {print s+0}'
}
echo "api-compat: $kind server healthy at $url after $(( (end_ns - start_ns) / 1000000 )) ms, RSS $(( $(rss_kib "$server_pid") / 1024 )) MiB"

set +e
"$python" "$here/check.py" --url "$url" --token "$token" --server-kind "$kind" "$@"
status=$?
set -e
echo "api-compat: $kind server RSS after the checks $(( $(rss_kib "$server_pid") / 1024 )) MiB"
exit "$status"
