//! UTF-8 handling (RFC 6455 §5.6, §8.1): text messages and close reasons, incremental and fail-fast
//! validation (Autobahn 6.x).

mod common;

use common::*;
use sockeye_proto::{CloseCode, Event, Message, ProtocolError, Role, State};

fn text(s: &str) -> Event {
    Event::Message(Message::text(s))
}

/// Invalid sequences, each split into the bytes that are still a valid prefix and the byte that
/// proves the sequence invalid.
const INVALID: [(&[u8], u8); 11] = [
    (b"", 0xFF),
    (b"", 0xFE),
    (b"", 0xF5),
    (b"", 0xC0),     // overlong 2-byte lead
    (b"", 0xC1),     // overlong 2-byte lead
    (b"", 0x80),     // lone continuation byte
    (b"\xE0", 0x80), // overlong 3-byte
    (b"\xF0", 0x80), // overlong 4-byte
    (b"\xED", 0xA0), // UTF-16 surrogate
    (b"\xF4", 0x90), // above U+10FFFF
    (b"\xE2\x82", 0x41),
];

#[test]
fn valid_text_is_delivered() {
    let samples = [
        "",
        "ascii",
        "κόσμε",
        "\u{0}\u{7F}\u{80}\u{7FF}\u{800}\u{D7FF}\u{E000}\u{FFFD}\u{FFFF}\u{10000}\u{10FFFF}",
        "Hello-µ@ßöäüàá-UTF-8!!",
    ];
    for role in ROLES {
        for s in samples {
            let mut conn = feed(role, &from_peer(role, OP_TEXT, true, s.as_bytes()));
            assert_events(&mut conn, &[text(s)]);
            assert_nothing_sent(&mut conn);
        }
    }
}

#[test]
fn invalid_text_fails_fast_before_the_frame_ends() {
    for role in ROLES {
        for (prefix, bad) in INVALID {
            let valid = "κόσμε".as_bytes();
            let mut payload = [valid, prefix, &[bad]].concat();
            let deciding = payload.len();
            payload.extend_from_slice(b" and the rest of a long frame that never arrives");
            let wire = from_peer(role, OP_TEXT, true, &payload);
            let header = wire.len() - payload.len();
            let before = &wire[..header + deciding - 1];
            let through = &wire[..header + deciding];

            // Everything before the deciding byte is a valid prefix: nothing happens.
            let mut conn = feed(role, before);
            assert_eq!(
                drain(&mut conn),
                Drained::default(),
                "{prefix:02x?} {bad:#x}"
            );
            assert_eq!(conn.state(), State::Open);

            // The deciding byte fails the connection though the frame is far from complete.
            let mut conn = feed(role, through);
            let (err, events) = assert_failing(&mut conn, CloseCode::INVALID_PAYLOAD);
            assert_eq!(err, ProtocolError::InvalidUtf8, "{prefix:02x?} {bad:#x}");
            assert!(events.is_empty());
        }
    }
}

#[test]
fn invalid_text_in_a_later_fragment_fails_fast() {
    for role in ROLES {
        // The first fragment ends inside "€" (E2 82 AC); the next one breaks it.
        let first = from_peer(role, OP_TEXT, false, b"price: \xE2\x82");
        let second = from_peer(role, OP_CONT, true, b"A and more text");
        let header = second.len() - 15;
        let input = [&first[..], &second[..header + 1]].concat();
        let mut conn = feed(role, &input);
        let (err, _) = assert_failing(&mut conn, CloseCode::INVALID_PAYLOAD);
        assert_eq!(err, ProtocolError::InvalidUtf8);

        // One byte less: still waiting.
        let mut conn = feed(role, &input[..input.len() - 1]);
        assert_eq!(drain(&mut conn), Drained::default());
    }
}

#[test]
fn invalid_text_after_a_valid_message_fails() {
    for role in ROLES {
        let input = [
            from_peer(role, OP_TEXT, true, "ok ✓".as_bytes()),
            from_peer(role, OP_TEXT, true, b"bad \xFF"),
        ]
        .concat();
        let mut conn = feed(role, &input);
        let (err, events) = assert_failing(&mut conn, CloseCode::INVALID_PAYLOAD);
        assert_eq!(err, ProtocolError::InvalidUtf8);
        assert_eq!(events, [text("ok ✓")]);
    }
}

#[test]
fn text_ending_inside_a_code_point_fails_at_fin() {
    for role in ROLES {
        for tail in [&b"\xE2"[..], b"\xE2\x82", b"\xF0\x9D\x84", b"\xC3"] {
            let payload = [b"abc", tail].concat();
            let mut conn = feed(role, &from_peer(role, OP_TEXT, true, &payload));
            let (err, events) = assert_failing(&mut conn, CloseCode::INVALID_PAYLOAD);
            assert_eq!(err, ProtocolError::InvalidUtf8);
            assert!(events.is_empty());

            // The same bytes with FIN clear are a valid, unfinished message...
            let first = from_peer(role, OP_TEXT, false, &payload);
            let mut conn = feed(role, &first);
            assert_eq!(drain(&mut conn), Drained::default());
            // ...until an empty final fragment ends it.
            let input = [first, from_peer(role, OP_CONT, true, b"")].concat();
            let mut conn = feed(role, &input);
            let (err, _) = assert_failing(&mut conn, CloseCode::INVALID_PAYLOAD);
            assert_eq!(err, ProtocolError::InvalidUtf8);
        }
    }
}

#[test]
fn code_points_split_across_fragments_are_accepted() {
    let s = "a€𝄞ü";
    let bytes = s.as_bytes();
    for role in ROLES {
        // Two fragments, split at every byte.
        for split in 0..=bytes.len() {
            let input = [
                from_peer(role, OP_TEXT, false, &bytes[..split]),
                from_peer(role, OP_CONT, true, &bytes[split..]),
            ]
            .concat();
            let mut conn = feed(role, &input);
            assert_events(&mut conn, &[text(s)]);
            assert_nothing_sent(&mut conn);
        }
        // One byte per fragment, with a ping inside the 4-byte code point.
        let mut input = Vec::new();
        for (i, b) in bytes.iter().enumerate() {
            let op = if i == 0 { OP_TEXT } else { OP_CONT };
            input.extend(from_peer(role, op, i + 1 == bytes.len(), &[*b]));
            if i == 5 {
                input.extend(from_peer(role, OP_PING, true, b"mid"));
            }
        }
        let mut conn = feed(role, &input);
        assert_events(
            &mut conn,
            &[
                Event::Message(Message::Ping(b"mid".as_slice().into())),
                text(s),
            ],
        );
        assert_sent(&mut conn, &[from_self(role, OP_PONG, true, b"mid")]);
    }
}

#[test]
fn binary_messages_are_not_checked() {
    for role in ROLES {
        let payload = b"\xFF\xFE\xC0\x80\xED\xA0\x80";
        let mut conn = feed(role, &from_peer(role, OP_BINARY, true, payload));
        assert_events(&mut conn, &[Event::Message(Message::binary(&payload[..]))]);
        assert_nothing_sent(&mut conn);
    }
}

#[test]
fn invalid_close_reason_fails_with_1007() {
    for reason in [
        &b"\xFF"[..],
        b"ok\xC0\x80",
        b"\xED\xA0\x80",
        b"ends inside \xE2\x82",
        b"\xF4\x90\x80\x80",
    ] {
        assert_both_roles_fail(
            |role| from_peer(role, OP_CLOSE, true, &close_payload(1000, reason)),
            CloseCode::INVALID_PAYLOAD,
            &ProtocolError::InvalidUtf8,
        );
    }
}

#[test]
fn valid_close_reason_is_reported() {
    let reason = "déconnexion — 再见 🦀";
    let mut server = feed(
        Role::Server,
        &masked(OP_CLOSE, true, &close_payload(1000, reason.as_bytes())),
    );
    let events = drain(&mut server).events;
    let Some(Event::Closed(closed)) = events.last() else {
        panic!("{events:?}");
    };
    assert_eq!(closed.reason, reason);
    assert!(closed.was_clean);
}
