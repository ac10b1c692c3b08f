#!/usr/bin/env bash
# Runs the compression benchmarks of benches/ (crate sockeye-bench) and prints a summary with
# the ratios sockeye / tokio-tungstenite and zlib-rs / miniz_oxide.
#
#   scripts/bench-deflate.sh                      # both benches: ~3 min after the build
#   MEASURE=5 WARMUP=2 scripts/bench-deflate.sh   # longer measurement (seconds per benchmark)
#   BENCH_CPU=0 scripts/bench-deflate.sh          # pin to core 0 (default 1; empty: no pinning)
#   CLOCK=wall scripts/bench-deflate.sh           # report wall time (default: cpu)
#
# The benches are built unpinned first, then run pinned to one core with taskset: each bench is
# a single thread (client and echo server share one current-thread tokio runtime), so pinning
# only removes migrations. By default they report the thread's CPU time rather than wall time
# (SOCKEYE_BENCH_CLOCK=cpu, see benches/src/lib.rs), which keeps the numbers meaningful on a
# shared machine; the summary says what share of the real time the thread got a CPU (near 100%
# on an idle machine, where both clocks agree). Logs and the summary go to
# target/bench-deflate/.
#
# Needs python3 for the summary (it reads criterion's estimates.json files).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
MEASURE=${MEASURE:-3}
WARMUP=${WARMUP:-1}
BENCH_CPU=${BENCH_CPU-1}
export SOCKEYE_BENCH_CLOCK=${CLOCK:-cpu}
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
OUT=$TARGET/bench-deflate
mkdir -p "$OUT"
STAMP=$OUT/.started
touch "$STAMP"

echo "bench-deflate: building (cargo bench --no-run)"
cargo bench -p sockeye-bench --no-run --quiet

PIN=()
if [ -n "$BENCH_CPU" ] && command -v taskset >/dev/null; then
    PIN=(taskset -c "$BENCH_CPU")
fi

for bench in deflate_echo deflate_backends; do
    echo "bench-deflate: running $bench ${PIN[*]:+(${PIN[*]})}"
    "${PIN[@]}" cargo bench -p sockeye-bench --bench "$bench" -- \
        --warm-up-time "$WARMUP" --measurement-time "$MEASURE" 2>&1 | tee "$OUT/$bench.log"
done

{
    echo "commit: $(git rev-parse HEAD 2>/dev/null || echo unknown)$(
        [ -n "$(git --no-optional-locks status --porcelain -- . ':!benches' ':!scripts/bench-deflate.sh' 2>/dev/null)" ] \
            && echo ' (working tree has other changes)')"
    echo "cpu:    $(lscpu 2>/dev/null | sed -n 's/^Model name: *//p' | head -1), $(nproc) cores"
    echo "os:     $(uname -sr)"
    echo "rustc:  $(rustc --version)"
    echo "load:   $(cut -d' ' -f1-3 /proc/loadavg 2>/dev/null || echo unknown) (1, 5, 15 min, at the end)"
    echo "run:    warm-up ${WARMUP}s, measurement ${MEASURE}s per benchmark${PIN[*]:+, ${PIN[*]}}, $SOCKEYE_BENCH_CLOCK clock"
    python3 - "$TARGET/criterion" "$STAMP" "$OUT/deflate_echo.log" "$OUT/deflate_backends.log" <<'EOF'
import json, os, re, sys

root, stamp, echo_log, backends_log = sys.argv[1], os.path.getmtime(sys.argv[2]), sys.argv[3], sys.argv[4]

shares = []
for log in (echo_log, backends_log):
    try:
        shares += [int(m) for m in re.findall(r"^clock: .*on a CPU (\d+)% of the real time", open(log).read(), re.M)]
    except OSError:
        pass
if shares:
    print(f"share:  the benchmark thread was on a CPU {min(shares)}-{max(shares)}% of the real time "
          f"(median {sorted(shares)[len(shares) // 2]}%; 100% = no contention)")


def load(group, function):
    """Median time per iteration (ns) and elements or bytes per iteration, if run just now."""
    d = os.path.join(root, group, function.replace("/", "_"), "new")
    try:
        if os.path.getmtime(os.path.join(d, "estimates.json")) < stamp:
            return None
        estimates = json.load(open(os.path.join(d, "estimates.json")))
        bench = json.load(open(os.path.join(d, "benchmark.json")))
    except OSError:
        return None
    (unit, per_iter), = bench["throughput"].items()
    return estimates["median"]["point_estimate"], per_iter


def rate(group, function):
    found = load(group, function)
    return None if found is None else found[1] / (found[0] / 1e9)


def ratio(a, b):
    return "n/a" if a is None or b is None else f"{a / b:.2f}"


LIBS = ["sockeye-deflate", "sockeye-plain", "tokio-tungstenite-plain", "fastwebsockets-plain"]
print()
per = "CPU-second of the thread" if os.environ.get("SOCKEYE_BENCH_CLOCK") == "cpu" else "second"
print(f"Echo of 1 KiB JSON text messages over loopback, one connection (median, messages per {per}):")
print("  (tokio-tungstenite 0.30 and fastwebsockets 0.10 have no permessage-deflate: '-plain')")
for group, title in [("echo_ping_pong_1KiB", "ping-pong"), ("echo_pipelined_1KiB", "pipelined 100")]:
    rates = {lib: rate(group, lib) for lib in LIBS}
    cells = "  ".join(
        f"{lib} {r / 1e3:7.1f}k ({1e6 / r:5.1f} us/msg)" if r else f"{lib} n/a" for lib, r in rates.items()
    )
    print(f"  {title:13} {cells}")
    print(
        f"  {'':13} ratios (throughput): sockeye-deflate/tungstenite-plain "
        f"{ratio(rates['sockeye-deflate'], rates['tokio-tungstenite-plain'])}, "
        f"sockeye-plain/tungstenite-plain {ratio(rates['sockeye-plain'], rates['tokio-tungstenite-plain'])}, "
        f"sockeye-deflate/sockeye-plain {ratio(rates['sockeye-deflate'], rates['sockeye-plain'])}, "
        f"sockeye-plain/fastwebsockets-plain {ratio(rates['sockeye-plain'], rates['fastwebsockets-plain'])}"
    )
    l1, fwd = rate(group, "sockeye-deflate-level1"), rate(group, "sockeye-plain-forward")
    context = f"sockeye-deflate-level1 {l1 / 1e3:.1f}k (x{ratio(l1, rates['sockeye-deflate'])} of level 6)" if l1 else ""
    if fwd:
        context += (
            f", sockeye-plain-forward {fwd / 1e3:.1f}k "
            f"(sockeye-plain-forward/tungstenite-plain {ratio(fwd, rates['tokio-tungstenite-plain'])})"
        )
    print(f"  {'':13} context: {context}")

print()
print(f"Raw DEFLATE, context takeover + sync flush, level 6 (median, MiB of uncompressed data per {per}):")
for size in ["1KiB", "64KiB"]:
    group = f"backends_{size}"
    for op in ["compress", "decompress", "roundtrip"]:
        z = rate(group, f"{op}/flate2-zlib-rs")
        m = rate(group, f"{op}/miniz_oxide")
        fmt = lambda r: f"{r / 2**20:7.1f}" if r else "    n/a"
        print(f"  {size:5} {op:10} zlib-rs {fmt(z)}  miniz_oxide {fmt(m)}  zlib-rs/miniz {ratio(z, m)}")
try:
    for line in open(backends_log):
        if line.startswith("size: "):
            print("  " + line.strip())
except OSError:
    pass
EOF
} | tee "$OUT/summary.txt"
echo "bench-deflate: summary in $OUT/summary.txt"
