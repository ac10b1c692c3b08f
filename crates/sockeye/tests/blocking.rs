//! `sockeye::blocking` against the async layer and raw peers, over loopback TCP: the blocking
//! client talks to the async `Server`, the async client to a blocking server on a std
//! `TcpListener`; messages of every size, pings, close codes on both sides, refusals, TLS with
//! a private CA, protocol violations, limits, the handshake and close timeouts, and the
//! `blocking_client` example.

mod common;

use std::net::{SocketAddr, TcpListener};
use std::time::{Duration, Instant};

use common::*;
use futures_util::StreamExt as _;
use sockeye::blocking::{self, ClientWebSocket};
use sockeye::http;
use sockeye::{
    Accept, CloseCode, Closed, DeflateConfig, Error, HandshakeDecision, Initiator, Message,
    ProtocolError, SendError, Server, State, WebSocketConfig,
};
use tokio::io::AsyncReadExt as _;

/// Runs blocking code on tokio's blocking pool, failing the test after [`PATIENCE`].
async fn off_thread<T: Send + 'static>(what: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    within(what, tokio::task::spawn_blocking(f))
        .await
        .unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic()))
}

/// A std listener on a free loopback port.
fn std_listener() -> (TcpListener, SocketAddr) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().unwrap();
    (listener, addr)
}

/// What a blocking echo server saw: messages echoed, how `read` ended, and `close_info`.
#[derive(Debug)]
struct BlockingEchoReport {
    echoed: usize,
    /// How the reads ended: `Ok` at a clean close.
    end: Result<(), Error>,
    closed: Option<Closed>,
    state: State,
}

/// Accepts one connection on `listener` in a thread, with `config`, and echoes data messages
/// until `read` fails.
fn spawn_blocking_echo(
    listener: TcpListener,
    config: WebSocketConfig,
) -> std::thread::JoinHandle<BlockingEchoReport> {
    std::thread::spawn(move || {
        let (tcp, _) = listener.accept().expect("accept");
        // A hang fails the test instead of stalling it.
        tcp.set_read_timeout(Some(PATIENCE)).unwrap();
        let (mut ws, request) = blocking::accept_with_config(tcp, config).expect("accept");
        assert_eq!(request.uri(), "/echo");
        let mut echoed = 0;
        let end = loop {
            match ws.read() {
                Ok(Some(message)) => {
                    assert!(message.is_data(), "read returned {message:?}");
                    ws.send(message).expect("echo");
                    echoed += 1;
                }
                Ok(None) => break Ok(()),
                Err(e) => break Err(e),
            }
        };
        BlockingEchoReport {
            echoed,
            end,
            closed: ws.close_info().cloned(),
            state: ws.state(),
        }
    })
}

async fn join<T: Send + 'static>(what: &str, handle: std::thread::JoinHandle<T>) -> T {
    off_thread(what, move || handle.join())
        .await
        .unwrap_or_else(|e| std::panic::resume_unwind(e))
}

fn messages() -> Vec<Message> {
    vec![
        Message::text("hello"),
        Message::binary(pattern(1000, 1)),
        Message::text(""),
        Message::binary(Vec::new()),
        Message::binary(pattern(1 << 20, 2)),
        Message::text("ünïcödé ✓".repeat(10_000)),
    ]
}

/// Bounds every read and write of a blocking client to [`PATIENCE`], so that a hang fails the
/// test instead of stalling it.
fn bounded(ws: ClientWebSocket) -> ClientWebSocket {
    let tcp = ws.get_ref().get_ref();
    tcp.set_read_timeout(Some(PATIENCE)).unwrap();
    tcp.set_write_timeout(Some(PATIENCE)).unwrap();
    ws
}

/// An async `Server` on a free loopback port that echoes data messages and reports how each
/// connection ended.
async fn reporting_echo_server() -> (
    Serving,
    tokio::sync::mpsc::UnboundedReceiver<Option<Closed>>,
) {
    let (report_tx, report_rx) = tokio::sync::mpsc::unbounded_channel();
    let server = Server::bind("127.0.0.1:0").await.expect("bind");
    let serving = serve_in_background(server, move |mut ws, _request| {
        let report_tx = report_tx.clone();
        async move {
            while let Some(Ok(message)) = ws.next().await {
                if message.is_data() && ws.send(message).await.is_err() {
                    break;
                }
            }
            let _ = report_tx.send(ws.close_info().cloned());
        }
    });
    (serving, report_rx)
}

/// Sends `message` and reads the reply.
fn echo(ws: &mut ClientWebSocket, message: Message) -> Message {
    ws.send(message).expect("send");
    ws.read().expect("read").expect("a message, not the end")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blocking_client_echoes_with_the_async_server() {
    let (serving, mut report_rx) = reporting_echo_server().await;
    let url = format!("ws://{}/chat", serving.addr);
    let client_closed = off_thread("blocking client", move || {
        let (ws, response) = blocking::connect(&url).expect("connect");
        let mut ws = bounded(ws);
        assert_eq!(response.status(), 101);
        assert_eq!(ws.state(), State::Open);
        assert_eq!(ws.ready_state(), sockeye::ReadyState::Open);
        assert_eq!(ws.protocol(), None);
        assert_eq!(ws.extensions(), "");
        assert!(!ws.get_ref().is_tls());
        for message in messages() {
            assert_eq!(echo(&mut ws, message.clone()), message);
        }
        assert_eq!(ws.buffered_amount(), 0);
        ws.close(CloseCode::NORMAL, "bye").expect("close");
        assert_eq!(ws.state(), State::Closed);
        assert_eq!(ws.ready_state(), sockeye::ReadyState::Closed);
        // After the close handshake: reads end, sends are refused.
        assert!(matches!(ws.read(), Ok(None)));
        assert!(matches!(
            ws.send("late"),
            Err(Error::Send(SendError::Closed))
        ));
        // Closing again does nothing.
        ws.close(CloseCode::NORMAL, "again").expect("second close");
        ws.close_info().cloned().expect("close info")
    })
    .await;
    assert!(client_closed.was_clean, "{client_closed:?}");
    assert_eq!(client_closed.initiator, Initiator::Application);
    // The server echoed the client's code.
    assert_eq!(client_closed.code, CloseCode::NORMAL);
    let server_closed = within("server report", report_rx.recv())
        .await
        .expect("report")
        .expect("server close info");
    assert!(server_closed.was_clean, "{server_closed:?}");
    assert_eq!(server_closed.initiator, Initiator::Remote);
    assert_eq!(
        (server_closed.code, server_closed.reason.as_str()),
        (CloseCode::NORMAL, "bye")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn async_client_talks_to_a_blocking_server() {
    let (listener, addr) = std_listener();
    let server = spawn_blocking_echo(listener, WebSocketConfig::default());
    let (mut ws, _) = within("connect", sockeye::connect(&format!("ws://{addr}/echo")))
        .await
        .expect("connect");
    for message in messages() {
        assert_eq!(round_trip(&mut ws, message.clone()).await, message);
    }
    // The blocking server answers a ping while it waits in `read`.
    within(
        "ping",
        ws.send(Message::Ping(b"are you there".to_vec().into())),
    )
    .await
    .expect("ping");
    let pong = within("pong", ws.next())
        .await
        .expect("item")
        .expect("pong");
    assert_eq!(pong, Message::Pong(b"are you there".to_vec().into()));
    // And keeps echoing afterwards.
    assert_eq!(
        round_trip(&mut ws, Message::text("after the ping")).await,
        Message::text("after the ping")
    );
    within("close", ws.close(CloseCode(4000), "done"))
        .await
        .expect("close");
    let client_closed = ws.close_info().expect("closed");
    assert!(client_closed.was_clean, "{client_closed:?}");
    assert_eq!(client_closed.code, CloseCode(4000));

    let report = join("blocking server", server).await;
    assert_eq!(report.echoed, messages().len() + 1);
    assert!(matches!(report.end, Ok(())), "{:?}", report.end);
    assert_eq!(report.state, State::Closed);
    let closed = report.closed.expect("server close info");
    assert!(closed.was_clean, "{closed:?}");
    assert_eq!(closed.initiator, Initiator::Remote);
    assert_eq!(
        (closed.code, closed.reason.as_str()),
        (CloseCode(4000), "done")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blocking_server_closes_with_its_code() {
    let (listener, addr) = std_listener();
    let server = std::thread::spawn(move || {
        let (tcp, _) = listener.accept().expect("accept");
        tcp.set_read_timeout(Some(PATIENCE)).unwrap();
        let mut ws = blocking::accept(tcp).expect("accept");
        assert_eq!(
            ws.read().expect("read"),
            Some(Message::text("close please"))
        );
        ws.close(CloseCode::GOING_AWAY, "going away")
            .expect("close");
        assert!(matches!(ws.read(), Ok(None)));
        ws.close_info().cloned().expect("close info")
    });
    let (mut ws, _) = within("connect", sockeye::connect(&format!("ws://{addr}/")))
        .await
        .expect("connect");
    within("send", ws.send(Message::text("close please")))
        .await
        .expect("send");
    let Some(Ok(Message::Close(Some(frame)))) = within("close frame", ws.next()).await else {
        panic!("expected the server's close frame");
    };
    assert_eq!(
        (frame.code, &*frame.reason),
        (CloseCode::GOING_AWAY, "going away")
    );
    assert!(within("end", ws.next()).await.is_none());
    let client_closed = ws.close_info().expect("closed");
    assert!(client_closed.was_clean, "{client_closed:?}");
    assert_eq!(client_closed.initiator, Initiator::Remote);
    assert_eq!(client_closed.code, CloseCode::GOING_AWAY);

    let server_closed = join("blocking server", server).await;
    assert!(server_closed.was_clean, "{server_closed:?}");
    assert_eq!(server_closed.initiator, Initiator::Application);
    assert_eq!(server_closed.code, CloseCode::GOING_AWAY);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blocking_client_answers_pings() {
    let server = Server::bind("127.0.0.1:0").await.expect("bind");
    let serving = serve_in_background(server, |mut ws, _request| async move {
        ws.send(Message::Ping(b"ping 1".to_vec().into()))
            .await
            .expect("ping");
        // The blocking client answers while it waits for a data message.
        let answer = ws.next().await;
        let Some(Ok(Message::Pong(payload))) = answer else {
            panic!("expected a pong, got {answer:?}");
        };
        let reply = format!("pong {:?}", String::from_utf8_lossy(&payload));
        ws.send(Message::text(reply)).await.expect("send");
        while let Some(Ok(_)) = ws.next().await {}
    });
    let url = format!("ws://{}/", serving.addr);
    off_thread("blocking client", move || {
        let (ws, _) = blocking::connect(&url).expect("connect");
        let mut ws = bounded(ws);
        assert_eq!(
            ws.read().expect("read"),
            Some(Message::text("pong \"ping 1\""))
        );
        ws.close(CloseCode::NORMAL, "").expect("close");
    })
    .await;
}

/// Settings with permessage-deflate and the subprotocols `chat` and `superchat`.
fn deflate_and_protocols() -> WebSocketConfig {
    WebSocketConfig::default()
        .deflate(Some(DeflateConfig::default()))
        .protocols(["superchat", "chat"])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deflate_and_subprotocol_with_the_async_server() {
    let server = Server::bind("127.0.0.1:0")
        .await
        .expect("bind")
        .config(deflate_and_protocols());
    let serving = serve_in_background(server, echo_handler);
    let url = format!("ws://{}/", serving.addr);
    off_thread("blocking client", move || {
        let (ws, response) =
            blocking::connect_with_config(&url, deflate_and_protocols()).expect("connect");
        let mut ws = bounded(ws);
        assert_eq!(ws.protocol(), Some("superchat"));
        assert_eq!(response.headers()["sec-websocket-protocol"], "superchat");
        assert!(
            ws.extensions().starts_with("permessage-deflate"),
            "{}",
            ws.extensions()
        );
        let compressible = Message::text("squeeze me ".repeat(50_000));
        assert_eq!(echo(&mut ws, compressible.clone()), compressible);
        let noise = Message::binary(pattern(300_000, 5));
        assert_eq!(echo(&mut ws, noise.clone()), noise);
        ws.close(CloseCode::NORMAL, "").expect("close");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deflate_and_subprotocol_with_a_blocking_server() {
    let (listener, addr) = std_listener();
    let server = spawn_blocking_echo(listener, deflate_and_protocols());
    let client = WebSocketConfig::default()
        .deflate(Some(DeflateConfig::default()))
        .protocols(["chat", "superchat"]);
    let (mut ws, response) = within(
        "connect",
        sockeye::connect_with_config(&format!("ws://{addr}/echo"), client),
    )
    .await
    .expect("connect");
    // The server picks the first protocol in the client's order that it supports.
    assert_eq!(ws.protocol(), Some("chat"));
    let extensions = response.headers()["sec-websocket-extensions"]
        .to_str()
        .unwrap();
    assert!(extensions.starts_with("permessage-deflate"), "{extensions}");
    let compressible = Message::text("squeeze me ".repeat(50_000));
    assert_eq!(
        round_trip(&mut ws, compressible.clone()).await,
        compressible
    );
    within("close", ws.close(CloseCode::NORMAL, ""))
        .await
        .expect("close");
    let report = join("blocking server", server).await;
    assert_eq!(report.echoed, 1);
    assert!(report.closed.expect("closed").was_clean);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_handshake_is_an_http_error() {
    let server = Server::bind("127.0.0.1:0")
        .await
        .expect("bind")
        .on_handshake(|_| HandshakeDecision::reject(401, "token required\n"));
    let serving = serve_in_background(server, echo_handler);
    let url = format!("ws://{}/", serving.addr);
    let result = off_thread("blocking client", move || blocking::connect(&url)).await;
    match result {
        Err(Error::Http(response)) => {
            assert_eq!(response.status(), 401);
            assert_eq!(response.body(), b"token required\n");
        }
        other => panic!("expected Error::Http, got {other:?}"),
    }
}

/// A server that answers every handshake with `status` and `Location: location`.
async fn redirector(status: http::StatusCode, location: String) -> Serving {
    let server = Server::bind("127.0.0.1:0")
        .await
        .expect("bind")
        .on_handshake(move |_| {
            let mut response = http::Response::new(Vec::new());
            *response.status_mut() = status;
            response.headers_mut().insert(
                http::header::LOCATION,
                http::HeaderValue::from_str(&location).unwrap(),
            );
            HandshakeDecision::Reject(response)
        });
    serve_in_background(server, echo_handler)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn url_credentials_and_redirects() {
    // The target: accepts only the credentials of the URL, as `Authorization: Basic`.
    let target = Server::bind("127.0.0.1:0")
        .await
        .expect("bind")
        .on_handshake(|hs| {
            match hs.request.headers().get("authorization") {
                // base64("user:pa ss")
                Some(value) if value == "Basic dXNlcjpwYSBzcw==" => {
                    HandshakeDecision::Accept(Accept::with_protocol(None))
                }
                _ => HandshakeDecision::reject(401, "who are you?\n"),
            }
        });
    let target = serve_in_background(target, echo_handler);
    // A server that sends every client to the target.
    let location = format!("ws://user:pa%20ss@{}/moved", target.addr);
    let redirector = redirector(http::StatusCode::FOUND, location).await;
    let direct = format!("ws://user:pa%20ss@{}/", target.addr);
    let anonymous = format!("ws://{}/", target.addr);
    let redirected = format!("ws://{}/", redirector.addr);
    off_thread("blocking client", move || {
        let (ws, _) = blocking::connect(&direct).expect("with credentials");
        let mut ws = bounded(ws);
        assert_eq!(echo(&mut ws, Message::text("in")), Message::text("in"));
        ws.close(CloseCode::NORMAL, "").expect("close");
        match blocking::connect(&anonymous) {
            Err(Error::Http(response)) => assert_eq!(response.status(), 401),
            other => panic!("expected a 401, got {other:?}"),
        }
        // Redirects are not followed by default...
        match blocking::connect(&redirected) {
            Err(Error::Http(response)) => assert_eq!(response.status(), 302),
            other => panic!("expected a 302, got {other:?}"),
        }
        // ...and followed when allowed, with the credentials of the new URL.
        let config = WebSocketConfig::default().max_redirects(1);
        let (ws, _) = blocking::connect_with_config(&redirected, config).expect("redirected");
        let mut ws = bounded(ws);
        assert_eq!(
            echo(&mut ws, Message::text("moved")),
            Message::text("moved")
        );
        ws.close(CloseCode::NORMAL, "").expect("close");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn custom_headers_and_their_fate_across_a_redirect() {
    // The target records the token and cookie of every handshake.
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let record = seen.clone();
    let target = Server::bind("127.0.0.1:0")
        .await
        .expect("bind")
        .on_handshake(move |hs| {
            let header = |name| {
                hs.request
                    .headers()
                    .get(name)
                    .map(|v: &http::HeaderValue| v.to_str().unwrap().to_owned())
            };
            record
                .lock()
                .unwrap()
                .push((header("x-token"), header("cookie")));
            HandshakeDecision::Accept(Accept::with_protocol(None))
        });
    let target = serve_in_background(target, echo_handler);
    // Another port is another origin: the cookie stays behind, the token goes on.
    let location = format!("ws://{}/moved", target.addr);
    let redirector = redirector(http::StatusCode::TEMPORARY_REDIRECT, location).await;
    let direct = format!("ws://{}/", target.addr);
    let redirected = format!("ws://{}/", redirector.addr);
    off_thread("blocking client", move || {
        let mut headers = http::HeaderMap::new();
        headers.insert("x-token", http::HeaderValue::from_static("t"));
        headers.insert(http::header::COOKIE, http::HeaderValue::from_static("a=b"));
        for url in [&direct, &redirected] {
            let config = WebSocketConfig::default().max_redirects(1);
            let (ws, _) =
                blocking::connect_with_headers(url, headers.clone(), config).expect("connect");
            let mut ws = bounded(ws);
            assert_eq!(echo(&mut ws, Message::text("hi")), Message::text("hi"));
            ws.close(CloseCode::NORMAL, "").expect("close");
        }
    })
    .await;
    let token = || Some("t".to_owned());
    assert_eq!(
        *seen.lock().unwrap(),
        [(token(), Some("a=b".to_owned())), (token(), None)]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wss_with_a_private_ca() {
    let ca = TestCa::new();
    let serving = serve_in_background(
        tls_server(&ca.localhost(), WebSocketConfig::default()).await,
        echo_handler,
    );
    let url = format!("wss://localhost:{}/secure", serving.addr.port());
    let config = ca.client_config();
    let untrusted_url = url.clone();
    off_thread("wss client", move || {
        let (ws, response) = blocking::connect_with_config(&url, config).expect("wss");
        let mut ws = bounded(ws);
        assert_eq!(response.status(), 101);
        assert!(ws.get_ref().is_tls());
        assert_eq!(ws.get_ref().alpn_protocol(), Some(&b"http/1.1"[..]));
        for message in [
            Message::text("over tls"),
            Message::binary(pattern(1 << 20, 9)),
            Message::text(""),
        ] {
            assert_eq!(echo(&mut ws, message.clone()), message);
        }
        ws.close(CloseCode::NORMAL, "").expect("close");
        assert!(ws.close_info().expect("closed").was_clean);

        // The bundled roots alone do not trust the private CA.
        match blocking::connect(&untrusted_url) {
            Err(err @ Error::Tls(_)) => {
                let reason = error_chain(&err);
                assert!(reason.contains("UnknownIssuer"), "{reason}");
            }
            other => panic!("expected Error::Tls, got {other:?}"),
        }
    })
    .await;
}

/// A blocking client whose raw server sends `frame`: `read` fails with `expected` and the
/// server receives a close frame with `code`.
async fn client_sees_violation(frame: Vec<u8>, expected: ProtocolError, code: CloseCode) {
    let (listener, url) = listener().await;
    let client = tokio::task::spawn_blocking(move || {
        let (ws, _) = blocking::connect(&url).expect("connect");
        let mut ws = bounded(ws);
        let result = ws.read();
        (result, ws.close_info().cloned(), ws.read())
    });
    let mut peer = within(
        "raw server",
        raw_server_accept(&listener, switching_protocols),
    )
    .await;
    peer.write(&frame).await;
    let close = within("close frame", peer.read_frame())
        .await
        .expect("a close frame");
    assert_eq!(close.close_code().0, code.0);
    assert!(close.masked, "client frames are masked");
    let (result, closed, after) = within("client", client).await.unwrap();
    match result {
        Err(Error::Protocol(err)) => assert_eq!(err, expected),
        other => panic!("expected Error::Protocol({expected:?}), got {other:?}"),
    }
    let closed = closed.expect("close info");
    assert_eq!(closed.code, code);
    assert_eq!(closed.initiator, Initiator::Library);
    // After the failure is reported, the reads have ended.
    assert!(matches!(after, Ok(None)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn protocol_violations_fail_the_blocking_client() {
    client_sees_violation(
        frame(true, 0x3, b"", None),
        ProtocolError::ReservedOpCode(3),
        CloseCode::PROTOCOL_ERROR,
    )
    .await;
    client_sees_violation(
        frame(true, TEXT, b"\xff\xfe", None),
        ProtocolError::InvalidUtf8,
        CloseCode::INVALID_PAYLOAD,
    )
    .await;
    client_sees_violation(
        frame(true, TEXT, b"masked", Some([1, 2, 3, 4])),
        ProtocolError::MaskedFrame,
        CloseCode::PROTOCOL_ERROR,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unmasked_client_frame_fails_the_blocking_server() {
    let (listener, addr) = std_listener();
    let server = spawn_blocking_echo(listener, WebSocketConfig::default());
    let tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let mut peer = RawPeer::new(tcp, Some(RAW_MASK));
    let request = upgrade_request("").replace("GET /chat", "GET /echo");
    peer.write(request.as_bytes()).await;
    let head = within("101", peer.read_head()).await;
    assert!(head.starts_with("HTTP/1.1 101 "), "{head}");
    peer.send_frame(true, TEXT, b"fine").await;
    let echoed = within("echo", peer.read_frame()).await.expect("echo");
    assert_eq!(echoed.payload, b"fine");
    assert!(!echoed.masked);
    peer.write(&frame(true, TEXT, b"unmasked", None)).await;
    let close = within("close frame", peer.read_frame())
        .await
        .expect("close frame");
    assert_eq!(close.close_code().0, 1002);
    // The server closes TCP after failing the connection.
    within("end of stream", peer.expect_eof()).await;
    let report = join("blocking server", server).await;
    assert_eq!(report.echoed, 1);
    assert!(
        matches!(
            report.end,
            Err(Error::Protocol(ProtocolError::UnmaskedFrame))
        ),
        "{:?}",
        report.end
    );
    assert_eq!(
        report.closed.expect("closed").code,
        CloseCode::PROTOCOL_ERROR
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_request_head_is_431() {
    let (listener, addr) = std_listener();
    let server = std::thread::spawn(move || {
        let (tcp, _) = listener.accept().expect("accept");
        blocking::accept(tcp).map(|_| ())
    });
    let tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let mut peer = RawPeer::new(tcp, Some(RAW_MASK));
    let padding = format!("X-Padding: {}\r\n", "a".repeat(20_000));
    // The server may stop reading once over the limit: the rest of the write can fail.
    let request = upgrade_request(&padding);
    let _ = tokio::io::AsyncWriteExt::write_all(&mut peer.io, request.as_bytes()).await;
    let head = within("431", peer.read_head()).await;
    assert!(head.starts_with("HTTP/1.1 431 "), "{head}");
    // The server drains what is left of the request until the client goes.
    drop(peer);
    let result = join("blocking server", server).await;
    assert!(
        matches!(&result, Err(Error::Handshake(err)) if err.status() == 431),
        "{result:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_over_the_limit_is_1009() {
    let (listener, addr) = std_listener();
    let server = spawn_blocking_echo(
        listener,
        WebSocketConfig::default().max_message_size(Some(1024)),
    );
    let (mut ws, _) = within("connect", sockeye::connect(&format!("ws://{addr}/echo")))
        .await
        .expect("connect");
    let fits = Message::binary(pattern(1024, 3));
    assert_eq!(round_trip(&mut ws, fits.clone()).await, fits);
    within("send", ws.send(Message::binary(pattern(1025, 4))))
        .await
        .expect("send");
    let Some(Ok(Message::Close(Some(frame)))) = within("close frame", ws.next()).await else {
        panic!("expected a close frame");
    };
    assert_eq!(frame.code, CloseCode::MESSAGE_TOO_BIG);
    assert!(within("end", ws.next()).await.is_none());
    let report = join("blocking server", server).await;
    assert_eq!(report.echoed, 1);
    assert!(
        matches!(
            report.end,
            Err(Error::Protocol(ProtocolError::MessageTooBig {
                limit: 1024
            })) | Err(Error::Protocol(ProtocolError::FrameTooBig { limit: 1024 }))
        ),
        "{:?}",
        report.end
    );
    assert_eq!(
        report.closed.expect("closed").code,
        CloseCode::MESSAGE_TOO_BIG
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handshake_timeout_against_a_silent_peer() {
    const TIMEOUT: Duration = Duration::from_millis(300);
    // A server that accepts TCP and never answers.
    let (listener, addr) = std_listener();
    let silent = std::thread::spawn(move || {
        let (mut tcp, _) = listener.accept().expect("accept");
        tcp.set_read_timeout(Some(PATIENCE)).unwrap();
        // Read the request, answer nothing; return when the client gives up.
        let mut sink = Vec::new();
        let _ = std::io::Read::read_to_end(&mut tcp, &mut sink);
        sink
    });
    let config = WebSocketConfig::default().handshake_timeout(TIMEOUT);
    let (result, elapsed) = off_thread("client", move || {
        let start = Instant::now();
        let result = blocking::connect_with_config(&format!("ws://{addr}/"), config);
        (result, start.elapsed())
    })
    .await;
    assert!(matches!(result, Err(Error::HandshakeTimeout)), "{result:?}");
    assert!(elapsed >= TIMEOUT, "{elapsed:?}");
    assert!(elapsed < TIMEOUT * 10, "{elapsed:?}");
    let request = join("silent server", silent).await;
    assert!(request.starts_with(b"GET / HTTP/1.1\r\n"));

    // A client that connects and sends nothing: the blocking server gives up too.
    let (listener, addr) = std_listener();
    let server = std::thread::spawn(move || {
        let (tcp, _) = listener.accept().expect("accept");
        let start = Instant::now();
        let result = blocking::accept_with_config(
            tcp,
            WebSocketConfig::default().handshake_timeout(TIMEOUT),
        );
        (result.map(|_| ()), start.elapsed())
    });
    let mut tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let (result, elapsed) = join("blocking server", server).await;
    assert!(matches!(result, Err(Error::HandshakeTimeout)), "{result:?}");
    assert!(elapsed >= TIMEOUT, "{elapsed:?}");
    assert!(elapsed < TIMEOUT * 10, "{elapsed:?}");
    // The server dropped the connection without a word.
    let mut rest = Vec::new();
    within("server end", tcp.read_to_end(&mut rest))
        .await
        .expect("read");
    assert!(rest.is_empty(), "{rest:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn close_timeout_against_a_peer_that_never_answers() {
    const TIMEOUT: Duration = Duration::from_millis(300);
    let (listener, url) = listener().await;
    let config = WebSocketConfig::default().close_timeout(TIMEOUT);
    let client = tokio::task::spawn_blocking(move || {
        let (mut ws, _) = blocking::connect_with_config(&url, config).expect("connect");
        let start = Instant::now();
        let result = ws.close(CloseCode::NORMAL, "bye");
        (
            result,
            start.elapsed(),
            ws.close_info().cloned(),
            ws.state(),
        )
    });
    let mut peer = within(
        "raw server",
        raw_server_accept(&listener, switching_protocols),
    )
    .await;
    // The close frame arrives; no answer goes back.
    let close = within("close frame", peer.read_frame())
        .await
        .expect("close frame");
    assert_eq!(close.close_code(), (1000, "bye".to_owned()));
    let (result, elapsed, closed, state) = within("client", client).await.unwrap();
    assert!(matches!(result, Err(Error::AbnormalClosure)), "{result:?}");
    assert!(elapsed >= TIMEOUT, "{elapsed:?}");
    assert!(elapsed < TIMEOUT * 10, "{elapsed:?}");
    let closed = closed.expect("close info");
    assert!(!closed.was_clean);
    assert_eq!(closed.code, CloseCode::ABNORMAL);
    assert_eq!(state, State::Closed);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_timeout_on_the_socket_leaves_the_connection_usable() {
    let server = Server::bind("127.0.0.1:0").await.expect("bind");
    let serving = serve_in_background(server, echo_handler);
    let url = format!("ws://{}/", serving.addr);
    off_thread("client", move || {
        let (ws, _) = blocking::connect(&url).expect("connect");
        let mut ws = bounded(ws);
        ws.get_ref()
            .get_ref()
            .set_read_timeout(Some(Duration::from_millis(50)))
            .unwrap();
        match ws.read() {
            Err(Error::Io(e)) => assert!(
                matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ),
                "{e:?}"
            ),
            other => panic!("expected a timeout, got {other:?}"),
        }
        assert_eq!(ws.state(), State::Open);
        ws.get_ref()
            .get_ref()
            .set_read_timeout(Some(PATIENCE))
            .unwrap();
        assert_eq!(
            echo(&mut ws, Message::text("still here")),
            Message::text("still here")
        );
        ws.close(CloseCode::NORMAL, "").expect("close");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_blocking_client_example_echoes_its_arguments() {
    // Not bounded by PATIENCE: the build may wait for other builds sharing the target directory.
    let binary = tokio::task::spawn_blocking(|| example_binary("blocking_client", ""))
        .await
        .expect("build the example");
    let (serving, mut report_rx) = reporting_echo_server().await;
    let url = format!("ws://{}/", serving.addr);
    let example = binary.clone();
    let output = off_thread("run the example", move || {
        std::process::Command::new(example)
            .args([url.as_str(), "hello", "two words", "ünïcödé"])
            .output()
            .expect("run blocking_client")
    })
    .await;
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{:?}: {stderr}", output.status);
    assert_eq!(
        String::from_utf8_lossy(&output.stdout),
        "hello\ntwo words\nünïcödé\n"
    );
    let closed = within("server report", report_rx.recv())
        .await
        .expect("report")
        .expect("close info");
    assert!(closed.was_clean, "{closed:?}");
    assert_eq!(closed.code, CloseCode::NORMAL);

    // Bad usage exits 2; an unreachable server exits 1 with the reason.
    let (listener, addr) = std_listener();
    drop(listener);
    let (usage, refused) = off_thread("run the example", move || {
        let usage = std::process::Command::new(&binary).output().expect("run");
        let refused = std::process::Command::new(&binary)
            .arg(format!("ws://{addr}/"))
            .output()
            .expect("run");
        (usage, refused)
    })
    .await;
    assert_eq!(usage.status.code(), Some(2));
    assert_eq!(refused.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(stderr.starts_with("error: i/o error"), "{stderr}");
}
