//! Fragmentation (RFC 6455 §5.4): reassembly, interleaved control frames, sequencing errors and
//! `send_fragment`.

mod common;

use common::*;
use sockeye_proto::{
    CloseCode, CloseFrame, Config, DataKind, Event, Initiator, Message, ProtocolError, Role,
    SendError, State,
};

fn text(s: &str) -> Event {
    Event::Message(Message::text(s))
}

fn binary(payload: &[u8]) -> Event {
    Event::Message(Message::binary(payload.to_vec()))
}

fn ping(payload: &[u8]) -> Event {
    Event::Message(Message::Ping(payload.to_vec().into()))
}

#[test]
fn text_in_three_fragments_is_one_message() {
    for role in ROLES {
        let input = [
            from_peer(role, OP_TEXT, false, b"Hel"),
            from_peer(role, OP_CONT, false, b"lo, "),
            from_peer(role, OP_CONT, true, b"world"),
        ]
        .concat();
        let mut conn = feed(role, &input);
        assert_events(&mut conn, &[text("Hello, world")]);
        assert_nothing_sent(&mut conn);
    }
}

#[test]
fn partial_message_is_not_delivered_early() {
    for role in ROLES {
        let input = [
            from_peer(role, OP_BINARY, false, b"ab"),
            from_peer(role, OP_CONT, false, b"cd"),
        ]
        .concat();
        let mut conn = feed(role, &input);
        assert_events(&mut conn, &[]);
        conn.handle_bytes(&from_peer(role, OP_CONT, true, b"ef"));
        assert_events(&mut conn, &[binary(b"abcdef")]);
    }
}

#[test]
fn empty_fragments_are_allowed_anywhere() {
    for role in ROLES {
        let input = [
            from_peer(role, OP_BINARY, false, b""),
            from_peer(role, OP_CONT, false, b""),
            from_peer(role, OP_CONT, false, &pattern(300)),
            from_peer(role, OP_CONT, false, b""),
            from_peer(role, OP_CONT, true, b""),
            from_peer(role, OP_TEXT, false, b""),
            from_peer(role, OP_CONT, true, b""),
        ]
        .concat();
        let mut conn = feed(role, &input);
        assert_events(&mut conn, &[binary(&pattern(300)), text("")]);
    }
}

#[test]
fn many_fragments_of_every_length_form() {
    for role in ROLES {
        let mut input = from_peer(role, OP_BINARY, false, &pattern(125));
        input.extend(from_peer(role, OP_CONT, false, &pattern(126)));
        input.extend(from_peer(role, OP_CONT, false, &pattern(65536)));
        input.extend(from_peer(role, OP_CONT, true, &pattern(1)));
        let expected = [pattern(125), pattern(126), pattern(65536), pattern(1)].concat();
        let mut conn = feed(role, &input);
        assert_events(&mut conn, &[binary(&expected)]);
    }
}

#[test]
fn ping_between_fragments_is_answered_and_message_stays_intact() {
    for role in ROLES {
        let input = [
            from_peer(role, OP_TEXT, false, "fragmented ".as_bytes()),
            from_peer(role, OP_PING, true, b"ping in the middle"),
            from_peer(role, OP_CONT, false, "mes".as_bytes()),
            from_peer(role, OP_PONG, true, b"pong too"),
            from_peer(role, OP_PING, true, b""),
            from_peer(role, OP_CONT, true, "sage ✓".as_bytes()),
        ]
        .concat();
        let mut conn = feed(role, &input);
        assert_events(
            &mut conn,
            &[
                ping(b"ping in the middle"),
                Event::Message(Message::Pong(b"pong too".as_slice().into())),
                ping(b""),
                text("fragmented message ✓"),
            ],
        );
        assert_sent(
            &mut conn,
            &[
                from_self(role, OP_PONG, true, b"ping in the middle"),
                from_self(role, OP_PONG, true, b""),
            ],
        );
    }
}

#[test]
fn pong_is_sent_before_the_message_completes() {
    let mut server = feed(
        Role::Server,
        &[
            masked(OP_BINARY, false, b"a"),
            masked(OP_PING, true, b"now"),
        ]
        .concat(),
    );
    assert_sent(&mut server, &[unmasked(OP_PONG, true, b"now")]);
    assert_events(&mut server, &[ping(b"now")]);
}

#[test]
fn close_between_fragments_ends_the_connection_without_the_partial_message() {
    let input = [
        masked(OP_TEXT, false, b"never "),
        masked(OP_CLOSE, true, &close_payload(1001, b"bye")),
        masked(OP_CONT, true, b"delivered"),
    ]
    .concat();
    let mut server = feed(Role::Server, &input);
    assert_sent_then_shutdown(
        &mut server,
        &[unmasked(OP_CLOSE, true, &close_payload(1001, b"bye"))],
    );
    assert_events(
        &mut server,
        &[
            Event::Message(Message::Close(Some(CloseFrame {
                code: CloseCode::GOING_AWAY,
                reason: "bye".into(),
            }))),
            closed(CloseCode::GOING_AWAY, "bye", Initiator::Remote, true),
        ],
    );
}

#[test]
fn continuation_without_a_start_fails() {
    for fin in [true, false] {
        assert_both_roles_fail(
            |role| from_peer(role, OP_CONT, fin, b"orphan"),
            CloseCode::PROTOCOL_ERROR,
            &ProtocolError::UnexpectedContinuation,
        );
    }
}

#[test]
fn continuation_after_a_finished_message_fails() {
    for role in ROLES {
        let input = [
            from_peer(role, OP_TEXT, false, b"a"),
            from_peer(role, OP_CONT, true, b"b"),
            from_peer(role, OP_CONT, true, b"c"),
        ]
        .concat();
        let mut conn = feed(role, &input);
        let (err, events) = assert_failing(&mut conn, CloseCode::PROTOCOL_ERROR);
        assert_eq!(err, ProtocolError::UnexpectedContinuation);
        assert_eq!(events, [text("ab")]);
    }
}

#[test]
fn continuation_after_an_unfragmented_message_fails() {
    for role in ROLES {
        let input = [
            from_peer(role, OP_BINARY, true, b"whole"),
            from_peer(role, OP_CONT, true, b""),
        ]
        .concat();
        let mut conn = feed(role, &input);
        let (err, events) = assert_failing(&mut conn, CloseCode::PROTOCOL_ERROR);
        assert_eq!(err, ProtocolError::UnexpectedContinuation);
        assert_eq!(events, [binary(b"whole")]);
    }
}

#[test]
fn new_message_inside_a_fragmented_message_fails() {
    for (first, second) in [
        (OP_TEXT, OP_TEXT),
        (OP_TEXT, OP_BINARY),
        (OP_BINARY, OP_TEXT),
        (OP_BINARY, OP_BINARY),
    ] {
        for fin in [true, false] {
            assert_both_roles_fail(
                |role| {
                    [
                        from_peer(role, first, false, b"start"),
                        from_peer(role, OP_CONT, false, b"more"),
                        from_peer(role, second, fin, b"intruder"),
                    ]
                    .concat()
                },
                CloseCode::PROTOCOL_ERROR,
                &ProtocolError::ExpectedContinuation,
            );
        }
    }
}

#[test]
fn new_message_is_rejected_from_its_header() {
    // Only the header of the intruding frame arrives.
    let input = [
        masked(OP_TEXT, false, b"start"),
        raw_header(0x82, Some(KEY), Len::Short(100)),
    ]
    .concat();
    let mut server = feed(Role::Server, &input);
    let (err, _) = assert_failing(&mut server, CloseCode::PROTOCOL_ERROR);
    assert_eq!(err, ProtocolError::ExpectedContinuation);
}

#[test]
fn send_fragment_sets_opcodes_and_fin_bits() {
    for role in ROLES {
        for kind in [DataKind::Text, DataKind::Binary] {
            let op = if kind == DataKind::Text {
                OP_TEXT
            } else {
                OP_BINARY
            };
            let mut conn = connection(role, Config::default());
            conn.send_fragment(kind, b"one", false).unwrap();
            conn.send_fragment(kind, b"two", false).unwrap();
            conn.send_fragment(kind, b"", false).unwrap();
            conn.send_fragment(kind, b"three", true).unwrap();
            assert_sent(
                &mut conn,
                &[
                    from_self(role, op, false, b"one"),
                    from_self(role, OP_CONT, false, b"two"),
                    from_self(role, OP_CONT, false, b""),
                    from_self(role, OP_CONT, true, b"three"),
                ],
            );
            // A finished message lets a new one start with its own opcode.
            conn.send_fragment(DataKind::Binary, b"next", true).unwrap();
            conn.send(DataKind::Text, b"whole").unwrap();
            assert_sent(
                &mut conn,
                &[
                    from_self(role, OP_BINARY, true, b"next"),
                    from_self(role, OP_TEXT, true, b"whole"),
                ],
            );
        }
    }
}

#[test]
fn control_frames_may_be_sent_between_fragments() {
    let mut client = client();
    client.send_fragment(DataKind::Text, b"a", false).unwrap();
    client.ping(b"p").unwrap();
    client.pong(b"q").unwrap();
    client.send_fragment(DataKind::Text, b"b", true).unwrap();
    let expected = [
        masked(OP_TEXT, false, b"a"),
        masked(OP_PING, true, b"p"),
        masked(OP_PONG, true, b"q"),
        masked(OP_CONT, true, b"b"),
    ];
    assert_sent(&mut client, &expected);

    let mut server = feed(Role::Server, &expected.concat());
    assert_events(
        &mut server,
        &[
            ping(b"p"),
            Event::Message(Message::Pong(b"q".as_slice().into())),
            text("ab"),
        ],
    );
}

#[test]
fn send_fragment_misuse_is_an_error_and_sends_nothing() {
    for role in ROLES {
        let mut conn = connection(role, Config::default());
        conn.send_fragment(DataKind::Text, b"start", false).unwrap();
        assert_sent(&mut conn, &[from_self(role, OP_TEXT, false, b"start")]);

        assert_eq!(
            conn.send(DataKind::Text, b"whole"),
            Err(SendError::FragmentInProgress)
        );
        assert_eq!(
            conn.send(DataKind::Binary, b"whole"),
            Err(SendError::FragmentInProgress)
        );
        assert_eq!(
            conn.send_fragment(DataKind::Binary, b"other kind", false),
            Err(SendError::FragmentInProgress)
        );
        assert_eq!(
            conn.send_fragment(DataKind::Binary, b"other kind", true),
            Err(SendError::FragmentInProgress)
        );
        assert_nothing_sent(&mut conn);
        assert_eq!(conn.state(), State::Open);

        // The message in progress is unharmed by the rejected calls.
        conn.send_fragment(DataKind::Text, b" end", true).unwrap();
        assert_sent(&mut conn, &[from_self(role, OP_CONT, true, b" end")]);
    }
}

#[test]
fn send_fragment_after_close_is_refused() {
    let mut server = server();
    server.send_fragment(DataKind::Binary, b"a", false).unwrap();
    server.close(CloseCode::NORMAL, "").unwrap();
    assert_sent(
        &mut server,
        &[
            unmasked(OP_BINARY, false, b"a"),
            unmasked(OP_CLOSE, true, &close_payload(1000, b"")),
        ],
    );
    assert_eq!(
        server.send_fragment(DataKind::Binary, b"b", true),
        Err(SendError::Closed)
    );
    assert_eq!(
        server.send_fragment(DataKind::Text, b"c", false),
        Err(SendError::Closed)
    );
    assert_nothing_sent(&mut server);
}

#[test]
fn pair_carries_fragmented_messages_with_interleaved_pings() {
    let mut pair = Pair::new();
    pair.client
        .send_fragment(DataKind::Text, "κόσ".as_bytes(), false)
        .unwrap();
    pair.client.ping(b"1").unwrap();
    pair.client
        .send_fragment(DataKind::Text, "με".as_bytes(), true)
        .unwrap();
    pair.server
        .send_fragment(DataKind::Binary, &pattern(10), false)
        .unwrap();
    pair.server.ping(b"2").unwrap();
    pair.server
        .send_fragment(DataKind::Binary, &pattern(5), true)
        .unwrap();
    pair.drive();
    let pong = |p: &[u8]| Event::Message(Message::Pong(p.to_vec().into()));
    assert_eq!(pair.server_events, [ping(b"1"), text("κόσμε"), pong(b"2")]);
    assert_eq!(
        pair.client_events,
        [
            ping(b"2"),
            binary(&[pattern(10), pattern(5)].concat()),
            pong(b"1"),
        ]
    );
}
