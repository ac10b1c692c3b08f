#!/usr/bin/env python3
"""Writes the hand-made seed corpora under fuzz/corpus/<target>/ (committed).

Re-run after changing a target's input layout: `python3 fuzz/seeds.py`. Seeds are named by
what they hold; the files are small. Layouts are documented in each target (and in
`sockeye_fuzz::run_connection` for the connection targets).
"""
import os
import shutil
import zlib

HERE = os.path.dirname(os.path.abspath(__file__))
CORPUS = os.path.join(HERE, "corpus")
KEY = bytes([0x37, 0xFA, 0x21, 0x3D])  # RFC 6455 §5.7


def frame(opcode, payload=b"", fin=True, rsv1=False, mask=None, raw_len=None):
    b0 = (0x80 if fin else 0) | (0x40 if rsv1 else 0) | opcode
    n = len(payload) if raw_len is None else raw_len
    mbit = 0x80 if mask else 0
    if n < 126:
        head = bytes([b0, mbit | n])
    elif n < 65536:
        head = bytes([b0, mbit | 126]) + n.to_bytes(2, "big")
    else:
        head = bytes([b0, mbit | 127]) + n.to_bytes(8, "big")
    if mask:
        head += mask
        payload = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    return head + payload


def c(opcode, payload=b"", **kw):  # client -> server: masked
    return frame(opcode, payload, mask=KEY, **kw)


def s(opcode, payload=b"", **kw):  # server -> client: unmasked
    return frame(opcode, payload, **kw)


def close_body(code, reason=b""):
    return code.to_bytes(2, "big") + reason


def deflate(data, wbits=15, compressor=None):
    comp = compressor or zlib.compressobj(6, zlib.DEFLATED, -wbits)
    out = comp.compress(data) + comp.flush(zlib.Z_SYNC_FLUSH)
    assert out.endswith(b"\x00\x00\xff\xff")
    return out[:-4]


def conn(stream, flags=0, script=b"", deflate_flags=None):
    head = bytes([flags])
    if deflate_flags is not None:
        head += bytes([deflate_flags])
    return head + bytes([len(script)]) + script + stream


HELLO_DEFLATED = bytes.fromhex("f248cdc9c90700")  # RFC 7692 §7.2.3.1

seeds = {}

seeds["frame_header"] = {
    "rfc_unmasked_hello": s(1, b"Hello"),
    "rfc_masked_hello": c(1, b"Hello"),
    "rfc_fragment_1": s(1, b"Hel", fin=False),
    "rfc_fragment_2": s(0, b"lo"),
    "rfc_ping": s(9, b"Hello"),
    "rfc_masked_pong": c(10, b"Hello"),
    "rfc_256_binary_header": bytes.fromhex("827e0100"),
    "rfc_64k_binary_header": bytes.fromhex("827f0000000000010000"),
    "masked_64k_header": bytes.fromhex("82ff0000000000010000") + KEY,
    "compressed_hello": s(1, HELLO_DEFLATED, rsv1=True),
    "masked_close": c(8, close_body(1000, b"bye")),
    "reserved_opcode": bytes.fromhex("8300"),
    "non_minimal_16": bytes.fromhex("827e007d"),
    "non_minimal_64": bytes.fromhex("827f000000000000ffff"),
    "high_bit_64": bytes.fromhex("827f8000000000000000"),
}

seeds["mask"] = {
    "rfc_hello": KEY + b"\x02" + b"Hello",
    "zero_key": b"\0\0\0\0\x05" + bytes(range(40)),
    "long": bytes([1, 2, 3, 4, 9]) + bytes(range(256)) * 2,
}

# Script bytes (see run_connection): low 5 bits chunk size, high 3 bits the action.
SEND = 3 << 5
PING = 4 << 5
CLOSE = 5 << 5
TIMEOUT = 6 << 5
EOF_ABORT = 7 << 5
HOLD = 2 << 5

server_stream = {
    "rfc_masked_hello": c(1, b"Hello"),
    "fragmented_text_ping_close": c(1, b"Hel", fin=False) + c(9, b"ping") + c(0, b"lo") + c(8, close_body(1000, b"bye")),
    "binary_256": c(2, bytes(range(256))),
    "binary_64k_declared_3_sent": c(2, b"abc", raw_len=65536),
    "utf8_split": c(1, "κό".encode()[:3], fin=False) + c(0, "κό".encode()[3:]) + c(8),
    "invalid_utf8": c(1, b"\xce\xba\xff\xfe"),
    "close_bad_code": c(8, close_body(1005)),
    "unmasked": s(1, b"Hello"),
    "ping_flood": c(9, b"a") * 20 + c(8, close_body(1001)),
    "reserved_bits": bytes([0xB1, 0x80]) + KEY,
    "pong_then_close": c(10, b"x") + c(8, close_body(3000, "ok ✓".encode())),
}
seeds["connection_server"] = {name: conn(st) for name, st in server_stream.items()}
seeds["connection_server"].update({
    "chunked_1_2_3": conn(server_stream["fragmented_text_ping_close"], script=bytes([0, 1, 2, 3, 4, 5])),
    "app_send_then_peer_close": conn(
        c(1, b"Hello") + c(8, close_body(1000)),
        script=bytes([SEND | 6, 0x03, SEND | 6, 0x9C, SEND | 31, 0xBD]),
    ),
    "app_fragments_ping_close": conn(
        c(9, b"hi"),
        script=bytes([SEND | 0, 0x11, PING | 0, 0x0B, SEND | 0, 0x31, CLOSE | 0, 0x20, 31]),
    ),
    "held_events_then_violation": conn(
        c(1, b"one") + c(2, b"two") + c(3, b""),
        script=bytes([HOLD | 8, HOLD | 8, 31]),
    ),
    "timeout_and_abort": conn(c(1, b"x"), script=bytes([CLOSE | 0, 0x00, TIMEOUT | 31, EOF_ABORT | 0, 0x02])),
    "small_limits": conn(c(2, bytes(200)) + c(9, b"p"), flags=0x06),
    "zero_limit": conn(c(2, b"") + c(2, b"a"), flags=0x03),
})

client_stream = {
    "rfc_unmasked_hello": s(1, b"Hello"),
    "rfc_fragments": s(1, b"Hel", fin=False) + s(0, b"lo"),
    "rfc_ping_pong": s(9, b"Hello") + s(10, b"Hello"),
    "rfc_256_binary": s(2, bytes(256)),
    "server_close": s(8, close_body(1001, b"going away")),
    "masked_from_server": c(1, b"Hello"),
    "interleaved_ping": s(2, b"ab", fin=False) + s(9, b"") + s(0, b"cd") + s(8, b""),
    "continuation_without_start": s(0, b"x"),
    "control_too_big": s(9, bytes(126)),
}
seeds["connection_client"] = {name: conn(st) for name, st in client_stream.items()}
seeds["connection_client"].update({
    "chunked": conn(client_stream["interleaved_ping"], script=bytes([0, 0, 1, 2, 7])),
    "app_close_then_server_close": conn(
        s(8, close_body(1000)), script=bytes([CLOSE | 0, 0x10, 31])
    ),
    "app_send_masked": conn(s(9, b"x"), script=bytes([SEND | 31, 0x0A, SEND | 0, 0x0B]), flags=0x10),
})

comp = zlib.compressobj(6, zlib.DEFLATED, -15)
first = deflate(b"Hello", compressor=comp)
second = deflate(b"Hello", compressor=comp)  # context takeover: shorter (RFC 7692 §7.2.3.2)
bomb = deflate(bytes(70000))
frag = deflate(b"Hello, fragmented world")
deflate_stream = {
    "rfc_compressed_hello": c(1, HELLO_DEFLATED, rsv1=True),
    "two_hellos_context_takeover": c(1, first, rsv1=True) + c(1, second, rsv1=True),
    "rfc_uncompressed_block": c(1, bytes.fromhex("000500faff48656c6c6f00"), rsv1=True),
    "rfc_bfinal_block": c(1, bytes.fromhex("f348cdc9c90700 00".replace(" ", "")), rsv1=True),
    "fragmented_compressed": c(1, frag[:5], rsv1=True, fin=False) + c(0, frag[5:]),
    "uncompressed_on_deflate": c(1, b"Hello") + c(2, b"\x00\x01"),
    "bomb_70k_zeros": c(2, bomb, rsv1=True),
    "rsv1_on_continuation": c(1, frag[:5], rsv1=True, fin=False) + c(0, frag[5:], rsv1=True),
    "garbage_compressed": c(2, b"\xff" * 16, rsv1=True),
    "empty_compressed": c(2, b"\x00", rsv1=True) + c(1, b"", rsv1=True),
}
seeds["connection_deflate"] = {name: conn(st, deflate_flags=0) for name, st in deflate_stream.items()}
seeds["connection_deflate"].update({
    "hello_no_context_takeover_9bits": conn(deflate_stream["two_hellos_context_takeover"], deflate_flags=0x07),
    "bomb_small_limit": conn(deflate_stream["bomb_70k_zeros"], flags=0x01, deflate_flags=0),
    "chunked_compressed": conn(deflate_stream["fragmented_compressed"], script=bytes([0, 1, 2, 3]), deflate_flags=0),
    "app_sends_compressed": conn(
        c(1, HELLO_DEFLATED, rsv1=True),
        script=bytes([SEND | 31, 0x8D, SEND | 0, 0x11, SEND | 0, 0x31, SEND | 0, 0x0E]),
        deflate_flags=0,
    ),
})


def messages(*items):
    out = b""
    for header, content in items:
        out += bytes([header | len(content)]) + content
    return out


seeds["deflate_roundtrip"] = {
    "hello": bytes([0, 0, 1]) + messages((0, b"Hello"), (0, b"Hello")),
    "fragmented": bytes([0, 0, 7]) + messages((0x40, b"Hello, fragmented world")),
    "repeated_bomb": bytes([0x01, 0, 9]) + messages((0x80, b"0123456789"), (0, b"after")),
    "server_sends_no_takeover": bytes([0x80, 0x03, 3]) + messages((0, b"abcabcabc"), (0x40, b"abcabcabc")),
    "small_windows": bytes([0, 0x24, 5]) + messages((0x80, bytes(range(60)))),
    "binary_level0": bytes([0x10, 0xC0, 2]) + messages((0, b"\xff\xfe\x00"), (0, b"")),
}

RFC_REQUEST = (
    b"GET /chat HTTP/1.1\r\nHost: server.example.com\r\nUpgrade: websocket\r\n"
    b"Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
    b"Origin: http://example.com\r\nSec-WebSocket-Protocol: chat, superchat\r\n"
    b"Sec-WebSocket-Version: 13\r\n\r\n"
)
DEFLATE_REQUEST = RFC_REQUEST.replace(
    b"Sec-WebSocket-Version: 13\r\n",
    b"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n",
)
seeds["handshake_request"] = {
    "rfc_request": b"\0" + RFC_REQUEST,
    "deflate_offer": b"\0" + DEFLATE_REQUEST,
    "deflate_offers_params": b"\0" + RFC_REQUEST.replace(
        b"Origin:",
        b"Sec-WebSocket-Extensions: permessage-deflate; server_max_window_bits=10; "
        b"client_max_window_bits, permessage-deflate\r\nSec-WebSocket-Extensions: x-webkit-deflate-frame\r\nOrigin:",
    ),
    "keep_alive_upgrade_with_frame": b"\0" + RFC_REQUEST.replace(b"Connection: Upgrade", b"Connection: keep-alive, Upgrade") + c(1, b"Hello"),
    "small_limit_256": b"\x01" + RFC_REQUEST,
    "few_headers": b"\x04" + RFC_REQUEST,
    "lf_only": b"\0" + RFC_REQUEST.replace(b"\r\n", b"\n"),
    "post": b"\0" + RFC_REQUEST.replace(b"GET", b"POST"),
    "version_8": b"\0" + RFC_REQUEST.replace(b"Version: 13", b"Version: 8"),
}

RFC_RESPONSE = (
    b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    b"Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n"
)


def with_ext(value):
    return RFC_RESPONSE.replace(b"\r\n\r\n", b"\r\nSec-WebSocket-Extensions: " + value + b"\r\n\r\n")


seeds["handshake_response"] = {
    "rfc_response": b"\0" + RFC_RESPONSE,
    "rfc_response_then_frame": b"\0" + RFC_RESPONSE + s(1, b"Hello"),
    "deflate_default": b"\x01" + with_ext(b"permessage-deflate"),
    "deflate_params": b"\x0f" + with_ext(b"permessage-deflate; server_no_context_takeover; server_max_window_bits=10; client_max_window_bits=12"),
    "deflate_not_offered": b"\0" + with_ext(b"permessage-deflate"),
    "bad_accept": b"\0" + RFC_RESPONSE.replace(b"s3pP", b"s3pQ"),
    "forbidden": b"\0" + RFC_RESPONSE.replace(b"101 Switching Protocols", b"403 Forbidden"),
    "small_limits": b"\x80" + RFC_RESPONSE,
    "protocol": b"\0" + RFC_RESPONSE.replace(b"\r\n\r\n", b"\r\nSec-WebSocket-Protocol: chat\r\n\r\n"),
}

seeds["extensions"] = {
    "offer_default": b"\0\0permessage-deflate; client_max_window_bits",
    "offer_all_params": b"\x03\x00permessage-deflate; server_no_context_takeover; client_no_context_takeover; server_max_window_bits=10; client_max_window_bits=12",
    "offer_list": b"\0\0x-webkit-deflate-frame, permessage-deflate; server_max_window_bits=16, permessage-deflate",
    "offer_quoted": b'\0\0permessage-deflate; client_max_window_bits="10"',
    "two_values": b"\0\0permessage-deflate; client_max_window_bits=9\npermessage-deflate",
    "response_with_config": b"\x0c\x2cpermessage-deflate; server_max_window_bits=8; client_max_window_bits=9",
    "bad_duplicate": b"\0\0permessage-deflate; server_no_context_takeover; server_no_context_takeover",
    "bad_value": b"\0\0permessage-deflate; server_max_window_bits=08",
    "empty": b"\0\0",
}

for target, items in seeds.items():
    d = os.path.join(CORPUS, target)
    shutil.rmtree(d, ignore_errors=True)
    os.makedirs(d)
    for name, data in items.items():
        with open(os.path.join(d, name), "wb") as f:
            f.write(data)
    print(f"{target}: {len(items)} seeds")
