#!/usr/bin/env bash
# Fan-out of broadcast servers: sockeye serve --mode broadcast, Bun (Bun.serve, ws.subscribe +
# ws.publish) and a Node ws broadcast loop, measured by `sockeye bench --fanout`: subscribers on
# one path, one publisher sending 100 B messages at a rate that offers the target deliveries/s.
#
#   scripts/bench-fanout.sh                             # the whole matrix, 3 repetitions (~15 min)
#   SUBS=1000 RATES=100000 SECS=2 REPS=1 scripts/bench-fanout.sh    # one row, quickly
#   SERVERS="sockeye bun" NO_BUILD=1 scripts/bench-fanout.sh
#
# Knobs (environment): SECS (measured seconds per run, 5), WARMUP (1), REPS (3), SUBS
# (subscriber counts, "1000 10000"), RATES (offered deliveries per second, "100000 500000
# 1000000"; the publish rate is RATE / SUBS), SIZE (100), SERVERS (sockeye bun node; also
# sockeye-2t: sockeye serve --threads 2, pinned like the others, for the multi-core row),
# SOCKEYE_THREADS (sockeye serve --threads, 1),
# DRAIN (drain timeout, 5), NO_BUILD=1 (use target/bench-lto/sockeye as built).
#
# sockeye serve runs with its defaults except --max-connections 100000 (its default of 10,000
# would turn away the publisher of the 10,000-subscriber rows). Bun and ws are installed with
# `npm ci` into benches/fanout/node_modules (versions pinned by its package-lock.json; Debian's
# nodejs and npm if missing). Repetitions are interleaved (every row against every server in
# turn, then the next repetition); the server is pinned to core 0 and the client to core 1
# when there are two cores. Results: target/bench-fanout/results.tsv (one line per run),
# target/bench-fanout/runs.jsonl (every report), target/bench-fanout/summary.md.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
OUT=$ROOT/target/bench-fanout
PROFILE=bench-lto
SOCKEYE=$ROOT/target/$PROFILE/sockeye
SECS=${SECS:-5}
WARMUP=${WARMUP:-1}
REPS=${REPS:-3}
SUBS=${SUBS:-"1000 10000"}
RATES=${RATES:-"100000 500000 1000000"}
SIZE=${SIZE:-100}
SERVERS=${SERVERS:-"sockeye bun node"}
SOCKEYE_THREADS=${SOCKEYE_THREADS:-1}
DRAIN=${DRAIN:-5}
# Opening 10,000 subscribers, the settle, warm-up, run and drain, with room to spare; a run
# still going then is recorded as failed.
CLIENT_TIMEOUT=$(awk "BEGIN { print int($SECS + $WARMUP + $DRAIN + 90) }")

say() { echo "bench-fanout: $*" >&2; }

if [ "${NO_BUILD:-0}" != 1 ]; then
    say "building sockeye (profile $PROFILE: fat LTO, 1 codegen unit)"
    cargo build --quiet --profile "$PROFILE" -p sockeye-cli --bin sockeye
fi

# shellcheck source=scripts/bench-js.sh
source "$ROOT/scripts/bench-js.sh"
case " $SERVERS " in *" bun "* | *" node "*) setup_js ;; esac

mkdir -p "$OUT"
: >"$OUT/results.tsv"
: >"$OUT/runs.jsonl"
: >"$OUT/runs.log"

# shellcheck source=scripts/bench-lib.sh
source "$ROOT/scripts/bench-lib.sh"

SOCKEYE_ARGS=(serve --listen 127.0.0.1:0 --mode broadcast --max-connections 100000)
SOCKEYE_NOTE="sockeye serve --threads $SOCKEYE_THREADS (sockeye-2t: --threads 2)"


# start_server KIND: starts a broadcast server, sets SERVER_PID and ADDR.
start_server() {
    local log=$OUT/server.log
    rm -f "$log"
    case $1 in
        sockeye) "${PIN_SERVER[@]}" "$SOCKEYE" "${SOCKEYE_ARGS[@]}" --threads "$SOCKEYE_THREADS" >"$log" 2>&1 & ;;
        # The multi-core row: two threads, on the server's core(s), compared per CPU-second.
        sockeye-2t) "${PIN_SERVER[@]}" "$SOCKEYE" "${SOCKEYE_ARGS[@]}" --threads 2 >"$log" 2>&1 & ;;
        bun) "${PIN_SERVER[@]}" "$BUN" "$JS_DIR/bun-broadcast.js" 0 >"$log" 2>&1 & ;;
        node) "${PIN_SERVER[@]}" node "$JS_DIR/node-broadcast.mjs" 0 >"$log" 2>&1 & ;;
        *) say "unknown server $1"; exit 2 ;;
    esac
    SERVER_PID=$!
    ADDR=""
    for _ in $(seq 1 500); do
        ADDR=$(grep -o '127\.0\.0\.1:[0-9]*' "$log" 2>/dev/null | head -1 || true)
        [ -n "$ADDR" ] && return 0
        sleep 0.02
    done
    say "$1 server did not start"
    cat "$log" >&2
    exit 1
}

stop_server() {
    kill "$SERVER_PID" 2>/dev/null || true
    wait "$SERVER_PID" 2>/dev/null || true
    SERVER_PID=""
}

say "$REPS repetitions × subscribers [$SUBS] × offered deliveries/s [$RATES] × [$SERVERS], ${SECS}s each after ${WARMUP}s warm-up; $PINNING"
for rep in $(seq 1 "$REPS"); do
    for subs in $SUBS; do
        for offered in $RATES; do
            rate=$(awk "BEGIN { print $offered / $subs }")
            for server in $SERVERS; do
                start_server "$server"
                status=0
                json=$(timeout "$CLIENT_TIMEOUT" "${PIN_CLIENT[@]}" "$SOCKEYE" bench --fanout "ws://$ADDR/fanout" \
                    --subscribers "$subs" --rate "$rate" --size "$SIZE" --duration "$SECS" --warmup "$WARMUP" \
                    --drain-timeout "$DRAIN" --pid "$SERVER_PID" --json 2>>"$OUT/runs.log") || status=$?
                stop_server
                [ -n "$json" ] || json='{}'
                echo "$json" | python3 -c '
import json, sys
rep, server, subs, offered, status = sys.argv[1:]
try:
    r = json.loads(sys.stdin.read() or "{}")
except ValueError:
    r = {}
# No latency without a measured delivery.
lat = r.get("latency_us", {}) if r.get("deliveries") else {}
nan = "nan"
row = [rep, server, subs, offered,
       r.get("achieved_deliveries_per_sec", nan), r.get("missed", nan), r.get("disconnected", nan),
       lat.get("p50", nan), lat.get("p99", nan), r.get("messages_per_read", nan),
       r.get("deliveries_per_server_cpu_sec") or nan, r.get("server_cpu_secs") or nan, status]
window = r.get("cpu_window_secs") or 0
row.append(r["client_cpu_secs"] / window if window > 0 else nan)
print("\t".join(str(v) for v in row))
' "$rep" "$server" "$subs" "$offered" "$status" >>"$OUT/results.tsv"
                echo "{\"rep\":$rep,\"server\":\"$server\",\"exit\":$status,\"report\":$json}" >>"$OUT/runs.jsonl"
                say "rep $rep, $subs subscribers, $offered/s offered, $server: $(tail -1 "$OUT/results.tsv" | cut -f5- | tr '\t' ' ') (achieved missed disc p50 p99 msgs/read per-cpu server-cpu exit client-cpu-share)"
            done
        done
    done
done

{
    echo "# Fan-out benchmark"
    echo
    echo "$(date -u +%Y-%m-%dT%H:%MZ), commit $(git rev-parse --short HEAD 2>/dev/null || echo '?')$(git diff --quiet 2>/dev/null || echo ' (modified)'),"
    echo "$(nproc) cores ($(grep -m1 'model name' /proc/cpuinfo 2>/dev/null | cut -d: -f2 | sed 's/^ //')), $(rustc --version),"
    echo "bun $("$BUN" --version 2>/dev/null || echo '?'), node $(node --version 2>/dev/null || echo '?') with ws $(node -p "require('$JS_DIR/node_modules/ws/package.json').version" 2>/dev/null || echo '?');"
    echo "$REPS repetitions of ${SECS}s (after ${WARMUP}s warm-up), $SIZE B messages, one publisher, $PINNING;"
    echo "$SOCKEYE_NOTE, --max-connections 100000; client: sockeye bench --fanout (profile $PROFILE)."
    echo
    python3 - "$OUT/results.tsv" <<'EOF'
import statistics, sys
from collections import defaultdict

rows = defaultdict(dict)  # (subs, offered, server) -> rep -> fields
order = []
for line in open(sys.argv[1]):
    f = line.rstrip("\n").split("\t")
    if len(f) < 14:
        continue
    rep, server, subs, offered = f[0], f[1], int(f[2]), int(float(f[3]))
    num = lambda s: float(s) if s not in ("", "nan", "None") else float("nan")
    rows[(subs, offered, server)][rep] = dict(
        achieved=num(f[4]), missed=num(f[5]), disconnected=num(f[6]), p50=num(f[7]), p99=num(f[8]),
        per_read=num(f[9]), per_cpu=num(f[10]), exit=f[12], client=num(f[13]))
    if (subs, offered) not in order:
        order.append((subs, offered))

def med(values):
    values = [v for v in values if v == v]
    return statistics.median(values) if values else float("nan")

def human(v):
    if v != v:
        return "—"
    if v >= 1e6:
        return f"{v / 1e6:.2f}M"
    if v >= 1e4:
        return f"{v / 1e3:.0f}k"
    return f"{v:.0f}"

def ms(us):
    return "—" if us != us else f"{us / 1000:.2f}"

print("Median over repetitions; missed and disconnected: the largest of any repetition. Ratio vs")
print("Bun: deliveries per server CPU-second, paired per repetition (median); above 1 is fewer")
print("CPU cycles per delivery than Bun.\n")
print("| server | subs | offered/s | achieved/s | missed | disconnected | p50 ms | p99 ms | msgs/read | deliveries per server CPU-s | ratio vs Bun |")
print("|---|---|---|---|---|---|---|---|---|---|---|")
servers = []
for (_, _, server) in rows:
    if server not in servers:
        servers.append(server)
for subs, offered in order:
    for server in servers:
        reps = rows.get((subs, offered, server))
        if not reps:
            continue
        bun = rows.get((subs, offered, "bun"), {})
        ratios = [r["per_cpu"] / bun[k]["per_cpu"] for k, r in reps.items()
                  if k in bun and bun[k]["per_cpu"] > 0 and r["per_cpu"] == r["per_cpu"]]
        worst = lambda key: max((r[key] for r in reps.values() if r[key] == r[key]), default=float("nan"))
        failed = sum(1 for r in reps.values() if r["exit"] not in ("0",))
        print(f"| {server}{' (' + str(failed) + ' failed)' if failed else ''} | {subs:,} | {human(offered)} "
              f"| {human(med(r['achieved'] for r in reps.values()))} "
              f"| {human(worst('missed'))} | {human(worst('disconnected'))} "
              f"| {ms(med(r['p50'] for r in reps.values()))} | {ms(med(r['p99'] for r in reps.values()))} "
              f"| {med(r['per_read'] for r in reps.values()):.1f} "
              f"| {human(med(r['per_cpu'] for r in reps.values()))} "
              f"| {'—' if not ratios else f'{statistics.median(ratios):.2f}'} |")
clients = [r["client"] for reps in rows.values() for r in reps.values() if r["client"] == r["client"]]
if clients:
    print(f"\nClient CPU (sockeye bench --fanout, share of one core from the end of the warm-up until")
    print(f"the last subscriber is done): median {statistics.median(clients):.2f}, max {max(clients):.2f};")
    print("near 1.0, the client and not the server may limit a row.")
print("\n(n failed): repetitions whose bench exited non-zero (a missed, duplicate or out-of-order")
print("message, a disconnect, or a timeout); their figures are in the medians all the same.")
EOF
} >"$OUT/summary.md"
echo
cat "$OUT/summary.md"
