#!/usr/bin/env bash
# Server memory per connection with permessage-deflate (issue 17): N Python `websockets`
# clients (N=2000 by default) connect to an echo server, offering deflate the way browsers do
# ("permessage-deflate; client_max_window_bits"), or offering nothing for the plain baseline.
# The server's resident memory (VmRSS of /proc/PID/status) is read before the clients connect,
# once they are all connected and idle, and after each has sent one 1 KiB text message and
# received its echo (one message each way). Reported: KB per connection over the baseline.
#
#   scripts/bench-deflate-memory.sh                 # sockeye, Node ws, Bun
#   N=500 scripts/bench-deflate-memory.sh sockeye   # fewer clients, some servers only
#   SOCKEYE=/tmp/old/sockeye scripts/bench-deflate-memory.sh sockeye   # another build
#
# Servers: `sockeye serve --mode echo --deflate` (release build), Node `ws` with
# perMessageDeflate: true (interop/node's pinned ws), and Bun.serve with
# websocket.perMessageDeflate: true (the `bun` npm package, BUN_VERSION below, installed into
# target/bench-deflate-memory/bun). The Python venv and ws are set up as scripts/interop.sh
# does (target/venv, interop/node/node_modules); a server whose runtime cannot be installed is
# skipped with a note. Everything listens on 127.0.0.1 port 0, every step runs under
# `timeout`, every process started is killed on exit. Logs: target/bench-deflate-memory/.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
N=${N:-2000}
BUN_VERSION=${BUN_VERSION:-1.2.23}
TARGET_DIR=$(cargo metadata --format-version 1 --no-deps |
    sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')
OUT=$TARGET_DIR/bench-deflate-memory
VENV=$TARGET_DIR/venv
NODE_DIR=$ROOT/interop/node
# SOCKEYE=/path/to/sockeye measures that binary (e.g. an older build) instead of building one.
SOCKEYE_GIVEN=${SOCKEYE:-}
SOCKEYE=${SOCKEYE:-$TARGET_DIR/release/sockeye}
STEP_TIMEOUT=180
mkdir -p "$OUT"
SERVERS=("$@")
[ ${#SERVERS[@]} -gt 0 ] || SERVERS=(sockeye node bun)

say() { printf 'bench-deflate-memory: %s\n' "$*"; }

PIDS=()
cleanup() {
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
}
trap cleanup EXIT

# Each client process holds N sockets and so does the server: raise the limit.
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"
[ "$(ulimit -n)" -gt $((N + 100)) ] || { say "open-file limit $(ulimit -n) is too low for N=$N"; exit 1; }

# shellcheck source=scripts/peers.sh
source "$ROOT/scripts/peers.sh"

BUN=$OUT/bun/node_modules/.bin/bun
setup_bun() {
    if [ -x "$BUN" ] && [ "$("$BUN" --version 2>/dev/null)" = "$BUN_VERSION" ]; then
        return 0
    fi
    say "installing bun $BUN_VERSION from npm into $OUT/bun"
    mkdir -p "$OUT/bun"
    (cd "$OUT/bun" && npm install --no-audit --no-fund --loglevel=error --no-save \
        "bun@$BUN_VERSION") >"$OUT/bun-install.log" 2>&1 || return 1
    [ "$("$BUN" --version 2>/dev/null)" = "$BUN_VERSION" ]
}

# The clients: connect N (at most 100 handshakes at a time), report, wait for "send" on stdin,
# exchange one message each, report, wait for "close", close them all.
cat >"$OUT/clients.py" <<'EOF'
import asyncio, sys
from websockets.asyncio.client import connect

url, n, deflate = sys.argv[1], int(sys.argv[2]), sys.argv[3] == "deflate"
MESSAGE = ('{"type":"tick","symbol":"ACME","price":101.25,"volume":1200},' * 20)[:1024]

async def line():
    return await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)

async def main():
    gate = asyncio.Semaphore(100)
    async def open_one():
        async with gate:
            # compression="deflate" offers "permessage-deflate; client_max_window_bits", as
            # browsers do.
            return await connect(url, compression="deflate" if deflate else None,
                                 open_timeout=60, ping_interval=None, max_size=None)
    conns = await asyncio.gather(*(open_one() for _ in range(n)))
    extensions = conns[0].response.headers.get("Sec-WebSocket-Extensions", "")
    print(f"connected {len(conns)} extensions {extensions!r}", flush=True)
    await line()
    async def exchange(ws):
        await ws.send(MESSAGE)
        echo = await ws.recv()
        assert echo == MESSAGE, "echo differs"
    await asyncio.gather(*(exchange(ws) for ws in conns))
    print("exchanged", flush=True)
    await line()
    await asyncio.gather(*(ws.close() for ws in conns), return_exceptions=True)

asyncio.run(main())
EOF

cat >"$OUT/node-server.mjs" <<'EOF'
import { createRequire } from 'node:module';
const require = createRequire(process.env.NODE_DIR + '/package.json');
const { WebSocketServer } = require('ws');
const wss = new WebSocketServer({ host: '127.0.0.1', port: 0, perMessageDeflate: true });
wss.on('connection', (ws) => ws.on('message', (data, isBinary) => ws.send(data, { binary: isBinary })));
wss.on('listening', () => console.log(`listening on ws://127.0.0.1:${wss.address().port}/`));
EOF

cat >"$OUT/bun-server.js" <<'EOF'
const server = Bun.serve({
  hostname: '127.0.0.1',
  port: 0,
  fetch(req, server) {
    if (server.upgrade(req)) return;
    return new Response('websocket only', { status: 400 });
  },
  websocket: {
    perMessageDeflate: true,
    message(ws, message) { ws.send(message); },
  },
});
console.log(`listening on ws://127.0.0.1:${server.port}/`);
EOF

rss_kb() { sed -n 's/^VmRSS:[[:space:]]*\([0-9]*\) kB/\1/p' "/proc/$1/status"; }

# Starts server $1 (deflate on), prints its PID and URL into SERVER_PID / SERVER_URL.
start_server() {
    local name=$1 log=$OUT/$1-server.log
    case $name in
        sockeye) timeout 900 "$SOCKEYE" serve --listen 127.0.0.1:0 --mode echo --deflate \
                     --max-connections $((N + 100)) >"$log" 2>&1 & ;;
        node) NODE_DIR=$NODE_DIR timeout 900 node "$OUT/node-server.mjs" >"$log" 2>&1 & ;;
        bun) timeout 900 "$BUN" "$OUT/bun-server.js" >"$log" 2>&1 & ;;
    esac
    SERVER_PID=$!
    PIDS+=("$SERVER_PID")
    SERVER_URL=
    for _ in $(seq 100); do
        SERVER_URL=$(grep -o 'ws://127\.0\.0\.1:[0-9]*/' "$log" | head -1 || true)
        [ -n "$SERVER_URL" ] && break
        sleep 0.1
    done
    [ -n "$SERVER_URL" ] || { say "$name did not start:"; cat "$log"; return 1; }
    # `timeout` runs the server as its child: measure the server itself.
    local child
    child=$(pgrep -P "$SERVER_PID" | head -1 || true)
    [ -z "$child" ] || SERVER_PID=$child
}

# One run: server $1, clients offering deflate ($2 = deflate) or not ($2 = plain).
# Prints "name offer idle_kb exchanged_kb extensions".
measure() {
    local name=$1 offer=$2 fifo=$OUT/fifo log=$OUT/$1-$2-clients.log
    start_server "$name"
    # A warm-up connection: the server's runtime, buffers and shared state exist from then on.
    echo | timeout 60 "$VENV/bin/python" "$OUT/clients.py" "$SERVER_URL" 1 "$offer" \
        >/dev/null 2>&1 || true
    sleep 1
    local base idle exchanged
    base=$(rss_kb "$SERVER_PID")
    rm -f "$fifo" && mkfifo "$fifo"
    timeout $STEP_TIMEOUT "$VENV/bin/python" "$OUT/clients.py" "$SERVER_URL" "$N" "$offer" \
        <"$fifo" >"$log" 2>&1 &
    local clients=$!
    PIDS+=("$clients")
    exec 7>"$fifo"
    for _ in $(seq $((STEP_TIMEOUT * 10))); do
        grep -q '^connected' "$log" && break
        kill -0 "$clients" 2>/dev/null || break
        sleep 0.1
    done
    grep -q '^connected' "$log" || { say "$name/$offer: clients failed:"; tail -5 "$log"; exec 7>&-; return 1; }
    sleep 2
    idle=$(rss_kb "$SERVER_PID")
    echo send >&7
    for _ in $(seq $((STEP_TIMEOUT * 10))); do
        grep -q '^exchanged' "$log" && break
        kill -0 "$clients" 2>/dev/null || break
        sleep 0.1
    done
    grep -q '^exchanged' "$log" || { say "$name/$offer: exchange failed:"; tail -5 "$log"; exec 7>&-; return 1; }
    sleep 2
    exchanged=$(rss_kb "$SERVER_PID")
    echo close >&7
    exec 7>&-
    wait "$clients" || true
    kill "$SERVER_PID" 2>/dev/null || true
    wait 2>/dev/null || true
    local extensions
    extensions=$(sed -n "s/^connected [0-9]* extensions //p" "$log")
    python3 -c "import sys; b,i,e,n=map(int,sys.argv[1:5]); print(f'{sys.argv[5]:8} {sys.argv[6]:7} {(i-b)/n:8.1f} {(e-b)/n:10.1f}   {sys.argv[7]}')" \
        "$base" "$idle" "$exchanged" "$N" "$name" "$offer" "$extensions"
}

setup_python
RESULTS=$OUT/results.txt
{
    echo "commit: $(git rev-parse --short HEAD 2>/dev/null || echo unknown), N=$N clients (Python websockets $(
        "$VENV/bin/python" -c 'import websockets.version as v; print(v.version)'))"
    echo "server   offer   idle KB/conn   after 1 KiB each way KB/conn   extensions agreed"
} >"$RESULTS"
for server in "${SERVERS[@]}"; do
    case $server in
        sockeye)
            if [ -z "$SOCKEYE_GIVEN" ]; then
                say "building sockeye (release)"
                cargo build --release --quiet -p sockeye-cli
            fi ;;
        node)
            setup_node ;;
        bun)
            if ! setup_bun; then
                say "bun $BUN_VERSION could not be installed from npm (see $OUT/bun-install.log): skipped"
                echo "bun      skipped: not installable here" >>"$RESULTS"
                continue
            fi ;;
        *) say "unknown server $server"; exit 2 ;;
    esac
    for offer in plain deflate; do
        say "$server, $offer clients"
        measure "$server" "$offer" | tee -a "$RESULTS"
    done
done
echo
cat "$RESULTS"
