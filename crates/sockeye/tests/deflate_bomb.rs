//! A decompression bomb over the network (RFC 6455 §10.4 with RFC 7692): a raw client sends one
//! masked compressed frame of about 1 MB that would inflate to 1 GiB; the server fails the
//! connection with 1009 and the process's memory stays bounded.
//!
//! The only test in its binary, so that no other test moves the process's memory meanwhile.

mod common;

use common::*;
use futures_util::StreamExt as _;
use sockeye::{DeflateConfig, Error, ProtocolError, Server, WebSocketConfig};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

const MIB: usize = 1 << 20;
/// The server's `max_message_size`.
const LIMIT: usize = MIB;
/// What the bomb would inflate to.
const INFLATED: usize = 1 << 30;
/// Allowed growth of the process's peak resident memory.
const BOUND: u64 = 64 << 20;

#[tokio::test]
async fn bomb_fails_with_1009_and_memory_stays_bounded() {
    let bomb = zero_bomb(INFLATED / 258);
    assert!(bomb.len() < 1_100_000, "{}", bomb.len());
    let mask = [0x9a, 0x0b, 0xc1, 0x55];
    let wire = compressed_frame(true, BINARY, &bomb, Some(mask));
    drop(bomb);

    let config = WebSocketConfig::default()
        .deflate(Some(DeflateConfig::default()))
        .max_message_size(Some(LIMIT));
    let server = Server::bind("127.0.0.1:0")
        .await
        .expect("bind")
        .config(config);
    let addr = server.local_addr().unwrap();
    let rss_before = proc_status_bytes("VmRSS");

    // The server keeps its socket until the client has read the close frame: closing it with
    // unread input would reset the connection.
    let (client_done, wait_for_client) = tokio::sync::oneshot::channel::<()>();
    let server_task = tokio::spawn(async move {
        let (mut ws, _request, _peer) = server.accept().await.expect("server handshake");
        assert_eq!(
            ws.extensions(),
            "permessage-deflate; server_no_context_takeover; client_no_context_takeover"
        );
        let first = ws.next().await;
        let _ = wait_for_client.await;
        let after = ws.next().await;
        (first, after.is_none(), ws.close_info().cloned())
    });

    let close = within("raw client", async {
        let tcp = TcpStream::connect(addr).await.expect("connect");
        let mut raw = RawPeer::new(tcp, Some(mask));
        raw.write(upgrade_request("Sec-WebSocket-Extensions: permessage-deflate\r\n").as_bytes())
            .await;
        let head = raw.read_head().await;
        assert!(head.starts_with("HTTP/1.1 101 "), "{head}");
        assert_eq!(
            header(&head, "sec-websocket-extensions"),
            Some("permessage-deflate; server_no_context_takeover; client_no_context_takeover")
        );
        // Write the bomb while reading: the server stops reading once it has failed, so the
        // write may never finish.
        let mut buf = std::mem::take(&mut raw.buf);
        let (mut reader, mut writer) = raw.io.into_split();
        let write = tokio::spawn(async move {
            let _ = writer.write_all(&wire).await;
            writer
        });
        let close = loop {
            if let Some((frame, used)) = parse_frame(&buf) {
                buf.drain(..used);
                break frame;
            }
            let mut chunk = [0u8; 4096];
            let n = reader.read(&mut chunk).await.expect("read");
            assert!(n > 0, "connection ended before a close frame");
            buf.extend_from_slice(&chunk[..n]);
        };
        // Then the server closes its side.
        let mut rest = Vec::new();
        let _ = reader.read_to_end(&mut rest).await;
        assert!(
            buf.is_empty() && rest.is_empty(),
            "bytes after the close frame"
        );
        write.abort();
        close
    })
    .await;
    assert_eq!(close.close_code().0, 1009, "{close:?}");

    client_done.send(()).unwrap();
    let (first, ended, closed) = within("server task", server_task).await.unwrap();
    assert!(
        matches!(
            first,
            Some(Err(Error::Protocol(ProtocolError::MessageTooBig {
                limit: LIMIT
            })))
        ),
        "{first:?}"
    );
    assert!(ended, "the stream ends after the error");
    let closed = closed.expect("close info");
    assert_eq!(closed.code.0, 1009);
    assert!(!closed.was_clean);

    // VmHWM is the peak since the process started: an inflated gigabyte, even freed again,
    // would show.
    let peak = proc_status_bytes("VmHWM");
    let growth = peak.saturating_sub(rss_before);
    assert!(
        growth < BOUND,
        "peak resident memory grew by {} MiB (bound {} MiB)",
        growth >> 20,
        BOUND >> 20
    );
}
