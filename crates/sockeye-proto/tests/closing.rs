//! The closing handshake (RFC 6455 §5.5.1, §7): close codes, echoes, who closes TCP, timeouts,
//! abnormal closure.

mod common;

use common::*;
use sockeye_proto::{
    CloseCode, CloseFrame, Config, Connection, DataKind, Event, Initiator, Message, ProtocolError,
    Role, SendError, State,
};

const VALID_CODES: [u16; 14] = [
    1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012, 1013, 1014, 3000, 4999,
];
const INVALID_CODES: [u16; 10] = [0, 999, 1004, 1005, 1006, 1015, 1016, 2999, 5000, 65535];

fn close_message(code: u16, reason: &str) -> Event {
    Event::Message(Message::Close(Some(CloseFrame {
        code: CloseCode(code),
        reason: reason.into(),
    })))
}

fn server_after_close() -> Connection {
    let mut conn = server();
    conn.close(CloseCode::NORMAL, "done").unwrap();
    assert_sent(
        &mut conn,
        &[unmasked(OP_CLOSE, true, &close_payload(1000, b"done"))],
    );
    conn
}

fn client_after_close() -> Connection {
    let mut conn = client();
    conn.close(CloseCode::GOING_AWAY, "leaving").unwrap();
    assert_sent(
        &mut conn,
        &[masked(OP_CLOSE, true, &close_payload(1001, b"leaving"))],
    );
    conn
}

#[test]
fn valid_close_codes_are_echoed_by_the_server() {
    for code in VALID_CODES {
        let input = masked(OP_CLOSE, true, &close_payload(code, "why ✓".as_bytes()));
        let mut server = feed(Role::Server, &input);
        assert_eq!(server.state(), State::Closed);
        assert_sent_then_shutdown(
            &mut server,
            &[unmasked(
                OP_CLOSE,
                true,
                &close_payload(code, "why ✓".as_bytes()),
            )],
        );
        assert_events(
            &mut server,
            &[
                close_message(code, "why ✓"),
                closed(CloseCode(code), "why ✓", Initiator::Remote, true),
            ],
        );
    }
}

#[test]
fn valid_close_codes_are_echoed_by_the_client() {
    for code in VALID_CODES {
        let input = unmasked(OP_CLOSE, true, &close_payload(code, b"r"));
        let mut client = feed(Role::Client, &input);
        assert_sent(
            &mut client,
            &[masked(OP_CLOSE, true, &close_payload(code, b"r"))],
        );
        // The client waits for the server to close TCP (§7.1.1).
        assert_events(&mut client, &[close_message(code, "r")]);
        assert_eq!(client.state(), State::Closing);
        assert!(client.close_expected());
        client.handle_eof();
        assert_events(
            &mut client,
            &[closed(CloseCode(code), "r", Initiator::Remote, true)],
        );
        assert_sent_then_shutdown::<&[u8]>(&mut client, &[]);
        assert_eq!(client.state(), State::Closed);
    }
}

/// The close frame sent in answer carries the code and the reason received, byte for byte, in
/// both roles: the longest reason (123 bytes), multi-byte UTF-8 up to that limit, none.
#[test]
fn the_echoed_close_carries_the_code_and_the_reason() {
    // 122 bytes of 2-byte characters plus one of 1 byte: 123, the limit (§5.5: 125 - 2).
    let longest_mixed = format!("{}x", "é".repeat(61));
    let reasons = [
        String::new(),
        "bye".to_owned(),
        "ciao ✓ — 再见 👋".to_owned(),
        "r".repeat(123),
        longest_mixed,
        "👋".repeat(30),
    ];
    let codes = [4321, 1000, 1001, 1011, 3000, 4999];
    for role in ROLES {
        for (&code, reason) in codes.iter().zip(&reasons) {
            assert!(reason.len() <= 123, "{reason:?}");
            let payload = close_payload(code, reason.as_bytes());
            let mut conn = feed(role, &from_peer(role, OP_CLOSE, true, &payload));
            let echo = [from_self(role, OP_CLOSE, true, &payload)];
            match role {
                // The server closes TCP first (§7.1.1).
                Role::Server => assert_sent_then_shutdown(&mut conn, &echo),
                Role::Client => assert_sent(&mut conn, &echo),
            }
            assert_eq!(conn.poll_event(), Some(close_message(code, reason)));
        }
    }
}

#[test]
fn invalid_close_codes_fail_with_protocol_error() {
    for code in INVALID_CODES {
        for reason in [&b""[..], b"reason"] {
            assert_both_roles_fail(
                |role| from_peer(role, OP_CLOSE, true, &close_payload(code, reason)),
                CloseCode::PROTOCOL_ERROR,
                &ProtocolError::InvalidCloseCode(code),
            );
        }
    }
}

#[test]
fn one_byte_close_payload_fails() {
    for byte in [0u8, 0x03, 0xE8] {
        assert_both_roles_fail(
            |role| from_peer(role, OP_CLOSE, true, &[byte]),
            CloseCode::PROTOCOL_ERROR,
            &ProtocolError::InvalidCloseFrame,
        );
    }
}

#[test]
fn empty_close_is_echoed_as_empty_close() {
    let mut server = feed(Role::Server, &masked(OP_CLOSE, true, b""));
    assert_sent_then_shutdown(&mut server, &[unmasked(OP_CLOSE, true, b"")]);
    assert_events(
        &mut server,
        &[
            Event::Message(Message::Close(None)),
            closed(CloseCode::NO_STATUS_RCVD, "", Initiator::Remote, true),
        ],
    );

    let mut client = feed(Role::Client, &unmasked(OP_CLOSE, true, b""));
    assert_sent(&mut client, &[masked(OP_CLOSE, true, b"")]);
    assert_events(&mut client, &[Event::Message(Message::Close(None))]);
    client.handle_eof();
    assert_events(
        &mut client,
        &[closed(
            CloseCode::NO_STATUS_RCVD,
            "",
            Initiator::Remote,
            true,
        )],
    );
}

#[test]
fn server_closes_first_client_waits_for_eof() {
    // Server: Closed (clean) right away, then its output ends with Shutdown.
    let mut server = feed(
        Role::Server,
        &masked(OP_CLOSE, true, &close_payload(1000, b"")),
    );
    let mut out = Vec::new();
    assert_eq!(
        server.poll_transmit(&mut out),
        sockeye_proto::Transmit::Bytes
    );
    assert_eq!(out, unmasked(OP_CLOSE, true, &close_payload(1000, b"")));
    assert_eq!(
        server.poll_transmit(&mut out),
        sockeye_proto::Transmit::Shutdown
    );
    assert_eq!(
        server.poll_transmit(&mut out),
        sockeye_proto::Transmit::Idle
    );
    assert!(!server.close_expected());

    // Client: echoes, but neither Closed nor Shutdown until end of stream.
    let mut client = feed(
        Role::Client,
        &unmasked(OP_CLOSE, true, &close_payload(1000, b"")),
    );
    let mut out = Vec::new();
    assert_eq!(
        client.poll_transmit(&mut out),
        sockeye_proto::Transmit::Bytes
    );
    assert_eq!(
        client.poll_transmit(&mut out),
        sockeye_proto::Transmit::Idle
    );
    assert_events(&mut client, &[close_message(1000, "")]);
    assert_eq!(
        client.poll_transmit(&mut out),
        sockeye_proto::Transmit::Idle
    );
    client.handle_eof();
    assert_eq!(
        client.poll_transmit(&mut out),
        sockeye_proto::Transmit::Shutdown
    );
    assert_events(
        &mut client,
        &[closed(CloseCode::NORMAL, "", Initiator::Remote, true)],
    );
}

#[test]
fn client_timeout_after_receiving_close_is_still_clean() {
    let mut client = feed(
        Role::Client,
        &unmasked(OP_CLOSE, true, &close_payload(4000, b"x")),
    );
    assert_sent(
        &mut client,
        &[masked(OP_CLOSE, true, &close_payload(4000, b"x"))],
    );
    assert_events(&mut client, &[close_message(4000, "x")]);
    client.handle_timeout();
    assert_events(
        &mut client,
        &[closed(CloseCode(4000), "x", Initiator::Remote, true)],
    );
    assert_sent_then_shutdown::<&[u8]>(&mut client, &[]);
}

#[test]
fn server_initiated_close_completes_on_the_echo() {
    let echo = masked(OP_CLOSE, true, &close_payload(1000, b"ok"));
    let mut server = feed_both(server_after_close, &echo);
    assert_eq!(server.state(), State::Closed);
    assert_events(
        &mut server,
        &[
            close_message(1000, "ok"),
            closed(CloseCode::NORMAL, "ok", Initiator::Application, true),
        ],
    );
    // The server had already sent its close: nothing but Shutdown.
    assert_sent_then_shutdown::<&[u8]>(&mut server, &[]);
}

#[test]
fn client_initiated_close_completes_on_echo_and_eof() {
    let echo = unmasked(OP_CLOSE, true, &close_payload(1001, b""));
    let mut client = feed_both(client_after_close, &echo);
    assert_eq!(client.state(), State::Closing);
    assert!(client.close_expected());
    assert_events(&mut client, &[close_message(1001, "")]);
    assert_nothing_sent(&mut client);
    client.handle_eof();
    assert_events(
        &mut client,
        &[closed(
            CloseCode::GOING_AWAY,
            "",
            Initiator::Application,
            true,
        )],
    );
    assert_sent_then_shutdown::<&[u8]>(&mut client, &[]);
}

#[test]
fn state_moves_open_closing_closed() {
    for role in ROLES {
        let conn = connection(role, Config::default());
        assert_eq!(conn.state(), State::Open);
        assert!(!conn.close_expected());
    }
    let server = server_after_close();
    assert_eq!(server.state(), State::Closing);
    assert!(server.close_expected());
    let server = feed_both(server_after_close, &masked(OP_CLOSE, true, b""));
    assert_eq!(server.state(), State::Closed);
    assert!(!server.close_expected());

    let client = feed_both(client_after_close, &unmasked(OP_CLOSE, true, b""));
    assert_eq!(
        client.state(),
        State::Closing,
        "until the server closes TCP"
    );
    assert!(client.close_expected());
}

#[test]
fn nothing_may_be_sent_after_close() {
    for role in ROLES {
        let mut conn = connection(role, Config::default());
        conn.send_fragment(DataKind::Text, b"unfinished", false)
            .unwrap();
        conn.close(CloseCode::NORMAL, "").unwrap();
        assert_sent(
            &mut conn,
            &[
                from_self(role, OP_TEXT, false, b"unfinished"),
                from_self(role, OP_CLOSE, true, &close_payload(1000, b"")),
            ],
        );
        assert_eq!(conn.send(DataKind::Text, b"x"), Err(SendError::Closed));
        assert_eq!(conn.send(DataKind::Binary, b"x"), Err(SendError::Closed));
        assert_eq!(
            conn.send_fragment(DataKind::Text, b"x", true),
            Err(SendError::Closed)
        );
        assert_eq!(conn.ping(b""), Err(SendError::Closed));
        assert_eq!(conn.pong(b""), Err(SendError::Closed));
        assert_eq!(conn.close(CloseCode::NORMAL, ""), Err(SendError::Closed));
        assert_nothing_sent(&mut conn);
    }
}

#[test]
fn nothing_may_be_sent_after_echoing_a_close() {
    let mut client = feed(Role::Client, &unmasked(OP_CLOSE, true, b""));
    assert_sent(&mut client, &[masked(OP_CLOSE, true, b"")]);
    assert_eq!(client.send(DataKind::Text, b"x"), Err(SendError::Closed));
    assert_eq!(client.close(CloseCode::NORMAL, ""), Err(SendError::Closed));
    assert_nothing_sent(&mut client);
}

#[test]
fn nothing_may_be_sent_after_closed() {
    let mut server = feed(Role::Server, &masked(OP_CLOSE, true, b""));
    let _ = drain(&mut server);
    assert_eq!(server.send(DataKind::Binary, b"x"), Err(SendError::Closed));
    assert_eq!(server.ping(b"x"), Err(SendError::Closed));
    assert_nothing_sent(&mut server);
}

#[test]
fn close_validates_code_and_reason_and_sends_nothing_on_error() {
    for role in ROLES {
        let mut conn = connection(role, Config::default());
        for code in INVALID_CODES {
            assert_eq!(
                conn.close(CloseCode(code), ""),
                Err(SendError::InvalidCloseCode(code))
            );
        }
        let long = "x".repeat(124);
        assert_eq!(
            conn.close(CloseCode::NORMAL, &long),
            Err(SendError::CloseReasonTooLong)
        );
        // 62 two-byte characters: 124 bytes, though only 62 characters.
        assert_eq!(
            conn.close(CloseCode::NORMAL, &"é".repeat(62)),
            Err(SendError::CloseReasonTooLong)
        );
        assert_nothing_sent(&mut conn);
        assert_eq!(conn.state(), State::Open);
        assert!(!conn.close_expected());
        assert_events(&mut conn, &[]);

        // The longest reason is accepted and sent whole.
        let reason = "y".repeat(123);
        conn.close(CloseCode(4999), &reason).unwrap();
        assert_sent(
            &mut conn,
            &[from_self(
                role,
                OP_CLOSE,
                true,
                &close_payload(4999, reason.as_bytes()),
            )],
        );
    }
}

#[test]
fn close_accepts_every_sendable_code() {
    for code in VALID_CODES {
        let mut conn = server();
        conn.close(CloseCode(code), "").unwrap();
        assert_sent(
            &mut conn,
            &[unmasked(OP_CLOSE, true, &close_payload(code, b""))],
        );
    }
}

#[test]
fn close_timeout_without_answer_is_abnormal() {
    for make in [server_after_close as fn() -> Connection, client_after_close] {
        let mut conn = make();
        // The timer only acts while a close is expected; before that it does nothing.
        assert!(conn.close_expected());
        conn.handle_timeout();
        assert_eq!(conn.state(), State::Closed);
        assert_events(
            &mut conn,
            &[closed(CloseCode::ABNORMAL, "", Initiator::Library, false)],
        );
        assert_sent_then_shutdown::<&[u8]>(&mut conn, &[]);
        conn.handle_timeout();
        conn.handle_eof();
        assert_eq!(drain(&mut conn), Drained::default());
    }
}

#[test]
fn timeout_without_close_does_nothing() {
    for role in ROLES {
        let mut conn = connection(role, Config::default());
        conn.handle_timeout();
        assert_eq!(conn.state(), State::Open);
        assert_eq!(drain(&mut conn), Drained::default());
        conn.send(DataKind::Text, b"still open").unwrap();
        assert_sent(&mut conn, &[from_self(role, OP_TEXT, true, b"still open")]);
    }
}

#[test]
fn eof_mid_message_is_abnormal() {
    for role in ROLES {
        let full = from_peer(role, OP_TEXT, true, b"cut short");
        let cuts = [
            // Mid header, mid payload, between fragments.
            full[..1].to_vec(),
            full[..full.len() - 3].to_vec(),
            from_peer(role, OP_TEXT, false, b"first half"),
        ];
        for input in cuts {
            let mut conn = feed(role, &input);
            assert_events(&mut conn, &[]);
            conn.handle_eof();
            assert_events(
                &mut conn,
                &[closed(CloseCode::ABNORMAL, "", Initiator::Remote, false)],
            );
            // No close frame on a dead transport: just shut down.
            assert_sent_then_shutdown::<&[u8]>(&mut conn, &[]);
            assert_eq!(conn.state(), State::Closed);
        }
    }
}

#[test]
fn eof_without_close_handshake_is_abnormal() {
    for role in ROLES {
        let mut conn = feed(role, &from_peer(role, OP_BINARY, true, b"complete"));
        conn.handle_eof();
        assert_events(
            &mut conn,
            &[
                Event::Message(Message::binary(&b"complete"[..])),
                closed(CloseCode::ABNORMAL, "", Initiator::Remote, false),
            ],
        );
        assert_sent_then_shutdown::<&[u8]>(&mut conn, &[]);
    }
}

#[test]
fn eof_after_our_close_without_echo_is_abnormal() {
    let mut client = client_after_close();
    client.handle_eof();
    assert_events(
        &mut client,
        &[closed(CloseCode::ABNORMAL, "", Initiator::Remote, false)],
    );
    assert_sent_then_shutdown::<&[u8]>(&mut client, &[]);
}

#[test]
fn data_after_our_close_is_delivered_until_the_peers_close() {
    let input = [
        masked(OP_TEXT, true, b"late text"),
        masked(OP_BINARY, false, b"late "),
        masked(OP_PING, true, b"p"),
        masked(OP_CONT, true, b"binary"),
        masked(OP_CLOSE, true, &close_payload(1000, b"")),
    ]
    .concat();
    let mut server = feed_both(server_after_close, &input);
    let Drained {
        sent,
        shutdown,
        events,
    } = drain(&mut server);
    assert!(sent.is_empty(), "no pong, no second close after our close");
    assert!(shutdown);
    // RFC 6455 §1.4: only data after the peer's close frame is discarded; the peer may have
    // sent these before it saw ours.
    assert_eq!(
        events,
        [
            Event::Message(Message::text("late text")),
            Event::Message(Message::Ping(b"p".to_vec().into())),
            Event::Message(Message::binary(b"late binary".to_vec())),
            close_message(1000, ""),
            closed(CloseCode::NORMAL, "", Initiator::Application, true),
        ]
    );
}

#[test]
fn client_receives_data_after_its_close_too() {
    let input = [
        unmasked(OP_TEXT, true, b"late"),
        unmasked(OP_CLOSE, true, &close_payload(1000, b"")),
        unmasked(OP_TEXT, true, b"after the close: discarded"),
    ]
    .concat();
    let mut client = feed_both(client_after_close, &input);
    assert_events(
        &mut client,
        &[
            Event::Message(Message::text("late")),
            close_message(1000, ""),
        ],
    );
    client.handle_eof();
    assert_events(
        &mut client,
        &[closed(CloseCode::NORMAL, "", Initiator::Application, true)],
    );
}

#[test]
fn violation_after_our_close_fails_without_a_second_close_frame() {
    let input = masked(OP_CLOSE, true, &close_payload(1005, b""));
    let mut server = feed_both(server_after_close, &input);
    let (err, events) = assert_failing_after_close_sent(&mut server, CloseCode::PROTOCOL_ERROR);
    assert_eq!(err, ProtocolError::InvalidCloseCode(1005));
    assert!(events.is_empty());

    let input = frame(OP_BINARY, true, 0b001, None, b"");
    let mut client = feed_both(client_after_close, &input);
    let (err, _) = assert_failing_after_close_sent(&mut client, CloseCode::PROTOCOL_ERROR);
    assert_eq!(err, ProtocolError::ReservedBits);
}

#[test]
fn input_after_a_close_frame_is_ignored() {
    let input = [
        masked(OP_CLOSE, true, &close_payload(1000, b"")),
        masked(OP_TEXT, true, b"ignored"),
        masked(OP_PING, true, b"ignored"),
        // Even garbage is not looked at.
        vec![0xFF; 20],
    ]
    .concat();
    let mut server = feed(Role::Server, &input);
    assert_sent_then_shutdown(
        &mut server,
        &[unmasked(OP_CLOSE, true, &close_payload(1000, b""))],
    );
    assert_events(
        &mut server,
        &[
            close_message(1000, ""),
            closed(CloseCode::NORMAL, "", Initiator::Remote, true),
        ],
    );
}

#[test]
fn pair_client_initiated_close_is_clean_on_both_ends() {
    let mut pair = Pair::new();
    pair.client.close(CloseCode::NORMAL, "bye").unwrap();
    pair.drive();
    assert_eq!(
        pair.server_events,
        [
            close_message(1000, "bye"),
            closed(CloseCode::NORMAL, "bye", Initiator::Remote, true)
        ]
    );
    // The server echoes the code and the reason.
    assert_eq!(
        pair.client_events,
        [
            close_message(1000, "bye"),
            closed(CloseCode::NORMAL, "bye", Initiator::Application, true)
        ]
    );
    assert!(pair.client_shutdown && pair.server_shutdown);
    assert_eq!(pair.client.state(), State::Closed);
    assert_eq!(pair.server.state(), State::Closed);
}

#[test]
fn pair_server_initiated_close_is_clean_on_both_ends() {
    let mut pair = Pair::new();
    pair.server.send(DataKind::Text, b"last words").unwrap();
    pair.server.close(CloseCode(3000), "restart").unwrap();
    pair.drive();
    assert_eq!(
        pair.client_events,
        [
            Event::Message(Message::text("last words")),
            close_message(3000, "restart"),
            closed(CloseCode(3000), "restart", Initiator::Remote, true)
        ]
    );
    assert_eq!(
        pair.server_events,
        [
            close_message(3000, "restart"),
            closed(CloseCode(3000), "restart", Initiator::Application, true)
        ]
    );
}

#[test]
fn pair_simultaneous_close_is_clean_on_both_ends() {
    let mut pair = Pair::new();
    pair.client.close(CloseCode::NORMAL, "c").unwrap();
    pair.server.close(CloseCode::GOING_AWAY, "s").unwrap();
    pair.drive();
    assert_eq!(
        pair.server_events.last(),
        Some(&closed(
            CloseCode::NORMAL,
            "c",
            Initiator::Application,
            true
        ))
    );
    assert_eq!(
        pair.client_events.last(),
        Some(&closed(
            CloseCode::GOING_AWAY,
            "s",
            Initiator::Application,
            true
        ))
    );
    // Each sent exactly one close frame.
    for sent in [&pair.client_sent, &pair.server_sent] {
        assert_eq!(
            parse_wire(sent)
                .iter()
                .filter(|f| f.opcode == OP_CLOSE)
                .count(),
            1
        );
    }
}

#[test]
fn reply_to_a_message_goes_out_before_a_later_failure() {
    // A message and a violation in the same read: the failure is acted on once the message is
    // taken, so an answer the application sends to the message precedes the close frame.
    let input = [
        masked(OP_TEXT, true, b"question"),
        unmasked(OP_TEXT, true, b"not masked"),
    ]
    .concat();
    let mut server = feed(Role::Server, &input);
    assert_eq!(
        server.poll_event(),
        Some(Event::Message(Message::text("question")))
    );
    server.send(DataKind::Text, b"answer").unwrap();
    let (err, events) = assert_failing(&mut server, CloseCode::PROTOCOL_ERROR);
    assert_eq!(err, ProtocolError::UnmaskedFrame);
    assert!(events.is_empty());
    // assert_failing checked the close frame is last; the answer is before it.
    let mut again = feed(Role::Server, &input);
    let _ = again.poll_event();
    again.send(DataKind::Text, b"answer").unwrap();
    let sent = drain(&mut again).sent;
    let frames = parse_wire(&sent);
    assert_eq!(frames.len(), 2);
    assert_eq!(
        (frames[0].opcode, &frames[0].payload[..]),
        (OP_TEXT, &b"answer"[..])
    );
    assert_eq!(frames[1].opcode, OP_CLOSE);
}
