//! Resource limits of the tokio layer, each checked on the wire: the write high-water mark seen
//! through `try_send`, the bounded pong queue under a ping flood, `Server::max_connections`
//! (503 over the limit), the handshake timeout against slowloris peers, and the TCP options
//! applied to every socket sockeye opens or accepts.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::*;
use futures_util::StreamExt as _;
use sockeye::{Error, Message, Server, WebSocketConfig, WebSocketStream, DEFAULT_MAX_CONNECTIONS};
use sockeye_proto::MAX_PENDING_PONGS;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

/// Scheduling slack for real-time measurements.
const MARGIN: Duration = Duration::from_millis(250);

// ---- try_send and the write high-water mark -------------------------------------------------

/// `try_send` queues until the buffer reaches the high-water mark, then fails with `QueueFull`
/// (queuing nothing) while the peer reads nothing; once the peer drains, it succeeds again and
/// every message arrives whole and in order.
#[tokio::test]
async fn try_send_is_refused_at_high_water_and_recovers_after_the_peer_drains() {
    within("test", async {
        const HIGH_WATER: usize = 8 << 10;
        const LEN: usize = 1000;
        const FRAME: usize = LEN + 8 + 4; // numbered(): 8-byte prefix; 4-byte header
        const PIPE: usize = 256;
        let config = WebSocketConfig::default().write_buffer_high_water(HIGH_WATER);
        let (mut ws, mut peer) = server_and_raw_client(PIPE, config);
        let mut accepted = 0u32;
        let err = loop {
            match ws.try_send(numbered(accepted, LEN)) {
                Ok(()) => accepted += 1,
                Err(e) => break e,
            }
        };
        assert!(matches!(err, Error::QueueFull), "{err:?}");
        assert_eq!(accepted as usize, HIGH_WATER.div_ceil(FRAME));
        assert_eq!(ws.buffered_amount(), accepted as usize * FRAME);
        assert!(ws.buffered_amount() >= HIGH_WATER);
        assert!(ws.buffered_amount() < HIGH_WATER + FRAME);

        // Writing what the small pipe takes does not bring it under the mark: still full.
        assert!(poll_once(ws.flush()).is_pending());
        assert_eq!(ws.buffered_amount(), accepted as usize * FRAME - PIPE);
        assert!(matches!(
            ws.try_send(Message::text("x")),
            Err(Error::QueueFull)
        ));
        assert_eq!(ws.buffered_amount(), accepted as usize * FRAME - PIPE);

        // The peer drains; flushing empties the buffer and try_send works again.
        let reader = tokio::spawn(async move {
            let mut numbers = Vec::new();
            while let Some(frame) = peer.read_frame().await {
                assert_eq!(frame.opcode, BINARY);
                numbers.push(check_numbered(&Message::binary(frame.payload)));
            }
            numbers
        });
        ws.flush().await.unwrap();
        assert_eq!(ws.buffered_amount(), 0);
        ws.try_send(numbered(accepted, LEN)).unwrap();
        ws.flush().await.unwrap();
        drop(ws);
        let numbers = reader.await.unwrap();
        assert_eq!(numbers, (0..=accepted).collect::<Vec<_>>());
    })
    .await;
}

/// At exactly the high-water mark the queue counts as full (`buffered_amount() >= high water`).
#[tokio::test]
async fn try_send_is_refused_at_exactly_the_high_water_mark() {
    within("test", async {
        const FRAME: usize = 100 + 2;
        let config = WebSocketConfig::default().write_buffer_high_water(4 * FRAME);
        let (mut ws, _peer) = server_and_raw_client(64, config);
        for _ in 0..4 {
            ws.try_send(Message::binary(vec![1u8; 100])).unwrap();
        }
        assert_eq!(ws.buffered_amount(), 4 * FRAME);
        assert!(matches!(
            ws.try_send(Message::binary(vec![1u8; 100])),
            Err(Error::QueueFull)
        ));
        assert_eq!(ws.buffered_amount(), 4 * FRAME, "nothing queued");
    })
    .await;
}

/// The documented default high-water mark is 64 KiB.
#[tokio::test]
async fn default_high_water_mark_is_64_kib() {
    within("test", async {
        const FRAME: usize = 1024 + 4;
        let config = WebSocketConfig::default();
        assert_eq!(config.write_buffer_high_water, 64 << 10);
        let (mut ws, _peer) = server_and_raw_client(1024, config);
        let mut accepted = 0;
        while ws.try_send(Message::binary(vec![0u8; 1024])).is_ok() {
            accepted += 1;
            assert!(accepted <= 1000, "try_send never refused");
        }
        assert_eq!(accepted, (64 << 10) / FRAME + 1);
        assert!(ws.buffered_amount() >= 64 << 10);
    })
    .await;
}

// ---- ping flood -----------------------------------------------------------------------------

const FLOOD: u32 = 10_000;
/// A server's pong for a 4-byte ping.
const PONG_FRAME: usize = 2 + 4;

/// 10,000 masked pings numbered 0.., then a text message.
fn flood_bytes() -> Vec<u8> {
    let mut bytes = Vec::new();
    for n in 0..FLOOD {
        bytes.extend(frame(true, PING, &n.to_be_bytes(), Some(RAW_MASK)));
    }
    bytes.extend(frame(true, TEXT, b"after the flood", Some(RAW_MASK)));
    bytes
}

/// Runs a server that echoes text and counts pings, tracking its largest `buffered_amount`.
fn spawn_flood_server<S>(
    mut ws: WebSocketStream<S>,
) -> tokio::task::JoinHandle<(u32, usize, WebSocketStream<S>)>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    tokio::spawn(async move {
        let mut pings = 0;
        let mut max_buffered = 0;
        while let Some(item) = ws.next().await {
            max_buffered = max_buffered.max(ws.buffered_amount());
            match item.expect("no error") {
                Message::Ping(_) => pings += 1,
                text @ Message::Text(_) => ws.send(text).await.unwrap(),
                _ => {}
            }
            max_buffered = max_buffered.max(ws.buffered_amount());
        }
        (pings, max_buffered, ws)
    })
}

/// Reads the answers to [`flood_bytes`]: pongs (numbered, increasing, ending with the last
/// ping's) then the echo. Returns the number of pongs.
async fn read_flood_answers<S>(peer: &mut RawPeer<S>) -> usize
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let mut pongs = Vec::new();
    loop {
        let frame = peer.read_frame().await.expect("answers before the end");
        match frame.opcode {
            PONG => pongs.push(u32::from_be_bytes(frame.payload[..].try_into().unwrap())),
            TEXT => {
                assert_eq!(frame.payload, b"after the flood");
                break;
            }
            other => panic!("unexpected opcode {other}"),
        }
    }
    assert!(!pongs.is_empty(), "no pong at all");
    assert!(
        pongs.len() < FLOOD as usize,
        "{} pongs queued for {FLOOD} pings",
        pongs.len()
    );
    assert!(pongs.windows(2).all(|w| w[0] < w[1]), "pongs out of order");
    // RFC 6455 §5.5.3: the most recent ping is the one that must be answered.
    assert_eq!(pongs.last(), Some(&(FLOOD - 1)));
    pongs.len()
}

/// Over a 4 KiB pipe, so the server cannot write while the client floods: the server keeps
/// reading, holds at most `MAX_PENDING_PONGS` pongs plus one written batch, and answers the
/// message after the flood.
#[tokio::test]
async fn ping_flood_keeps_the_pong_queue_bounded() {
    within("test", async {
        let config = WebSocketConfig::default().keepalive(None, Duration::from_secs(1));
        let (ws, mut peer) = server_and_raw_client(4096, config);
        let server = spawn_flood_server(ws);
        // One burst, reading nothing until it is all written (the server must keep reading).
        peer.write(&flood_bytes()).await;
        let pongs = read_flood_answers(&mut peer).await;
        assert!(
            pongs <= 4096 / PONG_FRAME + 2 * MAX_PENDING_PONGS,
            "{pongs} pongs through a 4 KiB pipe"
        );
        peer.send_frame(true, CLOSE, &close_payload(1000, "")).await;
        let (pings, max_buffered, _ws) = server.await.unwrap();
        assert_eq!(
            pings, FLOOD,
            "every ping is still delivered to the application"
        );
        let bound = 2 * MAX_PENDING_PONGS * PONG_FRAME + 2 + "after the flood".len();
        assert!(
            max_buffered <= bound,
            "server buffered {max_buffered} bytes (bound {bound}; unbounded would be {})",
            FLOOD as usize * PONG_FRAME
        );
    })
    .await;
}

/// The same flood over TCP, through `accept_with_config`: some pongs, far fewer than pings, and
/// the text after the flood is echoed.
#[tokio::test]
async fn ping_flood_over_tcp_is_answered_sparingly_and_the_server_stays_responsive() {
    within("test", async {
        let config = WebSocketConfig::default().keepalive(None, Duration::from_secs(1));
        let (ws, mut peer) = tcp_server_and_raw_client(config).await;
        let server = spawn_flood_server(ws);
        peer.write(&flood_bytes()).await;
        let pongs = read_flood_answers(&mut peer).await;
        peer.send_frame(true, CLOSE, &close_payload(1000, "")).await;
        let (pings, max_buffered, _ws) = server.await.unwrap();
        assert_eq!(pings, FLOOD);
        assert!(
            max_buffered <= 2 * MAX_PENDING_PONGS * PONG_FRAME + 64,
            "server buffered {max_buffered} bytes"
        );
        eprintln!("tcp flood: {pongs} pongs for {FLOOD} pings, max buffered {max_buffered}");
    })
    .await;
}

// ---- max_connections ------------------------------------------------------------------------

/// Reads everything a fresh TCP connection to `addr` gets without sending a byte.
async fn answer_without_request(addr: std::net::SocketAddr) -> String {
    let tcp = TcpStream::connect(addr).await.expect("connect");
    let mut peer = RawPeer::new(tcp, None);
    String::from_utf8(peer.read_to_end().await).expect("ascii answer")
}

#[track_caller]
fn assert_overloaded(answer: &str) {
    assert!(
        answer.starts_with("HTTP/1.1 503 Service Unavailable\r\n"),
        "{answer:?}"
    );
    assert_eq!(header(answer, "retry-after"), Some("1"));
    assert_eq!(header(answer, "connection"), Some("close"));
    assert_eq!(header(answer, "content-length"), Some("0"));
    assert!(answer.ends_with("\r\n\r\n"), "nothing after the head");
}

/// Sends an upgrade request; the status code of the answer (0 when the connection ended
/// without one) and the connection.
async fn upgrade_status(addr: std::net::SocketAddr) -> (u16, RawPeer<TcpStream>) {
    let tcp = TcpStream::connect(addr).await.expect("connect");
    let mut peer = RawPeer::new(tcp, Some(RAW_MASK));
    // The server may answer 503 and close before the request is written.
    let _ = peer.io.write_all(upgrade_request("").as_bytes()).await;
    let answer = read_head_or_end(&mut peer).await;
    let status = answer
        .strip_prefix("HTTP/1.1 ")
        .and_then(|rest| rest.get(..3))
        .and_then(|code| code.parse().ok())
        .unwrap_or(0);
    (status, peer)
}

/// The head of the answer, or everything until the end of stream if it has no blank line.
async fn read_head_or_end(peer: &mut RawPeer<TcpStream>) -> String {
    let mut chunk = [0u8; 1024];
    loop {
        if let Some(end) = peer.buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8(peer.buf[..end + 4].to_vec()).unwrap();
            peer.buf.drain(..end + 4);
            return head;
        }
        match peer.io.read(&mut chunk).await {
            Ok(0) | Err(_) => return String::from_utf8_lossy(&peer.buf).into_owned(),
            Ok(n) => peer.buf.extend_from_slice(&chunk[..n]),
        }
    }
}

/// Retries an upgrade every 2 ms until one is accepted; panics after `attempts`.
async fn upgrade_eventually(addr: std::net::SocketAddr, attempts: u32) -> RawPeer<TcpStream> {
    for _ in 0..attempts {
        match upgrade_status(addr).await {
            (101, peer) => return peer,
            (503, _) => tokio::time::sleep(Duration::from_millis(2)).await,
            (other, _) => panic!("unexpected status {other}"),
        }
    }
    panic!("no slot freed after {attempts} attempts");
}

/// A server with `max_connections(limit)` whose handlers hold their connection until the peer
/// closes it; counts the handlers running.
async fn holding_server(limit: usize) -> (Serving, Arc<AtomicUsize>) {
    let open = Arc::new(AtomicUsize::new(0));
    let server = Server::bind("127.0.0.1:0")
        .await
        .expect("bind")
        .max_connections(limit)
        .shutdown_timeout(Duration::from_secs(1));
    let counter = open.clone();
    let serving = serve_in_background(server, move |mut ws, _| {
        let counter = counter.clone();
        async move {
            counter.fetch_add(1, Ordering::SeqCst);
            while let Some(Ok(_)) = ws.next().await {}
            counter.fetch_sub(1, Ordering::SeqCst);
        }
    });
    (serving, open)
}

#[tokio::test]
async fn connections_over_the_limit_get_503_until_a_slot_frees() {
    within("test", async {
        let (mut serving, open) = holding_server(2).await;
        let url = format!("ws://{}/", serving.addr);
        let (mut first, _) = sockeye::connect(&url).await.unwrap();
        let (second, _) = sockeye::connect(&url).await.unwrap();

        // A third connection is answered at once, without the server reading a byte.
        let start = std::time::Instant::now();
        assert_overloaded(&answer_without_request(serving.addr).await);
        assert!(start.elapsed() < MARGIN, "503 took {:?}", start.elapsed());
        // A real client gets the 503 as a handshake error.
        match sockeye::connect(&url).await {
            Err(Error::Http(response)) => {
                assert_eq!(response.status().as_u16(), 503);
                assert_eq!(response.headers()["retry-after"], "1");
            }
            other => panic!("expected a 503, got {other:?}"),
        }
        assert_eq!(open.load(Ordering::SeqCst), 2);

        // One of the two leaves: a new connection is accepted (after the handler returns).
        first.close(sockeye::CloseCode::NORMAL, "").await.unwrap();
        let mut third = upgrade_eventually(serving.addr, 500).await;
        third.send_frame(true, TEXT, b"hello").await;
        // And the limit still holds with the newcomer.
        assert_eq!(upgrade_status(serving.addr).await.0, 503);
        assert_eq!(open.load(Ordering::SeqCst), 2);

        drop((second, third));
        let start = std::time::Instant::now();
        serving.signal();
        serving.task.await.unwrap().unwrap();
        assert!(start.elapsed() < MARGIN, "handlers ended with their peers");
    })
    .await;
}

/// Connections still in their opening handshake count against the limit.
#[tokio::test]
async fn handshakes_in_progress_count_against_the_limit() {
    within("test", async {
        let (mut serving, open) = holding_server(2).await;
        let silent_a = TcpStream::connect(serving.addr).await.unwrap();
        let silent_b = TcpStream::connect(serving.addr).await.unwrap();
        assert_overloaded(&answer_without_request(serving.addr).await);
        assert_eq!(open.load(Ordering::SeqCst), 0, "no handshake finished");
        // A silent peer that gives up frees its slot.
        drop(silent_a);
        let first = upgrade_eventually(serving.addr, 500).await;
        assert_eq!(upgrade_status(serving.addr).await.0, 503);
        drop(silent_b);
        let second = upgrade_eventually(serving.addr, 500).await;
        drop((first, second));
        serving.signal();
        serving.task.await.unwrap().unwrap();
    })
    .await;
}

#[test]
fn default_max_connections_is_10_000() {
    assert_eq!(DEFAULT_MAX_CONNECTIONS, 10_000);
}

// ---- handshake timeout (slowloris) ----------------------------------------------------------

const HANDSHAKE_TIMEOUT: Duration = Duration::from_millis(300);

/// A client that sends its request one byte every 50 ms is cut off after the handshake timeout
/// (measured from its connect), and the server goes on serving others.
#[tokio::test]
async fn slowloris_is_cut_off_at_the_handshake_timeout() {
    within("test", async {
        let handled = Arc::new(AtomicUsize::new(0));
        let counter = handled.clone();
        let server = Server::bind("127.0.0.1:0")
            .await
            .unwrap()
            .config(WebSocketConfig::default().handshake_timeout(HANDSHAKE_TIMEOUT));
        let mut serving = serve_in_background(server, move |mut ws, _| {
            counter.fetch_add(1, Ordering::SeqCst);
            async move { while let Some(Ok(_)) = ws.next().await {} }
        });
        let request = upgrade_request("");
        let mut tcp = TcpStream::connect(serving.addr).await.unwrap();
        let start = std::time::Instant::now();
        let mut sent = 0;
        let mut chunk = [0u8; 256];
        let cut_off = loop {
            if tcp
                .write_all(&request.as_bytes()[sent..=sent])
                .await
                .is_err()
            {
                break start.elapsed();
            }
            sent += 1;
            tokio::select! {
                read = tcp.read(&mut chunk) => match read {
                    Ok(0) | Err(_) => break start.elapsed(),
                    Ok(n) => panic!("unexpected answer {:?}", String::from_utf8_lossy(&chunk[..n])),
                },
                () = tokio::time::sleep(Duration::from_millis(50)) => {}
            }
            assert!(sent < request.len(), "the whole request went through");
        };
        assert!(
            cut_off >= HANDSHAKE_TIMEOUT && cut_off <= HANDSHAKE_TIMEOUT + MARGIN,
            "cut off after {cut_off:?} ({sent} bytes)"
        );
        assert!((5..=8).contains(&sent), "{sent} bytes sent in {cut_off:?}");
        // Others are still served.
        let (mut ws, _) = sockeye::connect(&format!("ws://{}/", serving.addr))
            .await
            .unwrap();
        ws.close(sockeye::CloseCode::NORMAL, "").await.unwrap();
        assert_eq!(handled.load(Ordering::SeqCst), 1);
        serving.signal();
        serving.task.await.unwrap().unwrap();
    })
    .await;
}

/// On a paused clock `accept_with_config` gives up at exactly the handshake timeout (the
/// request trickles in at a byte per 100 ms, about 16 s in all); the default is 10 s.
#[tokio::test(start_paused = true)]
async fn handshake_timeout_is_exact_and_defaults_to_10s() {
    assert_eq!(
        WebSocketConfig::default().handshake_timeout,
        Duration::from_secs(10)
    );
    for (config, want) in [
        (
            WebSocketConfig::default().handshake_timeout(HANDSHAKE_TIMEOUT),
            HANDSHAKE_TIMEOUT,
        ),
        (WebSocketConfig::default(), Duration::from_secs(10)),
    ] {
        let (server_io, mut client_io) = tokio::io::duplex(1024);
        let start = tokio::time::Instant::now();
        let trickle = async {
            for byte in upgrade_request("").bytes() {
                if client_io.write_all(&[byte]).await.is_err() {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        };
        let result = within_for(Duration::from_secs(60), "accept", async {
            tokio::select! {
                result = sockeye::accept_with_config(server_io, config) => result,
                () = trickle => panic!("the slow request completed"),
            }
        })
        .await;
        assert!(
            matches!(result, Err(Error::HandshakeTimeout)),
            "{:?}",
            result.map(|_| ())
        );
        let elapsed = start.elapsed();
        assert!(
            elapsed >= want && elapsed <= want + Duration::from_millis(3),
            "gave up after {elapsed:?}, expected {want:?}"
        );
    }
}

/// The client's side: a server that accepts TCP and never answers.
#[tokio::test]
async fn client_gives_up_on_a_silent_server_at_the_handshake_timeout() {
    within("test", async {
        let (listener, url) = listener().await;
        let silent = tokio::spawn(async move {
            let (tcp, _) = listener.accept().await.unwrap();
            let mut peer = RawPeer::new(tcp, None);
            peer.read_head().await;
            // Hold the connection, answer nothing, until the client gives up.
            peer.read_to_end().await
        });
        let start = std::time::Instant::now();
        let result = sockeye::connect_with_config(
            &url,
            WebSocketConfig::default().handshake_timeout(HANDSHAKE_TIMEOUT),
        )
        .await;
        let elapsed = start.elapsed();
        assert!(
            matches!(result, Err(Error::HandshakeTimeout)),
            "{:?}",
            result.map(|_| ())
        );
        assert!(
            elapsed >= HANDSHAKE_TIMEOUT && elapsed <= HANDSHAKE_TIMEOUT + MARGIN,
            "{elapsed:?}"
        );
        assert!(
            silent.await.unwrap().is_empty(),
            "the client sent nothing more"
        );
    })
    .await;
}

// ---- TCP options ----------------------------------------------------------------------------

/// `(TCP_NODELAY, SO_KEEPALIVE, TCP_KEEPIDLE if keepalive is on)` of a connection's socket.
fn tcp_options(
    ws: &WebSocketStream<sockeye::Transport<TcpStream>>,
) -> (bool, bool, Option<Duration>) {
    let socket = socket2::SockRef::from(ws.get_ref().get_ref().expect("tcp"));
    let keepalive = socket.keepalive().unwrap();
    (
        socket.tcp_nodelay().unwrap(),
        keepalive,
        keepalive.then(|| socket.tcp_keepalive_time().unwrap()),
    )
}

/// The options of a connection accepted by `Server::serve` (not `Server::accept`).
async fn served_options(config: WebSocketConfig) -> (bool, bool, Option<Duration>) {
    let (found, mut found_rx) = tokio::sync::mpsc::unbounded_channel();
    let server = Server::bind("127.0.0.1:0").await.unwrap().config(config);
    let mut serving = serve_in_background(server, move |ws, _| {
        let _ = found.send(tcp_options(&ws));
        async move { drop(ws) }
    });
    let _client = sockeye::connect(&format!("ws://{}/", serving.addr)).await;
    let options = found_rx.recv().await.expect("handler ran");
    serving.signal();
    serving.task.await.unwrap().unwrap();
    options
}

#[tokio::test]
async fn tcp_defaults_are_nodelay_on_and_keepalive_off() {
    within("test", async {
        let config = WebSocketConfig::default();
        assert!(config.tcp_nodelay);
        assert_eq!(config.tcp_keepalive, None);
        let (client, server) = tcp_pair(config.clone()).await;
        assert_eq!(tcp_options(&client), (true, false, None), "client");
        assert_eq!(tcp_options(&server), (true, false, None), "Server::accept");
        assert_eq!(served_options(config).await, (true, false, None), "serve");
    })
    .await;
}

#[tokio::test]
async fn tcp_keepalive_is_applied_to_both_ends() {
    within("test", async {
        let idle = Duration::from_secs(42);
        let mut config = WebSocketConfig::default();
        config.tcp_keepalive = Some(idle);
        let (client, server) = tcp_pair(config.clone()).await;
        assert_eq!(tcp_options(&client), (true, true, Some(idle)), "client");
        assert_eq!(
            tcp_options(&server),
            (true, true, Some(idle)),
            "Server::accept"
        );
        assert_eq!(
            served_options(config).await,
            (true, true, Some(idle)),
            "serve"
        );
    })
    .await;
}

#[tokio::test]
async fn tcp_nodelay_can_be_turned_off() {
    within("test", async {
        let mut config = WebSocketConfig::default();
        config.tcp_nodelay = false;
        let (client, server) = tcp_pair(config.clone()).await;
        assert_eq!(tcp_options(&client), (false, false, None), "client");
        assert_eq!(tcp_options(&server), (false, false, None), "Server::accept");
        assert_eq!(served_options(config).await, (false, false, None), "serve");
    })
    .await;
}
