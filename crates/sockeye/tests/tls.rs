//! `wss://` over rustls against certificates generated at test time (rcgen): a private CA and
//! server certificates signed by it, valid, for another name, expired. Covers the client's
//! verification (and the reason it names when it refuses), ALPN, PEM loading, deflate and
//! subprotocols over TLS, and the server's behaviour when a peer speaks the wrong protocol.

mod common;

use std::time::{Duration, Instant};

use common::*;
use sockeye::{
    tls, ClientBuilder, CloseCode, DeflateConfig, Error, HandshakeError, Message, Server,
    WebSocketConfig,
};
use tokio::io::AsyncWriteExt as _;
use tokio::net::TcpStream;

const SHORT: Duration = Duration::from_millis(300);

/// The `Error::Tls` inside `result`, as [`error_chain`] text; fails the test otherwise.
fn tls_reason<T: std::fmt::Debug>(result: Result<T, Error>) -> String {
    match result {
        Err(err @ Error::Tls(_)) => error_chain(&err),
        other => panic!("expected Error::Tls, got {other:?}"),
    }
}

/// Connects a client with `config` to `url` while `server` accepts one connection; returns
/// both results.
async fn handshake_both(
    server: &Server,
    url: &str,
    config: WebSocketConfig,
) -> (
    Result<(sockeye::ClientStream, sockeye::http::Response<()>), Error>,
    Result<
        (
            sockeye::ServerStream,
            sockeye::http::Request<()>,
            std::net::SocketAddr,
        ),
        Error,
    >,
) {
    within("tls handshake", async {
        tokio::join!(sockeye::connect_with_config(url, config), server.accept())
    })
    .await
}

#[tokio::test]
async fn wss_echo_with_a_private_ca_negotiates_http11() {
    let ca = TestCa::new();
    let server = tls_server(&ca.localhost(), WebSocketConfig::default()).await;
    let port = server.local_addr().unwrap().port();
    let url = format!("wss://localhost:{port}/secure?x=1");
    let (client, accepted) = handshake_both(&server, &url, ca.client_config()).await;
    let (mut client, response) = client.expect("wss client");
    let (server_ws, request, _peer) = accepted.expect("wss server");
    assert_eq!(response.status(), 101);
    assert_eq!(request.uri(), "/secure?x=1");
    assert_eq!(request.headers()["host"], format!("localhost:{port}"));
    assert!(client.get_ref().is_tls());
    assert!(server_ws.get_ref().is_tls());
    assert_eq!(client.get_ref().alpn_protocol(), Some(&b"http/1.1"[..]));
    assert_eq!(server_ws.get_ref().alpn_protocol(), Some(&b"http/1.1"[..]));
    let echo = spawn_echo(server_ws);

    for message in [
        Message::text("hello over tls"),
        Message::binary(pattern(100_000, 7)),
        Message::text(""),
    ] {
        assert_eq!(round_trip(&mut client, message.clone()).await, message);
    }
    within("close", client.close(CloseCode::NORMAL, "bye"))
        .await
        .expect("close");
    let closed = client.close_info().expect("closed");
    assert!(closed.was_clean, "{closed:?}");
    let report = within("echo task", echo).await.unwrap();
    assert_eq!(report.echoed, 3);
    assert!(report.error.is_none(), "{:?}", report.error);
}

#[tokio::test]
async fn wss_to_an_ip_literal_checks_the_ip_san() {
    let ca = TestCa::new();
    let serving = serve_in_background(
        tls_server(&ca.localhost(), WebSocketConfig::default()).await,
        echo_handler,
    );
    let url = format!("wss://127.0.0.1:{}/", serving.addr.port());
    let (mut ws, _) = within(
        "connect",
        sockeye::connect_with_config(&url, ca.client_config()),
    )
    .await
    .expect("the certificate names 127.0.0.1");
    assert_eq!(
        round_trip(&mut ws, Message::text("ip")).await,
        Message::text("ip")
    );
    // A certificate naming only localhost does not cover 127.0.0.1.
    let serving = serve_in_background(
        tls_server(&ca.issue(&["localhost"]), WebSocketConfig::default()).await,
        echo_handler,
    );
    let url = format!("wss://127.0.0.1:{}/", serving.addr.port());
    let reason = tls_reason(
        within(
            "connect",
            sockeye::connect_with_config(&url, ca.client_config()),
        )
        .await,
    );
    assert!(reason.contains("NotValidForName"), "{reason}");
    assert!(
        reason.contains("not valid for name \"127.0.0.1\""),
        "{reason}"
    );
}

#[tokio::test]
async fn default_roots_refuse_a_private_ca_with_unknown_issuer() {
    let ca = TestCa::new();
    let server = tls_server(&ca.localhost(), WebSocketConfig::default()).await;
    let url = format!("wss://localhost:{}/", server.local_addr().unwrap().port());
    // No tls_client: the bundled webpki roots only.
    let (client, accepted) = handshake_both(&server, &url, WebSocketConfig::default()).await;
    let reason = tls_reason(client);
    // rustls: "invalid peer certificate: UnknownIssuer" (Debug: InvalidCertificate(UnknownIssuer)).
    assert!(
        reason.contains("invalid peer certificate: UnknownIssuer"),
        "{reason}"
    );
    assert!(
        reason.contains("InvalidCertificate(UnknownIssuer)"),
        "{reason}"
    );
    // The server learns why from the client's alert.
    let server_reason = tls_reason(accepted);
    assert!(
        server_reason.contains("received fatal alert: UnknownCA"),
        "{server_reason}"
    );
    // Trusting the CA through tls::client_config makes the same server acceptable.
    let (client, accepted) = handshake_both(&server, &url, ca.client_config()).await;
    client.expect("client trusting the CA");
    accepted.expect("server");
}

#[tokio::test]
async fn a_client_trusting_another_ca_refuses_the_server() {
    let ca = TestCa::new();
    let server = tls_server(&ca.localhost(), WebSocketConfig::default()).await;
    let url = format!("wss://localhost:{}/", server.local_addr().unwrap().port());
    // Another CA with another name: no candidate issuer at all.
    let other = TestCa::named("another test CA");
    let (client, _accepted) = handshake_both(&server, &url, other.client_config()).await;
    let reason = tls_reason(client);
    assert!(reason.contains("UnknownIssuer"), "{reason}");
    // An impostor CA with the same name: the issuer is found by name and its signature fails.
    let impostor = TestCa::new();
    let (client, _accepted) = handshake_both(&server, &url, impostor.client_config()).await;
    let reason = tls_reason(client);
    assert!(reason.contains("BadSignature"), "{reason}");
}

#[tokio::test]
async fn a_certificate_for_another_name_is_refused_as_not_valid_for_name() {
    let ca = TestCa::new();
    let cert = ca.issue(&["other.example"]);
    let server = tls_server(&cert, WebSocketConfig::default()).await;
    let url = format!("wss://localhost:{}/", server.local_addr().unwrap().port());
    let (client, accepted) = handshake_both(&server, &url, ca.client_config()).await;
    let reason = tls_reason(client);
    assert!(reason.contains("NotValidForName"), "{reason}");
    assert!(
        reason.contains(
            "certificate not valid for name \"localhost\"; certificate is only valid for \
             DnsName(\"other.example\")"
        ),
        "{reason}"
    );
    let server_reason = tls_reason(accepted);
    assert!(
        server_reason.contains("received fatal alert: BadCertificate"),
        "{server_reason}"
    );
}

#[tokio::test]
async fn an_expired_certificate_is_refused_as_expired() {
    let ca = TestCa::new();
    let cert = ca.issue_with(&["localhost"], |params| {
        params.not_before = rcgen::date_time_ymd(2000, 1, 1);
        params.not_after = rcgen::date_time_ymd(2001, 1, 1);
    });
    let server = tls_server(&cert, WebSocketConfig::default()).await;
    let url = format!("wss://localhost:{}/", server.local_addr().unwrap().port());
    let (client, _accepted) = handshake_both(&server, &url, ca.client_config()).await;
    let reason = tls_reason(client);
    assert!(reason.contains("ExpiredContext"), "{reason}");
    assert!(reason.contains("certificate expired"), "{reason}");
    // 2001-01-01T00:00:00Z.
    assert!(reason.contains("is not valid after 978307200"), "{reason}");
}

#[tokio::test]
async fn a_certificate_not_yet_valid_is_refused() {
    let ca = TestCa::new();
    let cert = ca.issue_with(&["localhost"], |params| {
        params.not_before = rcgen::date_time_ymd(4000, 1, 1);
    });
    let server = tls_server(&cert, WebSocketConfig::default()).await;
    let url = format!("wss://localhost:{}/", server.local_addr().unwrap().port());
    let (client, _accepted) = handshake_both(&server, &url, ca.client_config()).await;
    let reason = tls_reason(client);
    assert!(reason.contains("certificate not valid yet"), "{reason}");
}

const GARBAGE_CERT_PEM: &str =
    "-----BEGIN CERTIFICATE-----\nnot base64 at all!\n-----END CERTIFICATE-----\n";

#[test]
fn malformed_pem_is_a_tls_error() {
    let ca = TestCa::new();
    let cert = ca.localhost();

    // Bad base64 inside a certificate block.
    let reason = tls_reason(tls::certificates_from_pem(GARBAGE_CERT_PEM.as_bytes()));
    assert!(reason.contains("invalid certificate pem"), "{reason}");
    let reason = tls_reason(tls::client_config(Some(GARBAGE_CERT_PEM.as_bytes())));
    assert!(reason.contains("invalid certificate pem"), "{reason}");
    // No certificate at all: empty input, a key only.
    for pem in ["", "just some text\n", cert.key_pem.as_str()] {
        let reason = tls_reason(tls::client_config(Some(pem.as_bytes())));
        assert!(
            reason.contains("no certificate in pem"),
            "{pem:?}: {reason}"
        );
    }
    // Valid base64 that is not a certificate: refused when added to the root store.
    let not_der = "-----BEGIN CERTIFICATE-----\naGVsbG8gd29ybGQ=\n-----END CERTIFICATE-----\n";
    tls_reason(tls::client_config(Some(not_der.as_bytes())));

    // Server side: garbage chain, no key, garbage key, a key of another certificate.
    let reason = tls_reason(tls::server_config_from_pem(
        GARBAGE_CERT_PEM.as_bytes(),
        cert.key_pem.as_bytes(),
    ));
    assert!(reason.contains("invalid certificate pem"), "{reason}");
    let reason = tls_reason(tls::server_config_from_pem(
        cert.chain_pem.as_bytes(),
        cert.chain_pem.as_bytes(),
    ));
    assert!(reason.contains("invalid private key pem"), "{reason}");
    let garbage_key = "-----BEGIN PRIVATE KEY-----\n!!!!\n-----END PRIVATE KEY-----\n";
    let reason = tls_reason(tls::server_config_from_pem(
        cert.chain_pem.as_bytes(),
        garbage_key.as_bytes(),
    ));
    assert!(reason.contains("invalid private key pem"), "{reason}");
    let other = ca.localhost();
    let reason = tls_reason(tls::server_config_from_pem(
        cert.chain_pem.as_bytes(),
        other.key_pem.as_bytes(),
    ));
    assert!(reason.contains("KeyMismatch"), "{reason}");

    // The good pair loads.
    tls::server_config_from_pem(cert.chain_pem.as_bytes(), cert.key_pem.as_bytes())
        .expect("valid pem");
    assert_eq!(
        tls::certificates_from_pem(cert.chain_pem.as_bytes())
            .unwrap()
            .len(),
        2
    );
}

/// A directory under the system temp dir, unique to this process and test, removed on drop
/// (also when the test fails).
struct TempDir(std::path::PathBuf);

impl TempDir {
    fn new(name: &str) -> Self {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos();
        let path =
            std::env::temp_dir().join(format!("sockeye-tls-{name}-{}-{nanos}", std::process::id()));
        std::fs::create_dir(&path).expect("create temp dir");
        Self(path)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[tokio::test]
async fn server_config_from_pem_files_reads_the_files() {
    let ca = TestCa::new();
    let cert = ca.localhost();
    let dir = TempDir::new("files");
    let cert_path = dir.0.join("cert.pem");
    let key_path = dir.0.join("key.pem");
    std::fs::write(&cert_path, &cert.chain_pem).unwrap();
    std::fs::write(&key_path, &cert.key_pem).unwrap();

    let tls = tls::server_config_from_pem_files(&cert_path, &key_path).expect("load files");
    let server = Server::bind("127.0.0.1:0").await.unwrap().tls(tls);
    let serving = serve_in_background(server, echo_handler);
    let url = format!("wss://localhost:{}/", serving.addr.port());
    let (mut ws, _) = within(
        "connect",
        sockeye::connect_with_config(&url, ca.client_config()),
    )
    .await
    .expect("wss to a server loaded from files");
    assert_eq!(
        round_trip(&mut ws, Message::text("from files")).await,
        Message::text("from files")
    );

    // A missing file is an I/O error naming NotFound; swapped files are a PEM error.
    match tls::server_config_from_pem_files(dir.0.join("missing.pem"), &key_path) {
        Err(Error::Io(e)) => assert_eq!(e.kind(), std::io::ErrorKind::NotFound),
        other => panic!("expected Error::Io, got {other:?}"),
    }
    tls_reason(tls::server_config_from_pem_files(&key_path, &cert_path));
    drop(dir);
}

#[tokio::test]
async fn deflate_and_subprotocols_work_over_tls() {
    let ca = TestCa::new();
    let server_config = WebSocketConfig::default()
        .deflate(Some(DeflateConfig::default()))
        .protocols(["chat.v2", "chat.v1"]);
    let server = tls_server(&ca.localhost(), server_config).await;
    let url = format!("wss://localhost:{}/", server.local_addr().unwrap().port());
    let builder = ClientBuilder::new(&url)
        .config(ca.client_config().deflate(Some(DeflateConfig::default())))
        .protocols(["chat.v1", "chat.v2"]);
    let (client, accepted) = within("handshake", async {
        tokio::join!(builder.connect(), server.accept())
    })
    .await;
    let (mut client, response) = client.expect("client");
    let (server_ws, _, _) = accepted.expect("server");
    // The client's first choice among those the server supports.
    assert_eq!(client.protocol(), Some("chat.v1"));
    assert_eq!(server_ws.protocol(), Some("chat.v1"));
    assert_eq!(response.headers()["sec-websocket-protocol"], "chat.v1");
    let agreed = "permessage-deflate; server_no_context_takeover; client_no_context_takeover";
    assert_eq!(client.extensions(), agreed);
    assert_eq!(server_ws.extensions(), agreed);
    assert!(client.get_ref().is_tls());
    let echo = spawn_echo(server_ws);
    let text = "compressible over tls ".repeat(5000);
    for message in [
        Message::text(text),
        Message::binary(pattern(300_000, 3)),
        Message::text("short"),
    ] {
        assert_eq!(round_trip(&mut client, message.clone()).await, message);
    }
    within("close", client.close(CloseCode::NORMAL, ""))
        .await
        .unwrap();
    assert_eq!(within("echo", echo).await.unwrap().echoed, 3);
}

#[tokio::test]
async fn a_plain_client_fails_fast_against_a_tls_server_which_keeps_serving() {
    let ca = TestCa::new();
    let serving = serve_in_background(
        tls_server(&ca.localhost(), WebSocketConfig::default()).await,
        echo_handler,
    );
    let port = serving.addr.port();
    let limit = Duration::from_secs(5);
    let start = Instant::now();
    let result = within(
        "plain client",
        sockeye::connect_with_config(
            &format!("ws://127.0.0.1:{port}/"),
            WebSocketConfig::default().handshake_timeout(limit),
        ),
    )
    .await;
    let elapsed = start.elapsed();
    // The TLS server reads "GET / HTTP/1.1" as a corrupt record, answers with an alert and
    // closes: the client fails on a response that is not HTTP (or on the close), well before
    // its handshake timeout.
    match &result {
        Err(Error::Handshake(e)) if matches!(**e, HandshakeError::MalformedHttp(_)) => {}
        Err(Error::Io(_)) => {}
        other => panic!("expected a handshake or i/o error, got {other:?}"),
    }
    assert!(elapsed < limit, "took {elapsed:?}");

    // The server still serves TLS clients.
    let url = format!("wss://localhost:{port}/");
    let (mut ws, _) = within(
        "connect",
        sockeye::connect_with_config(&url, ca.client_config()),
    )
    .await
    .expect("wss after a plain client");
    assert_eq!(
        round_trip(&mut ws, Message::text("still here")).await,
        Message::text("still here")
    );
}

#[tokio::test]
async fn a_tls_client_fails_fast_against_a_plain_server_which_keeps_serving() {
    let ca = TestCa::new();
    let serving = serve_in_background(Server::bind("127.0.0.1:0").await.unwrap(), echo_handler);
    let port = serving.addr.port();
    let limit = Duration::from_secs(5);
    let start = Instant::now();
    // The plain server answers the ClientHello with "HTTP/1.1 400": not a TLS record.
    let reason = tls_reason(
        within(
            "tls client",
            sockeye::connect_with_config(
                &format!("wss://localhost:{port}/"),
                ca.client_config().handshake_timeout(limit),
            ),
        )
        .await,
    );
    assert!(start.elapsed() < limit);
    assert!(reason.contains("corrupt message"), "{reason}");

    let (mut ws, _) = within(
        "connect",
        sockeye::connect(&format!("ws://127.0.0.1:{port}/")),
    )
    .await
    .expect("ws after a tls client");
    assert_eq!(
        round_trip(&mut ws, Message::text("plain")).await,
        Message::text("plain")
    );
}

#[tokio::test]
async fn a_silent_peer_hits_the_tls_handshake_timeout_on_both_sides() {
    let ca = TestCa::new();
    // Server side: a TCP client that never sends its ClientHello.
    let server = tls_server(
        &ca.localhost(),
        WebSocketConfig::default().handshake_timeout(SHORT),
    )
    .await;
    let addr = server.local_addr().unwrap();
    let start = Instant::now();
    let (accepted, _tcp) = within("server timeout", async {
        tokio::join!(server.accept(), async {
            TcpStream::connect(addr).await.unwrap()
        })
    })
    .await;
    assert!(
        matches!(accepted, Err(Error::HandshakeTimeout)),
        "{accepted:?}"
    );
    assert!(start.elapsed() >= SHORT);

    // Client side: a TCP server that never answers the ClientHello.
    let (listener, _) = listener().await;
    let port = listener.local_addr().unwrap().port();
    let url = format!("wss://localhost:{port}/");
    let start = Instant::now();
    let (result, _held) = within("client timeout", async {
        tokio::join!(
            sockeye::connect_with_config(&url, ca.client_config().handshake_timeout(SHORT)),
            async { listener.accept().await.unwrap() }
        )
    })
    .await;
    assert!(matches!(result, Err(Error::HandshakeTimeout)), "{result:?}");
    assert!(start.elapsed() >= SHORT);
}

#[tokio::test]
async fn the_tls_server_survives_a_peer_that_resets_mid_handshake() {
    let ca = TestCa::new();
    let serving = serve_in_background(
        tls_server(&ca.localhost(), WebSocketConfig::default()).await,
        echo_handler,
    );
    // A ClientHello cut short, then the connection dropped.
    let mut tcp = TcpStream::connect(serving.addr).await.unwrap();
    tcp.write_all(&[0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00])
        .await
        .unwrap();
    drop(tcp);
    let url = format!("wss://localhost:{}/", serving.addr.port());
    let (mut ws, _) = within(
        "connect",
        sockeye::connect_with_config(&url, ca.client_config()),
    )
    .await
    .expect("wss after a broken peer");
    assert_eq!(
        round_trip(&mut ws, Message::text("ok")).await,
        Message::text("ok")
    );
    within("close", ws.close(CloseCode::NORMAL, ""))
        .await
        .unwrap();
    assert!(ws.close_info().expect("closed").was_clean);
}
