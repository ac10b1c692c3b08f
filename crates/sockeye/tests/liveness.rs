//! Liveness timers of the tokio layer, observed on the wire by a raw peer: keepalive pings and
//! their timeout, the idle timeout, and the write timeout that drops a peer that stopped reading.
//!
//! Timer tests run over `tokio::io::duplex` on a paused clock, so every deadline is exact and the
//! suite takes no real time; the write-timeout tests need real sockets and real time.

mod common;

use std::time::Duration;

use common::*;
use futures_util::{SinkExt as _, StreamExt as _};
use sockeye::{CloseCode, Error, Initiator, Message, WebSocketConfig};
use tokio::io::AsyncReadExt as _;
use tokio::time::Instant;

const INTERVAL: Duration = Duration::from_millis(100);
const TIMEOUT: Duration = Duration::from_millis(100);
/// Slack for the timer wheel's millisecond rounding (paused clock).
const TICK: Duration = Duration::from_millis(3);
/// Bound on each paused-clock test: virtual time, so a hang fails at once.
const VIRTUAL_PATIENCE: Duration = Duration::from_secs(120);
const KEEPALIVE_PAYLOAD: &[u8] = b"sockeye-keepalive";

fn keepalive_config() -> WebSocketConfig {
    WebSocketConfig::default().keepalive(Some(INTERVAL), TIMEOUT)
}

/// Asserts `elapsed` is `want` up to the timer's rounding.
#[track_caller]
fn assert_at(what: &str, elapsed: Duration, want: Duration) {
    assert!(
        elapsed >= want && elapsed <= want + TICK,
        "{what}: at {elapsed:?}, expected {want:?}"
    );
}

#[track_caller]
fn assert_keepalive_ping(frame: &RawFrame, masked: bool) {
    assert_eq!(
        frame.opcode, PING,
        "expected a keepalive ping, got {frame:?}"
    );
    assert_eq!(frame.payload, KEEPALIVE_PAYLOAD);
    assert_eq!(frame.masked, masked);
    assert!(frame.fin);
}

/// Closes from the raw client's side and checks the echo and the end of stream.
async fn raw_client_closes(peer: &mut RawPeer<tokio::io::DuplexStream>) {
    peer.send_frame(true, CLOSE, &close_payload(1000, "done"))
        .await;
    let echo = peer.read_frame().await.expect("close echo");
    assert_eq!(echo.close_code().0, 1000);
    peer.expect_eof().await;
}

// ---- keepalive ------------------------------------------------------------------------------

#[tokio::test(start_paused = true)]
async fn keepalive_pings_after_a_quiet_interval_and_pongs_keep_the_connection_open() {
    within_for(VIRTUAL_PATIENCE, "test", async {
        let (ws, mut peer) = server_and_raw_client(4096, keepalive_config());
        let server = spawn_drain(ws);
        let mut quiet_since = Instant::now();
        for round in 0..5 {
            let ping = peer.read_frame().await.expect("keepalive ping");
            assert_at(&format!("ping {round}"), quiet_since.elapsed(), INTERVAL);
            assert_keepalive_ping(&ping, false);
            peer.send_frame(true, PONG, &ping.payload).await;
            quiet_since = Instant::now();
        }
        // Five intervals plus five timeouts' worth of time later, still open.
        assert!(!server.is_finished(), "connection closed despite the pongs");
        raw_client_closes(&mut peer).await;
        let drained = server.await.unwrap();
        let messages = drained.messages();
        assert_eq!(messages.len(), 6, "{messages:?}");
        for pong in &messages[..5] {
            assert_eq!(**pong, Message::Pong(KEEPALIVE_PAYLOAD.to_vec().into()));
        }
        assert!(matches!(messages[5], Message::Close(Some(f)) if f.code == CloseCode::NORMAL));
        assert!(drained.ws.close_info().unwrap().was_clean);
    })
    .await;
}

/// Any data counts as an answer to a keepalive ping, not only a pong.
#[tokio::test(start_paused = true)]
async fn keepalive_is_answered_by_any_data() {
    within_for(VIRTUAL_PATIENCE, "test", async {
        let (ws, mut peer) = server_and_raw_client(4096, keepalive_config());
        let server = spawn_drain(ws);
        for round in 0..4u8 {
            let ping = peer.read_frame().await.expect("keepalive ping");
            assert_keepalive_ping(&ping, false);
            peer.send_frame(true, TEXT, format!("alive {round}").as_bytes())
                .await;
        }
        assert!(!server.is_finished(), "data did not count as an answer");
        raw_client_closes(&mut peer).await;
        let drained = server.await.unwrap();
        let texts: Vec<_> = drained
            .messages()
            .into_iter()
            .filter(|m| m.is_data())
            .cloned()
            .collect();
        let want: Vec<_> = (0..4)
            .map(|r| Message::text(format!("alive {r}")))
            .collect();
        assert_eq!(texts, want);
    })
    .await;
}

/// Traffic from the peer postpones the ping: it comes one interval after the last byte read.
#[tokio::test(start_paused = true)]
async fn keepalive_ping_waits_for_silence() {
    within_for(VIRTUAL_PATIENCE, "test", async {
        let (ws, mut peer) = server_and_raw_client(4096, keepalive_config());
        let server = spawn_drain(ws);
        let start = Instant::now();
        for _ in 0..10 {
            tokio::time::sleep(INTERVAL * 6 / 10).await;
            peer.send_frame(true, BINARY, b"tick").await;
        }
        let last = Instant::now();
        let ping = peer.read_frame().await.expect("keepalive ping");
        assert_keepalive_ping(&ping, false);
        assert_at("ping after the last message", last.elapsed(), INTERVAL);
        assert!(start.elapsed() > INTERVAL * 6, "pinged during traffic");
        peer.send_frame(true, PONG, &ping.payload).await;
        raw_client_closes(&mut peer).await;
        let drained = server.await.unwrap();
        assert_eq!(
            drained.messages().iter().filter(|m| m.is_data()).count(),
            10
        );
    })
    .await;
}

#[tokio::test(start_paused = true)]
async fn unanswered_keepalive_closes_with_1011_and_yields_keepalive_timeout() {
    within_for(VIRTUAL_PATIENCE, "test", async {
        let (ws, mut peer) = server_and_raw_client(4096, keepalive_config());
        let start = Instant::now();
        let server = spawn_drain(ws);
        let ping = peer.read_frame().await.expect("keepalive ping");
        assert_keepalive_ping(&ping, false);
        assert_at("ping", start.elapsed(), INTERVAL);
        // No answer.
        let close = peer.read_frame().await.expect("close frame");
        assert_eq!(close.close_code().0, 1011, "{close:?}");
        assert_at("close", start.elapsed(), INTERVAL + TIMEOUT);
        peer.expect_eof().await;

        let drained = server.await.unwrap();
        assert_eq!(drained.items.len(), 1, "{:?}", drained.items);
        let (at, item) = &drained.items[0];
        assert!(
            matches!(item, Err(Error::KeepaliveTimeout)),
            "expected KeepaliveTimeout, got {item:?}"
        );
        assert_at("error", *at - start, INTERVAL + TIMEOUT);
        let mut ws = drained.ws;
        assert!(ws.next().await.is_none(), "the stream stays ended");
        let info = ws.close_info().expect("close info");
        assert_eq!(info.code, CloseCode::INTERNAL_ERROR);
        assert_eq!(info.initiator, Initiator::Library);
        assert!(!info.was_clean);
    })
    .await;
}

/// The client side pings too (masked), and gives up the same way.
#[tokio::test(start_paused = true)]
async fn client_keepalive_pings_masked_and_times_out() {
    within_for(VIRTUAL_PATIENCE, "test", async {
        let (ws, mut peer) = client_and_raw_server(4096, keepalive_config());
        let start = Instant::now();
        let client = spawn_drain(ws);
        let ping = peer.read_frame().await.expect("keepalive ping");
        assert_keepalive_ping(&ping, true);
        assert_at("ping", start.elapsed(), INTERVAL);
        let close = peer.read_frame().await.expect("close frame");
        assert!(close.masked);
        assert_eq!(close.close_code().0, 1011);
        peer.expect_eof().await;
        let drained = client.await.unwrap();
        assert!(matches!(
            drained.items.as_slice(),
            [(_, Err(Error::KeepaliveTimeout))]
        ));
    })
    .await;
}

#[tokio::test(start_paused = true)]
async fn disabled_keepalive_sends_no_ping() {
    within_for(VIRTUAL_PATIENCE, "test", async {
        let config = WebSocketConfig::default().keepalive(None, TIMEOUT);
        let (ws, mut peer) = server_and_raw_client(4096, config);
        let server = spawn_drain(ws);
        // A minute of silence: nothing is sent and nothing is closed.
        let quiet = tokio::time::timeout(Duration::from_secs(60), peer.read_frame()).await;
        assert!(quiet.is_err(), "unexpected frame: {quiet:?}");
        assert!(!server.is_finished());
        raw_client_closes(&mut peer).await;
        let drained = server.await.unwrap();
        assert_eq!(drained.messages().len(), 1, "only the close frame");
    })
    .await;
}

/// The keepalive runs out while `send` waits on a peer that neither reads nor answers: `send`
/// reports `KeepaliveTimeout` (not `WriteTimeout`: no write timeout is configured), and when the
/// peer later reads, it gets the start of the data frame and then the end of the stream, never
/// a close frame glued inside the cut-off frame.
#[tokio::test(start_paused = true)]
async fn keepalive_timeout_during_a_blocked_send() {
    within_for(VIRTUAL_PATIENCE, "test", async {
        let config = keepalive_config().close_timeout(Duration::from_secs(1));
        let (mut ws, mut peer) = server_and_raw_client(1024, config);
        let start = Instant::now();
        let payload = vec![0x55u8; 64 << 10];
        let wire = frame(true, BINARY, &payload, None);
        let server = tokio::spawn(async move {
            let sent = ws.send(Message::binary(payload)).await;
            let at = start.elapsed();
            let mut rest = Vec::new();
            while let Some(item) = ws.next().await {
                rest.push(item);
            }
            (sent, at, rest, ws)
        });
        tokio::time::sleep(Duration::from_millis(400)).await;
        let bytes = peer.read_to_end().await;
        let (sent, at, rest, ws) = server.await.unwrap();
        assert!(
            matches!(sent, Err(Error::KeepaliveTimeout)),
            "send returned {sent:?}"
        );
        assert_at("send error", at, INTERVAL + TIMEOUT);
        assert!(
            matches!(rest.as_slice(), [Err(Error::KeepaliveTimeout)]),
            "{rest:?}"
        );
        assert_eq!(ws.close_info().unwrap().code, CloseCode::INTERNAL_ERROR);
        assert!(
            bytes.len() < wire.len() && bytes == wire[..bytes.len()],
            "the peer got {} bytes that are not a prefix of the data frame (last: {:?})",
            bytes.len(),
            &bytes[bytes.len().saturating_sub(24)..]
        );
    })
    .await;
}

/// Defaults (documented in `WebSocketConfig`): ping after 20 s of silence, give up 20 s later.
#[tokio::test(start_paused = true)]
async fn keepalive_defaults_are_20s_and_20s() {
    within_for(VIRTUAL_PATIENCE, "test", async {
        let config = WebSocketConfig::default();
        assert_eq!(config.keepalive_interval, Some(Duration::from_secs(20)));
        assert_eq!(config.keepalive_timeout, Duration::from_secs(20));
        let (ws, mut peer) = server_and_raw_client(4096, config);
        let start = Instant::now();
        let server = spawn_drain(ws);
        let ping = peer.read_frame().await.expect("ping");
        assert_keepalive_ping(&ping, false);
        assert_at("ping", start.elapsed(), Duration::from_secs(20));
        let close = peer.read_frame().await.expect("close");
        assert_eq!(close.close_code().0, 1011);
        assert_at("close", start.elapsed(), Duration::from_secs(40));
        let drained = server.await.unwrap();
        assert!(matches!(
            drained.items.as_slice(),
            [(_, Err(Error::KeepaliveTimeout))]
        ));
    })
    .await;
}

// ---- idle timeout ---------------------------------------------------------------------------

const IDLE: Duration = Duration::from_millis(300);

fn idle_config() -> WebSocketConfig {
    WebSocketConfig::default()
        .keepalive(None, TIMEOUT)
        .idle_timeout(Some(IDLE))
}

/// Reads until the server's close frame, answering pings; returns the close frame's code and
/// reason and echoes it.
async fn await_idle_close(peer: &mut RawPeer<tokio::io::DuplexStream>) -> (u16, String) {
    loop {
        let frame = peer.read_frame().await.expect("a frame before the close");
        match frame.opcode {
            PING => peer.send_frame(true, PONG, &frame.payload).await,
            CLOSE => {
                let (code, reason) = frame.close_code();
                peer.send_frame(true, CLOSE, &close_payload(code, "")).await;
                return (code, reason);
            }
            _ => {}
        }
    }
}

#[tokio::test(start_paused = true)]
async fn idle_connection_is_closed_with_1001() {
    within_for(VIRTUAL_PATIENCE, "test", async {
        let (ws, mut peer) = server_and_raw_client(4096, idle_config());
        let start = Instant::now();
        let server = spawn_drain(ws);
        let close = peer.read_frame().await.expect("close frame");
        assert_at("idle close", start.elapsed(), IDLE);
        assert_eq!(close.close_code(), (1001, "idle timeout".to_owned()));
        peer.send_frame(true, CLOSE, &close_payload(1001, "")).await;
        peer.expect_eof().await;
        let drained = server.await.unwrap();
        assert!(matches!(
            drained.messages().as_slice(),
            [Message::Close(Some(f))] if f.code == CloseCode::GOING_AWAY
        ));
        let info = drained.ws.close_info().unwrap();
        assert!(info.was_clean);
        assert_eq!(info.code, CloseCode::GOING_AWAY);
    })
    .await;
}

/// Pings and pongs in both directions (keepalive on and answered, the peer pinging every
/// 150 ms) are not activity: the connection is closed when the idle timeout runs out.
#[tokio::test(start_paused = true)]
async fn control_frames_do_not_reset_the_idle_timeout() {
    within_for(VIRTUAL_PATIENCE, "test", async {
        let config = idle_config().keepalive(Some(INTERVAL), TIMEOUT);
        let (ws, mut peer) = server_and_raw_client(4096, config);
        let start = Instant::now();
        let server = spawn_drain(ws);
        let peer_ping_every = Duration::from_millis(150);
        let mut next_ping = start + peer_ping_every;
        let mut keepalive_pings = 0;
        let close = loop {
            tokio::select! {
                frame = peer.read_frame() => {
                    let frame = frame.expect("a frame before the close");
                    match frame.opcode {
                        PING => {
                            keepalive_pings += 1;
                            peer.send_frame(true, PONG, &frame.payload).await;
                        }
                        PONG => {}
                        CLOSE => break frame,
                        other => panic!("unexpected opcode {other}"),
                    }
                }
                () = tokio::time::sleep_until(next_ping) => {
                    peer.send_frame(true, PING, b"peer").await;
                    next_ping += peer_ping_every;
                }
            }
        };
        assert_at("idle close", start.elapsed(), IDLE);
        assert_eq!(close.close_code(), (1001, "idle timeout".to_owned()));
        assert!(
            keepalive_pings >= 1,
            "keepalive ran: {keepalive_pings} pings"
        );
        peer.send_frame(true, CLOSE, &close_payload(1001, "")).await;
        let drained = server.await.unwrap();
        let pings = drained
            .messages()
            .iter()
            .filter(|m| matches!(m, Message::Ping(_)))
            .count();
        assert_eq!(pings, 2, "the peer's pings at 150 and 300 ms arrived");
        let pongs = drained
            .messages()
            .iter()
            .filter(|m| matches!(m, Message::Pong(_)))
            .count();
        assert_eq!(pongs, keepalive_pings, "every keepalive ping was answered");
    })
    .await;
}

#[tokio::test(start_paused = true)]
async fn received_data_resets_the_idle_timeout() {
    within_for(VIRTUAL_PATIENCE, "test", async {
        let (ws, mut peer) = server_and_raw_client(4096, idle_config());
        let start = Instant::now();
        let server = spawn_drain(ws);
        for _ in 0..3 {
            tokio::time::sleep(Duration::from_millis(200)).await;
            peer.send_frame(true, TEXT, b"busy").await;
        }
        let (code, reason) = await_idle_close(&mut peer).await;
        assert_eq!((code, reason.as_str()), (1001, "idle timeout"));
        assert_at(
            "idle close",
            start.elapsed(),
            Duration::from_millis(600) + IDLE,
        );
        let drained = server.await.unwrap();
        assert_eq!(drained.messages().iter().filter(|m| m.is_data()).count(), 3);
    })
    .await;
}

#[tokio::test(start_paused = true)]
async fn sent_data_resets_the_idle_timeout() {
    within_for(VIRTUAL_PATIENCE, "test", async {
        let (ws, mut peer) = server_and_raw_client(4096, idle_config());
        let start = Instant::now();
        // The receiving half is polled from the start (so the idle timer runs from the start);
        // the sending half sends one message at 250 ms.
        let (mut sink, mut stream) = ws.split();
        let reader = tokio::spawn(async move {
            while let Some(item) = stream.next().await {
                item.unwrap();
            }
            stream
        });
        tokio::time::sleep(Duration::from_millis(250)).await;
        sink.send(Message::text("from the server")).await.unwrap();
        let text = peer.read_frame().await.expect("text");
        assert_eq!(text.payload, b"from the server");
        let (code, _) = await_idle_close(&mut peer).await;
        assert_eq!(code, 1001);
        assert_at(
            "idle close",
            start.elapsed(),
            Duration::from_millis(250) + IDLE,
        );
        let ws = reader.await.unwrap().reunite(sink).unwrap();
        assert!(ws.close_info().unwrap().was_clean);
    })
    .await;
}

#[tokio::test(start_paused = true)]
async fn idle_timeout_is_off_by_default() {
    within_for(VIRTUAL_PATIENCE, "test", async {
        assert_eq!(WebSocketConfig::default().idle_timeout, None);
        let config = WebSocketConfig::default().keepalive(None, TIMEOUT);
        let (ws, mut peer) = server_and_raw_client(4096, config);
        let server = spawn_drain(ws);
        let quiet = tokio::time::timeout(Duration::from_secs(60), peer.read_frame()).await;
        assert!(quiet.is_err(), "unexpected frame: {quiet:?}");
        raw_client_closes(&mut peer).await;
        server.await.unwrap();
    })
    .await;
}

// ---- write timeout (slow consumer) ----------------------------------------------------------

const WRITE_TIMEOUT: Duration = Duration::from_millis(200);
/// Scheduling slack for real-time measurements.
const MARGIN: Duration = Duration::from_millis(400);
const HIGH_WATER: usize = 32 << 10;
const CHUNK: usize = 16 << 10;

fn slow_consumer_config() -> WebSocketConfig {
    WebSocketConfig::default()
        .keepalive(None, TIMEOUT)
        .write_timeout(Some(WRITE_TIMEOUT))
        .write_buffer_high_water(HIGH_WATER)
}

/// The wire size of `numbered(n, CHUNK)` as a server frame.
const FRAME: usize = 8 + CHUNK + 4;

/// Checks that `bytes` is a prefix of a sequence of whole frames: numbered binary messages in
/// order, then at most one close frame, with at most the last frame cut short. Returns the
/// number of whole data frames and the close frame, if any.
fn check_wire(mut bytes: &[u8]) -> (u32, Option<(u16, String)>) {
    let mut next = 0u32;
    while !bytes.is_empty() {
        match parse_frame(bytes) {
            Some((frame, used)) => {
                bytes = &bytes[used..];
                match frame.opcode {
                    BINARY => {
                        let message = Message::binary(frame.payload);
                        assert_eq!(check_numbered(&message), next, "out of order");
                        next += 1;
                    }
                    CLOSE => {
                        assert!(bytes.is_empty(), "bytes after the close frame");
                        return (next, Some(frame.close_code()));
                    }
                    other => panic!("unexpected opcode {other}"),
                }
            }
            None => {
                // A frame cut short: what arrived must be the start of the next message (or of
                // the close frame), not something else glued after a partial frame.
                let data = {
                    let Message::Binary(body) = numbered(next, CHUNK) else {
                        unreachable!()
                    };
                    frame(true, BINARY, &body, None)
                };
                let close = frame(true, CLOSE, &close_payload(1008, "peer too slow"), None);
                let starts =
                    |whole: &[u8]| bytes.len() < whole.len() && bytes == &whole[..bytes.len()];
                assert!(
                    starts(&data) || starts(&close),
                    "the last {} bytes are not the start of message {next}: the stream is \
                     corrupt after a partial frame",
                    bytes.len()
                );
                return (next, None);
            }
        }
    }
    (next, None)
}

/// A server sending as fast as `Sink::poll_ready` lets it to a client that never reads: the
/// sink fails with `WriteTimeout` one write timeout after the socket stopped taking bytes, and
/// the buffer never grows past the high-water mark plus one message.
///
/// The timer is armed by a `poll_ready` that returns `Pending` (the socket refused bytes) and
/// disarmed by any byte written, so the error comes at least a write timeout after the first
/// `Pending` and at most a write timeout (plus scheduling) after the last one. (The kernel may
/// still take a few bytes after the socket first filled, when it probes the closed window, so
/// the first `Pending` alone is not the arming time.)
#[tokio::test]
async fn sending_to_a_peer_that_never_reads_fails_with_write_timeout() {
    within("test", async {
        let (mut ws, mut peer) = tcp_server_and_raw_client(slow_consumer_config()).await;
        let mut max_buffered = 0;
        let mut sent = 0u32;
        // When each `Pending` poll started (the timer is armed during the poll, not before).
        let mut pending_polls: Vec<std::time::Instant> = Vec::new();
        let err = loop {
            let ready = std::future::poll_fn(|cx| {
                let started = std::time::Instant::now();
                let poll = ws.poll_ready_unpin(cx);
                if poll.is_pending() {
                    pending_polls.push(started);
                }
                poll
            })
            .await;
            match ready.and_then(|()| ws.start_send_unpin(numbered(sent, CHUNK))) {
                Ok(()) => {
                    sent += 1;
                    max_buffered = max_buffered.max(ws.buffered_amount());
                }
                Err(e) => break e,
            }
        };
        let failed_at = std::time::Instant::now();
        assert!(matches!(err, Error::WriteTimeout), "got {err:?}");
        let (first, last) = (pending_polls[0], *pending_polls.last().unwrap());
        assert!(
            failed_at - first >= WRITE_TIMEOUT,
            "reported {:?} after the socket first blocked",
            failed_at - first
        );
        assert!(
            failed_at - last <= WRITE_TIMEOUT + MARGIN,
            "reported {:?} after the socket last blocked",
            failed_at - last
        );
        assert!(sent > 2, "the socket took some messages first ({sent})");
        assert!(
            max_buffered <= HIGH_WATER + FRAME,
            "buffered {max_buffered} bytes, over high water {HIGH_WATER} + one frame {FRAME}"
        );
        // The connection is over: nothing more can be sent, and the stream ends promptly with
        // the same error.
        assert!(ws.send(Message::text("more")).await.is_err());
        let end = within_for(MARGIN, "stream end", ws.next()).await;
        assert!(
            matches!(end, Some(Err(Error::WriteTimeout))),
            "stream yielded {end:?}"
        );
        assert!(within_for(MARGIN, "none", ws.next()).await.is_none());
        let info = ws.close_info().expect("close info");
        assert_eq!(info.code, CloseCode::POLICY_VIOLATION);
        assert_eq!(info.initiator, Initiator::Library);
        assert!(!info.was_clean);
        drop(ws);
        // What reached the client is whole frames (possibly cut at the end), never garbage.
        let bytes = peer.read_to_end().await;
        let (whole, _close) = check_wire(&bytes);
        assert!(whole >= 1);
        assert!(whole <= sent);
    })
    .await;
}

/// Only the stream is polled (messages queued with `try_send`): it reports `WriteTimeout`
/// within the write timeout, without waiting a close timeout for a peer known not to read.
#[tokio::test]
async fn stream_reports_write_timeout_promptly() {
    within("test", async {
        let (mut ws, mut peer) = tcp_server_and_raw_client(slow_consumer_config()).await;
        // Fill the socket first (so that what try_send queues below can never be written).
        let mut sent = 0u32;
        let start = std::time::Instant::now();
        loop {
            match ws.try_send(numbered(sent, CHUNK)) {
                Ok(()) => sent += 1,
                Err(Error::QueueFull) => {
                    // Let the stream write what it can; it stops when the socket is full.
                    if tokio::time::timeout(Duration::from_millis(20), ws.flush())
                        .await
                        .is_err()
                    {
                        break;
                    }
                }
                Err(e) => panic!("try_send: {e:?}"),
            }
            assert!(
                start.elapsed() < Duration::from_secs(5),
                "socket never filled"
            );
        }
        let blocked = std::time::Instant::now();
        let end = within("stream end", ws.next()).await;
        let reported = blocked.elapsed();
        assert!(
            matches!(end, Some(Err(Error::WriteTimeout))),
            "stream yielded {end:?}"
        );
        assert!(
            reported <= WRITE_TIMEOUT + MARGIN,
            "reported after {reported:?} (write timeout {WRITE_TIMEOUT:?}, close timeout {:?})",
            ws.config().close_timeout
        );
        assert!(ws.next().await.is_none());
        drop(ws);
        let bytes = peer.read_to_end().await;
        check_wire(&bytes);
    })
    .await;
}

/// After a write timeout the close frame must not be glued to a half-written frame: a peer
/// that resumes reading sees whole frames, then (at most) a 1008 close frame, then the end.
#[tokio::test]
async fn peer_resuming_after_write_timeout_sees_only_whole_frames() {
    within("test", async {
        let config = slow_consumer_config().close_timeout(Duration::from_secs(2));
        let (mut ws, mut peer) = tcp_server_and_raw_client(config).await;
        let mut sent = 0u32;
        let err = loop {
            match ws.feed(numbered(sent, CHUNK)).await {
                Ok(()) => sent += 1,
                Err(e) => break e,
            }
        };
        assert!(matches!(err, Error::WriteTimeout), "got {err:?}");
        // The client wakes up and reads everything while the server finishes its stream.
        let reader = tokio::spawn(async move { peer.read_to_end().await });
        let end = within("stream end", ws.next()).await;
        assert!(matches!(end, Some(Err(Error::WriteTimeout))), "{end:?}");
        assert!(ws.next().await.is_none());
        drop(ws);
        let bytes = within("reader", reader).await.unwrap();
        let (whole, close) = check_wire(&bytes);
        assert!(whole <= sent);
        if let Some((code, reason)) = close {
            assert_eq!((code, reason.as_str()), (1008, "peer too slow"));
        }
    })
    .await;
}

/// Over a small pipe with a paused clock: the peer reads nothing, `send` fails after exactly
/// the write timeout; a peer that reads slowly (but steadily) is never cut off.
#[tokio::test(start_paused = true)]
async fn write_timeout_is_exact_and_spares_slow_but_steady_readers() {
    within_for(VIRTUAL_PATIENCE, "test", async {
        let config = WebSocketConfig::default()
            .keepalive(None, TIMEOUT)
            .write_timeout(Some(WRITE_TIMEOUT));
        // Stuck reader.
        let (mut ws, _peer) = server_and_raw_client(1024, config.clone());
        let start = Instant::now();
        let err = ws.send(Message::binary(vec![7u8; 4096])).await.unwrap_err();
        assert!(matches!(err, Error::WriteTimeout), "{err:?}");
        assert_at("write timeout", start.elapsed(), WRITE_TIMEOUT);

        // Slow reader: 256 bytes every 150 ms (under the write timeout each time).
        let (mut ws, mut peer) = server_and_raw_client(1024, config);
        let reader = tokio::spawn(async move {
            let mut total = 0;
            let mut chunk = [0u8; 256];
            loop {
                tokio::time::sleep(Duration::from_millis(150)).await;
                match peer.io.read(&mut chunk).await.unwrap() {
                    0 => return total,
                    n => total += n,
                }
            }
        });
        let start = Instant::now();
        ws.send(Message::binary(vec![7u8; 8192])).await.unwrap();
        assert!(
            start.elapsed() > Duration::from_secs(3),
            "it really was slow"
        );
        drop(ws);
        assert_eq!(reader.await.unwrap(), 8192 + 4);
    })
    .await;
}
