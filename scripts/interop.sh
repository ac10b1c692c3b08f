#!/usr/bin/env bash
# Interoperability of sockeye with real peers nobody here wrote: Python `websockets` and Node
# `ws` (pinned in interop/python/requirements.txt and interop/node/package-lock.json), without
# compression and with every permessage-deflate (RFC 7692) parameter combination of COMBOS.
#
#   scripts/interop.sh                 # the whole matrix
#   scripts/interop.sh smwb-9 all-12   # only the named combinations
#
# For each combination, five pairs (server <- client):
#   sockeye<-python   sockeye serve             <- interop/python/peer.py client
#   sockeye<-node     sockeye serve             <- interop/node/peer.mjs client
#   python<-sockeye   interop/python/peer.py serve <- interop_client (crates/sockeye/examples)
#   node<-sockeye     interop/node/peer.mjs serve  <- interop_client
#   sockeye<-sockeye  sockeye serve             <- interop_client
# Every client sends the message set of interop/README.md (empty to 1 MiB, text and binary,
# fragmented, multi-byte UTF-8, a burst of 50), checks each echo, a ping/pong and a clean close
# with 4321 and a UTF-8 reason (the server's close frame must echo both), and checks the
# negotiated extensions exactly: the Python and Node clients compare the server's
# Sec-WebSocket-Extensions header, the sockeye client its parsed agreement
# (WebSocketStream::extensions, which lists client_no_context_takeover when the client declared
# it even if the server's answer omits it).
#
# Then the same five pairs over TLS (wss://), without compression and with deflate
# (TLS_COMBOS): a throwaway CA and a server certificate for localhost and 127.0.0.1 are made with
# openssl at every run into target/interop/tls/ (nothing committed); the servers get
# --tls-cert/--tls-key and the clients trust the CA with --ca, so each side's own TLS stack
# (rustls, Python's ssl, Node's tls) verifies the other. wss-no-ca runs the three clients
# without --ca against the sockeye TLS server: each must refuse the certificate.
#
# pipe and wss-pipe: `sockeye connect URL` as a pipe tool, without flags, against the sockeye,
# Python and Node echo servers (wss-pipe over TLS with --ca): three lines, then 2,000, must come
# back in order, although the client closes at the end of its input.
#
# Set-up, idempotent: websockets into target/venv (Debian's python3-venv if `python3 -m venv`
# fails), ws into interop/node/node_modules with `npm ci` (Debian's nodejs and npm if missing),
# Debian's openssl if missing.
# Servers listen on 127.0.0.1 port 0; every step runs under `timeout`; every process started
# is killed on exit. Logs: target/interop/COMBO/. Prints one line per combination and pair,
# a line "interop: wss: N passed, N failed" for the TLS part, and ends with
# "interop: N passed, N failed, N skipped"; exits 1 if any failed.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
VENV=$ROOT/target/venv
NODE_DIR=$ROOT/interop/node
PY_PEER=$ROOT/interop/python/peer.py
OUT=$ROOT/target/interop
# Cargo's target directory: target/, or CARGO_TARGET_DIR (or a configured one) when set.
TARGET_DIR=$(cargo metadata --format-version 1 --no-deps |
    sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')
SOCKEYE=$TARGET_DIR/release/sockeye
CLIENT=$TARGET_DIR/release/examples/interop_client
STEP_TIMEOUT=60     # one client run: connect, 13 messages up to 1 MiB, burst, ping, close
SERVER_TIMEOUT=600  # a server's life, should the trap never run
PD=permessage-deflate

say() { printf 'interop: %s\n' "$*"; }

# The matrix. Parameters: off (no compression), deflate, snct / cnct (server / client
# no_context_takeover), smwb=N / cmwb=N (server / client max_window_bits); any parameter implies
# deflate. The server and the client get them with sockeye's meaning (see `sockeye serve
# --help`): a client requests snct and smwb, declares cnct and limits itself to cmwb; a server
# imposes snct, requests cnct and cmwb, and caps its own window at smwb.
#
# The last three columns are the extensions each server answers: the sockeye server, the
# Python one and the Node one ("=": as sockeye's, none: no extension). They differ only where
# RFC 7692 leaves a choice: the sockeye server resets both compression contexts unless allowed
# to keep them (DeflateConfig::server_context_takeover / client_context_takeover, off by
# default: §7.1.1.1 and §7.1.1.2 let a server add server_no_context_takeover and
# client_no_context_takeover unasked); sockeye leaves out client_max_window_bits=15 (the
# default) when the client offered 15, websockets and ws echo it; websockets declines
# server_max_window_bits=8 (the offer is declined and the connection goes on without
# compression, as §5 allows).
COMBOS=(
    # name        | server params          | client params          | sockeye server | python | node
    "off          | off                    | off                    | none | = | ="
    "srv-off      | off                    | deflate                | none | = | ="
    "cli-off      | deflate                | off                    | none | = | ="
    "deflate      | deflate                | deflate                | $PD; server_no_context_takeover; client_no_context_takeover | $PD | $PD"
    "snct         | snct                   | snct                   | $PD; server_no_context_takeover; client_no_context_takeover | $PD; server_no_context_takeover | $PD; server_no_context_takeover"
    "cnct         | cnct                   | cnct                   | $PD; server_no_context_takeover; client_no_context_takeover | $PD; client_no_context_takeover | $PD; client_no_context_takeover"
    "smwb-8       | smwb=8                 | smwb=8                 | $PD; server_no_context_takeover; client_no_context_takeover; server_max_window_bits=8 | $PD; server_max_window_bits=8 | $PD; server_max_window_bits=8"
    "smwb-9       | smwb=9                 | smwb=9                 | $PD; server_no_context_takeover; client_no_context_takeover; server_max_window_bits=9 | $PD; server_max_window_bits=9 | $PD; server_max_window_bits=9"
    "smwb-12      | smwb=12                | smwb=12                | $PD; server_no_context_takeover; client_no_context_takeover; server_max_window_bits=12 | $PD; server_max_window_bits=12 | $PD; server_max_window_bits=12"
    "smwb-15      | smwb=15                | smwb=15                | $PD; server_no_context_takeover; client_no_context_takeover; server_max_window_bits=15 | $PD; server_max_window_bits=15 | $PD; server_max_window_bits=15"
    "cmwb-8       | cmwb=8                 | cmwb=8                 | $PD; server_no_context_takeover; client_no_context_takeover; client_max_window_bits=8 | $PD; client_max_window_bits=8 | $PD; client_max_window_bits=8"
    "cmwb-9       | cmwb=9                 | cmwb=9                 | $PD; server_no_context_takeover; client_no_context_takeover; client_max_window_bits=9 | $PD; client_max_window_bits=9 | $PD; client_max_window_bits=9"
    "cmwb-12      | cmwb=12                | cmwb=12                | $PD; server_no_context_takeover; client_no_context_takeover; client_max_window_bits=12 | $PD; client_max_window_bits=12 | $PD; client_max_window_bits=12"
    "cmwb-15      | cmwb=15                | cmwb=15                | $PD; server_no_context_takeover; client_no_context_takeover | $PD; client_max_window_bits=15 | $PD; client_max_window_bits=15"
    "all-8        | snct cnct smwb=8 cmwb=8 | snct cnct smwb=8 cmwb=8 | $PD; server_no_context_takeover; client_no_context_takeover; server_max_window_bits=8; client_max_window_bits=8 | = | ="
    "all-9        | snct cnct smwb=9 cmwb=9 | snct cnct smwb=9 cmwb=9 | $PD; server_no_context_takeover; client_no_context_takeover; server_max_window_bits=9; client_max_window_bits=9 | = | ="
    "all-12       | snct cnct smwb=12 cmwb=12 | snct cnct smwb=12 cmwb=12 | $PD; server_no_context_takeover; client_no_context_takeover; server_max_window_bits=12; client_max_window_bits=12 | = | ="
    "all-15       | snct cnct smwb=15 cmwb=15 | snct cnct smwb=15 cmwb=15 | $PD; server_no_context_takeover; client_no_context_takeover; server_max_window_bits=15 | $PD; server_no_context_takeover; client_no_context_takeover; server_max_window_bits=15; client_max_window_bits=15 | $PD; server_no_context_takeover; client_no_context_takeover; server_max_window_bits=15; client_max_window_bits=15"
    # One side only: what a server imposes or requests unasked, what a client asks of a
    # server left at its defaults.
    "srv-snct     | snct                   | deflate                | $PD; server_no_context_takeover; client_no_context_takeover | $PD; server_no_context_takeover | $PD; server_no_context_takeover"
    "srv-cnct     | cnct                   | deflate                | $PD; server_no_context_takeover; client_no_context_takeover | $PD; client_no_context_takeover | $PD; client_no_context_takeover"
    "srv-smwb-10  | smwb=10                | deflate                | $PD; server_no_context_takeover; client_no_context_takeover; server_max_window_bits=10 | $PD; server_max_window_bits=10 | $PD; server_max_window_bits=10"
    "srv-cmwb-10  | cmwb=10                | deflate                | $PD; server_no_context_takeover; client_no_context_takeover; client_max_window_bits=10 | $PD; client_max_window_bits=10 | $PD; client_max_window_bits=10"
    "srv-cmwb-8   | cmwb=8                 | deflate                | $PD; server_no_context_takeover; client_no_context_takeover; client_max_window_bits=8 | $PD; client_max_window_bits=8 | $PD; client_max_window_bits=8"
    # What websockets' default server (compression="deflate") asks of every client.
    "srv-12-12    | smwb=12 cmwb=12        | deflate                | $PD; server_no_context_takeover; client_no_context_takeover; server_max_window_bits=12; client_max_window_bits=12 | $PD; server_max_window_bits=12; client_max_window_bits=12 | $PD; server_max_window_bits=12; client_max_window_bits=12"
    "cli-smwb-10  | deflate                | smwb=10                | $PD; server_no_context_takeover; client_no_context_takeover; server_max_window_bits=10 | $PD; server_max_window_bits=10 | $PD; server_max_window_bits=10"
    "cli-smwb-8   | deflate                | smwb=8                 | $PD; server_no_context_takeover; client_no_context_takeover; server_max_window_bits=8 | none | $PD; server_max_window_bits=8"
    "cli-cmwb-10  | deflate                | cmwb=10                | $PD; server_no_context_takeover; client_no_context_takeover; client_max_window_bits=10 | $PD; client_max_window_bits=10 | $PD; client_max_window_bits=10"
    # Both sides with different windows: the smaller one wins.
    "smwb-s9-c12  | smwb=9                 | smwb=12                | $PD; server_no_context_takeover; client_no_context_takeover; server_max_window_bits=9 | $PD; server_max_window_bits=9 | $PD; server_max_window_bits=9"
    "smwb-s12-c9  | smwb=12                | smwb=9                 | $PD; server_no_context_takeover; client_no_context_takeover; server_max_window_bits=9 | $PD; server_max_window_bits=9 | $PD; server_max_window_bits=9"
    "cmwb-s9-c12  | cmwb=9                 | cmwb=12                | $PD; server_no_context_takeover; client_no_context_takeover; client_max_window_bits=9 | $PD; client_max_window_bits=9 | $PD; client_max_window_bits=9"
    "cmwb-s12-c9  | cmwb=12                | cmwb=9                 | $PD; server_no_context_takeover; client_no_context_takeover; client_max_window_bits=9 | $PD; client_max_window_bits=9 | $PD; client_max_window_bits=9"
)

# The TLS part: same columns. Certificates are checked by name (the URLs use 127.0.0.1, an IP
# SAN of the server certificate) and against the throwaway CA only.
TLS_COMBOS=(
    "wss-off      | off                    | off                    | none | = | ="
    "wss-deflate  | deflate                | deflate                | $PD; server_no_context_takeover; client_no_context_takeover | $PD | $PD"
)
TLS_DIR=$OUT/tls

# What a real peer cannot do, keyed by "PAIR:COMBO", with the text of its refusal. Such a run
# is still made: it counts as skipped when it fails with exactly that refusal, as failed
# otherwise (also when it passes: then the limitation is gone and this table is out of date).
# websockets cannot compress with an 8-bit window (zlib refuses wbits=-8, madler/zlib#171), so
# its server refuses server_max_window_bits=8 and its client client_max_window_bits=8, whether
# configured or asked for by the server. (Node's zlib raises 8 to 9 instead, so ws agrees to 8
# but compresses with a 512-byte window; sockeye's inflater uses at least 9 bits for that.)
declare -A KNOWN_LIMITS=(
    ["python<-sockeye:smwb-8"]="server_max_window_bits must be between 9 and 15"
    ["python<-sockeye:all-8"]="server_max_window_bits must be between 9 and 15"
    ["sockeye<-python:cmwb-8"]="client_max_window_bits must be between 9 and 15"
    ["sockeye<-python:all-8"]="client_max_window_bits must be between 9 and 15"
    # websockets reports only "Unsupported extension" for the answer it refuses.
    ["sockeye<-python:srv-cmwb-8"]="('client_max_window_bits', '8')]"
    # ws's server refuses the whole handshake (HTTP 400) when the offer asks for a smaller
    # server window, or offers a smaller client window, than its serverMaxWindowBits /
    # clientMaxWindowBits, where RFC 7692 §7.1.2 lets it answer with the smaller value (as
    # sockeye and websockets do) or decline the extension.
    ["node<-sockeye:smwb-s12-c9"]="Invalid or unacceptable Sec-WebSocket-Extensions header"
    ["node<-sockeye:cmwb-s12-c9"]="Invalid or unacceptable Sec-WebSocket-Extensions header"
)

# shellcheck source=scripts/peers.sh
source "$ROOT/scripts/peers.sh"

setup_openssl() {
    if ! command -v openssl >/dev/null; then
        say "installing Debian's openssl"
        apt-get update -qq && apt-get install -y -qq openssl
    fi
}

# make_certs: a CA and a server certificate for localhost and 127.0.0.1 signed by it (ECDSA
# P-256, valid for two days, fresh keys) in TLS_DIR: ca.pem, server.pem, server.key.
make_certs() {
    mkdir -p "$TLS_DIR"
    local log=$TLS_DIR/openssl.log
    {
        openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 \
            -subj "/CN=sockeye interop CA" -keyout "$TLS_DIR/ca.key" -out "$TLS_DIR/ca.pem" \
            -addext "basicConstraints=critical,CA:TRUE" \
            -addext "keyUsage=critical,keyCertSign,cRLSign" &&
        openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
            -subj "/CN=localhost" -keyout "$TLS_DIR/server.key" -out "$TLS_DIR/server.csr" &&
        printf '%s\n' "subjectAltName=DNS:localhost,IP:127.0.0.1" \
            "basicConstraints=critical,CA:FALSE" "keyUsage=critical,digitalSignature" \
            "extendedKeyUsage=serverAuth" "subjectKeyIdentifier=hash" \
            "authorityKeyIdentifier=keyid" >"$TLS_DIR/server.ext" &&
        openssl x509 -req -in "$TLS_DIR/server.csr" -CA "$TLS_DIR/ca.pem" \
            -CAkey "$TLS_DIR/ca.key" -set_serial "0x$(openssl rand -hex 8)" -days 2 \
            -extfile "$TLS_DIR/server.ext" -out "$TLS_DIR/server.pem" &&
        openssl verify -CAfile "$TLS_DIR/ca.pem" "$TLS_DIR/server.pem"
    } >"$log" 2>&1 || { say "making certificates failed:"; cat "$log"; exit 1; }
    # The CA's key has signed what it had to; nothing else may.
    rm -f "$TLS_DIR/ca.key" "$TLS_DIR/server.csr"
}

PIDS=()
cleanup() {
    local pid
    for pid in "${PIDS[@]}"; do
        kill "$pid" 2>/dev/null || true
    done
    for pid in "${PIDS[@]}"; do
        wait "$pid" 2>/dev/null || true
    done
}
trap cleanup EXIT
trap 'exit 130' INT TERM

now_us() { local t=${EPOCHREALTIME/[.,]/}; printf '%s' "$t"; }

seconds_since() {  # START_US: elapsed seconds with two decimals
    local cs=$((($(now_us) - $1) / 10000))
    printf '%d.%02d' $((cs / 100)) $((cs % 100))
}

trim() {
    local s=$1
    s=${s#"${s%%[![:space:]]*}"}
    printf '%s' "${s%"${s##*[![:space:]]}"}"
}

# to_flags PARAMS: sets FLAGS to the command-line flags all four programs take.
to_flags() {
    local param deflate=0 rest=()
    for param in $1; do
        case $param in
            off) ;;
            deflate) deflate=1 ;;
            snct) deflate=1 rest+=(--deflate-server-no-context-takeover) ;;
            cnct) deflate=1 rest+=(--deflate-client-no-context-takeover) ;;
            smwb=*) deflate=1 rest+=(--deflate-server-max-window-bits "${param#*=}") ;;
            cmwb=*) deflate=1 rest+=(--deflate-client-max-window-bits "${param#*=}") ;;
            *) say "unknown parameter $param"; exit 2 ;;
        esac
    done
    FLAGS=()
    [ "$deflate" = 1 ] && FLAGS=(--deflate)
    FLAGS+=("${rest[@]}")
}

command_of() {  # KIND MODE: sets CMD to the program of that peer in that mode
    case $1 in
        sockeye) if [ "$2" = serve ]; then CMD=("$SOCKEYE" serve --listen 127.0.0.1:0 --mode echo); else CMD=("$CLIENT"); fi ;;
        python) CMD=("$VENV/bin/python" "$PY_PEER" "$2") ;;
        node) CMD=(node "$NODE_DIR/peer.mjs" "$2") ;;
    esac
}

# start_server KIND LOG FLAGS...: starts a server; sets SERVER_PID, and SERVER_URL once it
# printed the URL it listens on. Fails when it exits or prints nothing within 10 s.
start_server() {
    local kind=$1 log=$2
    shift 2
    command_of "$kind" serve
    : >"$log"
    timeout "$SERVER_TIMEOUT" "${CMD[@]}" "$@" >"$log" 2>&1 &
    SERVER_PID=$!
    PIDS+=("$SERVER_PID")
    SERVER_URL=""
    for _ in $(seq 1 200); do
        SERVER_URL=$(grep -oE 'wss?://[0-9.:]*/' "$log" | head -1 || true)
        [ -n "$SERVER_URL" ] && return 0
        kill -0 "$SERVER_PID" 2>/dev/null || return 1
        sleep 0.05
    done
    return 1
}

stop_server() {
    kill "$SERVER_PID" 2>/dev/null || true
    wait "$SERVER_PID" 2>/dev/null || true
}

PASSED=0 FAILED=0 SKIPPED=0

# record COMBO PAIR STATUS DETAIL LOG...: one result line; STATUS is the exit status of the
# run, the logs are the client's and the server's.
record() {
    local combo=$1 pair=$2 status=$3 detail=$4
    shift 4
    local limit=${KNOWN_LIMITS["$pair:$combo"]:-}
    if [ "$status" = 0 ] && [ -z "$limit" ]; then
        PASSED=$((PASSED + 1))
        printf 'PASS %-12s %-17s %s\n' "$combo" "$pair" "$detail"
    elif [ "$status" != 0 ] && [ -n "$limit" ] && grep -qsF -- "$limit" "$@"; then
        SKIPPED=$((SKIPPED + 1))
        printf 'SKIP %-12s %-17s peer limitation: %s\n' "$combo" "$pair" "$limit"
    else
        FAILED=$((FAILED + 1))
        if [ "$status" = 0 ]; then
            detail="passed, but KNOWN_LIMITS expects \"$limit\": update the table"
        elif [ "$status" = 124 ]; then
            detail="timed out after ${STEP_TIMEOUT}s; $detail"
        fi
        printf 'FAIL %-12s %-17s %s\n' "$combo" "$pair" "$detail"
        local log
        for log in "$@"; do
            printf '    %s:\n' "${log#"$ROOT/"}"
            tail -n 15 "$log" | sed 's/^/    | /'
        done
    fi
}

# run_pair COMBO SERVER CLIENT EXPECT SERVER_LOG: the client against the running server.
run_pair() {
    local combo=$1 server=$2 client=$3 expect=$4 server_log=$5
    local log=$OUT/$combo/$server-server.$client-client.log status=0 start
    start=$(now_us)
    command_of "$client" client
    timeout "$STEP_TIMEOUT" "${CMD[@]}" "$SERVER_URL" "${CLIENT_FLAGS[@]}" \
        --expect-extensions "$expect" >"$log" 2>&1 || status=$?
    record "$combo" "$server<-$client" "$status" \
        "extensions: $expect ($(seconds_since "$start") s)" "$log" "$server_log"
}

# run_server COMBO SERVER EXPECT CLIENTS...: one server of the combination and its clients.
run_server() {
    local combo=$1 server=$2 expect=$3
    shift 3
    local log=$OUT/$combo/$server-server.log client
    if start_server "$server" "$log" "${SERVER_FLAGS[@]}"; then
        for client in "$@"; do
            run_pair "$combo" "$server" "$client" "$expect" "$log"
        done
    else
        for client in "$@"; do
            record "$combo" "$server<-$client" 1 "the $server server did not start" "$log"
        done
    fi
    stop_server
}

# run_combo LINE TLS: one line of COMBOS (TLS 0) or TLS_COMBOS (TLS 1), unless names were
# given and it is not one of them.
run_combo() {
    local line=$1 tls=$2 combo server_params client_params expect_sockeye expect_python expect_node
    IFS='|' read -r combo server_params client_params expect_sockeye expect_python expect_node <<<"$line"
    combo=$(trim "$combo")
    if [ ${#NAMES[@]} -gt 0 ] && [[ " ${NAMES[*]} " != *" $combo "* ]]; then
        return
    fi
    ran=$((ran + 1))
    expect_sockeye=$(trim "$expect_sockeye")
    expect_python=$(trim "$expect_python")
    expect_node=$(trim "$expect_node")
    [ "$expect_python" = "=" ] && expect_python=$expect_sockeye
    [ "$expect_node" = "=" ] && expect_node=$expect_sockeye
    to_flags "$(trim "$server_params")"
    SERVER_FLAGS=("${FLAGS[@]}")
    to_flags "$(trim "$client_params")"
    CLIENT_FLAGS=("${FLAGS[@]}")
    if [ "$tls" = 1 ]; then
        [ -f "$TLS_DIR/server.pem" ] || make_certs
        SERVER_FLAGS+=(--tls-cert "$TLS_DIR/server.pem" --tls-key "$TLS_DIR/server.key")
        CLIENT_FLAGS+=(--ca "$TLS_DIR/ca.pem")
    fi
    mkdir -p "$OUT/$combo"
    run_server "$combo" sockeye "$expect_sockeye" python node sockeye
    run_server "$combo" python "$expect_python" sockeye
    run_server "$combo" node "$expect_node" sockeye
}

# run_untrusted: each client, without --ca, against the sockeye TLS server; it must refuse the
# certificate with its own TLS stack's words (one that connects does not verify).
run_untrusted() {
    local combo=wss-no-ca client log status expect
    if [ ${#NAMES[@]} -gt 0 ] && [[ " ${NAMES[*]} " != *" $combo "* ]]; then
        return
    fi
    ran=$((ran + 1))
    [ -f "$TLS_DIR/server.pem" ] || make_certs
    mkdir -p "$OUT/$combo"
    local server_log=$OUT/$combo/sockeye-server.log
    if ! start_server sockeye "$server_log" \
        --tls-cert "$TLS_DIR/server.pem" --tls-key "$TLS_DIR/server.key"; then
        for client in python node sockeye; do
            record "$combo" "sockeye<-$client" 1 "the sockeye server did not start" "$server_log"
        done
        stop_server
        return
    fi
    for client in python node sockeye; do
        case $client in
            python) expect="CERTIFICATE_VERIFY_FAILED" ;;
            node) expect="unable to verify the first certificate" ;;
            sockeye) expect="invalid peer certificate: UnknownIssuer" ;;
        esac
        log=$OUT/$combo/sockeye-server.$client-client.log
        command_of "$client" client
        status=0
        timeout "$STEP_TIMEOUT" "${CMD[@]}" "$SERVER_URL" >"$log" 2>&1 || status=$?
        if [ "$status" != 0 ] && [ "$status" != 124 ] && grep -qF -- "$expect" "$log"; then
            status=0
        else
            status=1
        fi
        record "$combo" "sockeye<-$client" "$status" "refused: $expect" "$log" "$server_log"
    done
    stop_server
}

# run_pipe COMBO TLS: `sockeye connect URL` as a pipe tool, without flags, against each echo
# server (ws://, or wss:// with --ca when TLS is 1): `printf 'one\ntwo\nthree\n'` must print the
# three lines, and 2,000 lines must all come back in order, exit status 0. The client closes at
# the end of its input; the replies that arrive after its close frame are printed.
run_pipe() {
    local combo=$1 tls=$2 server lines input log server_log status
    if [ ${#NAMES[@]} -gt 0 ] && [[ " ${NAMES[*]} " != *" $combo "* ]]; then
        return
    fi
    ran=$((ran + 1))
    mkdir -p "$OUT/$combo"
    local server_flags=() client_flags=()
    if [ "$tls" = 1 ]; then
        [ -f "$TLS_DIR/server.pem" ] || make_certs
        server_flags=(--tls-cert "$TLS_DIR/server.pem" --tls-key "$TLS_DIR/server.key")
        client_flags=(--ca "$TLS_DIR/ca.pem")
    fi
    for server in sockeye python node; do
        server_log=$OUT/$combo/$server-server.log
        if ! start_server "$server" "$server_log" "${server_flags[@]}"; then
            record "$combo" "$server<-connect" 1 "the $server server did not start" "$server_log"
            stop_server
            continue
        fi
        for lines in 3 2000; do
            if [ "$lines" = 3 ]; then input=$'one\ntwo\nthree\n'; else input=$(seq "$lines"); input+=$'\n'; fi
            log=$OUT/$combo/$server-server.connect-$lines.log
            status=0
            printf '%s' "$input" | timeout "$STEP_TIMEOUT" "$SOCKEYE" connect \
                "${client_flags[@]}" "$SERVER_URL" >"$log.stdout" 2>"$log" || status=$?
            if [ "$status" = 0 ] && ! printf '%s' "$input" | cmp -s - "$log.stdout"; then
                status=1
                printf 'stdout is not the %s lines sent (%s lines back)\n' \
                    "$lines" "$(wc -l <"$log.stdout")" >>"$log"
            fi
            record "$combo" "$server<-connect" "$status" \
                "pipe mode, no flag: $lines lines back in order" "$log" "$server_log"
        done
        stop_server
    done
}

setup_python
setup_node
setup_openssl
say "building sockeye and interop_client (release)"
cargo build --release --quiet -p sockeye-cli
cargo build --release --quiet -p sockeye --example interop_client

say "websockets $("$VENV/bin/python" -c 'import websockets.version as v; print(v.version)'), ws $(node -p "require('$NODE_DIR/node_modules/ws/package.json').version"), node $(node --version), $("$VENV/bin/python" --version), $(openssl version | cut -d' ' -f1-2)"
rm -rf "$OUT"
NAMES=("$@")
started=$(now_us)
ran=0
for line in "${COMBOS[@]}"; do
    run_combo "$line" 0
done
run_pipe pipe 0
before_tls=("$PASSED" "$FAILED" "$SKIPPED" "$ran")
tls_started=$(now_us)
for line in "${TLS_COMBOS[@]}"; do
    run_combo "$line" 1
done
run_untrusted
run_pipe wss-pipe 1
if [ "$ran" = 0 ]; then
    say "no combination named $*"
    exit 2
fi
if [ "$ran" != "${before_tls[3]}" ]; then
    printf 'interop: wss: %d passed, %d failed (%d combinations in %s s, certificates from openssl)\n' \
        $((PASSED - before_tls[0])) $((FAILED - before_tls[1])) \
        $((ran - before_tls[3])) "$(seconds_since "$tls_started")"
fi
say "$ran combinations in $(seconds_since "$started") s; logs in target/interop/"
printf 'interop: %d passed, %d failed, %d skipped\n' "$PASSED" "$FAILED" "$SKIPPED"
[ "$FAILED" = 0 ]
