//! Futures dropped at arbitrary poll points lose or duplicate nothing; backpressure over an
//! in-memory pipe.

mod common;

use std::collections::BTreeSet;
use std::task::Poll;
use std::time::{Duration, Instant};

use common::*;
use futures_util::{SinkExt as _, StreamExt as _};
use sockeye::{
    CloseCode, Error, Initiator, Message, Role, State, WebSocketConfig, WebSocketStream,
};
use tokio::io::DuplexStream;

const SHORT: Duration = Duration::from_millis(200);

/// Collects every message until the stream ends; fails on errors.
async fn collect(
    mut ws: WebSocketStream<DuplexStream>,
) -> (Vec<Message>, WebSocketStream<DuplexStream>) {
    let mut messages = Vec::new();
    while let Some(item) = ws.next().await {
        let message = item.expect("no error");
        if message.is_data() {
            messages.push(message);
        }
    }
    (messages, ws)
}

/// `recv()` futures dropped after one poll, or after a reschedule, while large and small messages
/// trickle through a small pipe (so most are read in many pieces).
#[tokio::test]
async fn dropped_recv_futures_lose_nothing() {
    const COUNT: u32 = 1500;
    let (mut client, mut server) = duplex_pair(1000, WebSocketConfig::default());
    let sender = tokio::spawn(async move {
        for n in 0..COUNT {
            server
                .send(numbered(n, (n as usize * 131) % 9000))
                .await
                .unwrap();
            if n % 100 == 0 {
                server
                    .send(Message::Ping(Default::default()))
                    .await
                    .unwrap();
            }
        }
        server.close(CloseCode::NORMAL, "done").await.unwrap();
        server
    });

    let mut received = Vec::new();
    let mut dropped = 0u32;
    let mut round = 0u32;
    let mut take = |item: Option<Result<Message, Error>>| -> bool {
        match item {
            Some(Ok(message)) => {
                if message.is_data() {
                    received.push(check_numbered(&message));
                }
                true
            }
            Some(Err(e)) => panic!("error after {} messages: {e:?}", received.len()),
            None => false,
        }
    };
    within("receive all", async {
        loop {
            round += 1;
            let item = match round % 3 {
                // Polled once, then dropped.
                0 => match poll_once(client.recv()) {
                    Poll::Ready(item) => Some(item),
                    Poll::Pending => {
                        dropped += 1;
                        None
                    }
                },
                // Dropped when the other branch wins after a reschedule.
                1 => tokio::select! {
                    biased;
                    item = client.recv() => Some(item),
                    () = tokio::task::yield_now() => {
                        dropped += 1;
                        None
                    }
                },
                // Awaited to the end, so the loop does not only spin.
                _ => Some(client.recv().await),
            };
            if let Some(item) = item {
                if !take(item) {
                    break;
                }
            }
        }
    })
    .await;
    let expected: Vec<u32> = (0..COUNT).collect();
    assert!(
        received == expected,
        "lost, duplicated or reordered: got {} messages",
        received.len()
    );
    assert!(
        dropped > 100,
        "the test dropped only {dropped} pending futures"
    );
    let info = client.close_info().expect("close info");
    assert!(info.was_clean);
    assert_eq!(
        (info.code, info.reason.as_str()),
        (CloseCode::NORMAL, "done")
    );
    let server = within("sender", sender).await.unwrap();
    assert!(server.close_info().unwrap().was_clean);
}

/// `send()` futures dropped after one poll or after a reschedule: each message is delivered
/// whole or not at all, in order; those whose future completed, or that were accepted at the
/// first poll (buffer below the high-water mark), are all delivered.
#[tokio::test]
async fn dropped_send_futures_deliver_whole_messages_or_nothing() {
    const COUNT: u32 = 1500;
    let high_water = 8 << 10;
    let config = WebSocketConfig::default().write_buffer_high_water(high_water);
    let (mut client, server) = duplex_pair(1000, config);
    let receiver = tokio::spawn(collect(server));

    let mut must_arrive = BTreeSet::new();
    let mut dropped = 0u32;
    within("send all", async {
        for n in 0..COUNT {
            let message = numbered(n, (n as usize * 131) % 9000);
            // Below the high-water mark `send` takes the message at its first poll.
            let accepted_at_first_poll = client.buffered_amount() < high_water;
            match n % 3 {
                0 => match poll_once(client.send(message)) {
                    Poll::Ready(result) => {
                        result.unwrap();
                        must_arrive.insert(n);
                    }
                    Poll::Pending => {
                        dropped += 1;
                        if accepted_at_first_poll {
                            must_arrive.insert(n);
                        }
                    }
                },
                1 => tokio::select! {
                    biased;
                    result = client.send(message) => {
                        result.unwrap();
                        must_arrive.insert(n);
                    }
                    () = tokio::task::yield_now() => {
                        dropped += 1;
                        if accepted_at_first_poll {
                            must_arrive.insert(n);
                        }
                    }
                },
                _ => {
                    client.send(message).await.unwrap();
                    must_arrive.insert(n);
                }
            }
        }
        client.flush().await.unwrap();
        assert_eq!(client.buffered_amount(), 0);
        client.close(CloseCode::NORMAL, "").await.unwrap();
    })
    .await;
    assert!(
        dropped > 100,
        "the test dropped only {dropped} pending futures"
    );

    let (messages, _server) = within("receiver", receiver).await.unwrap();
    // `check_numbered` fails on any message that is not whole.
    let received: Vec<u32> = messages.iter().map(check_numbered).collect();
    assert!(
        received.windows(2).all(|w| w[0] < w[1]),
        "messages duplicated or out of order"
    );
    let received: BTreeSet<u32> = received.into_iter().collect();
    let missing: Vec<&u32> = must_arrive.difference(&received).collect();
    assert!(missing.is_empty(), "accepted but lost: {missing:?}");
    assert!(client.close_info().unwrap().was_clean);
}

/// A `close()` dropped while waiting for the peer resumes when called again; one close frame.
#[tokio::test]
async fn dropped_close_resumes() {
    let (a, b) = tokio::io::duplex(1 << 16);
    let mut client = WebSocketStream::from_raw(a, Role::Client, WebSocketConfig::default(), &[]);
    let mut raw = RawPeer::new(b, None);

    assert!(poll_once(client.close(CloseCode::NORMAL, "first")).is_pending());
    assert_eq!(client.state(), State::Closing);
    // Dropped after a reschedule, too.
    tokio::select! {
        biased;
        result = client.close(CloseCode::GOING_AWAY, "second") => panic!("finished early: {result:?}"),
        () = tokio::task::yield_now() => {}
    }
    assert!(matches!(
        client.send(Message::text("x")).await,
        Err(Error::Send(sockeye::SendError::Closed))
    ));

    let frame = within("close frame", raw.read_frame()).await.unwrap();
    assert_eq!(frame.close_code(), (1000, "first".to_owned()));
    raw.send_frame(true, CLOSE, &close_payload(1000, "")).await;
    tokio::io::AsyncWriteExt::shutdown(&mut raw.io)
        .await
        .unwrap();

    within("close", client.close(CloseCode::NORMAL, "third"))
        .await
        .unwrap();
    let info = client.close_info().unwrap();
    assert!(info.was_clean);
    assert_eq!(info.initiator, Initiator::Application);
    // Nothing after the first close frame but the end of the stream.
    within("eof", raw.expect_eof()).await;
}

/// A `flush()` dropped while the pipe is full loses nothing: the next operation finishes it.
#[tokio::test]
async fn dropped_flush_resumes() {
    let (mut client, server) = duplex_pair(100, WebSocketConfig::default());
    for n in 0..10 {
        assert!(poll_once(client.send(numbered(n, 1000))).is_pending());
    }
    assert!(poll_once(client.flush()).is_pending());
    let receiver = tokio::spawn(collect(server));
    within("flush", client.flush()).await.unwrap();
    assert_eq!(client.buffered_amount(), 0);
    within("close", client.close(CloseCode::NORMAL, ""))
        .await
        .unwrap();
    let (messages, _) = within("receiver", receiver).await.unwrap();
    let received: Vec<u32> = messages.iter().map(check_numbered).collect();
    assert_eq!(received, (0..10).collect::<Vec<_>>());
}

// ---- Backpressure ---------------------------------------------------------------------------

/// With a small pipe and a peer that does not read, `send().await` waits, and the bytes queued
/// stay bounded by the high-water mark plus one message.
#[tokio::test]
async fn send_waits_for_a_peer_that_does_not_read() {
    let high_water = 16 << 10;
    let size = 4 << 10;
    let config = WebSocketConfig::default().write_buffer_high_water(high_water);
    let (a, b) = tokio::io::duplex(1024);
    let mut client = WebSocketStream::from_raw(a, Role::Client, config, &[]);

    let pending =
        tokio::time::timeout(Duration::from_millis(50), client.send(numbered(0, size))).await;
    assert!(pending.is_err(), "send completed with nobody reading");
    let queued = client.buffered_amount();
    assert!(queued > 0 && queued <= size + 16, "{queued}");

    // Keep offering messages: they are taken until the high-water mark, then refused.
    let mut taken = 1u32;
    for n in 1..100 {
        let before = client.buffered_amount();
        assert!(poll_once(client.send(numbered(n, size))).is_pending());
        if client.buffered_amount() > before {
            taken += 1;
        }
    }
    let queued = client.buffered_amount();
    assert!(queued >= high_water, "{queued} below the high-water mark");
    assert!(
        queued < high_water + size + 16,
        "{queued} bytes queued: not bounded by the high-water mark"
    );
    assert!(taken < 10, "{taken} messages taken");
    assert!(
        poll_once(futures_util::future::poll_fn(
            |cx| client.poll_ready_unpin(cx)
        ))
        .is_pending(),
        "Sink::poll_ready waits above the high-water mark"
    );

    // Once the peer reads, everything queued arrives whole and in order, and sending resumes.
    let peer = WebSocketStream::from_raw(b, Role::Server, WebSocketConfig::default(), &[]);
    let receiver = tokio::spawn(collect(peer));
    within("send resumes", client.send(numbered(taken, size)))
        .await
        .unwrap();
    within("close", client.close(CloseCode::NORMAL, ""))
        .await
        .unwrap();
    let (messages, _) = within("receiver", receiver).await.unwrap();
    let received: Vec<u32> = messages.iter().map(check_numbered).collect();
    assert_eq!(received, (0..=taken).collect::<Vec<_>>());
}

/// The close timeout bounds `close()` even when the peer reads nothing at all, so the close
/// frame cannot even be written.
#[tokio::test]
async fn close_times_out_when_the_peer_does_not_read() {
    let config = WebSocketConfig::default().close_timeout(SHORT);
    let (a, _b) = tokio::io::duplex(1024);
    let mut client = WebSocketStream::from_raw(a, Role::Client, config, &[]);
    assert!(poll_once(client.send(numbered(0, 10_000))).is_pending());

    let start = Instant::now();
    let result = within("close", client.close(CloseCode::NORMAL, "")).await;
    let elapsed = start.elapsed();
    assert!(elapsed >= SHORT, "{elapsed:?}");
    assert!(matches!(result, Err(Error::AbnormalClosure)), "{result:?}");
    let info = client.close_info().unwrap();
    assert_eq!((info.code, info.was_clean), (CloseCode::ABNORMAL, false));
    assert_eq!(client.state(), State::Closed);
}

/// A peer that violates the protocol and then reads nothing: the stream reports the violation
/// within the close timeout instead of waiting forever to write its close frame.
#[tokio::test]
async fn failing_a_peer_that_does_not_read_is_bounded_by_the_close_timeout() {
    let config = WebSocketConfig::default().close_timeout(SHORT);
    let (a, b) = tokio::io::duplex(1024);
    let mut server = WebSocketStream::from_raw(a, Role::Server, config, &[]);
    let mut raw = RawPeer::new(b, Some([1, 2, 3, 4]));
    // Fill the pipe towards the peer, then receive an unmasked frame.
    assert!(poll_once(server.send(numbered(0, 10_000))).is_pending());
    raw.write(&frame(true, TEXT, b"unmasked", None)).await;
    let start = Instant::now();
    let item = within("violation reported", server.next()).await;
    assert!(
        matches!(
            item,
            Some(Err(Error::Protocol(sockeye::ProtocolError::UnmaskedFrame)))
        ),
        "{item:?}"
    );
    assert!(start.elapsed() >= SHORT);
    assert!(server.next().await.is_none());
    assert_eq!(server.close_info().unwrap().code, CloseCode::PROTOCOL_ERROR);
}
