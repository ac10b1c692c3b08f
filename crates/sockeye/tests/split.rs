//! `split()` halves used from two tasks at once.

mod common;

use common::*;
use futures_util::{SinkExt as _, StreamExt as _};
use sockeye::bytes::Bytes;
use sockeye::{CloseCode, Message, WebSocketConfig, WebSocketStream};
use tokio::io::{AsyncRead, AsyncWrite};

/// One task sends `count` numbered messages through the sink half while another receives their
/// echoes from the stream half; then the halves are reunited and closed.
async fn send_and_receive_concurrently<S>(
    client: WebSocketStream<S>,
    count: u32,
    size: impl Fn(u32) -> usize + Send + 'static,
) -> WebSocketStream<S>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (mut sink, mut stream) = client.split();
    let writer = tokio::spawn(async move {
        for n in 0..count {
            sink.send(numbered(n, size(n))).await.expect("send");
        }
        sink
    });
    let reader = tokio::spawn(async move {
        for n in 0..count {
            let message = stream
                .next()
                .await
                .unwrap_or_else(|| panic!("stream ended before echo {n}"))
                .expect("echo");
            assert_eq!(check_numbered(&message), n, "echoes arrive in order");
        }
        stream
    });
    let (sink, stream) = within("both halves", async { tokio::join!(writer, reader) }).await;
    sink.unwrap()
        .reunite(stream.unwrap())
        .expect("halves of one stream")
}

#[tokio::test]
async fn halves_send_and_receive_from_two_tasks_over_tcp() {
    let (client, server) = tcp_pair(WebSocketConfig::default()).await;
    let echo = spawn_echo(server);
    let mut client = send_and_receive_concurrently(client, 1000, |n| (n as usize * 13) % 700).await;
    within("close", client.close(CloseCode::NORMAL, ""))
        .await
        .unwrap();
    let report = within("echo", echo).await.unwrap();
    assert_eq!(report.echoed, 1000);
    assert!(report.closed.unwrap().was_clean);
}

/// The same through a pipe so small that nearly every write waits for the peer: the sending
/// task must be woken when the socket becomes writable again even while the receiving task is
/// also using the connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn halves_do_not_lose_wakeups_when_the_transport_is_full() {
    let (client, server) = duplex_pair(64, WebSocketConfig::default());
    let echo = spawn_echo(server);
    let mut client =
        send_and_receive_concurrently(client, 1000, |n| (n as usize * 37) % 3000).await;
    within("close", client.close(CloseCode::NORMAL, ""))
        .await
        .unwrap();
    assert_eq!(within("echo", echo).await.unwrap().echoed, 1000);
}

#[tokio::test]
async fn halves_do_not_lose_wakeups_on_a_single_thread() {
    let (client, server) = duplex_pair(64, WebSocketConfig::default());
    let echo = spawn_echo(server);
    let mut client =
        send_and_receive_concurrently(client, 1000, |n| (n as usize * 37) % 3000).await;
    within("close", client.close(CloseCode::NORMAL, ""))
        .await
        .unwrap();
    assert_eq!(within("echo", echo).await.unwrap().echoed, 1000);
}

/// The reading half answers pings on its own; the writing half is never polled.
#[tokio::test]
async fn reading_half_answers_pings_while_the_writing_half_is_idle() {
    let (client, mut server) = tcp_pair(WebSocketConfig::default()).await;
    let (sink, mut stream) = client.split();
    let reader = tokio::spawn(async move {
        let mut pings = Vec::new();
        while let Some(item) = stream.next().await {
            match item.expect("no error") {
                Message::Ping(payload) => pings.push(payload),
                Message::Close(_) => {}
                other => panic!("unexpected {other:?}"),
            }
        }
        (pings, stream)
    });
    for n in 0..5u8 {
        let payload = Bytes::from(vec![n; n as usize * 10]);
        server.send(Message::Ping(payload.clone())).await.unwrap();
        assert_eq!(
            within("pong", server.next()).await.unwrap().unwrap(),
            Message::Pong(payload)
        );
    }
    within("server close", server.close(CloseCode::NORMAL, ""))
        .await
        .unwrap();
    let (pings, stream) = within("reader", reader).await.unwrap();
    assert_eq!(pings.len(), 5);
    let client = sink.reunite(stream).unwrap();
    assert!(client.close_info().unwrap().was_clean);
}

/// Closing through the sink half while another task waits on the stream half: the close
/// handshake completes and the waiting task sees the end of the stream.
#[tokio::test]
async fn closing_the_sink_half_ends_the_stream_half() {
    for capacity in [64, 1 << 16] {
        let (client, server) = duplex_pair(capacity, WebSocketConfig::default());
        let echo = spawn_echo(server);
        let (mut sink, mut stream) = client.split();
        let reader = tokio::spawn(async move {
            let mut seen = 0usize;
            while let Some(item) = stream.next().await {
                if item.expect("no error").is_data() {
                    seen += 1;
                }
            }
            (seen, stream)
        });
        // Let the reader wait on the stream first.
        tokio::task::yield_now().await;
        for n in 0..20 {
            sink.send(numbered(n, 500)).await.unwrap();
        }
        within("sink close", sink.close()).await.unwrap();
        let (seen, stream) = within("reader ends", reader).await.unwrap();
        assert!(seen <= 20);
        let client = sink.reunite(stream).unwrap();
        assert!(
            client.close_info().unwrap().was_clean,
            "capacity {capacity}"
        );
        // Echoes of messages read together with the close frame are refused (the close is
        // answered as soon as it is parsed), so only the close frame is certain.
        let report = within("echo", echo).await.unwrap();
        assert_eq!(
            report.control,
            vec![Message::Close(Some(sockeye::CloseFrame {
                code: CloseCode::NORMAL,
                reason: "".into(),
            }))]
        );
    }
}
