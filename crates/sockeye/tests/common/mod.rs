//! Helpers shared by the integration tests: connected pairs (loopback TCP and `tokio::io::duplex`),
//! an echo task, and a raw peer that speaks HTTP and frames by hand.
//!
//! Every test binary uses a different subset.
#![allow(dead_code, unreachable_pub)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::future::Future;
use std::net::SocketAddr;
use std::pin::pin;
use std::sync::atomic::{AtomicUsize, Ordering};
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
) -> (
    WebSocketStream<sockeye::Transport<TcpStream>>,
    WebSocketStream<sockeye::Transport<TcpStream>>,
) {
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
                    if let Err(e) = ws.send_batched(message).await {
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

// ---- Reliability: raw peers on pipes and sockets, drained streams, background servers ------

/// Masking key of the raw clients below.
pub const RAW_MASK: [u8; 4] = [0x12, 0x34, 0x56, 0x78];

/// Awaits `fut`, failing the test if it takes longer than `limit` (of tokio time, so under a
/// paused clock a hang fails as soon as nothing else can happen).
pub async fn within_for<F: Future>(limit: Duration, what: &str, fut: F) -> F::Output {
    match tokio::time::timeout(limit, fut).await {
        Ok(output) => output,
        Err(_) => panic!("timed out after {limit:?}: {what}"),
    }
}

/// A sockeye server and a raw client over an in-memory pipe of `capacity` bytes each way.
pub fn server_and_raw_client(
    capacity: usize,
    config: WebSocketConfig,
) -> (WebSocketStream<DuplexStream>, RawPeer<DuplexStream>) {
    let (a, b) = tokio::io::duplex(capacity);
    (
        WebSocketStream::from_raw(b, Role::Server, config, &[]),
        RawPeer::new(a, Some(RAW_MASK)),
    )
}

/// A sockeye client and a raw server over an in-memory pipe of `capacity` bytes each way.
pub fn client_and_raw_server(
    capacity: usize,
    config: WebSocketConfig,
) -> (WebSocketStream<DuplexStream>, RawPeer<DuplexStream>) {
    let (a, b) = tokio::io::duplex(capacity);
    (
        WebSocketStream::from_raw(b, Role::Client, config, &[]),
        RawPeer::new(a, None),
    )
}

/// A sockeye server (run through `accept_with_config`, so the test owns the stream) and a raw
/// client over loopback TCP.
pub async fn tcp_server_and_raw_client(
    config: WebSocketConfig,
) -> (WebSocketStream<TcpStream>, RawPeer<TcpStream>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().unwrap();
    let (accepted, raw) = within("tcp handshake", async {
        tokio::join!(
            async {
                let (tcp, _) = listener.accept().await.expect("accept");
                sockeye::accept_with_config(tcp, config).await
            },
            raw_client(addr)
        )
    })
    .await;
    let (ws, _request) = accepted.expect("server handshake");
    (ws, raw)
}

/// What a stream yielded until it ended, each item with the tokio time it arrived.
#[derive(Debug)]
pub struct Drained<S> {
    pub items: Vec<(tokio::time::Instant, Result<Message, Error>)>,
    pub ws: WebSocketStream<S>,
}

impl<S> Drained<S> {
    /// The messages, failing on any error.
    pub fn messages(&self) -> Vec<&Message> {
        self.items
            .iter()
            .map(|(_, item)| item.as_ref().expect("no error"))
            .collect()
    }
}

/// Polls `ws` from a task (so its timers run) until it yields `None`, recording every item.
pub fn spawn_drain<S>(mut ws: WebSocketStream<S>) -> JoinHandle<Drained<S>>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    tokio::spawn(async move {
        let mut items = Vec::new();
        while let Some(item) = ws.next().await {
            items.push((tokio::time::Instant::now(), item));
        }
        Drained { items, ws }
    })
}

/// A `Server` running `serve_with_shutdown` in a task, stopped by `stop`.
#[derive(Debug)]
pub struct Serving {
    pub addr: SocketAddr,
    pub stop: Option<tokio::sync::oneshot::Sender<()>>,
    pub task: JoinHandle<std::io::Result<()>>,
}

impl Serving {
    /// Fires the shutdown signal.
    pub fn signal(&mut self) {
        let stop = self.stop.take().expect("signalled once");
        stop.send(()).expect("server still running");
    }
}

/// Binds `server` (already configured) to a task that serves `handler` until signalled.
pub fn serve_in_background<H, F>(server: Server, handler: H) -> Serving
where
    H: Fn(WebSocketStream<sockeye::Transport<TcpStream>>, sockeye::http::Request<()>) -> F
        + Send
        + Sync
        + 'static,
    F: Future<Output = ()> + Send + 'static,
{
    let addr = server.local_addr().expect("local addr");
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(server.serve_with_shutdown(handler, async {
        let _ = stopped.await;
    }));
    Serving {
        addr,
        stop: Some(stop),
        task,
    }
}

// ---- Process resources (Linux /proc) ---------------------------------------------------------

/// Resident set size of this process, in bytes (`VmRSS` in `/proc/self/status`).
pub fn rss_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("read /proc/self/status");
    let line = status
        .lines()
        .find(|line| line.starts_with("VmRSS:"))
        .expect("VmRSS line");
    let kib: u64 = line
        .split_whitespace()
        .nth(1)
        .and_then(|n| n.parse().ok())
        .expect("VmRSS value in kB");
    kib * 1024
}

/// File descriptors open in this process (entries of `/proc/self/fd`).
pub fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd")
        .expect("read /proc/self/fd")
        .count()
}

/// TCP sockets open in this process: descriptors of `/proc/self/fd` whose inode is listed in
/// `/proc/net/tcp` or `/proc/net/tcp6`. Blind to the Unix sockets and event descriptors that
/// runtimes open for themselves.
pub fn open_tcp_sockets() -> usize {
    let mut tcp_inodes = std::collections::HashSet::new();
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let Ok(text) = std::fs::read_to_string(table) else {
            continue;
        };
        // Columns: sl local rem st tx:rx tr:when retrnsmt uid timeout inode ...
        tcp_inodes.extend(
            text.lines()
                .skip(1)
                .filter_map(|line| line.split_whitespace().nth(9).map(str::to_owned)),
        );
    }
    std::fs::read_dir("/proc/self/fd")
        .expect("read /proc/self/fd")
        .filter_map(|entry| std::fs::read_link(entry.ok()?.path()).ok())
        .filter_map(|target| {
            let target = target.to_string_lossy().into_owned();
            Some(
                target
                    .strip_prefix("socket:[")?
                    .strip_suffix(']')?
                    .to_owned(),
            )
        })
        .filter(|inode| tcp_inodes.contains(inode))
        .count()
}

/// Soft limit on open file descriptors (`Max open files` in `/proc/self/limits`); `u64::MAX`
/// when unlimited.
pub fn fd_soft_limit() -> u64 {
    let limits = std::fs::read_to_string("/proc/self/limits").expect("read /proc/self/limits");
    let line = limits
        .lines()
        .find(|line| line.starts_with("Max open files"))
        .expect("Max open files line");
    match line.split_whitespace().nth(3) {
        Some("unlimited") => u64::MAX,
        Some(n) => n.parse().expect("numeric fd limit"),
        None => panic!("malformed limits line: {line}"),
    }
}

/// Megabytes with one decimal, for reports.
pub fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / f64::from(1 << 20))
}

// ---- permessage-deflate (RFC 7692) ----------------------------------------------------------

/// A client with `client_config` and a server with `server_config` over loopback TCP, with a
/// real opening handshake (so the extension is negotiated as in production).
pub async fn tcp_pair_with(
    client_config: WebSocketConfig,
    server_config: WebSocketConfig,
) -> (
    WebSocketStream<sockeye::Transport<TcpStream>>,
    WebSocketStream<sockeye::Transport<TcpStream>>,
) {
    let server = Server::bind("127.0.0.1:0")
        .await
        .expect("bind")
        .config(server_config);
    let url = format!("ws://{}/", server.local_addr().expect("local addr"));
    let (client, accepted) = within("tcp handshake", async {
        tokio::join!(
            sockeye::connect_with_config(&url, client_config),
            server.accept()
        )
    })
    .await;
    let (client, response) = client.expect("client handshake");
    assert_eq!(response.status(), 101);
    let (server, _request, _peer) = accepted.expect("server handshake");
    (client, server)
}

/// A frame with RSV1 set: the first frame of a compressed message (RFC 7692 §6).
pub fn compressed_frame(fin: bool, opcode: u8, payload: &[u8], mask: Option<[u8; 4]>) -> Vec<u8> {
    let mut bytes = frame(fin, opcode, payload, mask);
    bytes[0] |= 0x40;
    bytes
}

impl<S: AsyncRead + AsyncWrite + Unpin> RawPeer<S> {
    /// The next frame with its RSV bits (RSV1 = 0b100); [`read_frame`](Self::read_frame) refuses
    /// frames with RSV bits. `None` at end of stream on a frame boundary.
    pub async fn read_frame_rsv(&mut self) -> Option<(u8, RawFrame)> {
        loop {
            if let Some(&b0) = self.buf.first() {
                let mut cleared = self.buf.clone();
                cleared[0] = b0 & 0x8F;
                if let Some((frame, used)) = parse_frame(&cleared) {
                    self.buf.drain(..used);
                    return Some(((b0 >> 4) & 0x7, frame));
                }
            }
            if !self.fill().await {
                assert!(self.buf.is_empty(), "stream ended inside a frame");
                return None;
            }
        }
    }
}

/// A field of `/proc/self/status` given in kB (`VmRSS`, `VmHWM`...), in bytes.
pub fn proc_status_bytes(field: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("read /proc/self/status");
    let line = status
        .lines()
        .find(|line| line.split(':').next() == Some(field))
        .unwrap_or_else(|| panic!("no {field} in /proc/self/status"));
    let kib: u64 = line
        .split_whitespace()
        .nth(1)
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("malformed {line:?}"));
    kib * 1024
}

/// A decompression bomb built by hand from RFC 1951: one dynamic Huffman block with a literal
/// zero and `matches` copies of (length 258, distance 1) at two bits each, ending as RFC 7692
/// §7.2.1 says. Inflates to `1 + 258 * matches` zeros from about `matches / 4` bytes.
pub fn zero_bomb(matches: usize) -> Vec<u8> {
    struct Bits {
        bytes: Vec<u8>,
        used: u32,
    }
    impl Bits {
        fn push(&mut self, bit: bool) {
            if self.used == 0 {
                self.bytes.push(0);
            }
            if bit {
                *self.bytes.last_mut().unwrap() |= 1 << self.used;
            }
            self.used = (self.used + 1) % 8;
        }
        /// A field, least significant bit first.
        fn field(&mut self, value: u32, len: u32) {
            (0..len).for_each(|i| self.push((value >> i) & 1 == 1));
        }
        /// A Huffman code, most significant bit first.
        fn code(&mut self, code: u32, len: u32) {
            (0..len).rev().for_each(|i| self.push((code >> i) & 1 == 1));
        }
    }
    let mut w = Bits {
        bytes: Vec::with_capacity(matches / 4 + 64),
        used: 0,
    };
    w.field(0, 1); // BFINAL 0
    w.field(2, 2); // dynamic Huffman codes
    w.field(29, 5); // 286 literal/length codes
    w.field(0, 5); // 1 distance code
    w.field(14, 4); // 18 code length code lengths, in RFC 1951 order:
    for len in [0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2, 0, 2] {
        w.field(len, 3); // 18 -> "0", 1 -> "10", 2 -> "11"
    }
    w.code(0b11, 2); // literal 0: length 2
    w.code(0b0, 1); // literals 1..=138: 0
    w.field(138 - 11, 7);
    w.code(0b0, 1); // literals 139..=255: 0
    w.field(117 - 11, 7);
    w.code(0b11, 2); // end of block: length 2
    w.code(0b0, 1); // lengths 257..=284: 0
    w.field(28 - 11, 7);
    w.code(0b10, 2); // length 258 (symbol 285): length 1
    w.code(0b10, 2); // distance 1 (symbol 0): length 1
                     // Codes: 285 -> "0", literal 0 -> "10", end of block -> "11"; distance 1 -> "0".
    w.code(0b10, 2);
    for _ in 0..matches {
        w.code(0b00, 2);
    }
    w.code(0b11, 2);
    w.field(0, 3); // an empty stored block, its 00 00 ff ff left to the receiver
    w.bytes
}

// ---- Heap accounting ------------------------------------------------------------------------

static HEAP_LIVE: AtomicUsize = AtomicUsize::new(0);

/// The system allocator, counting the bytes it holds for the program. A test binary that wants
/// [`heap_live_bytes`] installs it:
///
/// ```ignore
/// #[global_allocator]
/// static ALLOCATOR: common::CountingAllocator = common::CountingAllocator;
/// ```
///
/// Unlike RSS, the count is blind to memory the allocator keeps after a free, so it tells a
/// leak (the count grows with every round of work) from retention (RSS stays up, the count
/// goes back down).
#[derive(Debug)]
pub struct CountingAllocator;

// SAFETY: every method forwards to `System` with the caller's pointer and layout unchanged; the
// counter is bookkeeping and never affects what is returned.
unsafe impl GlobalAlloc for CountingAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded as is; the caller upholds `GlobalAlloc::alloc`'s contract.
        let ptr = unsafe { System.alloc(layout) };
        if !ptr.is_null() {
            HEAP_LIVE.fetch_add(layout.size(), Ordering::Relaxed);
        }
        ptr
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: as for `alloc`.
        let ptr = unsafe { System.alloc_zeroed(layout) };
        if !ptr.is_null() {
            HEAP_LIVE.fetch_add(layout.size(), Ordering::Relaxed);
        }
        ptr
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` came from this allocator (so from `System`) with `layout`.
        unsafe { System.dealloc(ptr, layout) };
        HEAP_LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: `ptr` came from `System` with `layout`; the caller upholds the rest.
        let new = unsafe { System.realloc(ptr, layout, new_size) };
        if !new.is_null() {
            HEAP_LIVE.fetch_add(new_size, Ordering::Relaxed);
            HEAP_LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
        }
        new
    }
}

/// Bytes allocated and not yet freed, when [`CountingAllocator`] is the global allocator
/// (else 0).
pub fn heap_live_bytes() -> u64 {
    HEAP_LIVE.load(Ordering::Relaxed) as u64
}

/// Hands the allocator's free memory back to the OS where the allocator can (glibc keeps freed
/// arena memory until asked), so that RSS shows what is in use rather than the high-water mark.
pub fn trim_allocator() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        extern "C" {
            fn malloc_trim(pad: usize) -> std::ffi::c_int;
        }
        // SAFETY: glibc's `malloc_trim` takes a byte count, touches only the allocator's own
        // free lists (thread-safe) and returns a flag.
        unsafe {
            malloc_trim(0);
        }
    }
}

// ---- TLS: a throwaway PKI generated at test time (rcgen) -------------------------------------

/// A private certificate authority, generated in memory for one test. Nothing is written to
/// disk unless a test does it itself (and removes it).
pub struct TestCa {
    issuer: rcgen::CertifiedIssuer<'static, rcgen::KeyPair>,
    /// The CA certificate in PEM, for `sockeye::tls::client_config(Some(..))`.
    pub pem: String,
}

impl std::fmt::Debug for TestCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestCa").finish_non_exhaustive()
    }
}

/// A server certificate (the leaf, then its issuer) and its private key, in PEM.
#[derive(Debug, Clone)]
pub struct TestCert {
    /// The chain, leaf first.
    pub chain_pem: String,
    /// The PKCS#8 private key of the leaf.
    pub key_pem: String,
}

impl TestCa {
    /// A new CA named "sockeye test CA" with a fresh ECDSA P-256 key.
    pub fn new() -> Self {
        Self::named("sockeye test CA")
    }

    /// A new CA with this common name and a fresh ECDSA P-256 key.
    pub fn named(common_name: &str) -> Self {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("ca params");
        params.distinguished_name = rcgen::DistinguishedName::new();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, common_name);
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params.key_usages = vec![
            rcgen::KeyUsagePurpose::KeyCertSign,
            rcgen::KeyUsagePurpose::CrlSign,
            rcgen::KeyUsagePurpose::DigitalSignature,
        ];
        let key = rcgen::KeyPair::generate().expect("ca key");
        let issuer = rcgen::CertifiedIssuer::self_signed(params, key).expect("self-signed ca");
        let pem = issuer.pem();
        Self { issuer, pem }
    }

    /// A server certificate for `names` (DNS names or IP literals), valid from 1975 to 4096.
    pub fn issue(&self, names: &[&str]) -> TestCert {
        self.issue_with(names, |_| {})
    }

    /// A server certificate for `names` with `edit` applied to its parameters (validity...).
    pub fn issue_with(
        &self,
        names: &[&str],
        edit: impl FnOnce(&mut rcgen::CertificateParams),
    ) -> TestCert {
        let names: Vec<String> = names.iter().map(|n| (*n).to_owned()).collect();
        let mut params = rcgen::CertificateParams::new(names).expect("leaf params");
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "sockeye test server");
        params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
        params.use_authority_key_identifier_extension = true;
        edit(&mut params);
        let key = rcgen::KeyPair::generate().expect("leaf key");
        let cert = params.signed_by(&key, &self.issuer).expect("sign leaf");
        TestCert {
            chain_pem: format!("{}{}", cert.pem(), self.pem),
            key_pem: key.serialize_pem(),
        }
    }

    /// A server certificate for `localhost` and `127.0.0.1`.
    pub fn localhost(&self) -> TestCert {
        self.issue(&["localhost", "127.0.0.1"])
    }

    /// Client settings trusting this CA (and the bundled roots).
    pub fn client_config(&self) -> WebSocketConfig {
        WebSocketConfig::default().tls_client(
            sockeye::tls::client_config(Some(self.pem.as_bytes())).expect("client config"),
        )
    }
}

/// A server on a free loopback port serving TLS with `cert` (rustls types are not re-exported
/// by sockeye, so the configuration goes straight into the server).
pub async fn tls_server(cert: &TestCert, config: WebSocketConfig) -> Server {
    let tls =
        sockeye::tls::server_config_from_pem(cert.chain_pem.as_bytes(), cert.key_pem.as_bytes())
            .expect("server config");
    Server::bind("127.0.0.1:0")
        .await
        .expect("bind")
        .config(config)
        .tls(tls)
}

/// An error and its chain of sources, joined by ": " (Display), then its Debug form after
/// " | ": what a test searches for the reason of a TLS failure.
pub fn error_chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    format!("{text} | {err:?}")
}

/// An echo handler for [`serve_in_background`]: echoes data messages until the stream ends.
pub async fn echo_handler(
    mut ws: WebSocketStream<sockeye::Transport<TcpStream>>,
    _request: sockeye::http::Request<()>,
) {
    while let Some(Ok(message)) = ws.next().await {
        if message.is_data() && ws.send(message).await.is_err() {
            break;
        }
    }
}

/// Sends `message` and returns the next data message received (pings are answered inside).
pub async fn round_trip<S: AsyncRead + AsyncWrite + Unpin>(
    ws: &mut WebSocketStream<S>,
    message: Message,
) -> Message {
    within("round trip", async {
        ws.send(message).await.expect("send");
        loop {
            match ws.next().await.expect("stream ended").expect("receive") {
                m if m.is_data() => return m,
                _ => {}
            }
        }
    })
    .await
}

/// Builds the example `name` of the `sockeye` package (with `features`, comma-separated, may be
/// empty) in the profile this test was built in, and returns the path of its binary.
///
/// Runs `cargo build --example`, so `cargo run --example NAME` is exactly what is tested.
pub fn example_binary(name: &str, features: &str) -> std::path::PathBuf {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let exe = std::env::current_exe().expect("test binary path");
    // target/<profile>/deps/<test binary>
    let profile_dir = exe
        .parent()
        .and_then(std::path::Path::parent)
        .expect("test binary lives in target/<profile>/deps");
    let release = profile_dir.file_name().is_some_and(|p| p == "release");
    let mut command = std::process::Command::new(cargo);
    command
        .args(["build", "--quiet", "-p", "sockeye", "--example", name])
        .current_dir(env!("CARGO_MANIFEST_DIR"));
    if !features.is_empty() {
        command.args(["--features", features]);
    }
    if release {
        command.arg("--release");
    }
    let status = command.status().expect("run cargo build --example");
    assert!(status.success(), "cargo build --example {name} failed");
    let path = profile_dir.join("examples").join(name);
    assert!(path.exists(), "{} missing after the build", path.display());
    path
}
