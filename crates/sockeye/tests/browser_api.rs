//! The browser-shaped `sockeye::WebSocket` (issue 5), member by member against the WHATWG
//! WebSockets Standard: constructor errors, `url`, `readyState`, `bufferedAmount`, `protocol`,
//! `extensions`, `send`, `close`, the events and their order, the handler style, and the
//! server's `on_connection`.

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{
    frame, listener, raw_server_accept, switching_protocols, within, RawPeer, CLOSE, TEXT,
};
use futures_util::{SinkExt, StreamExt as _};
use sockeye::bytes::Bytes;
use sockeye::{
    CloseCode, CloseEvent, DeflateConfig, Error, Event, Message, ReadyState, SendError, Server,
    UrlError, WebSocket, WebSocketConfig,
};
use tokio::net::{TcpListener, TcpSocket, TcpStream};

/// The next event, failing the test when none comes in time or the events ended.
async fn event(ws: &WebSocket) -> Event {
    within("next event", ws.next_event())
        .await
        .expect("events ended early")
}

async fn expect_open(ws: &WebSocket) {
    match event(ws).await {
        Event::Open => {}
        other => panic!("expected Open, got {other:?}"),
    }
}

async fn expect_text(ws: &WebSocket, expected: &str) {
    match event(ws).await {
        Event::Message(Message::Text(text)) => assert_eq!(text, expected),
        other => panic!("expected text {expected:?}, got {other:?}"),
    }
}

async fn expect_close(ws: &WebSocket) -> CloseEvent {
    match event(ws).await {
        Event::Close(close) => close,
        other => panic!("expected Close, got {other:?}"),
    }
}

/// After `Close`, the events end.
async fn expect_end(ws: &WebSocket) {
    let next = within("end of events", ws.next_event()).await;
    assert!(next.is_none(), "event after Close: {next:?}");
    assert_eq!(ws.ready_state(), ReadyState::Closed);
}

/// The end of a failed connection in the standard's order: readyState is CLOSED when the error
/// event (returned) comes, then a close event with 1006, not clean, then no more events.
async fn expect_failed(ws: &WebSocket) -> Error {
    let error = match event(ws).await {
        Event::Error(error) => error,
        other => panic!("expected Error, got {other:?}"),
    };
    assert_eq!(ws.ready_state(), ReadyState::Closed);
    let close = expect_close(ws).await;
    assert_eq!(
        close,
        CloseEvent {
            code: 1006,
            reason: String::new(),
            was_clean: false
        }
    );
    expect_end(ws).await;
    error
}

/// A raw server that has completed the handshake with `ws` (whose Open event is consumed).
async fn open_with_raw_server(listener: &TcpListener, ws: &WebSocket) -> RawPeer<TcpStream> {
    let peer = within(
        "raw handshake",
        raw_server_accept(listener, switching_protocols),
    )
    .await;
    expect_open(ws).await;
    peer
}

/// A sockeye server echoing data messages through the handle API, on a free port.
async fn echo_server(config: WebSocketConfig) -> (String, tokio::task::JoinHandle<()>) {
    let server = Server::bind("127.0.0.1:0")
        .await
        .expect("bind")
        .config(config);
    let url = format!("ws://{}/", server.local_addr().unwrap());
    let task = tokio::spawn(async move {
        let _ = server
            .on_connection(|ws, _request| async move {
                while let Some(event) = ws.next_event().await {
                    if let Event::Message(message) = event {
                        if ws.send_async(message).await.is_err() {
                            break;
                        }
                    }
                }
            })
            .await;
    });
    (url, task)
}

#[tokio::test]
async fn constructor_errors_are_synchronous() {
    assert!(matches!(
        WebSocket::new("ws://127.0.0.1:9/chat#frag"),
        Err(Error::Url(UrlError::Fragment))
    ));
    assert!(matches!(
        WebSocket::new("ftp://127.0.0.1/"),
        Err(Error::Url(UrlError::UnsupportedScheme(scheme))) if scheme == "ftp"
    ));
    assert!(matches!(
        WebSocket::new("not a url"),
        Err(Error::Url(UrlError::Malformed))
    ));
    assert!(matches!(
        WebSocket::with_protocols("ws://127.0.0.1:9/", ["chat", "chat"]),
        Err(Error::Handshake(_))
    ));
    for bad in ["a b", "", "x,y", "é", "a\"b"] {
        assert!(
            matches!(
                WebSocket::with_protocols("ws://127.0.0.1:9/", [bad]),
                Err(Error::Handshake(_))
            ),
            "token {bad:?}"
        );
    }
    assert!(matches!(
        WebSocket::builder("ws://127.0.0.1:9/")
            .header("bad header", "x")
            .connect(),
        Err(Error::Handshake(_))
    ));
}

#[tokio::test]
async fn url_is_the_parsed_url() {
    let (listener, _) = listener().await;
    let port = listener.local_addr().unwrap().port();
    let ws = WebSocket::new(&format!("http://127.0.0.1:{port}")).unwrap();
    assert_eq!(ws.url(), format!("ws://127.0.0.1:{port}/"));
    let ws2 = WebSocket::new(&format!("ws://127.0.0.1:{port}/a/b?x=1&y")).unwrap();
    assert_eq!(ws2.url(), format!("ws://127.0.0.1:{port}/a/b?x=1&y"));
    // Loopback only; closed below before the task ever runs.
    let ws3 = WebSocket::new("wss://127.0.0.1:443/p").unwrap();
    assert_eq!(ws3.url(), "wss://127.0.0.1/p");
    // A clone is the same object.
    assert_eq!(ws.clone().url(), ws.url());
    for ws in [ws, ws2, ws3] {
        ws.close(None, None).unwrap();
    }
}

#[tokio::test]
async fn ready_state_goes_connecting_open_closing_closed() {
    let (listener, url) = listener().await;
    let ws = WebSocket::new(&url).unwrap();
    assert_eq!(ws.ready_state(), ReadyState::Connecting);
    assert_eq!(ws.ready_state().as_u16(), 0);
    // InvalidStateError while connecting; nothing is buffered.
    let err = ws.send("too early").unwrap_err();
    assert!(matches!(err, Error::InvalidState), "{err:?}");
    assert_eq!(ws.buffered_amount(), 0);
    assert_eq!((ws.protocol(), ws.extensions()), ("", ""));

    let mut peer = open_with_raw_server(&listener, &ws).await;
    assert_eq!(ws.ready_state(), ReadyState::Open);

    ws.close(Some(1000), Some("bye")).unwrap();
    assert_eq!(ws.ready_state(), ReadyState::Closing);
    let close = within("close frame", peer.read_frame()).await.unwrap();
    assert_eq!(close.close_code(), (1000, "bye".to_owned()));
    assert!(close.masked, "client frames are masked");
    assert_eq!(ws.ready_state(), ReadyState::Closing);
    peer.send_frame(true, CLOSE, &common::close_payload(1000, "bye"))
        .await;
    drop(peer);

    let close = expect_close(&ws).await;
    assert_eq!(
        close,
        CloseEvent {
            code: 1000,
            reason: "bye".into(),
            was_clean: true
        }
    );
    assert_eq!(ws.ready_state(), ReadyState::Closed);
    expect_end(&ws).await;
    assert!(matches!(
        ws.send("late"),
        Err(Error::Send(SendError::Closed))
    ));
}

#[tokio::test]
async fn close_while_connecting_fails_the_connection() {
    let (listener, url) = listener().await;
    let ws = WebSocket::new(&url).unwrap();
    // The server accepts TCP but never answers the upgrade.
    let (_tcp, _) = within("accept", listener.accept()).await.unwrap();
    ws.close(None, None).unwrap();
    assert_eq!(ws.ready_state(), ReadyState::Closing);
    expect_failed(&ws).await;
}

#[tokio::test]
async fn refused_connection_gives_error_then_close() {
    let (listener, url) = listener().await;
    drop(listener);
    let ws = WebSocket::new(&url).unwrap();
    let error = expect_failed(&ws).await;
    assert!(matches!(error, Error::Io(_)), "{error:?}");
}

#[tokio::test]
async fn close_arguments_are_validated_and_nothing_is_sent_on_error() {
    let (listener, url) = listener().await;
    let ws = WebSocket::new(&url).unwrap();
    let mut peer = open_with_raw_server(&listener, &ws).await;

    for code in [999, 1001, 1005, 1006, 2999, 5000] {
        assert!(
            matches!(
                ws.close(Some(code), None),
                Err(Error::Send(SendError::InvalidCloseCode(c))) if c == code
            ),
            "code {code}"
        );
    }
    let reason_124 = "r".repeat(124);
    assert!(matches!(
        ws.close(Some(1000), Some(&reason_124)),
        Err(Error::Send(SendError::CloseReasonTooLong))
    ));
    // Multi-byte characters count in bytes: 62 × "é" is 124 bytes.
    assert!(matches!(
        ws.close(None, Some(&"é".repeat(62))),
        Err(Error::Send(SendError::CloseReasonTooLong))
    ));
    assert_eq!(ws.ready_state(), ReadyState::Open);
    // Nothing was sent: the next frame the peer sees is this message.
    ws.send("still open").unwrap();
    let next = within("message", peer.read_frame()).await.unwrap();
    assert_eq!(
        (next.opcode, next.payload.as_slice()),
        (TEXT, &b"still open"[..])
    );

    // 123 bytes is the limit, and it goes on the wire whole.
    let reason_123 = "r".repeat(123);
    ws.close(Some(1000), Some(&reason_123)).unwrap();
    let close = within("close frame", peer.read_frame()).await.unwrap();
    assert_eq!(close.close_code(), (1000, reason_123));
}

/// WHATWG WebSockets: a message received once readyState is CLOSING is not delivered. The core
/// and the stream deliver data sent by the peer before it saw this end's close frame (RFC 6455
/// §1.4); the browser-shaped handle drops it after `close()`, as a browser does.
#[tokio::test]
async fn data_after_close_is_not_delivered() {
    let (listener, url) = listener().await;
    let ws = WebSocket::new(&url).unwrap();
    let mut peer = open_with_raw_server(&listener, &ws).await;
    peer.send_frame(true, TEXT, b"before").await;
    expect_text(&ws, "before").await;
    ws.close(Some(4000), Some("bye")).unwrap();
    let close = within("close frame", peer.read_frame()).await.unwrap();
    assert_eq!(close.close_code(), (4000, "bye".to_owned()));
    // Sent after the client's close frame arrived, before the answer: not delivered.
    peer.send_frame(true, TEXT, b"late").await;
    peer.send_frame(true, CLOSE, &common::close_payload(4000, "bye"))
        .await;
    drop(peer);
    let close = expect_close(&ws).await;
    assert_eq!(
        close,
        CloseEvent {
            code: 4000,
            reason: "bye".into(),
            was_clean: true
        }
    );
    expect_end(&ws).await;
}

#[tokio::test]
async fn close_codes_3000_and_4999_are_accepted_and_sent() {
    let (url, _server) = echo_server(WebSocketConfig::default()).await;
    for code in [3000, 4999] {
        let ws = WebSocket::new(&url).unwrap();
        expect_open(&ws).await;
        ws.close(Some(code), Some("app code")).unwrap();
        assert_eq!(ws.ready_state(), ReadyState::Closing);
        // The server echoes the code it received (RFC 6455 §5.5.1) and the reason.
        let close = expect_close(&ws).await;
        assert_eq!(
            close,
            CloseEvent {
                code,
                reason: "app code".into(),
                was_clean: true
            }
        );
        expect_end(&ws).await;
    }
}

#[tokio::test]
async fn protocol_and_extensions_after_open() {
    let server_config = WebSocketConfig::default()
        .protocols(["chat"])
        .deflate(Some(DeflateConfig::default()));
    let (url, _server) = echo_server(server_config).await;
    let ws = WebSocket::builder(&url)
        .protocols(["superchat", "chat"])
        .config(WebSocketConfig::default().deflate(Some(DeflateConfig::default())))
        .connect()
        .unwrap();
    assert_eq!(
        (ws.protocol(), ws.extensions()),
        ("", ""),
        "empty before open"
    );
    expect_open(&ws).await;
    assert_eq!(ws.protocol(), "chat");
    assert!(
        ws.extensions().starts_with("permessage-deflate"),
        "{:?}",
        ws.extensions()
    );
    // Compressed both ways.
    ws.send("a compressed hello, a compressed hello").unwrap();
    expect_text(&ws, "a compressed hello, a compressed hello").await;
    ws.close(None, None).unwrap();
    assert_eq!(expect_close(&ws).await.code, 1000);

    // No subprotocol agreed, no extension: both stay empty.
    let (url, _server) = echo_server(WebSocketConfig::default()).await;
    let ws = WebSocket::with_protocols(&url, ["chat"]).unwrap();
    expect_open(&ws).await;
    assert_eq!((ws.protocol(), ws.extensions()), ("", ""));
}

#[tokio::test]
async fn send_accepts_the_browsers_data_types() {
    let (url, _server) = echo_server(WebSocketConfig::default()).await;
    let ws = WebSocket::new(&url).unwrap();
    expect_open(&ws).await;
    ws.send("str").unwrap();
    ws.send(String::from("string")).unwrap();
    ws.send(&b"slice"[..]).unwrap();
    ws.send(b"vec".to_vec()).unwrap();
    ws.send(Bytes::from_static(b"bytes")).unwrap();
    ws.send_async("async").await.unwrap();
    let mut got = Vec::new();
    for _ in 0..6 {
        match event(&ws).await {
            Event::Message(message) => got.push(message),
            other => panic!("expected a message, got {other:?}"),
        }
    }
    assert_eq!(
        got,
        vec![
            Message::text("str"),
            Message::text("string"),
            Message::binary(&b"slice"[..]),
            Message::binary(&b"vec"[..]),
            Message::binary(&b"bytes"[..]),
            Message::text("async"),
        ]
    );
    assert_eq!(ws.buffered_amount(), 0);
}

/// A listener whose accepted sockets have a small, fixed receive buffer (no autotuning), so
/// that the kernel absorbs little of what a peer that does not read is sent.
fn small_buffer_listener() -> (TcpListener, String) {
    let socket = TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(16 << 10).unwrap();
    socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let listener = socket.listen(16).unwrap();
    let url = format!("ws://{}/", listener.local_addr().unwrap());
    (listener, url)
}

/// Polls `ws.buffered_amount()` until `done` holds for it; at most `PATIENCE`.
async fn buffered_until(ws: &WebSocket, what: &str, done: impl Fn(usize) -> bool) -> usize {
    within(what, async {
        loop {
            let amount = ws.buffered_amount();
            if done(amount) {
                return amount;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn buffered_amount_rises_while_the_peer_does_not_read_and_falls_to_zero() {
    const CHUNK: usize = 256 << 10;
    const TOTAL: usize = 16 << 20;
    let (listener, url) = small_buffer_listener();
    let config = WebSocketConfig::default().write_buffer_high_water(32 << 20);
    let ws = WebSocket::builder(&url).config(config).connect().unwrap();
    let mut peer = open_with_raw_server(&listener, &ws).await;

    let mut previous = 0;
    let mut rises = 0;
    for i in 0..TOTAL / CHUNK {
        ws.send(vec![i as u8; CHUNK])
            .expect("below the high-water mark");
        let now = ws.buffered_amount();
        if now > previous {
            rises += 1;
        }
        previous = now;
    }
    assert!(rises > 0, "buffered_amount never rose");
    // The socket takes some (the connection task writes from the first poll)...
    buffered_until(&ws, "the socket takes a first part", |amount| {
        amount < TOTAL
    })
    .await;
    // ...but once it has taken what it can, most of it is still buffered: the peer's 16 KiB
    // receive buffer and the sender's (at most 4 MiB by default on Linux) cannot hold 16 MiB.
    let settled = within("buffered amount settles", async {
        let (mut last, mut unchanged) = (usize::MAX, 0);
        loop {
            let now = ws.buffered_amount();
            if now == last {
                unchanged += 1;
                if unchanged == 5 {
                    return now;
                }
            } else {
                (last, unchanged) = (now, 0);
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    eprintln!("buffered while the peer does not read: {settled} of {TOTAL} bytes");
    assert!(
        settled >= 8 << 20,
        "only {settled} bytes buffered of {TOTAL}"
    );
    assert!(settled <= TOTAL);

    // The peer reads everything; the amount returns to 0.
    let mut received = 0;
    within("peer reads everything", async {
        while received < TOTAL {
            let frame = peer.read_frame().await.expect("frame");
            assert_eq!(frame.payload.len(), CHUNK);
            assert!(frame.payload.iter().all(|&b| b == frame.payload[0]));
            received += frame.payload.len();
        }
    })
    .await;
    assert_eq!(received, TOTAL);
    buffered_until(&ws, "buffered amount back to 0", |amount| amount == 0).await;
}

#[tokio::test]
async fn send_fails_with_queue_full_at_the_high_water_mark_and_send_async_waits() {
    let (listener, url) = small_buffer_listener();
    let config = WebSocketConfig::default().write_buffer_high_water(64 << 10);
    let ws = WebSocket::builder(&url).config(config).connect().unwrap();
    let mut peer = open_with_raw_server(&listener, &ws).await;
    // Fill until refused: bounded by the high-water mark, not by memory.
    let mut accepted = 0;
    within("queue fills", async {
        loop {
            match ws.send(vec![7u8; 16 << 10]) {
                Ok(()) => accepted += 1,
                Err(Error::QueueFull) => return,
                Err(e) => panic!("unexpected {e:?}"),
            }
            assert!(accepted < 100_000, "send never refused");
            tokio::task::yield_now().await;
        }
    })
    .await;
    // Refused at the mark; each accepted message started below it, so the last one is the only
    // one over it (plus frame headers once in the connection's buffer).
    let buffered = ws.buffered_amount();
    assert!(buffered >= 64 << 10, "{buffered}");
    assert!(buffered < (64 << 10) + (16 << 10) + 1024, "{buffered}");

    // send_async waits for room: it completes once the peer reads.
    let waiter = {
        let ws = ws.clone();
        tokio::spawn(async move { ws.send_async("after the wait").await })
    };
    let mut frames = 0;
    within("peer reads until the text", async {
        loop {
            let frame = peer.read_frame().await.expect("frame");
            frames += 1;
            if frame.opcode == TEXT {
                assert_eq!(frame.payload, b"after the wait");
                break;
            }
        }
    })
    .await;
    assert_eq!(frames, accepted + 1);
    within("send_async", waiter).await.unwrap().unwrap();
}

#[tokio::test]
async fn server_initiated_clean_close_events_in_order() {
    let server = Server::bind("127.0.0.1:0").await.unwrap();
    let url = format!("ws://{}/", server.local_addr().unwrap());
    tokio::spawn(server.serve(|mut ws, _request| async move {
        ws.send(Message::text("hi")).await.unwrap();
        ws.close(CloseCode(4000), "server says bye").await.unwrap();
    }));
    let ws = WebSocket::new(&url).unwrap();
    expect_open(&ws).await;
    expect_text(&ws, "hi").await;
    let close = expect_close(&ws).await;
    assert_eq!(
        close,
        CloseEvent {
            code: 4000,
            reason: "server says bye".into(),
            was_clean: true
        }
    );
    expect_end(&ws).await;
}

#[tokio::test]
async fn abrupt_tcp_drop_gives_error_then_close_1006() {
    let (listener, url) = listener().await;
    let ws = WebSocket::new(&url).unwrap();
    let mut peer = open_with_raw_server(&listener, &ws).await;
    peer.write(&frame(true, TEXT, b"last words", None)).await;
    drop(peer);
    expect_text(&ws, "last words").await;
    let error = expect_failed(&ws).await;
    assert!(
        matches!(error, Error::AbnormalClosure | Error::Io(_)),
        "{error:?}"
    );
}

#[tokio::test]
async fn dropping_every_handle_closes_with_1001() {
    let (listener, url) = listener().await;
    let ws = WebSocket::new(&url).unwrap();
    let mut peer = open_with_raw_server(&listener, &ws).await;
    let clone = ws.clone();
    drop(ws);
    // One handle left: still open.
    clone.send("from the clone").unwrap();
    let frame = within("message", peer.read_frame()).await.unwrap();
    assert_eq!(frame.payload, b"from the clone");
    drop(clone);
    let close = within("close frame", peer.read_frame()).await.unwrap();
    assert_eq!(close.close_code().0, 1001);
}

type Log = Arc<Mutex<Vec<String>>>;

/// A client whose four handlers record what they see; it sends "hello" when open and closes
/// after the first message when `close_on_message`.
fn recording_client(
    url: &str,
    log: &Log,
    close_on_message: bool,
) -> (WebSocket, tokio::sync::oneshot::Receiver<()>) {
    let (closed_tx, closed_rx) = tokio::sync::oneshot::channel();
    let mut closed_tx = Some(closed_tx);
    let (l1, l2, l3, l4) = (log.clone(), log.clone(), log.clone(), log.clone());
    let ws = WebSocket::builder(url)
        .on_open(move |ws| {
            l1.lock().unwrap().push("open".into());
            ws.send("hello").expect("send from on_open");
        })
        .on_message(move |ws, message| {
            let Message::Text(text) = message else {
                panic!("expected text, got {message:?}");
            };
            l2.lock().unwrap().push(format!("message:{text}"));
            if close_on_message {
                ws.close(Some(1000), Some("done"))
                    .expect("close from on_message");
            }
        })
        .on_error(move |_, _error| l3.lock().unwrap().push("error".into()))
        .on_close(move |ws, close| {
            assert_eq!(ws.ready_state(), ReadyState::Closed);
            l4.lock().unwrap().push(format!(
                "close:{}:{}:{}",
                close.code, close.reason, close.was_clean
            ));
            if let Some(tx) = closed_tx.take() {
                let _ = tx.send(());
            }
        })
        .connect()
        .unwrap();
    (ws, closed_rx)
}

#[tokio::test]
async fn handler_style_client_echo() {
    let (url, _server) = echo_server(WebSocketConfig::default()).await;
    let log = Log::default();
    let (ws, closed) = recording_client(&url, &log, true);
    within("on_close", closed).await.unwrap();
    assert_eq!(
        *log.lock().unwrap(),
        ["open", "message:hello", "close:1000:done:true"]
    );
    // With handlers, the events go to them, not to next_event.
    assert!(within("next_event", ws.next_event()).await.is_none());
    assert_eq!(ws.ready_state(), ReadyState::Closed);
}

#[tokio::test]
async fn handler_style_on_error_then_on_close() {
    let (listener, url) = listener().await;
    let log = Log::default();
    let (_ws, closed) = recording_client(&url, &log, false);
    let mut peer = within(
        "raw handshake",
        raw_server_accept(&listener, switching_protocols),
    )
    .await;
    // Echo the client's "hello" by hand, then drop the connection.
    let hello = within("hello", peer.read_frame()).await.unwrap();
    assert_eq!(
        (hello.opcode, hello.payload.as_slice()),
        (TEXT, &b"hello"[..])
    );
    peer.write(&frame(true, TEXT, b"hello", None)).await;
    drop(peer);
    within("on_close", closed).await.unwrap();
    assert_eq!(
        *log.lock().unwrap(),
        ["open", "message:hello", "error", "close:1006::false"]
    );
}

#[tokio::test]
async fn server_on_connection_echo() {
    let server = Server::bind("127.0.0.1:0").await.unwrap();
    let addr = server.local_addr().unwrap();
    let (seen_tx, mut seen_rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(server.on_connection(move |ws, request| {
        let seen_tx = seen_tx.clone();
        async move {
            let _ = seen_tx.send((
                ws.ready_state(),
                ws.url().to_owned(),
                request.uri().path().to_owned(),
            ));
            while let Some(event) = ws.next_event().await {
                match event {
                    Event::Open => {}
                    Event::Message(message) => ws.send_async(message).await.unwrap(),
                    Event::Error(_) | Event::Close(_) => {}
                    _ => {}
                }
            }
        }
    }));
    let (mut client, _) = within(
        "connect",
        sockeye::connect(&format!("ws://{addr}/room/1?x=y")),
    )
    .await
    .unwrap();
    let seen = within("handler runs", seen_rx.recv()).await.unwrap();
    assert_eq!(
        seen,
        (
            ReadyState::Open,
            "/room/1?x=y".to_owned(),
            "/room/1".to_owned()
        )
    );
    for message in [Message::text("one"), Message::binary(vec![1, 2, 3])] {
        client.send(message.clone()).await.unwrap();
        let echoed = within("echo", client.next()).await.unwrap().unwrap();
        assert_eq!(echoed, message);
    }
    client.close(CloseCode::NORMAL, "bye").await.unwrap();
    assert!(client.close_info().unwrap().was_clean);
    // The Sink's close (code 1000) against the handle-based server.
    let (mut client, _) = sockeye::connect(&format!("ws://{addr}/")).await.unwrap();
    within("sink close", SinkExt::close(&mut client))
        .await
        .unwrap();
    assert_eq!(client.close_info().unwrap().code, CloseCode::NORMAL);
}

#[tokio::test]
async fn protocol_violation_gives_error_then_close_1006() {
    let (listener, url) = listener().await;
    let ws = WebSocket::new(&url).unwrap();
    let mut peer = open_with_raw_server(&listener, &ws).await;
    // RFC 6455 §5.1: a client MUST close the connection on a masked frame from the server.
    peer.write(&frame(true, TEXT, b"masked", Some([1, 2, 3, 4])))
        .await;
    // No close frame was received: 1006, as the browser reports (RFC 6455 §7.1.5).
    let error = expect_failed(&ws).await;
    assert!(
        matches!(error, Error::Protocol(sockeye::ProtocolError::MaskedFrame)),
        "{error:?}"
    );
    // On the wire, the client sent 1002.
    let sent = within("close frame", peer.read_frame()).await.unwrap();
    assert_eq!(sent.close_code().0, 1002);
}

#[tokio::test]
async fn from_stream_wraps_an_accepted_connection() {
    let (client, server) = common::duplex_pair(64 << 10, WebSocketConfig::default());
    let ws = WebSocket::from_stream(server, "/wrapped");
    assert_eq!(ws.ready_state(), ReadyState::Open);
    assert_eq!(ws.url(), "/wrapped");
    let mut client = client;
    expect_open(&ws).await;
    client.send(Message::text("to the handle")).await.unwrap();
    expect_text(&ws, "to the handle").await;
    ws.send("to the stream").unwrap();
    let got = within("client receives", client.next())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(got, Message::text("to the stream"));
    // A close from the stream side: clean, with its code and reason.
    let closing = tokio::spawn(async move {
        client
            .close(CloseCode(4001), "stream closes")
            .await
            .unwrap();
        client
    });
    assert_eq!(
        expect_close(&ws).await,
        CloseEvent {
            code: 4001,
            reason: "stream closes".into(),
            was_clean: true
        }
    );
    let client = within("client close", closing).await.unwrap();
    assert!(client.close_info().unwrap().was_clean);
}

#[tokio::test]
async fn next_event_is_cancel_safe() {
    let (listener, url) = listener().await;
    let ws = WebSocket::new(&url).unwrap();
    // Dropped while nothing has happened yet: the Open event is not lost.
    assert!(common::poll_once(ws.next_event()).is_pending());
    let mut peer = within(
        "raw handshake",
        raw_server_accept(&listener, switching_protocols),
    )
    .await;
    expect_open(&ws).await;
    for i in 0..10 {
        // A future dropped at its first poll, then a frame: the next call gets it.
        let _ = common::poll_once(ws.next_event());
        peer.write(&frame(true, TEXT, format!("m{i}").as_bytes(), None))
            .await;
        // And one that may be dropped while receiving it: the event is either returned or
        // left for the next call.
        match tokio::time::timeout(Duration::from_millis(1), ws.next_event()).await {
            Ok(Some(Event::Message(message))) => {
                assert_eq!(message, Message::text(format!("m{i}")))
            }
            Ok(other) => panic!("unexpected {other:?}"),
            Err(_) => expect_text(&ws, &format!("m{i}")).await,
        }
    }
}

#[tokio::test]
async fn server_on_connection_shuts_down_gracefully() {
    let server = Server::bind("127.0.0.1:0").await.unwrap();
    let addr = server.local_addr().unwrap();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let (closed_tx, mut closed_rx) = tokio::sync::mpsc::unbounded_channel();
    let serving = tokio::spawn(server.on_connection_with_shutdown(
        move |ws, _request| {
            let closed_tx = closed_tx.clone();
            async move {
                while let Some(event) = ws.next_event().await {
                    if let Event::Close(close) = event {
                        let _ = closed_tx.send(close);
                    }
                }
            }
        },
        async {
            let _ = stop_rx.await;
        },
    ));
    let client = WebSocket::new(&format!("ws://{addr}/")).unwrap();
    expect_open(&client).await;
    stop_tx.send(()).unwrap();
    // The server closes with 1001; both sides see a clean close.
    let close = expect_close(&client).await;
    assert_eq!((close.code, close.was_clean), (1001, true));
    let server_side = within("server close event", closed_rx.recv())
        .await
        .unwrap();
    assert_eq!((server_side.code, server_side.was_clean), (1001, true));
    within("server stops", serving).await.unwrap().unwrap();
}

#[tokio::test]
async fn panicking_message_handler_closes_with_1011_and_still_reports_the_end() {
    let (listener, url) = listener().await;
    let log = Log::default();
    let (closed_tx, closed_rx) = tokio::sync::oneshot::channel();
    let mut closed_tx = Some(closed_tx);
    let l1 = log.clone();
    let ws = WebSocket::builder(&url)
        .on_message(|_, _| panic!("handler bug"))
        .on_close(move |ws, close| {
            l1.lock().unwrap().push(format!(
                "close:{}:{}:{:?}",
                close.code,
                close.was_clean,
                ws.ready_state()
            ));
            if let Some(tx) = closed_tx.take() {
                let _ = tx.send(());
            }
        })
        .connect()
        .unwrap();
    let mut peer = within(
        "raw handshake",
        raw_server_accept(&listener, switching_protocols),
    )
    .await;
    peer.write(&frame(true, TEXT, b"boom", None)).await;
    // The connection task survived the panic: it fails the connection with 1011.
    let close = within("close frame", peer.read_frame()).await.unwrap();
    assert_eq!(close.opcode, CLOSE);
    assert_eq!(close.close_code(), (1011, String::new()));
    peer.write(&frame(true, CLOSE, &close.payload, None)).await;
    // RFC 6455 §7.1.1: the server closes TCP first; the client waits for it.
    drop(peer);
    within("on_close", closed_rx).await.unwrap();
    assert_eq!(*log.lock().unwrap(), ["close:1011:true:Closed"]);
    assert_eq!(ws.ready_state(), ReadyState::Closed);
}

#[tokio::test]
async fn panicking_on_connection_future_closes_with_1011_and_handles_see_closed() {
    let server = Server::bind("127.0.0.1:0").await.unwrap();
    let addr = server.local_addr().unwrap();
    let (handle_tx, mut handle_rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(server.on_connection(move |ws, _request| {
        let handle_tx = handle_tx.clone();
        async move {
            // A clone outlives the handler: it must not see an open connection forever.
            let _ = handle_tx.send(ws.clone());
            while let Some(event) = ws.next_event().await {
                if let Event::Message(_) = event {
                    panic!("handler bug");
                }
            }
        }
    }));
    let (mut client, _) = within("connect", sockeye::connect(&format!("ws://{addr}/")))
        .await
        .unwrap();
    let server_side = within("handler runs", handle_rx.recv()).await.unwrap();
    client.send(Message::text("boom")).await.unwrap();
    let close = within("close", client.next()).await;
    assert!(
        matches!(&close, Some(Ok(Message::Close(Some(frame)))) if frame.code == CloseCode::INTERNAL_ERROR),
        "{close:?}"
    );
    let end = within("end", client.next()).await;
    assert!(end.is_none(), "{end:?}");
    let info = client.close_info().unwrap();
    assert_eq!(info.code, CloseCode::INTERNAL_ERROR);
    assert!(info.was_clean, "{info:?}");
    within("server side closed", async {
        while server_side.ready_state() != ReadyState::Closed {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await;
}

#[test]
fn ready_state_reaches_closed_when_the_runtime_drops_the_task() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let (ws, _peer) = runtime.block_on(async {
        let (near, far) = tokio::io::duplex(1024);
        let stream = sockeye::WebSocketStream::from_raw(
            near,
            sockeye::Role::Server,
            WebSocketConfig::default(),
            &[],
        );
        (WebSocket::from_stream(stream, "/"), far)
    });
    assert_eq!(ws.ready_state(), ReadyState::Open);
    drop(runtime);
    assert_eq!(ws.ready_state(), ReadyState::Closed);
    assert!(matches!(
        ws.send("late"),
        Err(Error::Send(SendError::Closed))
    ));
}

#[tokio::test]
async fn on_connection_handler_panicking_before_its_future_closes_with_1011() {
    let server = Server::bind("127.0.0.1:0").await.unwrap();
    let addr = server.local_addr().unwrap();
    tokio::spawn(server.on_connection(|_ws, request| {
        assert_eq!(request.uri().path(), "/never", "handler bug");
        async {}
    }));
    let (mut client, _) = within("connect", sockeye::connect(&format!("ws://{addr}/")))
        .await
        .unwrap();
    let close = within("close", client.next()).await;
    assert!(
        matches!(&close, Some(Ok(Message::Close(Some(frame)))) if frame.code == CloseCode::INTERNAL_ERROR),
        "{close:?}"
    );
    assert!(within("end", client.next()).await.is_none());
    assert!(client.close_info().unwrap().was_clean);
}
