#!/usr/bin/env bash
# Runs the Autobahn TestSuite cases (via the `kosoku` package from PyPI) against sockeye in both
# roles and fails unless every case ends OK, NON-STRICT or INFORMATIONAL and no case is worse
# than recorded in autobahn/expected/.
#
#   scripts/autobahn.sh                  # every run below
#   scripts/autobahn.sh server client    # only the named runs
#
# Runs:
#   server          sections 1-10, default settings      (kosoku -m fuzzingclient)
#   client          sections 1-10, default settings      (kosoku -m fuzzingserver)
#   server-deflate  sections 1-13, --deflate
#   client-deflate  sections 1-13, --deflate --deflate-client-no-context-takeover
#                   (kosoku's fuzzing server requests client_no_context_takeover in 13.2,
#                   13.5 and 13.6 only from clients whose offer carries that hint)
#
# Needs python3 with venv; installs kosoku into target/venv once (idempotent).
set -euo pipefail
set -f  # case selections such as 12.* are patterns for kosoku, not for the shell
cd "$(dirname "$0")/.."
ROOT=$PWD
RUNS=("$@")
[ ${#RUNS[@]} -gt 0 ] || RUNS=(server client server-deflate client-deflate)
KOSOKU_VERSION=0.1.0
VENV=$ROOT/target/venv
OUT=$ROOT/target/autobahn

if ! "$VENV/bin/kosoku" --help >/dev/null 2>&1; then
    echo "autobahn: installing kosoku $KOSOKU_VERSION into $VENV"
    if ! python3 -m venv "$VENV" 2>/dev/null; then
        # Debian's python3 ships venv separately.
        apt-get update -qq && apt-get install -y -qq python3-venv
        python3 -m venv "$VENV"
    fi
    "$VENV/bin/pip" install --quiet --disable-pip-version-check "kosoku==$KOSOKU_VERSION"
fi

echo "autobahn: building sockeye (release)"
cargo build --release --quiet -p sockeye-cli
BIN=$ROOT/target/release/sockeye

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'
}

PIDS=()
cleanup() { for p in "${PIDS[@]:-}"; do [ -n "$p" ] && kill "$p" 2>/dev/null || true; done; }
trap cleanup EXIT

# test_server NAME SELECTION FLAGS...: sockeye serve tested by kosoku's fuzzing client.
test_server() {
    local name=$1 selection=$2; shift 2
    local dir=$OUT/$name
    rm -rf "$dir"; mkdir -p "$dir"
    "$BIN" serve --listen 127.0.0.1:0 --mode echo "$@" >"$dir/serve.log" 2>&1 &
    local pid=$!
    PIDS+=("$pid")
    local url=""
    for _ in $(seq 1 100); do
        url=$(grep -o 'ws://[0-9.:]*' "$dir/serve.log" | head -1 || true)
        [ -n "$url" ] && break
        sleep 0.1
    done
    [ -n "$url" ] || { echo "autobahn: server did not start"; cat "$dir/serve.log"; return 1; }
    echo "autobahn: $name: kosoku fuzzingclient -> sockeye serve $* at $url"
    # shellcheck disable=SC2086
    timeout 1200 "$VENV/bin/kosoku" -m fuzzingclient "${url#ws://}" $selection -p 2 \
        -o "$dir" >"$dir/kosoku.log" 2>&1 || true
    kill "$pid" 2>/dev/null || true
    python3 scripts/check_autobahn.py "$name" "$dir/index.json" "autobahn/expected/$name.json"
}

# test_client NAME SELECTION FLAGS...: sockeye autobahn-client against kosoku's fuzzing server.
test_client() {
    local name=$1 selection=$2; shift 2
    local dir=$OUT/$name
    rm -rf "$dir"; mkdir -p "$dir"
    local port
    port=$(free_port)
    # shellcheck disable=SC2086
    timeout 1200 "$VENV/bin/kosoku" -m fuzzingserver "127.0.0.1:$port" $selection \
        -o "$dir" >"$dir/kosoku.log" 2>&1 &
    local pid=$!
    PIDS+=("$pid")
    for _ in $(seq 1 100); do
        grep -q listening "$dir/kosoku.log" 2>/dev/null && break
        sleep 0.1
    done
    echo "autobahn: $name: sockeye autobahn-client $* -> kosoku fuzzingserver at ws://127.0.0.1:$port"
    timeout 1200 "$BIN" autobahn-client --url "ws://127.0.0.1:$port" --agent sockeye "$@" \
        >"$dir/client.log" 2>&1 || { echo "autobahn: client failed"; cat "$dir/client.log"; }
    for _ in $(seq 1 300); do [ -f "$dir/index.json" ] && break; sleep 0.1; done
    kill "$pid" 2>/dev/null || true
    python3 scripts/check_autobahn.py "$name" "$dir/index.json" "autobahn/expected/$name.json"
}

NO_DEFLATE="-x 12.* -x 13.*"
status=0
for run in "${RUNS[@]}"; do
    case $run in
        server) test_server server "$NO_DEFLATE" || status=1 ;;
        client) test_client client "$NO_DEFLATE" || status=1 ;;
        server-deflate) test_server server-deflate "" --deflate || status=1 ;;
        client-deflate) test_client client-deflate "" --deflate --deflate-client-no-context-takeover || status=1 ;;
        *) echo "autobahn: unknown run $run"; status=2 ;;
    esac
done
exit $status
