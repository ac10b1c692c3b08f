//! Upgrading requests of hyper 1.x and axum 0.8 servers (`sockeye::upgrade`,
//! `sockeye::axum`): a plain hyper server, an axum app serving HTTP and WebSocket on one port,
//! subprotocol and permessage-deflate negotiation, refusals with the RFC 6455 §4.2.1 statuses,
//! and the `axum_app` example run as a process.
#![cfg(feature = "axum")]

mod common;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::process::Stdio;

use axum::response::Response;
use axum::routing::get;
use axum::Router;
use common::{header, pattern, round_trip, upgrade_request, within, RawPeer};
use futures_util::StreamExt as _;
use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper_util::rt::TokioIo;
use sockeye::axum::{AxumWebSocket, WebSocketUpgrade};
use sockeye::upgrade::{is_upgrade_request, upgrade, HyperWebSocket};
use sockeye::{CloseCode, DeflateConfig, Message, WebSocketConfig};
use tokio::io::{AsyncBufReadExt as _, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

/// Echoes data messages until the stream ends.
async fn echo(mut ws: HyperWebSocket) {
    while let Some(Ok(message)) = ws.next().await {
        if message.is_data() && ws.send(message).await.is_err() {
            break;
        }
    }
}

/// Serves `app` on a free loopback port in a background task (stopped with the test's runtime).
async fn serve_app(app: Router) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("local addr");
    tokio::spawn(async move {
        axum::serve(listener, app).await.expect("axum serve");
    });
    addr
}

/// Sends a raw HTTP/1.1 request and reads the whole answer, which must end with the server
/// closing the connection: the status, the head and the body.
async fn raw_http(addr: SocketAddr, request: &str) -> (u16, String, Vec<u8>) {
    within("raw http exchange", async {
        let tcp = TcpStream::connect(addr).await.expect("connect");
        let mut peer = RawPeer::new(tcp, None);
        peer.write(request.as_bytes()).await;
        let head = peer.read_head().await;
        let body = peer.read_to_end().await;
        let status = head
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("no status in {head:?}"));
        (status, head, body)
    })
    .await
}

/// A plain GET that asks the server to close the connection after answering.
fn get_request(path: &str) -> String {
    format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
}

/// A request that the server should upgrade, through hyper's `http1` connection with upgrades.
async fn hyper_service(
    mut request: hyper::Request<Incoming>,
) -> Result<hyper::Response<Full<Bytes>>, Infallible> {
    if !is_upgrade_request(&request) {
        return Ok(hyper::Response::new(Full::new(Bytes::from_static(
            b"plain http\n",
        ))));
    }
    let config = WebSocketConfig::default().protocols(["echo"]);
    match upgrade(&mut request, config) {
        Ok((response, websocket)) => {
            tokio::spawn(async move {
                if let Ok(ws) = websocket.await {
                    echo(ws).await;
                }
            });
            Ok(response)
        }
        Err(refused) => Ok(refused.into()),
    }
}

/// A hyper 1.x server on a free loopback port, serving each of its first 16 connections with
/// upgrades.
async fn hyper_server() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("local addr");
    tokio::spawn(async move {
        for _ in 0..16 {
            let Ok((tcp, _)) = listener.accept().await else {
                break;
            };
            tokio::spawn(
                hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(tcp), hyper::service::service_fn(hyper_service))
                    .with_upgrades(),
            );
        }
    });
    addr
}

#[tokio::test]
async fn plain_hyper_server_upgrades_and_echoes() {
    let addr = hyper_server().await;
    let config = WebSocketConfig::default().protocols(["other", "echo"]);
    let (mut ws, response) = within(
        "connect",
        sockeye::connect_with_config(&format!("ws://{addr}/any/path?x=1"), config),
    )
    .await
    .expect("handshake with hyper");
    assert_eq!(response.status(), 101);
    assert_eq!(ws.protocol(), Some("echo"));
    assert_eq!(
        round_trip(&mut ws, Message::text("through hyper")).await,
        Message::text("through hyper")
    );
    let data = pattern(70_000, 7);
    assert_eq!(
        round_trip(&mut ws, Message::binary(data.clone())).await,
        Message::binary(data)
    );
    within("close", ws.close(CloseCode::NORMAL, "done"))
        .await
        .expect("clean close");

    // The same server still answers plain HTTP and refuses bad upgrades with the RFC's status.
    let (status, _, body) = raw_http(addr, &get_request("/")).await;
    assert_eq!((status, body.as_slice()), (200, &b"plain http\n"[..]));
    let old = upgrade_request("").replace("Version: 13", "Version: 8");
    let (status, head, _) = raw_http(addr, &old).await;
    assert_eq!(status, 426, "{head}");
    assert_eq!(header(&head, "sec-websocket-version"), Some("13"));
}

/// The axum app of these tests: a page, a health check and an echo WebSocket.
fn echo_app() -> Router {
    Router::new()
        .route("/", get(|| async { "the page\n" }))
        .route("/health", get(|| async { "ok" }))
        .route(
            "/ws",
            get(|upgrade: WebSocketUpgrade| async move { upgrade.on_upgrade(echo) }),
        )
}

#[tokio::test]
async fn axum_serves_http_and_websocket_on_one_port() {
    let addr = serve_app(echo_app()).await;
    let (status, head, body) = raw_http(addr, &get_request("/")).await;
    assert_eq!(status, 200, "{head}");
    assert_eq!(body, b"the page\n");
    let (status, _, body) = raw_http(addr, &get_request("/health")).await;
    assert_eq!((status, body.as_slice()), (200, &b"ok"[..]));

    let (mut ws, response) = within("connect", sockeye::connect(&format!("ws://{addr}/ws")))
        .await
        .expect("handshake with axum");
    assert_eq!(response.status(), 101);
    assert_eq!(ws.protocol(), None);
    assert!(ws.extensions().is_empty(), "deflate is off by default");
    assert_eq!(
        round_trip(&mut ws, Message::text("héllo axum")).await,
        Message::text("héllo axum")
    );
    let mib = pattern(1 << 20, 42);
    assert_eq!(
        round_trip(&mut ws, Message::binary(mib.clone())).await,
        Message::binary(mib)
    );
    within("close", ws.close(CloseCode::NORMAL, "bye"))
        .await
        .expect("clean close");
    let closed = ws.close_info().expect("closed");
    assert_eq!(closed.code, CloseCode::NORMAL);
}

/// What the server side saw: the subprotocol and the extensions in force.
type Seen = (Option<String>, String);

/// An app whose `/ws` applies `configure` to the extractor, reports what the connection agreed
/// on `seen`, and echoes.
fn reporting_app(
    configure: fn(WebSocketUpgrade) -> WebSocketUpgrade,
    seen: mpsc::UnboundedSender<Seen>,
) -> Router {
    Router::new().route(
        "/ws",
        get(move |upgrade: WebSocketUpgrade| async move {
            configure(upgrade).on_upgrade(move |ws: AxumWebSocket| async move {
                let _ = seen.send((ws.protocol().map(str::to_owned), ws.extensions()));
                echo(ws).await;
            })
        }),
    )
}

#[tokio::test]
async fn subprotocol_is_the_first_offered_that_the_server_lists() {
    let (seen_tx, mut seen) = mpsc::unbounded_channel();
    let addr = serve_app(reporting_app(
        |upgrade| upgrade.protocols(["v2.chat", "v1.chat"]),
        seen_tx,
    ))
    .await;
    let url = format!("ws://{addr}/ws");
    for (offered, expected) in [
        (vec!["v1.chat", "v2.chat"], Some("v1.chat")),
        (vec!["v3.chat", "v2.chat"], Some("v2.chat")),
        (vec!["v3.chat"], None),
        (vec![], None),
    ] {
        let config = WebSocketConfig::default().protocols(offered.clone());
        let (mut ws, response) = within("connect", sockeye::connect_with_config(&url, config))
            .await
            .expect("handshake");
        let header = response
            .headers()
            .get("sec-websocket-protocol")
            .map(|v| v.to_str().expect("ascii"));
        assert_eq!(header, expected, "offered {offered:?}");
        assert_eq!(ws.protocol(), expected, "offered {offered:?}");
        let (server_protocol, _) = within("server report", seen.recv())
            .await
            .expect("server saw the connection");
        assert_eq!(server_protocol.as_deref(), expected, "offered {offered:?}");
        assert_eq!(
            round_trip(&mut ws, Message::text("ping")).await,
            Message::text("ping")
        );
        within("close", ws.close(CloseCode::NORMAL, ""))
            .await
            .expect("clean close");
    }
}

#[tokio::test]
async fn deflate_is_negotiated_when_both_sides_enable_it() {
    let (seen_tx, mut seen) = mpsc::unbounded_channel();
    let addr = serve_app(reporting_app(
        |upgrade| {
            upgrade.config(WebSocketConfig::default().deflate(Some(DeflateConfig::default())))
        },
        seen_tx,
    ))
    .await;
    let url = format!("ws://{addr}/ws");

    let config = WebSocketConfig::default().deflate(Some(DeflateConfig::default()));
    let (mut ws, response) = within("connect", sockeye::connect_with_config(&url, config))
        .await
        .expect("handshake");
    assert!(response.headers().contains_key("sec-websocket-extensions"));
    let client_extensions = ws.extensions();
    assert!(
        client_extensions.starts_with("permessage-deflate"),
        "{client_extensions:?}"
    );
    let (_, server_extensions) = within("server report", seen.recv())
        .await
        .expect("server saw the connection");
    assert!(
        server_extensions.starts_with("permessage-deflate"),
        "{server_extensions:?}"
    );
    let text = "compressible ".repeat(10_000);
    assert_eq!(
        round_trip(&mut ws, Message::text(text.clone())).await,
        Message::text(text)
    );
    within("close", ws.close(CloseCode::NORMAL, ""))
        .await
        .expect("clean close");

    // A client that does not offer it gets no extension.
    let (mut ws, _) = within("connect", sockeye::connect(&url))
        .await
        .expect("handshake");
    assert!(ws.extensions().is_empty());
    let (_, server_extensions) = within("server report", seen.recv()).await.expect("seen");
    assert!(server_extensions.is_empty(), "{server_extensions:?}");
    within("close", ws.close(CloseCode::NORMAL, ""))
        .await
        .expect("clean close");
}

#[tokio::test]
async fn bad_upgrade_requests_get_the_rfc_status() {
    let addr = serve_app(echo_app()).await;
    let good = upgrade_request("").replace("GET /chat ", "GET /ws ");

    // Missing Sec-WebSocket-Key: 400.
    let keyless = good.replace(&format!("Sec-WebSocket-Key: {}\r\n", common::KEY), "");
    assert_ne!(keyless, good);
    let (status, head, body) = raw_http(addr, &keyless).await;
    assert_eq!(status, 400, "{head}");
    assert!(
        String::from_utf8_lossy(&body).contains("sec-websocket-key"),
        "{body:?}"
    );

    // Version 8: 426 with the version this server speaks.
    let old = good.replace("Sec-WebSocket-Version: 13", "Sec-WebSocket-Version: 8");
    assert_ne!(old, good);
    let (status, head, _) = raw_http(addr, &old).await;
    assert_eq!(status, 426, "{head}");
    assert_eq!(header(&head, "sec-websocket-version"), Some("13"));

    // Not an upgrade at all: the extractor's rejection.
    let (status, head, body) = raw_http(addr, &get_request("/ws")).await;
    assert_eq!(status, 400, "{head}");
    assert_eq!(
        header(&head, "content-type"),
        Some("text/plain; charset=utf-8")
    );
    assert_eq!(body, b"bad handshake header: upgrade\n");

    // HTTP/1.0 cannot upgrade: 505.
    let (status, head, _) = raw_http(addr, &good.replace("HTTP/1.1", "HTTP/1.0")).await;
    assert_eq!(status, 505, "{head}");

    // The valid request is upgraded on the same server.
    let tcp = within("connect", TcpStream::connect(addr))
        .await
        .expect("connect");
    let mut peer = RawPeer::new(tcp, Some([1, 2, 3, 4]));
    peer.write(good.as_bytes()).await;
    let head = within("101", peer.read_head()).await;
    assert!(head.starts_with("HTTP/1.1 101 "), "{head}");
    assert_eq!(header(&head, "sec-websocket-accept"), Some(common::ACCEPT));
    peer.send_frame(true, common::TEXT, b"raw").await;
    let frame = within("echo", peer.read_frame()).await.expect("a frame");
    assert_eq!(
        (frame.opcode, frame.payload.as_slice()),
        (common::TEXT, &b"raw"[..])
    );
}

#[tokio::test]
async fn optional_extractor_lets_one_route_serve_both() {
    let app = Router::new().route(
        "/",
        get(|upgrade: Option<WebSocketUpgrade>| async move {
            match upgrade {
                Some(upgrade) => upgrade.on_upgrade(echo),
                None => Response::new("a page\n".into()),
            }
        }),
    );
    let addr = serve_app(app).await;
    let (status, _, body) = raw_http(addr, &get_request("/")).await;
    assert_eq!((status, body.as_slice()), (200, &b"a page\n"[..]));
    let (mut ws, _) = within("connect", sockeye::connect(&format!("ws://{addr}/")))
        .await
        .expect("handshake");
    assert_eq!(
        round_trip(&mut ws, Message::text("both")).await,
        Message::text("both")
    );
    // An upgrade that asks for one but is invalid is still refused, not served the page.
    let old = upgrade_request("")
        .replace("GET /chat ", "GET / ")
        .replace("Version: 13", "Version: 8");
    let (status, head, _) = raw_http(addr, &old).await;
    assert_eq!(status, 426, "{head}");
}

#[tokio::test]
async fn axum_app_example_serves_page_health_and_echo() {
    let binary = tokio::task::spawn_blocking(|| common::example_binary("axum_app", "axum"))
        .await
        .expect("build the example");
    let mut child = tokio::process::Command::new(binary)
        .arg("127.0.0.1:0")
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("start axum_app");
    let stdout = child.stdout.take().expect("stdout");
    // `kill_on_drop`: the server is killed when `child` goes out of scope, passed or failed.
    let line = within("listening line", async {
        BufReader::new(stdout)
            .lines()
            .next_line()
            .await
            .expect("read stdout")
            .expect("a line")
    })
    .await;
    let addr: SocketAddr = line
        .strip_prefix("listening on http://")
        .and_then(|rest| rest.strip_suffix('/'))
        .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
        .parse()
        .expect("a socket address");
    assert!(addr.ip().is_loopback());
    assert_ne!(addr.port(), 0);

    let (status, head, body) = raw_http(addr, &get_request("/")).await;
    assert_eq!(status, 200, "{head}");
    assert!(header(&head, "content-type").is_some_and(|t| t.starts_with("text/html")));
    assert!(String::from_utf8_lossy(&body).contains("new WebSocket("));
    let (status, _, body) = raw_http(addr, &get_request("/health")).await;
    assert_eq!((status, body.as_slice()), (200, &b"ok"[..]));

    let (mut ws, _) = within("connect", sockeye::connect(&format!("ws://{addr}/ws")))
        .await
        .expect("handshake with the example");
    assert_eq!(
        round_trip(&mut ws, Message::text("example")).await,
        Message::text("example")
    );
    let data = pattern(200_000, 3);
    assert_eq!(
        round_trip(&mut ws, Message::binary(data.clone())).await,
        Message::binary(data)
    );
    within("close", ws.close(CloseCode::NORMAL, ""))
        .await
        .expect("clean close");
}

#[tokio::test]
async fn a_frame_sent_with_the_request_head_is_not_lost() {
    // hyper may read past the request head; `upgrade`'s docs promise those bytes reach the
    // WebSocket. A client that pipelines its first frame after the head checks the promise.
    let addr = serve_app(echo_app()).await;
    let good = upgrade_request("").replace("GET /chat ", "GET /ws ");
    let mut bytes = good.into_bytes();
    bytes.extend(common::frame(
        true,
        common::TEXT,
        b"pipelined",
        Some([9, 8, 7, 6]),
    ));
    let tcp = within("connect", TcpStream::connect(addr))
        .await
        .expect("connect");
    let mut peer = RawPeer::new(tcp, Some([1, 2, 3, 4]));
    peer.write(&bytes).await;
    let head = within("101", peer.read_head()).await;
    assert!(head.starts_with("HTTP/1.1 101 "), "{head}");
    let frame = within("echo", peer.read_frame()).await.expect("a frame");
    assert_eq!(
        (frame.opcode, frame.payload.as_slice()),
        (common::TEXT, &b"pipelined"[..])
    );
}
