#!/usr/bin/env bash
# Redis for the multi-node tests (crates/sockeye-cli/tests/redis.rs): installs Debian's
# redis-server if it is missing and prints the line to export, e.g.
#
#   eval "$(scripts/redis.sh)"     # sets SOCKEYE_REDIS_SERVER=/usr/bin/redis-server
#
# Idempotent, as root on Debian, network only to the package registry (apt-get update first if
# the install fails). It starts no server: each test starts its own redis-server on a free
# loopback port (`--bind 127.0.0.1 --save '' --appendonly no`) and stops it. The Debian
# package's own service (port 6379) is stopped if the install started it, so that nothing
# outside the tests listens.
#
#   scripts/redis.sh --start PORT   # also starts one on 127.0.0.1:PORT, in the foreground
set -euo pipefail

say() { printf 'redis: %s\n' "$*" >&2; }

if ! command -v redis-server >/dev/null && [ ! -x /usr/bin/redis-server ]; then
    say "installing Debian's redis-server"
    export DEBIAN_FRONTEND=noninteractive
    if ! apt-get install -y -qq redis-server >&2; then
        apt-get update -qq >&2 && apt-get install -y -qq redis-server >&2
    fi
    # Without systemd nothing was started; with it, stop the system-wide service.
    if command -v systemctl >/dev/null && systemctl is-active --quiet redis-server 2>/dev/null; then
        systemctl stop redis-server >&2 || true
    fi
fi
server=$(command -v redis-server || echo /usr/bin/redis-server)
[ -x "$server" ] || { say "redis-server not found after install"; exit 1; }
say "$("$server" --version)"

if [ "${1:-}" = "--start" ]; then
    port=${2:?usage: scripts/redis.sh --start PORT}
    exec "$server" --bind 127.0.0.1 --port "$port" --save '' --appendonly no
fi
echo "export SOCKEYE_REDIS_SERVER=$server"
