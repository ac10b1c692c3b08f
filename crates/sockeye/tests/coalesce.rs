//! Write coalescing: `send_batched` answers a burst of received messages with one write to the
//! transport, and still writes at once when no further message is waiting; `send` always
//! writes before it returns.

mod common;

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use common::*;
use futures_util::StreamExt as _;
use sockeye::{Role, WebSocketConfig, WebSocketStream};
use tokio::io::{AsyncRead, AsyncWrite, DuplexStream, ReadBuf};

/// A transport that counts the writes that moved bytes.
struct CountingIo {
    io: DuplexStream,
    writes: Arc<AtomicUsize>,
}

impl AsyncRead for CountingIo {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl AsyncWrite for CountingIo {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let result = Pin::new(&mut self.io).poll_write(cx, buf);
        if matches!(result, Poll::Ready(Ok(n)) if n > 0) {
            self.writes.fetch_add(1, Ordering::SeqCst);
        }
        result
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

/// A sockeye server whose writes are counted, and a raw client, over a 64 KiB pipe.
fn counted_server() -> (
    WebSocketStream<CountingIo>,
    RawPeer<DuplexStream>,
    Arc<AtomicUsize>,
) {
    let (a, b) = tokio::io::duplex(64 << 10);
    let writes = Arc::new(AtomicUsize::new(0));
    let io = CountingIo {
        io: b,
        writes: writes.clone(),
    };
    let server = WebSocketStream::from_raw(io, Role::Server, WebSocketConfig::default(), &[]);
    (server, RawPeer::new(a, Some(RAW_MASK)), writes)
}

/// Sixteen frames in one write from the client.
fn burst(count: u32) -> Vec<u8> {
    (0..count)
        .flat_map(|n| frame(true, BINARY, &pattern(20 + n as usize, n), Some(RAW_MASK)))
        .collect()
}

async fn expect_echoes(client: &mut RawPeer<DuplexStream>, count: u32) {
    for n in 0..count {
        let echo = within("echo", client.read_frame()).await.expect("an echo");
        assert_eq!(echo.opcode, BINARY);
        assert_eq!(
            echo.payload,
            pattern(20 + n as usize, n),
            "echo {n} in order"
        );
    }
}

#[tokio::test]
async fn an_echo_loop_answers_a_burst_with_one_write() {
    let (server, mut client, writes) = counted_server();
    let echo = spawn_echo(server);
    client.write(&burst(16)).await;
    expect_echoes(&mut client, 16).await;
    assert_eq!(writes.load(Ordering::SeqCst), 1, "16 echoes, one write");

    // The next burst again leaves in one write.
    client.write(&burst(16)).await;
    expect_echoes(&mut client, 16).await;
    assert_eq!(writes.load(Ordering::SeqCst), 2);
    drop(client);
    assert_eq!(within("echo task", echo).await.unwrap().echoed, 32);
}

#[tokio::test]
async fn send_writes_at_once_when_no_message_is_waiting() {
    let (mut server, mut client, writes) = counted_server();
    client.write(&burst(1)).await;
    let message = within("receive", server.next()).await.unwrap().unwrap();
    within("send", server.send_batched(message)).await.unwrap();
    assert_eq!(
        writes.load(Ordering::SeqCst),
        1,
        "written before send returned"
    );
    // The server is not polled again: the echo is already on its way.
    expect_echoes(&mut client, 1).await;
}

#[tokio::test]
async fn a_reply_queued_behind_a_waiting_message_is_written_with_the_next_one() {
    let (mut server, mut client, writes) = counted_server();
    client.write(&burst(2)).await;
    let first = within("receive", server.next()).await.unwrap().unwrap();
    within("send", server.send_batched(first)).await.unwrap();
    assert_eq!(
        writes.load(Ordering::SeqCst),
        0,
        "queued: a message is waiting"
    );
    assert!(server.buffered_amount() > 0);
    let second = within("receive", server.next()).await.unwrap().unwrap();
    within("send", server.send_batched(second)).await.unwrap();
    assert_eq!(
        writes.load(Ordering::SeqCst),
        1,
        "both replies in one write"
    );
    assert_eq!(server.buffered_amount(), 0);
    expect_echoes(&mut client, 2).await;
}

#[tokio::test]
async fn queued_replies_are_written_before_the_stream_waits_for_input() {
    let (mut server, mut client, writes) = counted_server();
    client.write(&burst(3)).await;
    // Reply to the first message twice; then read on without sending.
    let first = within("receive", server.next()).await.unwrap().unwrap();
    within("send", server.send_batched(first.clone()))
        .await
        .unwrap();
    within("send", server.send_batched(first)).await.unwrap();
    assert_eq!(writes.load(Ordering::SeqCst), 0);
    for _ in 0..2 {
        within("receive", server.next()).await.unwrap().unwrap();
    }
    assert_eq!(
        writes.load(Ordering::SeqCst),
        0,
        "messages were still ready"
    );
    // No message left: the next read writes the replies before it waits.
    let reader = tokio::spawn(async move { server.next().await.map(|m| m.is_ok()) });
    for _ in 0..2 {
        let echo = within("reply", client.read_frame()).await.expect("a reply");
        assert_eq!(echo.payload, pattern(20, 0));
    }
    assert_eq!(writes.load(Ordering::SeqCst), 1);
    drop(client);
    // The client went away without a close frame: an abnormal closure.
    assert_eq!(within("end", reader).await.unwrap(), Some(false));
}

#[tokio::test]
async fn send_writes_before_returning_even_when_a_message_is_waiting() {
    let (mut server, mut client, writes) = counted_server();
    client.write(&burst(2)).await;
    let first = within("receive", server.next()).await.unwrap().unwrap();
    within("send", server.send(first)).await.unwrap();
    assert_eq!(
        writes.load(Ordering::SeqCst),
        1,
        "written before send returned"
    );
    // The stream is dropped with a message still unread: the reply is already out.
    drop(server);
    expect_echoes(&mut client, 1).await;
}

#[tokio::test]
async fn flush_writes_a_queued_reply() {
    let (mut server, mut client, writes) = counted_server();
    client.write(&burst(2)).await;
    let first = within("receive", server.next()).await.unwrap().unwrap();
    within("send", server.send_batched(first)).await.unwrap();
    assert_eq!(writes.load(Ordering::SeqCst), 0);
    within("flush", server.flush()).await.unwrap();
    assert_eq!(writes.load(Ordering::SeqCst), 1);
    expect_echoes(&mut client, 1).await;
}
