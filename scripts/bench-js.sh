# Sourced by scripts/bench.sh and scripts/bench-fanout.sh: installs Bun and Node's ws into
# benches/fanout/node_modules with `npm ci` (versions pinned by benches/fanout/package-lock.json;
# Bun's binary comes in the npm package @oven/bun-linux-x64), Debian's nodejs and npm first if
# missing. Idempotent: nothing happens when the pinned versions are already there.
# Sets JS_DIR and BUN.
JS_DIR=$ROOT/benches/fanout
BUN=$JS_DIR/node_modules/.bin/bun

setup_js() {
    if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
        echo "installing Debian's nodejs and npm" >&2
        apt-get update -qq && apt-get install -y -qq nodejs npm
    fi
    local package want have stale=0
    for package in bun ws; do
        want=$(node -p "require('$JS_DIR/package-lock.json').packages['node_modules/$package'].version")
        have=$(node -p "require('$JS_DIR/node_modules/$package/package.json').version" 2>/dev/null || true)
        [ "$want" = "$have" ] || stale=1
    done
    if [ "$stale" = 1 ] || ! "$BUN" --version >/dev/null 2>&1; then
        echo "installing bun and ws into benches/fanout/node_modules (npm ci)" >&2
        (cd "$JS_DIR" && npm ci --no-audit --no-fund --loglevel=error)
    fi
}
