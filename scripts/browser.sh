#!/usr/bin/env bash
# The `sockeye serve` chat demo page in a real browser: headless Chromium driven by
# playwright-core (interop/browser/demo.test.mjs). Four pages, two rooms: messages go both ways
# within a room and never across; after the server is killed every page shows the disconnected
# state, and after it is restarted on the same port every page reconnects by itself and chats
# again. Screenshot: target/browser/demo.png. Then interop/browser/h2.test.mjs: the page over
# HTTPS with `serve --http2`, whose WebSockets must be opened over HTTP/2.
#
#   scripts/browser.sh
#
# Set-up, idempotent, as root on Debian, network only to the package registries: Debian's
# chromium if /usr/bin/chromium is missing (apt-get update first if the install fails), Debian's
# nodejs and npm if missing, playwright-core (pinned in interop/browser/package-lock.json) with
# `npm ci`; it drives the system Chromium and never downloads a browser of its own. Then
# `cargo build -p sockeye-cli --locked` and the test, under `timeout`.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
DIR=$ROOT/interop/browser
TEST_TIMEOUT=300  # the test bounds each wait and its whole run (180 s) itself

say() { printf 'browser: %s\n' "$*"; }

if [ ! -x /usr/bin/chromium ]; then
    say "installing Debian's chromium"
    if ! apt-get install -y -qq chromium; then
        apt-get update -qq && apt-get install -y -qq chromium
    fi
fi

if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
    say "installing Debian's nodejs and npm"
    apt-get update -qq && apt-get install -y -qq nodejs npm
fi
if [ "$(node -p 'process.versions.node.split(".")[0]')" -lt 20 ]; then
    say "playwright-core needs Node.js 20 or later, found $(node --version)"
    exit 1
fi

want=$(node -p "require('$DIR/package-lock.json').packages['node_modules/playwright-core'].version")
have=$(node -p "require('$DIR/node_modules/playwright-core/package.json').version" 2>/dev/null || true)
if [ "$want" != "$have" ]; then
    say "installing playwright-core $want into interop/browser/node_modules (npm ci)"
    # Only the library: playwright-core has no install script and downloads no browser.
    (cd "$DIR" && npm ci --no-audit --no-fund --loglevel=error)
fi

cargo build -p sockeye-cli --locked --quiet
# Cargo's target directory: target/, or CARGO_TARGET_DIR (or a configured one) when set.
TARGET_DIR=$(cargo metadata --format-version 1 --no-deps |
    sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')

say "$(/usr/bin/chromium --version 2>/dev/null || echo chromium)"
SOCKEYE_BIN=$TARGET_DIR/debug/sockeye CHROMIUM=/usr/bin/chromium \
    timeout --kill-after=10 "$TEST_TIMEOUT" node "$DIR/demo.test.mjs"
# The same page over HTTPS with HTTP/2: its WebSockets use extended CONNECT (RFC 8441), as the
# server's access log must show (certificate made with openssl at test time).
SOCKEYE_BIN=$TARGET_DIR/debug/sockeye CHROMIUM=/usr/bin/chromium \
    timeout --kill-after=10 "$TEST_TIMEOUT" node "$DIR/h2.test.mjs"
