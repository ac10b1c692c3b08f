//! Runs the `echo_server`, `chat_server`, `client_stream` and `client_handlers` examples as
//! processes (built as `cargo run --example` builds them), waits for their ready line and talks
//! to them over loopback. Every process is killed when its guard drops; every wait is bounded.

mod common;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::{Mutex, PoisonError};

use common::{example_binary, within};
use futures_util::StreamExt as _;
use sockeye::{CloseCode, Message};
use tokio::io::{AsyncBufReadExt as _, BufReader, Lines};
use tokio::process::{Child, ChildStdout, Command};

/// The example's binary, built once per test run (the tests run in parallel: one build at a
/// time, the others wait for it).
fn built(name: &str) -> PathBuf {
    static BUILT: Mutex<BTreeMap<String, PathBuf>> = Mutex::new(BTreeMap::new());
    let mut built = BUILT.lock().unwrap_or_else(PoisonError::into_inner);
    built
        .entry(name.to_owned())
        .or_insert_with(|| example_binary(name, ""))
        .clone()
}

/// A running example: killed on drop.
struct Running {
    child: Child,
    stdout: Lines<BufReader<ChildStdout>>,
}

impl Running {
    fn start(name: &str, args: &[&str]) -> Self {
        let path = built(name);
        let mut child = Command::new(path)
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| panic!("start {name}: {e}"));
        let stdout = BufReader::new(child.stdout.take().expect("piped stdout")).lines();
        Self { child, stdout }
    }

    /// The next line of output.
    async fn line(&mut self) -> String {
        within("a line of output", self.stdout.next_line())
            .await
            .expect("read stdout")
            .expect("output ended early")
    }

    /// For a server: waits for `listening on ws://ADDR/` and returns the URL.
    async fn ready_url(&mut self) -> String {
        let line = self.line().await;
        let url = line
            .strip_prefix("listening on ")
            .unwrap_or_else(|| panic!("unexpected ready line {line:?}"));
        assert!(
            url.starts_with("ws://127.0.0.1:") && url.ends_with('/'),
            "{url}"
        );
        url.to_owned()
    }

    /// For a client: every line until it exits, and whether it succeeded.
    async fn finish(mut self) -> (Vec<String>, bool) {
        let mut lines = Vec::new();
        while let Some(line) = within("client output", self.stdout.next_line())
            .await
            .expect("read stdout")
        {
            lines.push(line);
        }
        let status = within("client exits", self.child.wait())
            .await
            .expect("wait");
        (lines, status.success())
    }
}

#[tokio::test]
async fn echo_server_echoes() {
    let mut server = Running::start("echo_server", &["127.0.0.1:0"]);
    let url = server.ready_url().await;
    let (mut ws, _) = within("connect", sockeye::connect(&url)).await.unwrap();
    for message in [Message::text("héllo"), Message::binary(vec![0, 1, 2, 255])] {
        ws.send(message.clone()).await.unwrap();
        let echoed = within("echo", ws.next()).await.unwrap().unwrap();
        assert_eq!(echoed, message);
    }
    within("close", ws.close(CloseCode::NORMAL, "bye"))
        .await
        .unwrap();
    assert!(ws.close_info().unwrap().was_clean);
}

#[tokio::test]
async fn client_stream_sends_its_arguments_and_prints_replies() {
    let mut server = Running::start("echo_server", &["127.0.0.1:0"]);
    let url = server.ready_url().await;
    let client = Running::start("client_stream", &[&url, "one", "two words", "three"]);
    let (lines, ok) = client.finish().await;
    assert!(ok, "client_stream failed: {lines:?}");
    assert_eq!(
        lines,
        [
            format!("connected to {url}"),
            "< one".into(),
            "< two words".into(),
            "< three".into()
        ]
    );
}

#[tokio::test]
async fn client_handlers_sends_its_arguments_and_prints_replies() {
    let mut server = Running::start("echo_server", &["127.0.0.1:0"]);
    let url = server.ready_url().await;
    let client = Running::start("client_handlers", &[&url, "alpha", "beta"]);
    let (lines, ok) = client.finish().await;
    assert!(ok, "client_handlers failed: {lines:?}");
    assert_eq!(
        lines,
        [
            format!("connected to {url}"),
            "< alpha".into(),
            "< beta".into(),
            "closed: 1000".into()
        ]
    );
}

#[tokio::test]
async fn client_handlers_reports_a_refused_connection() {
    let (listener, url) = common::listener().await;
    drop(listener);
    let client = Running::start("client_handlers", &[&url]);
    let (lines, ok) = client.finish().await;
    assert!(!ok, "a refused connection must fail");
    assert_eq!(lines, ["closed: 1006"]);
}

type Client = sockeye::ClientStream;

/// Sends probes from `from` until `to` hears one: then both are in the room (a client is
/// registered before its own messages are handled), and no probe is left in flight (the server
/// forwards a client's messages in order, so `to` would have read an earlier one first).
async fn join(from: &mut Client, to: &mut Client) {
    for attempt in 0..100 {
        let probe = Message::text(format!("probe {attempt}"));
        from.send(probe.clone()).await.unwrap();
        let wait = std::time::Duration::from_millis(100);
        if let Ok(heard) = tokio::time::timeout(wait, to.next()).await {
            assert_eq!(heard.expect("stream ended").expect("receive"), probe);
            return;
        }
    }
    panic!("the room never had both clients");
}

#[tokio::test]
async fn chat_server_broadcasts_within_a_room_only() {
    let mut server = Running::start("chat_server", &["127.0.0.1:0"]);
    let url = server.ready_url().await;
    let connect = |room: &str| {
        let url = format!("{url}{room}");
        async move { sockeye::connect(&url).await }
    };
    let (mut a1, _) = within("connect a1", connect("room-a")).await.unwrap();
    let (mut a2, _) = within("connect a2", connect("room-a")).await.unwrap();
    let (mut b1, _) = within("connect b1", connect("room-b")).await.unwrap();
    let (mut b2, _) = within("connect b2", connect("room-b")).await.unwrap();

    // The server puts a client in its room when its handler starts, just after the handshake:
    // wait until each room has both members.
    join(&mut a1, &mut a2).await;
    join(&mut b1, &mut b2).await;

    // a1 speaks: a2 hears it; b1 does not. b2 then speaks, so b1's very next message must be
    // b2's: had a1's message gone to room b, it would have been queued before.
    a1.send(Message::text("hello room a")).await.unwrap();
    let heard = within("a2 hears a1", a2.next()).await.unwrap().unwrap();
    assert_eq!(heard, Message::text("hello room a"));
    b2.send(Message::text("hello room b")).await.unwrap();
    let heard = within("b1 hears b2", b1.next()).await.unwrap().unwrap();
    assert_eq!(heard, Message::text("hello room b"));
    // And the sender does not hear itself: a2 answers, and a1's next message is that answer.
    a2.send(Message::text("hi a1")).await.unwrap();
    let heard = within("a1 hears a2", a1.next()).await.unwrap().unwrap();
    assert_eq!(heard, Message::text("hi a1"));

    for mut ws in [a1, a2, b1, b2] {
        within("close", ws.close(CloseCode::NORMAL, "bye"))
            .await
            .unwrap();
    }
}
