//! Limits (RFC 6455 §10.4, close code 1009): frame and message size caps, decided from headers.

mod common;

use common::*;
use sockeye_proto::{
    CloseCode, Config, Connection, Event, Message, ProtocolError, Role, DEFAULT_MAX_MESSAGE_SIZE,
};

fn limited(role: Role, frame: Option<usize>, message: Option<usize>) -> impl Fn() -> Connection {
    move || {
        connection(
            role,
            Config::default()
                .max_frame_size(frame)
                .max_message_size(message),
        )
    }
}

fn binary(payload: &[u8]) -> Event {
    Event::Message(Message::binary(payload.to_vec()))
}

#[test]
fn config_defaults_and_builders() {
    let config = Config::default();
    assert_eq!(config.max_frame_size, Some(16 << 20));
    assert_eq!(config.max_message_size, Some(16 << 20));
    assert_eq!(DEFAULT_MAX_MESSAGE_SIZE, 16 * 1024 * 1024);
    let config = config.max_frame_size(Some(10)).max_message_size(None);
    assert_eq!(config.max_frame_size, Some(10));
    assert_eq!(config.max_message_size, None);
    let conn = connection(Role::Server, config.clone());
    assert_eq!(conn.config(), &config);
}

#[test]
fn frame_at_the_limit_is_accepted_one_over_fails() {
    for role in ROLES {
        let make = limited(role, Some(1000), None);
        let mut conn = feed_both(&make, &from_peer(role, OP_BINARY, true, &pattern(1000)));
        assert_events(&mut conn, &[binary(&pattern(1000))]);

        let mut conn = feed_both(&make, &from_peer(role, OP_BINARY, true, &pattern(1001)));
        let (err, events) = assert_failing(&mut conn, CloseCode::MESSAGE_TOO_BIG);
        assert_eq!(err, ProtocolError::FrameTooBig { limit: 1000 });
        assert!(events.is_empty());
    }
}

#[test]
fn frame_limit_applies_to_every_fragment() {
    for role in ROLES {
        let make = limited(role, Some(100), Some(10_000));
        let ok = [
            from_peer(role, OP_TEXT, false, &[b'a'; 100]),
            from_peer(role, OP_CONT, true, &[b'b'; 100]),
        ]
        .concat();
        let mut conn = feed_both(&make, &ok);
        assert_events(
            &mut conn,
            &[Event::Message(Message::text(
                [&"a".repeat(100)[..], &"b".repeat(100)].concat(),
            ))],
        );

        let bad = [
            from_peer(role, OP_TEXT, false, &[b'a'; 100]),
            from_peer(role, OP_CONT, true, &[b'b'; 101]),
        ]
        .concat();
        let mut conn = feed_both(&make, &bad);
        let (err, _) = assert_failing(&mut conn, CloseCode::MESSAGE_TOO_BIG);
        assert_eq!(err, ProtocolError::FrameTooBig { limit: 100 });
    }
}

#[test]
fn message_at_the_limit_is_accepted_one_over_fails() {
    for role in ROLES {
        let make = limited(role, None, Some(500));
        let mut conn = feed_both(&make, &from_peer(role, OP_TEXT, true, &[b'x'; 500]));
        assert_events(&mut conn, &[Event::Message(Message::text("x".repeat(500)))]);

        let mut conn = feed_both(&make, &from_peer(role, OP_TEXT, true, &[b'x'; 501]));
        let (err, _) = assert_failing(&mut conn, CloseCode::MESSAGE_TOO_BIG);
        assert_eq!(err, ProtocolError::MessageTooBig { limit: 500 });
    }
}

#[test]
fn oversized_frame_fails_from_its_header_alone() {
    for role in ROLES {
        let make = limited(role, Some(4096), Some(8192));
        for (len, err) in [
            (
                Len::Medium(4097),
                ProtocolError::FrameTooBig { limit: 4096 },
            ),
            (
                Len::Long(1 << 20),
                ProtocolError::FrameTooBig { limit: 4096 },
            ),
        ] {
            let header = raw_header(0x82, mask_for(role), len);
            let mut conn = feed_both(&make, &header);
            let (got, _) = assert_failing(&mut conn, CloseCode::MESSAGE_TOO_BIG);
            assert_eq!(got, err);
        }
        // Message limit alone, from the header too.
        let make = limited(role, None, Some(8192));
        let header = raw_header(0x81, mask_for(role), Len::Medium(8193));
        let mut conn = feed_both(&make, &header);
        let (got, _) = assert_failing(&mut conn, CloseCode::MESSAGE_TOO_BIG);
        assert_eq!(got, ProtocolError::MessageTooBig { limit: 8192 });
    }
}

#[test]
fn header_declaring_2_pow_62_bytes_fails_with_default_limits() {
    for role in ROLES {
        for len in [
            1u64 << 62,
            (1 << 63) - 1,
            DEFAULT_MAX_MESSAGE_SIZE as u64 + 1,
        ] {
            for b0 in [0x82u8, 0x81, 0x02] {
                let header = raw_header(b0, mask_for(role), Len::Long(len));
                let mut conn = feed(role, &header);
                let (err, _) = assert_failing(&mut conn, CloseCode::MESSAGE_TOO_BIG);
                assert!(
                    matches!(
                        err,
                        ProtocolError::FrameTooBig { .. } | ProtocolError::MessageTooBig { .. }
                    ),
                    "{err:?}"
                );
            }
        }
    }
}

#[test]
fn fragments_together_over_the_message_limit_fail() {
    for role in ROLES {
        let make = limited(role, Some(1000), Some(1000));
        // 400 + 400 + 200 = exactly 1000: accepted.
        let ok = [
            from_peer(role, OP_BINARY, false, &pattern(400)),
            from_peer(role, OP_CONT, false, &pattern(400)),
            from_peer(role, OP_CONT, true, &pattern(200)),
        ]
        .concat();
        let mut conn = feed_both(&make, &ok);
        assert_events(
            &mut conn,
            &[binary(&[pattern(400), pattern(400), pattern(200)].concat())],
        );

        // 400 + 400 + 201: the third header already tips it over.
        let bad = [
            from_peer(role, OP_BINARY, false, &pattern(400)),
            from_peer(role, OP_CONT, false, &pattern(400)),
            raw_header(0x80, mask_for(role), Len::Medium(201)),
        ]
        .concat();
        let mut conn = feed_both(&make, &bad);
        let (err, events) = assert_failing(&mut conn, CloseCode::MESSAGE_TOO_BIG);
        assert_eq!(err, ProtocolError::MessageTooBig { limit: 1000 });
        assert!(events.is_empty());
    }
}

#[test]
fn many_small_fragments_over_the_message_limit_fail() {
    let make = limited(Role::Server, None, Some(1000));
    let mut input = masked(OP_TEXT, false, b"");
    for _ in 0..101 {
        input.extend(masked(OP_CONT, false, b"0123456789"));
    }
    let mut conn = feed_both(&make, &input);
    let (err, _) = assert_failing(&mut conn, CloseCode::MESSAGE_TOO_BIG);
    assert_eq!(err, ProtocolError::MessageTooBig { limit: 1000 });
}

#[test]
fn the_limit_is_per_message() {
    for role in ROLES {
        let make = limited(role, None, Some(300));
        let input = [
            from_peer(role, OP_BINARY, false, &pattern(200)),
            from_peer(role, OP_CONT, true, &pattern(100)),
            from_peer(role, OP_BINARY, true, &pattern(300)),
            from_peer(role, OP_TEXT, false, &[b'a'; 150]),
            from_peer(role, OP_CONT, true, &[b'b'; 150]),
        ]
        .concat();
        let mut conn = feed_both(&make, &input);
        assert_events(
            &mut conn,
            &[
                binary(&[pattern(200), pattern(100)].concat()),
                binary(&pattern(300)),
                Event::Message(Message::text("a".repeat(150) + &"b".repeat(150))),
            ],
        );
    }
}

#[test]
fn control_frames_do_not_count_toward_the_message() {
    for role in ROLES {
        let make = limited(role, Some(100), Some(100));
        let input = [
            from_peer(role, OP_BINARY, false, &pattern(100)),
            from_peer(role, OP_PING, true, &pattern(125)),
            from_peer(role, OP_PONG, true, &pattern(125)),
            from_peer(role, OP_CONT, true, b""),
        ]
        .concat();
        let mut conn = feed_both(&make, &input);
        assert_sent(&mut conn, &[from_self(role, OP_PONG, true, &pattern(125))]);
        assert_events(
            &mut conn,
            &[
                Event::Message(Message::Ping(pattern(125).into())),
                Event::Message(Message::Pong(pattern(125).into())),
                binary(&pattern(100)),
            ],
        );
    }
}

#[test]
fn no_limits_accept_large_messages() {
    for role in ROLES {
        let make = limited(role, None, None);
        let payload = pattern(200_000);
        let input = [
            from_peer(role, OP_BINARY, false, &payload[..70_000]),
            from_peer(role, OP_CONT, true, &payload[70_000..]),
        ]
        .concat();
        let mut conn = feed_both(&make, &input);
        assert_events(&mut conn, &[binary(&payload)]);
    }
}

#[test]
fn zero_limits_allow_only_empty_messages() {
    for role in ROLES {
        let make = limited(role, Some(0), Some(0));
        let mut conn = feed_both(&make, &from_peer(role, OP_TEXT, true, b""));
        assert_events(&mut conn, &[Event::Message(Message::text(""))]);
        let mut conn = feed_both(&make, &from_peer(role, OP_TEXT, true, b"x"));
        let (err, _) = assert_failing(&mut conn, CloseCode::MESSAGE_TOO_BIG);
        assert_eq!(err, ProtocolError::FrameTooBig { limit: 0 });
    }
}

#[test]
fn queued_messages_stay_within_the_message_limit_whatever_one_read_holds() {
    for role in ROLES {
        let mut conn = limited(role, Some(1000), Some(1000))();
        let messages: Vec<Vec<u8>> = (0..100u8).map(|i| vec![i; 500]).collect();
        let input: Vec<u8> = messages
            .iter()
            .flat_map(|m| from_peer(role, OP_BINARY, true, m))
            .collect();
        conn.handle_bytes(&input);
        conn.handle_eof();
        let mut received = Vec::new();
        let mut closed = None;
        let mut most_pending = 0;
        loop {
            // What is parsed but not taken never exceeds the limit by more than one message.
            let pending = conn.pending_events();
            most_pending = most_pending.max(pending);
            match conn.poll_event() {
                Some(Event::Message(Message::Binary(b))) => received.push(b.to_vec()),
                Some(Event::Closed(c)) => {
                    closed = Some(c);
                    break;
                }
                Some(other) => panic!("unexpected {other:?}"),
                None => break,
            }
        }
        assert_eq!(received, messages, "every message, in order");
        assert!(most_pending <= 2, "{most_pending} messages parsed ahead");
        let closed = closed.expect("end of stream reported after the stashed input");
        assert_eq!(closed.code, CloseCode::ABNORMAL);
    }
}
