//! Reaching a server and being let in: subprotocol selection, the server's handshake callback
//! and Origin policy, the client's view of a refusal (`Error::Http`), redirects, credentials
//! from the URL, IPv6 literals, and the connect and handshake timeouts. Loopback only, port 0.

mod common;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine as _;
use common::*;
use sockeye::http::{HeaderName, HeaderValue, Response, StatusCode};
use sockeye::{
    Accept, ClientBuilder, CloseCode, Error, HandshakeDecision, HandshakeError, Message,
    OriginPolicy, Server, UrlError, WebSocketConfig, WsUrl,
};
use tokio::net::{TcpListener, TcpStream};

const SHORT: Duration = Duration::from_millis(300);

type Client = sockeye::ClientStream;

fn http_error<T: std::fmt::Debug>(result: Result<T, Error>) -> Box<Response<Vec<u8>>> {
    match result {
        Err(Error::Http(response)) => response,
        other => panic!("expected Error::Http, got {other:?}"),
    }
}

fn handshake_error<T: std::fmt::Debug>(result: Result<T, Error>) -> HandshakeError {
    match result {
        Err(Error::Handshake(e)) => *e,
        other => panic!("expected Error::Handshake, got {other:?}"),
    }
}

/// A refusal with `status`, `headers` and `body`, as a handshake callback returns it.
fn refusal(status: u16, headers: &[(&'static str, &str)], body: &[u8]) -> HandshakeDecision {
    let mut response = Response::new(body.to_vec());
    *response.status_mut() = StatusCode::from_u16(status).unwrap();
    for (name, value) in headers {
        response.headers_mut().append(
            HeaderName::from_static(name),
            HeaderValue::from_str(value).unwrap(),
        );
    }
    HandshakeDecision::Reject(response)
}

fn accept_default(hs: &sockeye::HandshakeRequest<'_>) -> HandshakeDecision {
    HandshakeDecision::Accept(Accept::with_protocol(hs.default_protocol.clone()))
}

/// Connects `builder` while `server` accepts one connection.
async fn connect_and_accept(
    server: &Server,
    builder: ClientBuilder,
) -> (
    Result<(Client, Response<()>), Error>,
    Result<
        (
            sockeye::ServerStream,
            sockeye::http::Request<()>,
            SocketAddr,
        ),
        Error,
    >,
) {
    within("handshake", async {
        tokio::join!(builder.connect(), server.accept())
    })
    .await
}

fn url_of(server: &Server, path: &str) -> String {
    format!("ws://{}{path}", server.local_addr().unwrap())
}

// ---- Subprotocols ---------------------------------------------------------------------------

/// The protocol the client and the server agree on, and the response header.
async fn negotiate(server_supports: &[&str], client_offers: &[&str]) -> Option<String> {
    let server = Server::bind("127.0.0.1:0")
        .await
        .unwrap()
        .config(WebSocketConfig::default().protocols(server_supports.iter().copied()));
    let builder = ClientBuilder::new(url_of(&server, "/")).protocols(client_offers.iter().copied());
    let (client, accepted) = connect_and_accept(&server, builder).await;
    let (client, response) = client.expect("client handshake");
    let (server_ws, request, _) = accepted.expect("server handshake");
    let offered = request
        .headers()
        .get("sec-websocket-protocol")
        .map(|v| v.to_str().unwrap().to_owned());
    if client_offers.is_empty() {
        assert_eq!(offered, None, "nothing offered, no header");
    } else {
        assert_eq!(offered.as_deref(), Some(client_offers.join(", ").as_str()));
    }
    let header = response
        .headers()
        .get("sec-websocket-protocol")
        .map(|v| v.to_str().unwrap().to_owned());
    assert_eq!(client.protocol(), header.as_deref(), "client vs header");
    assert_eq!(server_ws.protocol(), header.as_deref(), "server vs header");
    header
}

#[tokio::test]
async fn subprotocol_selection_matrix() {
    let cases: &[(&[&str], &[&str], Option<&str>)] = &[
        // Nothing offered: nothing selected, whatever the server supports.
        (&["chat"], &[], None),
        (&[], &[], None),
        // Offered, but the server supports none of them (or none at all).
        (&["chat"], &["mqtt"], None),
        (&[], &["mqtt", "chat"], None),
        // One in common.
        (&["chat"], &["chat"], Some("chat")),
        (&["a", "b", "c"], &["x", "c"], Some("c")),
        // Several in common: the client's preference wins, not the server's order.
        (&["a", "b"], &["b", "a"], Some("b")),
        (&["b", "a"], &["a", "b"], Some("a")),
        (
            &["v1.chat", "v2.chat"],
            &["v3.chat", "v2.chat", "v1.chat"],
            Some("v2.chat"),
        ),
        // Names are compared exactly (RFC 6455 §4.2.2 does not fold case).
        (&["Chat"], &["chat"], None),
    ];
    for (server, client, want) in cases {
        let got = negotiate(server, client).await;
        assert_eq!(
            got.as_deref(),
            *want,
            "server {server:?}, client {client:?}"
        );
    }
}

#[tokio::test]
async fn a_server_selecting_an_unoffered_protocol_fails_the_client() {
    let answers: &[(&[&str], &str)] = &[
        // Offered "a", answered "b".
        (&["a"], "Sec-WebSocket-Protocol: b\r\n"),
        // Offered nothing, answered one.
        (&[], "Sec-WebSocket-Protocol: a\r\n"),
        // A list where one value is expected.
        (&["a", "b"], "Sec-WebSocket-Protocol: a, b\r\n"),
        // Two headers.
        (
            &["a", "b"],
            "Sec-WebSocket-Protocol: a\r\nSec-WebSocket-Protocol: a\r\n",
        ),
        // Case differs from the offer.
        (&["chat"], "Sec-WebSocket-Protocol: CHAT\r\n"),
    ];
    for (offered, extra) in answers {
        let (listener, url) = listener().await;
        let (result, _raw) = within("client handshake", async {
            tokio::join!(
                ClientBuilder::new(&url)
                    .protocols(offered.iter().copied())
                    .connect(),
                raw_server_accept(&listener, |accept| {
                    let mut response = switching_protocols(accept);
                    response.truncate(response.len() - 2);
                    response.extend_from_slice(extra.as_bytes());
                    response.extend_from_slice(b"\r\n");
                    response
                })
            )
        })
        .await;
        assert_eq!(
            handshake_error(result),
            HandshakeError::UnexpectedProtocol,
            "offered {offered:?}, answer {extra:?}"
        );
    }
    // The same raw server answering with an offered protocol is accepted.
    let (listener, url) = listener().await;
    let (result, _raw) = within("client handshake", async {
        tokio::join!(
            ClientBuilder::new(&url).protocols(["a", "b"]).connect(),
            raw_server_accept(&listener, |accept| {
                let mut response = switching_protocols(accept);
                response.truncate(response.len() - 2);
                response.extend_from_slice(b"Sec-WebSocket-Protocol: b\r\n\r\n");
                response
            })
        )
    })
    .await;
    let (ws, _) = result.expect("offered protocol");
    assert_eq!(ws.protocol(), Some("b"));
}

#[tokio::test]
async fn invalid_protocol_names_fail_before_connecting() {
    for bad in [&["a b"][..], &["a,b"], &[""], &["x", "x"], &["é"], &["a/b"]] {
        let (listener, url) = listener().await;
        let result = within(
            "client",
            ClientBuilder::new(&url)
                .protocols(bad.iter().copied())
                .connect(),
        )
        .await;
        assert_eq!(
            handshake_error(result),
            HandshakeError::InvalidProtocol,
            "{bad:?}"
        );
        // Not even a TCP connection was made: the accept queue is empty.
        assert!(
            poll_once(listener.accept()).is_pending(),
            "{bad:?}: the client connected before checking its protocols"
        );
    }
}

#[tokio::test]
async fn invalid_extra_headers_fail_before_connecting() {
    for (name, value) in [("bad name", "v"), ("x-ok", "line\nbreak"), ("", "v")] {
        let (listener, url) = listener().await;
        let result = within(
            "client",
            ClientBuilder::new(&url).header(name, value).connect(),
        )
        .await;
        assert_eq!(
            handshake_error(result),
            HandshakeError::BadHeader("invalid extra header"),
            "{name:?}: {value:?}"
        );
        assert!(poll_once(listener.accept()).is_pending());
    }
}

// ---- The handshake callback -----------------------------------------------------------------

#[tokio::test]
async fn a_callback_refusal_reaches_the_client_whole() {
    const BODY: &[u8] = b"{\"error\":\"token required\"}\n";
    let server = Server::bind("127.0.0.1:0")
        .await
        .unwrap()
        .on_handshake(|_| {
            refusal(
                401,
                &[
                    (
                        "www-authenticate",
                        "Bearer realm=\"sockeye\", error=\"invalid_token\"",
                    ),
                    ("content-type", "application/json"),
                    ("x-request-id", "r-17"),
                ],
                BODY,
            )
        });
    let (client, accepted) =
        connect_and_accept(&server, ClientBuilder::new(url_of(&server, "/private"))).await;
    let response = http_error(client);
    assert_eq!(response.status(), 401);
    assert_eq!(
        response.headers()["www-authenticate"],
        "Bearer realm=\"sockeye\", error=\"invalid_token\""
    );
    assert_eq!(response.headers()["content-type"], "application/json");
    assert_eq!(response.headers()["x-request-id"], "r-17");
    assert_eq!(
        response.headers()["content-length"],
        BODY.len().to_string().as_str()
    );
    assert_eq!(response.body(), BODY);
    assert_eq!(
        Error::Http(response).to_string(),
        "server answered http 401 Unauthorized"
    );
    // The server reports the same refusal.
    assert_eq!(http_error(accepted).status(), 401);
}

#[tokio::test]
async fn refusal_bodies_are_kept_up_to_64_kib() {
    let big: Vec<u8> = pattern(100_000, 11);
    let body = big.clone();
    let server = Server::bind("127.0.0.1:0")
        .await
        .unwrap()
        .on_handshake(move |_| refusal(403, &[], &body));
    let (client, _) = connect_and_accept(&server, ClientBuilder::new(url_of(&server, "/"))).await;
    let response = http_error(client);
    assert_eq!(response.status(), 403);
    assert_eq!(response.body().len(), 64 << 10);
    assert_eq!(response.body()[..], big[..64 << 10]);
    // An empty refusal has an empty body.
    let server = Server::bind("127.0.0.1:0")
        .await
        .unwrap()
        .on_handshake(|_| refusal(404, &[], b""));
    let (client, _) = connect_and_accept(&server, ClientBuilder::new(url_of(&server, "/"))).await;
    let response = http_error(client);
    assert_eq!(response.status(), 404);
    assert!(response.body().is_empty());
}

/// A raw server refusing with `answer`, then holding the connection open (`close: false`) or
/// closing it; returns the client's result and how long it took.
async fn refused_by_raw_server(
    answer: &'static [u8],
    close: bool,
) -> (Result<(Client, Response<()>), Error>, Duration) {
    let (listener, url) = listener().await;
    let start = Instant::now();
    let config = WebSocketConfig::default().handshake_timeout(Duration::from_secs(5));
    let (result, _raw) = within("client", async {
        tokio::join!(ClientBuilder::new(&url).config(config).connect(), async {
            let mut raw = raw_server_accept(&listener, |_| answer.to_vec()).await;
            if close {
                tokio::io::AsyncWriteExt::shutdown(&mut raw.io)
                    .await
                    .unwrap();
            }
            raw
        })
    })
    .await;
    (result, start.elapsed())
}

#[tokio::test]
async fn refusal_bodies_from_other_servers() {
    // Content-Length: the body is complete without waiting for the close.
    let (result, elapsed) = refused_by_raw_server(
        b"HTTP/1.1 404 Not Found\r\nContent-Length: 5\r\n\r\nnope!trailing",
        false,
    )
    .await;
    let response = http_error(result);
    assert_eq!(
        (response.status().as_u16(), &response.body()[..]),
        (404, &b"nope!"[..])
    );
    assert!(elapsed < Duration::from_secs(5), "{elapsed:?}");
    // No Content-Length, then the server closes: the body runs to the close.
    let (result, _) = refused_by_raw_server(
        b"HTTP/1.1 500 Internal Server Error\r\nConnection: close\r\n\r\nsomething broke",
        true,
    )
    .await;
    let response = http_error(result);
    assert_eq!(response.status(), 500);
    assert_eq!(response.body(), b"something broke");
}

#[tokio::test]
async fn a_refusal_whose_body_never_ends_still_reports_the_status() {
    // A keep-alive server answering with a chunked body never closes: the client cannot know
    // where the body ends. It must still report the refusal (with what arrived), not a
    // handshake timeout that hides the status.
    let (result, elapsed) = refused_by_raw_server(
        b"HTTP/1.1 401 Unauthorized\r\nTransfer-Encoding: chunked\r\nWWW-Authenticate: Basic\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
        false,
    )
    .await;
    let response = http_error(result);
    assert_eq!(response.status(), 401);
    assert_eq!(response.headers()["www-authenticate"], "Basic");
    assert!(
        response.body().starts_with(b"5\r\nhello"),
        "{:?}",
        response.body()
    );
    assert!(elapsed < Duration::from_secs(5), "{elapsed:?}");
}

#[tokio::test]
async fn a_callback_accepts_with_extra_headers_and_its_own_protocol() {
    let server = Server::bind("127.0.0.1:0")
        .await
        .unwrap()
        .config(WebSocketConfig::default().protocols(["a"]))
        .on_handshake(|hs| {
            assert_eq!(hs.protocols, ["a", "b"]);
            assert_eq!(hs.default_protocol.as_deref(), Some("a"));
            HandshakeDecision::Accept(
                Accept::with_protocol(Some("b".to_owned()))
                    .header(
                        HeaderName::from_static("x-session"),
                        HeaderValue::from_static("s-42"),
                    )
                    .header(
                        HeaderName::from_static("set-cookie"),
                        HeaderValue::from_static("a=1"),
                    )
                    .header(
                        HeaderName::from_static("set-cookie"),
                        HeaderValue::from_static("b=2"),
                    ),
            )
        });
    let (client, accepted) = connect_and_accept(
        &server,
        ClientBuilder::new(url_of(&server, "/")).protocols(["a", "b"]),
    )
    .await;
    let (mut client, response) = client.expect("client");
    let (server_ws, _, _) = accepted.expect("server");
    assert_eq!(response.status(), 101);
    assert_eq!(response.headers()["x-session"], "s-42");
    let cookies: Vec<_> = response.headers().get_all("set-cookie").iter().collect();
    assert_eq!(cookies, ["a=1", "b=2"]);
    assert_eq!(response.headers()["sec-websocket-protocol"], "b");
    assert_eq!(client.protocol(), Some("b"));
    assert_eq!(server_ws.protocol(), Some("b"));
    let echo = spawn_echo(server_ws);
    assert_eq!(
        round_trip(&mut client, Message::text("in")).await,
        Message::text("in")
    );
    within("close", client.close(CloseCode::NORMAL, ""))
        .await
        .unwrap();
    within("echo", echo).await.unwrap();
}

#[tokio::test]
async fn a_callback_choosing_an_unoffered_protocol_selects_none() {
    let server = Server::bind("127.0.0.1:0")
        .await
        .unwrap()
        .on_handshake(|_| HandshakeDecision::Accept(Accept::with_protocol(Some("zzz".into()))));
    let (client, accepted) = connect_and_accept(
        &server,
        ClientBuilder::new(url_of(&server, "/")).protocols(["a"]),
    )
    .await;
    let (client, response) = client.expect("the server filters the callback's choice");
    let (server_ws, _, _) = accepted.unwrap();
    assert!(!response.headers().contains_key("sec-websocket-protocol"));
    assert_eq!(client.protocol(), None);
    assert_eq!(server_ws.protocol(), None);
}

/// What a handshake callback saw.
#[derive(Debug, Default, Clone)]
struct Seen {
    peer: Option<SocketAddr>,
    uri: String,
    host: String,
    protocols: Vec<String>,
    token: Option<String>,
    origin: Option<String>,
    authorization: Option<String>,
    cookie: Option<String>,
}

fn recording(
    seen: Arc<Mutex<Vec<Seen>>>,
) -> impl Fn(&sockeye::HandshakeRequest<'_>) -> HandshakeDecision {
    move |hs| {
        let header = |name: &str| {
            hs.request
                .headers()
                .get(name)
                .map(|v| v.to_str().unwrap().to_owned())
        };
        seen.lock().unwrap().push(Seen {
            peer: hs.peer,
            uri: hs.request.uri().to_string(),
            host: header("host").unwrap_or_default(),
            protocols: hs.protocols.clone(),
            token: header("x-token"),
            origin: header("origin"),
            authorization: header("authorization"),
            cookie: header("cookie"),
        });
        accept_default(hs)
    }
}

#[tokio::test]
async fn the_callback_sees_peer_path_query_headers_and_offers() {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let server = Server::bind("127.0.0.1:0")
        .await
        .unwrap()
        .on_handshake(recording(seen.clone()));
    let port = server.local_addr().unwrap().port();
    let builder = ClientBuilder::new(format!("ws://127.0.0.1:{port}/rooms/7?user=ann&x=%20y"))
        .protocols(["p1", "p2"])
        .header("x-token", "abc")
        .origin("https://app.example");
    let (client, accepted) = connect_and_accept(&server, builder).await;
    let (client, _) = client.expect("client");
    let (_, request, peer) = accepted.expect("server");
    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 1);
    let seen = &seen[0];
    let client_addr = client
        .get_ref()
        .get_ref()
        .expect("tcp")
        .local_addr()
        .unwrap();
    assert_eq!(seen.peer, Some(client_addr));
    assert_eq!(peer, client_addr);
    assert_eq!(seen.uri, "/rooms/7?user=ann&x=%20y");
    assert_eq!(request.uri().path(), "/rooms/7");
    assert_eq!(request.uri().query(), Some("user=ann&x=%20y"));
    assert_eq!(seen.host, format!("127.0.0.1:{port}"));
    assert_eq!(seen.protocols, ["p1", "p2"]);
    assert_eq!(seen.token.as_deref(), Some("abc"));
    assert_eq!(seen.origin.as_deref(), Some("https://app.example"));
    assert_eq!(seen.authorization, None);
}

#[tokio::test]
async fn a_panicking_callback_costs_only_its_connection() {
    let server = Server::bind("127.0.0.1:0")
        .await
        .unwrap()
        .on_handshake(|hs| {
            assert!(
                hs.request.uri().path() != "/boom",
                "callback panics on /boom"
            );
            accept_default(hs)
        });
    let serving = serve_in_background(server, echo_handler);
    let result = within(
        "client",
        sockeye::connect(&format!("ws://{}/boom", serving.addr)),
    )
    .await;
    assert!(
        matches!(result, Err(Error::Io(_))),
        "the connection is dropped: {result:?}"
    );
    let (mut ws, _) = within(
        "client",
        sockeye::connect(&format!("ws://{}/", serving.addr)),
    )
    .await
    .expect("the server still serves");
    assert_eq!(
        round_trip(&mut ws, Message::text("ok")).await,
        Message::text("ok")
    );
}

#[tokio::test]
async fn extra_headers_cannot_override_the_handshake() {
    let server = Server::bind("127.0.0.1:0").await.unwrap();
    let builder = ClientBuilder::new(url_of(&server, "/"))
        .header("sec-websocket-key", "AAAAAAAAAAAAAAAAAAAAAA==")
        .header("upgrade", "h2c")
        .header("host", "evil.example")
        .header("x-kept", "1");
    let (client, accepted) = connect_and_accept(&server, builder).await;
    client.expect("the handshake's own headers win");
    let (_, request, _) = accepted.unwrap();
    assert_eq!(
        request
            .headers()
            .get_all("sec-websocket-key")
            .iter()
            .count(),
        1
    );
    assert_ne!(
        request.headers()["sec-websocket-key"],
        "AAAAAAAAAAAAAAAAAAAAAA=="
    );
    assert_eq!(request.headers()["upgrade"], "websocket");
    assert_ne!(request.headers()["host"], "evil.example");
    assert_eq!(request.headers()["x-kept"], "1");
}

// ---- Origin policy --------------------------------------------------------------------------

/// Connects with `origin` (none when `None`) to a running server: the status it answered.
async fn status_for_origin(addr: SocketAddr, origin: Option<&str>) -> u16 {
    let mut builder = ClientBuilder::new(format!("ws://{addr}/"));
    if let Some(origin) = origin {
        builder = builder.origin(origin);
    }
    match within("client", builder.connect()).await {
        Ok((mut ws, response)) => {
            within("close", ws.close(CloseCode::NORMAL, ""))
                .await
                .unwrap();
            response.status().as_u16()
        }
        Err(Error::Http(response)) => {
            if response.status() == 403 {
                assert_eq!(response.body(), b"origin not allowed\n");
            }
            response.status().as_u16()
        }
        Err(e) => panic!("{origin:?}: {e:?}"),
    }
}

#[tokio::test]
async fn an_allow_list_refuses_other_origins_with_403() {
    let calls = Arc::new(AtomicUsize::new(0));
    let counted = calls.clone();
    let server = Server::bind("127.0.0.1:0")
        .await
        .unwrap()
        .origin_policy(OriginPolicy::AllowList(vec![
            "https://Good.Example".to_owned(),
            "http://localhost:3000".to_owned(),
        ]))
        .on_handshake(move |hs| {
            counted.fetch_add(1, Ordering::SeqCst);
            accept_default(hs)
        });
    let serving = serve_in_background(server, echo_handler);
    let cases = [
        (Some("https://good.example"), 101),
        (Some("HTTPS://GOOD.EXAMPLE"), 101),
        (Some("http://localhost:3000"), 101),
        // Requests without Origin (non-browser clients) are accepted.
        (None, 101),
        (Some("https://evil.example"), 403),
        // No prefix, suffix or port leeway.
        (Some("https://good.example.evil"), 403),
        (Some("https://good.example:443"), 403),
        (Some("http://good.example"), 403),
        (Some("http://localhost:3001"), 403),
        (Some("null"), 403),
    ];
    for (origin, want) in cases {
        assert_eq!(
            status_for_origin(serving.addr, origin).await,
            want,
            "{origin:?}"
        );
    }
    // The origin check comes before the callback: only accepted origins reached it.
    assert_eq!(calls.load(Ordering::SeqCst), 4);
}

#[tokio::test]
async fn an_unreadable_origin_does_not_pass_as_absent() {
    // RFC 6454 serializes origins in ASCII; one with other bytes matches no allowed origin,
    // where treating it as absent would let it through an allow-list.
    let server = Server::bind("127.0.0.1:0")
        .await
        .unwrap()
        .origin_policy(OriginPolicy::AllowList(vec![
            "https://good.example".to_owned()
        ]));
    let serving = serve_in_background(server, echo_handler);
    for (origin, want) in [
        ("https://\u{e9}vil.example", "HTTP/1.1 403 Forbidden"),
        ("https://good.example", "HTTP/1.1 101 Switching Protocols"),
    ] {
        let mut raw = RawPeer::new(TcpStream::connect(serving.addr).await.unwrap(), None);
        raw.write(upgrade_request(&format!("Origin: {origin}\r\n")).as_bytes())
            .await;
        let head = within("answer", raw.read_head()).await;
        assert!(head.starts_with(want), "{origin}: {head}");
    }
}

#[tokio::test]
async fn a_callback_policy_decides_with_the_origin_header() {
    let seen = Arc::new(Mutex::new(Vec::<Option<String>>::new()));
    let record = seen.clone();
    let server = Server::bind("127.0.0.1:0")
        .await
        .unwrap()
        .origin_policy(OriginPolicy::Callback(Arc::new(move |origin| {
            record.lock().unwrap().push(origin.map(str::to_owned));
            origin.is_some_and(|o| o.ends_with(".trusted.example"))
        })));
    let serving = serve_in_background(server, echo_handler);
    assert_eq!(
        status_for_origin(serving.addr, Some("https://a.trusted.example")).await,
        101
    );
    assert_eq!(
        status_for_origin(serving.addr, Some("https://trusted.example.evil")).await,
        403
    );
    // The callback sees an absent Origin as None, and may refuse it.
    assert_eq!(status_for_origin(serving.addr, None).await, 403);
    assert_eq!(
        *seen.lock().unwrap(),
        [
            Some("https://a.trusted.example".to_owned()),
            Some("https://trusted.example.evil".to_owned()),
            None
        ]
    );
}

#[tokio::test]
async fn any_origin_is_the_default() {
    let serving = serve_in_background(Server::bind("127.0.0.1:0").await.unwrap(), echo_handler);
    for origin in [Some("https://anything.example"), Some("null"), None] {
        assert_eq!(status_for_origin(serving.addr, origin).await, 101);
    }
}

// ---- Redirects ------------------------------------------------------------------------------

/// A server that answers every handshake with `status` and `Location: location` (none when
/// empty), counting the requests and recording their paths.
async fn redirector(status: u16, location: String) -> (Serving, Arc<Mutex<Vec<String>>>) {
    let paths = Arc::new(Mutex::new(Vec::new()));
    let record = paths.clone();
    let server = Server::bind("127.0.0.1:0")
        .await
        .unwrap()
        .on_handshake(move |hs| {
            record.lock().unwrap().push(hs.request.uri().to_string());
            if location.is_empty() {
                refusal(status, &[], b"moved\n")
            } else {
                refusal(status, &[("location", &location)], b"moved\n")
            }
        });
    (serve_in_background(server, echo_handler), paths)
}

/// An echo server recording what each handshake saw.
async fn recording_target() -> (Serving, Arc<Mutex<Vec<Seen>>>) {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let server = Server::bind("127.0.0.1:0")
        .await
        .unwrap()
        .on_handshake(recording(seen.clone()));
    (serve_in_background(server, echo_handler), seen)
}

#[tokio::test]
async fn redirects_are_not_followed_by_default() {
    let (target, target_seen) = recording_target().await;
    let location = format!("ws://{}/landed", target.addr);
    let (redirect, paths) = redirector(302, location.clone()).await;
    let result = within(
        "client",
        sockeye::connect(&format!("ws://{}/start", redirect.addr)),
    )
    .await;
    let response = http_error(result);
    assert_eq!(response.status(), 302);
    assert_eq!(response.headers()["location"], location.as_str());
    assert_eq!(response.body(), b"moved\n");
    assert_eq!(*paths.lock().unwrap(), ["/start"]);
    assert!(target_seen.lock().unwrap().is_empty());
}

#[tokio::test]
async fn redirects_301_302_307_308_are_followed_within_the_bound() {
    for status in [301, 302, 307, 308] {
        let (target, target_seen) = recording_target().await;
        let (redirect, paths) =
            redirector(status, format!("ws://{}/landed?from=a", target.addr)).await;
        let config = WebSocketConfig::default().max_redirects(1);
        let (mut ws, response) = within(
            "client",
            ClientBuilder::new(format!("ws://{}/start", redirect.addr))
                .config(config)
                .protocols(["chat"])
                .header("x-token", "kept")
                .connect(),
        )
        .await
        .unwrap_or_else(|e| panic!("{status}: {e:?}"));
        assert_eq!(response.status(), 101);
        assert_eq!(
            round_trip(&mut ws, Message::text("after redirect")).await,
            Message::text("after redirect")
        );
        assert_eq!(*paths.lock().unwrap(), ["/start"], "{status}");
        let seen = target_seen.lock().unwrap().clone();
        assert_eq!(seen.len(), 1, "{status}");
        assert_eq!(seen[0].uri, "/landed?from=a");
        assert_eq!(seen[0].host, target.addr.to_string());
        // The same offers and extra headers go to the new location.
        assert_eq!(seen[0].protocols, ["chat"]);
        assert_eq!(seen[0].token.as_deref(), Some("kept"));
    }
}

#[tokio::test]
async fn other_3xx_and_redirects_without_location_are_refusals() {
    let (target, _) = recording_target().await;
    for (status, location) in [
        (303, format!("ws://{}/", target.addr)),
        (300, format!("ws://{}/", target.addr)),
        (304, String::new()),
        (302, String::new()),
    ] {
        let (redirect, _) = redirector(status, location.clone()).await;
        let result = within(
            "client",
            sockeye::connect_with_config(
                &format!("ws://{}/", redirect.addr),
                WebSocketConfig::default().max_redirects(5),
            ),
        )
        .await;
        assert_eq!(http_error(result).status().as_u16(), status, "{location:?}");
    }
}

#[tokio::test]
async fn a_redirect_loop_stops_at_the_bound() {
    for max in [1, 3] {
        // Every request is sent back to the same server.
        let (redirect, paths) = redirector(307, "/again".to_owned()).await;
        let result = within(
            "client",
            sockeye::connect_with_config(
                &format!("ws://{}/", redirect.addr),
                WebSocketConfig::default().max_redirects(max),
            ),
        )
        .await;
        assert!(
            matches!(result, Err(Error::TooManyRedirects)),
            "{max}: {result:?}"
        );
        // The first request and `max` redirects, then it gives up.
        let mut want = vec!["/".to_owned()];
        want.extend(std::iter::repeat_n("/again".to_owned(), max));
        assert_eq!(*paths.lock().unwrap(), want);
    }
}

#[tokio::test]
async fn a_relative_location_is_resolved_against_the_current_url() {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let record = seen.clone();
    let server = Server::bind("127.0.0.1:0")
        .await
        .unwrap()
        .on_handshake(move |hs| {
            let uri = hs.request.uri().to_string();
            record.lock().unwrap().push(uri.clone());
            if uri == "/start?q=1" {
                refusal(302, &[("location", "/v2/target?x=y")], b"")
            } else {
                accept_default(hs)
            }
        });
    let serving = serve_in_background(server, echo_handler);
    let (mut ws, _) = within(
        "client",
        sockeye::connect_with_config(
            &format!("ws://{}/start?q=1", serving.addr),
            WebSocketConfig::default().max_redirects(1),
        ),
    )
    .await
    .expect("relative redirect");
    assert_eq!(
        round_trip(&mut ws, Message::text("x")).await,
        Message::text("x")
    );
    assert_eq!(*seen.lock().unwrap(), ["/start?q=1", "/v2/target?x=y"]);
}

#[tokio::test]
async fn an_absolute_path_location_may_hold_a_url_in_its_query() {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let record = seen.clone();
    let server = Server::bind("127.0.0.1:0")
        .await
        .unwrap()
        .on_handshake(move |hs| {
            let uri = hs.request.uri().to_string();
            record.lock().unwrap().push(uri.clone());
            if uri == "/" {
                refusal(
                    302,
                    &[("location", "/via?next=ws://elsewhere.example/")],
                    b"",
                )
            } else {
                accept_default(hs)
            }
        });
    let serving = serve_in_background(server, echo_handler);
    within(
        "client",
        sockeye::connect_with_config(
            &format!("ws://{}/", serving.addr),
            WebSocketConfig::default().max_redirects(1),
        ),
    )
    .await
    .expect("absolute-path redirect");
    assert_eq!(
        *seen.lock().unwrap(),
        ["/", "/via?next=ws://elsewhere.example/"]
    );
}

#[tokio::test]
async fn a_network_path_location_goes_to_the_named_host() {
    // RFC 3986 §4.2: "//host:port/path" keeps the scheme and replaces the authority.
    let (target, target_seen) = recording_target().await;
    let (redirect, paths) = redirector(302, format!("//{}/landed", target.addr)).await;
    let result = within(
        "client",
        sockeye::connect_with_config(
            &format!("ws://{}/", redirect.addr),
            WebSocketConfig::default().max_redirects(1),
        ),
    )
    .await;
    result.expect("network-path redirect");
    assert_eq!(*paths.lock().unwrap(), ["/"]);
    let seen = target_seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].uri, "/landed");
}

#[tokio::test]
async fn http_and_https_locations_map_to_ws_and_wss() {
    let (target, target_seen) = recording_target().await;
    let (redirect, _) = redirector(301, format!("http://{}/from-http", target.addr)).await;
    within(
        "client",
        sockeye::connect_with_config(
            &format!("ws://{}/", redirect.addr),
            WebSocketConfig::default().max_redirects(1),
        ),
    )
    .await
    .expect("http: location");
    assert_eq!(target_seen.lock().unwrap()[0].uri, "/from-http");
}

#[tokio::test]
async fn ws_to_wss_redirects_are_followed() {
    let ca = TestCa::new();
    let tls_seen = Arc::new(Mutex::new(Vec::new()));
    let tls = tls_server(&ca.localhost(), WebSocketConfig::default())
        .await
        .on_handshake(recording(tls_seen.clone()));
    let tls = serve_in_background(tls, echo_handler);
    let (redirect, _) =
        redirector(302, format!("wss://localhost:{}/secure", tls.addr.port())).await;
    let (mut ws, _) = within(
        "client",
        sockeye::connect_with_config(
            &format!("ws://{}/", redirect.addr),
            ca.client_config().max_redirects(1),
        ),
    )
    .await
    .expect("ws to wss");
    assert!(ws.get_ref().is_tls());
    assert_eq!(
        round_trip(&mut ws, Message::text("secure now")).await,
        Message::text("secure now")
    );
    assert_eq!(tls_seen.lock().unwrap()[0].uri, "/secure");
}

#[tokio::test]
async fn wss_to_ws_redirects_are_refused() {
    let ca = TestCa::new();
    let (plain, plain_url) = listener().await;
    for location in [plain_url.clone(), plain_url.replacen("ws:", "http:", 1)] {
        let tls = tls_server(&ca.localhost(), WebSocketConfig::default())
            .await
            .on_handshake({
                let location = location.clone();
                move |_| refusal(308, &[("location", &location)], b"")
            });
        let tls = serve_in_background(tls, echo_handler);
        let result = within(
            "client",
            sockeye::connect_with_config(
                &format!("wss://localhost:{}/", tls.addr.port()),
                ca.client_config().max_redirects(3),
            ),
        )
        .await;
        assert!(
            matches!(result, Err(Error::Url(UrlError::BadRedirect))),
            "{location}: {result:?}"
        );
        // The plain server was never contacted.
        assert!(poll_once(plain.accept()).is_pending(), "{location}");
    }
}

#[tokio::test]
async fn unusable_locations_are_bad_redirects() {
    for location in ["ftp://127.0.0.1/", "ws://", "ws://h/#frag"] {
        let (redirect, _) = redirector(302, location.to_owned()).await;
        let result = within(
            "client",
            sockeye::connect_with_config(
                &format!("ws://{}/", redirect.addr),
                WebSocketConfig::default().max_redirects(1),
            ),
        )
        .await;
        assert!(
            matches!(result, Err(Error::Url(_))),
            "{location}: {result:?}"
        );
    }
}

#[tokio::test]
async fn credentials_are_not_forwarded_to_another_origin() {
    let (target, target_seen) = recording_target().await;
    let (redirect, _) = redirector(302, format!("ws://{}/landed", target.addr)).await;
    // From the URL's userinfo and from an explicit header.
    for (url_auth, header_auth) in [(true, false), (false, true)] {
        let url = if url_auth {
            format!("ws://user:secret@{}/", redirect.addr)
        } else {
            format!("ws://{}/", redirect.addr)
        };
        let mut builder = ClientBuilder::new(url)
            .config(WebSocketConfig::default().max_redirects(1))
            .header("cookie", "session=s3cret");
        if header_auth {
            builder = builder.header("authorization", "Bearer s3cret");
        }
        within("client", builder.connect())
            .await
            .expect("redirected");
    }
    let seen = target_seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 2);
    for (i, seen) in seen.iter().enumerate() {
        assert_eq!(seen.authorization, None, "connection {i}: {seen:?}");
        assert_eq!(seen.cookie, None, "connection {i}: {seen:?}");
    }
}

#[tokio::test]
async fn credentials_are_kept_on_a_same_origin_redirect() {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let record = recording(seen.clone());
    let server = Server::bind("127.0.0.1:0")
        .await
        .unwrap()
        .on_handshake(move |hs| {
            let decision = record(hs);
            if hs.request.uri() == "/" {
                refusal(307, &[("location", "/moved")], b"")
            } else {
                decision
            }
        });
    let serving = serve_in_background(server, echo_handler);
    within(
        "client",
        ClientBuilder::new(format!("ws://{}/", serving.addr))
            .config(WebSocketConfig::default().max_redirects(1))
            .header("authorization", "Bearer s3cret")
            .header("cookie", "session=s3cret")
            .connect(),
    )
    .await
    .expect("redirected");
    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 2);
    assert_eq!(seen[1].uri, "/moved");
    assert_eq!(seen[1].authorization.as_deref(), Some("Bearer s3cret"));
    assert_eq!(seen[1].cookie.as_deref(), Some("session=s3cret"));
}

// ---- URLs -----------------------------------------------------------------------------------

#[test]
fn url_parsing() {
    let u = WsUrl::parse("ws://example.com/chat").unwrap();
    assert_eq!(
        (u.tls, u.port, u.host_header.as_str()),
        (false, 80, "example.com")
    );
    let u = WsUrl::parse("wss://example.com").unwrap();
    assert_eq!((u.tls, u.port, u.resource.as_str()), (true, 443, "/"));
    let u = WsUrl::parse("http://example.com:8080/a?b").unwrap();
    assert_eq!(
        (u.tls, u.port, u.host_header.as_str(), u.resource.as_str()),
        (false, 8080, "example.com:8080", "/a?b")
    );
    let u = WsUrl::parse("https://example.com/").unwrap();
    assert_eq!((u.tls, u.port), (true, 443));
    // Schemes are case-insensitive; an explicit default port is left out of Host.
    let u = WsUrl::parse("WSS://example.com:443/").unwrap();
    assert_eq!((u.tls, u.host_header.as_str()), (true, "example.com"));
    let u = WsUrl::parse("ws://example.com:80/").unwrap();
    assert_eq!(u.host_header, "example.com");
    // A default port for the other scheme is not a default.
    let u = WsUrl::parse("wss://example.com:80/").unwrap();
    assert_eq!(u.host_header, "example.com:80");
    // IPv6 literals: brackets in Host, not in host.
    let u = WsUrl::parse("ws://[::1]/").unwrap();
    assert_eq!(
        (u.host.as_str(), u.port, u.host_header.as_str()),
        ("::1", 80, "[::1]")
    );
    let u = WsUrl::parse("wss://[2001:db8::7]:8443/x").unwrap();
    assert_eq!(
        (u.host.as_str(), u.port, u.host_header.as_str()),
        ("2001:db8::7", 8443, "[2001:db8::7]:8443")
    );
    // A query without a path gets the path "/".
    let u = WsUrl::parse("ws://example.com?x=1").unwrap();
    assert_eq!(u.resource, "/?x=1");
    // Userinfo becomes Basic credentials and stays out of Host.
    let u = WsUrl::parse("ws://user%40mail:p%3Ass@example.com:9000/").unwrap();
    assert_eq!(u.host_header, "example.com:9000");
    let b64 = u
        .authorization
        .as_deref()
        .unwrap()
        .strip_prefix("Basic ")
        .unwrap();
    assert_eq!(
        base64::engine::general_purpose::STANDARD
            .decode(b64)
            .unwrap(),
        b"user@mail:p:ss"
    );
    assert_eq!(
        WsUrl::parse("ws://example.com/").unwrap().authorization,
        None
    );
    // RFC 7617: user-pass = user-id ":" password, so a user alone has an empty password.
    let u = WsUrl::parse("ws://alice@example.com/").unwrap();
    assert_eq!(u.authorization.as_deref(), Some("Basic YWxpY2U6"));
    let u = WsUrl::parse("ws://alice:@example.com/").unwrap();
    assert_eq!(u.authorization.as_deref(), Some("Basic YWxpY2U6"));
    // An empty userinfo carries no credentials.
    let u = WsUrl::parse("ws://@example.com/").unwrap();
    assert_eq!((u.authorization, u.host.as_str()), (None, "example.com"));
    // Refusals.
    assert_eq!(WsUrl::parse("ws://example.com/#x"), Err(UrlError::Fragment));
    assert_eq!(WsUrl::parse("ws://example.com#"), Err(UrlError::Fragment));
    assert_eq!(
        WsUrl::parse("ftp://example.com/"),
        Err(UrlError::UnsupportedScheme("ftp".into()))
    );
    assert!(WsUrl::parse("ws:///path").is_err());
    assert!(WsUrl::parse("example.com:80").is_err());
    assert!(WsUrl::parse("").is_err());
}

#[tokio::test]
async fn a_query_without_a_path_requests_the_root() {
    let server = Server::bind("127.0.0.1:0").await.unwrap();
    let builder = ClientBuilder::new(format!("ws://{}?room=1", server.local_addr().unwrap()));
    let (client, accepted) = connect_and_accept(&server, builder).await;
    client.expect("client");
    let (_, request, _) = accepted.expect("server");
    assert_eq!(request.uri(), "/?room=1");
}

#[tokio::test]
async fn a_fragment_is_refused_before_connecting() {
    let (listener, url) = listener().await;
    let result = within("client", sockeye::connect(&format!("{url}#section"))).await;
    assert!(
        matches!(result, Err(Error::Url(UrlError::Fragment))),
        "{result:?}"
    );
    assert!(poll_once(listener.accept()).is_pending());
}

#[tokio::test]
async fn userinfo_becomes_basic_authorization() {
    let server = Server::bind("127.0.0.1:0").await.unwrap();
    let port = server.local_addr().unwrap().port();
    for (userinfo, want) in [
        ("Aladdin:open%20sesame", &b"Aladdin:open sesame"[..]),
        ("user%40mail:p%3Ass%2F", b"user@mail:p:ss/"),
        ("%C3%A9t%C3%A9:%E2%82%AC", "été:€".as_bytes()),
    ] {
        let builder = ClientBuilder::new(format!("ws://{userinfo}@127.0.0.1:{port}/private"));
        let (client, accepted) = connect_and_accept(&server, builder).await;
        client.expect("client");
        let (_, request, _) = accepted.expect("server");
        let value = request.headers()["authorization"].to_str().unwrap();
        let encoded = value.strip_prefix("Basic ").expect("Basic scheme");
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(encoded)
            .unwrap();
        assert_eq!(decoded, want, "{userinfo}");
        assert_eq!(request.headers()["host"], format!("127.0.0.1:{port}"));
        assert_eq!(request.uri(), "/private");
    }
}

#[tokio::test]
async fn ipv6_literal_urls_connect() {
    let server = match Server::bind("[::1]:0").await {
        Ok(server) => server,
        Err(e) => {
            // An environment without IPv6 loopback: nothing to test here.
            eprintln!("NOTE: ipv6_literal_urls_connect not run: cannot bind [::1]: {e}");
            return;
        }
    };
    let port = server.local_addr().unwrap().port();
    let (client, accepted) = connect_and_accept(
        &server,
        ClientBuilder::new(format!("ws://[::1]:{port}/six")),
    )
    .await;
    let (mut client, _) = client.expect("client over ::1");
    let (server_ws, request, peer) = accepted.expect("server");
    assert_eq!(request.headers()["host"], format!("[::1]:{port}"));
    assert_eq!(request.uri(), "/six");
    assert!(peer.is_ipv6());
    let echo = spawn_echo(server_ws);
    assert_eq!(
        round_trip(&mut client, Message::text("v6")).await,
        Message::text("v6")
    );
    within("close", client.close(CloseCode::NORMAL, ""))
        .await
        .unwrap();
    within("echo", echo).await.unwrap();
}

// ---- Timeouts -------------------------------------------------------------------------------

#[tokio::test]
async fn a_silent_server_hits_the_handshake_timeout() {
    // A server that accepts TCP and never answers the upgrade request.
    let (silent, url) = listener().await;
    let start = Instant::now();
    let (result, _held) = within("client", async {
        tokio::join!(
            sockeye::connect_with_config(&url, WebSocketConfig::default().handshake_timeout(SHORT)),
            async { silent.accept().await.unwrap() }
        )
    })
    .await;
    assert!(matches!(result, Err(Error::HandshakeTimeout)), "{result:?}");
    let elapsed = start.elapsed();
    assert!(elapsed >= SHORT, "{elapsed:?}");
    // And one that stops in the middle of its response head.
    let (stalling, url) = listener().await;
    let (result, _held) = within("client", async {
        tokio::join!(
            sockeye::connect_with_config(&url, WebSocketConfig::default().handshake_timeout(SHORT)),
            raw_server_accept(&stalling, |_| b"HTTP/1.1 101 Switching Protocols\r\nUpg"
                .to_vec())
        )
    })
    .await;
    assert!(matches!(result, Err(Error::HandshakeTimeout)), "{result:?}");
}

/// A listener with a listen backlog of 0 whose accept queue is full (it never accepts), so the
/// kernel drops further SYNs and connecting hangs until the client gives up. Returns it and
/// the connections that filled it, or `None` if this kernel completes connections anyway.
fn saturated_listener() -> Option<(socket2::Socket, SocketAddr, Vec<std::net::TcpStream>)> {
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    socket
        .bind(&SocketAddr::from(([127, 0, 0, 1], 0)).into())
        .unwrap();
    socket.listen(0).unwrap();
    let addr = socket.local_addr().unwrap().as_socket().unwrap();
    let mut filled = Vec::new();
    for _ in 0..16 {
        match std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(200)) {
            Ok(tcp) => filled.push(tcp),
            Err(e) if e.kind() == std::io::ErrorKind::TimedOut => {
                return Some((socket, addr, filled))
            }
            Err(e) => panic!("filling the backlog: {e}"),
        }
    }
    None
}

#[tokio::test]
async fn connecting_to_a_saturated_listener_hits_the_connect_timeout() {
    let Some((_listener, addr, _filled)) = tokio::task::spawn_blocking(saturated_listener)
        .await
        .unwrap()
    else {
        panic!("the kernel kept completing connections to a listener with a full backlog");
    };
    let mut config = WebSocketConfig::default();
    config.connect_timeout = SHORT;
    let start = Instant::now();
    let result = within(
        "client",
        sockeye::connect_with_config(&format!("ws://{addr}/"), config),
    )
    .await;
    let elapsed = start.elapsed();
    assert!(matches!(result, Err(Error::ConnectTimeout)), "{result:?}");
    assert!(elapsed >= SHORT && elapsed < PATIENCE, "{elapsed:?}");
}

#[tokio::test]
async fn a_refused_connection_is_an_io_error_not_a_timeout() {
    // A port nobody listens on: bind one, note it, close it.
    let addr = {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        listener.local_addr().unwrap()
    };
    let result = within("client", sockeye::connect(&format!("ws://{addr}/"))).await;
    match result {
        Err(Error::Io(e)) => assert_eq!(e.kind(), std::io::ErrorKind::ConnectionRefused),
        other => panic!("expected ConnectionRefused, got {other:?}"),
    }
}
