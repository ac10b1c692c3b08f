//! `sockeye serve` as a process: broadcast rooms, the demo page and static files over plain
//! HTTP on the WebSocket port, graceful shutdown on SIGTERM, and a client that stops reading.
//! Loopback only; every wait is bounded by [`PATIENCE`].

use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use futures_util::{SinkExt as _, StreamExt as _};
use sockeye::{ClientStream, CloseCode, Message};
use tokio::io::{AsyncBufReadExt as _, AsyncReadExt as _, AsyncWriteExt as _, BufReader};
use tokio::net::TcpStream;
use tokio::process::{Child, Command};

/// Upper bound on anything that should happen promptly; never used to wait for something.
const PATIENCE: Duration = Duration::from_secs(20);

const DEMO_PAGE: &str = include_str!("../src/demo.html");

async fn within<F: Future>(what: &str, fut: F) -> F::Output {
    match tokio::time::timeout(PATIENCE, fut).await {
        Ok(output) => output,
        Err(_) => panic!("timed out: {what}"),
    }
}

/// `fut`, which must complete before `deadline`: for each pass of a loop whose whole run is
/// bounded, where [`within`] would give every pass a fresh [`PATIENCE`].
async fn before<F: Future>(deadline: tokio::time::Instant, what: &str, fut: F) -> F::Output {
    match tokio::time::timeout_at(deadline, fut).await {
        Ok(output) => output,
        Err(_) => panic!("timed out: {what}"),
    }
}

/// A running `sockeye serve`, killed when dropped.
struct Serve {
    child: Child,
    addr: SocketAddr,
}

impl Serve {
    /// Starts `sockeye serve --listen 127.0.0.1:0` with `args` and reads its address from the
    /// first line it prints.
    async fn start(args: &[&str]) -> Self {
        let mut child = Command::new(env!("CARGO_BIN_EXE_sockeye"))
            .args(["serve", "--listen", "127.0.0.1:0"])
            .args(args)
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("spawn sockeye serve");
        let stdout = child.stdout.take().expect("stdout");
        let mut lines = BufReader::new(stdout).lines();
        let first = within("sockeye serve prints its URL", lines.next_line())
            .await
            .expect("read stdout")
            .expect("sockeye serve printed nothing");
        let url = first
            .split_whitespace()
            .find_map(|word| word.strip_prefix("ws://"))
            .unwrap_or_else(|| panic!("no ws:// URL in {first:?}"));
        let addr = url.trim_end_matches('/').parse().expect("address");
        let second = within("the second line", lines.next_line())
            .await
            .expect("read stdout")
            .expect("one line only");
        assert!(second.contains(&format!("http://{addr}/")), "{second}");
        Self { child, addr }
    }

    async fn connect(&self, path: &str) -> ClientStream {
        let url = format!("ws://{}{path}", self.addr);
        let (ws, response) = within("connect", sockeye::connect(&url))
            .await
            .expect("connect");
        assert_eq!(response.status(), 101);
        ws
    }

    /// Sends SIGTERM; returns the exit status, which must come within `bound`, and stderr.
    #[cfg(unix)]
    async fn terminate(mut self, bound: Duration) -> (std::process::ExitStatus, String) {
        let pid = self.child.id().expect("running").to_string();
        let killed = std::process::Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .expect("run kill");
        assert!(killed.success());
        let status = tokio::time::timeout(bound, self.child.wait())
            .await
            .unwrap_or_else(|_| panic!("sockeye serve did not exit within {bound:?} of SIGTERM"))
            .expect("wait");
        let mut stderr = String::new();
        if let Some(mut pipe) = self.child.stderr.take() {
            within("read stderr", pipe.read_to_string(&mut stderr))
                .await
                .expect("stderr");
        }
        (status, stderr)
    }
}

/// The next data message, skipping control messages; panics at the end of the stream, or when
/// none comes within [`PATIENCE`] however many control messages (keepalive pings) do.
async fn next_data(ws: &mut ClientStream, who: &str) -> Message {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        match before(deadline, who, ws.next()).await {
            Some(Ok(message)) if message.is_data() => return message,
            Some(Ok(_)) => {}
            other => panic!("{who}: expected a message, got {other:?}"),
        }
    }
}

#[tokio::test]
async fn broadcast_goes_to_the_others_on_the_same_path_only() {
    let server = Serve::start(&["--mode", "broadcast"]).await;
    let mut a1 = server.connect("/room/a").await;
    let mut a2 = server.connect("/room/a").await;
    let mut a3 = server.connect("/room/a").await;
    let mut b1 = server.connect("/room/b").await;
    let mut b2 = server.connect("/room/b").await;
    // The room is the path: a query string does not make another room.
    let mut a4 = server.connect("/room/a?x=1").await;

    a1.send(Message::text("from a1")).await.expect("send");
    for (ws, who) in [(&mut a2, "a2"), (&mut a3, "a3"), (&mut a4, "a4")] {
        assert_eq!(next_data(ws, who).await, Message::text("from a1"), "{who}");
    }
    a2.send(Message::binary(vec![0, 1, 2, 255]))
        .await
        .expect("send");
    // Had the server sent a1 its own message, a1 would see it before a2's, published later.
    assert_eq!(
        next_data(&mut a1, "a1").await,
        Message::binary(vec![0, 1, 2, 255])
    );
    for (ws, who) in [(&mut a3, "a3"), (&mut a4, "a4")] {
        assert_eq!(
            next_data(ws, who).await,
            Message::binary(vec![0, 1, 2, 255]),
            "{who}"
        );
    }
    // Both messages of room a were published before this one: had room b got them, b1 would
    // see them first.
    b2.send(Message::text("from b2")).await.expect("send");
    assert_eq!(next_data(&mut b1, "b1").await, Message::text("from b2"));
    // And room a does not get room b's message: a1's next message is a3's.
    a3.send(Message::text("from a3")).await.expect("send");
    assert_eq!(next_data(&mut a1, "a1").await, Message::text("from a3"));
}

/// Sends `request` over raw TCP; returns the status line, the head and the body.
async fn http(addr: SocketAddr, request: &str) -> (String, String, Vec<u8>) {
    let mut tcp = within("connect", TcpStream::connect(addr))
        .await
        .expect("connect");
    tcp.write_all(request.as_bytes()).await.expect("write");
    let mut answer = Vec::new();
    within("answer", tcp.read_to_end(&mut answer))
        .await
        .expect("read");
    let split = answer
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("a complete head");
    let head = String::from_utf8(answer[..split].to_vec()).expect("utf-8 head");
    let body = answer[split + 4..].to_vec();
    let status = head.lines().next().unwrap_or_default().to_owned();
    (status, head.to_ascii_lowercase(), body)
}

async fn get(addr: SocketAddr, path: &str) -> (String, String, Vec<u8>) {
    http(
        addr,
        &format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nUser-Agent: test\r\n\r\n"),
    )
    .await
}

#[tokio::test]
async fn plain_get_returns_the_demo_page() {
    let server = Serve::start(&["--mode", "broadcast"]).await;
    let (status, head, body) = get(server.addr, "/").await;
    assert_eq!(status, "HTTP/1.1 200 OK");
    assert!(
        head.contains("content-type: text/html; charset=utf-8"),
        "{head}"
    );
    assert!(
        head.contains(&format!("content-length: {}", DEMO_PAGE.len())),
        "{head}"
    );
    assert_eq!(body, DEMO_PAGE.as_bytes());
    for id in ["name", "room", "state", "messages", "text", "send"] {
        assert!(DEMO_PAGE.contains(&format!("id=\"{id}\"")), "#{id}");
    }

    let (status, head, body) = http(server.addr, "HEAD / HTTP/1.1\r\nHost: x\r\n\r\n").await;
    assert_eq!(status, "HTTP/1.1 200 OK");
    assert!(
        head.contains(&format!("content-length: {}", DEMO_PAGE.len())),
        "{head}"
    );
    assert!(body.is_empty(), "HEAD has no body");

    let (status, _, _) = get(server.addr, "/nothing-here").await;
    assert_eq!(status, "HTTP/1.1 404 Not Found");
    let (status, _, _) = http(
        server.addr,
        "GET / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc",
    )
    .await;
    assert_eq!(status, "HTTP/1.1 413 Payload Too Large");
    // WebSocket upgrades still work on the same port, at any path.
    let mut ws = server.connect("/").await;
    ws.close(CloseCode::NORMAL, "").await.expect("close");
}

/// A fresh directory under the system temporary directory, removed when dropped.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> Self {
        let path =
            std::env::temp_dir().join(format!("sockeye-serve-test-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).expect("create temp dir");
        Self(path)
    }

    fn write(&self, name: &str, contents: &[u8]) {
        let path = self.0.join(name);
        std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
        std::fs::write(path, contents).expect("write");
    }

    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[tokio::test]
async fn static_serves_files_and_refuses_traversal() {
    let base = TempDir::new("static");
    base.write("secret.txt", b"outside the root");
    base.write("www/index.html", b"<h1>index</h1>");
    base.write("www/style.css", b"body{}");
    base.write("www/data.json", b"{\"a\":1}");
    base.write("www/img/dot.png", b"\x89PNG\r\n\x1a\n");
    base.write("www/pic.svg", b"<svg/>");
    base.write("www/notes.txt", b"notes");
    base.write("www/app.js", b"1;");
    let root = base.path().join("www");
    let root_arg = root.to_str().expect("utf-8 path");
    let server = Serve::start(&["--static", root_arg]).await;

    for (path, content_type, body) in [
        ("/", "text/html; charset=utf-8", &b"<h1>index</h1>"[..]),
        ("/index.html", "text/html; charset=utf-8", b"<h1>index</h1>"),
        ("/style.css", "text/css; charset=utf-8", b"body{}"),
        ("/data.json?v=2", "application/json", b"{\"a\":1}"),
        ("/img/dot.png", "image/png", b"\x89PNG\r\n\x1a\n"),
        ("/pic.svg", "image/svg+xml", b"<svg/>"),
        ("/notes.txt", "text/plain; charset=utf-8", b"notes"),
        ("/app.js", "text/javascript; charset=utf-8", b"1;"),
        ("/%6eotes.txt", "text/plain; charset=utf-8", b"notes"),
    ] {
        let (status, head, got) = get(server.addr, path).await;
        assert_eq!(status, "HTTP/1.1 200 OK", "{path}");
        assert!(
            head.contains(&format!("content-type: {content_type}\r\n")),
            "{path}: {head}"
        );
        assert_eq!(got, body, "{path}");
    }
    for path in [
        "/../secret.txt",
        "/img/../../secret.txt",
        "/%2e%2e/secret.txt",
        "/%2E%2E%2Fsecret.txt",
        "/img/..%2f..%2fsecret.txt",
        "/./../secret.txt",
    ] {
        let (status, _, body) = get(server.addr, path).await;
        assert_eq!(status, "HTTP/1.1 403 Forbidden", "{path}");
        assert!(
            !String::from_utf8_lossy(&body).contains("outside"),
            "{path}"
        );
    }
    for path in ["/%2", "/%zz", "/a%5c..%5csecret.txt", "/%00"] {
        let (status, _, _) = get(server.addr, path).await;
        assert_eq!(status, "HTTP/1.1 400 Bad Request", "{path}");
    }
    let (status, _, _) = get(server.addr, "/missing.txt").await;
    assert_eq!(status, "HTTP/1.1 404 Not Found");
}

#[cfg(unix)]
#[tokio::test]
async fn sigterm_closes_clients_with_1001_and_exits_0() {
    let shutdown_timeout = Duration::from_secs(5);
    let server = Serve::start(&["--mode", "broadcast", "--shutdown-timeout", "5"]).await;
    let mut clients = Vec::new();
    for path in ["/room/a", "/room/a", "/room/b"] {
        clients.push(server.connect(path).await);
    }
    // The connections are open at the server once a message goes through.
    clients[0].send(Message::text("hi")).await.expect("send");
    assert_eq!(next_data(&mut clients[1], "a2").await, Message::text("hi"));
    let waiting = tokio::spawn(async move {
        let mut codes = Vec::new();
        for mut ws in clients {
            while let Some(item) = ws.next().await {
                item.expect("a clean close");
            }
            codes.push(ws.close_info().expect("close info").code);
        }
        codes
    });
    // Every client answers the close at once: the process exits well within the timeout.
    let (status, stderr) = server.terminate(shutdown_timeout).await;
    assert!(status.success(), "exit status {status:?}: {stderr}");
    assert!(stderr.contains("shutting down"), "{stderr}");
    let codes = within("clients see the close", waiting)
        .await
        .expect("join");
    assert_eq!(codes, vec![CloseCode::GOING_AWAY; 3]);
}

#[cfg(unix)]
#[tokio::test]
async fn a_client_that_does_not_read_does_not_stop_the_others() {
    const MESSAGES: usize = 600;
    const SIZE: usize = 64 << 10;
    let server = Serve::start(&["--mode", "broadcast", "--broadcast-queue", "8"]).await;
    let mut sender = server.connect("/room/busy").await;
    let mut reader = server.connect("/room/busy").await;
    // Never polled until the end: its socket buffers fill up, then its queue at the server.
    let mut stalled = server.connect("/room/busy").await;
    // 600 × 64 KiB = 37.5 MiB: far more than loopback socket buffers, the 64 KiB write buffer
    // and 8 queued messages hold.
    for i in 0..MESSAGES {
        let mut payload = vec![0u8; SIZE];
        payload[..8].copy_from_slice(&(i as u64).to_be_bytes());
        sender
            .send(Message::binary(payload.clone()))
            .await
            .expect("send");
        assert_eq!(
            next_data(&mut reader, "reader").await,
            Message::binary(payload),
            "message {i}"
        );
    }
    // The stalled client gets what was buffered for it, then the connection ends.
    let mut received = 0;
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let next = stalled.next();
        match before(deadline, "the stalled client is disconnected", next).await {
            Some(Ok(message)) if message.is_data() => received += 1,
            Some(Ok(_)) => {}
            Some(Err(_)) | None => break,
        }
    }
    assert!(received < MESSAGES, "the stalled client got everything");
    if let Some(closed) = stalled.close_info() {
        if closed.was_clean {
            assert_eq!(closed.code, CloseCode::POLICY_VIOLATION);
        }
    }
    // The room still works for the others.
    sender
        .send(Message::text("still here"))
        .await
        .expect("send");
    assert_eq!(
        next_data(&mut reader, "reader").await,
        Message::text("still here")
    );
    for mut ws in [sender, reader] {
        within("close", ws.close(CloseCode::NORMAL, ""))
            .await
            .expect("close");
    }
    let (status, stderr) = server.terminate(PATIENCE).await;
    assert!(status.success(), "{stderr}");
    assert!(
        stderr.contains("1 slow client(s) were disconnected with 1008"),
        "{stderr}"
    );
}

#[tokio::test]
async fn the_access_log_in_a_pipe_has_no_colour_codes() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_sockeye"))
        .args(["serve", "--listen", "127.0.0.1:0", "--mode", "echo"])
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn sockeye serve");
    let mut stdout = BufReader::new(child.stdout.take().expect("stdout")).lines();
    let first = within("the URL", stdout.next_line())
        .await
        .expect("read")
        .expect("a line");
    let url = first
        .split_whitespace()
        .find(|word| word.starts_with("ws://"))
        .unwrap_or_else(|| panic!("no ws:// URL in {first:?}"))
        .to_owned();
    // The mode as the command line spells it, not `Echo`.
    assert!(first.contains("(mode echo"), "{first}");
    let (mut ws, _) = within("connect", sockeye::connect(&url))
        .await
        .expect("connect");
    let local = ws
        .get_ref()
        .get_ref()
        .expect("a TCP connection")
        .local_addr()
        .expect("local address");
    within("close", ws.close(CloseCode::NORMAL, ""))
        .await
        .expect("close");
    // A second client resets its connection (RST): the server's socket then no longer knows
    // its peer's address, but the log line still names it.
    let (mut reset, _) = within("connect", sockeye::connect(&url))
        .await
        .expect("connect");
    reset.send(Message::text("x")).await.expect("send");
    assert_eq!(next_data(&mut reset, "echo").await, Message::text("x"));
    let tcp = reset.get_ref().get_ref().expect("a TCP connection");
    let reset_local = tcp.local_addr().expect("local address");
    tcp.set_zero_linger().expect("SO_LINGER 0");
    drop(reset);
    // Read the log until both connections' ends show up in it.
    let mut stderr = BufReader::new(child.stderr.take().expect("stderr")).lines();
    let mut log = String::new();
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while log.matches("connection closed").count() < 2 {
        let line = before(deadline, "the access log", stderr.next_line())
            .await
            .expect("read")
            .unwrap_or_else(|| panic!("the log ended: {log:?}"));
        log.push_str(&line);
        log.push('\n');
    }
    assert!(!log.contains('\u{1b}'), "escape codes in {log:?}");
    // The closing line names the peer, read when the connection opened: the socket may no
    // longer know it when the connection has closed.
    for peer in [local, reset_local] {
        assert!(
            log.lines().any(|line| line.contains("connection closed")
                && line.contains(&format!("peer={peer} "))),
            "no closing line for {peer} in {log}"
        );
    }
}

#[tokio::test]
async fn shutdown_timeout_must_be_a_number_0_or_more() {
    for bad in ["-1", "nan", "inf", "soon"] {
        let output = within(
            "sockeye serve refuses the option",
            Command::new(env!("CARGO_BIN_EXE_sockeye"))
                .args(["serve", "--listen", "127.0.0.1:0"])
                .arg(format!("--shutdown-timeout={bad}"))
                .stdin(Stdio::null())
                .kill_on_drop(true)
                .output(),
        )
        .await
        .expect("run sockeye serve");
        assert_eq!(output.status.code(), Some(2), "--shutdown-timeout={bad}");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            stderr.contains("expected a number, 0 or more"),
            "--shutdown-timeout={bad}: {stderr}"
        );
    }
}

/// A free loopback port, for a server whose stdout cannot tell its address. Another process
/// could take it in between; nothing else on this machine listens on random ports.
fn free_port() -> SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("address")
}

#[cfg(unix)]
#[tokio::test]
async fn a_closed_stdout_does_not_stop_the_server() {
    let addr = free_port();
    // Stdout is a pipe whose reader is gone before the server starts: every write to it fails
    // with EPIPE, the first line included.
    let (writer, reader) = tokio::net::unix::pipe::pipe().expect("pipe");
    drop(reader);
    let stdout = writer.into_blocking_fd().expect("pipe fd");
    let mut child = Command::new(env!("CARGO_BIN_EXE_sockeye"))
        .args(["serve", "--mode", "echo", "--listen", &addr.to_string()])
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::from(stdout))
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn sockeye serve");
    let url = format!("ws://{addr}/");
    let deadline = tokio::time::Instant::now() + PATIENCE;
    let mut ws = loop {
        match before(deadline, "connect", sockeye::connect(&url)).await {
            Ok((ws, _)) => break ws,
            Err(e) => {
                assert!(
                    child.try_wait().expect("try_wait").is_none(),
                    "sockeye serve exited before listening: {e}"
                );
                before(
                    deadline,
                    "the server listens",
                    tokio::time::sleep(Duration::from_millis(20)),
                )
                .await;
            }
        }
    };
    ws.send(Message::text("still serving")).await.expect("send");
    assert_eq!(
        next_data(&mut ws, "echo").await,
        Message::text("still serving")
    );
    let waiting = tokio::spawn(async move {
        while let Some(item) = ws.next().await {
            item.expect("a clean close");
        }
        ws.close_info().expect("close info").code
    });
    let pid = child.id().expect("running").to_string();
    let killed = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .expect("run kill");
    assert!(killed.success());
    let status = within("exit after SIGTERM", child.wait())
        .await
        .expect("wait");
    let mut stderr = String::new();
    within(
        "read stderr",
        child
            .stderr
            .take()
            .expect("stderr")
            .read_to_string(&mut stderr),
    )
    .await
    .expect("stderr");
    assert!(status.success(), "exit status {status:?}: {stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(stderr.contains("shutting down"), "{stderr}");
    assert_eq!(
        within("the client sees the close", waiting)
            .await
            .expect("join"),
        CloseCode::GOING_AWAY
    );
}

/// A compressed broadcast: subscribers that negotiated every kind of permessage-deflate
/// parameters (context takeover or not on either side, small and large windows) and one
/// without compression all receive exactly what was published, in order, on one and on two
/// server threads.
#[tokio::test]
async fn a_compressed_broadcast_reaches_every_parameter_set_intact() {
    use sockeye::{DeflateConfig, WebSocketConfig};
    let offers = |server_nct: bool, client_nct: bool, server_bits, client_bits| {
        let mut deflate = DeflateConfig::default();
        deflate.server_no_context_takeover = server_nct;
        deflate.client_no_context_takeover = client_nct;
        deflate.server_max_window_bits = server_bits;
        deflate.client_max_window_bits = client_bits;
        Some(deflate)
    };
    let configs = [
        None,
        offers(false, false, None, None),
        offers(true, false, None, None),
        offers(false, true, None, None),
        offers(true, true, None, None),
        offers(false, false, Some(9), Some(9)),
        offers(true, false, Some(10), None),
        offers(false, false, Some(15), Some(12)),
    ];
    // Repetitive text (compresses well, and differently with context takeover), and noise.
    let messages: Vec<Message> = (0..60u32)
        .map(|i| {
            if i % 3 == 2 {
                let noise: Vec<u8> = (0..700u32)
                    .map(|j| (j.wrapping_mul(2_654_435_761).wrapping_add(i) >> 13) as u8)
                    .collect();
                Message::binary(noise)
            } else {
                Message::text(format!(
                    "{{\"seq\":{i},\"text\":\"{}\"}}",
                    "hello room ".repeat(i as usize % 7 + 1)
                ))
            }
        })
        .collect();
    for threads in ["1", "2"] {
        let server =
            Serve::start(&["--mode", "broadcast", "--deflate", "--threads", threads]).await;
        let url = format!("ws://{}/room/deflate", server.addr);
        let mut subscribers = Vec::new();
        for deflate in &configs {
            let config = WebSocketConfig::default().deflate(deflate.clone());
            let (ws, response) = within("connect", sockeye::connect_with_config(&url, config))
                .await
                .expect("connect");
            let negotiated = response
                .headers()
                .get("sec-websocket-extensions")
                .map(|v| v.to_str().unwrap_or("?").to_owned());
            assert_eq!(negotiated.is_some(), deflate.is_some(), "{negotiated:?}");
            subscribers.push((ws, negotiated));
        }
        let mut publisher = server.connect("/room/deflate").await;
        // Every subscriber is in the room once a message sent through it reaches the publisher
        // (which proves the publisher in the room too). Until then it is sent again: a message
        // published before the publisher's handler has subscribed does not reach it.
        for (k, (ws, _)) in subscribers.iter_mut().enumerate() {
            let joined = Message::text(format!("joined {k}"));
            within("joined", async {
                loop {
                    ws.send(joined.clone()).await.expect("send");
                    let wait = tokio::time::sleep(Duration::from_millis(200));
                    tokio::pin!(wait);
                    loop {
                        tokio::select! {
                            () = &mut wait => break,
                            got = publisher.next() => match got {
                                Some(Ok(m)) if m == joined => return,
                                Some(Ok(_)) => {}
                                other => panic!("publisher: {other:?}"),
                            },
                        }
                    }
                }
            })
            .await;
        }
        for message in &messages {
            within("publish", publisher.feed(message.clone()))
                .await
                .expect("feed");
        }
        within("flush", publisher.flush()).await.expect("flush");
        for (ws, negotiated) in &mut subscribers {
            for (n, message) in messages.iter().enumerate() {
                // Skipping the other subscribers' "joined k", which some of them got.
                let mut got = next_data(ws, "broadcast").await;
                while matches!(&got, Message::Text(t) if t.as_str().starts_with("joined ")) {
                    got = next_data(ws, "broadcast").await;
                }
                assert_eq!(
                    &got, message,
                    "message {n}, threads {threads}, extensions {negotiated:?}"
                );
            }
        }
    }
}
