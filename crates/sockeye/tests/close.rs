//! Every way a connection ends: both close handshakes, timeouts, dropped TCP, protocol
//! violations, and misuse of `close`/`send` around them.

mod common;

use std::time::{Duration, Instant};

use common::*;
use futures_util::StreamExt as _;
use sockeye::{
    CloseCode, CloseFrame, Error, Initiator, Message, ProtocolError, SendError, State,
    WebSocketConfig,
};

const SHORT: Duration = Duration::from_millis(200);

fn close_frame(code: u16, reason: &str) -> Message {
    Message::Close(Some(CloseFrame {
        code: CloseCode(code),
        reason: reason.into(),
    }))
}

#[tokio::test]
async fn client_initiated_close() {
    let (mut client, mut server) = tcp_pair(WebSocketConfig::default()).await;
    let server_side = tokio::spawn(async move {
        let first = within("server next", server.next()).await;
        let end = within("server end", server.next()).await;
        (first.map(|r| r.unwrap()), end.is_none(), server)
    });
    within("client close", client.close(CloseCode::NORMAL, "bye"))
        .await
        .expect("clean close");
    assert_eq!(client.state(), State::Closed);
    let info = client.close_info().expect("close info");
    assert!(info.was_clean);
    assert_eq!(info.initiator, Initiator::Application);
    assert_eq!(info.code, CloseCode::NORMAL, "the server echoes the code");
    assert_eq!(info.error, None);

    let (first, ended, server) = within("server task", server_side).await.unwrap();
    assert_eq!(first, Some(close_frame(1000, "bye")));
    assert!(
        ended,
        "the server stream ends with None after the close frame"
    );
    let info = server.close_info().expect("server close info");
    assert_eq!(
        (
            info.code,
            info.reason.as_str(),
            info.initiator,
            info.was_clean
        ),
        (CloseCode::NORMAL, "bye", Initiator::Remote, true)
    );
    assert_eq!(server.state(), State::Closed);

    // Closing again is a no-op that succeeds.
    within("close again", client.close(CloseCode::NORMAL, "again"))
        .await
        .unwrap();
}

/// RFC 6455 §1.4: only data after the peer's close frame is discarded. A client that queued its
/// close frame and keeps reading receives what the server sent before it saw that frame, then
/// the server's close frame echoing the code and the reason.
#[tokio::test]
async fn data_sent_before_the_peer_saw_our_close_is_received() {
    let (mut client, mut server) = tcp_pair(WebSocketConfig::default()).await;
    within(
        "client close frame",
        client.send(close_frame(4321, "ciao ✓ — 再见 👋")),
    )
    .await
    .unwrap();
    assert_eq!(client.state(), State::Closing);
    // The server sends before it reads the client's close frame.
    for text in ["late 1", "late 2"] {
        within("server send", server.send(Message::text(text)))
            .await
            .unwrap();
    }
    let server_side = tokio::spawn(async move {
        let first = within("server next", server.next()).await;
        let end = within("server end", server.next()).await;
        (first.map(|r| r.unwrap()), end.is_none())
    });
    let mut received = Vec::new();
    while let Some(item) = within("client next", client.next()).await {
        received.push(item.unwrap());
    }
    assert_eq!(
        received,
        [
            Message::text("late 1"),
            Message::text("late 2"),
            close_frame(4321, "ciao ✓ — 再见 👋"),
        ]
    );
    let info = client.close_info().expect("close info");
    assert_eq!(
        (
            info.code,
            info.reason.as_str(),
            info.initiator,
            info.was_clean
        ),
        (
            CloseCode(4321),
            "ciao ✓ — 再见 👋",
            Initiator::Application,
            true
        )
    );
    let (first, ended) = within("server task", server_side).await.unwrap();
    assert_eq!(first, Some(close_frame(4321, "ciao ✓ — 再见 👋")));
    assert!(ended);
}

#[tokio::test]
async fn server_initiated_close() {
    let (mut client, mut server) = tcp_pair(WebSocketConfig::default()).await;
    let client_side = tokio::spawn(async move {
        let first = within("client next", client.next()).await;
        let end = within("client end", client.next()).await;
        (first.map(|r| r.unwrap()), end.is_none(), client)
    });
    within("server close", server.close(CloseCode(4000), "going"))
        .await
        .expect("clean close");
    let info = server.close_info().expect("close info");
    assert_eq!(
        (info.code, info.initiator, info.was_clean),
        (CloseCode(4000), Initiator::Application, true)
    );

    let (first, ended, client) = within("client task", client_side).await.unwrap();
    assert_eq!(first, Some(close_frame(4000, "going")));
    assert!(ended);
    let info = client.close_info().expect("client close info");
    assert_eq!(
        (
            info.code,
            info.reason.as_str(),
            info.initiator,
            info.was_clean
        ),
        (CloseCode(4000), "going", Initiator::Remote, true)
    );
}

#[tokio::test]
async fn simultaneous_close_is_clean_on_both_sides() {
    let (mut client, mut server) = tcp_pair(WebSocketConfig::default()).await;
    let (a, b) = within("both close", async {
        tokio::join!(
            client.close(CloseCode::NORMAL, "from client"),
            server.close(CloseCode::GOING_AWAY, "from server")
        )
    })
    .await;
    a.unwrap();
    b.unwrap();
    for (info, peer_code) in [
        (client.close_info().unwrap(), CloseCode::GOING_AWAY),
        (server.close_info().unwrap(), CloseCode::NORMAL),
    ] {
        assert!(info.was_clean, "{info:?}");
        assert_eq!(info.initiator, Initiator::Application);
        assert_eq!(info.code, peer_code, "the code of the peer's frame");
    }
}

#[tokio::test]
async fn sink_close_performs_the_close_handshake_with_1000() {
    let (mut client, server) = tcp_pair(WebSocketConfig::default()).await;
    let echo = spawn_echo(server);
    within("sink close", futures_util::SinkExt::close(&mut client))
        .await
        .unwrap();
    assert!(client.close_info().unwrap().was_clean);
    let report = within("echo", echo).await.unwrap();
    assert_eq!(report.control, vec![close_frame(1000, "")]);
}

#[tokio::test]
async fn messages_arriving_during_close_are_dropped() {
    let (mut client, mut server) = tcp_pair(WebSocketConfig::default()).await;
    for n in 0..3 {
        server.send(Message::text(format!("m{n}"))).await.unwrap();
    }
    let echo = spawn_echo(server);
    within("client close", client.close(CloseCode::NORMAL, ""))
        .await
        .unwrap();
    assert!(client.close_info().unwrap().was_clean);
    // The stream is over: nothing of the dropped messages remains.
    assert!(client.next().await.is_none());
    assert!(
        within("echo", echo)
            .await
            .unwrap()
            .closed
            .unwrap()
            .was_clean
    );
}

/// The server sends its close frame; a raw client reads but never answers.
#[tokio::test]
async fn close_times_out_when_the_peer_never_answers() {
    let server = sockeye::Server::bind("127.0.0.1:0")
        .await
        .unwrap()
        .config(WebSocketConfig::default().close_timeout(SHORT));
    let addr = server.local_addr().unwrap();
    let (accepted, mut raw) = within("handshake", async {
        tokio::join!(server.accept(), raw_client(addr))
    })
    .await;
    let (mut ws, _, _) = accepted.unwrap();

    let start = Instant::now();
    let (result, ()) = within("close and raw read", async {
        tokio::join!(ws.close(CloseCode::NORMAL, "bye"), async {
            let frame = raw.read_frame().await.expect("close frame");
            assert!(!frame.masked, "server frames are not masked");
            assert_eq!(frame.close_code(), (1000, "bye".to_owned()));
            // No answer: the server gives up after its close timeout and closes TCP.
            raw.expect_eof().await;
        })
    })
    .await;
    let elapsed = start.elapsed();
    assert!(elapsed >= SHORT, "gave up after {elapsed:?}");
    assert!(elapsed < SHORT * 10, "took {elapsed:?}");
    assert!(
        matches!(result, Err(Error::AbnormalClosure)),
        "close() reports the missing close handshake: {result:?}"
    );
    let info = ws.close_info().expect("close info");
    assert_eq!(info.code, CloseCode::ABNORMAL);
    assert!(!info.was_clean);
    assert_eq!(info.initiator, Initiator::Library);
    assert_eq!(ws.state(), State::Closed);
}

/// The client sends its close frame; a raw server reads but never answers.
#[tokio::test]
async fn client_close_times_out_when_the_server_never_answers() {
    let (listener, url) = listener().await;
    let config = WebSocketConfig::default().close_timeout(SHORT);
    let (client, mut raw) = within("handshake", async {
        tokio::join!(
            sockeye::connect_with_config(&url, config),
            raw_server_accept(&listener, switching_protocols)
        )
    })
    .await;
    let (mut client, _) = client.unwrap();
    let start = Instant::now();
    let (result, frame) = within("close", async {
        tokio::join!(client.close(CloseCode::NORMAL, ""), raw.read_frame())
    })
    .await;
    assert!(start.elapsed() >= SHORT);
    assert!(matches!(result, Err(Error::AbnormalClosure)), "{result:?}");
    let frame = frame.expect("the client's close frame");
    assert!(frame.masked, "client frames are masked");
    assert_eq!(frame.close_code().0, 1000);
    let info = client.close_info().unwrap();
    assert_eq!((info.code, info.was_clean), (CloseCode::ABNORMAL, false));
    within("eof", raw.expect_eof()).await;
}

/// RFC 6455 §7.1.1: the server closes TCP first. A server that answers the close frame but
/// keeps TCP open makes the client wait its close timeout; the close handshake was complete,
/// so it is still clean.
#[tokio::test]
async fn client_waits_for_the_server_to_close_tcp_then_gives_up_cleanly() {
    let (listener, url) = listener().await;
    let config = WebSocketConfig::default().close_timeout(SHORT);
    let (client, mut raw) = within("handshake", async {
        tokio::join!(
            sockeye::connect_with_config(&url, config),
            raw_server_accept(&listener, switching_protocols)
        )
    })
    .await;
    let (mut client, _) = client.unwrap();
    let start = Instant::now();
    let (result, ()) = within("close", async {
        tokio::join!(client.close(CloseCode::NORMAL, "c"), async {
            let frame = raw.read_frame().await.expect("close frame");
            assert_eq!(frame.close_code(), (1000, "c".to_owned()));
            raw.send_frame(true, CLOSE, &close_payload(1000, "s")).await;
            // The client shuts its side down once done.
            raw.expect_eof().await;
        })
    })
    .await;
    assert!(start.elapsed() >= SHORT, "{:?}", start.elapsed());
    result.expect("the close handshake was complete");
    let info = client.close_info().unwrap();
    assert_eq!(
        (
            info.code,
            info.reason.as_str(),
            info.was_clean,
            info.initiator
        ),
        (CloseCode::NORMAL, "s", true, Initiator::Application)
    );
}

#[tokio::test]
async fn peer_dropping_tcp_is_an_abnormal_closure() {
    // A raw client that goes away after the handshake.
    let server = sockeye::Server::bind("127.0.0.1:0").await.unwrap();
    let addr = server.local_addr().unwrap();
    let (accepted, raw) = within("handshake", async {
        tokio::join!(server.accept(), raw_client(addr))
    })
    .await;
    let (mut ws, _, _) = accepted.unwrap();
    drop(raw);
    assert!(matches!(
        within("next", ws.next()).await,
        Some(Err(Error::AbnormalClosure))
    ));
    assert!(ws.next().await.is_none());
    assert!(ws.next().await.is_none(), "the stream stays ended");
    let info = ws.close_info().unwrap();
    assert_eq!(
        (info.code, info.initiator, info.was_clean),
        (CloseCode::ABNORMAL, Initiator::Remote, false)
    );
    assert!(matches!(
        ws.send(Message::text("late")).await,
        Err(Error::Send(SendError::Closed))
    ));

    // And a sockeye server that is dropped mid-connection, seen from the client, after
    // a message that did arrive.
    let (mut client, mut server) = tcp_pair(WebSocketConfig::default()).await;
    server.send(Message::text("last words")).await.unwrap();
    drop(server);
    assert_eq!(
        within("next", client.next()).await.unwrap().unwrap(),
        Message::text("last words")
    );
    assert!(matches!(
        within("next", client.next()).await,
        Some(Err(Error::AbnormalClosure))
    ));
    assert!(client.next().await.is_none());
    assert_eq!(client.close_info().unwrap().code, CloseCode::ABNORMAL);
}

/// Each violation a raw client can commit, with the close code the server must fail with.
#[tokio::test]
async fn protocol_violations_by_a_client_fail_the_connection() {
    let mask = Some([1, 2, 3, 4]);
    let cases: Vec<(&str, Vec<u8>, u16, ProtocolError)> = vec![
        (
            "unmasked frame",
            frame(true, TEXT, b"hi", None),
            1002,
            ProtocolError::UnmaskedFrame,
        ),
        (
            "reserved bit",
            {
                let mut f = frame(true, TEXT, b"hi", mask);
                f[0] |= 0x40;
                f
            },
            1002,
            ProtocolError::ReservedBits,
        ),
        (
            "reserved opcode",
            frame(true, 0x3, b"", mask),
            1002,
            ProtocolError::ReservedOpCode(3),
        ),
        (
            "continuation without a message",
            frame(true, CONTINUATION, b"x", mask),
            1002,
            ProtocolError::UnexpectedContinuation,
        ),
        (
            "fragmented ping",
            frame(false, PING, b"x", mask),
            1002,
            ProtocolError::FragmentedControlFrame,
        ),
        (
            "ping over 125 bytes",
            frame(true, PING, &[0; 126], mask),
            1002,
            ProtocolError::ControlFrameTooBig,
        ),
        (
            "close code 1005 on the wire",
            frame(true, CLOSE, &close_payload(1005, ""), mask),
            1002,
            ProtocolError::InvalidCloseCode(1005),
        ),
        (
            "invalid utf-8",
            frame(true, TEXT, b"ok \xFF", mask),
            1007,
            ProtocolError::InvalidUtf8,
        ),
    ];
    for (what, bytes, code, error) in cases {
        let server = sockeye::Server::bind("127.0.0.1:0").await.unwrap();
        let addr = server.local_addr().unwrap();
        let (accepted, mut raw) = within("handshake", async {
            tokio::join!(server.accept(), raw_client(addr))
        })
        .await;
        let (mut ws, _, _) = accepted.unwrap();
        raw.write(&bytes).await;
        match within(what, ws.next()).await {
            Some(Err(Error::Protocol(e))) => assert_eq!(e, error, "{what}"),
            other => panic!("{what}: expected a protocol error, got {other:?}"),
        }
        assert!(ws.next().await.is_none(), "{what}");
        let info = ws.close_info().unwrap();
        assert_eq!(info.code, CloseCode(code), "{what}");
        assert_eq!(info.initiator, Initiator::Library, "{what}");
        assert!(!info.was_clean, "{what}");
        // The raw client gets a close frame with the code, then the end of the stream.
        let frame = within(what, raw.read_frame()).await.expect("close frame");
        assert_eq!(frame.close_code().0, code, "{what}");
        within(what, raw.expect_eof()).await;
        assert!(matches!(
            ws.send(Message::text("x")).await,
            Err(Error::Send(SendError::Closed))
        ));
    }
}

#[tokio::test]
async fn masked_frame_from_a_server_fails_the_client() {
    let (listener, url) = listener().await;
    let (client, mut raw) = within("handshake", async {
        tokio::join!(
            sockeye::connect_with_config(&url, WebSocketConfig::default()),
            raw_server_accept(&listener, switching_protocols)
        )
    })
    .await;
    let (mut client, _) = client.unwrap();
    raw.write(&frame(true, TEXT, b"hi", Some([9, 9, 9, 9])))
        .await;
    assert!(matches!(
        within("next", client.next()).await,
        Some(Err(Error::Protocol(ProtocolError::MaskedFrame)))
    ));
    assert!(client.next().await.is_none());
    let frame = within("close frame", raw.read_frame()).await.unwrap();
    assert!(frame.masked);
    assert_eq!(frame.close_code().0, 1002);
    within("eof", raw.expect_eof()).await;
}

/// Messages that arrived before a violation are delivered first.
#[tokio::test]
async fn messages_before_a_violation_are_delivered() {
    let server = sockeye::Server::bind("127.0.0.1:0").await.unwrap();
    let addr = server.local_addr().unwrap();
    let (accepted, mut raw) = within("handshake", async {
        tokio::join!(server.accept(), raw_client(addr))
    })
    .await;
    let (mut ws, _, _) = accepted.unwrap();
    let mut bytes = frame(true, TEXT, b"good", raw.mask);
    bytes.extend(frame(true, TEXT, b"bad", None));
    raw.write(&bytes).await;
    assert_eq!(
        within("next", ws.next()).await.unwrap().unwrap(),
        Message::text("good")
    );
    assert!(matches!(
        ws.next().await,
        Some(Err(Error::Protocol(ProtocolError::UnmaskedFrame)))
    ));
    assert!(ws.next().await.is_none());
}

#[tokio::test]
async fn send_after_close_is_refused() {
    let (mut client, server) = tcp_pair(WebSocketConfig::default()).await;
    let echo = spawn_echo(server);
    client.close(CloseCode::NORMAL, "").await.unwrap();
    for message in [
        Message::text("x"),
        Message::binary(vec![1]),
        Message::Ping(Default::default()),
        close_frame(1000, ""),
    ] {
        assert!(
            matches!(
                client.send(message).await,
                Err(Error::Send(SendError::Closed))
            ),
            "after close()"
        );
    }
    assert!(matches!(
        client.send_fragment(sockeye::DataKind::Text, b"x", true),
        Err(Error::Send(SendError::Closed))
    ));
    assert!(
        within("echo", echo)
            .await
            .unwrap()
            .closed
            .unwrap()
            .was_clean
    );

    // While closing: a close frame was queued with `send`, the handshake is not finished.
    let (mut client, _server) = duplex_pair(1 << 16, WebSocketConfig::default());
    client.send(close_frame(1001, "")).await.unwrap();
    assert_eq!(client.state(), State::Closing);
    assert!(matches!(
        client.send(Message::text("x")).await,
        Err(Error::Send(SendError::Closed))
    ));
}

/// A close that cannot be sent fails without writing anything; the connection stays open.
#[tokio::test]
async fn invalid_close_is_refused_and_sends_nothing() {
    let (a, b) = tokio::io::duplex(1 << 16);
    let mut ws = sockeye::WebSocketStream::from_raw(
        a,
        sockeye::Role::Client,
        WebSocketConfig::default(),
        &[],
    );
    let mut raw = RawPeer::new(b, None);

    for code in [1005, 1006, 1015, 999, 2000, 5000] {
        assert!(
            matches!(
                ws.close(CloseCode(code), "").await,
                Err(Error::Send(SendError::InvalidCloseCode(c))) if c == code
            ),
            "code {code}"
        );
    }
    let too_long = "r".repeat(124);
    assert!(matches!(
        ws.close(CloseCode::NORMAL, &too_long).await,
        Err(Error::Send(SendError::CloseReasonTooLong))
    ));
    // 124 bytes as multi-byte characters are refused too, not truncated.
    assert!(matches!(
        ws.close(CloseCode::NORMAL, &"é".repeat(62)).await,
        Err(Error::Send(SendError::CloseReasonTooLong))
    ));
    assert_eq!(ws.state(), State::Open);
    assert_eq!(ws.buffered_amount(), 0);
    ws.flush().await.unwrap();
    assert!(
        poll_once(tokio::io::AsyncReadExt::read(&mut raw.io, &mut [0u8; 16])).is_pending(),
        "nothing was written"
    );

    // The connection still works, and the longest reason is accepted.
    ws.send(Message::text("after")).await.unwrap();
    let frame = raw.read_frame().await.unwrap();
    assert_eq!(
        (frame.opcode, frame.payload.as_slice()),
        (TEXT, &b"after"[..])
    );
    let reason = "r".repeat(123);
    let (result, frame) = tokio::join!(
        tokio::time::timeout(SHORT, ws.close(CloseCode::NORMAL, &reason)),
        raw.read_frame()
    );
    assert!(result.is_err(), "no answer yet: still waiting");
    assert_eq!(frame.unwrap().close_code(), (1000, reason));
}

/// Regression (found in review): after a clean close with output still queued to a peer that
/// stopped reading, `close()` waited for the socket forever instead of the close timeout.
#[tokio::test]
async fn close_gives_up_on_a_closing_peer_that_stopped_reading() {
    use tokio::io::AsyncWriteExt as _;
    let (server_io, mut peer) = tokio::io::duplex(1024);
    let config = WebSocketConfig::default().close_timeout(SHORT);
    let mut ws = sockeye::WebSocketStream::from_raw(server_io, sockeye::Role::Server, config, &[]);
    // More than the pipe holds, to a peer that never reads.
    ws.try_send(Message::binary(vec![7u8; 60_000])).unwrap();
    // The peer's masked close frame (code 1000, zero mask).
    peer.write_all(&[0x88, 0x82, 0, 0, 0, 0, 0x03, 0xE8])
        .await
        .unwrap();
    let start = Instant::now();
    let result = within("close", async {
        let first = ws.next().await;
        assert!(
            matches!(first, Some(Ok(Message::Close(Some(ref f)))) if f.code == CloseCode::NORMAL),
            "{first:?}"
        );
        ws.close(CloseCode::NORMAL, "").await
    })
    .await;
    let elapsed = start.elapsed();
    assert!(result.is_ok(), "{result:?}");
    assert!(elapsed < SHORT * 10, "took {elapsed:?}");
    assert_eq!(ws.state(), State::Closed);
    drop(peer);
}
