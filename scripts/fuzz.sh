#!/usr/bin/env bash
# Builds every cargo-fuzz target in fuzz/ and runs each for a bounded time (STYLE.md §10).
#
#   scripts/fuzz.sh            # 30 s per target
#   scripts/fuzz.sh 3600       # an hour per target
#   scripts/fuzz.sh 60 mask frame_header   # only the named targets
#
# Environment:
#   FUZZ_SANITIZER=none   build without AddressSanitizer (default: address)
#
# The committed seeds (fuzz/corpus/<target>/) are copied into fuzz/target/corpus/<target>/ and
# libFuzzer grows that copy, so tracked files never change; growth is kept between local runs.
# Crashes are written to fuzz/artifacts/<target>/. Exits non-zero if any target crashed,
# leaked, timed out or ran out of memory, after printing the input's path.
#
# cargo-fuzz needs nightly-only flags (-Z sanitizer, -C passes=sancov); this machine has only
# stable Rust, so RUSTC_BOOTSTRAP=1 unlocks them for the fuzz build only.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
SECS=${1:-30}
shift || true
CARGO_FUZZ_VERSION=0.13.2
SANITIZER=${FUZZ_SANITIZER:-address}
export RUSTC_BOOTSTRAP=1

if ! [[ $SECS =~ ^[0-9]+$ ]] || [ "$SECS" -lt 1 ]; then
    echo "usage: scripts/fuzz.sh [SECONDS_PER_TARGET] [TARGET...]" >&2
    exit 2
fi

if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "fuzz: installing cargo-fuzz $CARGO_FUZZ_VERSION"
    cargo install cargo-fuzz --locked --version "$CARGO_FUZZ_VERSION"
fi

cd "$ROOT/fuzz"
TARGETS=("$@")
if [ ${#TARGETS[@]} -eq 0 ]; then
    mapfile -t TARGETS < <(cargo fuzz list)
fi

echo "fuzz: building ${#TARGETS[@]} targets (sanitizer $SANITIZER, optimised, debug assertions on)"
start=$(date +%s)
cargo fuzz build --sanitizer "$SANITIZER"
echo "fuzz: build took $(($(date +%s) - start)) s"

TRIPLE=$(rustc -vV | sed -n 's/^host: //p')
BIN_DIR=$ROOT/fuzz/target/$TRIPLE/release
LOGS=$ROOT/fuzz/target/logs
mkdir -p "$LOGS"
failed=()
for t in "${TARGETS[@]}"; do
    corpus=$ROOT/fuzz/target/corpus/$t
    artifacts=$ROOT/fuzz/artifacts/$t
    mkdir -p "$corpus" "$artifacts"
    [ -d "$ROOT/fuzz/corpus/$t" ] && cp -R "$ROOT/fuzz/corpus/$t/." "$corpus/"
    before=$(find "$corpus" -type f | wc -l)
    log=$LOGS/$t.log
    status=0
    "$BIN_DIR/$t" "$corpus" \
        -max_total_time="$SECS" -timeout=10 -rss_limit_mb=2048 \
        -artifact_prefix="$artifacts/" -print_final_stats=1 >"$log" 2>&1 || status=$?
    after=$(find "$corpus" -type f | wc -l)
    runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
    rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -1)
    took=$(sed -n 's/^Done [0-9]* runs in \([0-9]*\) second.*/\1/p' "$log" | tail -1)
    if [ "$status" -eq 0 ]; then
        printf 'fuzz: %-20s ok    %10s runs in %4s s (%s exec/s), corpus %s -> %s\n' \
            "$t" "${runs:-?}" "${took:-$SECS}" "${rate:-?}" "$before" "$after"
    else
        failed+=("$t")
        crash=$(sed -n 's/.*Test unit written to \(.*\)$/\1/p' "$log" | tail -1)
        printf 'fuzz: %-20s FAIL  (exit %s) after %s runs\n' "$t" "$status" "${runs:-?}"
        grep -m1 -E "panicked at|ERROR: (AddressSanitizer|LeakSanitizer|libFuzzer)" -A3 "$log" | sed 's/^/    /' || true
        echo "    input: ${crash:-see $log}"
        [ -n "$crash" ] && echo "    repro: cd fuzz && RUSTC_BOOTSTRAP=1 cargo fuzz run $t $crash"
        echo "    log:   $log"
    fi
done

if [ ${#failed[@]} -gt 0 ]; then
    echo "fuzz: FAILED: ${failed[*]}"
    exit 1
fi
echo "fuzz: all ${#TARGETS[@]} targets ran ${SECS} s each without a failure"
