//! permessage-deflate (RFC 7692): the §7.2.3 examples, the RSV1 rules (§6), context takeover and
//! window sizes (§7.1), the decompressed size limit (RFC 6455 §10.4) and fail-fast UTF-8 inside
//! compressed text.
//!
//! Compressed input is made with flate2 directly, or by hand from RFC 1951 ([`zero_bomb`]), and
//! compressed output is checked by inflating it with flate2 ([`inflate_message`]) or, where the
//! LZ77 window or the message boundaries matter, with [`Puff`], a strict decoder written from
//! RFC 1951 (zlib-rs ignores the window size when inflating): the crate's own codec is never
//! its own oracle.

mod common;

use common::*;
use flate2::Decompress;
use sockeye_proto::deflate::{DeflateConfig, DeflateParams};
use sockeye_proto::{
    CloseCode, Config, Connection, DataKind, Event, Initiator, Message, ProtocolError, Role, State,
};

/// "Hello" compressed in one fixed-Huffman block (RFC 7692 §7.2.3.1).
const HELLO: [u8; 7] = [0xf2, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00];
/// The second "Hello" when the window holds the first one (§7.2.3.2): one match, length 5,
/// distance 5.
const HELLO_AGAIN: [u8; 5] = [0xf2, 0x00, 0x11, 0x00, 0x00];

const MIB: usize = 1 << 20;

fn deflate_config(edit: impl FnOnce(&mut DeflateConfig)) -> DeflateConfig {
    let mut config = DeflateConfig::default();
    edit(&mut config);
    config
}

fn params(edit: impl FnOnce(&mut DeflateParams)) -> DeflateParams {
    let mut params = DeflateParams::new();
    edit(&mut params);
    params
}

/// A connection of `role` with default limits and permessage-deflate with `params`.
fn deflating(role: Role, params: DeflateParams) -> Connection {
    deflate_connection(role, Config::default(), params, &DeflateConfig::default())
}

/// A maker for [`feed_both`]: default deflate parameters, message limit `limit`.
fn limited(role: Role, limit: usize) -> impl Fn() -> Connection {
    move || {
        deflate_connection(
            role,
            Config::default().max_message_size(Some(limit)),
            DeflateParams::new(),
            &DeflateConfig::default(),
        )
    }
}

/// The first frame of a compressed message (RSV1 set), as the peer of `receiver` sends it.
fn compressed(receiver: Role, opcode: u8, fin: bool, payload: &[u8]) -> Vec<u8> {
    frame(opcode, fin, RSV1, mask_for(receiver), payload)
}

fn text(s: &str) -> Event {
    Event::Message(Message::text(s))
}

fn binary(payload: &[u8]) -> Event {
    Event::Message(Message::binary(payload.to_vec()))
}

fn ping(payload: &[u8]) -> Event {
    Event::Message(Message::Ping(payload.to_vec().into()))
}

/// ASCII text of `len` bytes: words in a pseudo-random order, different for each `seed`.
/// Compresses to about a third.
fn chatter(len: usize, seed: u32) -> Vec<u8> {
    const WORDS: [&str; 16] = [
        "deflate ",
        "window ",
        "context ",
        "takeover ",
        "frame ",
        "message ",
        "sockeye ",
        "rfc ",
        "lz77 ",
        "huffman ",
        "block ",
        "sync ",
        "flush ",
        "octet ",
        "server ",
        "client ",
    ];
    let mut out = Vec::with_capacity(len + 16);
    let mut state = seed.wrapping_mul(0x9E37_79B9) | 1;
    while out.len() < len {
        state ^= state << 13;
        state ^= state >> 17;
        state ^= state << 5;
        out.extend_from_slice(WORDS[(state % 16) as usize].as_bytes());
    }
    out.truncate(len);
    out
}

/// Data messages grouped from parsed frames: (opcode, RSV bits of the first frame, the
/// concatenated payloads). Asserts that continuation frames never carry RSV bits.
fn messages_on_wire(frames: &[WireFrame]) -> Vec<(u8, u8, Vec<u8>)> {
    let mut messages = Vec::new();
    let mut current: Option<(u8, u8, Vec<u8>)> = None;
    for f in frames {
        match f.opcode {
            OP_TEXT | OP_BINARY => {
                assert!(current.is_none(), "new message inside a fragmented one");
                current = Some((f.opcode, f.rsv, f.payload.clone()));
            }
            OP_CONT => {
                assert_eq!(f.rsv, 0, "RFC 7692 §6.1: RSV1 only on the first frame");
                current
                    .as_mut()
                    .expect("continuation without a message")
                    .2
                    .extend_from_slice(&f.payload);
            }
            _ => {
                assert_eq!(f.rsv, 0, "control frames are never compressed: {f:?}");
                continue;
            }
        }
        if f.fin {
            messages.push(current.take().unwrap());
        }
    }
    assert!(current.is_none(), "unfinished message on the wire");
    messages
}

// ---------------------------------------------------------------------------------------------
// RFC 7692 §7.2.3 examples
// ---------------------------------------------------------------------------------------------

#[test]
fn rfc_7692_hello_in_one_frame() {
    // §7.2.3.1, byte for byte: the frame as a server sends it.
    let rfc = [0xc1, 0x07, 0xf2, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00];
    assert_eq!(compressed(Role::Client, OP_TEXT, true, &HELLO), rfc);
    for role in ROLES {
        let mut conn = feed_both(
            || deflating(role, DeflateParams::new()),
            &compressed(role, OP_TEXT, true, &HELLO),
        );
        assert_events(&mut conn, &[text("Hello")]);
        assert_nothing_sent(&mut conn);
        assert_eq!(conn.state(), State::Open);
    }
}

#[test]
fn rfc_7692_hello_in_two_fragments() {
    // §7.2.3.1: "0x41 0x03 0xf2 0x48 0xcd" and "0x80 0x04 0xc9 0xc9 0x07 0x00".
    let rfc = [
        0x41, 0x03, 0xf2, 0x48, 0xcd, 0x80, 0x04, 0xc9, 0xc9, 0x07, 0x00,
    ];
    for role in ROLES {
        let input = [
            compressed(role, OP_TEXT, false, &HELLO[..3]),
            from_peer(role, OP_CONT, true, &HELLO[3..]),
        ]
        .concat();
        if role == Role::Client {
            assert_eq!(input, rfc);
        }
        let mut conn = feed_both(|| deflating(role, DeflateParams::new()), &input);
        assert_events(&mut conn, &[text("Hello")]);
        assert_nothing_sent(&mut conn);
    }
}

#[test]
fn rfc_7692_block_with_no_compression() {
    // §7.2.3.3: a stored block, LEN 5, NLEN !5, "Hello", then the start of an empty stored block.
    let payload = [
        0x00, 0x05, 0x00, 0xfa, 0xff, 0x48, 0x65, 0x6c, 0x6c, 0x6f, 0x00,
    ];
    assert_eq!(
        compressed(Role::Client, OP_TEXT, true, &payload)[..2],
        [0xc1, 0x0b]
    );
    for role in ROLES {
        let mut conn = feed_both(
            || deflating(role, DeflateParams::new()),
            &compressed(role, OP_TEXT, true, &payload),
        );
        assert_events(&mut conn, &[text("Hello")]);
    }
}

#[test]
fn rfc_7692_two_blocks_in_one_message() {
    // §7.2.3.5: "He" flushed, then "llo" in a second block.
    let payload = [
        0xf2, 0x48, 0x05, 0x00, 0x00, 0x00, 0xff, 0xff, 0xca, 0xc9, 0xc9, 0x07, 0x00,
    ];
    for role in ROLES {
        let mut conn = feed_both(
            || deflating(role, DeflateParams::new()),
            &compressed(role, OP_TEXT, true, &payload),
        );
        assert_events(&mut conn, &[text("Hello")]);
    }
}

#[test]
fn rfc_7692_block_with_bfinal_set() {
    // §7.2.3.4: "Hello" in a block with BFINAL set, then one octet 0x00 (the header bits of an
    // empty stored block and padding) "to allow the payload to be decompressed in the same manner
    // as messages compressed using DEFLATE blocks with BFINAL set to 0". A sender that ends its
    // DEFLATE stream with every message starts a new one with the next: that one must decode too.
    let payload = [0xf3, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00, 0x00];
    for role in ROLES {
        let input = [
            compressed(role, OP_TEXT, true, &payload),
            compressed(role, OP_TEXT, true, &payload),
            compressed(role, OP_TEXT, true, &HELLO),
        ]
        .concat();
        let mut conn = feed_both(|| deflating(role, DeflateParams::new()), &input);
        assert_events(&mut conn, &[text("Hello"), text("Hello"), text("Hello")]);
        assert_nothing_sent(&mut conn);

        // The final block without the octet, and the octet in a fragment of its own.
        let input = [
            compressed(role, OP_TEXT, true, &payload[..7]),
            compressed(role, OP_TEXT, false, &payload[..7]),
            from_peer(role, OP_CONT, true, &payload[7..]),
        ]
        .concat();
        let mut conn = feed_both(|| deflating(role, DeflateParams::new()), &input);
        assert_events(&mut conn, &[text("Hello"), text("Hello")]);

        // Anything else after the final block is not DEFLATE data.
        for extra in [
            &[0x00, 0x00][..],
            &[0x01],
            &[0x00, 0x00, 0xff, 0xff],
            &HELLO,
        ] {
            let bad = compressed(role, OP_TEXT, true, &[&payload[..7], extra].concat());
            let mut conn = feed_both(|| deflating(role, DeflateParams::new()), &bad);
            let (err, events) = assert_failing(&mut conn, CloseCode::INVALID_PAYLOAD);
            assert_eq!(err, ProtocolError::InvalidCompressedData, "{extra:02x?}");
            assert!(events.is_empty());
        }
    }
}

#[test]
fn rfc_7692_context_takeover_two_messages() {
    // §7.2.3.2: the second message refers back into the first.
    for role in ROLES {
        let input = [
            compressed(role, OP_TEXT, true, &HELLO),
            compressed(role, OP_TEXT, true, &HELLO_AGAIN),
        ]
        .concat();
        if role == Role::Client {
            assert_eq!(
                input,
                [
                    0xc1, 0x07, 0xf2, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00, 0xc1, 0x05, 0xf2, 0x00,
                    0x11, 0x00, 0x00
                ]
            );
        }
        let mut conn = feed_both(|| deflating(role, DeflateParams::new()), &input);
        assert_events(&mut conn, &[text("Hello"), text("Hello")]);
    }
}

#[test]
fn rfc_7692_empty_final_fragment() {
    // §7.2.3.6: a final fragment carrying no data may be the single octet 0x00. Here the first
    // fragment keeps its sync-flush trailer, as a streaming sender's would.
    let first = compress_pieces(&mut compressor(15), &[&b"Hello"[..], &b""[..]]);
    assert!(first[0].ends_with(&TRAILER) && first[1] == [0x00]);
    for role in ROLES {
        let input = [
            compressed(role, OP_TEXT, false, &first[0]),
            from_peer(role, OP_CONT, true, &[0x00]),
            compressed(role, OP_BINARY, true, &[0x00]),
        ]
        .concat();
        let mut conn = feed_both(|| deflating(role, DeflateParams::new()), &input);
        assert_events(&mut conn, &[text("Hello"), binary(b"")]);
    }
}

#[test]
fn sending_matches_the_rfc_examples() {
    for role in ROLES {
        let mut conn = deflating(role, DeflateParams::new());
        conn.send(DataKind::Text, b"Hello").unwrap();
        conn.send(DataKind::Text, b"").unwrap();
        conn.send(DataKind::Text, b"Hello").unwrap();
        let frames = parse_wire(&drain(&mut conn).sent);
        assert_eq!(frames.len(), 3);
        // §7.2.3.1 exactly, and §7.2.3.6's single 0x00 for an empty message.
        assert_eq!((frames[0].rsv, frames[0].opcode), (RSV1, OP_TEXT));
        assert_eq!(frames[0].payload, HELLO);
        assert_eq!((frames[1].rsv, &frames[1].payload[..]), (RSV1, &[0x00][..]));
        // The repeat uses the shared window: shorter, and it decodes only after the first.
        assert_eq!(frames[2].rsv, RSV1);
        assert!(frames[2].payload.len() < HELLO.len(), "{:02x?}", frames[2]);
        let mut oracle = Decompress::new(false);
        for (f, expected) in frames.iter().zip([&b"Hello"[..], b"", b"Hello"]) {
            assert_eq!(
                inflate_message(&mut oracle, &f.payload, 64).unwrap(),
                expected
            );
        }
        assert!(
            inflate_message(&mut Decompress::new(false), &frames[2].payload, 64).is_err(),
            "the second message must refer to the first"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// RSV bits (RFC 7692 §6, RFC 6455 §5.2)
// ---------------------------------------------------------------------------------------------

#[test]
fn rsv1_on_a_continuation_frame_fails() {
    for role in ROLES {
        for first_rsv in [RSV1, 0] {
            let first = if first_rsv == RSV1 {
                compressed(role, OP_TEXT, false, &HELLO[..3])
            } else {
                from_peer(role, OP_TEXT, false, b"Hel")
            };
            let input = [
                first,
                frame(OP_CONT, true, RSV1, mask_for(role), &HELLO[3..]),
            ]
            .concat();
            let mut conn = feed_both(|| deflating(role, DeflateParams::new()), &input);
            let (err, events) = assert_failing(&mut conn, CloseCode::PROTOCOL_ERROR);
            assert_eq!(err, ProtocolError::ReservedBits, "{role:?}");
            assert!(events.is_empty(), "{events:?}");
        }
    }
}

#[test]
fn rsv1_on_a_control_frame_fails() {
    for role in ROLES {
        for opcode in [OP_PING, OP_PONG, OP_CLOSE] {
            let payload = if opcode == OP_CLOSE {
                close_payload(1000, b"")
            } else {
                b"abc".to_vec()
            };
            // Alone, and between the fragments of a compressed message.
            let alone = frame(opcode, true, RSV1, mask_for(role), &payload);
            let inside = [
                compressed(role, OP_TEXT, false, &HELLO[..3]),
                alone.clone(),
                from_peer(role, OP_CONT, true, &HELLO[3..]),
            ]
            .concat();
            for input in [alone, inside] {
                let mut conn = feed_both(|| deflating(role, DeflateParams::new()), &input);
                let (err, events) = assert_failing(&mut conn, CloseCode::PROTOCOL_ERROR);
                assert_eq!(err, ProtocolError::ReservedBits, "{role:?} opcode {opcode}");
                assert!(events.is_empty(), "{events:?}");
            }
        }
    }
}

#[test]
fn rsv1_without_negotiated_deflate_fails() {
    for role in ROLES {
        let mut conn = feed(role, &compressed(role, OP_TEXT, true, &HELLO));
        let (err, events) = assert_failing(&mut conn, CloseCode::PROTOCOL_ERROR);
        assert_eq!(err, ProtocolError::ReservedBits);
        assert!(events.is_empty());
    }
}

#[test]
fn rsv2_and_rsv3_fail_with_deflate() {
    for role in ROLES {
        for rsv in [0b010, 0b001, 0b011, 0b110, 0b101, 0b111] {
            for opcode in [OP_TEXT, OP_BINARY, OP_PING] {
                let mut conn = feed_both(
                    || deflating(role, DeflateParams::new()),
                    &frame(opcode, true, rsv, mask_for(role), &HELLO),
                );
                let (err, events) = assert_failing(&mut conn, CloseCode::PROTOCOL_ERROR);
                assert_eq!(
                    err,
                    ProtocolError::ReservedBits,
                    "rsv {rsv:03b} op {opcode}"
                );
                assert!(events.is_empty());
            }
            // On a continuation of a compressed message.
            let input = [
                compressed(role, OP_TEXT, false, &HELLO[..3]),
                frame(OP_CONT, true, rsv, mask_for(role), &HELLO[3..]),
            ]
            .concat();
            let mut conn = feed_both(|| deflating(role, DeflateParams::new()), &input);
            let (err, _) = assert_failing(&mut conn, CloseCode::PROTOCOL_ERROR);
            assert_eq!(err, ProtocolError::ReservedBits);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Fragmentation and mixing
// ---------------------------------------------------------------------------------------------

#[test]
fn fragmented_compressed_message_is_reassembled() {
    let message = chatter(40_000, 1);
    // Each fragment ends in a sync flush, as a streaming sender's would.
    let flushed = compress_pieces(
        &mut compressor(15),
        &[&message[..10], &message[10..20_000], &message[20_000..]],
    );
    // The whole compressed payload cut at arbitrary byte offsets, inside Huffman codes.
    let whole = compress_message(&mut compressor(15), &message);
    assert!(whole.len() > 1000, "{}", whole.len());
    let mut cut = Vec::new();
    let mut pos = 0;
    for len in [1, 2, 3, 5, 8, 13, 21, 34, 55, 89, 144] {
        cut.push(whole[pos..pos + len].to_vec());
        pos += len;
    }
    cut.push(whole[pos..].to_vec());
    for role in ROLES {
        for payloads in [&flushed, &cut] {
            let mut input = Vec::new();
            for (i, payload) in payloads.iter().enumerate() {
                let fin = i + 1 == payloads.len();
                if i == 0 {
                    input.extend(compressed(role, OP_TEXT, fin, payload));
                } else {
                    input.extend(from_peer(role, OP_CONT, fin, payload));
                }
                if i == 1 {
                    // A control frame between fragments is answered and does not disturb
                    // inflation.
                    input.extend(from_peer(role, OP_PING, true, b"mid"));
                }
            }
            let mut conn = feed_both(|| deflating(role, DeflateParams::new()), &input);
            assert_events(
                &mut conn,
                &[
                    ping(b"mid"),
                    Event::Message(Message::text(String::from_utf8(message.clone()).unwrap())),
                ],
            );
            assert_sent(&mut conn, &[from_self(role, OP_PONG, true, b"mid")]);
        }
    }
}

#[test]
fn send_fragment_compresses_with_rsv1_on_the_first_frame_only() {
    let first = chatter(3000, 2);
    let pieces: [&[u8]; 4] = [&first[..1000], &first[1000..], b"", &first[..500]];
    for role in ROLES {
        let mut conn = deflating(role, DeflateParams::new());
        for (i, piece) in pieces.iter().enumerate() {
            conn.send_fragment(DataKind::Binary, piece, i + 1 == pieces.len())
                .unwrap();
            if i == 1 {
                conn.ping(b"between").unwrap();
            }
        }
        // A second fragmented message continues the same compression context.
        conn.send_fragment(DataKind::Text, &first[..2000], false)
            .unwrap();
        conn.send_fragment(DataKind::Text, &first[2000..], true)
            .unwrap();
        let frames = parse_wire(&drain(&mut conn).sent);
        let shape: Vec<(u8, bool, u8)> = frames.iter().map(|f| (f.opcode, f.fin, f.rsv)).collect();
        assert_eq!(
            shape,
            [
                (OP_BINARY, false, RSV1),
                (OP_CONT, false, 0),
                (OP_PING, true, 0),
                (OP_CONT, false, 0),
                (OP_CONT, true, 0),
                (OP_TEXT, false, RSV1),
                (OP_CONT, true, 0),
            ],
            "{role:?}"
        );
        for f in &frames {
            assert_eq!(f.mask.is_some(), role == Role::Client);
        }
        assert_eq!(frames[2].payload, b"between");
        let messages = messages_on_wire(&frames);
        let mut oracle = Decompress::new(false);
        assert_eq!(
            inflate_message(&mut oracle, &messages[0].2, 256).unwrap(),
            pieces.concat()
        );
        assert_eq!(
            inflate_message(&mut oracle, &messages[1].2, 256).unwrap(),
            first
        );
        // It really is compressed.
        assert!(messages[1].2.len() < first.len() / 2);
    }
}

#[test]
fn uncompressed_messages_are_accepted_on_a_deflate_connection() {
    for role in ROLES {
        let input = [
            compressed(role, OP_TEXT, true, &HELLO),
            from_peer(role, OP_TEXT, true, b"plain"),
            from_peer(role, OP_BINARY, false, b"raw "),
            from_peer(role, OP_CONT, true, b"bytes"),
            // Still refers to the first message: uncompressed messages leave the window alone.
            compressed(role, OP_TEXT, true, &HELLO_AGAIN),
            from_peer(role, OP_BINARY, true, &[0xf2, 0x48]),
        ]
        .concat();
        let mut conn = feed_both(|| deflating(role, DeflateParams::new()), &input);
        assert_events(
            &mut conn,
            &[
                text("Hello"),
                text("plain"),
                binary(b"raw bytes"),
                text("Hello"),
                binary(&[0xf2, 0x48]),
            ],
        );
        assert_nothing_sent(&mut conn);
    }
}

// ---------------------------------------------------------------------------------------------
// Invalid data and limits
// ---------------------------------------------------------------------------------------------

#[test]
fn invalid_deflate_data_fails_with_1007() {
    // A fixed-Huffman block whose first code is literal/length 286, which does not exist.
    let mut bad_code = BitWriter::default();
    bad_code.bits(0, 1);
    bad_code.bits(1, 2);
    bad_code.code(0b1100_0110, 8);
    let cases: [(&str, Vec<u8>); 5] = [
        ("reserved block type 11", vec![0x06, 0x00]),
        (
            "stored block with NLEN not the complement of LEN",
            vec![0x00, 0x05, 0x00, 0x00, 0x00, b'H', b'e', b'l', b'l', b'o'],
        ),
        (
            "back-reference before the start of the stream",
            HELLO_AGAIN.to_vec(),
        ),
        ("noise", vec![0xff; 64]),
        ("fixed block with length code 286", bad_code.bytes),
    ];
    for role in ROLES {
        for (what, payload) in &cases {
            for opcode in [OP_TEXT, OP_BINARY] {
                let mut conn = feed_both(
                    || deflating(role, DeflateParams::new()),
                    &compressed(role, opcode, true, payload),
                );
                let (err, events) = assert_failing(&mut conn, CloseCode::INVALID_PAYLOAD);
                assert_eq!(
                    err,
                    ProtocolError::InvalidCompressedData,
                    "{role:?}: {what}"
                );
                assert!(events.is_empty(), "{what}: {events:?}");
            }
        }
        // Corruption in a later fragment, after a valid flushed block.
        let first = compress_pieces(&mut compressor(15), &[&b"Hello"[..], &b""[..]]).remove(0);
        let input = [
            compressed(role, OP_BINARY, false, &first),
            from_peer(role, OP_CONT, true, &[0x06, 0x00]),
        ]
        .concat();
        let mut conn = feed_both(|| deflating(role, DeflateParams::new()), &input);
        let (err, _) = assert_failing(&mut conn, CloseCode::INVALID_PAYLOAD);
        assert_eq!(err, ProtocolError::InvalidCompressedData);
    }
}

#[test]
fn the_puff_oracle_agrees_with_flate2_and_enforces_windows() {
    let text = chatter(20_000, 9);
    let noise: Vec<u8> = (0..5000u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    for bits in 9..=15 {
        for level in [0, 1, 6, 9] {
            let mut c = flate2::Compress::new_with_window_bits(
                flate2::Compression::new(level),
                false,
                bits,
            );
            let mut puff = Puff::new(bits);
            for message in [&text[..], &noise, b"", &text[..1000]] {
                let payload = compress_message(&mut c, message);
                let inflated = puff.message(&payload).unwrap();
                assert!(inflated == message, "bits {bits} level {level}");
            }
        }
    }
    // The RFC 7692 examples, with context takeover.
    let mut puff = Puff::new(15);
    assert_eq!(puff.message(&HELLO).unwrap(), b"Hello");
    assert_eq!(puff.message(&HELLO_AGAIN).unwrap(), b"Hello");
    // Refusals: a window too small, a reference before the stream, a truncated block, BFINAL.
    let err = Puff::new(9).message(&compress_message(&mut compressor(15), &far_repeats()));
    assert!(err.unwrap_err().contains("window"));
    assert!(Puff::new(15).message(&HELLO_AGAIN).is_err());
    assert!(Puff::new(15).message(&HELLO[..4]).is_err());
    let bfinal = [0xf3, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00, 0x00];
    assert!(Puff::new(15).message(&bfinal).is_err());
}

#[test]
fn the_hand_built_bomb_is_valid_deflate() {
    // The oracle for the bomb tests: flate2 inflates it to the promised zeros.
    for matches in [0, 1, 3, 4, 5, 1000] {
        let bomb = zero_bomb(matches);
        let out = inflate_message(&mut Decompress::new(false), &bomb, 4096).unwrap();
        assert_eq!(out.len(), 1 + 258 * matches);
        assert!(out.iter().all(|&b| b == 0));
        assert_eq!(Puff::new(8).message(&bomb).unwrap(), out);
    }
    let bomb = zero_bomb(400_000);
    assert!(bomb.len() < 101_000, "{}", bomb.len());
}

#[test]
fn decompression_bomb_fails_with_1009() {
    // ~100 KB that inflates to ~100 MiB of zeros, against a 1 MiB limit.
    let bomb = zero_bomb(100 * MIB / 258 + 1);
    assert!(bomb.len() < 110_000);
    for role in ROLES {
        let mut conn = feed_both(
            limited(role, MIB),
            &compressed(role, OP_BINARY, true, &bomb),
        );
        let (err, events) = assert_failing(&mut conn, CloseCode::MESSAGE_TOO_BIG);
        assert_eq!(err, ProtocolError::MessageTooBig { limit: MIB });
        assert!(events.is_empty());

        // Checked while inflating, not once the message is whole: the first 2 KB of the frame
        // (about 2 MiB inflated) are enough.
        let frame = compressed(role, OP_BINARY, true, &bomb);
        let mut conn = limited(role, MIB)();
        conn.handle_bytes(&frame[..2048]);
        let (err, _) = assert_failing(&mut conn, CloseCode::MESSAGE_TOO_BIG);
        assert_eq!(err, ProtocolError::MessageTooBig { limit: MIB });

        // The same bomb in 4 KB fragments: the limit holds across frames.
        let mut input = Vec::new();
        let chunks: Vec<&[u8]> = bomb.chunks(4096).collect();
        for (i, chunk) in chunks.iter().enumerate() {
            let fin = i + 1 == chunks.len();
            if i == 0 {
                input.extend(compressed(role, OP_TEXT, fin, chunk));
            } else {
                input.extend(from_peer(role, OP_CONT, fin, chunk));
            }
        }
        let mut conn = feed_both(limited(role, MIB), &input);
        let (err, _) = assert_failing(&mut conn, CloseCode::MESSAGE_TOO_BIG);
        assert_eq!(err, ProtocolError::MessageTooBig { limit: MIB });
    }
}

#[test]
fn decompressed_message_at_the_limit_is_accepted() {
    for role in ROLES {
        // Hand-built: exactly 1 + 258 * 1000 bytes.
        let limit = 1 + 258 * 1000;
        let bomb = compressed(role, OP_BINARY, true, &zero_bomb(1000));
        let mut conn = feed_both(limited(role, limit), &bomb);
        assert_events(&mut conn, &[binary(&vec![0; limit])]);
        let mut conn = feed_both(limited(role, limit - 1), &bomb);
        let (err, _) = assert_failing(&mut conn, CloseCode::MESSAGE_TOO_BIG);
        assert_eq!(err, ProtocolError::MessageTooBig { limit: limit - 1 });

        // flate2-compressed text in three fragments, the limit reached in the last one.
        let message = chatter(50_000, 3);
        let payloads = compress_pieces(
            &mut compressor(15),
            &[
                &message[..20_000],
                &message[20_000..49_999],
                &message[49_999..],
            ],
        );
        let input = [
            compressed(role, OP_TEXT, false, &payloads[0]),
            from_peer(role, OP_CONT, false, &payloads[1]),
            from_peer(role, OP_CONT, true, &payloads[2]),
        ]
        .concat();
        let mut conn = feed_both(limited(role, 50_000), &input);
        assert_events(
            &mut conn,
            &[Event::Message(Message::text(
                String::from_utf8(message.clone()).unwrap(),
            ))],
        );
        let mut conn = feed_both(limited(role, 49_999), &input);
        let (err, _) = assert_failing(&mut conn, CloseCode::MESSAGE_TOO_BIG);
        assert_eq!(err, ProtocolError::MessageTooBig { limit: 49_999 });
    }
}

#[test]
fn frame_limit_applies_to_the_compressed_payload() {
    for role in ROLES {
        // The frame limit bounds the compressed payload: a frame at the limit may inflate to
        // a message several times larger.
        let message = chatter(100_000, 4);
        let payload = compress_message(&mut compressor(15), &message);
        let limit = payload.len();
        assert!(limit < 50_000, "{limit}");
        let make = || {
            deflate_connection(
                role,
                Config::default()
                    .max_frame_size(Some(limit))
                    .max_message_size(Some(100_000)),
                DeflateParams::new(),
                &DeflateConfig::default(),
            )
        };
        let mut conn = feed_both(make, &compressed(role, OP_TEXT, true, &payload));
        assert_events(
            &mut conn,
            &[Event::Message(Message::text(
                String::from_utf8(message).unwrap(),
            ))],
        );
        // A compressed frame over the frame limit is refused from its header.
        let mut conn = feed_both(make, &compressed(role, OP_BINARY, true, &[0; 1][..]));
        assert_events(&mut conn, &[binary(b"")]);
        let header = compressed(role, OP_BINARY, true, &vec![0; limit + 1]);
        let mut conn = feed_both(make, &header[..header.len() - limit - 1]);
        let (err, _) = assert_failing(&mut conn, CloseCode::MESSAGE_TOO_BIG);
        assert_eq!(err, ProtocolError::FrameTooBig { limit });
    }
}

// ---------------------------------------------------------------------------------------------
// UTF-8 inside compressed text
// ---------------------------------------------------------------------------------------------

#[test]
fn invalid_utf8_in_compressed_text_fails_fast() {
    let bad = [&b"valid text, then "[..], &[0xff], b" and the rest"].concat();
    let tail = chatter(60_000, 5);
    for role in ROLES {
        let payloads = compress_pieces(&mut compressor(15), &[&bad, &tail]);
        // Only the first fragment arrives: the invalid byte is already inflated.
        let first = compressed(role, OP_TEXT, false, &payloads[0]);
        let mut conn = feed_both(|| deflating(role, DeflateParams::new()), &first);
        let (err, events) = assert_failing(&mut conn, CloseCode::INVALID_PAYLOAD);
        assert_eq!(err, ProtocolError::InvalidUtf8);
        assert!(events.is_empty());

        // One frame holding both pieces, cut off after the first: the frame is not complete
        // and the connection has already failed.
        let whole = compressed(role, OP_TEXT, true, &payloads.concat());
        let header_len = whole.len() - payloads.concat().len();
        let partial = &whole[..header_len + payloads[0].len()];
        let mut conn = feed_both(|| deflating(role, DeflateParams::new()), partial);
        let (err, _) = assert_failing(&mut conn, CloseCode::INVALID_PAYLOAD);
        assert_eq!(err, ProtocolError::InvalidUtf8);
    }
}

#[test]
fn utf8_across_compressed_fragments() {
    // "€" split between two compressed fragments is fine; a message ending inside a character
    // is not.
    let euro = "€".as_bytes();
    for role in ROLES {
        let payloads = compress_pieces(
            &mut compressor(15),
            &[
                &[&b"a"[..], &euro[..1]].concat(),
                &[&euro[1..], &b"b"[..]].concat(),
            ],
        );
        let input = [
            compressed(role, OP_TEXT, false, &payloads[0]),
            from_peer(role, OP_CONT, true, &payloads[1]),
        ]
        .concat();
        let mut conn = feed_both(|| deflating(role, DeflateParams::new()), &input);
        assert_events(&mut conn, &[text("a€b")]);

        let truncated = compress_message(&mut compressor(15), &[&b"a"[..], &euro[..2]].concat());
        let mut conn = feed_both(
            || deflating(role, DeflateParams::new()),
            &compressed(role, OP_TEXT, true, &truncated),
        );
        let (err, _) = assert_failing(&mut conn, CloseCode::INVALID_PAYLOAD);
        assert_eq!(err, ProtocolError::InvalidUtf8);
    }
}

// ---------------------------------------------------------------------------------------------
// Context takeover (§7.1.1)
// ---------------------------------------------------------------------------------------------

/// Sends `message` twice from a connection of `role` with `params`; returns the two payloads.
fn send_twice(role: Role, params: DeflateParams, message: &[u8]) -> (Vec<u8>, Vec<u8>) {
    let mut conn = deflating(role, params);
    conn.send(DataKind::Text, message).unwrap();
    conn.send(DataKind::Text, message).unwrap();
    let frames = parse_wire(&drain(&mut conn).sent);
    assert_eq!(frames.len(), 2);
    assert!(frames.iter().all(|f| f.rsv == RSV1 && f.fin));
    (frames[0].payload.clone(), frames[1].payload.clone())
}

#[test]
fn no_context_takeover_resets_the_compressor() {
    let message = chatter(2000, 6);
    for role in ROLES {
        let own_reset = |p: &mut DeflateParams| match role {
            Role::Server => p.server_no_context_takeover = true,
            Role::Client => p.client_no_context_takeover = true,
        };
        let peer_reset = |p: &mut DeflateParams| match role {
            Role::Server => p.client_no_context_takeover = true,
            Role::Client => p.server_no_context_takeover = true,
        };
        // With its own no_context_takeover, each message compresses from an empty window: the
        // same bytes twice, each decodable alone.
        let (first, second) = send_twice(role, params(own_reset), &message);
        assert_eq!(first, second, "{role:?}");
        for payload in [&first, &second] {
            assert_eq!(
                inflate_message(&mut Decompress::new(false), payload, 64).unwrap(),
                message
            );
        }
        // Without it (here: only the peer resets), the repeat refers to the first message.
        for p in [DeflateParams::new(), params(peer_reset)] {
            let (first, second) = send_twice(role, p, &message);
            assert!(
                second.len() < first.len() / 2,
                "{role:?}: {} vs {}",
                second.len(),
                first.len()
            );
            assert!(inflate_message(&mut Decompress::new(false), &second, 64).is_err());
            let mut oracle = Decompress::new(false);
            assert_eq!(inflate_message(&mut oracle, &first, 64).unwrap(), message);
            assert_eq!(inflate_message(&mut oracle, &second, 64).unwrap(), message);
        }
    }
}

#[test]
fn peer_no_context_takeover_is_honoured_when_inflating() {
    let message = chatter(3000, 7);
    for role in ROLES {
        let peer_reset = |p: &mut DeflateParams| match role {
            Role::Server => p.client_no_context_takeover = true,
            Role::Client => p.server_no_context_takeover = true,
        };
        // Messages compressed independently, each by a fresh compressor, all decode.
        let independent = compress_message(&mut compressor(15), &message);
        let mut input = Vec::new();
        for _ in 0..3 {
            input.extend(compressed(role, OP_TEXT, true, &independent));
            input.extend(compressed(role, OP_TEXT, true, &HELLO));
        }
        let mut conn = feed_both(|| deflating(role, params(peer_reset)), &input);
        let expected = Event::Message(Message::text(String::from_utf8(message.clone()).unwrap()));
        assert_events(
            &mut conn,
            &[
                expected.clone(),
                text("Hello"),
                expected.clone(),
                text("Hello"),
                expected,
                text("Hello"),
            ],
        );
        // The window really is emptied between messages: a message that refers back into the
        // previous one (which the peer promised never to send) cannot be decoded.
        let input = [
            compressed(role, OP_TEXT, true, &HELLO),
            compressed(role, OP_TEXT, true, &HELLO_AGAIN),
        ]
        .concat();
        let mut conn = feed_both(|| deflating(role, params(peer_reset)), &input);
        let (err, events) = assert_failing(&mut conn, CloseCode::INVALID_PAYLOAD);
        assert_eq!(err, ProtocolError::InvalidCompressedData);
        assert_eq!(events, [text("Hello")]);
        // Our own no_context_takeover does not empty the window we inflate with.
        let own_reset = |p: &mut DeflateParams| match role {
            Role::Server => p.server_no_context_takeover = true,
            Role::Client => p.client_no_context_takeover = true,
        };
        let mut conn = feed_both(|| deflating(role, params(own_reset)), &input);
        assert_events(&mut conn, &[text("Hello"), text("Hello")]);
    }
}

// ---------------------------------------------------------------------------------------------
// Window bits (§7.1.2)
// ---------------------------------------------------------------------------------------------

/// 64 KiB of text that repeats a 1500-byte block: every repeat is 1500 bytes back, beyond a
/// 512-byte window.
fn far_repeats() -> Vec<u8> {
    let mut rng = 0x2545_f491_u32;
    let block: Vec<u8> = (0..1500)
        .map(|_| {
            rng ^= rng << 13;
            rng ^= rng >> 17;
            rng ^= rng << 5;
            b"abcdefghijklmnopqrstuvwxyz  "[(rng % 28) as usize]
        })
        .collect();
    block.iter().copied().cycle().take(64 << 10).collect()
}

#[test]
fn small_window_output_inflates_with_that_window() {
    let data = far_repeats();
    // The oracle can tell: data compressed with a 32 KiB window does not fit in 512 bytes.
    let wide = compress_message(&mut compressor(15), &data);
    assert!(wide.len() < 4000, "{}", wide.len());
    assert_eq!(Puff::new(15).message(&wide).unwrap(), data);
    let err = Puff::new(9).message(&wide).unwrap_err();
    assert!(err.contains("beyond the 512-byte window"), "{err}");
    for role in ROLES {
        // The peer asks for a 512-byte window on this end's output.
        let client = deflate_config(|c| match role {
            Role::Server => c.server_max_window_bits = Some(9),
            Role::Client => c.client_max_window_bits = Some(9),
        });
        let (client_params, server_params) = negotiate(&client, &DeflateConfig::default());
        let own = if role == Role::Server {
            assert_eq!(server_params.server_max_window_bits, 9);
            server_params
        } else {
            assert_eq!(client_params.client_max_window_bits, 9);
            client_params
        };
        let mut conn = deflating(role, own);
        conn.send(DataKind::Text, &data).unwrap();
        conn.send(DataKind::Binary, &data).unwrap();
        let frames = parse_wire(&drain(&mut conn).sent);
        assert_eq!(frames.len(), 2);
        let mut oracle = Puff::new(9);
        for f in &frames {
            assert_eq!(f.rsv, RSV1);
            let inflated = oracle
                .message(&f.payload)
                .unwrap_or_else(|e| panic!("{role:?}: {e}"));
            assert!(inflated == data, "{role:?}: wrong content");
        }
    }
}

#[test]
fn window_of_8_bits_sends_uncompressed_and_still_inflates() {
    let message = chatter(5000, 8);
    for role in ROLES {
        let own_8 = |p: &mut DeflateParams| match role {
            Role::Server => p.server_max_window_bits = 8,
            Role::Client => p.client_max_window_bits = 8,
        };
        let mut conn = deflating(role, params(own_8));
        conn.send(DataKind::Text, &message).unwrap();
        conn.send_fragment(DataKind::Binary, b"ab", false).unwrap();
        conn.send_fragment(DataKind::Binary, b"cd", true).unwrap();
        assert_sent(
            &mut conn,
            &[
                from_self(role, OP_TEXT, true, &message),
                from_self(role, OP_BINARY, false, b"ab"),
                from_self(role, OP_CONT, true, b"cd"),
            ],
        );
        // A peer limited to 256 bytes of window may still compress; zlib's smallest (9-bit)
        // window never reaches further back than that.
        let peer_8 = |p: &mut DeflateParams| match role {
            Role::Server => p.client_max_window_bits = 8,
            Role::Client => p.server_max_window_bits = 8,
        };
        let payload = compress_message(&mut compressor(9), &message);
        assert_eq!(Puff::new(8).message(&payload).unwrap(), message);
        let mut conn = feed_both(
            || deflating(role, params(peer_8)),
            &compressed(role, OP_TEXT, true, &payload),
        );
        assert_events(
            &mut conn,
            &[Event::Message(Message::text(
                String::from_utf8(message.clone()).unwrap(),
            ))],
        );
    }
}

// ---------------------------------------------------------------------------------------------
// What is compressed
// ---------------------------------------------------------------------------------------------

#[test]
fn compression_threshold_leaves_short_messages_uncompressed() {
    let config = deflate_config(|c| c.compression_threshold = 64);
    for role in ROLES {
        let mut conn = deflate_connection(role, Config::default(), DeflateParams::new(), &config);
        conn.send(DataKind::Binary, &[b'a'; 63]).unwrap();
        conn.send(DataKind::Binary, &[b'a'; 64]).unwrap();
        conn.send(DataKind::Text, b"").unwrap();
        let frames = parse_wire(&drain(&mut conn).sent);
        assert_eq!(frames.len(), 3);
        assert_eq!(
            (frames[0].rsv, &frames[0].payload[..]),
            (0, &[b'a'; 63][..])
        );
        assert_eq!(frames[1].rsv, RSV1);
        assert!(frames[1].payload.len() < 64);
        assert_eq!(
            inflate_message(&mut Decompress::new(false), &frames[1].payload, 64).unwrap(),
            [b'a'; 64]
        );
        assert_eq!((frames[2].rsv, frames[2].payload.len()), (0, 0));
    }
}

#[test]
fn control_frames_are_never_compressed() {
    let compressible = [b'z'; 100];
    for role in ROLES {
        let mut conn = deflating(role, DeflateParams::new());
        conn.ping(&compressible).unwrap();
        conn.pong(&compressible).unwrap();
        // The automatic pong and the close echo too.
        conn.handle_bytes(&from_peer(role, OP_PING, true, &compressible));
        conn.handle_bytes(&from_peer(
            role,
            OP_CLOSE,
            true,
            &close_payload(1000, &[b'r'; 50]),
        ));
        let expected = [
            from_self(role, OP_PING, true, &compressible),
            from_self(role, OP_PONG, true, &compressible),
            from_self(role, OP_PONG, true, &compressible),
            // The echo carries the reason received, uncompressed.
            from_self(role, OP_CLOSE, true, &close_payload(1000, &[b'r'; 50])),
        ]
        .concat();
        assert_eq!(drain(&mut conn).sent, expected, "{role:?}");
        // Our own close frame, with a reason.
        let mut conn = deflating(role, DeflateParams::new());
        conn.close(CloseCode::NORMAL, &"r".repeat(100)).unwrap();
        assert_sent(
            &mut conn,
            &[from_self(
                role,
                OP_CLOSE,
                true,
                &close_payload(1000, "r".repeat(100).as_bytes()),
            )],
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Two deflating ends, every negotiated combination
// ---------------------------------------------------------------------------------------------

/// xorshift64*: deterministic noise without a dependency.
struct Noise(u64);

impl Noise {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    /// A message with words, noise and copies from near and far back (up to 20 KB back, past
    /// every small window).
    fn message(&mut self) -> (DataKind, Vec<u8>) {
        const WORDS: [&str; 6] = ["permessage", "deflate", "sockeye", "lz77", "window", " "];
        let kind = if self.below(2) == 0 {
            DataKind::Text
        } else {
            DataKind::Binary
        };
        let len = match self.below(4) {
            0 => self.below(16),
            1 => self.below(600),
            2 => self.below(5000),
            _ => 5000 + self.below(15_000),
        };
        let mut out = Vec::with_capacity(len + 256);
        while out.len() < len {
            match self.below(3) {
                0 => out.extend_from_slice(WORDS[self.below(WORDS.len())].as_bytes()),
                1 if !out.is_empty() => {
                    let start = self.below(out.len());
                    let run = 3 + self.below(200);
                    for i in 0..run {
                        out.push(out[start + i % (out.len() - start)]);
                    }
                }
                _ => {
                    for _ in 0..1 + self.below(40) {
                        let b = self.next() as u8;
                        out.push(if kind == DataKind::Text {
                            b'a' + b % 26
                        } else {
                            b
                        });
                    }
                }
            }
        }
        out.truncate(len);
        (kind, out)
    }
}

fn as_event(kind: DataKind, payload: &[u8]) -> Event {
    match kind {
        DataKind::Text => {
            Event::Message(Message::text(String::from_utf8(payload.to_vec()).unwrap()))
        }
        DataKind::Binary => binary(payload),
    }
}

/// Checks the compressed messages one end wrote: RSV1 exactly when its window allows
/// compression, and each payload inflates, with a decoder whose window is the agreed one and
/// that forgets it between messages when the sender promised to, to the message that was sent.
fn check_wire(wire: &[u8], sent: &[(DataKind, Vec<u8>)], bits: u8, no_takeover: bool, what: &str) {
    let messages = messages_on_wire(&parse_wire(wire));
    assert_eq!(messages.len(), sent.len(), "{what}");
    let mut oracle = Puff::new(bits);
    for ((opcode, rsv, payload), (kind, original)) in messages.iter().zip(sent) {
        let expected_op = if *kind == DataKind::Text {
            OP_TEXT
        } else {
            OP_BINARY
        };
        assert_eq!(*opcode, expected_op, "{what}");
        if bits == 8 {
            assert_eq!(
                *rsv, 0,
                "{what}: a 256-byte window cannot be compressed for"
            );
            assert_eq!(payload, original, "{what}");
            continue;
        }
        assert_eq!(*rsv, RSV1, "{what}");
        if no_takeover {
            oracle = Puff::new(bits);
        }
        let inflated = oracle
            .message(payload)
            .unwrap_or_else(|e| panic!("{what}: {e} (window {bits}, reset {no_takeover})"));
        assert!(inflated == *original, "{what}: wrong content");
    }
}

fn round_trip(client_config: &DeflateConfig, server_config: &DeflateConfig, seed: u64) {
    let what = format!(
        "client offer {:?}, server {:?}",
        client_config.offer(),
        server_config
    );
    let (client_params, server_params) = negotiate(client_config, server_config);
    // What the agreement must be, from RFC 7692 §7.1: requests are granted, windows are the
    // smaller of what either side asks for, and a server that does not allow context takeover
    // resets both contexts unasked (§7.1.1.1, §7.1.1.2).
    let bits = |a: Option<u8>, b: Option<u8>| a.unwrap_or(15).min(b.unwrap_or(15));
    let expected = (
        client_config.server_no_context_takeover
            || server_config.server_no_context_takeover
            || !server_config.server_context_takeover,
        client_config.client_no_context_takeover
            || server_config.client_no_context_takeover
            || !server_config.client_context_takeover,
        bits(
            client_config.server_max_window_bits,
            server_config.server_max_window_bits,
        ),
        bits(
            client_config.client_max_window_bits,
            server_config.client_max_window_bits,
        ),
    );
    for p in [client_params, server_params] {
        assert_eq!(
            (
                p.server_no_context_takeover,
                p.client_no_context_takeover,
                p.server_max_window_bits,
                p.client_max_window_bits
            ),
            expected,
            "{what}"
        );
    }

    let mut pair = Pair::with_deflate(Config::default(), client_config, server_config);
    let mut rng = Noise(seed);
    let mut from_client = Vec::new();
    let mut from_server = Vec::new();
    for round in 0..4 {
        for (conn, log) in [
            (&mut pair.client, &mut from_client),
            (&mut pair.server, &mut from_server),
        ] {
            for _ in 0..2 {
                let (kind, payload) = rng.message();
                if round % 2 == 1 && payload.len() > 3 {
                    let cut = [rng.below(payload.len()), rng.below(payload.len())];
                    let (a, b) = (cut[0].min(cut[1]), cut[0].max(cut[1]));
                    conn.send_fragment(kind, &payload[..a], false).unwrap();
                    conn.send_fragment(kind, &payload[a..b], false).unwrap();
                    conn.send_fragment(kind, &payload[b..], true).unwrap();
                } else {
                    conn.send(kind, &payload).unwrap();
                }
                log.push((kind, payload));
            }
        }
        pair.drive();
    }
    let expect = |log: &[(DataKind, Vec<u8>)]| -> Vec<Event> {
        log.iter().map(|(k, p)| as_event(*k, p)).collect()
    };
    assert!(
        pair.server_events == expect(&from_client),
        "{what}: server events"
    );
    assert!(
        pair.client_events == expect(&from_server),
        "{what}: client events"
    );
    check_wire(
        &pair.client_sent,
        &from_client,
        expected.3,
        expected.1,
        &format!("{what}, client's output"),
    );
    check_wire(
        &pair.server_sent,
        &from_server,
        expected.2,
        expected.0,
        &format!("{what}, server's output"),
    );

    // And the close handshake still works.
    pair.client.close(CloseCode::NORMAL, "done").unwrap();
    pair.drive();
    for events in [&pair.client_events, &pair.server_events] {
        match events.last() {
            Some(Event::Closed(c)) => {
                assert!(c.was_clean && c.code == CloseCode::NORMAL, "{what}: {c:?}");
            }
            other => panic!("{what}: not closed: {other:?}"),
        }
    }
    assert!(matches!(
        pair.server_events.last(),
        Some(Event::Closed(c)) if c.initiator == Initiator::Remote
    ));
}

#[test]
fn pair_round_trips_every_parameter_combination() {
    let windows = [None, Some(8), Some(9), Some(12), Some(15)];
    let mut seed = 0x9E37_79B9_7F4A_7C15;
    for server_no_context_takeover in [false, true] {
        for client_no_context_takeover in [false, true] {
            for server_max_window_bits in windows {
                for client_max_window_bits in windows {
                    let combo = deflate_config(|c| {
                        c.server_no_context_takeover = server_no_context_takeover;
                        c.client_no_context_takeover = client_no_context_takeover;
                        c.server_max_window_bits = server_max_window_bits;
                        c.client_max_window_bits = client_max_window_bits;
                    });
                    let allowing = |mut config: DeflateConfig| {
                        config.server_context_takeover = true;
                        config.client_context_takeover = true;
                        config
                    };
                    // Asked for by the client (of a server that allows context takeover, and of
                    // a default one, which resets both), then imposed by the server.
                    seed += 1;
                    round_trip(&combo, &allowing(DeflateConfig::default()), seed);
                    seed += 1;
                    round_trip(&combo, &DeflateConfig::default(), seed);
                    seed += 1;
                    round_trip(&DeflateConfig::default(), &allowing(combo), seed);
                }
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Known gaps
// ---------------------------------------------------------------------------------------------

#[test]
#[ignore = "known bug: a compressed message that ends inside a DEFLATE block is delivered \
            (with garbage) instead of failing the connection"]
fn compressed_message_ending_inside_a_block_fails_with_1007() {
    // RFC 7692 §7.2.1: a compressed payload ends where a sync flush ended, minus 00 00 ff ff,
    // so with them appended it ends on a block boundary. These do not: "Hello" cut after four
    // octets, and an empty payload (00 00 ff ff alone is a stored block cut short). Today the
    // first is delivered as "Helh" and the second as an empty message, and the inflater is left
    // mid-block, so the next valid message fails with 1007 instead.
    for role in ROLES {
        for payload in [&HELLO[..4], &[][..]] {
            let mut conn = feed_both(
                || deflating(role, DeflateParams::new()),
                &compressed(role, OP_BINARY, true, payload),
            );
            let (err, events) = assert_failing(&mut conn, CloseCode::INVALID_PAYLOAD);
            assert_eq!(err, ProtocolError::InvalidCompressedData, "{payload:02x?}");
            assert!(events.is_empty(), "{payload:02x?}: {events:?}");
        }
    }
}

/// Connections without context takeover compress and inflate with zlib state shared by the
/// thread. Here several server connections on one thread receive fragmented compressed
/// messages a few bytes at a time, interleaved with each other, and send fragmented messages
/// interleaved likewise: every message arrives whole at its peer.
#[test]
fn interleaved_fragmented_messages_share_the_thread_safely() {
    let (client_params, server_params) =
        negotiate(&DeflateConfig::default(), &DeflateConfig::default());
    assert!(server_params.server_no_context_takeover && server_params.client_no_context_takeover);
    let texts: Vec<Vec<u8>> = (0..4)
        .map(|i| format!("message of connection {i}, sent in three fragments; ").repeat(30 + i))
        .map(String::into_bytes)
        .collect();
    let mut pairs: Vec<(Connection, Connection)> = (0..4)
        .map(|_| {
            (
                connection(Role::Client, Config::default())
                    .with_deflate(client_params, &DeflateConfig::default()),
                connection(Role::Server, Config::default())
                    .with_deflate(server_params, &DeflateConfig::default()),
            )
        })
        .collect();
    for round in 0..2 {
        // Each client's wire bytes for a fragmented message (the client compresses alone).
        let wires: Vec<Vec<u8>> = pairs
            .iter_mut()
            .zip(&texts)
            .map(|((client, _), text)| {
                let third = text.len() / 3;
                client
                    .send_fragment(DataKind::Text, &text[..third], false)
                    .unwrap();
                client
                    .send_fragment(DataKind::Text, &text[third..2 * third], false)
                    .unwrap();
                client
                    .send_fragment(DataKind::Text, &text[2 * third..], true)
                    .unwrap();
                drain(client).sent
            })
            .collect();
        // Seven bytes to each server in turn.
        let mut offsets = vec![0; wires.len()];
        while offsets.iter().zip(&wires).any(|(o, w)| o < &w.len()) {
            for (i, ((_, server), wire)) in pairs.iter_mut().zip(&wires).enumerate() {
                let end = (offsets[i] + 7).min(wire.len());
                server.handle_bytes(&wire[offsets[i]..end]);
                offsets[i] = end;
            }
        }
        for ((_, server), text) in pairs.iter_mut().zip(&texts) {
            assert_eq!(
                drain(server).events,
                [Event::Message(Message::Text(
                    String::from_utf8(text.clone()).unwrap().into()
                ))],
                "round {round}"
            );
        }
        // The servers answer with fragments, interleaved with each other.
        for step in 0..3 {
            for ((_, server), text) in pairs.iter_mut().zip(&texts) {
                let third = text.len() / 3;
                let (piece, fin) = match step {
                    0 => (&text[..third], false),
                    1 => (&text[third..2 * third], false),
                    _ => (&text[2 * third..], true),
                };
                server.send_fragment(DataKind::Text, piece, fin).unwrap();
            }
        }
        for (client, server) in &mut pairs {
            let wire = drain(server).sent;
            assert_eq!(wire[0] & 0x40, 0x40, "compressed");
            client.handle_bytes(&wire);
        }
        for ((client, _), text) in pairs.iter_mut().zip(&texts) {
            assert_eq!(
                drain(client).events,
                [Event::Message(Message::Text(
                    String::from_utf8(text.clone()).unwrap().into()
                ))],
                "round {round}"
            );
        }
    }
}
