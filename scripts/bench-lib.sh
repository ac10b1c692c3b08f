# Shared by scripts/bench.sh and scripts/bench-fanout.sh (sourced): pins the server to core 0
# and the load client to core 1 when there are two cores (PIN_SERVER, PIN_CLIENT, PINNING),
# raises the open-files limit for both, and stops the server started last ($SERVER_PID) on exit.

if [ "$(nproc)" -ge 2 ] && command -v taskset >/dev/null; then
    PIN_SERVER=(taskset -c 0)
    PIN_CLIENT=(taskset -c 1)
    PINNING="server on core 0, client on core 1"
else
    PIN_SERVER=()
    PIN_CLIENT=()
    PINNING="not pinned (one core or no taskset)"
fi
# Thousands of sockets on each side; both processes inherit this.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

SERVER_PID=""
cleanup() { if [ -n "$SERVER_PID" ]; then kill "$SERVER_PID" 2>/dev/null || true; wait "$SERVER_PID" 2>/dev/null || true; fi; }
trap cleanup EXIT
