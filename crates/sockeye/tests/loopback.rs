//! Client and server over loopback TCP: data of every size class, limits, fragmentation, pings.

mod common;

use common::*;
use futures_util::StreamExt as _;
use sockeye::{
    bytes::Bytes, CloseCode, DataKind, Error, Initiator, Message, ProtocolError, SendError,
    WebSocketConfig,
};

const MIB: usize = 1 << 20;

/// Receives the next message, failing on errors and on the end of the stream.
async fn next_message<S>(ws: &mut sockeye::WebSocketStream<S>) -> Message
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    match within("next message", ws.next()).await {
        Some(Ok(message)) => message,
        other => panic!("expected a message, got {other:?}"),
    }
}

/// Compares payloads without printing megabytes on failure.
fn assert_payload(got: &Message, want: &Message) {
    let same_kind = std::mem::discriminant(got) == std::mem::discriminant(want);
    assert!(
        same_kind && got.as_payload() == want.as_payload(),
        "got {} {} bytes, want {} {} bytes",
        kind(got),
        got.as_payload().len(),
        kind(want),
        want.as_payload().len()
    );
}

fn kind(m: &Message) -> &'static str {
    match m {
        Message::Text(_) => "text",
        Message::Binary(_) => "binary",
        Message::Ping(_) => "ping",
        Message::Pong(_) => "pong",
        Message::Close(_) => "close",
    }
}

/// Sends each message, waits for its echo and checks it, then closes cleanly.
async fn echo_round_trip(config: WebSocketConfig, messages: Vec<Message>) {
    let (mut client, server) = tcp_pair(config).await;
    let echo = spawn_echo(server);
    for message in &messages {
        within("send", client.send(message.clone()))
            .await
            .expect("send");
        let echoed = next_message(&mut client).await;
        assert_payload(&echoed, message);
    }
    within("close", client.close(CloseCode::NORMAL, ""))
        .await
        .expect("close");
    let report = within("echo task", echo).await.unwrap();
    assert!(report.error.is_none(), "{:?}", report.error);
    assert_eq!(report.echoed, messages.len());
    let closed = report.closed.expect("server close info");
    assert!(closed.was_clean);
    assert_eq!(closed.code, CloseCode::NORMAL);
}

#[tokio::test]
async fn text_and_binary_round_trip() {
    echo_round_trip(
        WebSocketConfig::default(),
        vec![
            Message::text("hello"),
            Message::text("κόσμε — 𝄞"),
            Message::binary(vec![0u8, 1, 2, 255]),
        ],
    )
    .await;
}

#[tokio::test]
async fn empty_text_and_binary_round_trip() {
    echo_round_trip(
        WebSocketConfig::default(),
        vec![
            Message::text(""),
            Message::binary(Vec::new()),
            Message::text(""),
        ],
    )
    .await;
}

#[tokio::test]
async fn payload_length_encodings_round_trip() {
    // 125: 7-bit length; 126 and 65535: 16-bit; 65536: 64-bit (RFC 6455 §5.2).
    let mut messages = Vec::new();
    for (seed, len) in [125usize, 126, 65535, 65536].into_iter().enumerate() {
        messages.push(Message::binary(pattern(len, seed as u32)));
        messages.push(Message::text("x".repeat(len)));
    }
    echo_round_trip(WebSocketConfig::default(), messages).await;
}

#[tokio::test]
async fn message_of_exactly_the_default_limit_passes() {
    let limit = sockeye_proto::DEFAULT_MAX_MESSAGE_SIZE;
    assert_eq!(limit, 16 * MIB);
    echo_round_trip(
        WebSocketConfig::default(),
        vec![Message::binary(pattern(limit, 99))],
    )
    .await;
}

/// One byte over the default limit in a single frame: the server fails the connection with 1009
/// as soon as it reads the frame header.
#[tokio::test]
async fn message_one_byte_over_the_default_limit_is_refused_with_1009() {
    let (mut client, mut server) = tcp_pair(WebSocketConfig::default()).await;
    let limit = 16 * MIB;
    let server_side = tokio::spawn(async move {
        let first = within("server next", server.next()).await;
        let closed = server.close_info().cloned();
        assert!(within("server end", server.next()).await.is_none());
        // Keep reading what the client still sends, so that its write completes and it can take
        // part in the close; dropping the socket with unread data would reset it instead.
        let mut sink = tokio::io::sink();
        let _ = within("drain", tokio::io::copy(server.get_mut(), &mut sink)).await;
        (first, closed)
    });
    within(
        "send too big",
        client.send(Message::binary(vec![7u8; limit + 1])),
    )
    .await
    .expect("the client may send it; the server refuses it");

    // Client side: the server's close frame with 1009, then a clean end.
    match next_message(&mut client).await {
        Message::Close(Some(frame)) => {
            assert_eq!(frame.code, CloseCode::MESSAGE_TOO_BIG);
            assert!(frame.reason.contains("16777216"), "{:?}", frame.reason);
        }
        other => panic!("expected the server's close frame, got {other:?}"),
    }
    assert!(within("client end", client.next()).await.is_none());
    let info = client.close_info().expect("client close info");
    assert_eq!(info.code, CloseCode::MESSAGE_TOO_BIG);
    assert_eq!(info.initiator, Initiator::Remote);
    assert_eq!(info.error, None);

    // Server side: the violation, reported once; a single frame over the limit is caught by the
    // frame-size check, which comes first (both limits are 16 MiB by default).
    let (first, closed) = within("server task", server_side).await.unwrap();
    match first {
        Some(Err(Error::Protocol(ProtocolError::FrameTooBig { limit: l }))) => {
            assert_eq!(l, limit);
        }
        other => panic!("expected FrameTooBig, got {other:?}"),
    }
    let closed = closed.expect("server close info");
    assert_eq!(closed.code, CloseCode::MESSAGE_TOO_BIG);
    assert_eq!(closed.initiator, Initiator::Library);
    assert!(!closed.was_clean);
    assert_eq!(
        closed.error,
        Some(ProtocolError::FrameTooBig { limit: 16 * MIB })
    );
}

/// A fragmented message over the message limit: MessageTooBig, 1009, seen by the server.
#[tokio::test]
async fn fragmented_message_over_the_limit_is_refused_by_the_server() {
    let config = WebSocketConfig::default().max_message_size(Some(1000));
    let (mut client, server) = tcp_pair(config).await;
    let echo = spawn_echo(server);
    // Exactly the limit in fragments is fine.
    client
        .send_fragment(DataKind::Binary, &[1; 600], false)
        .unwrap();
    client
        .send_fragment(DataKind::Binary, &[2; 400], true)
        .unwrap();
    client.flush().await.unwrap();
    let echoed = next_message(&mut client).await;
    assert_eq!(echoed.as_payload().len(), 1000);
    // One byte more is not.
    client
        .send_fragment(DataKind::Binary, &[1; 600], false)
        .unwrap();
    client
        .send_fragment(DataKind::Binary, &[2; 401], true)
        .unwrap();
    client.flush().await.unwrap();
    match next_message(&mut client).await {
        Message::Close(Some(frame)) => assert_eq!(frame.code, CloseCode::MESSAGE_TOO_BIG),
        other => panic!("expected a close frame, got {other:?}"),
    }
    assert!(within("client end", client.next()).await.is_none());
    assert_eq!(
        client.close_info().unwrap().code,
        CloseCode::MESSAGE_TOO_BIG
    );
    let report = within("echo", echo).await.unwrap();
    match report.error {
        Some(Error::Protocol(ProtocolError::MessageTooBig { limit: 1000 })) => {}
        other => panic!("expected MessageTooBig, got {other:?}"),
    }
    assert_eq!(
        report.closed.unwrap().code,
        CloseCode::MESSAGE_TOO_BIG,
        "server close info"
    );
}

/// The client's own limit: the client fails the connection and the server sees its 1009.
#[tokio::test]
async fn message_over_the_client_limit_is_refused_by_the_client() {
    let server = sockeye::Server::bind("127.0.0.1:0").await.unwrap();
    let addr = server.local_addr().unwrap();
    let config = WebSocketConfig::default().max_message_size(Some(100));
    let url = format!("ws://{addr}/");
    let (client, accepted) =
        tokio::join!(sockeye::connect_with_config(&url, config), server.accept());
    let (mut client, _) = client.unwrap();
    let (mut server, _, _) = accepted.unwrap();
    server.send(Message::text("y".repeat(100))).await.unwrap();
    server.send(Message::text("z".repeat(101))).await.unwrap();
    assert_eq!(
        next_message(&mut client).await,
        Message::text("y".repeat(100))
    );
    match within("client next", client.next()).await {
        Some(Err(Error::Protocol(ProtocolError::MessageTooBig { limit: 100 }))) => {}
        other => panic!("expected MessageTooBig, got {other:?}"),
    }
    assert!(within("client end", client.next()).await.is_none());
    let info = client.close_info().unwrap();
    assert_eq!(
        (info.code, info.initiator, info.was_clean),
        (CloseCode::MESSAGE_TOO_BIG, Initiator::Library, false)
    );
    match next_message(&mut server).await {
        Message::Close(Some(frame)) => assert_eq!(frame.code, CloseCode::MESSAGE_TOO_BIG),
        other => panic!("expected the client's close frame, got {other:?}"),
    }
    assert!(within("server end", server.next()).await.is_none());
    assert_eq!(
        server.close_info().unwrap().code,
        CloseCode::MESSAGE_TOO_BIG
    );
}

#[tokio::test]
async fn fragmented_messages_arrive_reassembled() {
    let (mut client, server) = tcp_pair(WebSocketConfig::default()).await;
    let echo = spawn_echo(server);

    client.send_fragment(DataKind::Text, b"hel", false).unwrap();
    client.send_fragment(DataKind::Text, b"", false).unwrap();
    // A multi-byte character split across fragments is still valid UTF-8 once reassembled.
    client
        .send_fragment(DataKind::Text, b"lo \xCE", false)
        .unwrap();
    client
        .send_fragment(DataKind::Text, b"\xBA!", true)
        .unwrap();
    client.flush().await.unwrap();
    assert_eq!(next_message(&mut client).await, Message::text("hello κ!"));

    let big = pattern(200_000, 5);
    for chunk in big.chunks(70_000) {
        let fin = chunk.as_ptr_range().end == big.as_ptr_range().end;
        client.send_fragment(DataKind::Binary, chunk, fin).unwrap();
    }
    client.flush().await.unwrap();
    assert_eq!(next_message(&mut client).await, Message::binary(big));

    // A ping between fragments is answered before the message is complete.
    client
        .send_fragment(DataKind::Binary, b"ab", false)
        .unwrap();
    client
        .send(Message::Ping(Bytes::from_static(b"mid")))
        .await
        .unwrap();
    client.send_fragment(DataKind::Binary, b"cd", true).unwrap();
    client.flush().await.unwrap();
    assert_eq!(
        next_message(&mut client).await,
        Message::Pong(Bytes::from_static(b"mid"))
    );
    assert_eq!(
        next_message(&mut client).await,
        Message::binary(&b"abcd"[..])
    );

    client.close(CloseCode::NORMAL, "").await.unwrap();
    let report = within("echo", echo).await.unwrap();
    assert_eq!(report.echoed, 3);
    assert_eq!(report.control[0], Message::Ping(Bytes::from_static(b"mid")));
}

#[tokio::test]
async fn fragment_misuse_is_refused_and_leaves_the_connection_usable() {
    let (mut client, server) = tcp_pair(WebSocketConfig::default()).await;
    let echo = spawn_echo(server);
    client.send_fragment(DataKind::Text, b"a", false).unwrap();
    assert!(matches!(
        client.send_fragment(DataKind::Binary, b"b", true),
        Err(Error::Send(SendError::FragmentInProgress))
    ));
    assert!(matches!(
        client.send(Message::text("whole")).await,
        Err(Error::Send(SendError::FragmentInProgress))
    ));
    client.send_fragment(DataKind::Text, b"b", true).unwrap();
    client.send(Message::text("whole")).await.unwrap();
    assert_eq!(next_message(&mut client).await, Message::text("ab"));
    assert_eq!(next_message(&mut client).await, Message::text("whole"));
    client.close(CloseCode::NORMAL, "").await.unwrap();
    assert_eq!(within("echo", echo).await.unwrap().echoed, 2);
}

#[tokio::test]
async fn server_sends_fragments_to_the_client() {
    let (mut client, mut server) = tcp_pair(WebSocketConfig::default()).await;
    server
        .send_fragment(DataKind::Binary, b"12", false)
        .unwrap();
    server
        .send_fragment(DataKind::Binary, b"34", false)
        .unwrap();
    server.send_fragment(DataKind::Binary, b"5", true).unwrap();
    server.flush().await.unwrap();
    assert_eq!(
        next_message(&mut client).await,
        Message::binary(&b"12345"[..])
    );
}

#[tokio::test]
async fn ping_is_answered_automatically_with_the_same_payload() {
    let (mut client, server) = tcp_pair(WebSocketConfig::default()).await;
    let echo = spawn_echo(server);
    for payload in [&b""[..], b"ping-1", &[0xAB; 125]] {
        let payload = Bytes::copy_from_slice(payload);
        client.send(Message::Ping(payload.clone())).await.unwrap();
        assert_eq!(next_message(&mut client).await, Message::Pong(payload));
    }
    assert!(matches!(
        client.send(Message::Ping(Bytes::from(vec![0; 126]))).await,
        Err(Error::Send(SendError::ControlFrameTooBig))
    ));
    // An unsolicited pong is delivered, not answered.
    client
        .send(Message::Pong(Bytes::from_static(b"beat")))
        .await
        .unwrap();
    client.close(CloseCode::NORMAL, "").await.unwrap();
    let report = within("echo", echo).await.unwrap();
    assert_eq!(
        &report.control[..4],
        &[
            Message::Ping(Bytes::new()),
            Message::Ping(Bytes::from_static(b"ping-1")),
            Message::Ping(Bytes::from(vec![0xAB; 125])),
            Message::Pong(Bytes::from_static(b"beat")),
        ]
    );
}

#[tokio::test]
async fn many_messages_in_both_directions_keep_their_order() {
    let (mut client, server) = tcp_pair(WebSocketConfig::default()).await;
    let echo = spawn_echo(server);
    let (mut sink, mut stream) = client.split();
    let count = 300u32;
    let writer = tokio::spawn(async move {
        use futures_util::SinkExt as _;
        for n in 0..count {
            sink.send(numbered(n, (n as usize * 97) % 3000))
                .await
                .unwrap();
        }
        sink
    });
    for n in 0..count {
        let message = within("echo", stream.next()).await.unwrap().unwrap();
        assert_eq!(check_numbered(&message), n);
    }
    let sink = within("writer", writer).await.unwrap();
    client = sink.reunite(stream).unwrap();
    client.close(CloseCode::NORMAL, "").await.unwrap();
    assert_eq!(within("echo", echo).await.unwrap().echoed, count as usize);
}
