//! Client connections through proxies: a small HTTP `CONNECT` proxy and a small SOCKS5 proxy of
//! our own, on loopback, that record what they are sent and tunnel bytes. Echo through each,
//! authentication (sent correctly; refused: a distinct error), refused targets, a stalled
//! proxy, `wss://` through a tunnel (TLS end to end, SNI and certificate for the target).

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::StreamExt as _;
use sockeye::{
    ClientBuilder, Error, Message, Proxy, ProxyConfig, ProxyError, Server, WebSocketConfig, WsUrl,
};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};

/// Upper bound on anything that should happen promptly.
const PATIENCE: Duration = Duration::from_secs(20);

async fn within<F: std::future::Future>(what: &str, fut: F) -> F::Output {
    tokio::time::timeout(PATIENCE, fut)
        .await
        .unwrap_or_else(|_| panic!("timed out: {what}"))
}

/// `Basic base64("alice:wonder land")`, computed independently.
const ALICE_BASIC: &str = "Basic YWxpY2U6d29uZGVyIGxhbmQ=";

/// A WebSocket echo server on loopback; returns its port.
async fn echo_server(server: Server) -> u16 {
    let port = server.local_addr().unwrap().port();
    tokio::spawn(server.serve(|mut ws, _request| async move {
        while let Some(Ok(message)) = ws.next().await {
            if message.is_data() && ws.send(message).await.is_err() {
                break;
            }
        }
    }));
    port
}

/// What a test proxy saw.
#[derive(Debug, Default, Clone)]
struct Seen {
    /// HTTP: each request head, verbatim.
    heads: Vec<String>,
    /// SOCKS5: the methods each greeting offered.
    methods: Vec<Vec<u8>>,
    /// SOCKS5: each username/password received.
    credentials: Vec<(String, String)>,
    /// SOCKS5: each CONNECT request's address type, address and port.
    targets: Vec<(u8, String, u16)>,
    /// Tunnels opened to a target.
    tunnels: usize,
    /// The first bytes the client sent through each tunnel.
    first_bytes: Vec<Vec<u8>>,
}

/// How a test proxy behaves.
#[derive(Debug, Clone, Default)]
struct Behaviour {
    /// HTTP: the `Proxy-Authorization` value required. SOCKS5: the user name and password.
    http_auth: Option<&'static str>,
    socks_auth: Option<(&'static str, &'static str)>,
    /// HTTP: answer CONNECT with this status instead of tunnelling. SOCKS5: this reply code.
    refuse: Option<u16>,
}

struct TestProxy {
    addr: SocketAddr,
    seen: Arc<Mutex<Seen>>,
}

impl TestProxy {
    fn seen(&self) -> Seen {
        self.seen.lock().unwrap().clone()
    }
}

/// Opens the tunnel to `target`, records the client's first bytes, then copies both ways.
async fn relay(mut client: TcpStream, target: String, seen: Arc<Mutex<Seen>>) {
    let Ok(mut upstream) = TcpStream::connect(target).await else {
        return;
    };
    seen.lock().unwrap().tunnels += 1;
    let mut first = vec![0u8; 64];
    let Ok(n) = client.read(&mut first).await else {
        return;
    };
    first.truncate(n);
    seen.lock().unwrap().first_bytes.push(first.clone());
    if upstream.write_all(&first).await.is_err() {
        return;
    }
    drop(tokio::io::copy_bidirectional(&mut client, &mut upstream).await);
}

async fn spawn_proxy<F, Fut>(behaviour: Behaviour, handle: F) -> TestProxy
where
    F: Fn(TcpStream, Behaviour, Arc<Mutex<Seen>>) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let seen = Arc::new(Mutex::new(Seen::default()));
    let recorded = seen.clone();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            tokio::spawn(handle(tcp, behaviour.clone(), recorded.clone()));
        }
    });
    TestProxy { addr, seen }
}

/// An HTTP CONNECT proxy.
async fn http_proxy(behaviour: Behaviour) -> TestProxy {
    spawn_proxy(behaviour, |mut tcp, behaviour, seen| async move {
        let mut head = Vec::new();
        let mut byte = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") && head.len() < 8192 {
            if tcp.read(&mut byte).await.unwrap_or(0) == 0 {
                return;
            }
            head.push(byte[0]);
        }
        let head = String::from_utf8(head).unwrap();
        seen.lock().unwrap().heads.push(head.clone());
        let target = head.split(' ').nth(1).unwrap_or_default().to_owned();
        let authorization = head.lines().find_map(|line| {
            line.strip_prefix("Proxy-Authorization: ")
                .or_else(|| line.strip_prefix("proxy-authorization: "))
        });
        if let Some(required) = behaviour.http_auth {
            if authorization != Some(required) {
                let answer = "HTTP/1.1 407 Proxy Authentication Required\r\n\
                              Proxy-Authenticate: Basic realm=\"test\"\r\nContent-Length: 0\r\n\r\n";
                drop(tcp.write_all(answer.as_bytes()).await);
                return;
            }
        }
        if let Some(status) = behaviour.refuse {
            let answer = format!("HTTP/1.1 {status} Refused\r\nContent-Length: 0\r\n\r\n");
            drop(tcp.write_all(answer.as_bytes()).await);
            return;
        }
        if !head.starts_with("CONNECT ") {
            drop(tcp.write_all(b"HTTP/1.1 405 Method Not Allowed\r\n\r\n").await);
            return;
        }
        if tcp
            .write_all(b"HTTP/1.1 200 Connection established\r\n\r\n")
            .await
            .is_err()
        {
            return;
        }
        relay(tcp, target, seen).await;
    })
    .await
}

/// A SOCKS5 proxy (RFC 1928, RFC 1929).
async fn socks5_proxy(behaviour: Behaviour) -> TestProxy {
    spawn_proxy(behaviour, |mut tcp, behaviour, seen| async move {
        if let Ok(Some(target)) = socks5_session(&mut tcp, &behaviour, &seen).await {
            relay(tcp, target, seen).await;
        }
    })
    .await
}

/// One SOCKS5 negotiation; returns the target to relay to, if the proxy grants it.
async fn socks5_session(
    tcp: &mut TcpStream,
    behaviour: &Behaviour,
    seen: &Arc<Mutex<Seen>>,
) -> std::io::Result<Option<String>> {
    let mut greeting = [0u8; 2];
    tcp.read_exact(&mut greeting).await?;
    assert_eq!(greeting[0], 5, "socks version");
    let mut methods = vec![0u8; usize::from(greeting[1])];
    tcp.read_exact(&mut methods).await?;
    seen.lock().unwrap().methods.push(methods.clone());
    match behaviour.socks_auth {
        Some((user, password)) => {
            if !methods.contains(&2) {
                tcp.write_all(&[5, 0xFF]).await?;
                return Ok(None);
            }
            tcp.write_all(&[5, 2]).await?;
            let mut version_len = [0u8; 2];
            tcp.read_exact(&mut version_len).await?;
            assert_eq!(version_len[0], 1, "rfc 1929 version");
            let mut got_user = vec![0u8; usize::from(version_len[1])];
            tcp.read_exact(&mut got_user).await?;
            let mut len = [0u8; 1];
            tcp.read_exact(&mut len).await?;
            let mut got_password = vec![0u8; usize::from(len[0])];
            tcp.read_exact(&mut got_password).await?;
            let got = (
                String::from_utf8(got_user).unwrap(),
                String::from_utf8(got_password).unwrap(),
            );
            seen.lock().unwrap().credentials.push(got.clone());
            if got != (user.to_owned(), password.to_owned()) {
                // RFC 1929: a failure status, then close.
                tcp.write_all(&[1, 1]).await?;
                return Ok(None);
            }
            tcp.write_all(&[1, 0]).await?;
        }
        None => tcp.write_all(&[5, 0]).await?,
    }
    let mut request = [0u8; 4];
    tcp.read_exact(&mut request).await?;
    assert_eq!(&request[..3], &[5, 1, 0], "socks connect request");
    let address = match request[3] {
        1 => {
            let mut ip = [0u8; 4];
            tcp.read_exact(&mut ip).await?;
            std::net::Ipv4Addr::from(ip).to_string()
        }
        4 => {
            let mut ip = [0u8; 16];
            tcp.read_exact(&mut ip).await?;
            std::net::Ipv6Addr::from(ip).to_string()
        }
        3 => {
            let mut len = [0u8; 1];
            tcp.read_exact(&mut len).await?;
            let mut name = vec![0u8; usize::from(len[0])];
            tcp.read_exact(&mut name).await?;
            String::from_utf8(name).unwrap()
        }
        other => panic!("address type {other}"),
    };
    let mut port = [0u8; 2];
    tcp.read_exact(&mut port).await?;
    let port = u16::from_be_bytes(port);
    seen.lock()
        .unwrap()
        .targets
        .push((request[3], address.clone(), port));
    if let Some(code) = behaviour.refuse {
        tcp.write_all(&[5, code as u8, 0, 1, 0, 0, 0, 0, 0, 0])
            .await?;
        return Ok(None);
    }
    // Bound address: a domain, to exercise the client's variable-length parsing.
    tcp.write_all(&[5, 0, 0, 3, 5, b'p', b'r', b'o', b'x', b'y', 0x04, 0x38])
        .await?;
    let target = if address.contains(':') {
        format!("[{address}]:{port}")
    } else {
        format!("{address}:{port}")
    };
    Ok(Some(target))
}

fn via(proxy: Proxy) -> WebSocketConfig {
    WebSocketConfig::default().proxy(proxy)
}

/// Connects to `url` with `config`, sends a text message and expects it echoed.
async fn echo_through(url: &str, config: WebSocketConfig) {
    let (mut ws, response) = within(
        "connect through proxy",
        ClientBuilder::new(url).config(config).connect(),
    )
    .await
    .expect("connect through proxy");
    assert_eq!(response.status(), 101);
    within("echo", ws.send(Message::text("through the tunnel")))
        .await
        .unwrap();
    let echoed = within("echo", ws.next()).await.unwrap().unwrap();
    assert_eq!(echoed, Message::text("through the tunnel"));
    within("close", ws.close(sockeye::CloseCode::NORMAL, ""))
        .await
        .unwrap();
}

async fn connect_error(url: &str, config: WebSocketConfig) -> Error {
    within(
        "failing connect",
        ClientBuilder::new(url).config(config).connect(),
    )
    .await
    .expect_err("connect should fail")
}

#[tokio::test]
async fn ws_through_http_proxy_echoes() {
    let port = echo_server(Server::bind("127.0.0.1:0").await.unwrap()).await;
    let proxy = http_proxy(Behaviour::default()).await;
    let url = format!("ws://127.0.0.1:{port}/chat");
    echo_through(&url, via(Proxy::http("127.0.0.1", proxy.addr.port()))).await;
    let seen = proxy.seen();
    assert_eq!(
        seen.heads,
        [format!(
            "CONNECT 127.0.0.1:{port} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n"
        )]
    );
    assert_eq!(seen.tunnels, 1);
    assert!(
        seen.first_bytes[0].starts_with(b"GET /chat HTTP/1.1\r\n"),
        "{:?}",
        String::from_utf8_lossy(&seen.first_bytes[0])
    );
}

#[tokio::test]
async fn http_proxy_basic_auth_is_sent() {
    let port = echo_server(Server::bind("127.0.0.1:0").await.unwrap()).await;
    let proxy = http_proxy(Behaviour {
        http_auth: Some(ALICE_BASIC),
        ..Behaviour::default()
    })
    .await;
    let proxy_url = format!("http://alice:wonder%20land@{}", proxy.addr);
    let config = via(Proxy::parse(&proxy_url).unwrap());
    echo_through(&format!("ws://127.0.0.1:{port}/"), config).await;
    let seen = proxy.seen();
    assert_eq!(seen.heads.len(), 1);
    assert!(
        seen.heads[0].contains(&format!("\r\nProxy-Authorization: {ALICE_BASIC}\r\n")),
        "{}",
        seen.heads[0]
    );
    assert_eq!(seen.tunnels, 1);
}

#[tokio::test]
async fn http_proxy_auth_failures_are_distinct() {
    let port = echo_server(Server::bind("127.0.0.1:0").await.unwrap()).await;
    let proxy = http_proxy(Behaviour {
        http_auth: Some(ALICE_BASIC),
        ..Behaviour::default()
    })
    .await;
    let url = format!("ws://127.0.0.1:{port}/");

    let wrong = Proxy::http("127.0.0.1", proxy.addr.port()).with_auth("alice", "guess");
    let e = connect_error(&url, via(wrong)).await;
    assert!(matches!(e, Error::Proxy(ProxyError::AuthFailed)), "{e:?}");
    assert!(matches!(&e, Error::Proxy(p) if p.is_auth()));
    assert_eq!(e.to_string(), "proxy tunnel failed");
    assert_eq!(
        std::error::Error::source(&e).unwrap().to_string(),
        "proxy rejected the credentials"
    );

    let none = Proxy::http("127.0.0.1", proxy.addr.port());
    let e = connect_error(&url, via(none)).await;
    assert!(matches!(e, Error::Proxy(ProxyError::AuthRequired)), "{e:?}");

    let seen = proxy.seen();
    assert_eq!(seen.heads.len(), 2);
    assert!(!seen.heads[1].contains("Proxy-Authorization"));
    assert_eq!(seen.tunnels, 0, "no tunnel without the right credentials");
}

#[tokio::test]
async fn http_proxy_refusing_the_target() {
    let proxy = http_proxy(Behaviour {
        refuse: Some(403),
        ..Behaviour::default()
    })
    .await;
    let e = connect_error(
        "ws://127.0.0.1:9/",
        via(Proxy::http("127.0.0.1", proxy.addr.port())),
    )
    .await;
    assert!(
        matches!(e, Error::Proxy(ProxyError::HttpStatus(403))),
        "{e:?}"
    );
    assert_eq!(
        std::error::Error::source(&e).unwrap().to_string(),
        "proxy refused connect with http 403"
    );
}

#[tokio::test]
async fn stalled_proxy_hits_the_connect_timeout() {
    // Accepts, reads, never answers.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let holder = tokio::spawn(async move {
        let (mut tcp, _) = listener.accept().await.unwrap();
        let mut sink = Vec::new();
        drop(tcp.read_to_end(&mut sink).await);
    });
    let mut config = via(Proxy::http("127.0.0.1", addr.port()));
    config.connect_timeout = Duration::from_millis(200);
    let started = tokio::time::Instant::now();
    let e = connect_error("ws://127.0.0.1:9/", config).await;
    assert!(matches!(e, Error::ConnectTimeout), "{e:?}");
    assert!(started.elapsed() >= Duration::from_millis(200));
    assert!(started.elapsed() < Duration::from_secs(5));
    holder.abort();
}

#[tokio::test]
async fn unreachable_proxy_is_an_io_error() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    drop(listener);
    let e = connect_error("ws://127.0.0.1:9/", via(Proxy::http("127.0.0.1", port))).await;
    assert!(matches!(e, Error::Io(_)), "{e:?}");
}

#[tokio::test]
async fn ws_through_socks5h_sends_the_name() {
    let port = echo_server(Server::bind("127.0.0.1:0").await.unwrap()).await;
    let proxy = socks5_proxy(Behaviour::default()).await;
    let config = via(Proxy::parse(&format!("socks5h://{}", proxy.addr)).unwrap());
    echo_through(&format!("ws://localhost:{port}/"), config).await;
    let seen = proxy.seen();
    assert_eq!(seen.methods, [vec![0]], "only no-auth offered");
    assert_eq!(seen.targets, [(3, "localhost".to_owned(), port)]);
    assert_eq!(seen.tunnels, 1);
    assert!(seen.first_bytes[0].starts_with(b"GET / HTTP/1.1\r\n"));
}

#[tokio::test]
async fn ws_through_socks5_sends_addresses() {
    let port = echo_server(Server::bind("127.0.0.1:0").await.unwrap()).await;
    let proxy = socks5_proxy(Behaviour::default()).await;
    let config = via(Proxy::socks5("127.0.0.1", proxy.addr.port()));
    // socks5:// resolves names locally: "localhost" is sent as 127.0.0.1.
    echo_through(&format!("ws://localhost:{port}/"), config.clone()).await;
    echo_through(&format!("ws://127.0.0.1:{port}/"), config).await;
    let seen = proxy.seen();
    let expected = (1, "127.0.0.1".to_owned(), port);
    assert_eq!(seen.targets, [expected.clone(), expected]);
}

#[tokio::test]
async fn ws_through_socks5_to_ipv6() {
    let Ok(server) = Server::bind("[::1]:0").await else {
        eprintln!("no IPv6 loopback: skipped");
        return;
    };
    let port = echo_server(server).await;
    let proxy = socks5_proxy(Behaviour::default()).await;
    let config = via(Proxy::socks5h("127.0.0.1", proxy.addr.port()));
    echo_through(&format!("ws://[::1]:{port}/"), config).await;
    assert_eq!(proxy.seen().targets, [(4, "::1".to_owned(), port)]);
}

#[tokio::test]
async fn socks5_username_password() {
    let port = echo_server(Server::bind("127.0.0.1:0").await.unwrap()).await;
    let proxy = socks5_proxy(Behaviour {
        socks_auth: Some(("alice", "wonder land")),
        ..Behaviour::default()
    })
    .await;
    let url = format!("ws://127.0.0.1:{port}/");
    let good = Proxy::parse(&format!("socks5h://alice:wonder%20land@{}", proxy.addr)).unwrap();
    echo_through(&url, via(good)).await;

    let wrong = Proxy::socks5h("127.0.0.1", proxy.addr.port()).with_auth("alice", "guess");
    let e = connect_error(&url, via(wrong)).await;
    assert!(matches!(e, Error::Proxy(ProxyError::AuthFailed)), "{e:?}");

    let none = Proxy::socks5h("127.0.0.1", proxy.addr.port());
    let e = connect_error(&url, via(none)).await;
    assert!(matches!(e, Error::Proxy(ProxyError::AuthRequired)), "{e:?}");

    let seen = proxy.seen();
    assert_eq!(seen.methods, [vec![0, 2], vec![0, 2], vec![0]]);
    assert_eq!(
        seen.credentials,
        [
            ("alice".to_owned(), "wonder land".to_owned()),
            ("alice".to_owned(), "guess".to_owned())
        ]
    );
    assert_eq!(seen.tunnels, 1, "only the right credentials open a tunnel");
}

#[tokio::test]
async fn socks5_refusals_name_the_reply() {
    for (code, text) in [
        (0x02, "connection not allowed by ruleset"),
        (0x05, "connection refused"),
    ] {
        let proxy = socks5_proxy(Behaviour {
            refuse: Some(code),
            ..Behaviour::default()
        })
        .await;
        let e = connect_error(
            "ws://127.0.0.1:9/",
            via(Proxy::socks5h("127.0.0.1", proxy.addr.port())),
        )
        .await;
        assert!(
            matches!(e, Error::Proxy(ProxyError::Socks5Reply(c)) if u16::from(c) == code),
            "{e:?}"
        );
        let source = std::error::Error::source(&e).unwrap().to_string();
        assert!(source.contains(text), "{source}");
        assert_eq!(proxy.seen().tunnels, 0);
    }
}

#[tokio::test]
async fn redirect_through_the_same_proxy() {
    // A server that redirects to the echo server; both reached through the proxy.
    let echo_port = echo_server(Server::bind("127.0.0.1:0").await.unwrap()).await;
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let redirect_port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        let (mut tcp, _) = listener.accept().await.unwrap();
        let mut head = Vec::new();
        let mut byte = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") {
            if tcp.read(&mut byte).await.unwrap() == 0 {
                return;
            }
            head.push(byte[0]);
        }
        let answer = format!(
            "HTTP/1.1 307 Temporary Redirect\r\nLocation: ws://127.0.0.1:{echo_port}/\r\n\
             Content-Length: 0\r\n\r\n"
        );
        tcp.write_all(answer.as_bytes()).await.unwrap();
    });
    let proxy = http_proxy(Behaviour::default()).await;
    let config = via(Proxy::http("127.0.0.1", proxy.addr.port())).max_redirects(1);
    echo_through(&format!("ws://127.0.0.1:{redirect_port}/"), config).await;
    let targets: Vec<String> = proxy
        .seen()
        .heads
        .iter()
        .map(|h| h.lines().next().unwrap().to_owned())
        .collect();
    assert_eq!(
        targets,
        [
            format!("CONNECT 127.0.0.1:{redirect_port} HTTP/1.1"),
            format!("CONNECT 127.0.0.1:{echo_port} HTTP/1.1"),
        ]
    );
}

#[cfg(feature = "rustls")]
#[tokio::test]
async fn wss_through_http_proxy_keeps_tls_end_to_end() {
    let ca = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    let cert_pem = ca.cert.pem();
    let server_tls = sockeye::tls::server_config_from_pem(
        cert_pem.as_bytes(),
        ca.signing_key.serialize_pem().as_bytes(),
    )
    .unwrap();
    let server = Server::bind("127.0.0.1:0").await.unwrap().tls(server_tls);
    let port = echo_server(server).await;
    let proxy = http_proxy(Behaviour::default()).await;
    let client_tls = sockeye::tls::client_config(Some(cert_pem.as_bytes())).unwrap();
    let config = via(Proxy::http("127.0.0.1", proxy.addr.port())).tls_client(client_tls);
    echo_through(&format!("wss://localhost:{port}/"), config).await;
    let seen = proxy.seen();
    assert_eq!(
        seen.heads[0].lines().next().unwrap(),
        format!("CONNECT localhost:{port} HTTP/1.1")
    );
    // The proxy relays a TLS handshake record, not the plaintext upgrade request.
    assert_eq!(&seen.first_bytes[0][..2], &[0x16, 0x03], "tls record");
    assert!(!seen.first_bytes[0].windows(4).any(|w| w == b"GET "));
}

#[test]
fn from_env_with_no_proxy() {
    // The environment is injected: tests never mutate the process environment.
    let vars = [
        ("HTTPS_PROXY", "http://user:pw@proxy.corp:3128"),
        ("http_proxy", "socks5h://socks.corp"),
        ("NO_PROXY", "localhost, .internal,10.0.0.0/8"),
    ];
    let lookup = |name: &str| {
        vars.iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| (*v).to_owned())
    };
    let proxy_for = |url: &str| Proxy::from_env_with(&WsUrl::parse(url).unwrap(), lookup).unwrap();
    assert_eq!(
        proxy_for("wss://example.com/"),
        Some(Proxy::http("proxy.corp", 3128).with_auth("user", "pw"))
    );
    assert_eq!(
        proxy_for("ws://example.com/"),
        Some(Proxy::socks5h("socks.corp", 1080))
    );
    assert_eq!(proxy_for("wss://localhost:8443/"), None);
    assert_eq!(proxy_for("wss://db.internal/"), None);
    assert_eq!(proxy_for("ws://10.1.2.3/"), None);
    assert_eq!(
        proxy_for("ws://11.1.2.3/"),
        Some(Proxy::socks5h("socks.corp", 1080))
    );
    // Reading the environment is opt-in.
    assert_eq!(WebSocketConfig::default().proxy, ProxyConfig::Direct);
    assert_eq!(
        ProxyConfig::Direct.proxy_for(&WsUrl::parse("ws://example.com/").unwrap()),
        Ok(None)
    );
}
