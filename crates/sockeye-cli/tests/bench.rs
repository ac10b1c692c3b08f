//! `sockeye bench` against `sockeye serve --mode echo`, cross-checked by an independent load
//! client written here on raw tokio TCP (hand-written handshake and framing, no sockeye code):
//! both run at once against the same server with the same connection count, depth and size,
//! so machine noise hits both, and their message rates must agree within 20 %.

mod support;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use support::{one_connection_server, run, sockeye, EchoServer, Reply, Running, PATIENCE};
use tokio::io::{AsyncBufReadExt as _, AsyncReadExt as _, AsyncWriteExt as _, BufReader};
use tokio::net::TcpStream;

/// A client frame (RFC 6455 §5.2): FIN + `opcode`, masked with a fixed key.
fn client_frame(opcode: u8, payload: &[u8]) -> Vec<u8> {
    let mask = [0x37, 0xfa, 0x21, 0x3d];
    let mut frame = vec![0x80 | opcode];
    match payload.len() {
        len @ 0..=125 => frame.push(0x80 | len as u8),
        len @ 126..=0xffff => {
            frame.push(0x80 | 126);
            frame.extend_from_slice(&(len as u16).to_be_bytes());
        }
        len => {
            frame.push(0x80 | 127);
            frame.extend_from_slice(&(len as u64).to_be_bytes());
        }
    }
    frame.extend_from_slice(&mask);
    frame.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    frame
}

/// Reads one server frame: (opcode, payload length); the payload is skipped.
async fn read_frame(io: &mut (impl tokio::io::AsyncRead + Unpin)) -> std::io::Result<(u8, u64)> {
    let mut head = [0u8; 2];
    io.read_exact(&mut head).await?;
    let len = match head[1] & 0x7f {
        126 => u64::from(io.read_u16().await?),
        127 => io.read_u64().await?,
        len => u64::from(len),
    };
    assert_eq!(head[1] & 0x80, 0, "server frames are not masked");
    let skipped = tokio::io::copy(&mut (&mut *io).take(len), &mut tokio::io::sink()).await?;
    assert_eq!(skipped, len, "frame cut short");
    Ok((head[0] & 0x0f, len))
}

/// Opens a raw connection: TCP, then a hand-written upgrade request; checks for `101`.
async fn raw_open(addr: SocketAddr) -> BufReader<TcpStream> {
    let tcp = TcpStream::connect(addr).await.expect("tcp connect");
    tcp.set_nodelay(true).expect("nodelay");
    let mut io = BufReader::new(tcp);
    let request = format!(
        "GET / HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    );
    io.get_mut()
        .write_all(request.as_bytes())
        .await
        .expect("request");
    let mut status = String::new();
    io.read_line(&mut status).await.expect("status line");
    assert!(status.starts_with("HTTP/1.1 101"), "{status:?}");
    loop {
        let mut line = String::new();
        assert!(
            io.read_line(&mut line).await.expect("header") > 0,
            "head cut short"
        );
        if line == "\r\n" {
            break;
        }
    }
    io
}

/// One raw connection sending binary messages of `size` bytes every `interval`, at most
/// `in_flight` outstanding, until `until`; returns the echoes received by then.
async fn raw_connection(
    addr: SocketAddr,
    in_flight: usize,
    size: usize,
    interval: Duration,
    until: tokio::time::Instant,
) -> u64 {
    let (mut reader, mut writer) = tokio::io::split(raw_open(addr).await);
    let window = std::sync::Arc::new(tokio::sync::Semaphore::new(in_flight));
    let frame = client_frame(0x2, &vec![b'x'; size]);
    let sender = {
        let window = window.clone();
        async move {
            let mut slot = tokio::time::Instant::now();
            while slot < until {
                tokio::time::sleep_until(slot).await;
                let Ok(Ok(permit)) = tokio::time::timeout_at(until, window.acquire()).await else {
                    break;
                };
                permit.forget();
                writer.write_all(&frame).await.expect("send");
                slot += interval;
            }
            // The close goes out once the receiver has stopped counting.
            tokio::time::sleep_until(until).await;
            let close = client_frame(0x8, &1000u16.to_be_bytes());
            let _ = writer.write_all(&close).await;
        }
    };
    let receiver = async {
        let mut echoed = 0;
        // The deadline is checked before each read, not only by the timeout: a timeout polls
        // its future first, so while echoes kept arriving the loop read on past `until`, into
        // the server's answer to the close sent at `until` and its end of stream.
        while tokio::time::Instant::now() < until {
            let Ok(read) = tokio::time::timeout_at(until, read_frame(&mut reader)).await else {
                break;
            };
            let (opcode, len) = read.expect("read frame");
            if opcode != 0x2 {
                continue; // a keepalive ping; nothing else is expected
            }
            assert_eq!(len, size as u64, "echo length");
            echoed += 1;
            window.add_permits(1);
        }
        echoed
    };
    tokio::join!(sender, receiver).1
}

/// The raw client: `connections` connections sending `rate` messages per second in total for
/// `run_for`; echoes per second.
async fn raw_client(
    addr: SocketAddr,
    connections: usize,
    in_flight: usize,
    size: usize,
    rate: f64,
    run_for: Duration,
) -> f64 {
    let start = tokio::time::Instant::now();
    let until = start + run_for;
    let interval = Duration::from_secs_f64(connections as f64 / rate);
    let counts = futures_util::future::join_all(
        (0..connections).map(|_| raw_connection(addr, in_flight, size, interval, until)),
    )
    .await;
    let total: u64 = counts.iter().sum();
    total as f64 / run_for.as_secs_f64()
}

fn parse_json(out: &support::Finished) -> serde_json::Value {
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {:?} / {}", out.stdout_text(), out.stderr))
}

/// `sockeye bench ARGS --json` as a child.
fn start_bench(url: &str, args: &[&str]) -> Running {
    let mut command = sockeye();
    command.args(["bench", url, "--json"]).args(args);
    Running::start(command)
}

/// Checks that a report agrees with itself: counts, elapsed time, MB/s, ordered quantiles.
fn check_report(report: &serde_json::Value, connections: usize, size: usize, secs: f64) {
    assert_eq!(report["connections"]["opened"], connections);
    assert_eq!(report["connections"]["failed"], 0);
    assert_eq!(report["errors"], serde_json::json!({}));
    let sent = report["messages_sent"].as_u64().expect("sent");
    assert_eq!(report["messages_echoed"].as_u64(), Some(sent));
    let rate = report["messages_per_sec"].as_f64().expect("rate");
    let elapsed = report["elapsed_secs"].as_f64().expect("elapsed");
    assert!((secs..secs + 2.0).contains(&elapsed), "{elapsed}");
    assert!((sent as f64 / elapsed - rate).abs() < 1.0, "{report}");
    let mb = report["megabytes_per_sec_each_way"].as_f64().expect("MB/s");
    assert!((mb - rate * size as f64 / 1e6).abs() < 1e-6, "{report}");
    let latency = &report["latency_us"];
    let quantiles: Vec<u64> = ["p50", "p90", "p99", "p99_9", "max"]
        .iter()
        .map(|q| latency[q].as_u64().expect("quantile"))
        .collect();
    assert!(quantiles[0] > 0, "{latency}");
    assert!(quantiles.windows(2).all(|w| w[0] <= w[1]), "{latency}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bench_agrees_with_an_independent_client() {
    let server = EchoServer::start();
    let addr: SocketAddr = server
        .url
        .trim_start_matches("ws://")
        .trim_end_matches('/')
        .parse()
        .expect("server address");
    // Both clients offer the same load at the same time (so that machine noise hits both):
    // 4 connections, 8 in flight, 125-byte binary messages, 2000 messages per second each.
    let (connections, in_flight, size, rate, secs) = (4, 8, 125, 2000.0, 3);
    let bench = start_bench(
        &server.url,
        &[
            "--connections",
            &connections.to_string(),
            "--in-flight",
            &in_flight.to_string(),
            "--size",
            &size.to_string(),
            "--rate",
            &rate.to_string(),
            "--duration",
            &secs.to_string(),
        ],
    );
    let raw_rate = tokio::time::timeout(
        PATIENCE,
        raw_client(
            addr,
            connections,
            in_flight,
            size,
            rate,
            Duration::from_secs(secs),
        ),
    )
    .await
    .expect("raw client in time");
    let out = tokio::task::spawn_blocking(move || bench.finish())
        .await
        .expect("join");
    assert_eq!(out.code(), 0, "stderr: {}", out.stderr);
    let report = parse_json(&out);
    let bench_rate = report["messages_per_sec"].as_f64().expect("rate");
    eprintln!("sockeye bench: {bench_rate:.0} msg/s, raw client: {raw_rate:.0} msg/s");
    assert!(
        (bench_rate - raw_rate).abs() <= 0.2 * bench_rate.max(raw_rate),
        "sockeye bench {bench_rate:.0} msg/s vs raw client {raw_rate:.0} msg/s"
    );
    assert!((bench_rate - rate).abs() <= 0.2 * rate, "{bench_rate}");
    check_report(&report, connections, size, secs as f64);
}

/// What the counting relay saw going from the server to the client.
#[derive(Debug, Default)]
struct Counted {
    binary_frames: u64,
    first: Option<Instant>,
    last: Option<Instant>,
}

/// A TCP relay to `server` that parses the frames coming back (raw code, no sockeye) and counts
/// the binary ones with the time of the first and the last.
async fn counting_relay(server: SocketAddr) -> (SocketAddr, Arc<Mutex<Counted>>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let counted = Arc::new(Mutex::new(Counted::default()));
    let shared = counted.clone();
    tokio::spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            let upstream = TcpStream::connect(server).await.expect("connect upstream");
            client.set_nodelay(true).expect("nodelay");
            upstream.set_nodelay(true).expect("nodelay");
            let (mut client_read, client_write) = client.into_split();
            let (upstream_read, mut upstream_write) = upstream.into_split();
            tokio::spawn(async move {
                let _ = tokio::io::copy(&mut client_read, &mut upstream_write).await;
                let _ = upstream_write.shutdown().await;
            });
            let shared = shared.clone();
            tokio::spawn(async move {
                let mut from = BufReader::new(upstream_read);
                let mut to = tokio::io::BufWriter::new(client_write);
                // The response head, line by line.
                loop {
                    let mut line = Vec::new();
                    if from.read_until(b'\n', &mut line).await.unwrap_or(0) == 0 {
                        return;
                    }
                    to.write_all(&line).await.expect("forward head");
                    if line == b"\r\n" {
                        break;
                    }
                }
                to.flush().await.expect("flush");
                // Then frames, each forwarded whole.
                let mut frame = Vec::new();
                loop {
                    frame.clear();
                    let mut head = [0u8; 2];
                    if from.read_exact(&mut head).await.is_err() {
                        break;
                    }
                    frame.extend_from_slice(&head);
                    let len = match head[1] & 0x7f {
                        126 => {
                            let len = from.read_u16().await.expect("length");
                            frame.extend_from_slice(&len.to_be_bytes());
                            usize::from(len)
                        }
                        127 => {
                            let len = from.read_u64().await.expect("length");
                            frame.extend_from_slice(&len.to_be_bytes());
                            usize::try_from(len).expect("length")
                        }
                        len => usize::from(len),
                    };
                    let start = frame.len();
                    frame.resize(start + len, 0);
                    from.read_exact(&mut frame[start..]).await.expect("payload");
                    if head[0] & 0x0f == 0x2 {
                        let now = Instant::now();
                        let mut counted = shared.lock().expect("lock");
                        counted.binary_frames += 1;
                        counted.first.get_or_insert(now);
                        counted.last = Some(now);
                    }
                    if to.write_all(&frame).await.is_err() {
                        break;
                    }
                    if from.buffer().is_empty() && to.flush().await.is_err() {
                        break;
                    }
                }
                let _ = to.flush().await;
                let _ = to.shutdown().await;
            });
        }
    });
    (addr, counted)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unlimited_bench_counts_what_crosses_the_wire() {
    let server = EchoServer::start();
    let server_addr: SocketAddr = server
        .url
        .trim_start_matches("ws://")
        .trim_end_matches('/')
        .parse()
        .expect("server address");
    let (relay, counted) = counting_relay(server_addr).await;
    let (connections, size, secs) = (4, 125, 2);
    let bench = start_bench(
        &format!("ws://{relay}/"),
        &["--connections", "4", "--in-flight", "16", "--duration", "2"],
    );
    let out = tokio::task::spawn_blocking(move || bench.finish())
        .await
        .expect("join");
    assert_eq!(out.code(), 0, "stderr: {}", out.stderr);
    let report = parse_json(&out);
    check_report(&report, connections, size, f64::from(secs));
    let counted = counted.lock().expect("lock");
    assert_eq!(
        report["messages_echoed"].as_u64(),
        Some(counted.binary_frames),
        "{report}"
    );
    let (Some(first), Some(last)) = (counted.first, counted.last) else {
        panic!("no echo crossed the relay");
    };
    let wire_rate = counted.binary_frames as f64 / (last - first).as_secs_f64();
    let bench_rate = report["messages_per_sec"].as_f64().expect("rate");
    eprintln!("sockeye bench: {bench_rate:.0} msg/s, on the wire: {wire_rate:.0} msg/s");
    assert!(
        (bench_rate - wire_rate).abs() <= 0.2 * wire_rate,
        "sockeye bench {bench_rate:.0} msg/s vs {wire_rate:.0} msg/s on the wire"
    );
}

#[test]
fn text_report_for_a_message_count() {
    let server = EchoServer::start();
    let out = run(
        &[
            "bench",
            &server.url,
            "--messages",
            "500",
            "--connections",
            "3",
            "--in-flight",
            "4",
            "--size",
            "1000",
            "--text",
        ],
        b"",
    );
    assert_eq!(out.code(), 0, "stderr: {}", out.stderr);
    let text = out.stdout_text();
    for needle in [
        "3 connections (3 opened, 0 failed)",
        "1000 B text messages",
        "500 sent, 500 echoed",
        "msg/s",
        "MB/s each way",
        "p50",
        "p99.9",
        "max",
        "errors:     0",
    ] {
        assert!(text.contains(needle), "{needle:?} missing from {text}");
    }
}

#[test]
fn rate_limit_paces_the_messages() {
    let server = EchoServer::start();
    let out = run(
        &[
            "bench",
            &server.url,
            "--rate",
            "200",
            "--duration",
            "1",
            "--connections",
            "2",
            "--in-flight",
            "50",
            "--json",
        ],
        b"",
    );
    assert_eq!(out.code(), 0, "stderr: {}", out.stderr);
    let report = parse_json(&out);
    let sent = report["messages_sent"].as_u64().expect("sent");
    // 200 msg/s for one second: the first slot of each connection is at once.
    assert!((180..=205).contains(&sent), "{report}");
}

#[test]
fn usage_errors_exit_with_2() {
    for args in [
        &["bench"][..],
        &["bench", "ws://127.0.0.1:1/", "--size", "0"],
        &["bench", "ws://127.0.0.1:1/", "--connections", "0"],
        &[
            "bench",
            "ws://127.0.0.1:1/",
            "--duration",
            "1",
            "--messages",
            "5",
        ],
        &["bench", "ws://127.0.0.1:1/", "--duration", "-1"],
        &["bench", "ws://127.0.0.1:1/", "--duration", "0"],
        &["bench", "ws://127.0.0.1:1/", "--rate", "-5"],
        &["bench", "ws://127.0.0.1:1/", "--rate", "NaN"],
        &["bench", "ws://127.0.0.1:1/", "--messages", "0"],
        &["bench", "ws://127.0.0.1:1/", "--ca", "/nonexistent/ca.pem"],
    ] {
        let out = run(args, b"");
        assert_eq!(out.code(), 2, "{args:?}: {}", out.stderr);
    }
    let out = run(&["bench", "--help"], b"");
    assert!(out.stdout_text().contains("Exit status:"));
}

#[test]
fn unreachable_server_counts_failed_connections() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    drop(listener);
    let out = run(
        &[
            "bench",
            &format!("ws://{addr}/"),
            "--connections",
            "2",
            "--json",
        ],
        b"",
    );
    assert_eq!(out.code(), 1, "stderr: {}", out.stderr);
    let report = parse_json(&out);
    assert_eq!(report["connections"]["opened"], 0);
    assert_eq!(report["connections"]["failed"], 2);
    let errors = report["errors"].as_object().expect("errors");
    assert!(
        errors.keys().all(|kind| kind.starts_with("connect")),
        "{errors:?}"
    );
    assert_eq!(errors.values().filter_map(|v| v.as_u64()).sum::<u64>(), 2);
}

#[test]
fn corrupted_echoes_are_reported() {
    // A server that echoes every message with its last byte changed.
    let url = one_connection_server(
        || {},
        |message| {
            let sockeye::Message::Binary(data) = message else {
                return vec![];
            };
            let mut data = data.to_vec();
            if let Some(last) = data.last_mut() {
                *last ^= 1;
            }
            vec![Reply::Send(sockeye::Message::binary(data), Duration::ZERO)]
        },
    );
    // 64 messages: message 0 is compared byte for byte.
    let out = run(
        &[
            "bench",
            &url,
            "--connections",
            "1",
            "--messages",
            "64",
            "--json",
        ],
        b"",
    );
    assert_eq!(out.code(), 1, "stderr: {}", out.stderr);
    let report = parse_json(&out);
    assert_eq!(report["messages_echoed"], 64);
    assert_eq!(
        report["errors"]["echo differs from the message sent"], 1,
        "{report}"
    );
}

/// An echo server for one connection that holds the echo of the first message for `stall`;
/// returns its URL.
fn stalling_echo_server(stall: Duration) -> String {
    let mut delay = stall;
    one_connection_server(
        || {},
        move |message| {
            if !message.is_data() {
                return vec![];
            }
            vec![Reply::Send(message.clone(), std::mem::take(&mut delay))]
        },
    )
}

#[test]
fn paced_latency_counts_the_wait_behind_a_stall() {
    // 100 msg/s, one at a time: the first echo is held for 500 ms, so the messages due every
    // 10 ms meanwhile (about 50) can only go out after it. Measured from when each was due
    // (not when it could be sent), they waited from 490 ms down to 0: the 90th percentile is
    // about 400 ms. Measured from sending (coordinated omission) only one message is slow and
    // p90 is a loopback round trip, well under a millisecond.
    let url = stalling_echo_server(Duration::from_millis(500));
    let out = run(
        &[
            "bench",
            &url,
            "--connections",
            "1",
            "--in-flight",
            "1",
            "--rate",
            "100",
            "--messages",
            "100",
            "--json",
        ],
        b"",
    );
    assert_eq!(out.code(), 0, "stderr: {}", out.stderr);
    let report = parse_json(&out);
    assert_eq!(report["messages_echoed"], 100, "{report}");
    let latency = &report["latency_us"];
    let p90 = latency["p90"].as_u64().expect("p90");
    let max = latency["max"].as_u64().expect("max");
    assert!(p90 >= 250_000, "p90 {p90} us hides the stall: {report}");
    assert!(max >= 500_000, "{report}");
}

#[test]
fn interrupted_bench_still_reports() {
    let server = EchoServer::start();
    let bench = start_bench(&server.url, &["--connections", "2", "--duration", "600"]);
    // Printed once the connections are open, after the signal handlers are installed.
    bench.wait_for_stderr("connection(s) open");
    let killed = std::process::Command::new("kill")
        .args(["-INT", &bench.child.id().to_string()])
        .status()
        .expect("run kill");
    assert!(killed.success());
    let started = Instant::now();
    let out = bench.finish();
    assert!(started.elapsed() < PATIENCE);
    assert_eq!(out.code(), 0, "stderr: {}", out.stderr);
    let report = parse_json(&out);
    assert_eq!(report["interrupted"], true, "{report}");
    assert_eq!(report["errors"], serde_json::json!({}), "{report}");
    // Every message sent was echoed and counted; the run lasted until the signal, not 600 s.
    assert_eq!(
        report["messages_echoed"], report["messages_sent"],
        "{report}"
    );
    let elapsed = report["elapsed_secs"].as_f64().expect("elapsed");
    assert!(elapsed < PATIENCE.as_secs_f64(), "{report}");
    let rate = report["messages_per_sec"].as_f64().expect("rate");
    let echoed = report["messages_echoed"].as_u64().expect("echoed");
    assert!((echoed as f64 / elapsed - rate).abs() < 1.0, "{report}");
}

/// The peak virtual memory of process `pid` in kB, read from `/proc` until it exits.
#[cfg(target_os = "linux")]
fn peak_memory_until_exit(running: &mut Running) -> u64 {
    let status = format!("/proc/{}/status", running.child.id());
    let deadline = Instant::now() + PATIENCE;
    let mut peak = 0;
    while running.child.try_wait().expect("try_wait").is_none() && Instant::now() < deadline {
        // VmPeak only grows: the last reading before the exit is the peak.
        if let Some(kb) = std::fs::read_to_string(&status).ok().and_then(|text| {
            text.lines()
                .find_map(|line| line.strip_prefix("VmPeak:"))
                .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
        }) {
            peak = kb;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    peak
}

#[cfg(target_os = "linux")]
#[test]
fn memory_does_not_grow_with_a_histogram_per_connection() {
    // One latency histogram (1 us to 1 h, 3 digits: about 190 KB) serves every connection:
    // one a connection made 1000 connections reserve 190 MB more. Measured: about 25 MB.
    let server = EchoServer::start();
    let mut bench = start_bench(&server.url, &["--connections", "1000", "--duration", "1"]);
    let peak_kb = peak_memory_until_exit(&mut bench);
    let out = bench.finish();
    assert_eq!(out.code(), 0, "stderr: {}", out.stderr);
    let report = parse_json(&out);
    assert_eq!(report["connections"]["opened"], 1000, "{report}");
    assert!(peak_kb > 0, "no reading of /proc");
    assert!(peak_kb < 120_000, "peak {peak_kb} kB");
}

#[test]
fn warmup_is_not_measured() {
    // The same stall as above, inside a one-second warm-up: the 50 measured messages that
    // follow it are on schedule, so none of them shows the stall.
    let url = stalling_echo_server(Duration::from_millis(500));
    let out = run(
        &[
            "bench",
            &url,
            "--connections",
            "1",
            "--in-flight",
            "1",
            "--rate",
            "100",
            "--warmup",
            "1",
            "--messages",
            "50",
            "--json",
        ],
        b"",
    );
    assert_eq!(out.code(), 0, "stderr: {}", out.stderr);
    let report = parse_json(&out);
    assert_eq!(report["messages_sent"], 50, "{report}");
    assert_eq!(report["messages_echoed"], 50, "{report}");
    let max = report["latency_us"]["max"].as_u64().expect("max");
    assert!(max < 250_000, "the warm-up's stall was measured: {report}");
    // 50 messages at 100/s after the warm-up: about half a second, not 1.5 s.
    let elapsed = report["elapsed_secs"].as_f64().expect("elapsed");
    assert!((0.3..1.3).contains(&elapsed), "{report}");
}
