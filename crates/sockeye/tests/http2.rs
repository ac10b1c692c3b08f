//! WebSockets over HTTP/2 (RFC 8441, feature `http2`): sockeye's client against sockeye's
//! server over TLS (ALPN `h2`, test CA from rcgen) and cleartext h2c with prior knowledge —
//! many WebSockets on one connection, large messages across HTTP/2 flow control, closing one
//! stream, refusals, graceful shutdown, HTTP/1.1 clients on the same port, and a server
//! without `SETTINGS_ENABLE_CONNECT_PROTOCOL`.
#![cfg(feature = "http2")]

mod common;

use std::collections::HashSet;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use common::*;
use futures_util::future::join_all;
use futures_util::StreamExt as _;
use sockeye::h2::H2Connection;
use sockeye::http::{Request, Version};
use sockeye::{
    ClientBuilder, CloseCode, DeflateConfig, Error, HandshakeDecision, Message, OriginPolicy,
    Server, ServerStream, WebSocketConfig,
};
use tokio::net::{TcpListener, TcpStream};

/// What the server's handler saw: per WebSocket, the HTTP version, peer and path.
#[derive(Debug, Default, Clone)]
struct Seen(Arc<Mutex<Vec<(Version, SocketAddr, String)>>>);

impl Seen {
    fn all(&self) -> Vec<(Version, SocketAddr, String)> {
        self.0.lock().expect("lock").clone()
    }
}

/// Serves `server` with an echo handler that records each connection in the returned `Seen`.
fn serve_echo(server: Server) -> (Serving, Seen) {
    let seen = Seen::default();
    let record = seen.clone();
    let serving = serve_in_background(server, move |ws: ServerStream, request: Request<()>| {
        let peer = ws.get_ref().peer_addr().expect("peer address");
        record.0.lock().expect("lock").push((
            request.version(),
            peer,
            request.uri().path().to_owned(),
        ));
        echo_handler(ws, request)
    });
    (serving, seen)
}

/// A cleartext server with HTTP/2 (h2c prior knowledge) on, and its `ws://` origin.
async fn h2c_server(config: WebSocketConfig) -> (Server, String) {
    let server = Server::bind("127.0.0.1:0")
        .await
        .expect("bind")
        .config(config)
        .http2(true);
    let url = format!("ws://{}", server.local_addr().expect("addr"));
    (server, url)
}

/// A TLS server (test CA) with HTTP/2 on, its `wss://` origin and the client settings that
/// trust it.
async fn h2_tls_server(config: WebSocketConfig) -> (Server, String, WebSocketConfig) {
    let ca = TestCa::new();
    let server = tls_server(&ca.localhost(), config).await.http2(true);
    let port = server.local_addr().expect("addr").port();
    (
        server,
        format!("wss://localhost:{port}"),
        ca.client_config(),
    )
}

/// Opens 100 WebSockets at once over one HTTP/2 connection to `origin`, exchanges a distinct
/// message on each (all in flight together), and checks the server saw 100 HTTP/2 handshakes
/// from a single peer address (one TCP connection).
async fn hundred_on_one_connection(origin: &str, config: WebSocketConfig, seen: &Seen) {
    let connection = within("h2 connect", H2Connection::connect(origin, config))
        .await
        .expect("h2 connection");
    let opened = within(
        "open 100",
        join_all((0..100).map(|i| {
            let connection = connection.clone();
            async move { connection.websocket(&format!("/socket/{i}")).await }
        })),
    )
    .await;
    let mut sockets = Vec::new();
    for (i, result) in opened.into_iter().enumerate() {
        let (ws, response) = result.unwrap_or_else(|e| panic!("socket {i}: {e:?}"));
        assert_eq!(response.status(), 200);
        assert_eq!(response.version(), Version::HTTP_2);
        assert_eq!(ws.get_ref().http_version(), Version::HTTP_2);
        sockets.push(ws);
    }
    // Every socket has its message in flight before any reply is read.
    within(
        "send 100",
        join_all(
            sockets
                .iter_mut()
                .enumerate()
                .map(|(i, ws)| ws.send(Message::text(format!("hello {i}")))),
        ),
    )
    .await
    .into_iter()
    .collect::<Result<Vec<()>, Error>>()
    .expect("send");
    for (i, ws) in sockets.iter_mut().enumerate() {
        let reply = within("reply", ws.next())
            .await
            .expect("stream open")
            .expect("reply");
        assert_eq!(reply, Message::text(format!("hello {i}")));
    }
    let all = seen.all();
    assert_eq!(all.len(), 100);
    assert!(all
        .iter()
        .all(|(version, _, _)| *version == Version::HTTP_2));
    let peers: HashSet<SocketAddr> = all.iter().map(|(_, peer, _)| *peer).collect();
    assert_eq!(
        peers.len(),
        1,
        "one TCP connection carries them all: {peers:?}"
    );
    let paths: HashSet<&str> = all.iter().map(|(_, _, path)| path.as_str()).collect();
    assert_eq!(paths.len(), 100);
    for mut ws in sockets {
        within("close", ws.close(CloseCode::NORMAL, ""))
            .await
            .expect("close");
        assert!(ws.close_info().expect("closed").was_clean);
    }
}

#[tokio::test]
async fn h2c_carries_100_concurrent_websockets_on_one_connection() {
    let (server, origin) = h2c_server(WebSocketConfig::default()).await;
    let (_serving, seen) = serve_echo(server);
    hundred_on_one_connection(&origin, WebSocketConfig::default(), &seen).await;
}

#[tokio::test]
async fn h2_over_tls_carries_100_concurrent_websockets_on_one_connection() {
    let (server, origin, client) = h2_tls_server(WebSocketConfig::default()).await;
    let (_serving, seen) = serve_echo(server);
    hundred_on_one_connection(&origin, client, &seen).await;
}

/// Echoes large messages on two sockets of one connection at once: each message is several
/// times the HTTP/2 stream and connection windows, so flow control must work both ways.
async fn large_messages(origin: &str, config: WebSocketConfig) {
    let connection = within("h2 connect", H2Connection::connect(origin, config))
        .await
        .expect("h2 connection");
    let (mut a, _) = within("open a", connection.websocket("/a"))
        .await
        .expect("a");
    let (mut b, _) = within("open b", connection.websocket("/b"))
        .await
        .expect("b");
    let big_binary = Message::binary(pattern(4 << 20, 1));
    let big_text = Message::text("x".repeat((1 << 20) + 7));
    let (ra, rb) = tokio::join!(
        round_trip(&mut a, big_binary.clone()),
        round_trip(&mut b, big_text.clone())
    );
    assert_eq!(ra, big_binary);
    assert_eq!(rb, big_text);
    // And again the other way round, on the same streams.
    let (ra, rb) = tokio::join!(
        round_trip(&mut a, big_text.clone()),
        round_trip(&mut b, big_binary.clone())
    );
    assert_eq!(ra, big_text);
    assert_eq!(rb, big_binary);
}

#[tokio::test]
async fn h2c_echoes_messages_of_several_mebibytes() {
    let (server, origin) = h2c_server(WebSocketConfig::default()).await;
    let (_serving, _seen) = serve_echo(server);
    large_messages(&origin, WebSocketConfig::default()).await;
}

#[tokio::test]
async fn h2_over_tls_echoes_messages_of_several_mebibytes() {
    let (server, origin, client) = h2_tls_server(WebSocketConfig::default()).await;
    let (_serving, _seen) = serve_echo(server);
    large_messages(&origin, client).await;
}

#[tokio::test]
async fn closing_or_dropping_one_websocket_leaves_the_others_open() {
    let (server, origin) = h2c_server(WebSocketConfig::default()).await;
    let (_serving, _seen) = serve_echo(server);
    let connection = within(
        "h2 connect",
        H2Connection::connect(&origin, WebSocketConfig::default()),
    )
    .await
    .expect("h2 connection");
    let mut sockets = Vec::new();
    for i in 0..4 {
        let (ws, _) = within("open", connection.websocket(&format!("/{i}")))
            .await
            .expect("open");
        sockets.push(ws);
    }
    let mut dropped = sockets.pop().expect("four");
    let mut closed = sockets.pop().expect("three");
    // A clean close handshake on one stream...
    within("close", closed.close(CloseCode::NORMAL, "done"))
        .await
        .expect("close");
    let info = closed.close_info().expect("closed");
    assert!(info.was_clean, "{info:?}");
    assert_eq!(info.code, CloseCode::NORMAL);
    // ...and an abrupt end of another (its stream is reset).
    assert_eq!(
        round_trip(&mut dropped, Message::text("last")).await,
        Message::text("last")
    );
    drop(dropped);
    for (i, ws) in sockets.iter_mut().enumerate() {
        let message = Message::text(format!("still here {i}"));
        assert_eq!(round_trip(ws, message.clone()).await, message);
    }
    assert!(!connection.is_closed());
    // The connection still opens new streams.
    let (mut fresh, _) = within("open again", connection.websocket("/again"))
        .await
        .expect("open again");
    assert_eq!(
        round_trip(&mut fresh, Message::binary(vec![1, 2, 3])).await,
        Message::binary(vec![1, 2, 3])
    );
}

#[tokio::test]
async fn refused_handshakes_show_their_status_and_leave_the_connection_usable() {
    let (server, origin, client) = h2_tls_server(WebSocketConfig::default()).await;
    let server = server
        .origin_policy(OriginPolicy::AllowList(vec!["https://good.example".into()]))
        .on_handshake(|hs| {
            if hs.request.uri().path() == "/private" {
                let mut refusal = sockeye::http::Response::new(b"token required\n".to_vec());
                *refusal.status_mut() = sockeye::http::StatusCode::UNAUTHORIZED;
                refusal.headers_mut().insert(
                    "www-authenticate",
                    sockeye::http::HeaderValue::from_static("Bearer"),
                );
                HandshakeDecision::Reject(refusal)
            } else {
                HandshakeDecision::Accept(sockeye::Accept::with_protocol(
                    hs.default_protocol.clone(),
                ))
            }
        });
    let (_serving, seen) = serve_echo(server);
    let connection = within("h2 connect", H2Connection::connect(&origin, client.clone()))
        .await
        .expect("h2 connection");

    match within("private", connection.websocket("/private")).await {
        Err(Error::Http(response)) => {
            assert_eq!(response.status(), 401);
            assert_eq!(response.headers()["www-authenticate"], "Bearer");
            assert_eq!(response.body(), b"token required\n");
        }
        other => panic!("expected a 401, got {other:?}"),
    }
    let mut evil = sockeye::http::HeaderMap::new();
    evil.insert("origin", "https://evil.example".parse().expect("value"));
    match within("bad origin", connection.websocket_with("/public", &evil)).await {
        Err(Error::Http(response)) => assert_eq!(response.status(), 403),
        other => panic!("expected a 403, got {other:?}"),
    }
    // The same refusal through ClientBuilder::http2 (one connection per socket).
    let refused = within(
        "builder private",
        ClientBuilder::new(format!("{origin}/private"))
            .config(client.clone())
            .http2(true)
            .connect(),
    )
    .await;
    assert!(
        matches!(&refused, Err(Error::Http(r)) if r.status() == 401),
        "{refused:?}"
    );

    let mut good = sockeye::http::HeaderMap::new();
    good.insert("origin", "https://good.example".parse().expect("value"));
    let (mut ws, _) = within("good origin", connection.websocket_with("/public", &good))
        .await
        .expect("allowed origin");
    assert_eq!(
        round_trip(&mut ws, Message::text("ok")).await,
        Message::text("ok")
    );
    assert_eq!(
        seen.all().len(),
        1,
        "only the accepted socket reaches the handler"
    );
}

#[tokio::test]
async fn a_refusal_with_a_2xx_status_does_not_open_a_websocket() {
    // Over HTTP/2 a 2xx answer is what accepts an extended CONNECT: a callback "refusing"
    // with one must not give the client a WebSocket the server never serves.
    let (server, origin) = h2c_server(WebSocketConfig::default()).await;
    let server = server.on_handshake(|hs| {
        let status = match hs.request.uri().path() {
            "/ok" => sockeye::http::StatusCode::OK,
            _ => sockeye::http::StatusCode::NO_CONTENT,
        };
        let mut refusal = sockeye::http::Response::new(Vec::new());
        *refusal.status_mut() = status;
        HandshakeDecision::Reject(refusal)
    });
    let (_serving, seen) = serve_echo(server);
    let connection = within(
        "h2 connect",
        H2Connection::connect(&origin, WebSocketConfig::default()),
    )
    .await
    .expect("h2 connection");
    for path in ["/ok", "/empty"] {
        match within("refused", connection.websocket(path)).await {
            Err(Error::Http(response)) => assert_eq!(response.status(), 500, "{path}"),
            other => panic!("{path}: expected a refusal, got {other:?}"),
        }
    }
    assert!(seen.all().is_empty());
    assert!(!connection.is_closed());
}

#[tokio::test]
async fn subprotocol_and_permessage_deflate_are_negotiated_over_h2() {
    let server_config = WebSocketConfig::default()
        .protocols(["v2.chat", "v1.chat"])
        .deflate(Some(DeflateConfig::default()));
    let (server, origin) = h2c_server(server_config).await;
    let (_serving, _seen) = serve_echo(server);
    let (mut ws, response) = within(
        "connect",
        ClientBuilder::new(format!("{origin}/chat"))
            .config(WebSocketConfig::default().deflate(Some(DeflateConfig::default())))
            .protocols(["v1.chat"])
            .http2(true)
            .connect(),
    )
    .await
    .expect("connect over h2c");
    assert_eq!(response.status(), 200);
    assert_eq!(ws.protocol(), Some("v1.chat"));
    assert!(
        ws.extensions().contains("permessage-deflate"),
        "{}",
        ws.extensions()
    );
    let text = Message::text("compress me ".repeat(10_000));
    assert_eq!(round_trip(&mut ws, text.clone()).await, text);
}

#[tokio::test]
async fn http11_clients_still_work_on_an_http2_server() {
    let (server, origin) = h2c_server(WebSocketConfig::default()).await;
    let (_serving, seen) = serve_echo(server);
    let (mut ws, response) = within("h1 connect", sockeye::connect(&format!("{origin}/h1")))
        .await
        .expect("http/1.1 client");
    assert_eq!(response.status(), 101);
    assert_eq!(ws.get_ref().http_version(), Version::HTTP_11);
    assert_eq!(
        round_trip(&mut ws, Message::text("one")).await,
        Message::text("one")
    );

    let (server, origin, client) = h2_tls_server(WebSocketConfig::default()).await;
    let (_serving_tls, seen_tls) = serve_echo(server);
    let (mut ws, _) = within(
        "h1 over tls",
        sockeye::connect_with_config(&format!("{origin}/h1"), client),
    )
    .await
    .expect("http/1.1 over tls");
    assert_eq!(ws.get_ref().alpn_protocol(), Some(&b"http/1.1"[..]));
    assert_eq!(
        round_trip(&mut ws, Message::text("two")).await,
        Message::text("two")
    );
    assert_eq!(seen.all()[0].0, Version::HTTP_11);
    assert_eq!(seen_tls.all()[0].0, Version::HTTP_11);
}

#[tokio::test]
async fn a_tls_server_without_http2_is_reported_clearly() {
    let ca = TestCa::new();
    let server = tls_server(&ca.localhost(), WebSocketConfig::default()).await;
    let port = server.local_addr().expect("addr").port();
    let (_serving, _seen) = serve_echo(server);
    let result = within(
        "h2 to an http/1.1-only server",
        H2Connection::connect(&format!("wss://localhost:{port}"), ca.client_config()),
    )
    .await;
    assert!(
        matches!(result, Err(Error::Http2NotNegotiated)),
        "{result:?}"
    );
}

/// A bare hyper HTTP/2 server that does not enable extended CONNECT.
async fn plain_h2_server() -> SocketAddr {
    plain_h2_server_with(None).await
}

/// A bare hyper HTTP/2 server that does not enable extended CONNECT, announcing
/// `max_streams` as its `SETTINGS_MAX_CONCURRENT_STREAMS` when given.
async fn plain_h2_server_with(max_streams: Option<u32>) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        // Bounded: the test makes one connection.
        if let Ok((tcp, _)) = listener.accept().await {
            let service = hyper::service::service_fn(|_request| async {
                Ok::<_, Infallible>(hyper::Response::new(http_body_util::Empty::<
                    hyper::body::Bytes,
                >::new()))
            });
            let mut builder =
                hyper::server::conn::http2::Builder::new(hyper_util::rt::TokioExecutor::new());
            builder.max_concurrent_streams(max_streams);
            let _ = builder
                .serve_connection(hyper_util::rt::TokioIo::new(tcp), service)
                .await;
        }
    });
    addr
}

#[tokio::test]
async fn a_server_without_enable_connect_protocol_is_a_clear_error() {
    let addr = plain_h2_server().await;
    let result = within(
        "connect",
        ClientBuilder::new(format!("ws://{addr}/"))
            .http2(true)
            .connect(),
    )
    .await;
    match result {
        Err(err @ Error::ExtendedConnectDisabled) => {
            assert!(err.to_string().contains("SETTINGS_ENABLE_CONNECT_PROTOCOL"));
        }
        other => panic!("expected ExtendedConnectDisabled, got {other:?}"),
    }
}

#[tokio::test]
async fn a_server_allowing_one_stream_without_enable_connect_protocol_is_a_clear_error() {
    // Its SETTINGS must be recognised as received (not waited for until the handshake
    // timeout) whatever SETTINGS_MAX_CONCURRENT_STREAMS it announces.
    let addr = plain_h2_server_with(Some(1)).await;
    let config = WebSocketConfig::default().handshake_timeout(std::time::Duration::from_secs(10));
    let result = within_for(
        std::time::Duration::from_secs(5),
        "connect",
        ClientBuilder::new(format!("ws://{addr}/"))
            .config(config)
            .http2(true)
            .connect(),
    )
    .await;
    assert!(
        matches!(result, Err(Error::ExtendedConnectDisabled)),
        "{result:?}"
    );
}

#[tokio::test]
async fn graceful_shutdown_closes_h2_websockets_with_1001() {
    let (server, origin) = h2c_server(WebSocketConfig::default()).await;
    let (mut serving, _seen) = serve_echo(server);
    let connection = within(
        "h2 connect",
        H2Connection::connect(&origin, WebSocketConfig::default()),
    )
    .await
    .expect("h2 connection");
    let (mut a, _) = within("open", connection.websocket("/a")).await.expect("a");
    let (mut b, _) = within("open", connection.websocket("/b")).await.expect("b");
    assert_eq!(
        round_trip(&mut a, Message::text("x")).await,
        Message::text("x")
    );
    assert_eq!(
        round_trip(&mut b, Message::text("y")).await,
        Message::text("y")
    );
    serving.signal();
    for ws in [&mut a, &mut b] {
        // The server's close frame arrives; the stream then ends.
        while let Some(item) = within("closing", ws.next()).await {
            if item.is_err() {
                break;
            }
        }
        let info = ws.close_info().expect("closed");
        assert_eq!(info.code, CloseCode::GOING_AWAY, "{info:?}");
    }
    within("server stops", serving.task)
        .await
        .expect("join")
        .expect("serve");
}

#[tokio::test]
async fn plain_requests_over_h2_reach_on_http() {
    let (server, origin) = h2c_server(WebSocketConfig::default()).await;
    let server = server.on_http(|request| {
        (request.uri().path() == "/page").then(|| {
            sockeye::http::Response::new(format!("page over {:?}", request.version()).into_bytes())
        })
    });
    let (_serving, _seen) = serve_echo(server);
    let addr = origin.trim_start_matches("ws://").to_owned();
    let tcp = TcpStream::connect(&addr).await.expect("connect");
    let (mut sender, connection) =
        hyper::client::conn::http2::handshake::<_, _, http_body_util::Empty<hyper::body::Bytes>>(
            hyper_util::rt::TokioExecutor::new(),
            hyper_util::rt::TokioIo::new(tcp),
        )
        .await
        .expect("h2c handshake");
    tokio::spawn(connection);
    for (path, status, body) in [("/page", 200, "page over HTTP/2.0"), ("/missing", 405, "")] {
        let request = hyper::Request::get(format!("http://{addr}{path}"))
            .body(http_body_util::Empty::new())
            .expect("request");
        let response = within("get", sender.send_request(request))
            .await
            .expect("response");
        assert_eq!(response.status(), status, "{path}");
        let bytes = within(
            "body",
            http_body_util::BodyExt::collect(response.into_body()),
        )
        .await
        .expect("body")
        .to_bytes();
        if !body.is_empty() {
            assert_eq!(bytes, body.as_bytes());
        }
    }
}

#[tokio::test]
async fn an_h2_connection_without_websockets_is_closed_after_the_handshake_timeout() {
    let timeout = std::time::Duration::from_millis(300);
    let (server, origin) = h2c_server(WebSocketConfig::default().handshake_timeout(timeout)).await;
    let (_serving, _seen) = serve_echo(server);
    let connection = within(
        "h2 connect",
        H2Connection::connect(&origin, WebSocketConfig::default()),
    )
    .await
    .expect("h2 connection");
    let (mut ws, _) = within("open", connection.websocket("/x"))
        .await
        .expect("open");
    // An open WebSocket keeps the connection, however long it is quiet.
    tokio::time::sleep(timeout * 3).await;
    assert_eq!(
        round_trip(&mut ws, Message::text("still")).await,
        Message::text("still")
    );
    assert!(!connection.is_closed());
    within("close", ws.close(CloseCode::NORMAL, ""))
        .await
        .expect("close");
    // Without one, the server sends GOAWAY and the connection ends.
    within("goaway", async {
        while !connection.is_closed() {
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    })
    .await;
}

/// A raw extended CONNECT stream to a sockeye h2c server, driven by hand: hyper's client
/// without sockeye's, so that the test writes the WebSocket frames itself.
async fn raw_h2_stream(
    addr: SocketAddr,
    path: &str,
) -> RawPeer<hyper_util::rt::TokioIo<hyper::upgrade::Upgraded>> {
    let tcp = TcpStream::connect(addr).await.expect("connect");
    let (mut sender, connection) =
        hyper::client::conn::http2::handshake::<_, _, http_body_util::Empty<hyper::body::Bytes>>(
            hyper_util::rt::TokioExecutor::new(),
            hyper_util::rt::TokioIo::new(tcp),
        )
        .await
        .expect("h2c handshake");
    tokio::spawn(connection);
    let mut request = hyper::Request::builder()
        .method("CONNECT")
        .uri(format!("http://{addr}{path}"))
        .header("sec-websocket-version", "13")
        .body(http_body_util::Empty::new())
        .expect("request");
    request
        .extensions_mut()
        .insert(hyper::ext::Protocol::from_static("websocket"));
    let mut response = within("extended connect", sender.send_request(request))
        .await
        .expect("response");
    assert_eq!(response.status(), 200);
    assert!(!response.headers().contains_key("sec-websocket-accept"));
    let upgraded = within("upgrade", hyper::upgrade::on(&mut response))
        .await
        .expect("upgraded stream");
    RawPeer::new(hyper_util::rt::TokioIo::new(upgraded), Some([1, 2, 3, 4]))
}

#[tokio::test]
async fn protocol_violations_over_h2_get_the_rfc_6455_close_codes() {
    let (server, origin) = h2c_server(WebSocketConfig::default()).await;
    let (_serving, _seen) = serve_echo(server);
    let addr: SocketAddr = origin.trim_start_matches("ws://").parse().expect("addr");

    // A well-formed exchange first: the server echoes, unmasked.
    let mut peer = raw_h2_stream(addr, "/ok").await;
    peer.send_frame(true, TEXT, b"hi").await;
    let echo = within("echo", peer.read_frame()).await.expect("frame");
    assert_eq!(
        (echo.opcode, echo.masked, echo.payload.as_slice()),
        (TEXT, false, &b"hi"[..])
    );

    // Invalid UTF-8 in a text message: 1007.
    let mut peer = raw_h2_stream(addr, "/utf8").await;
    peer.send_frame(true, TEXT, &[0xff, 0xfe]).await;
    let close = within("close", peer.read_frame())
        .await
        .expect("close frame");
    assert_eq!(close.close_code().0, 1007);

    // An unmasked frame from a client: 1002.
    let mut peer = raw_h2_stream(addr, "/unmasked").await;
    peer.mask = None;
    peer.send_frame(true, BINARY, b"x").await;
    let close = within("close", peer.read_frame())
        .await
        .expect("close frame");
    assert_eq!(close.close_code().0, 1002);
}

#[tokio::test]
async fn invalid_extended_connects_get_the_rfc_status() {
    let (server, origin) = h2c_server(WebSocketConfig::default()).await;
    let (_serving, seen) = serve_echo(server);
    let addr: SocketAddr = origin.trim_start_matches("ws://").parse().expect("addr");
    let tcp = TcpStream::connect(addr).await.expect("connect");
    let (mut sender, connection) =
        hyper::client::conn::http2::handshake::<_, _, http_body_util::Empty<hyper::body::Bytes>>(
            hyper_util::rt::TokioExecutor::new(),
            hyper_util::rt::TokioIo::new(tcp),
        )
        .await
        .expect("h2c handshake");
    tokio::spawn(connection);
    // (sec-websocket-version, :protocol) -> status
    for (version, protocol, status) in [
        (Some("8"), Some("websocket"), 426),
        (None, Some("websocket"), 400),
        (Some("13"), Some("webtransport"), 400),
    ] {
        let mut builder = hyper::Request::builder()
            .method("CONNECT")
            .uri(format!("http://{addr}/x"));
        if let Some(version) = version {
            builder = builder.header("sec-websocket-version", version);
        }
        let mut request = builder.body(http_body_util::Empty::new()).expect("request");
        if let Some(protocol) = protocol {
            request
                .extensions_mut()
                .insert(hyper::ext::Protocol::from_static(protocol));
        }
        let response = within("answer", sender.send_request(request))
            .await
            .expect("response");
        assert_eq!(response.status(), status, "{version:?} {protocol:?}");
        if status == 426 {
            assert_eq!(response.headers()["sec-websocket-version"], "13");
        }
        assert!(!response.headers().contains_key("connection"));
    }
    assert!(
        seen.all().is_empty(),
        "no refused stream reaches the handler"
    );
}

/// Sends `bytes` to a fresh h2c connection to `addr`, then reads (never answering: no SETTINGS
/// ACK, no PING ACK) until the server closes the connection; panics if it is still open after
/// `limit`.
async fn silent_h2c_peer_is_dropped(addr: SocketAddr, bytes: &[u8], limit: std::time::Duration) {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let mut tcp = TcpStream::connect(addr).await.expect("connect");
    tcp.write_all(bytes).await.expect("write");
    let mut buf = [0; 4096];
    within_for(limit, "the server drops a silent HTTP/2 peer", async {
        // Bounded by `limit`: each read returns data, EOF or an error.
        loop {
            match tcp.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
        }
    })
    .await;
}

#[tokio::test]
async fn a_silent_h2_peer_is_dropped_after_the_goaway_grace() {
    let timeout = std::time::Duration::from_millis(300);
    let (server, origin) = h2c_server(WebSocketConfig::default().handshake_timeout(timeout)).await;
    let (_serving, _seen) = serve_echo(server);
    let addr: SocketAddr = origin.trim_start_matches("ws://").parse().expect("addr");
    // An empty SETTINGS frame: length 0, type 4, no flags, stream 0.
    let settings = [0, 0, 0, 4, 0, 0, 0, 0, 0];
    let preface = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
    let with_settings = [&preface[..], &settings[..]].concat();
    // The idle GOAWAY (after `timeout`) waits for the PING it sends to be answered; a peer
    // that never answers must not keep the connection (and its `max_connections` slot).
    for bytes in [&preface[..], &with_settings[..]] {
        silent_h2c_peer_is_dropped(addr, bytes, timeout * 10).await;
    }
}

/// An HPACK header block of literal fields without indexing (RFC 7541 §6.2.2), no Huffman
/// coding: names and values shorter than 127 bytes.
fn hpack_literals(fields: &[(&str, &str)]) -> Vec<u8> {
    let mut block = Vec::new();
    for (name, value) in fields {
        block.push(0);
        for part in [name, value] {
            block.push(u8::try_from(part.len()).expect("short field"));
            block.extend_from_slice(part.as_bytes());
        }
    }
    block
}

/// An HTTP/2 frame: 24-bit length, type, flags, stream id, payload.
fn h2_frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = u32::try_from(payload.len())
        .expect("short frame")
        .to_be_bytes();
    let mut frame = vec![len[1], len[2], len[3], kind, flags];
    frame.extend_from_slice(&stream.to_be_bytes());
    frame.extend_from_slice(payload);
    frame
}

#[tokio::test]
async fn extended_connects_with_connection_specific_headers_are_reset() {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    const HEADERS: u8 = 1;
    const RST_STREAM: u8 = 3;
    const SETTINGS: u8 = 4;
    const END_HEADERS: u8 = 4;
    let (server, origin) = h2c_server(WebSocketConfig::default()).await;
    let (_serving, seen) = serve_echo(server);
    let addr: SocketAddr = origin.trim_start_matches("ws://").parse().expect("addr");
    let authority = addr.to_string();
    let request = |extra: Option<(&'static str, &'static str)>| {
        let mut fields = vec![
            (":method", "CONNECT"),
            (":protocol", "websocket"),
            (":scheme", "http"),
            (":path", "/raw"),
            (":authority", authority.as_str()),
            ("sec-websocket-version", "13"),
        ];
        fields.extend(extra);
        hpack_literals(&fields)
    };
    let mut tcp = TcpStream::connect(addr).await.expect("connect");
    let mut out = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
    out.extend(h2_frame(SETTINGS, 0, 0, &[]));
    // Stream 1 is well-formed (so the encoding is known good); 3, 5 and 7 are not (RFC 9113
    // §8.2.2: connection-specific fields make a request malformed, a stream error).
    out.extend(h2_frame(HEADERS, END_HEADERS, 1, &request(None)));
    out.extend(h2_frame(
        HEADERS,
        END_HEADERS,
        3,
        &request(Some(("connection", "upgrade"))),
    ));
    out.extend(h2_frame(
        HEADERS,
        END_HEADERS,
        5,
        &request(Some(("upgrade", "websocket"))),
    ));
    out.extend(h2_frame(
        HEADERS,
        END_HEADERS,
        7,
        &request(Some(("te", "gzip"))),
    ));
    tcp.write_all(&out).await.expect("write");
    let mut answered = HashSet::new();
    let mut reset = HashSet::new();
    within("answers to the four streams", async {
        // Bounded: ends once four streams are answered, or at EOF.
        while answered.len() + reset.len() < 4 {
            let mut head = [0; 9];
            if tcp.read_exact(&mut head).await.is_err() {
                break;
            }
            let len = usize::from(head[0]) << 16 | usize::from(head[1]) << 8 | usize::from(head[2]);
            let stream = u32::from_be_bytes([head[5] & 0x7f, head[6], head[7], head[8]]);
            let mut payload = vec![0; len];
            tcp.read_exact(&mut payload).await.expect("payload");
            match head[3] {
                HEADERS => {
                    answered.insert(stream);
                }
                RST_STREAM => {
                    let code = u32::from_be_bytes(payload[..4].try_into().expect("code"));
                    assert_eq!(code, 1, "PROTOCOL_ERROR on stream {stream}");
                    reset.insert(stream);
                }
                _ => {}
            }
        }
    })
    .await;
    assert_eq!(answered, HashSet::from([1]));
    assert_eq!(reset, HashSet::from([3, 5, 7]));
    within("handler", async {
        while seen.all().is_empty() {
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
    })
    .await;
    assert_eq!(seen.all().len(), 1);
}

/// The h2c preface sent in pieces with pauses between them still opens an HTTP/2 connection:
/// the server reads until it can tell, then hands HTTP/2 every byte it read (its SETTINGS
/// answer shows hyper took the preface).
#[tokio::test]
async fn an_h2c_preface_split_across_writes_is_recognised() {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let (server, origin) = h2c_server(WebSocketConfig::default()).await;
    let (_serving, _seen) = serve_echo(server);
    let addr: SocketAddr = origin.trim_start_matches("ws://").parse().expect("addr");
    let preface = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
    let mut tcp = TcpStream::connect(addr).await.expect("connect");
    for piece in [
        &preface[..1],
        &preface[1..5],
        &preface[5..23],
        &preface[23..],
    ] {
        tcp.write_all(piece).await.expect("write");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    // An empty SETTINGS frame: length 0, type 4, no flags, stream 0.
    tcp.write_all(&[0, 0, 0, 4, 0, 0, 0, 0, 0])
        .await
        .expect("write settings");
    let mut header = [0; 9];
    within("the server's first frame", tcp.read_exact(&mut header))
        .await
        .expect("read");
    assert_eq!(
        header[3], 4,
        "the server's first frame is SETTINGS: {header:?}"
    );
}

/// A client that sends nothing, or part of the h2c preface, and then waits is dropped after the
/// handshake timeout, without an answer: neither HTTP/2 nor HTTP/1.1 can start.
#[tokio::test]
async fn a_silent_client_or_a_partial_h2c_preface_hits_the_handshake_timeout() {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let timeout = std::time::Duration::from_millis(300);
    let (server, origin) = h2c_server(WebSocketConfig::default().handshake_timeout(timeout)).await;
    let (_serving, seen) = serve_echo(server);
    let addr: SocketAddr = origin.trim_start_matches("ws://").parse().expect("addr");
    for start in [&b""[..], b"PRI * HTTP/2.0\r\n"] {
        let mut tcp = TcpStream::connect(addr).await.expect("connect");
        tcp.write_all(start).await.expect("write");
        let started = std::time::Instant::now();
        let mut answer = Vec::new();
        within_for(timeout * 10, "the server drops a stalled client", async {
            // Ends at EOF or a reset.
            let _ = tcp.read_to_end(&mut answer).await;
        })
        .await;
        let waited = started.elapsed();
        assert!(waited >= timeout, "closed before the timeout: {waited:?}");
        assert!(answer.is_empty(), "answered: {answer:?}");
    }
    assert!(seen.all().is_empty());
}

/// An HTTP/1.1 upgrade to an h2c-enabled server, written one byte at a time and followed at
/// once by a frame: the bytes read to rule out HTTP/2 are part of the request, and the frame
/// sent with the request's end reaches the WebSocket.
#[tokio::test]
async fn an_http11_upgrade_written_byte_by_byte_reaches_the_handler_whole() {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let (server, origin) = h2c_server(WebSocketConfig::default()).await;
    let (_serving, seen) = serve_echo(server);
    let addr: SocketAddr = origin.trim_start_matches("ws://").parse().expect("addr");
    let mut tcp = TcpStream::connect(addr).await.expect("connect");
    let request = format!(
        "GET /bytes HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    );
    let (head, end) = request.as_bytes().split_at(request.len() - 1);
    for byte in head {
        tcp.write_all(&[*byte]).await.expect("write");
    }
    // The request's last byte and a masked binary frame "hi" (key 0): one write.
    let frame = [0x82, 0x82, 0, 0, 0, 0, b'h', b'i'];
    tcp.write_all(&[end, &frame[..]].concat())
        .await
        .expect("write");
    let mut seen_bytes = Vec::new();
    let mut chunk = [0; 512];
    within("the 101 and the echo", async {
        while !seen_bytes.ends_with(&[0x82, 2, b'h', b'i']) {
            let n = tcp.read(&mut chunk).await.expect("read");
            assert_ne!(n, 0, "closed: {}", String::from_utf8_lossy(&seen_bytes));
            seen_bytes.extend_from_slice(&chunk[..n]);
        }
    })
    .await;
    assert!(seen_bytes.starts_with(b"HTTP/1.1 101 "));
    let seen = seen.all();
    assert_eq!(seen.len(), 1);
    assert_eq!(
        (seen[0].0, seen[0].2.as_str()),
        (Version::HTTP_11, "/bytes")
    );
}

/// A WebSocket stream over `max_connections` is refused with the same answer as an HTTP/1.1
/// connection over it: 503 with `Retry-After: 1` and no body; the HTTP/2 connection and its
/// open WebSocket go on.
#[tokio::test]
async fn a_stream_over_the_connection_limit_gets_503_with_retry_after() {
    let (server, origin) = h2c_server(WebSocketConfig::default()).await;
    // One slot for the TCP connection, one for the first WebSocket stream.
    let (_serving, _seen) = serve_echo(server.max_connections(2));
    let connection = within(
        "h2c connect",
        H2Connection::connect(&origin, WebSocketConfig::default()),
    )
    .await
    .expect("h2c connection");
    let (mut first, _) = within("first", connection.websocket("/one"))
        .await
        .expect("first websocket");
    match within("second", connection.websocket("/two")).await {
        Err(Error::Http(response)) => {
            assert_eq!(response.status(), 503);
            assert_eq!(response.headers()["retry-after"], "1");
            assert!(response.body().is_empty());
        }
        other => panic!("expected a 503, got {other:?}"),
    }
    assert_eq!(
        round_trip(&mut first, Message::text("still open")).await,
        Message::text("still open")
    );
}
