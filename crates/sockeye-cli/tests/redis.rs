//! Two `sockeye serve --mode broadcast --redis …` nodes sharing rooms through a real
//! redis-server of the test's own on a free loopback port: every message reaches every client
//! of the room on both nodes, in order per publisher; with Redis stopped, local delivery goes on
//! and the failure shows in `/metrics`; with Redis restarted, cross-node delivery resumes.
//!
//! Needs Debian's `redis-server` (`scripts/redis.sh` installs it): `SOCKEYE_REDIS_SERVER`, else
//! `redis-server` on `PATH`, else `/usr/bin/redis-server`. Fails, never skips, without it.
//! Loopback only; every wait is bounded by [`PATIENCE`].

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use futures_util::StreamExt as _;
use sockeye::{ClientStream, CloseCode, Message};
use tokio::io::{AsyncBufReadExt as _, AsyncReadExt as _, AsyncWriteExt as _, BufReader};
use tokio::net::TcpStream;
use tokio::process::{Child, Command};

/// Upper bound on anything that should happen promptly; never used to wait for something.
const PATIENCE: Duration = Duration::from_secs(30);

/// Pause between two looks at something that changes by itself (a metric, a port).
const POLL: Duration = Duration::from_millis(20);

async fn within<F: Future>(what: &str, fut: F) -> F::Output {
    match tokio::time::timeout(PATIENCE, fut).await {
        Ok(output) => output,
        Err(_) => panic!("timed out after {PATIENCE:?}: {what}"),
    }
}

/// The redis-server binary, or a panic saying how to get one.
fn redis_server() -> PathBuf {
    if let Some(path) = std::env::var_os("SOCKEYE_REDIS_SERVER") {
        let path = PathBuf::from(path);
        assert!(
            path.is_file(),
            "SOCKEYE_REDIS_SERVER={} does not exist",
            path.display()
        );
        return path;
    }
    let on_path = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join("redis-server"))
            .find(|candidate| candidate.is_file())
    });
    on_path
        .or_else(|| Some(PathBuf::from("/usr/bin/redis-server")).filter(|p| p.is_file()))
        .unwrap_or_else(|| {
            panic!(
                "redis-server not found: run scripts/redis.sh (installs Debian's redis-server) \
                 or set SOCKEYE_REDIS_SERVER"
            )
        })
}

/// A redis-server on 127.0.0.1:`port`, killed when dropped.
struct Redis {
    child: Child,
    port: u16,
}

impl Redis {
    async fn start(port: u16) -> Self {
        let child = Command::new(redis_server())
            .args(["--bind", "127.0.0.1", "--port", &port.to_string()])
            .args(["--save", "", "--appendonly", "no", "--daemonize", "no"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("spawn redis-server");
        let redis = Self { child, port };
        within("redis-server answers PING", async {
            loop {
                if let Ok(mut tcp) = TcpStream::connect(("127.0.0.1", port)).await {
                    let mut answer = [0u8; 7];
                    if tcp.write_all(b"PING\r\n").await.is_ok()
                        && tcp.read_exact(&mut answer).await.is_ok()
                        && &answer == b"+PONG\r\n"
                    {
                        return;
                    }
                }
                tokio::time::sleep(POLL).await;
            }
        })
        .await;
        redis
    }

    /// Kills the server and waits until its port refuses connections.
    async fn stop(mut self) {
        self.child.start_kill().expect("kill redis-server");
        within("redis-server exits", self.child.wait())
            .await
            .expect("wait");
        within("the port is closed", async {
            while TcpStream::connect(("127.0.0.1", self.port)).await.is_ok() {
                tokio::time::sleep(POLL).await;
            }
        })
        .await;
    }
}

/// A free loopback port (the listener is closed at once; nothing else binds ports here).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind")
        .port()
}

/// A running `sockeye serve`, killed when dropped.
struct Node {
    _child: Child,
    _stdout: tokio::io::Lines<BufReader<tokio::process::ChildStdout>>,
    addr: SocketAddr,
}

impl Node {
    async fn start(redis_port: u16) -> Self {
        let redis = format!("redis://127.0.0.1:{redis_port}/");
        let mut child = Command::new(env!("CARGO_BIN_EXE_sockeye"))
            .args(["serve", "--listen", "127.0.0.1:0", "--mode", "broadcast"])
            .args(["--redis", &redis])
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("spawn sockeye serve");
        let stdout = child.stdout.take().expect("stdout");
        let mut lines = BufReader::new(stdout).lines();
        let first = within("sockeye serve prints its URL", lines.next_line())
            .await
            .expect("read stdout")
            .expect("sockeye serve printed nothing");
        let addr = first
            .split_whitespace()
            .find_map(|word| word.strip_prefix("ws://"))
            .unwrap_or_else(|| panic!("no ws:// URL in {first:?}"))
            .trim_end_matches('/')
            .parse()
            .expect("address");
        // The rest of stdout is not read, but stays open: a few short lines fit the pipe, and
        // a closed pipe would fail the node's next print.
        Self {
            _child: child,
            _stdout: lines,
            addr,
        }
    }

    async fn connect(&self, path: &str) -> ClientStream {
        let url = format!("ws://{}{path}", self.addr);
        within("connect", sockeye::connect(&url))
            .await
            .expect("connect")
            .0
    }

    /// `GET /metrics`: the value of each sample.
    async fn metrics(&self) -> Vec<(String, u64)> {
        let mut tcp = within("connect", TcpStream::connect(self.addr))
            .await
            .expect("connect");
        let request = format!(
            "GET /metrics HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n",
            self.addr
        );
        tcp.write_all(request.as_bytes()).await.expect("write");
        // Up to the end of the connection; a reset after the answer (the server closed with our
        // bytes unread) keeps what was read.
        let mut answer = Vec::new();
        let mut chunk = [0u8; 4096];
        within("/metrics", async {
            while let Ok(n @ 1..) = tcp.read(&mut chunk).await {
                answer.extend_from_slice(&chunk[..n]);
            }
        })
        .await;
        let answer = String::from_utf8(answer).expect("UTF-8");
        let (head, body) = answer.split_once("\r\n\r\n").expect("a complete answer");
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
        assert!(
            head.to_ascii_lowercase()
                .contains("content-type: text/plain; version=0.0.4"),
            "{head}"
        );
        body.lines()
            .filter(|line| !line.starts_with('#'))
            .map(|line| {
                let (name, value) = line.split_once(' ').expect("name value");
                (name.to_owned(), value.parse().expect("an integer"))
            })
            .collect()
    }

    async fn metric(&self, name: &str) -> u64 {
        let samples = self.metrics().await;
        samples
            .iter()
            .find(|(n, _)| n == name)
            .unwrap_or_else(|| panic!("no {name} in {samples:?}"))
            .1
    }

    /// Waits until metric `name` satisfies `ok`.
    async fn wait_metric(&self, name: &str, ok: impl Fn(u64) -> bool) {
        within(&format!("{name} on {}", self.addr), async {
            while !ok(self.metric(name).await) {
                tokio::time::sleep(POLL).await;
            }
        })
        .await;
    }
}

/// The next text message, skipping control messages (one bound for all: keepalive pings come
/// more often than `PATIENCE`); panics at the end of the stream.
async fn next_text(ws: &mut ClientStream, who: &str) -> String {
    within(who, async {
        loop {
            match ws.next().await {
                Some(Ok(Message::Text(text))) => return text.to_string(),
                Some(Ok(message)) if !message.is_data() => {}
                other => panic!("{who}: expected a text message, got {other:?}"),
            }
        }
    })
    .await
}

/// Receives `count` messages of the form `<publisher>-<n>`; asserts each publisher's come in
/// order 0, 1, 2…; returns how many came from each publisher.
async fn receive_in_order(ws: &mut ClientStream, who: &str, count: usize) -> Vec<(String, u64)> {
    let mut next: Vec<(String, u64)> = Vec::new();
    for _ in 0..count {
        let text = next_text(ws, who).await;
        let (publisher, n) = text.rsplit_once('-').expect("publisher-n");
        let n: u64 = n.parse().expect("a number");
        match next.iter_mut().find(|(p, _)| p == publisher) {
            Some((_, expected)) => {
                assert_eq!(n, *expected, "{who}: out of order from {publisher}");
                *expected += 1;
            }
            None => {
                assert_eq!(n, 0, "{who}: {publisher}'s first message");
                next.push((publisher.to_owned(), 1));
            }
        }
    }
    next.sort();
    next
}

#[tokio::test]
async fn rooms_span_two_nodes_and_survive_a_redis_restart() {
    const MESSAGES: u64 = 200;
    let port = free_port();
    let redis = Redis::start(port).await;
    let a = Node::start(port).await;
    let b = Node::start(port).await;
    for node in [&a, &b] {
        node.wait_metric("sockeye_backplane_up", |up| up == 1).await;
    }
    let mut a1 = a.connect("/room/x").await;
    let mut a2 = a.connect("/room/x").await;
    let mut b1 = b.connect("/room/x").await;
    let mut b2 = b.connect("/room/x").await;
    let mut elsewhere = b.connect("/room/y").await;
    a.wait_metric("sockeye_subscriptions", |n| n == 2).await;
    b.wait_metric("sockeye_subscriptions", |n| n == 3).await;

    // Two publishers, one per node, interleaved.
    for i in 0..MESSAGES {
        a1.send(Message::text(format!("a1-{i}")))
            .await
            .expect("send");
        b1.send(Message::text(format!("b1-{i}")))
            .await
            .expect("send");
    }
    let both = vec![("a1".to_owned(), MESSAGES), ("b1".to_owned(), MESSAGES)];
    let total = 2 * MESSAGES as usize;
    assert_eq!(receive_in_order(&mut a2, "a2", total).await, both);
    assert_eq!(receive_in_order(&mut b2, "b2", total).await, both);
    assert_eq!(
        receive_in_order(&mut a1, "a1", MESSAGES as usize).await,
        vec![("b1".to_owned(), MESSAGES)]
    );
    assert_eq!(
        receive_in_order(&mut b1, "b1", MESSAGES as usize).await,
        vec![("a1".to_owned(), MESSAGES)]
    );
    // The other room got nothing: its first message is the marker sent to it now.
    let mut y = a.connect("/room/y").await;
    a.wait_metric("sockeye_subscriptions", |n| n == 3).await;
    y.send(Message::text("marker")).await.expect("send");
    assert_eq!(next_text(&mut elsewhere, "elsewhere").await, "marker");
    assert_eq!(a.metric("sockeye_backplane_errors_total").await, 0);
    assert!(b.metric("sockeye_backplane_in_total").await >= MESSAGES);

    // Redis down: local delivery goes on, the failure is counted.
    redis.stop().await;
    for node in [&a, &b] {
        node.wait_metric("sockeye_backplane_errors_total", |n| n >= 1)
            .await;
        node.wait_metric("sockeye_backplane_up", |up| up == 0).await;
    }
    a1.send(Message::text("local-a")).await.expect("send");
    b1.send(Message::text("local-b")).await.expect("send");
    assert_eq!(next_text(&mut a2, "a2").await, "local-a");
    assert_eq!(next_text(&mut b2, "b2").await, "local-b");
    a.wait_metric("sockeye_backplane_dropped_total", |n| n >= 1)
        .await;
    b.wait_metric("sockeye_backplane_dropped_total", |n| n >= 1)
        .await;

    // Redis back on the same port: the nodes reconnect and subscribe again by themselves.
    let redis = Redis::start(port).await;
    for node in [&a, &b] {
        node.wait_metric("sockeye_backplane_up", |up| up == 1).await;
    }
    a1.send(Message::text("after-a")).await.expect("send");
    b1.send(Message::text("after-b")).await.expect("send");
    // What was published while Redis was down never arrives late: the next messages are the
    // ones published after the restart (their order across publishers is free).
    for (ws, who) in [(&mut a2, "a2"), (&mut b2, "b2")] {
        let mut got = vec![next_text(ws, who).await, next_text(ws, who).await];
        got.sort();
        assert_eq!(got, ["after-a", "after-b"], "{who}");
    }
    assert_eq!(next_text(&mut b1, "b1").await, "after-a");
    assert_eq!(next_text(&mut a1, "a1").await, "after-b");

    for mut ws in [a1, a2, b1, b2, elsewhere, y] {
        within("close", ws.close(CloseCode::NORMAL, ""))
            .await
            .expect("close");
    }
    a.wait_metric("sockeye_connections", |n| n == 0).await;
    drop(redis);
}
