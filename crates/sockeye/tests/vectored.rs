//! Large payloads a server sends are written from the caller's `Bytes` (header and payload in
//! one vectored write, no copy), in order with everything else, through partial writes and over
//! transports without vectored writes.

mod common;

use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use bytes::Bytes;
use common::*;
use sockeye::{Message, Role, WebSocketConfig, WebSocketStream};
use tokio::io::{AsyncRead, AsyncWrite, DuplexStream, ReadBuf};

/// A transport that takes at most `limit` bytes per write, with or without vectored writes,
/// and records the start address and length of every slice it was given.
struct SlicingIo {
    io: DuplexStream,
    vectored: bool,
    limit: usize,
    slices: Arc<Mutex<Vec<(usize, usize)>>>,
}

impl AsyncRead for SlicingIo {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl AsyncWrite for SlicingIo {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.slices
            .lock()
            .unwrap()
            .push((buf.as_ptr() as usize, buf.len()));
        let limit = self.limit.min(buf.len());
        Pin::new(&mut self.io).poll_write(cx, &buf[..limit])
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        assert!(self.vectored, "vectored write on a transport without them");
        let mut joined = Vec::new();
        for buf in bufs {
            self.slices
                .lock()
                .unwrap()
                .push((buf.as_ptr() as usize, buf.len()));
            let room = self.limit - joined.len();
            joined.extend_from_slice(&buf[..buf.len().min(room)]);
        }
        Pin::new(&mut self.io).poll_write(cx, &joined)
    }

    fn is_write_vectored(&self) -> bool {
        self.vectored
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

type Slices = Arc<Mutex<Vec<(usize, usize)>>>;

fn server(
    vectored: bool,
    limit: usize,
) -> (WebSocketStream<SlicingIo>, RawPeer<DuplexStream>, Slices) {
    let (a, b) = tokio::io::duplex(256 << 10);
    let slices = Slices::default();
    let io = SlicingIo {
        io: b,
        vectored,
        limit,
        slices: slices.clone(),
    };
    // Room for every message of `messages()` at once.
    let config = WebSocketConfig::default().write_buffer_high_water(4 << 20);
    let ws = WebSocketStream::from_raw(io, Role::Server, config, &[]);
    (ws, RawPeer::new(a, Some(RAW_MASK)), slices)
}

/// Large and small data messages and a ping between them.
fn messages() -> Vec<Message> {
    let text: String = (0..40_000)
        .map(|i| char::from(b'a' + (i % 26) as u8))
        .collect();
    vec![
        Message::Binary(Bytes::from(pattern(100_000, 1))),
        Message::text("small"),
        Message::Ping(Bytes::from_static(b"p")),
        Message::Binary(Bytes::from(pattern(16 << 10, 2))),
        Message::Binary(Bytes::from(pattern((16 << 10) - 1, 3))),
        Message::Binary(Bytes::from(pattern(1 << 20, 4))),
        Message::text(text),
        Message::Binary(Bytes::from(pattern(10, 5))),
    ]
}

fn expected_frame(message: &Message) -> (u8, Vec<u8>) {
    let opcode = match message {
        Message::Text(_) => TEXT,
        Message::Binary(_) => BINARY,
        Message::Ping(_) => PING,
        other => panic!("{other:?}"),
    };
    (opcode, message.as_payload().to_vec())
}

/// Queues every message at once (several shared payloads in one queue), then writes them; the
/// peer reads the same frames in the same order.
async fn queued_then_flushed(vectored: bool, limit: usize) {
    let (mut ws, mut peer, _) = server(vectored, limit);
    let messages = messages();
    for message in &messages {
        ws.try_send(message.clone()).expect("queued");
    }
    let wire_len: usize = messages
        .iter()
        .map(|m| {
            let len = m.as_payload().len();
            len + if len < 126 {
                2
            } else if len < 65_536 {
                4
            } else {
                10
            }
        })
        .sum();
    assert_eq!(ws.buffered_amount(), wire_len);
    let reader = tokio::spawn(async move {
        let mut frames = Vec::new();
        for _ in 0..8 {
            let frame = peer.read_frame().await.expect("a frame");
            assert!(frame.fin && !frame.masked);
            frames.push((frame.opcode, frame.payload));
        }
        frames
    });
    within("flush", ws.flush()).await.expect("flushed");
    assert_eq!(ws.buffered_amount(), 0);
    let frames = within("reader", reader).await.unwrap();
    for (got, message) in frames.iter().zip(&messages) {
        let want = expected_frame(message);
        assert_eq!(got.0, want.0);
        assert!(
            got.1 == want.1,
            "payload of a {} byte message differs",
            want.1.len()
        );
    }
}

#[tokio::test]
async fn queued_messages_go_out_in_order_with_vectored_writes() {
    within("test", queued_then_flushed(true, usize::MAX)).await;
}

#[tokio::test]
async fn queued_messages_go_out_in_order_through_partial_vectored_writes() {
    within("test", queued_then_flushed(true, 7)).await;
    within("test", queued_then_flushed(true, 5_000)).await;
}

#[tokio::test]
async fn queued_messages_go_out_in_order_without_vectored_writes() {
    within("test", queued_then_flushed(false, usize::MAX)).await;
    within("test", queued_then_flushed(false, 1_001)).await;
}

/// The payload of a large message is handed to the transport where the caller's `Bytes` holds
/// it, in the same write as its header; a small one is copied next to its header.
#[tokio::test]
async fn large_payload_is_written_from_the_callers_buffer() {
    within("test", async {
        let (mut ws, mut peer, slices) = server(true, usize::MAX);
        let big = Bytes::from(pattern(64 << 10, 9));
        let reader = tokio::spawn(async move { peer.read_frame().await });
        ws.send(Message::Binary(big.clone())).await.expect("sent");
        let frame = within("echo", reader).await.unwrap().expect("a frame");
        assert!(frame.payload == big[..]);
        let slices = slices.lock().unwrap().clone();
        assert_eq!(
            slices.len(),
            2,
            "header and payload in one write: {slices:?}"
        );
        assert_eq!(slices[0].1, 10, "the 10-byte header (64-bit length) first");
        assert_eq!(slices[1], (big.as_ptr() as usize, big.len()));

        let (mut ws, mut peer, slices) = server(true, usize::MAX);
        let small = Bytes::from(pattern(1000, 9));
        let reader = tokio::spawn(async move { peer.read_frame().await });
        ws.send(Message::Binary(small.clone())).await.expect("sent");
        let frame = within("echo", reader).await.unwrap().expect("a frame");
        assert!(frame.payload == small[..]);
        let slices = slices.lock().unwrap().clone();
        assert_eq!(slices.len(), 1, "{slices:?}");
        assert_eq!(slices[0].1, 1004);
    })
    .await;
}

/// An echo server over real loopback TCP (vectored writes) returns large messages intact.
#[tokio::test]
async fn tcp_echo_of_large_messages() {
    within("test", async {
        let (ws, mut peer) = tcp_server_and_raw_client(WebSocketConfig::default()).await;
        let echo = spawn_echo(ws);
        for (i, len) in [20_000usize, 1 << 20, 300, 70_000].into_iter().enumerate() {
            let payload = pattern(len, i as u32);
            peer.send_frame(true, BINARY, &payload).await;
            let frame = within("echo", peer.read_frame()).await.expect("a frame");
            assert_eq!(frame.opcode, BINARY);
            assert!(frame.payload == payload, "echo of {len} bytes differs");
        }
        peer.send_frame(true, CLOSE, &close_payload(1000, "")).await;
        let close = within("close", peer.read_frame()).await.expect("close");
        assert_eq!(close.close_code().0, 1000);
        within("echo task", echo).await.unwrap();
    })
    .await;
}

/// A vectored transport whose first write takes only `first` bytes and every later one all it
/// is given (the duplex holds everything), so a write can start inside a shared payload.
struct ShortFirstWrite {
    io: DuplexStream,
    first: Option<usize>,
}

impl AsyncRead for ShortFirstWrite {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl AsyncWrite for ShortFirstWrite {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let mut joined: Vec<u8> = bufs.iter().flat_map(|b| b.iter().copied()).collect();
        if let Some(first) = self.first.take() {
            joined.truncate(first);
        }
        Pin::new(&mut self.io).poll_write(cx, &joined)
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

/// More shared payloads queued at once than one vectored write takes slices for, the first
/// write ending inside a payload: the next write stops before the first payload it leaves out,
/// and the bytes after it (its header, the next frames) are not written in its place. Each
/// message is checked, so a skipped payload shows.
#[tokio::test]
async fn more_shared_payloads_than_one_write_takes_go_out_in_order() {
    within("test", async {
        for first in [usize::MAX, 20_000, 7] {
            let (a, b) = tokio::io::duplex(8 << 20);
            let io = ShortFirstWrite {
                io: b,
                first: Some(first),
            };
            let config = WebSocketConfig::default().write_buffer_high_water(8 << 20);
            let mut ws = WebSocketStream::from_raw(io, Role::Server, config, &[]);
            let mut peer = RawPeer::new(a, Some(RAW_MASK));
            let count = 100u32;
            let payloads: Vec<Vec<u8>> = (0..count).map(|i| pattern(16 << 10, i)).collect();
            for payload in &payloads {
                ws.try_send(Message::Binary(Bytes::from(payload.clone())))
                    .expect("queued");
            }
            within("flush", ws.flush()).await.expect("flushed");
            assert_eq!(ws.buffered_amount(), 0);
            for (i, want) in payloads.iter().enumerate() {
                let frame = within("frame", peer.read_frame()).await.expect("a frame");
                assert_eq!(frame.opcode, BINARY, "message {i} (first write {first})");
                assert!(
                    frame.payload == *want,
                    "message {i} differs (first write {first})"
                );
            }
        }
    })
    .await;
}
