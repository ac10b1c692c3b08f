#!/usr/bin/env python3
"""Python `websockets` peer for sockeye's interoperability tests (scripts/interop.sh).

    peer.py serve [DEFLATE FLAGS] [--tls-cert FILE --tls-key FILE]
        Echo server on 127.0.0.1, a free port; prints
        "python-websockets: listening on ws://127.0.0.1:PORT/" and echoes every message. With
        --tls-cert and --tls-key (PEM chain, leaf first, and its key) it serves TLS and prints
        a wss:// URL.
    peer.py client URL [DEFLATE FLAGS] [--expect-extensions STRING|none] [--ca FILE]
        Sends the interop message set (interop/README.md), checks every echo, a ping/pong and a
        clean close with 4321 and a UTF-8 reason, both echoed by the server. --expect-extensions compares the server's Sec-WebSocket-Extensions
        response header exactly ("none": no header). --ca trusts the PEM certificates in FILE
        (instead of the system's) for a wss:// URL, and the client checks that the connection
        is encrypted. Exits 0 on success, 1 on a mismatch.

DEFLATE FLAGS are sockeye's: --deflate, --deflate-server-no-context-takeover,
--deflate-client-no-context-takeover, --deflate-server-max-window-bits N,
--deflate-client-max-window-bits N. Without --deflate compression is off. They configure
websockets' ServerPerMessageDeflateFactory / ClientPerMessageDeflateFactory, which refuse a
window of 8 bits for their own compressor (zlib cannot deflate with a 256-byte window):
the server's server_max_window_bits and the client's client_max_window_bits must be 9-15.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import ssl
import sys

from websockets.asyncio.client import connect
from websockets.asyncio.server import serve
from websockets.extensions.permessage_deflate import (
    ClientPerMessageDeflateFactory,
    ServerPerMessageDeflateFactory,
)

# Large enough for the 1 MiB message (websockets' default is exactly 1 MiB).
MAX_SIZE = 16 * 1024 * 1024
REPLY_TIMEOUT = 20.0
BURST = 50
PING_PAYLOAD = b"interop-ping"
MID_PING_PAYLOAD = b"interop-ping between fragments"
# The server must echo both (sockeye, ws and websockets do).
CLOSE_CODE = 4321
CLOSE_REASON = "ciao ✓ — 再见 👋"
UTF8_LINE = "héllo wörld — κόσμε — 日本語のテキスト — emoji 🦀🐍🟩 — "


def xorshift_bytes(seed: int, length: int) -> bytes:
    """Marsaglia's xorshift32 (13, 17, 5), each state little-endian (as in interop_client.rs)."""
    state = seed
    out = bytearray()
    mask = 0xFFFFFFFF
    for _ in range((length + 3) // 4):
        state ^= (state << 13) & mask
        state ^= state >> 17
        state ^= (state << 5) & mask
        out += state.to_bytes(4, "little")
    return bytes(out[:length])


def json_text(length: int) -> str:
    """JSON-like, repetitive ASCII text of exactly `length` bytes."""
    parts = ["["]
    size = 1
    seq = 0
    while size < length:
        record = json.dumps(
            {"seq": seq, "kind": "update", "value": "lorem ipsum dolor"}, separators=(",", ":")
        ) + ","
        parts.append(record)
        size += len(record)
        seq += 1
    return "".join(parts)[:length]


def cases() -> list[tuple[str, str | bytes, list]]:
    """(name, expected echo, fragments or []) in sending order.

    websockets sends a fragmented text message from str fragments, so the text is split
    between characters here (the Rust and Node clients split inside characters).
    """
    fragmented_text = ["fragmented κ", "όσμε 日本", "語 🦀 end"]
    fragmented_binary = xorshift_bytes(7, 3000)
    return [
        ("empty text", "", []),
        ("empty binary", b"", []),
        ("1-byte text", "x", []),
        ("1-byte binary", b"\x2a", []),
        ("125-byte text", "".join(chr(ord("a") + i % 26) for i in range(125)), []),
        ("126-byte binary", bytes(range(126)), []),
        ("1000-byte JSON-like text", json_text(1000), []),
        ("65536-byte binary", bytes(((i * 7 + (i >> 8)) & 0xFF) for i in range(65536)), []),
        ("65536-byte JSON-like text", json_text(65536), []),
        ("1 MiB xorshift binary", xorshift_bytes(0x2545F491, 1 << 20), []),
        ("fragmented text", "".join(fragmented_text), fragmented_text),
        (
            "fragmented binary",
            fragmented_binary,
            [fragmented_binary[:1000], b"", fragmented_binary[1000:]],
        ),
        ("multi-byte UTF-8 text", UTF8_LINE * 20, []),
    ]


def burst_message(i: int) -> str:
    return f'burst {i}: {{"seq":{i},"kind":"burst"}}'


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("mode", choices=["serve", "client"])
    parser.add_argument("url", nargs="?")
    parser.add_argument("--deflate", action="store_true")
    parser.add_argument("--deflate-server-no-context-takeover", action="store_true")
    parser.add_argument("--deflate-client-no-context-takeover", action="store_true")
    parser.add_argument("--deflate-server-max-window-bits", type=int, choices=range(8, 16))
    parser.add_argument("--deflate-client-max-window-bits", type=int, choices=range(8, 16))
    parser.add_argument("--expect-extensions")
    parser.add_argument("--ca", metavar="FILE")
    parser.add_argument("--tls-cert", metavar="FILE")
    parser.add_argument("--tls-key", metavar="FILE")
    args = parser.parse_args(argv)
    params = (
        args.deflate_server_no_context_takeover,
        args.deflate_client_no_context_takeover,
        args.deflate_server_max_window_bits is not None,
        args.deflate_client_max_window_bits is not None,
    )
    if any(params) and not args.deflate:
        parser.error("the --deflate-* parameters need --deflate")
    if (args.mode == "client") != (args.url is not None):
        parser.error("client mode takes a URL, serve mode does not")
    if (args.tls_cert is None) != (args.tls_key is None):
        parser.error("--tls-cert and --tls-key go together")
    if args.tls_cert is not None and args.mode != "serve":
        parser.error("--tls-cert and --tls-key are for serve mode")
    if args.ca is not None and args.mode != "client":
        parser.error("--ca is for client mode")
    return args


def deflate_factory(args: argparse.Namespace, *, server: bool):
    """The websockets extension factory for the flags; raises ValueError for what it refuses."""
    if server:
        return ServerPerMessageDeflateFactory(
            server_no_context_takeover=args.deflate_server_no_context_takeover,
            client_no_context_takeover=args.deflate_client_no_context_takeover,
            server_max_window_bits=args.deflate_server_max_window_bits,
            client_max_window_bits=args.deflate_client_max_window_bits,
        )
    return ClientPerMessageDeflateFactory(
        server_no_context_takeover=args.deflate_server_no_context_takeover,
        client_no_context_takeover=args.deflate_client_no_context_takeover,
        server_max_window_bits=args.deflate_server_max_window_bits,
        # True: offer client_max_window_bits without a value, so the server may pick one.
        client_max_window_bits=args.deflate_client_max_window_bits or True,
    )


async def echo(ws) -> None:
    extensions = ws.response.headers.get("Sec-WebSocket-Extensions", "")
    print(f"python-websockets: connection, extensions {extensions!r}", flush=True)
    async for message in ws:
        await ws.send(message)


async def run_server(args: argparse.Namespace) -> None:
    extensions = [deflate_factory(args, server=True)] if args.deflate else None
    tls = None
    if args.tls_cert is not None:
        tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        tls.load_cert_chain(args.tls_cert, args.tls_key)
    async with serve(
        echo,
        "127.0.0.1",
        0,
        compression=None,
        extensions=extensions,
        max_size=MAX_SIZE,
        ssl=tls,
    ) as server:
        port = server.sockets[0].getsockname()[1]
        scheme = "ws" if tls is None else "wss"
        print(f"python-websockets: listening on {scheme}://127.0.0.1:{port}/", flush=True)
        await server.serve_forever()


class Mismatch(Exception):
    """An echo, pong or close that differs from what was expected."""


async def receive(ws, what: str):
    try:
        return await asyncio.wait_for(ws.recv(), REPLY_TIMEOUT)
    except asyncio.TimeoutError:
        raise Mismatch(f"{what}: no reply within {REPLY_TIMEOUT} s") from None


async def expect_pong(waiter, name: str) -> None:
    """Waits for the pong websockets matches to a ping (by payload)."""
    try:
        await asyncio.wait_for(waiter, REPLY_TIMEOUT)
    except asyncio.TimeoutError:
        raise Mismatch(f"{name}: no pong to our ping") from None


def check_echo(name: str, sent: str | bytes, got: str | bytes) -> None:
    if type(got) is not type(sent):
        raise Mismatch(f"{name}: sent {type(sent).__name__}, echo is {type(got).__name__}")
    if got != sent:
        first = next(
            (i for i, (a, b) in enumerate(zip(got, sent)) if a != b), min(len(got), len(sent))
        )
        raise Mismatch(
            f"{name}: echo differs: sent {len(sent)}, got {len(got)}, first difference at {first}"
        )


async def run_client(args: argparse.Namespace) -> None:
    extensions = [deflate_factory(args, server=False)] if args.deflate else None
    # Only for wss:// (websockets refuses an ssl argument with ws://).
    tls = {} if args.ca is None else {"ssl": ssl.create_default_context(cafile=args.ca)}
    async with connect(
        args.url,
        compression=None,
        extensions=extensions,
        max_size=MAX_SIZE,
        open_timeout=10,
        **tls,
    ) as ws:
        if args.ca is not None:
            tls_object = ws.transport.get_extra_info("ssl_object")
            if tls_object is None:
                raise Mismatch("--ca given, but the connection is not encrypted")
            print(f"python-websockets client: {tls_object.version()}", flush=True)
        header = ws.response.headers.get("Sec-WebSocket-Extensions")
        if args.expect_extensions is not None:
            expected = None if args.expect_extensions == "none" else args.expect_extensions
            if header != expected:
                raise Mismatch(f"Sec-WebSocket-Extensions {header!r}, expected {expected!r}")
        print(f"python-websockets client: connected, extensions {header!r}", flush=True)

        for name, payload, fragments in cases():
            if not fragments:
                await ws.send(payload)
            else:
                # A ping goes between the first two fragments: the peer must answer it while
                # it reassembles (and inflates) the message.
                pongs = []

                async def with_ping(fragments=fragments, pongs=pongs):
                    for index, fragment in enumerate(fragments):
                        yield fragment
                        if index == 0:
                            pongs.append(await ws.ping(MID_PING_PAYLOAD))

                await ws.send(with_ping())
                await expect_pong(pongs[0], name)
            check_echo(name, payload, await receive(ws, name))

        for i in range(BURST):
            await ws.send(burst_message(i))
        for i in range(BURST):
            name = f"burst message {i}"
            check_echo(name, burst_message(i), await receive(ws, name))

        await expect_pong(await ws.ping(PING_PAYLOAD), "ping")

        await asyncio.wait_for(ws.close(CLOSE_CODE, CLOSE_REASON), REPLY_TIMEOUT)
        sent, received = ws.protocol.close_sent, ws.protocol.close_rcvd
        if (
            sent is None
            or received is None
            or (received.code, received.reason) != (CLOSE_CODE, CLOSE_REASON)
        ):
            raise Mismatch(
                f"close: expected the echo {CLOSE_CODE} {CLOSE_REASON!r}: sent {sent}, "
                f"received {received}"
            )
    print(
        f"python-websockets client: ok ({len(cases())} messages, {BURST} burst messages, "
        "ping, clean close)",
        flush=True,
    )


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    try:
        if args.mode == "serve":
            asyncio.run(run_server(args))
        else:
            asyncio.run(run_client(args))
    except Mismatch as e:
        print(f"python-websockets {args.mode}: FAILED: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 0
    except Exception as e:  # noqa: BLE001 - report any peer-side error as a failure
        cause = f" ({e.__cause__!r})" if e.__cause__ else ""
        print(
            f"python-websockets {args.mode}: FAILED: {type(e).__name__}: {e}{cause}",
            file=sys.stderr,
        )
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
