//! The opening handshake over TCP, as seen by raw peers on either side.

mod common;

use std::time::{Duration, Instant};

use common::*;
use futures_util::StreamExt as _;
use sockeye::{Error, HandshakeError, Message, Server, UrlError, WebSocketConfig};
use tokio::net::TcpStream;

const SHORT: Duration = Duration::from_millis(200);

/// Sends `request` to a fresh `Server` and returns the server's result and the raw answer
/// (everything until the server closes the connection).
async fn ask_server(request: &[u8]) -> (Result<(), Error>, String) {
    let server = Server::bind("127.0.0.1:0").await.unwrap();
    let addr = server.local_addr().unwrap();
    let (result, answer) = within("server answer", async {
        tokio::join!(async { server.accept().await.map(|_| ()) }, async {
            let mut raw = RawPeer::new(TcpStream::connect(addr).await.unwrap(), None);
            // A server that refuses early may reset the connection before a large request is
            // fully written; the answer is what matters.
            let _ = tokio::io::AsyncWriteExt::write_all(&mut raw.io, request).await;
            raw.read_to_end().await
        })
    })
    .await;
    (result, String::from_utf8_lossy(&answer).into_owned())
}

fn status_line(answer: &str) -> &str {
    answer.split("\r\n").next().unwrap_or_default()
}

fn assert_rejected(result: &Result<(), Error>, want: &HandshakeError) {
    match result {
        Err(Error::Handshake(err)) => assert_eq!(err.as_ref(), want),
        other => panic!("expected {want:?}, got {other:?}"),
    }
}

#[tokio::test]
async fn valid_request_is_accepted_with_the_rfc_accept_key() {
    let server = Server::bind("127.0.0.1:0").await.unwrap();
    let addr = server.local_addr().unwrap();
    let (accepted, raw) = within("handshake", async {
        tokio::join!(server.accept(), raw_client(addr))
    })
    .await;
    let (_ws, request, peer) = accepted.unwrap();
    assert_eq!(request.uri(), "/chat");
    assert_eq!(request.headers()["host"], "localhost");
    assert_eq!(peer, raw.io.local_addr().unwrap());
}

#[tokio::test]
async fn post_is_answered_405() {
    let request = upgrade_request("").replacen("GET ", "POST ", 1);
    let (result, answer) = ask_server(request.as_bytes()).await;
    assert_eq!(status_line(&answer), "HTTP/1.1 405 Method Not Allowed");
    assert_eq!(header(&answer, "allow"), Some("GET"));
    assert_rejected(&result, &HandshakeError::MethodNotAllowed);
}

#[tokio::test]
async fn version_8_is_answered_426_with_version_13() {
    let request =
        upgrade_request("").replacen("Sec-WebSocket-Version: 13", "Sec-WebSocket-Version: 8", 1);
    let (result, answer) = ask_server(request.as_bytes()).await;
    assert_eq!(status_line(&answer), "HTTP/1.1 426 Upgrade Required");
    assert_eq!(header(&answer, "sec-websocket-version"), Some("13"));
    assert_rejected(&result, &HandshakeError::UnsupportedVersion);
}

#[tokio::test]
async fn missing_key_is_answered_400() {
    let request = upgrade_request("").replacen(&format!("Sec-WebSocket-Key: {KEY}\r\n"), "", 1);
    let (result, answer) = ask_server(request.as_bytes()).await;
    assert_eq!(status_line(&answer), "HTTP/1.1 400 Bad Request");
    assert_rejected(&result, &HandshakeError::BadHeader("sec-websocket-key"));
}

#[tokio::test]
async fn huge_header_block_is_answered_431() {
    // Over the default 16 KiB head limit.
    let request = upgrade_request(&format!("X-Filler: {}\r\n", "a".repeat(20 << 10)));
    let (result, answer) = ask_server(request.as_bytes()).await;
    assert_eq!(
        status_line(&answer),
        "HTTP/1.1 431 Request Header Fields Too Large"
    );
    assert_rejected(&result, &HandshakeError::HeadTooLarge { limit: 16 << 10 });

    // Too many header fields, too (the default is 128).
    let many: String = (0..200).map(|i| format!("X-{i}: y\r\n")).collect();
    let (result, answer) = ask_server(upgrade_request(&many).as_bytes()).await;
    assert!(
        status_line(&answer).starts_with("HTTP/1.1 431 "),
        "{answer}"
    );
    assert_rejected(&result, &HandshakeError::TooManyHeaders { limit: 128 });
}

#[tokio::test]
async fn accept_with_config_answers_bad_requests_on_any_transport() {
    let (a, b) = tokio::io::duplex(1 << 16);
    let request = upgrade_request("").replacen("Upgrade: websocket\r\n", "", 1);
    let mut raw = RawPeer::new(b, None);
    let (result, answer) = within("handshake", async {
        tokio::join!(
            sockeye::accept_with_config(a, WebSocketConfig::default()),
            async {
                raw.write(request.as_bytes()).await;
                raw.read_to_end().await
            }
        )
    })
    .await;
    assert!(
        matches!(result, Err(Error::Handshake(e)) if *e == HandshakeError::BadHeader("upgrade"))
    );
    let answer = String::from_utf8(answer).unwrap();
    assert!(
        answer.starts_with("HTTP/1.1 400 Bad Request\r\n"),
        "{answer}"
    );
    assert!(
        answer.ends_with("bad handshake header: upgrade\n"),
        "{answer}"
    );
}

#[tokio::test]
async fn stalled_request_times_out() {
    let server = Server::bind("127.0.0.1:0")
        .await
        .unwrap()
        .config(WebSocketConfig::default().handshake_timeout(SHORT));
    let addr = server.local_addr().unwrap();
    let start = Instant::now();
    let (result, rest) = within("timeout", async {
        tokio::join!(server.accept(), async {
            let mut raw = RawPeer::new(TcpStream::connect(addr).await.unwrap(), None);
            let half = upgrade_request("");
            raw.write(&half.as_bytes()[..half.len() / 2]).await;
            raw.read_to_end().await
        })
    })
    .await;
    let elapsed = start.elapsed();
    assert!(matches!(result, Err(Error::HandshakeTimeout)), "{result:?}");
    assert!(elapsed >= SHORT, "{elapsed:?}");
    assert!(elapsed < SHORT * 10, "{elapsed:?}");
    assert!(rest.is_empty(), "no answer to a stalled client: {rest:?}");
}

#[tokio::test]
async fn server_keeps_serving_after_a_rejected_handshake() {
    let server = Server::bind("127.0.0.1:0").await.unwrap();
    let addr = server.local_addr().unwrap();
    let serving = tokio::spawn(server.serve(|ws, _request| async move {
        let _ = spawn_echo(ws).await;
    }));
    let mut raw = RawPeer::new(TcpStream::connect(addr).await.unwrap(), None);
    raw.write(upgrade_request("").replacen("GET ", "PUT ", 1).as_bytes())
        .await;
    let answer = within("reject", raw.read_to_end()).await;
    assert!(answer.starts_with(b"HTTP/1.1 405 "));

    let (mut ws, _) = within("connect", sockeye::connect(&format!("ws://{addr}/")))
        .await
        .unwrap();
    ws.send(Message::text("still here")).await.unwrap();
    assert_eq!(
        within("echo", ws.next()).await.unwrap().unwrap(),
        Message::text("still here")
    );
    ws.close(sockeye::CloseCode::NORMAL, "").await.unwrap();
    serving.abort();
}

/// Bytes the client sends right behind its request are the first WebSocket bytes.
#[tokio::test]
async fn frames_right_after_the_request_are_not_lost() {
    let server = Server::bind("127.0.0.1:0").await.unwrap();
    let addr = server.local_addr().unwrap();
    let (accepted, _raw) = within("handshake", async {
        tokio::join!(server.accept(), async {
            let mut raw = RawPeer::new(TcpStream::connect(addr).await.unwrap(), None);
            let mut bytes = upgrade_request("").into_bytes();
            bytes.extend(frame(true, TEXT, b"early", Some([1, 2, 3, 4])));
            bytes.extend(frame(true, PING, b"p", Some([5, 6, 7, 8])));
            raw.write(&bytes).await;
            let head = raw.read_head().await;
            assert!(head.starts_with("HTTP/1.1 101 "));
            raw
        })
    })
    .await;
    let (mut ws, _, _) = accepted.unwrap();
    assert_eq!(
        within("next", ws.next()).await.unwrap().unwrap(),
        Message::text("early")
    );
    assert_eq!(
        within("next", ws.next()).await.unwrap().unwrap(),
        Message::Ping(sockeye::bytes::Bytes::from_static(b"p"))
    );
}

// ---- Client side ----------------------------------------------------------------------------

/// Connects to a raw server that answers with `answer(accept)`.
async fn connect_to(
    answer: impl FnOnce(&str) -> Vec<u8>,
    config: WebSocketConfig,
) -> (
    Result<sockeye::WebSocketStream<sockeye::Transport<TcpStream>>, Error>,
    RawPeer<TcpStream>,
) {
    let (listener, url) = listener().await;
    let (client, raw) = within("client handshake", async {
        tokio::join!(
            sockeye::connect_with_config(&url, config),
            raw_server_accept(&listener, answer)
        )
    })
    .await;
    (client.map(|(ws, _)| ws), raw)
}

#[tokio::test]
async fn client_refuses_non_101_answers() {
    for (status, code) in [("200 OK", 200), ("403 Forbidden", 403)] {
        let (result, _raw) = connect_to(
            |_| format!("HTTP/1.1 {status}\r\nContent-Length: 0\r\n\r\n").into_bytes(),
            WebSocketConfig::default(),
        )
        .await;
        match result {
            // The refusal comes back whole, so the caller sees why.
            Err(Error::Http(response)) => assert_eq!(response.status().as_u16(), code),
            other => panic!("{status}: expected Error::Http, got {other:?}"),
        }
    }
}

#[tokio::test]
async fn client_refuses_a_wrong_accept_key() {
    let (result, _raw) =
        connect_to(|_| switching_protocols(ACCEPT), WebSocketConfig::default()).await;
    match result {
        Err(Error::Handshake(e)) => assert_eq!(*e, HandshakeError::BadAccept),
        other => panic!("expected BadAccept, got {other:?}"),
    }
    // A missing one too.
    let (result, _raw) = connect_to(
        |_| {
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n"
                .to_vec()
        },
        WebSocketConfig::default(),
    )
    .await;
    assert!(matches!(result, Err(Error::Handshake(e)) if *e == HandshakeError::BadAccept));
}

#[tokio::test]
async fn client_times_out_on_a_silent_server() {
    let start = Instant::now();
    let (result, _raw) = connect_to(
        |_| Vec::new(),
        WebSocketConfig::default().handshake_timeout(SHORT),
    )
    .await;
    assert!(matches!(result, Err(Error::HandshakeTimeout)), "{result:?}");
    assert!(start.elapsed() >= SHORT);
}

#[tokio::test]
async fn client_reports_a_server_that_hangs_up() {
    let (listener, url) = listener().await;
    let (client, ()) = within("connect", async {
        tokio::join!(sockeye::connect(&url), async {
            let mut raw = raw_server_accept(&listener, |_| b"HTTP/1.1 10".to_vec()).await;
            tokio::io::AsyncWriteExt::shutdown(&mut raw.io)
                .await
                .unwrap();
        })
    })
    .await;
    match client {
        Err(Error::Io(e)) => assert_eq!(e.kind(), std::io::ErrorKind::UnexpectedEof),
        other => panic!("expected UnexpectedEof, got {other:?}"),
    }
}

#[tokio::test]
async fn frames_in_the_same_write_as_the_101_are_not_lost() {
    let (result, mut raw) = connect_to(
        |accept| {
            let mut bytes = switching_protocols(accept);
            bytes.extend(frame(true, TEXT, b"first", None));
            bytes.extend(frame(false, BINARY, b"sec", None));
            bytes.extend(frame(true, CONTINUATION, b"ond", None));
            bytes.extend(frame(true, PING, b"hi", None));
            bytes
        },
        WebSocketConfig::default(),
    )
    .await;
    let mut ws = result.unwrap();
    let mut next = async || within("next", ws.next()).await.unwrap().unwrap();
    assert_eq!(next().await, Message::text("first"));
    assert_eq!(next().await, Message::binary(&b"second"[..]));
    assert_eq!(
        next().await,
        Message::Ping(sockeye::bytes::Bytes::from_static(b"hi"))
    );
    // The ping that came with the 101 was answered.
    let pong = within("pong", raw.read_frame()).await.unwrap();
    assert_eq!(
        (pong.opcode, pong.masked, pong.payload),
        (PONG, true, b"hi".to_vec())
    );
}

#[tokio::test]
async fn client_sends_the_url_resource_and_host() {
    let (listener, _) = listener().await;
    let port = listener.local_addr().unwrap().port();
    let url = format!("ws://127.0.0.1:{port}/chat/room?x=1&y=2");
    let (client, head) = within("connect", async {
        tokio::join!(sockeye::connect(&url), async {
            let (tcp, _) = listener.accept().await.unwrap();
            let mut raw = RawPeer::new(tcp, None);
            let head = raw.read_head().await;
            let key = header(&head, "sec-websocket-key").unwrap();
            let accept = sockeye_proto::handshake::accept_key(key.as_bytes());
            raw.write(&switching_protocols(&accept)).await;
            head
        })
    })
    .await;
    let (_ws, response) = client.unwrap();
    assert_eq!(response.status(), 101);
    assert!(
        head.starts_with("GET /chat/room?x=1&y=2 HTTP/1.1\r\n"),
        "{head}"
    );
    assert_eq!(
        header(&head, "host"),
        Some(format!("127.0.0.1:{port}").as_str())
    );
    assert_eq!(header(&head, "sec-websocket-version"), Some("13"));
    assert_eq!(header(&head, "upgrade"), Some("websocket"));
    let key = header(&head, "sec-websocket-key").unwrap();
    assert_eq!(key.len(), 24, "base64 of 16 bytes");
}

#[tokio::test]
async fn url_errors() {
    let cases = [
        (
            "ftp://example.com/",
            UrlError::UnsupportedScheme("ftp".into()),
        ),
        ("ws://example.com/#frag", UrlError::Fragment),
        ("not a url", UrlError::Malformed),
        ("example.com/chat", UrlError::Malformed),
        ("", UrlError::Malformed),
    ];
    for (url, want) in cases {
        match within(url, sockeye::connect(url)).await {
            Err(Error::Url(e)) => assert_eq!(e, want, "{url}"),
            other => panic!("{url}: expected {want:?}, got {other:?}"),
        }
    }
}

#[tokio::test]
async fn connection_refused_is_an_io_error() {
    // A port that was just free: bind, note it, release it.
    let (listener, url) = listener().await;
    drop(listener);
    match within("connect", sockeye::connect(&url)).await {
        Err(Error::Io(e)) => assert_eq!(e.kind(), std::io::ErrorKind::ConnectionRefused),
        other => panic!("expected a refused connection, got {other:?}"),
    }
}
