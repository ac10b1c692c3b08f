//! `sockeye bench --fanout` against `sockeye serve`: a broadcast server delivers every message to
//! every subscriber once (the counts must add up exactly), an echo server delivers nothing to
//! them (every message is missed and the exit status says so), a server that goes away
//! disconnects every subscriber, and bad usage exits with 2.

mod support;

use std::time::Duration;

use support::{run, sockeye, EchoServer, Running};

fn parse_json(out: &support::Finished) -> serde_json::Value {
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {:?} / {}", out.stdout_text(), out.stderr))
}

const SUBSCRIBERS: u64 = 20;

/// `sockeye bench --fanout URL/room --json` with 20 subscribers, 200 messages/s for 1.5 s, and
/// `extra` arguments.
fn fanout(url: &str, extra: &[&str]) -> support::Finished {
    let url = format!("{}room", url);
    let subscribers = SUBSCRIBERS.to_string();
    let mut args = vec![
        "bench",
        "--fanout",
        &url,
        "--json",
        "--subscribers",
        &subscribers,
        "--rate",
        "200",
        "--duration",
        "1.5",
    ];
    args.extend_from_slice(extra);
    run(&args, b"")
}

#[test]
fn broadcast_delivers_every_message_to_every_subscriber_once() {
    let server = EchoServer::start_mode("broadcast", &[]);
    let out = fanout(&server.url, &["--size", "64", "--drain-timeout", "5"]);
    assert_eq!(out.code(), 0, "{}", out.stderr);
    let report = parse_json(&out);
    let sent = report["messages_sent"].as_u64().expect("messages_sent");
    // 200 messages/s for 1.5 s, scheduled from the start: 300 (one fewer if the last slot
    // falls on the end).
    assert!((299..=300).contains(&sent), "{report}");
    assert_eq!(report["subscribers"]["opened"], SUBSCRIBERS);
    assert_eq!(report["deliveries"], SUBSCRIBERS * sent, "{report}");
    assert_eq!(report["expected_deliveries"], SUBSCRIBERS * sent);
    assert_eq!(report["missed"], 0);
    assert_eq!(report["duplicates"], 0);
    assert_eq!(report["out_of_order"], 0);
    assert_eq!(report["disconnected"], 0);
    assert_eq!(report["errors"], serde_json::json!({}));
    assert_eq!(report["size"], 64);
    // Every delivery came through a parsed frame, and latencies are ordered.
    assert!(report["frames"].as_u64() >= Some(SUBSCRIBERS * sent));
    assert!(report["messages_per_read"].as_f64() >= Some(1.0));
    let latency = &report["latency_us"];
    assert!(latency["p50"].as_u64() <= latency["p99"].as_u64());
    assert!(latency["p99"].as_u64() <= latency["max"].as_u64());
    assert!(latency["p50"].as_u64() > Some(0));
}

#[test]
fn an_echo_server_delivers_nothing_and_the_bench_fails() {
    // An echo server sends a publisher's messages back to it only: each subscriber misses all.
    let server = EchoServer::start();
    let out = fanout(&server.url, &["--drain-timeout", "0.5"]);
    assert_eq!(out.code(), 1, "{}", out.stderr);
    let report = parse_json(&out);
    let sent = report["messages_sent"].as_u64().expect("messages_sent");
    assert!(sent > 0, "{report}");
    assert_eq!(report["deliveries"], 0);
    assert_eq!(report["missed"], SUBSCRIBERS * sent, "{report}");
    assert_eq!(report["disconnected"], 0);
}

#[test]
fn subscribers_of_a_server_that_goes_away_count_as_disconnected() {
    let server = EchoServer::start_mode("broadcast", &[]);
    let mut command = sockeye();
    command.args([
        "bench",
        "--fanout",
        &format!("{}room", server.url),
        "--json",
        "--subscribers",
        "20",
        "--rate",
        "200",
        "--duration",
        "3",
        "--drain-timeout",
        "1",
    ]);
    let bench = Running::start(command);
    bench.wait_for_stderr("subscribers open");
    std::thread::sleep(Duration::from_millis(1500));
    drop(server); // killed: no close frames, the connections reset or end
    let out = bench.finish();
    assert_eq!(out.code(), 1, "{}", out.stderr);
    let report = parse_json(&out);
    assert_eq!(report["disconnected"], 20, "{report}");
    assert_eq!(report["close_codes"]["1006"], 20, "{report}");
    // Sent before the kill and delivered; the publisher's failure is an error too.
    assert!(report["deliveries"].as_u64() > Some(0), "{report}");
    assert!(
        report["errors"].as_object().is_some_and(|e| !e.is_empty()),
        "{report}"
    );
}

#[test]
fn fanout_usage_errors_exit_with_2() {
    for args in [
        // No --rate.
        &["bench", "--fanout", "ws://127.0.0.1:9/"][..],
        // Too small for the payload's header.
        &[
            "bench",
            "--fanout",
            "ws://127.0.0.1:9/",
            "--rate",
            "1",
            "--size",
            "19",
        ],
        // Echo-only options.
        &[
            "bench",
            "--fanout",
            "ws://127.0.0.1:9/",
            "--rate",
            "1",
            "--in-flight",
            "2",
        ],
        // Fan-out-only options without --fanout.
        &["bench", "ws://127.0.0.1:9/", "--subscribers", "2"],
    ] {
        let out = run(args, b"");
        assert_eq!(out.code(), 2, "{args:?}: {}", out.stderr);
    }
}
