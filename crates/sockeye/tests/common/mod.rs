//! Helpers shared by the integration tests: connected pairs (loopback TCP and `tokio::io::duplex`),
//! an echo task, and a raw peer that speaks HTTP and frames by hand.
//!
//! Every test binary uses a different subset.
#![allow(dead_code, unreachable_pub)]

use std::future::Future;
use std::net::SocketAddr;
use std::pin::pin;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use futures_util::StreamExt as _;
use sockeye::{Closed, Error, Message, Role, Server, WebSocketConfig, WebSocketStream};
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _, DuplexStream};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

/// Upper bound on anything that should happen promptly: a hang fails the test instead of stalling
/// the suite. Never used to wait for something to happen.
pub const PATIENCE: Duration = Duration::from_secs(20);

/// Awaits `fut`, failing the test if it takes longer than [`PATIENCE`].
pub async fn within<F: Future>(what: &str, fut: F) -> F::Output {
    match tokio::time::timeout(PATIENCE, fut).await {
        Ok(output) => output,
        Err(_) => panic!("timed out: {what}"),
    }
}

/// Polls `fut` exactly once with a waker that does nothing, then drops it.
pub fn poll_once<F: Future>(fut: F) -> Poll<F::Output> {
    let mut cx = Context::from_waker(Waker::noop());
    pin!(fut).poll(&mut cx)
}

/// A client and a server connected over loopback TCP with a real opening handshake.
pub async fn tcp_pair(
    config: WebSocketConfig,
) -> (WebSocketStream<TcpStream>, WebSocketStream<TcpStream>) {
    let server = Server::bind("127.0.0.1:0")
        .await
        .expect("bind")
        .config(config.clone());
    let url = format!("ws://{}/", server.local_addr().expect("local addr"));
    let (client, accepted) = within("tcp handshake", async {
        tokio::join!(sockeye::connect_with_config(&url, config), server.accept())
    })
    .await;
    let (client, response) = client.expect("client handshake");
    assert_eq!(response.status(), 101);
    let (server, _request, _peer) = accepted.expect("server handshake");
    (client, server)
}

/// A client and a server over an in-memory pipe with `capacity` bytes of buffer each way.
pub fn duplex_pair(
    capacity: usize,
    config: WebSocketConfig,
) -> (WebSocketStream<DuplexStream>, WebSocketStream<DuplexStream>) {
    let (a, b) = tokio::io::duplex(capacity);
    (
        WebSocketStream::from_raw(a, Role::Client, config.clone(), &[]),
        WebSocketStream::from_raw(b, Role::Server, config, &[]),
    )
}

/// What an echo task saw.
#[derive(Debug)]
pub struct EchoReport {
    /// Control messages received (pings, pongs, close frames), in order.
    pub control: Vec<Message>,
    /// Data messages echoed.
    pub echoed: usize,
    /// The error the stream yielded, if any.
    pub error: Option<Error>,
    /// `close_info()` once the stream ended.
    pub closed: Option<Closed>,
}

/// Echoes every data message back until the stream ends.
pub fn spawn_echo<S>(mut ws: WebSocketStream<S>) -> JoinHandle<EchoReport>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    tokio::spawn(async move {
        let mut report = EchoReport {
            control: Vec::new(),
            echoed: 0,
            error: None,
            closed: None,
        };
        while let Some(item) = ws.next().await {
            match item {
                Ok(message) if message.is_data() => {
                    if let Err(e) = ws.send(message).await {
                        report.error.get_or_insert(e);
                    } else {
                        report.echoed += 1;
                    }
                }
                Ok(message) => report.control.push(message),
                Err(e) => {
                    assert!(report.error.is_none(), "second error {e:?}");
                    report.error = Some(e);
                }
            }
        }
        report.closed = ws.close_info().cloned();
        report
    })
}

/// `len` bytes that differ from message to message (`seed`) and position to position.
pub fn pattern(len: usize, seed: u32) -> Vec<u8> {
    (0..len)
        .map(|i| {
            (i as u32)
                .wrapping_mul(31)
                .wrapping_add(seed.wrapping_mul(7)) as u8
        })
        .collect()
}

/// A binary message carrying its sequence number in its first 4 bytes, followed by
/// `pattern(len, n)`: a receiver can tell which message it is and that it is whole.
pub fn numbered(n: u32, len: usize) -> Message {
    let mut body = n.to_be_bytes().to_vec();
    body.extend_from_slice(&(len as u32).to_be_bytes());
    body.extend(pattern(len, n));
    Message::binary(body)
}

/// Checks a message built by [`numbered`] and returns its sequence number.
pub fn check_numbered(message: &Message) -> u32 {
    let Message::Binary(body) = message else {
        panic!("expected a numbered binary message, got {message:?}");
    };
    assert!(body.len() >= 8, "short message: {} bytes", body.len());
    let n = u32::from_be_bytes(body[..4].try_into().unwrap());
    let len = u32::from_be_bytes(body[4..8].try_into().unwrap()) as usize;
    assert_eq!(body.len(), 8 + len, "message {n} is not whole");
    assert!(
        body[8..] == pattern(len, n)[..],
        "message {n} has corrupted content"
    );
    n
}

// ---- Raw peers ------------------------------------------------------------------------------

/// The RFC 6455 §1.3 example key and its accept value.
pub const KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";
pub const ACCEPT: &str = "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=";

/// A valid upgrade request with [`KEY`], with `extra` header lines (each ending in CRLF).
pub fn upgrade_request(extra: &str) -> String {
    format!(
        "GET /chat HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: {KEY}\r\nSec-WebSocket-Version: 13\r\n{extra}\r\n"
    )
}

/// Opcodes.
pub const TEXT: u8 = 0x1;
pub const BINARY: u8 = 0x2;
pub const CONTINUATION: u8 = 0x0;
pub const CLOSE: u8 = 0x8;
pub const PING: u8 = 0x9;
pub const PONG: u8 = 0xA;

/// Encodes a frame; `mask` is applied (and sent) when given.
pub fn frame(fin: bool, opcode: u8, payload: &[u8], mask: Option<[u8; 4]>) -> Vec<u8> {
    let mut out = vec![u8::from(fin) << 7 | opcode];
    let mask_bit = if mask.is_some() { 0x80 } else { 0 };
    match payload.len() {
        n @ 0..=125 => out.push(mask_bit | n as u8),
        n @ 126..=0xFFFF => {
            out.push(mask_bit | 126);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            out.push(mask_bit | 127);
            out.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    match mask {
        Some(key) => {
            out.extend_from_slice(&key);
            out.extend(payload.iter().enumerate().map(|(i, b)| b ^ key[i % 4]));
        }
        None => out.extend_from_slice(payload),
    }
    out
}

/// A close frame payload: code and reason.
pub fn close_payload(code: u16, reason: &str) -> Vec<u8> {
    let mut payload = code.to_be_bytes().to_vec();
    payload.extend_from_slice(reason.as_bytes());
    payload
}

/// A frame read by a [`RawPeer`], unmasked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawFrame {
    pub fin: bool,
    pub opcode: u8,
    pub masked: bool,
    pub payload: Vec<u8>,
}

impl RawFrame {
    /// Code and reason of a close frame.
    pub fn close_code(&self) -> (u16, String) {
        assert_eq!(self.opcode, CLOSE, "not a close frame: {self:?}");
        assert!(self.payload.len() >= 2, "close frame without a code");
        (
            u16::from_be_bytes([self.payload[0], self.payload[1]]),
            String::from_utf8(self.payload[2..].to_vec()).expect("utf-8 reason"),
        )
    }
}

/// One end of a connection driven by hand: raw bytes in, frames out.
#[derive(Debug)]
pub struct RawPeer<S> {
    pub io: S,
    /// Bytes read and not yet consumed.
    pub buf: Vec<u8>,
    /// Masking key for frames this peer sends (a client masks).
    pub mask: Option<[u8; 4]>,
}

impl<S: AsyncRead + AsyncWrite + Unpin> RawPeer<S> {
    pub fn new(io: S, mask: Option<[u8; 4]>) -> Self {
        Self {
            io,
            buf: Vec::new(),
            mask,
        }
    }

    /// Reads more bytes; false on end of stream or a reset.
    async fn fill(&mut self) -> bool {
        let mut chunk = [0u8; 8192];
        match self.io.read(&mut chunk).await {
            Ok(0) | Err(_) => false,
            Ok(n) => {
                self.buf.extend_from_slice(&chunk[..n]);
                true
            }
        }
    }

    /// The next frame; `None` at end of stream on a frame boundary.
    pub async fn read_frame(&mut self) -> Option<RawFrame> {
        loop {
            if let Some((frame, used)) = parse_frame(&self.buf) {
                self.buf.drain(..used);
                return Some(frame);
            }
            if !self.fill().await {
                assert!(
                    self.buf.is_empty(),
                    "stream ended inside a frame ({} bytes)",
                    self.buf.len()
                );
                return None;
            }
        }
    }

    /// Reads the head of an HTTP message up to the blank line; later bytes stay buffered.
    pub async fn read_head(&mut self) -> String {
        loop {
            if let Some(end) = find(&self.buf, b"\r\n\r\n") {
                let head = String::from_utf8(self.buf[..end + 4].to_vec()).expect("ascii head");
                self.buf.drain(..end + 4);
                return head;
            }
            assert!(
                self.fill().await,
                "stream ended before the head: {:?}",
                String::from_utf8_lossy(&self.buf)
            );
        }
    }

    /// Everything until end of stream (or a reset), including what is buffered.
    pub async fn read_to_end(&mut self) -> Vec<u8> {
        while self.fill().await {}
        std::mem::take(&mut self.buf)
    }

    /// Asserts the peer closed the stream with no further bytes.
    pub async fn expect_eof(&mut self) {
        let rest = self.read_to_end().await;
        assert!(rest.is_empty(), "expected end of stream, got {rest:?}");
    }

    pub async fn write(&mut self, bytes: &[u8]) {
        self.io.write_all(bytes).await.expect("raw write");
        self.io.flush().await.expect("raw flush");
    }

    /// Sends a frame, masked as this peer's role requires.
    pub async fn send_frame(&mut self, fin: bool, opcode: u8, payload: &[u8]) {
        let bytes = frame(fin, opcode, payload, self.mask);
        self.write(&bytes).await;
    }
}

/// Parses one frame from the start of `buf`: the frame and the bytes it used.
pub fn parse_frame(buf: &[u8]) -> Option<(RawFrame, usize)> {
    if buf.len() < 2 {
        return None;
    }
    let fin = buf[0] & 0x80 != 0;
    assert_eq!(buf[0] & 0x70, 0, "reserved bits set");
    let opcode = buf[0] & 0x0F;
    let masked = buf[1] & 0x80 != 0;
    let (len, mut pos) = match buf[1] & 0x7F {
        126 => {
            if buf.len() < 4 {
                return None;
            }
            (u64::from(u16::from_be_bytes([buf[2], buf[3]])), 4)
        }
        127 => {
            if buf.len() < 10 {
                return None;
            }
            (u64::from_be_bytes(buf[2..10].try_into().unwrap()), 10)
        }
        n => (u64::from(n), 2),
    };
    let key = if masked {
        if buf.len() < pos + 4 {
            return None;
        }
        let key: [u8; 4] = buf[pos..pos + 4].try_into().unwrap();
        pos += 4;
        Some(key)
    } else {
        None
    };
    let len = usize::try_from(len).unwrap();
    if buf.len() < pos + len {
        return None;
    }
    let mut payload = buf[pos..pos + len].to_vec();
    if let Some(key) = key {
        for (i, b) in payload.iter_mut().enumerate() {
            *b ^= key[i % 4];
        }
    }
    Some((
        RawFrame {
            fin,
            opcode,
            masked,
            payload,
        },
        pos + len,
    ))
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// The value of header `name` (case-insensitive) in an HTTP head.
pub fn header<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    head.split("\r\n").skip(1).find_map(|line| {
        let (n, v) = line.split_once(':')?;
        n.trim().eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

/// A raw client: connects, sends a valid upgrade request and checks the 101 answer.
pub async fn raw_client(addr: SocketAddr) -> RawPeer<TcpStream> {
    let tcp = TcpStream::connect(addr).await.expect("connect");
    let mut peer = RawPeer::new(tcp, Some([0x12, 0x34, 0x56, 0x78]));
    peer.write(upgrade_request("").as_bytes()).await;
    let head = peer.read_head().await;
    assert!(head.starts_with("HTTP/1.1 101 "), "{head}");
    assert_eq!(header(&head, "sec-websocket-accept"), Some(ACCEPT));
    peer
}

/// A listener on a free loopback port and its `ws://` URL.
pub async fn listener() -> (TcpListener, String) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let url = format!("ws://{}/", listener.local_addr().unwrap());
    (listener, url)
}

/// A raw server: accepts one connection, reads the request head, and answers it with `answer`
/// applied to the correct `Sec-WebSocket-Accept` value.
pub async fn raw_server_accept(
    listener: &TcpListener,
    answer: impl FnOnce(&str) -> Vec<u8>,
) -> RawPeer<TcpStream> {
    let (tcp, _) = listener.accept().await.expect("accept");
    let mut peer = RawPeer::new(tcp, None);
    let head = peer.read_head().await;
    assert!(head.starts_with("GET / HTTP/1.1\r\n"), "{head}");
    let key = header(&head, "sec-websocket-key").expect("key");
    let accept = sockeye_proto::handshake::accept_key(key.as_bytes());
    let response = answer(&accept);
    peer.write(&response).await;
    peer
}

/// A correct 101 response for `accept`.
pub fn switching_protocols(accept: &str) -> Vec<u8> {
    format!(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Accept: {accept}\r\n\r\n"
    )
    .into_bytes()
}
