//! `sockeye serve --http2` and `sockeye connect --http2`: WebSockets over HTTP/2 (RFC 8441)
//! in cleartext with prior knowledge (h2c) between the two commands, HTTP/1.1 clients on the
//! same port, and a clear failure against a server without HTTP/2.

mod support;

use support::{run, EchoServer};

const EXIT_HANDSHAKE: i32 = 3;

#[test]
fn connect_http2_round_trips_through_serve_http2() {
    let server = EchoServer::start_with(&["--http2"]);
    let input: String = (0..500).map(|i| format!("line {i} über h2\n")).collect();
    let out = run(
        &["connect", "--http2", &server.url, "--wait-replies", "all"],
        input.as_bytes(),
    );
    assert_eq!(out.code(), 0, "stderr: {}", out.stderr);
    assert_eq!(out.stdout_text(), input);

    // The open event shows the extended CONNECT's 200 (an HTTP/1.1 upgrade answers 101).
    let out = run(
        &[
            "connect",
            "--http2",
            "--json",
            &server.url,
            "--wait-replies",
            "all",
        ],
        b"x\n",
    );
    assert_eq!(out.code(), 0, "stderr: {}", out.stderr);
    let open: serde_json::Value =
        serde_json::from_str(out.stdout_text().lines().next().expect("open event")).expect("json");
    assert_eq!(open["event"], "open");
    assert_eq!(open["status"], 200);

    // HTTP/1.1 clients are still served on the same port.
    let out = run(&["connect", &server.url, "--wait-replies", "all"], b"h1\n");
    assert_eq!(out.code(), 0, "stderr: {}", out.stderr);
    assert_eq!(out.stdout_text(), "h1\n");
}

#[test]
fn connect_http2_to_a_server_without_it_is_a_handshake_failure() {
    let server = EchoServer::start();
    let out = run(&["connect", "--http2", &server.url], b"");
    assert_eq!(out.code(), EXIT_HANDSHAKE, "stderr: {}", out.stderr);
    assert!(out.stderr.contains("http/2"), "{}", out.stderr);
}
