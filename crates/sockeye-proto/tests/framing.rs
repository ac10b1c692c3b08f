//! Base framing (RFC 6455 §5.1–§5.3, §5.7): length forms, masking, reserved bits and opcodes.

mod common;

use common::*;
use sockeye_proto::frame::{FrameHeader, OpCode};
use sockeye_proto::{
    CloseCode, Config, Connection, DataKind, Event, Message, ProtocolError, Role, State,
};

fn binary(payload: &[u8]) -> Event {
    Event::Message(Message::binary(payload.to_vec()))
}

#[test]
fn oracle_agrees_with_rfc_5_7_vectors() {
    // The frame builder is the oracle of every other test: check it against the RFC itself.
    assert_eq!(
        unmasked(OP_TEXT, true, b"Hello"),
        [0x81, 0x05, 0x48, 0x65, 0x6c, 0x6c, 0x6f]
    );
    assert_eq!(
        masked(OP_TEXT, true, b"Hello"),
        [0x81, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58]
    );
    assert_eq!(unmasked(OP_TEXT, false, b"Hel")[..2], [0x01, 0x03]);
    assert_eq!(unmasked(OP_CONT, true, b"lo")[..2], [0x80, 0x02]);
    assert_eq!(unmasked(OP_PING, true, b"Hello")[..2], [0x89, 0x05]);
    assert_eq!(
        masked(OP_PONG, true, b"Hello"),
        [0x8a, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58]
    );
    assert_eq!(
        unmasked(OP_BINARY, true, &[0; 256])[..4],
        [0x82, 0x7E, 0x01, 0x00]
    );
    assert_eq!(
        unmasked(OP_BINARY, true, &[0; 65536])[..10],
        [0x82, 0x7F, 0, 0, 0, 0, 0, 1, 0, 0]
    );
}

#[test]
fn rfc_5_7_examples_are_received() {
    let mut server = feed(
        Role::Server,
        &[
            0x81, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58,
        ],
    );
    assert_events(&mut server, &[Event::Message(Message::text("Hello"))]);
    assert_nothing_sent(&mut server);

    // Fragmented unmasked text "Hel" + "lo".
    let mut client = feed(
        Role::Client,
        &[0x01, 0x03, 0x48, 0x65, 0x6c, 0x80, 0x02, 0x6c, 0x6f],
    );
    assert_events(&mut client, &[Event::Message(Message::text("Hello"))]);
    assert_nothing_sent(&mut client);
}

#[test]
fn rfc_5_7_examples_are_sent() {
    let mut server = server();
    server.send(DataKind::Text, b"Hello").unwrap();
    assert_sent(&mut server, &[[0x81, 0x05, 0x48, 0x65, 0x6c, 0x6c, 0x6f]]);

    let mut client = client();
    client.send(DataKind::Text, b"Hello").unwrap();
    assert_sent(
        &mut client,
        &[[
            0x81, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58,
        ]],
    );
}

#[test]
fn every_length_form_is_received_by_both_roles() {
    for role in ROLES {
        for len in BOUNDARY_SIZES {
            let payload = pattern(len);
            let input = from_peer(role, OP_BINARY, true, &payload);
            let header_len = match len {
                0..=125 => 2,
                126..=65535 => 4,
                _ => 10,
            } + if role == Role::Server { 4 } else { 0 };
            assert_eq!(input.len(), header_len + len, "oracle length form");
            let mut conn = feed(role, &input);
            assert_events(&mut conn, &[binary(&payload)]);
            assert_nothing_sent(&mut conn);
            assert_eq!(conn.state(), State::Open);
        }
    }
}

#[test]
fn every_length_form_of_text_is_received() {
    for role in ROLES {
        for len in BOUNDARY_SIZES {
            // Multi-byte characters, padded with ASCII to the exact length.
            let mut text = "é€".repeat(len / 5);
            text.push_str(&"x".repeat(len - text.len()));
            assert_eq!(text.len(), len);
            let mut conn = feed(role, &from_peer(role, OP_TEXT, true, text.as_bytes()));
            assert_events(&mut conn, &[Event::Message(Message::text(text.as_str()))]);
            assert_nothing_sent(&mut conn);
        }
    }
}

#[test]
fn every_length_form_is_sent_by_both_roles() {
    for role in ROLES {
        for len in BOUNDARY_SIZES {
            let payload = pattern(len);
            let mut conn = connection(role, Config::default());
            conn.send(DataKind::Binary, &payload).unwrap();
            assert_eq!(
                conn.buffered_amount(),
                from_self(role, OP_BINARY, true, &payload).len()
            );
            assert_sent(&mut conn, &[from_self(role, OP_BINARY, true, &payload)]);
            assert_eq!(conn.buffered_amount(), 0);
        }
    }
}

#[test]
fn length_form_prefixes_are_exact() {
    let mut server = server();
    for (len, prefix) in [
        (0usize, &[0x82u8, 0x00][..]),
        (125, &[0x82, 0x7D]),
        (126, &[0x82, 0x7E, 0x00, 0x7E]),
        (65535, &[0x82, 0x7E, 0xFF, 0xFF]),
        (65536, &[0x82, 0x7F, 0, 0, 0, 0, 0, 0x01, 0x00, 0x00]),
    ] {
        server.send(DataKind::Binary, &vec![0xAB; len]).unwrap();
        let mut out = Vec::new();
        let _ = server.poll_transmit(&mut out);
        assert_eq!(&out[..prefix.len()], prefix, "len {len}");
        assert_eq!(out.len(), prefix.len() + len);
        assert!(out[prefix.len()..].iter().all(|&b| b == 0xAB));
    }
}

#[test]
fn client_masks_with_keys_from_its_mask_source_and_server_unmasks() {
    let mut next = 0u8;
    let keys = move || {
        next = next.wrapping_add(1);
        [next, 0x10 + next, 0x20 + next, 0xF0 | next]
    };
    let key = |n: u8| [n, 0x10 + n, 0x20 + n, 0xF0 | n];
    let mut client = Connection::new(Role::Client, Config::default(), Box::new(keys));
    client.send(DataKind::Text, "Grüße".as_bytes()).unwrap();
    client.send(DataKind::Binary, &pattern(300)).unwrap();
    client.ping(b"are you there").unwrap();
    client.send(DataKind::Binary, &[]).unwrap();
    let expected = [
        frame(OP_TEXT, true, 0, Some(key(1)), "Grüße".as_bytes()),
        frame(OP_BINARY, true, 0, Some(key(2)), &pattern(300)),
        frame(OP_PING, true, 0, Some(key(3)), b"are you there"),
        frame(OP_BINARY, true, 0, Some(key(4)), &[]),
    ];
    let wire: Vec<u8> = expected.concat();
    assert_sent(&mut client, &expected);

    let mut server = feed(Role::Server, &wire);
    assert_events(
        &mut server,
        &[
            Event::Message(Message::text("Grüße")),
            binary(&pattern(300)),
            Event::Message(Message::Ping(b"are you there".as_slice().into())),
            binary(&[]),
        ],
    );
    assert_sent(&mut server, &[unmasked(OP_PONG, true, b"are you there")]);
}

#[test]
fn server_never_masks() {
    let mut server = server();
    server.send(DataKind::Text, b"abc").unwrap();
    server.ping(b"p").unwrap();
    server.pong(b"q").unwrap();
    server.close(CloseCode::NORMAL, "").unwrap();
    let mut out = Vec::new();
    let _ = server.poll_transmit(&mut out);
    let frames = parse_wire(&out);
    assert_eq!(frames.len(), 4);
    assert!(frames.iter().all(|f| f.mask.is_none()));
}

#[test]
fn pair_exchanges_messages_both_ways() {
    let mut pair = Pair::new();
    pair.client.send(DataKind::Text, b"hello server").unwrap();
    pair.server
        .send(DataKind::Binary, &pattern(70_000))
        .unwrap();
    pair.client.send(DataKind::Binary, &pattern(200)).unwrap();
    pair.drive();
    assert_eq!(
        pair.server_events,
        [
            Event::Message(Message::text("hello server")),
            binary(&pattern(200))
        ]
    );
    assert_eq!(pair.client_events, [binary(&pattern(70_000))]);
    assert!(parse_wire(&pair.client_sent)
        .iter()
        .all(|f| f.mask == Some(KEY)));
    assert!(parse_wire(&pair.server_sent)
        .iter()
        .all(|f| f.mask.is_none()));
}

#[test]
fn several_frames_in_one_read_keep_their_order() {
    for role in ROLES {
        let input = [
            from_peer(role, OP_TEXT, true, b"one"),
            from_peer(role, OP_BINARY, true, b"two"),
            from_peer(role, OP_PONG, true, b"three"),
            from_peer(role, OP_TEXT, true, b""),
        ]
        .concat();
        let mut conn = feed(role, &input);
        assert_events(
            &mut conn,
            &[
                Event::Message(Message::text("one")),
                binary(b"two"),
                Event::Message(Message::Pong(b"three".as_slice().into())),
                Event::Message(Message::text("")),
            ],
        );
        assert_nothing_sent(&mut conn);
    }
}

#[test]
fn server_rejects_unmasked_client_frames() {
    for opcode in [OP_TEXT, OP_BINARY, OP_PING, OP_PONG, OP_CLOSE] {
        let mut server = feed(Role::Server, &unmasked(opcode, true, b""));
        let (err, events) = assert_failing(&mut server, CloseCode::PROTOCOL_ERROR);
        assert_eq!(err, ProtocolError::UnmaskedFrame, "opcode {opcode}");
        assert!(events.is_empty());
    }
}

#[test]
fn unmasked_frame_fails_before_its_payload_arrives() {
    // Only the header of a 1000-byte unmasked frame: the server decides at once.
    let header = raw_header(0x82, None, Len::Medium(1000));
    let mut server = feed(Role::Server, &header);
    let (err, _) = assert_failing(&mut server, CloseCode::PROTOCOL_ERROR);
    assert_eq!(err, ProtocolError::UnmaskedFrame);
}

#[test]
fn client_rejects_masked_server_frames() {
    for opcode in [OP_TEXT, OP_BINARY, OP_PING, OP_PONG, OP_CLOSE] {
        let mut client = feed(Role::Client, &masked(opcode, true, b""));
        let (err, events) = assert_failing(&mut client, CloseCode::PROTOCOL_ERROR);
        assert_eq!(err, ProtocolError::MaskedFrame, "opcode {opcode}");
        assert!(events.is_empty());
    }
}

#[test]
fn rsv_bits_fail_the_connection() {
    for rsv in 1..8u8 {
        for opcode in [OP_TEXT, OP_BINARY, OP_PING] {
            assert_both_roles_fail(
                |role| frame(opcode, true, rsv, mask_for(role), b"abc"),
                CloseCode::PROTOCOL_ERROR,
                &ProtocolError::ReservedBits,
            );
        }
    }
}

#[test]
fn rsv_bit_on_a_continuation_fails() {
    for role in ROLES {
        let input = [
            from_peer(role, OP_TEXT, false, b"a"),
            frame(OP_CONT, true, 0b100, mask_for(role), b"b"),
        ]
        .concat();
        let mut conn = feed(role, &input);
        let (err, events) = assert_failing(&mut conn, CloseCode::PROTOCOL_ERROR);
        assert_eq!(err, ProtocolError::ReservedBits);
        assert!(events.is_empty(), "partial message must not be delivered");
    }
}

#[test]
fn reserved_opcodes_fail_the_connection() {
    for opcode in (3..=7).chain(11..=15) {
        for fin in [true, false] {
            assert_both_roles_fail(
                |role| frame(opcode, fin, 0, mask_for(role), b"xyz"),
                CloseCode::PROTOCOL_ERROR,
                &ProtocolError::ReservedOpCode(opcode),
            );
        }
    }
}

#[test]
fn reserved_opcode_is_rejected_from_the_first_two_bytes() {
    for role in ROLES {
        // A header that would continue with a 64-bit length: only two bytes arrive.
        let mut conn = feed(role, &[0x83, 0xFF]);
        let (err, _) = assert_failing(&mut conn, CloseCode::PROTOCOL_ERROR);
        assert_eq!(err, ProtocolError::ReservedOpCode(3));
    }
}

#[test]
fn reserved_opcode_inside_a_fragmented_message_fails() {
    for role in ROLES {
        let input = [
            from_peer(role, OP_BINARY, false, b"a"),
            frame(0xB, true, 0, mask_for(role), b""),
        ]
        .concat();
        let mut conn = feed(role, &input);
        let (err, events) = assert_failing(&mut conn, CloseCode::PROTOCOL_ERROR);
        assert_eq!(err, ProtocolError::ReservedOpCode(0xB));
        assert!(events.is_empty());
    }
}

#[test]
fn non_minimal_lengths_fail_the_connection() {
    let cases = [
        Len::Medium(0),
        Len::Medium(5),
        Len::Medium(125),
        Len::Long(0),
        Len::Long(125),
        Len::Long(126),
        Len::Long(65535),
    ];
    for len in cases {
        for opcode in [OP_BINARY, OP_PING] {
            assert_both_roles_fail(
                |role| raw_header(0x80 | opcode, mask_for(role), len),
                CloseCode::PROTOCOL_ERROR,
                &ProtocolError::NonMinimalLength,
            );
        }
    }
}

#[test]
fn minimal_lengths_at_the_boundaries_are_accepted() {
    // The smallest value of each extended form is minimal and must not be rejected.
    for (len, form) in [(126usize, Len::Medium(126)), (65536, Len::Long(65536))] {
        for role in ROLES {
            let mut input = raw_header(0x82, mask_for(role), form);
            let payload = pattern(len);
            let mut body = payload.clone();
            if let Some(key) = mask_for(role) {
                body.iter_mut()
                    .enumerate()
                    .for_each(|(i, b)| *b ^= key[i % 4]);
            }
            input.extend_from_slice(&body);
            let mut conn = feed(role, &input);
            assert_events(&mut conn, &[binary(&payload)]);
        }
    }
}

#[test]
fn sixty_four_bit_length_with_high_bit_fails() {
    for len in [1u64 << 63, u64::MAX, (1 << 63) | 200] {
        assert_both_roles_fail(
            |role| raw_header(0x82, mask_for(role), Len::Long(len)),
            CloseCode::PROTOCOL_ERROR,
            &ProtocolError::LengthHighBit,
        );
    }
}

#[test]
fn input_after_failure_is_ignored() {
    let input = [
        unmasked(OP_TEXT, true, b"x"),
        masked(OP_TEXT, true, b"later"),
        masked(OP_PING, true, b"later"),
    ]
    .concat();
    let mut server = feed(Role::Server, &input);
    let (err, events) = assert_failing(&mut server, CloseCode::PROTOCOL_ERROR);
    assert_eq!(err, ProtocolError::UnmaskedFrame);
    assert!(events.is_empty(), "nothing after the bad frame is read");
}

#[test]
fn frame_header_encode_agrees_with_the_oracle() {
    // The crate's own encoder and the hand-written one must match on every header shape used.
    for len in BOUNDARY_SIZES {
        for mask in [None, Some(KEY)] {
            for (op, code) in [(OpCode::Binary, OP_BINARY), (OpCode::Pong, OP_PONG)] {
                let mut header = FrameHeader::new(op, len as u64);
                header.mask = mask;
                header.fin = len % 2 == 0;
                header.rsv2 = true;
                let mut out = Vec::new();
                header.encode(&mut out);
                let oracle = frame(code, len % 2 == 0, 0b010, mask, &vec![0; len]);
                assert_eq!(out, oracle[..out.len()], "len {len} mask {mask:?}");
                assert_eq!(out.len(), oracle.len() - len);
            }
        }
    }
}
