# Shared by scripts/interop.sh and scripts/bench-deflate-memory.sh (sourced): idempotent set-up
# of the real peers. Needs VENV (the Python venv), NODE_DIR (interop/node) and a `say` function.

setup_python() {
    local want
    want=$(sed -n 's/^websockets==//p' interop/python/requirements.txt)
    if "$VENV/bin/python" -c "import sys, websockets.version as v; sys.exit(v.version != '$want')" \
        2>/dev/null; then
        return
    fi
    say "installing websockets $want into $VENV"
    if ! "$VENV/bin/pip" --version >/dev/null 2>&1; then
        if ! python3 -m venv "$VENV" 2>/dev/null; then
            # Debian's python3 ships venv separately.
            apt-get update -qq && apt-get install -y -qq python3-venv
            python3 -m venv "$VENV"
        fi
    fi
    "$VENV/bin/pip" install --quiet --disable-pip-version-check -r interop/python/requirements.txt
}

setup_node() {
    if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
        say "installing Debian's nodejs and npm"
        apt-get update -qq && apt-get install -y -qq nodejs npm
    fi
    local want have
    want=$(node -p "require('$NODE_DIR/package-lock.json').packages['node_modules/ws'].version")
    have=$(node -p "require('$NODE_DIR/node_modules/ws/package.json').version" 2>/dev/null || true)
    if [ "$want" != "$have" ]; then
        say "installing ws $want into interop/node/node_modules (npm ci)"
        (cd "$NODE_DIR" && npm ci --no-audit --no-fund --loglevel=error)
    fi
}
