#!/usr/bin/env bash
# Every comparative benchmark of issue 17, one after the other on this machine (none of them
# runs while another does), from a fresh clone:
#   scripts/bench.sh               echo matrix, idle memory, handshakes (sockeye, sockeye serve,
#                                  tokio-tungstenite, fastwebsockets, tokio-websockets, Bun, raw)
#   scripts/bench-fanout.sh        fan-out matrix (sockeye serve on 1 and 2 threads, Bun, Node ws)
#   scripts/bench-deflate-memory.sh  memory per connection with permessage-deflate (sockeye,
#                                  Node ws, Bun)
# Their knobs (SECS, REPS, SERVERS, …) pass through the environment; see each script. Writes
# target/bench-all.md: the three summaries, with the date, commit and machine.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=target/bench-all.md
mkdir -p target
scripts/bench.sh
SERVERS=${FANOUT_SERVERS:-"sockeye sockeye-2t bun node"} scripts/bench-fanout.sh
scripts/bench-deflate-memory.sh | tee target/bench-deflate-memory.txt
{
    echo "# sockeye benchmarks, $(date -u +%Y-%m-%dT%H:%MZ), commit $(git rev-parse --short HEAD)"
    echo
    cat target/bench/summary.md
    echo
    cat target/bench-fanout/summary.md
    echo
    echo '## Memory per connection with permessage-deflate'
    echo
    cat target/bench-deflate-memory.txt
} >"$OUT"
echo "bench-all: wrote $OUT"
