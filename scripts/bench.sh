#!/usr/bin/env bash
# Echo throughput, idle memory and handshake rate of sockeye against tokio-tungstenite,
# fastwebsockets, tokio-websockets, Bun and a raw TCP echo (the ceiling), every Rust server on
# one thread (Bun: its own event loop, benches/fanout/bun-echo.js).
#
#   scripts/bench.sh                      # every scenario, 3 repetitions of 3 s (~9 min)
#   SECS=10 REPS=5 scripts/bench.sh       # longer
#   SCENARIOS="20B pipelined" SERVERS="sockeye fastwebsockets" scripts/bench.sh
#
# Knobs (environment): SECS (measured seconds per run, 3), WARMUP (0.5), REPS (3),
# SCENARIOS (names below), SERVERS (sockeye sockeye-serve tungstenite fastwebsockets
# tokio-websockets bun raw; sockeye-serve is `sockeye serve --mode echo --threads 1`;
# bun is installed with npm ci into benches/fanout/node_modules, see scripts/bench-js.sh),
# IDLE_CONNS (1000), HANDSHAKE_CONCURRENCY (32), NO_BUILD=1 (use the binaries already built).
#
# Repetitions are interleaved: each repetition runs every scenario against every server in
# turn, so a slow patch of the machine hits all servers alike, and the ratios sockeye/other
# are taken within each repetition. The server runs pinned to core 0 and the load client to
# core 1 (`taskset`) when the machine has two cores or more. Results: target/bench/results.tsv
# (one line per run), target/bench/runs.log (every client line), target/bench/summary.md.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
OUT=$ROOT/target/bench
PROFILE=bench-lto
BIN=$ROOT/target/$PROFILE
SECS=${SECS:-3}
WARMUP=${WARMUP:-0.5}
REPS=${REPS:-3}
SERVERS=${SERVERS:-"sockeye sockeye-serve tungstenite fastwebsockets tokio-websockets bun raw"}
ALL_SCENARIOS="20B 1KiB 1KiB-text 64KiB 16MiB pipelined-20B arena idle-rss handshakes"
SCENARIOS=${SCENARIOS:-$ALL_SCENARIOS}
IDLE_CONNS=${IDLE_CONNS:-1000}
HANDSHAKE_CONCURRENCY=${HANDSHAKE_CONCURRENCY:-32}
# A run that has not printed its line by then is recorded as failed (rate nan).
CLIENT_TIMEOUT=$(awk "BEGIN { print int($SECS + $WARMUP + 60) }")

if [ "${NO_BUILD:-0}" != 1 ]; then
    echo "bench: building echo servers and load client (profile $PROFILE: fat LTO, 1 codegen unit)"
    cargo build --quiet --profile "$PROFILE" -p sockeye-bench --bin echo_server --bin load
    cargo build --quiet --profile "$PROFILE" -p sockeye-cli --bin sockeye
fi
# shellcheck source=scripts/bench-js.sh
source "$ROOT/scripts/bench-js.sh"
case " $SERVERS " in *" bun "*) setup_js ;; esac
mkdir -p "$OUT"
: >"$OUT/results.tsv"
: >"$OUT/runs.log"

# shellcheck source=scripts/bench-lib.sh
source "$ROOT/scripts/bench-lib.sh"

# start_server KIND: starts the echo server, sets SERVER_PID and ADDR.
start_server() {
    local log=$OUT/server.log
    # Removed first: otherwise the previous server's address may be read before the new server
    # has even truncated the log.
    rm -f "$log"
    if [ "$1" = bun ]; then
        "${PIN_SERVER[@]}" "$BUN" "$JS_DIR/bun-echo.js" 0 >"$log" 2>&1 &
    elif [ "$1" = sockeye-serve ]; then
        # The command as users run it, with its defaults (keepalive on), on one thread.
        "${PIN_SERVER[@]}" "$BIN/sockeye" serve --listen 127.0.0.1:0 --mode echo --threads 1 \
            --max-connections 100000 >"$log" 2>&1 &
    else
        "${PIN_SERVER[@]}" "$BIN/echo_server" "$1" 127.0.0.1:0 >"$log" 2>&1 &
    fi
    SERVER_PID=$!
    ADDR=""
    for _ in $(seq 1 200); do
        ADDR=$(grep -o '127\.0\.0\.1:[0-9]*' "$log" 2>/dev/null | head -1 || true)
        [ -n "$ADDR" ] && return 0
        sleep 0.02
    done
    echo "bench: $1 server did not start" >&2
    cat "$log" >&2
    exit 1
}

stop_server() {
    kill "$SERVER_PID" 2>/dev/null || true
    wait "$SERVER_PID" 2>/dev/null || true
    SERVER_PID=""
}

# The load client's arguments for a scenario, or nothing when the server does not apply.
client_args() {
    local scenario=$1 server=$2 raw=()
    [ "$server" = raw ] && raw=(--raw)
    local timing=(--secs "$SECS" --warmup "$WARMUP" --pid "$SERVER_PID")
    case $scenario in
        20B) echo echo "$ADDR" --conns 100 --inflight 1 --size 20 "${raw[@]}" "${timing[@]}" ;;
        1KiB) echo echo "$ADDR" --conns 100 --inflight 1 --size 1024 "${raw[@]}" "${timing[@]}" ;;
        1KiB-text) echo echo "$ADDR" --conns 100 --inflight 1 --size 1024 --text "${raw[@]}" "${timing[@]}" ;;
        64KiB) echo echo "$ADDR" --conns 10 --inflight 1 --size 65536 "${raw[@]}" "${timing[@]}" ;;
        16MiB) echo echo "$ADDR" --conns 1 --inflight 1 --size 16777216 "${raw[@]}" "${timing[@]}" ;;
        pipelined-20B) echo echo "$ADDR" --conns 100 --inflight 16 --size 20 "${raw[@]}" "${timing[@]}" ;;
        # HttpArena's WebSocket row: 4,096 connections × 16 in flight × 5-byte text.
        arena) echo echo "$ADDR" --conns 4096 --inflight 16 --size 5 --text "${raw[@]}" "${timing[@]}" ;;
        idle-rss) [ "$server" = raw ] || echo idle "$ADDR" --conns "$IDLE_CONNS" --pid "$SERVER_PID" ;;
        handshakes) [ "$server" = raw ] || echo handshakes "$ADDR" --concurrency "$HANDSHAKE_CONCURRENCY" "${timing[@]}" ;;
        *) echo "bench: unknown scenario $scenario" >&2; exit 2 ;;
    esac
}

echo "bench: $REPS repetitions × [$SCENARIOS] × [$SERVERS], ${SECS}s each; $PINNING"
for rep in $(seq 1 "$REPS"); do
    for scenario in $SCENARIOS; do
        for server in $SERVERS; do
            start_server "$server"
            args=$(client_args "$scenario" "$server")
            if [ -z "$args" ]; then
                stop_server
                continue
            fi
            # shellcheck disable=SC2086 # args is a word list built above
            line=$(timeout "$CLIENT_TIMEOUT" "${PIN_CLIENT[@]}" "$BIN/load" $args 2>>"$OUT/runs.log") || line="rate=nan failed"
            stop_server
            echo "rep=$rep scenario=$scenario server=$server $line" | tee -a "$OUT/runs.log"
            field() { echo "$line" | tr ' ' '\n' | sed -n "s/^$1=//p"; }
            printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$rep" "$scenario" "$server" \
                "$(field rate)" "$(field client_cpu)" "$(field server_cpu)" >>"$OUT/results.tsv"
        done
    done
done

{
    echo "# sockeye echo benchmark"
    echo
    echo "$(date -u +%Y-%m-%dT%H:%MZ), commit $(git rev-parse --short HEAD 2>/dev/null || echo '?')$(git diff --quiet 2>/dev/null || echo ' (modified)'),"
    echo "$(nproc) cores ($(grep -m1 'model name' /proc/cpuinfo 2>/dev/null | cut -d: -f2 | sed 's/^ //')), $(rustc --version),"
    echo "$REPS repetitions of ${SECS}s (after ${WARMUP}s warm-up), $PINNING, profile $PROFILE."
    echo
    echo "Median (min–max) over repetitions: messages/s echoed, except idle-rss (server RSS bytes"
    echo "per idle connection, lower is better) and handshakes (connect + opening and closing"
    echo "handshakes per second). Ratios are sockeye/other within each repetition, median"
    echo "(min–max). Client CPU: the load client's CPU time over wall time, all servers (median, max);"
    echo "server CPU: sockeye server's. Servers: tokio-tungstenite, fastwebsockets and tokio-websockets as"
    echo "their own examples write an echo server; Bun $("$BUN" --version 2>/dev/null || echo '?'): Bun.serve echoing in its message handler."
    echo "Scenarios: 20B, 1KiB, 1KiB-text (UTF-8 validated),"
    echo "pipelined-20B: 100 connections, 1 or 16 messages in flight each; 64KiB: 10 connections;"
    echo "16MiB: 1 connection; arena: 4,096 connections × 16 in flight × 5-byte text (HttpArena's row)."
    echo "sockeye: the bench's echo server on sockeye::Server; sockeye-serve: \`sockeye serve --mode echo --threads 1\`."
    echo
    "$BIN/load" summarize "$OUT/results.tsv"
} >"$OUT/summary.md"
echo
cat "$OUT/summary.md"
