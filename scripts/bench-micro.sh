#!/usr/bin/env bash
# Runs the hot-path micro-benchmarks (benches/benches/micro.rs, crate sockeye-bench) and writes
# target/bench-micro/summary.md: GB/s (or ns per header / per message) of sockeye, tungstenite,
# fastwebsockets and memcpy, with the ratios sockeye / each of the others.
#
#   scripts/bench-micro.sh                     # every group: ~4 min after the build
#   scripts/bench-micro.sh 'unmask|encode'     # only the benchmarks matching a regex
#   MEASURE=2 WARMUP=0.5 scripts/bench-micro.sh
#   BENCH_CPU=0 scripts/bench-micro.sh         # pin to core 0 (default 1; empty: no pinning)
#   CLOCK=wall scripts/bench-micro.sh          # report wall time (default: thread CPU time)
#   SAVE=before scripts/bench-micro.sh         # also keep the run as criterion baseline "before"
#   BASELINE=before scripts/bench-micro.sh     # add a column: sockeye now / sockeye in "before"
#
# The bench is built unpinned, then run pinned to one core with taskset. Each benchmark runs
# WARMUP s of warm-up and MEASURE s of measurement (default 0.3 and 1). The thread CPU clock
# (SOCKEYE_BENCH_CLOCK=cpu, see benches/src/lib.rs) keeps the numbers meaningful on a shared
# machine. Needs python3 for the summary (it reads criterion's JSON files).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
FILTER=${1:-}
MEASURE=${MEASURE:-1}
WARMUP=${WARMUP:-0.3}
BENCH_CPU=${BENCH_CPU-1}
export SOCKEYE_BENCH_CLOCK=${CLOCK:-cpu}
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
OUT=$TARGET/bench-micro
mkdir -p "$OUT"
STAMP=$OUT/.started
touch "$STAMP"

echo "bench-micro: building (cargo bench --no-run)"
cargo bench -p sockeye-bench --bench micro --no-run --quiet

PIN=()
if [ -n "$BENCH_CPU" ] && command -v taskset >/dev/null; then
    PIN=(taskset -c "$BENCH_CPU")
fi
ARGS=(--warm-up-time "$WARMUP" --measurement-time "$MEASURE")
if [ -n "${SAVE:-}" ]; then
    ARGS+=(--save-baseline "$SAVE")
fi
if [ -n "$FILTER" ]; then
    ARGS+=("$FILTER")
fi

echo "bench-micro: running ${PIN[*]:+(${PIN[*]})}"
"${PIN[@]}" cargo bench -p sockeye-bench --bench micro -- "${ARGS[@]}" 2>&1 | tee "$OUT/micro.log"

{
    echo "# sockeye-proto hot paths: micro-benchmarks"
    echo
    echo "- commit: \`$(git rev-parse --short HEAD 2>/dev/null || echo unknown)\`$(
        [ -n "$(git --no-optional-locks status --porcelain -- crates/sockeye-proto 2>/dev/null)" ] \
            && echo ' (sockeye-proto has uncommitted changes)')"
    echo "- cpu: $(lscpu 2>/dev/null | sed -n 's/^Model name: *//p' | head -1), $(nproc) cores"
    echo "- os: $(uname -sr); rustc: $(rustc --version)"
    echo "- load: $(cut -d' ' -f1-3 /proc/loadavg 2>/dev/null || echo unknown) (1, 5, 15 min, at the end)"
    echo "- run: warm-up ${WARMUP} s, measurement ${MEASURE} s per benchmark${PIN[*]:+, ${PIN[*]}}, $SOCKEYE_BENCH_CLOCK clock; medians"
    python3 - "$TARGET/criterion" "$STAMP" "$OUT/micro.log" "${BASELINE:-}" <<'EOF'
import json, os, re, sys

root, stamp, log, baseline = sys.argv[1], os.path.getmtime(sys.argv[2]), sys.argv[3], sys.argv[4]

try:
    shares = [int(m) for m in re.findall(r"on a CPU (\d+)% of the real time", open(log).read())]
except OSError:
    shares = []
if shares:
    print(f"- the benchmark thread was on a CPU {min(shares)}-{max(shares)}% of the real time (100% = no contention)")
print("- GB/s are 10^9 bytes per second; a ratio is sockeye's speed over the other's (above 1: sockeye is faster)")


def read(directory):
    try:
        with open(os.path.join(directory, "estimates.json")) as f:
            estimates = json.load(f)
        with open(os.path.join(directory, "benchmark.json")) as f:
            bench = json.load(f)
    except OSError:
        return None
    return bench, estimates["median"]["point_estimate"]


# group -> row -> implementation -> (ns per iteration, throughput unit, amount per iteration)
results, before = {}, {}
for group in sorted(os.listdir(root)) if os.path.isdir(root) else []:
    gdir = os.path.join(root, group)
    for bench_dir in os.listdir(gdir):
        new = os.path.join(gdir, bench_dir, "new")
        if not os.path.isfile(os.path.join(new, "estimates.json")):
            continue
        if os.path.getmtime(os.path.join(new, "estimates.json")) < stamp:
            continue
        found = read(new)
        if found is None:
            continue
        bench, ns = found
        function = bench["function_id"] or ""
        if "/" not in function:
            continue
        row, implementation = function.rsplit("/", 1)
        (unit, amount), = (bench.get("throughput") or {"Elements": 1}).items()
        results.setdefault(bench["group_id"], {}).setdefault(row, {})[implementation] = (ns, unit, amount)
        if baseline:
            old = read(os.path.join(gdir, bench_dir, baseline))
            if old is not None:
                before.setdefault(bench["group_id"], {}).setdefault(row, {})[implementation] = old[1]

ORDER = {
    "header_parse": ["sockeye", "tungstenite"],
    "unmask": ["sockeye", "fastwebsockets", "memcpy", "sockeye-bytewise"],
    "utf8": ["sockeye", "std", "simdutf8-basic", "simdutf8-compat", "memcpy"],
    "encode": ["sockeye", "sockeye-frame", "tungstenite", "fastwebsockets", "memcpy"],
    "connection": ["sockeye", "tungstenite", "fastwebsockets"],
}
TITLES = {
    "header_parse": "Frame header parse (ns per header)",
    "unmask": "Unmask in place (GB/s); `alignN`: the buffer starts N bytes past a 64-byte boundary",
    "utf8": "UTF-8 validation (GB/s); sockeye = `Utf8Validator::feed` (simdutf8's compat API underneath)",
    "encode": "Client frame encode + mask into a reused buffer (GB/s of payload); sockeye = `Connection::send` + `poll_transmit`, sockeye-frame = `FrameHeader::encode` + `apply_mask`",
    "connection": "Server `Connection`: 64 masked text messages fed in 64 KiB reads, every event taken (ns per message)",
}


def size_key(row):
    m = re.match(r"(?:[a-z0-9-]+/)?(\d+)(B|KiB|MiB)", row)
    if not m:
        return (row, 0)
    scale = {"B": 1, "KiB": 1 << 10, "MiB": 1 << 20}[m.group(2)]
    prefix = row.split("/")[0] if not row[0].isdigit() else ""
    return (prefix, int(m.group(1)) * scale, row)


for group in ["header_parse", "unmask", "utf8", "encode", "connection"] + sorted(set(results) - set(ORDER)):
    rows = results.get(group)
    if not rows:
        continue
    impls = [i for i in ORDER.get(group, []) if any(i in r for r in rows.values())]
    impls += sorted({i for r in rows.values() for i in r} - set(impls))
    others = [i for i in impls if i != "sockeye"]
    print()
    print(f"## {TITLES.get(group, group)}")
    print()
    head = ["case"] + impls + [f"sockeye / {o}" for o in others]
    if baseline:
        head.append(f"sockeye now / {baseline}")
    print("| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))
    for row in sorted(rows, key=size_key):
        cells = [row]
        for i in impls:
            found = rows[row].get(i)
            if found is None:
                cells.append("")
                continue
            ns, unit, amount = found
            if unit == "Bytes":
                cells.append(f"{amount / ns:.2f}")
            else:
                cells.append(f"{ns / amount:.1f}")
        sockeye = rows[row].get("sockeye")
        for o in others:
            other = rows[row].get(o)
            if sockeye is None or other is None:
                cells.append("")
            else:
                ratio = other[0] / sockeye[0]
                cells.append(f"**{ratio:.2f}**" if o == "memcpy" else f"{ratio:.2f}")
        if baseline:
            old = before.get(group, {}).get(row, {}).get("sockeye")
            cells.append(f"{old / sockeye[0]:.2f}" if old and sockeye else "")
        print("| " + " | ".join(cells) + " |")
EOF
} > "$OUT/summary.md"
cat "$OUT/summary.md"
echo "bench-micro: summary in $OUT/summary.md"
