//! `sockeye connect`: pipe mode through `sockeye serve --mode echo`, exit statuses against
//! servers that refuse, drop or close with an error, `--json`, and the interactive mode driven
//! through a pseudo-terminal (`script` from util-linux) against an in-test sockeye server.

mod support;

use std::io::{Read as _, Write as _};
use std::net::TcpListener;
use std::sync::mpsc;

use sockeye::{CloseCode, Message};
use std::time::Duration;
use support::{one_connection_server, run, sockeye, EchoServer, Reply, Running, PATIENCE};

/// Documented exit statuses (`sockeye connect --help`).
const EXIT_CONNECTION: i32 = 1;
const EXIT_USAGE: i32 = 2;
const EXIT_HANDSHAKE: i32 = 3;
const EXIT_PEER_ERROR: i32 = 4;

/// The `event` field of each `--json` record.
fn event_names(records: &[serde_json::Value]) -> Vec<&str> {
    records
        .iter()
        .map(|e| e["event"].as_str().expect("event name"))
        .collect()
}

#[test]
fn pipe_round_trips_ten_thousand_lines_in_order() {
    let server = EchoServer::start();
    let mut input = String::new();
    for i in 0..10_000 {
        // Varied lengths and some non-ASCII text; one empty line.
        let filler = "é".repeat(i % 17);
        if i == 5000 {
            input.push('\n');
        } else {
            input.push_str(&format!("line {i} {filler}\n"));
        }
    }
    let out = run(
        &["connect", &server.url, "--wait-replies", "all"],
        input.as_bytes(),
    );
    assert_eq!(out.code(), 0, "stderr: {}", out.stderr);
    assert_eq!(out.stdout_text(), input);
}

/// Without any flag the client closes at the end of its input and prints what arrives until
/// the server's close frame: an echo server's replies to the last lines are not lost.
#[test]
fn pipe_prints_the_replies_that_arrive_after_its_close() {
    let server = EchoServer::start();
    let out = run(&["connect", &server.url], b"one\ntwo\nthree\n");
    assert_eq!(out.code(), 0, "stderr: {}", out.stderr);
    assert_eq!(out.stdout_text(), "one\ntwo\nthree\n");

    let input: String = (0..2000).map(|i| format!("line {i}\n")).collect();
    let out = run(&["connect", &server.url], input.as_bytes());
    assert_eq!(out.code(), 0, "stderr: {}", out.stderr);
    assert_eq!(out.stdout_text(), input);
}

#[test]
fn null_records_and_binary_input() {
    let server = EchoServer::start();
    let out = run(
        &["connect", &server.url, "--null", "--wait-replies", "all"],
        b"one\ntwo\0three\0",
    );
    assert_eq!(out.code(), 0, "stderr: {}", out.stderr);
    assert_eq!(out.stdout, b"one\ntwo\0three\0");

    let out = run(
        &["connect", &server.url, "--binary", "--wait-replies", "1"],
        &[0x00, 0x01, 0xfe, 0xff],
    );
    assert_eq!(out.code(), 0, "stderr: {}", out.stderr);
    assert_eq!(out.stdout_text(), "0001feff\n");

    let out = run(
        &[
            "connect",
            &server.url,
            "--binary",
            "--base64",
            "--wait-replies",
            "1",
        ],
        &[0xfb, 0xff],
    );
    assert_eq!(out.code(), 0, "stderr: {}", out.stderr);
    assert_eq!(out.stdout_text(), "+/8=\n");
}

#[test]
fn json_events_parse() {
    let server = EchoServer::start();
    let out = run(
        &[
            "connect",
            &server.url,
            "--json",
            "--timestamps",
            "--wait-replies",
            "all",
        ],
        b"hello\n{\"not\": \"parsed\"}\n",
    );
    assert_eq!(out.code(), 0, "stderr: {}", out.stderr);
    let events: Vec<serde_json::Value> = out
        .stdout_text()
        .lines()
        .map(|line| serde_json::from_str(line).expect("each line is JSON"))
        .collect();
    let kinds = event_names(&events);
    // The echoes, the server's close frame answering ours, and how the connection ended.
    assert_eq!(
        kinds,
        ["open", "message", "message", "close_frame", "close"]
    );
    assert_eq!(events[0]["status"], 101);
    assert_eq!(events[1]["data"], "hello");
    assert_eq!(events[1]["direction"], "in");
    assert_eq!(events[2]["data"], "{\"not\": \"parsed\"}");
    assert_eq!(events[3]["direction"], "in");
    assert_eq!(events[3]["code"], 1000);
    assert_eq!(events[4]["code"], 1000);
    assert_eq!(events[4]["clean"], true);
    assert!(events.iter().all(|e| e["time"].as_f64().is_some()));

    let out = run(
        &[
            "connect",
            &server.url,
            "--json",
            "--binary",
            "--wait-replies",
            "1",
        ],
        &[1, 2, 255],
    );
    assert_eq!(out.code(), 0, "stderr: {}", out.stderr);
    let message: serde_json::Value = out
        .stdout_text()
        .lines()
        .map(|line| serde_json::from_str::<serde_json::Value>(line).expect("JSON"))
        .find(|e| e["event"] == "message")
        .expect("a message event");
    assert_eq!(message["type"], "binary");
    assert_eq!(message["data"], "0102ff");
}

/// With `--null --json` every record on stdout ends with NUL, the open and close events too:
/// splitting on NUL alone gives well-formed JSON objects.
#[test]
fn null_json_records_split_on_nul_alone() {
    let server = EchoServer::start();
    let out = run(
        &["connect", &server.url, "--null", "--json"],
        b"first\0multi\nline\0",
    );
    assert_eq!(out.code(), 0, "stderr: {}", out.stderr);
    assert_eq!(out.stdout.last(), Some(&0), "the last record ends with NUL");
    let records: Vec<serde_json::Value> = out
        .stdout
        .split(|&byte| byte == 0)
        .filter(|record| !record.is_empty())
        .map(|record| {
            assert!(
                !record.contains(&b'\n'),
                "a newline inside a record: {record:?}"
            );
            serde_json::from_slice(record).expect("each NUL-terminated record is JSON")
        })
        .collect();
    let kinds = event_names(&records);
    assert_eq!(
        kinds,
        ["open", "message", "message", "close_frame", "close"]
    );
    assert_eq!(records[1]["data"], "first");
    assert_eq!(records[2]["data"], "multi\nline");
    assert_eq!(records[4]["clean"], true);
}

#[test]
fn waiting_for_replies_is_bounded() {
    let server = EchoServer::start();
    // One line sent, five replies awaited: the echo comes, the other four never do. (Two
    // seconds: a loaded machine still echoes within them.)
    let started = std::time::Instant::now();
    let out = run(
        &[
            "connect",
            &server.url,
            "--wait-replies",
            "5",
            "--reply-timeout",
            "2",
        ],
        b"only\n",
    );
    assert_eq!(out.code(), EXIT_CONNECTION, "stderr: {}", out.stderr);
    assert_eq!(out.stdout_text(), "only\n");
    assert!(out.stderr.contains("no reply"), "{}", out.stderr);
    assert!(started.elapsed() < PATIENCE / 2);

    // Without --wait-replies the client closes at once, and still prints the echo that
    // arrives after its close frame.
    let out = run(&["connect", &server.url], b"only\n");
    assert_eq!(out.code(), 0, "stderr: {}", out.stderr);
    assert_eq!(out.stdout_text(), "only\n");
}

#[test]
fn deflate_and_subprotocol_are_negotiated() {
    let server = EchoServer::start_with(&["--deflate", "--subprotocol", "chat"]);
    let line = "compressible ".repeat(50);
    let input = format!("{line}\nsecond\n");
    let out = run(
        &[
            "connect",
            &server.url,
            "--json",
            "--deflate",
            "--subprotocol",
            "other",
            "--subprotocol",
            "chat",
            "--header",
            "X-Test: 1",
            "--origin",
            "http://localhost",
            "--wait-replies",
            "all",
        ],
        input.as_bytes(),
    );
    assert_eq!(out.code(), 0, "stderr: {}", out.stderr);
    let events: Vec<serde_json::Value> = out
        .stdout_text()
        .lines()
        .map(|line| serde_json::from_str(line).expect("JSON"))
        .collect();
    assert_eq!(events[0]["event"], "open");
    assert_eq!(events[0]["protocol"], "chat");
    let extensions = events[0]["extensions"].as_str().expect("extensions");
    assert!(extensions.starts_with("permessage-deflate"), "{extensions}");
    assert_eq!(events[1]["data"], line.as_str());
    assert_eq!(events[2]["data"], "second");
}

#[test]
fn nothing_listening_is_a_handshake_failure() {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    drop(listener);
    let out = run(&["connect", &format!("ws://{addr}/")], b"");
    assert_eq!(out.code(), EXIT_HANDSHAKE, "stderr: {}", out.stderr);
    assert!(out.stderr.contains("cannot connect"), "{}", out.stderr);
    assert!(out.stdout.is_empty());

    // With --json the failure is an event on stdout.
    let out = run(&["connect", "--json", &format!("ws://{addr}/")], b"");
    assert_eq!(out.code(), EXIT_HANDSHAKE);
    let event: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(event["event"], "error");
    assert_eq!(event["kind"], "handshake");
}

/// A server that answers every request with `response` and closes.
fn http_server(response: &'static [u8]) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    std::thread::spawn(move || {
        // One connection is all a test makes.
        if let Ok((mut tcp, _)) = listener.accept() {
            tcp.set_read_timeout(Some(PATIENCE)).expect("timeout");
            let mut head = Vec::new();
            let mut byte = [0u8; 1];
            while !head.ends_with(b"\r\n\r\n") && head.len() < 16 << 10 {
                match tcp.read(&mut byte) {
                    Ok(1) => head.push(byte[0]),
                    _ => break,
                }
            }
            let _ = tcp.write_all(response);
        }
    });
    format!("ws://{addr}/chat")
}

#[test]
fn http_refusal_is_a_handshake_failure() {
    let url = http_server(
        b"HTTP/1.1 403 Forbidden\r\nContent-Length: 13\r\nConnection: close\r\n\r\nnot for you\r\n",
    );
    let out = run(&["connect", &url], b"");
    assert_eq!(out.code(), EXIT_HANDSHAKE, "stderr: {}", out.stderr);
    assert!(out.stderr.contains("403"), "{}", out.stderr);
    assert!(out.stderr.contains("not for you"), "{}", out.stderr);

    // The server's body reaches the terminal escaped: it cannot clear the screen.
    let url = http_server(
        b"HTTP/1.1 403 Forbidden\r\nContent-Length: 8\r\nConnection: close\r\n\r\n\x1b[2Jgone",
    );
    let out = run(&["connect", &url], b"");
    assert_eq!(out.code(), EXIT_HANDSHAKE, "stderr: {}", out.stderr);
    assert!(!out.stderr.contains('\u{1b}'), "{:?}", out.stderr);
    assert!(out.stderr.contains("\\u{1b}[2Jgone"), "{:?}", out.stderr);

    let url = http_server(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n");
    let out = run(&["connect", &url], b"");
    assert_eq!(out.code(), EXIT_HANDSHAKE, "stderr: {}", out.stderr);
    assert!(out.stderr.contains("404"), "{}", out.stderr);
}

/// What an in-test sockeye server saw on its one connection.
#[derive(Debug)]
enum Seen {
    Accepted,
    Message(Message),
}

/// What an in-test server does after echoing the first data message.
#[derive(Debug, Clone, Copy)]
enum After {
    /// Keep echoing.
    Echo,
    /// Drop the TCP connection without a close frame.
    Drop,
    /// Close with this code.
    Close(CloseCode),
    /// Never echo: only report what arrives (a sink).
    Sink,
}

/// A sockeye server on its own thread and runtime for one connection: it reports what it
/// receives and echoes data messages, then does `after` once the first one is echoed. Returns
/// the URL and the reports.
fn sockeye_server(after: After) -> (String, mpsc::Receiver<Seen>) {
    let (tx, rx) = mpsc::channel();
    let accepted = tx.clone();
    let url = one_connection_server(
        move || {
            let _ = accepted.send(Seen::Accepted);
        },
        move |message| {
            let _ = tx.send(Seen::Message(message.clone()));
            if !message.is_data() {
                return vec![];
            }
            let echo = Reply::Send(message.clone(), Duration::ZERO);
            match after {
                After::Echo => vec![echo],
                After::Sink => vec![],
                After::Drop => vec![echo, Reply::Drop],
                After::Close(code) => vec![echo, Reply::Close(code, "server says no")],
            }
        },
    );
    (url, rx)
}

/// `sockeye connect URL` in pipe mode, sent one line with stdin left open (so that the client
/// is not closing): the server's `after` ends the session.
fn server_ends_session(after: After) -> support::Finished {
    let (url, _seen) = sockeye_server(after);
    let mut command = sockeye();
    command.args(["connect", &url]);
    let mut client = Running::start(command);
    client.write(b"first\n");
    client.wait_exit();
    client.finish()
}

/// At the end of its input the pipe sends a ping and closes only after its pong: a server that
/// stops answering once it reads a close frame (Python's websockets) has had a round trip to
/// answer the last lines.
#[test]
fn pipe_pings_before_it_closes() {
    let (url, seen) = sockeye_server(After::Echo);
    let out = run(&["connect", &url], b"one\ntwo\n");
    assert_eq!(out.code(), 0, "stderr: {}", out.stderr);
    assert_eq!(out.stdout_text(), "one\ntwo\n");
    let frames: Vec<Message> = seen
        .try_iter()
        .filter_map(|seen| match seen {
            Seen::Message(message) => Some(message),
            Seen::Accepted => None,
        })
        .collect();
    match frames.as_slice() {
        [Message::Text(one), Message::Text(two), Message::Ping(_), Message::Close(Some(close))] => {
            assert_eq!((one.as_str(), two.as_str()), ("one", "two"));
            assert_eq!(close.code, CloseCode::NORMAL);
        }
        other => panic!("expected two lines, a ping, then the close frame: {other:?}"),
    }
}

#[test]
fn dropped_connection_is_an_abnormal_close() {
    // The server drops TCP after the first message, without a close frame.
    let out = server_ends_session(After::Drop);
    assert_eq!(out.code(), EXIT_CONNECTION, "stderr: {}", out.stderr);
    assert!(
        out.stderr.contains("without a close handshake") || out.stderr.contains("1006"),
        "{}",
        out.stderr
    );
}

#[test]
fn server_error_code_exits_with_4() {
    let out = server_ends_session(After::Close(CloseCode::INTERNAL_ERROR));
    assert_eq!(out.code(), EXIT_PEER_ERROR, "stderr: {}", out.stderr);
    assert!(out.stderr.contains("1011"), "{}", out.stderr);
    assert!(out.stderr.contains("server says no"), "{}", out.stderr);
    assert_eq!(out.stdout_text(), "first\n");
}

#[test]
fn server_closing_mid_input_decides_the_status() {
    // The server closes (1001) after echoing the first of many lines: the rest cannot be sent,
    // and the clean close decides the exit status.
    let (url, _seen) = sockeye_server(After::Close(CloseCode::GOING_AWAY));
    let input: String = (0..20_000).map(|i| format!("line {i}\n")).collect();
    let out = run(
        &["connect", &url, "--wait-replies", "all"],
        input.as_bytes(),
    );
    assert_eq!(out.code(), 0, "stderr: {}", out.stderr);
    assert_eq!(out.stdout_text(), "line 0\n");
    assert!(out.stderr.contains("1001"), "{}", out.stderr);
}

#[test]
fn server_normal_close_exits_with_0() {
    let out = server_ends_session(After::Close(CloseCode::NORMAL));
    assert_eq!(out.code(), 0, "stderr: {}", out.stderr);
}

#[test]
fn bad_usage_exits_with_2() {
    for args in [
        &["connect"][..],
        &["connect", "--bogus", "ws://127.0.0.1:1/"],
        &["connect", "ftp://example.com/"],
        &["connect", "not a url"],
        &["connect", "--header", "no-colon", "ws://127.0.0.1:1/"],
        &["connect", "--header", "bad name:x", "ws://127.0.0.1:1/"],
        &["connect", "--wait-replies", "some", "ws://127.0.0.1:1/"],
        &["connect", "--null", "--binary", "ws://127.0.0.1:1/"],
    ] {
        let out = run(args, b"");
        assert_eq!(out.code(), EXIT_USAGE, "{args:?}: {}", out.stderr);
    }
}

#[test]
fn help_documents_the_exit_statuses() {
    let out = run(&["connect", "--help"], b"");
    assert_eq!(out.code(), 0);
    let help = out.stdout_text();
    for needle in [
        "Exit status:",
        "  0  ",
        "  1  ",
        "  2  ",
        "  3  ",
        "  4  ",
        "/close",
    ] {
        assert!(help.contains(needle), "{needle:?} missing from {help}");
    }
}

/// `sockeye connect URL` on a pseudo-terminal (`script -qfec`), so that stdin is a tty.
fn interactive(url: &str, extra: &str) -> Running {
    let command_line = format!(
        "'{}' connect {extra} '{url}'",
        env!("CARGO_BIN_EXE_sockeye")
    );
    let mut command = std::process::Command::new("script");
    command.args(["-qfec", &command_line, "/dev/null"]);
    Running::start(command)
}

/// Types a line into the interactive session in one write, as a paste or an automated
/// terminal delivers it. (rustyline 17 with an external printer left every key after the
/// first of a read waiting for the next key; rustyline 19 reads what it has buffered.)
fn type_keys(client: &mut Running, keys: &[u8]) {
    client.write(keys);
}

/// Waits for the next report from an in-test server.
fn next_seen(seen: &mpsc::Receiver<Seen>) -> Seen {
    seen.recv_timeout(PATIENCE).expect("server report")
}

#[test]
fn interactive_commands_reach_the_server() {
    let (url, seen) = sockeye_server(After::Echo);
    let mut client = interactive(&url, "");
    assert!(matches!(next_seen(&seen), Seen::Accepted));
    client.wait_for_output("connected to");

    type_keys(&mut client, b"hello there\r");
    assert!(
        matches!(next_seen(&seen), Seen::Message(Message::Text(t)) if t.as_str() == "hello there")
    );
    client.wait_for_output("< hello there");

    type_keys(&mut client, b"/ping abc\r");
    assert!(matches!(next_seen(&seen), Seen::Message(Message::Ping(p)) if &p[..] == b"abc"));
    client.wait_for_output("< [pong] abc");

    type_keys(&mut client, b"/binary 01 ff\r");
    assert!(matches!(next_seen(&seen), Seen::Message(Message::Binary(b)) if b[..] == [0x01, 0xff]));
    client.wait_for_output("< [binary 2 B] 01ff");

    type_keys(&mut client, b"/close 4000 bye\r");
    match next_seen(&seen) {
        Seen::Message(Message::Close(Some(frame))) => {
            assert_eq!(frame.code, CloseCode(4000));
            assert_eq!(frame.reason.as_str(), "bye");
        }
        other => panic!("expected the close frame, got {other:?}"),
    }
    client.wait_exit();
    let out = client.finish();
    assert_eq!(out.code(), 0, "output: {}", out.stdout_text());
    assert!(out.stdout_text().contains("closed: code 4000"));
}

#[test]
fn interactive_rejects_bad_commands_and_quits() {
    let (url, seen) = sockeye_server(After::Echo);
    let mut client = interactive(&url, "--json");
    assert!(matches!(next_seen(&seen), Seen::Accepted));
    client.wait_for_output("\"event\":\"open\"");
    type_keys(&mut client, b"/close 1006\r");
    client.wait_for_output("/close wants a code");
    type_keys(&mut client, b"/binary xyz\r");
    client.wait_for_output("/binary wants hex digits");
    type_keys(&mut client, b"/quit\r");
    match next_seen(&seen) {
        Seen::Message(Message::Close(Some(frame))) => assert_eq!(frame.code, CloseCode::NORMAL),
        other => panic!("expected the close frame, got {other:?}"),
    }
    client.wait_exit();
    let out = client.finish();
    assert_eq!(out.code(), 0, "output: {}", out.stdout_text());
}

#[test]
fn interactive_session_ends_when_the_server_drops() {
    let (url, seen) = sockeye_server(After::Drop);
    let mut client = interactive(&url, "");
    assert!(matches!(next_seen(&seen), Seen::Accepted));
    client.wait_for_output("connected to");
    type_keys(&mut client, b"bye\r");
    client.wait_exit();
    let out = client.finish();
    assert_eq!(out.code(), EXIT_CONNECTION, "output: {}", out.stdout_text());
    assert!(
        out.stdout_text().contains("closed"),
        "{}",
        out.stdout_text()
    );
}

#[test]
fn pipe_into_a_silent_server_sends_everything() {
    // A server that never answers: once the client's send buffer passes its high-water mark,
    // only the socket becoming writable again can wake the client (no message will). With the
    // keepalive off, a client that waits for a message instead stalls for good.
    let (url, seen) = sockeye_server(After::Sink);
    let line = "x".repeat(99);
    let lines = 20_000;
    let input = format!("{line}\n").repeat(lines);
    let out = run(&["connect", &url, "--ping-interval", "0"], input.as_bytes());
    assert_eq!(out.code(), 0, "stderr: {}", out.stderr);
    let received = seen
        .try_iter()
        .filter(|seen| matches!(seen, Seen::Message(message) if message.is_data()))
        .count();
    assert_eq!(received, lines);
}

#[test]
fn interrupted_pipe_closes_with_1001() {
    let (url, seen) = sockeye_server(After::Echo);
    let mut command = sockeye();
    command.args(["connect", &url]);
    let mut client = Running::start(command);
    assert!(matches!(next_seen(&seen), Seen::Accepted));
    client.write(b"first\n");
    // The echo is printed once the loop runs, which is when the signal handler is installed.
    client.wait_for_output("first\n");
    let killed = std::process::Command::new("kill")
        .args(["-INT", &client.child.id().to_string()])
        .status()
        .expect("run kill");
    assert!(killed.success());
    // stdin stays open: the signal alone ends the session.
    client.wait_exit();
    let out = client.finish();
    assert_eq!(out.code(), 0, "stderr: {}", out.stderr);
    assert!(out.stderr.contains("interrupted"), "{}", out.stderr);
    let close = seen.try_iter().find_map(|seen| match seen {
        Seen::Message(Message::Close(frame)) => Some(frame),
        _ => None,
    });
    assert_eq!(close.flatten().map(|f| f.code), Some(CloseCode::GOING_AWAY));
}

/// The process ids below `pid` (children, grandchildren…), from `/proc`.
fn descendants(pid: u32) -> Vec<u32> {
    let mut found = Vec::new();
    let mut queue = vec![pid];
    while let Some(parent) = queue.pop() {
        let children = std::fs::read_to_string(format!("/proc/{parent}/task/{parent}/children"))
            .unwrap_or_default();
        for child in children.split_whitespace().filter_map(|c| c.parse().ok()) {
            found.push(child);
            queue.push(child);
        }
    }
    found
}

#[test]
fn terminated_interactive_session_closes_with_1001() {
    let (url, seen) = sockeye_server(After::Echo);
    let mut client = interactive(&url, "");
    assert!(matches!(next_seen(&seen), Seen::Accepted));
    client.wait_for_output("connected to");
    // The prompt shows once the signal handlers are in place.
    client.wait_for_output("> ");
    // `script` runs sockeye under a shell: find it by its executable.
    let binary = std::fs::canonicalize(env!("CARGO_BIN_EXE_sockeye")).expect("binary path");
    let sockeye_pid = descendants(client.child.id())
        .into_iter()
        .find(|pid| std::fs::read_link(format!("/proc/{pid}/exe")).ok() == Some(binary.clone()))
        .expect("the sockeye process under script");
    let killed = std::process::Command::new("kill")
        .args(["-TERM", &sockeye_pid.to_string()])
        .status()
        .expect("run kill");
    assert!(killed.success());
    match next_seen(&seen) {
        Seen::Message(Message::Close(Some(frame))) => assert_eq!(frame.code, CloseCode::GOING_AWAY),
        other => panic!("expected the close frame, got {other:?}"),
    }
    client.wait_exit();
    let out = client.finish();
    assert_eq!(out.code(), 0, "output: {}", out.stdout_text());
    assert!(out.stdout_text().contains("closed: code 1001"));
}
