//! Control frames (RFC 6455 §5.5, §5.5.2, §5.5.3): ping/pong, size and fragmentation rules.

mod common;

use common::*;
use sockeye_proto::{CloseCode, Config, DataKind, Event, Message, ProtocolError, SendError};

fn ping(payload: &[u8]) -> Event {
    Event::Message(Message::Ping(payload.to_vec().into()))
}

fn pong(payload: &[u8]) -> Event {
    Event::Message(Message::Pong(payload.to_vec().into()))
}

#[test]
fn ping_is_answered_with_a_pong_of_the_same_payload() {
    for role in ROLES {
        for len in [0, 1, 4, 5, 124, 125] {
            let payload = pattern(len);
            let mut conn = feed(role, &from_peer(role, OP_PING, true, &payload));
            assert_sent(&mut conn, &[from_self(role, OP_PONG, true, &payload)]);
            assert_events(&mut conn, &[ping(&payload)]);
        }
    }
}

#[test]
fn each_ping_gets_its_own_pong_in_order() {
    for role in ROLES {
        let input = [
            from_peer(role, OP_PING, true, b"1"),
            from_peer(role, OP_TEXT, true, b"data"),
            from_peer(role, OP_PING, true, b"22"),
            from_peer(role, OP_PING, true, b"333"),
        ]
        .concat();
        let mut conn = feed(role, &input);
        assert_sent(
            &mut conn,
            &[
                from_self(role, OP_PONG, true, b"1"),
                from_self(role, OP_PONG, true, b"22"),
                from_self(role, OP_PONG, true, b"333"),
            ],
        );
        assert_events(
            &mut conn,
            &[
                ping(b"1"),
                Event::Message(Message::text("data")),
                ping(b"22"),
                ping(b"333"),
            ],
        );
    }
}

#[test]
fn received_pong_is_reported_and_not_answered() {
    for role in ROLES {
        for payload in [&b""[..], b"heartbeat", &pattern(125)] {
            let mut conn = feed(role, &from_peer(role, OP_PONG, true, payload));
            assert_events(&mut conn, &[pong(payload)]);
            assert_nothing_sent(&mut conn);
        }
    }
}

#[test]
fn control_frames_over_125_bytes_fail() {
    for opcode in [OP_PING, OP_PONG, OP_CLOSE] {
        for len in [126usize, 65535, 65536] {
            assert_both_roles_fail(
                |role| {
                    let mut payload = pattern(len);
                    if opcode == OP_CLOSE {
                        payload[..2].copy_from_slice(&1000u16.to_be_bytes());
                    }
                    from_peer(role, opcode, true, &payload)
                },
                CloseCode::PROTOCOL_ERROR,
                &ProtocolError::ControlFrameTooBig,
            );
        }
    }
}

#[test]
fn oversized_control_frame_fails_from_its_header() {
    for role in ROLES {
        // Declares 2^40 bytes; only the header arrives.
        let header = raw_header(0x89, mask_for(role), Len::Long(1 << 40));
        let mut conn = feed(role, &header);
        let (err, _) = assert_failing(&mut conn, CloseCode::PROTOCOL_ERROR);
        assert_eq!(err, ProtocolError::ControlFrameTooBig);
    }
}

#[test]
fn fragmented_control_frames_fail() {
    for opcode in [OP_PING, OP_PONG, OP_CLOSE] {
        for payload in [&b""[..], &[0x03, 0xE8]] {
            assert_both_roles_fail(
                |role| from_peer(role, opcode, false, payload),
                CloseCode::PROTOCOL_ERROR,
                &ProtocolError::FragmentedControlFrame,
            );
        }
    }
}

#[test]
fn fragmented_ping_inside_a_fragmented_message_fails() {
    for role in ROLES {
        let input = [
            from_peer(role, OP_TEXT, false, b"a"),
            from_peer(role, OP_PING, false, b"p"),
            from_peer(role, OP_CONT, true, b"p"),
        ]
        .concat();
        let mut conn = feed(role, &input);
        let (err, events) = assert_failing(&mut conn, CloseCode::PROTOCOL_ERROR);
        assert_eq!(err, ProtocolError::FragmentedControlFrame);
        assert!(events.is_empty());
    }
}

#[test]
fn ping_and_pong_api_send_exact_frames() {
    for role in ROLES {
        let mut conn = connection(role, Config::default());
        conn.ping(b"").unwrap();
        conn.ping(&pattern(125)).unwrap();
        conn.pong(b"unsolicited").unwrap();
        assert_sent(
            &mut conn,
            &[
                from_self(role, OP_PING, true, b""),
                from_self(role, OP_PING, true, &pattern(125)),
                from_self(role, OP_PONG, true, b"unsolicited"),
            ],
        );
    }
}

#[test]
fn ping_and_pong_over_125_bytes_are_refused_and_send_nothing() {
    for role in ROLES {
        let mut conn = connection(role, Config::default());
        assert_eq!(conn.ping(&pattern(126)), Err(SendError::ControlFrameTooBig));
        assert_eq!(conn.pong(&pattern(126)), Err(SendError::ControlFrameTooBig));
        assert_eq!(
            conn.ping(&pattern(70_000)),
            Err(SendError::ControlFrameTooBig)
        );
        assert_nothing_sent(&mut conn);
        assert_events(&mut conn, &[]);
        // Still usable.
        conn.send(DataKind::Binary, b"ok").unwrap();
        assert_sent(&mut conn, &[from_self(role, OP_BINARY, true, b"ok")]);
    }
}

#[test]
fn pair_ping_round_trip() {
    let mut pair = Pair::new();
    pair.client.ping(b"from client").unwrap();
    pair.server.ping(b"from server").unwrap();
    pair.drive();
    assert_eq!(
        pair.server_events,
        [ping(b"from client"), pong(b"from server")]
    );
    assert_eq!(
        pair.client_events,
        [ping(b"from server"), pong(b"from client")]
    );
}

#[test]
fn ping_after_our_close_is_not_answered() {
    for role in ROLES {
        let closing = || {
            let mut conn = connection(role, Config::default());
            conn.close(CloseCode::NORMAL, "").unwrap();
            assert_sent(
                &mut conn,
                &[from_self(role, OP_CLOSE, true, &close_payload(1000, b""))],
            );
            conn
        };
        let mut conn = feed_both(closing, &from_peer(role, OP_PING, true, b"late"));
        // §5.5.1: no frame may follow our close frame, not even a pong.
        assert_nothing_sent(&mut conn);
        assert_events(
            &mut conn,
            &[Event::Message(Message::Ping(b"late".as_slice().into()))],
        );
        assert_eq!(conn.ping(b"x"), Err(SendError::Closed));
        assert_eq!(conn.pong(b"x"), Err(SendError::Closed));
        assert_nothing_sent(&mut conn);
    }
}
