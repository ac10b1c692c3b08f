#!/usr/bin/env bash
# The whole test suite, with its own set-up. Safe to run again; runs on a fresh clone.
#   formatting, clippy (warnings are errors), the protocol core's dependency rule, no import
#   cycle between the files of a crate, every combination of cargo features, unit,
#   property and integration tests, doc tests and rustdoc warnings, then the Autobahn
#   TestSuite in both roles (scripts/autobahn.sh, which installs kosoku in target/venv) and
#   the interoperability matrix against Python websockets and Node ws (scripts/interop.sh) and
#   a bounded run of every fuzz target (scripts/fuzz.sh; installs cargo-fuzz once).
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TERM_COLOR=never

step() { printf '\n== %s\n' "$*"; }
start=$(date +%s)

step "rustfmt"
cargo fmt --all --check

step "clippy"
cargo clippy --workspace --all-targets --all-features --locked -- -D warnings

step "sockeye-proto has no runtime, socket or TLS dependency"
if cargo tree -p sockeye-proto -e normal --prefix none | grep -Ei '^(tokio|futures|mio|rustls|native-tls|async)'; then
    echo "sockeye-proto must stay sans-I/O"; exit 1
fi

step "no file of a crate imports another in a cycle (scripts/check_cycles.py)"
python3 scripts/check_cycles.py

step "test set-up: Debian's redis-server for the multi-node tests (scripts/redis.sh)"
eval "$(scripts/redis.sh)"

step "tests (unit, property, integration, doc)"
SOCKEYE_SOAK_SECS=5 SOCKEYE_SOAK_CONCURRENCY=200 cargo test --workspace --all-features --locked

step "every combination of each crate's features builds, warnings as errors (scripts/check_features.py)"
python3 scripts/check_features.py

step "soak: 60 s of 1,000 concurrent churning connections (SOCKEYE_SOAK_SECS for longer)"
SOCKEYE_SOAK_SECS=${SOCKEYE_SOAK_SECS:-60} SOCKEYE_SOAK_CONCURRENCY=${SOCKEYE_SOAK_CONCURRENCY:-1000} \
    cargo test --release -p sockeye --locked --test soak -- --nocapture

step "rustdoc"
RUSTDOCFLAGS=-Dwarnings cargo doc --workspace --all-features --no-deps --locked --quiet

step "autobahn (kosoku)"
scripts/autobahn.sh

step "interoperability with Python websockets and Node ws (deflate parameter matrix)"
scripts/interop.sh

step "the demo page in headless Chromium (scripts/browser.sh; installs chromium and playwright-core)"
scripts/browser.sh

step "fuzzing: every cargo-fuzz target for ${FUZZ_SECONDS:-20} s (scripts/fuzz.sh 3600 for longer)"
scripts/fuzz.sh "${FUZZ_SECONDS:-20}"

printf '\n== all passed in %ss\n' "$(( $(date +%s) - start ))"
