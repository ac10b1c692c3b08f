//! `sockeye bench --fanout URL`: a load generator for a broadcast server, one that relays every
//! message a client sends to every *other* client on the same path (`sockeye serve --mode
//! broadcast`, Bun's `ws.subscribe` + `ws.publish`, a Node `ws` broadcast loop).
//!
//! `--subscribers` connections open first (at most [`OPEN_CONCURRENCY`] handshakes at a time) and
//! settle for [`SETTLE`]; then `--publishers` sockeye clients send `--size`-byte binary messages
//! at `--rate` messages per second in total, on a fixed schedule (open loop), for `--warmup` +
//! `--duration` seconds. Every payload starts with the publisher's id, its sequence number and
//! the time the schedule meant to send it (nanoseconds since the run started, this process's
//! monotonic clock), padded with zeros.
//!
//! A subscriber is not a WebSocket stack: after its handshake it reads raw bytes (plain TCP into
//! one buffer shared by every subscriber, the runtime being single-threaded) and walks the
//! server's frames in place, so that one core can count about a million deliveries a second. It
//! still answers pings, answers and records a close frame, and rejects masked frames, reserved
//! bits and frames over [`MAX_FRAME`]. Per publisher it keeps a bitmap of the sequence numbers
//! received (bounded by the messages sent so far: a number not yet sent is an error), from which
//! come missed messages, duplicates and messages out of order.

use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::io;
use std::time::Duration;

use futures_util::StreamExt as _;
use hdrhistogram::Histogram;
use sockeye::{ClientStream, CloseCode, Message, WebSocketConfig, WsUrl};
use sockeye_proto::handshake::{ClientHandshake, ClientRequest, HandshakeConfig};
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _};
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::{latency_histogram, sleep_until, BenchArgs, MAX_LATENCY_US};
use crate::connect::Exit;
use crate::{chain, seconds};

/// Bytes at the start of every payload: publisher id (u32), sequence number (u64), scheduled
/// send time in nanoseconds since the start (u64), all little-endian. The smallest `--size`.
pub(super) const HEADER: usize = 20;

/// The largest frame payload a subscriber accepts, and so the largest `--size` with `--fanout`.
pub(super) const MAX_FRAME: usize = 64 << 10;

/// Subscribers' handshakes in progress at once (a burst of thousands would overflow the
/// server's accept backlog).
const OPEN_CONCURRENCY: usize = 256;

/// How long one subscriber or publisher may take to connect and finish its handshake.
const OPEN_TIMEOUT: Duration = Duration::from_secs(10);

/// The pause between the last subscriber opening and the first message: the server registers
/// subscriptions after (or while) answering the handshake.
const SETTLE: Duration = Duration::from_millis(500);

/// The read buffer shared by the plain-TCP subscribers.
const READ_BUFFER: usize = 64 << 10;

/// The read buffer of each `wss://` subscriber (TLS records are decrypted per connection).
const TLS_READ_BUFFER: usize = 16 << 10;

/// How long a subscriber waits for a pong or close it writes to be taken by the server.
const WRITE_TIMEOUT: Duration = Duration::from_secs(5);

/// The fixed mask of subscribers' frames (pongs and closes; a benchmark, not a browser).
const MASK: [u8; 4] = [0x5a, 0x17, 0xc3, 0x81];

/// State every subscriber and publisher shares (all run on one thread).
#[derive(Debug)]
struct Shared {
    start: Instant,
    /// Payloads scheduled at or after this many nanoseconds are measured.
    measure_from_ns: u64,
    /// The end of the warm-up.
    measure_from: Instant,
    size: usize,
    /// Per publisher: messages sent so far (so the next sequence number).
    sent: Vec<Cell<u64>>,
    /// Cancelled once every publisher has sent and flushed its last message.
    publishing_over: CancellationToken,
    /// Messages sent by all publishers; set when publishing is over.
    total_sent: Cell<u64>,
    /// Delivery latencies in microseconds, of every subscriber.
    latency: RefCell<Histogram<u64>>,
    read_buf: RefCell<Vec<u8>>,
}

/// What one subscriber measured.
#[derive(Debug, Default)]
struct Tally {
    /// Measured deliveries (distinct messages scheduled after the warm-up).
    delivered: u64,
    /// Distinct messages received, warm-up included.
    distinct: u64,
    /// Distinct messages received after the warm-up ended (whenever they were sent): the work
    /// the server did in the window its CPU time is measured over.
    received_in_window: u64,
    duplicates: u64,
    out_of_order: u64,
    /// Messages sent (warm-up included) that subscribers did not receive.
    missed: u64,
    /// Data and control frames parsed.
    frames: u64,
    /// Socket reads that returned data.
    reads: u64,
    /// Close codes of subscribers the server disconnected (1006: no close frame).
    disconnected: BTreeMap<u16, u64>,
    errors: BTreeMap<String, u64>,
    last_delivery: Option<Instant>,
}

impl Tally {
    fn error(&mut self, kind: impl Into<String>) {
        *self.errors.entry(kind.into()).or_default() += 1;
    }

    fn merge(&mut self, other: Self) {
        self.delivered += other.delivered;
        self.distinct += other.distinct;
        self.received_in_window += other.received_in_window;
        self.duplicates += other.duplicates;
        self.out_of_order += other.out_of_order;
        self.missed += other.missed;
        self.frames += other.frames;
        self.reads += other.reads;
        for (code, count) in other.disconnected {
            *self.disconnected.entry(code).or_default() += count;
        }
        for (kind, count) in other.errors {
            *self.errors.entry(kind).or_default() += count;
        }
        self.last_delivery = self.last_delivery.max(other.last_delivery);
    }
}

/// The payload of message `seq` of publisher `id`, scheduled at `ns`.
fn payload(id: u32, seq: u64, ns: u64, size: usize) -> Vec<u8> {
    let mut data = vec![0u8; size.max(HEADER)];
    data[..4].copy_from_slice(&id.to_le_bytes());
    data[4..12].copy_from_slice(&seq.to_le_bytes());
    data[12..20].copy_from_slice(&ns.to_le_bytes());
    data
}

/// A masked client frame (RFC 6455 §5.2), FIN set, payload at most 125 bytes (a control frame).
fn control_frame(opcode: u8, payload: &[u8], out: &mut Vec<u8>) {
    let payload = &payload[..payload.len().min(125)];
    out.push(0x80 | opcode);
    out.push(0x80 | payload.len() as u8);
    out.extend_from_slice(&MASK);
    out.extend(payload.iter().enumerate().map(|(i, b)| b ^ MASK[i % 4]));
}

/// The header length and payload length of the server frame at the start of `buf`; `None`
/// until the header is complete.
fn frame_extent(buf: &[u8]) -> Result<Option<(usize, usize)>, &'static str> {
    let Some(&b1) = buf.get(1) else {
        return Ok(None);
    };
    if b1 & 0x80 != 0 {
        return Err("masked frame from the server");
    }
    let (header, len) = match b1 & 0x7f {
        126 => match buf.get(2..4) {
            Some(b) => (4, u64::from(u16::from_be_bytes([b[0], b[1]]))),
            None => return Ok(None),
        },
        127 => match buf.get(2..10) {
            Some(b) => (10, u64::from_be_bytes(b.try_into().unwrap_or_default())),
            None => return Ok(None),
        },
        len => (2, u64::from(len)),
    };
    match usize::try_from(len) {
        Ok(len) if len <= MAX_FRAME => Ok(Some((header, len))),
        _ => Err("frame over 64 KiB"),
    }
}

/// Splits server bytes into frames, whatever the read boundaries; keeps at most one incomplete
/// frame (header and at most [`MAX_FRAME`] bytes of payload) between reads.
#[derive(Debug, Default)]
struct Frames {
    carry: Vec<u8>,
}

impl Frames {
    /// Calls `each(first byte, payload)` for every complete frame, until it returns false.
    fn feed(
        &mut self,
        mut data: &[u8],
        mut each: impl FnMut(u8, &[u8]) -> bool,
    ) -> Result<(), &'static str> {
        // First complete the frame carried over from the last read, byte by byte through its
        // header, then its payload at once.
        while !self.carry.is_empty() {
            match frame_extent(&self.carry)? {
                None => {
                    let Some((&byte, rest)) = data.split_first() else {
                        return Ok(());
                    };
                    self.carry.push(byte);
                    data = rest;
                }
                Some((header, len)) => {
                    let take = (header + len - self.carry.len()).min(data.len());
                    self.carry.extend_from_slice(&data[..take]);
                    data = &data[take..];
                    if self.carry.len() < header + len {
                        return Ok(());
                    }
                    let mut carry = std::mem::take(&mut self.carry);
                    let more = each(carry[0], &carry[header..]);
                    carry.clear();
                    self.carry = carry;
                    if !more {
                        return Ok(());
                    }
                }
            }
        }
        while let Some((header, len)) = frame_extent(data)? {
            if data.len() < header + len {
                break;
            }
            if !each(data[0], &data[header..header + len]) {
                return Ok(());
            }
            data = &data[header + len..];
        }
        self.carry.extend_from_slice(data);
        Ok(())
    }
}

/// One subscriber's bookkeeping.
#[derive(Debug)]
struct Subscriber<'a> {
    shared: &'a Shared,
    frames: Frames,
    /// Per publisher: a bit per sequence number received.
    seen: Vec<Vec<u64>>,
    /// Per publisher: the highest sequence number received, plus one.
    next: Vec<u64>,
    tally: Tally,
    /// Frames to write: pongs and the close reply.
    out: Vec<u8>,
    /// The close code the server sent.
    closed: Option<u16>,
}

impl<'a> Subscriber<'a> {
    fn new(shared: &'a Shared) -> Self {
        Self {
            shared,
            frames: Frames::default(),
            seen: vec![Vec::new(); shared.sent.len()],
            next: vec![0; shared.sent.len()],
            tally: Tally::default(),
            out: Vec::new(),
            closed: None,
        }
    }

    /// Takes the bytes of one read; false when the connection is over for this subscriber (a
    /// close frame or a framing error).
    fn feed(&mut self, data: &[u8], now: Instant) -> bool {
        self.tally.reads += 1;
        let now_ns =
            u64::try_from(now.duration_since(self.shared.start).as_nanos()).unwrap_or(u64::MAX);
        let mut frames = std::mem::take(&mut self.frames);
        let result = frames.feed(data, |first, payload| {
            self.frame(first, payload, now, now_ns)
        });
        self.frames = frames;
        match result {
            Ok(()) => self.closed.is_none(),
            Err(e) => {
                self.tally.error(e);
                false
            }
        }
    }

    /// One frame; false after a close frame.
    fn frame(&mut self, first: u8, payload: &[u8], now: Instant, now_ns: u64) -> bool {
        self.tally.frames += 1;
        if first & 0x70 != 0 {
            self.tally
                .error("frame with reserved bits set (no extension was offered)");
        }
        let fin = first & 0x80 != 0;
        match first & 0x0f {
            0x1 | 0x2 if fin => self.message(payload, now, now_ns),
            0x0..=0x2 => self.tally.error("fragmented message"),
            0x8 => {
                let code = match payload {
                    [a, b, ..] => u16::from_be_bytes([*a, *b]),
                    _ => CloseCode::NO_STATUS_RCVD.0,
                };
                self.closed = Some(code);
                // Echo the code (RFC 6455 §5.5.1); an empty close is answered with an empty one.
                let reply = if payload.len() >= 2 {
                    &payload[..2]
                } else {
                    &[]
                };
                control_frame(0x8, reply, &mut self.out);
                return false;
            }
            0x9 => control_frame(0xA, payload, &mut self.out),
            0xA => {}
            _ => self.tally.error("frame with an unknown opcode"),
        }
        true
    }

    /// One data message: checks it, records its delivery and latency.
    fn message(&mut self, payload: &[u8], now: Instant, now_ns: u64) {
        if payload.len() != self.shared.size {
            self.tally.error("message of another size than --size");
            return;
        }
        let field = |range: std::ops::Range<usize>| -> u64 {
            let mut bytes = [0u8; 8];
            bytes[..range.len()].copy_from_slice(&payload[range]);
            u64::from_le_bytes(bytes)
        };
        let (publisher, seq, sent_ns) = (field(0..4) as usize, field(4..12), field(12..20));
        let Some(sent) = self.shared.sent.get(publisher) else {
            self.tally.error("message from no publisher of this run");
            return;
        };
        if seq >= sent.get() {
            self.tally
                .error("message with a sequence number not sent yet");
            return;
        }
        let (word, bit) = ((seq / 64) as usize, 1u64 << (seq % 64));
        let seen = &mut self.seen[publisher];
        if seen.len() <= word {
            // Bounded by the messages sent, checked above.
            seen.resize(word + 1, 0);
        }
        if seen[word] & bit != 0 {
            self.tally.duplicates += 1;
            return;
        }
        seen[word] |= bit;
        self.tally.distinct += 1;
        if now >= self.shared.measure_from {
            self.tally.received_in_window += 1;
        }
        if seq + 1 < self.next[publisher] {
            self.tally.out_of_order += 1;
        }
        self.next[publisher] = self.next[publisher].max(seq + 1);
        if sent_ns >= self.shared.measure_from_ns {
            self.tally.delivered += 1;
            self.tally.last_delivery = Some(now);
            let micros = now_ns.saturating_sub(sent_ns) / 1000;
            self.shared
                .latency
                .borrow_mut()
                .saturating_record(micros.clamp(1, MAX_LATENCY_US));
        }
    }
}

/// A subscriber's connection after its handshake.
enum Conn {
    Plain(TcpStream),
    Tls(
        Box<tokio_rustls::client::TlsStream<TcpStream>>,
        Box<[u8; TLS_READ_BUFFER]>,
    ),
}

impl std::fmt::Debug for Conn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Plain(_) => "Conn::Plain",
            Self::Tls(..) => "Conn::Tls",
        })
    }
}

/// What one read gave.
enum Read {
    /// Bytes were fed; the subscriber goes on (true) or is done (false).
    Fed(bool),
    /// A spurious wake-up.
    Nothing,
    Eof,
}

impl Conn {
    /// Waits for bytes and feeds them to `sub` (the shared buffer is borrowed only between
    /// awaits).
    async fn read_into(&mut self, sub: &mut Subscriber<'_>) -> io::Result<Read> {
        match self {
            Self::Plain(tcp) => {
                tcp.readable().await?;
                let mut buf = sub.shared.read_buf.borrow_mut();
                match tcp.try_read(&mut buf[..]) {
                    Ok(0) => Ok(Read::Eof),
                    Ok(n) => Ok(Read::Fed(sub.feed(&buf[..n], Instant::now()))),
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(Read::Nothing),
                    Err(e) => Err(e),
                }
            }
            Self::Tls(tls, buf) => match tls.read(&mut buf[..]).await? {
                0 => Ok(Read::Eof),
                n => Ok(Read::Fed(sub.feed(&buf[..n], Instant::now()))),
            },
        }
    }

    async fn write_all(&mut self, data: &[u8]) -> io::Result<()> {
        match self {
            Self::Plain(tcp) => tcp.write_all(data).await,
            Self::Tls(tls, _) => {
                tls.write_all(data).await?;
                tls.flush().await
            }
        }
    }
}

/// Runs one subscriber until it has every message sent, the server closes, or the drain
/// deadline; returns its tally.
async fn subscribe(
    mut conn: Conn,
    leftover: Vec<u8>,
    shared: &Shared,
    drain_deadline: Instant,
) -> Tally {
    let mut sub = Subscriber::new(shared);
    let mut going = leftover.is_empty() || sub.feed(&leftover, Instant::now());
    let over = shared.publishing_over.cancelled();
    tokio::pin!(over);
    let drain = tokio::time::sleep_until(drain_deadline);
    tokio::pin!(drain);
    let mut over_seen = false;
    let mut disconnected = None;
    while going {
        if over_seen && sub.tally.distinct >= shared.total_sent.get() {
            break;
        }
        let read = tokio::select! {
            biased;
            () = &mut drain => break,
            () = &mut over, if !over_seen => {
                over_seen = true;
                continue;
            }
            read = conn.read_into(&mut sub) => read,
        };
        match read {
            Ok(Read::Fed(more)) => going = more,
            Ok(Read::Nothing) => {}
            Ok(Read::Eof) => {
                disconnected = Some(CloseCode::ABNORMAL.0);
                break;
            }
            Err(e) => {
                sub.tally.error(format!("read: {e}"));
                disconnected = Some(CloseCode::ABNORMAL.0);
                break;
            }
        }
        if !sub.out.is_empty() {
            let out = std::mem::take(&mut sub.out);
            match tokio::time::timeout(WRITE_TIMEOUT, conn.write_all(&out)).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => sub.tally.error(format!("write: {e}")),
                Err(_) => sub.tally.error("write: timed out"),
            }
        }
    }
    if !sub.out.is_empty() {
        // The reply to a close frame that came with the last bytes read.
        let _ = tokio::time::timeout(WRITE_TIMEOUT, conn.write_all(&sub.out)).await;
    }
    if let Some(code) = sub.closed {
        disconnected = Some(code);
    }
    if let Some(code) = disconnected {
        *sub.tally.disconnected.entry(code).or_default() += 1;
    } else {
        // Done (or out of time): close politely, without waiting for the answer.
        let mut close = Vec::new();
        control_frame(0x8, &CloseCode::NORMAL.0.to_be_bytes(), &mut close);
        let _ = tokio::time::timeout(WRITE_TIMEOUT, conn.write_all(&close)).await;
    }
    // `missed` is set once every subscriber is done: one disconnected early ends before the
    // total sent is known.
    sub.tally
}

/// Connects to `url` and performs the opening handshake by hand (no extension offered):
/// the connection and the bytes that came after the response head.
async fn open(
    url: &WsUrl,
    tls: Option<&tokio_rustls::TlsConnector>,
    nonce: [u8; 16],
) -> Result<(Conn, Vec<u8>), String> {
    let tcp = TcpStream::connect((url.host.as_str(), url.port))
        .await
        .map_err(|e| format!("connect: {e}"))?;
    tcp.set_nodelay(true).map_err(|e| format!("connect: {e}"))?;
    match tls {
        None => {
            let mut tcp = tcp;
            let leftover = handshake(&mut tcp, url, nonce).await?;
            Ok((Conn::Plain(tcp), leftover))
        }
        Some(connector) => {
            let name = tokio_rustls::rustls::pki_types::ServerName::try_from(url.host.clone())
                .map_err(|e| format!("tls: {e}"))?;
            let mut tls = connector
                .connect(name, tcp)
                .await
                .map_err(|e| format!("tls: {e}"))?;
            let leftover = handshake(&mut tls, url, nonce).await?;
            Ok((
                Conn::Tls(Box::new(tls), Box::new([0; TLS_READ_BUFFER])),
                leftover,
            ))
        }
    }
}

/// The client side of the opening handshake on `io`, through sockeye-proto's sans-I/O
/// [`ClientHandshake`]; returns the bytes read past the response head.
async fn handshake<S: AsyncRead + AsyncWrite + Unpin>(
    io: &mut S,
    url: &WsUrl,
    nonce: [u8; 16],
) -> Result<Vec<u8>, String> {
    let mut request = ClientRequest::new(url.host_header.clone(), url.resource.clone());
    if let Some(authorization) = &url.authorization {
        let value = sockeye::http::HeaderValue::from_str(authorization)
            .map_err(|e| format!("handshake: {e}"))?;
        request = request.header(sockeye::http::header::AUTHORIZATION, value);
    }
    let mut out = Vec::new();
    let mut client = ClientHandshake::new(&request, nonce, HandshakeConfig::default(), &mut out);
    io.write_all(&out)
        .await
        .map_err(|e| format!("handshake: {e}"))?;
    io.flush().await.map_err(|e| format!("handshake: {e}"))?;
    let mut buf = Vec::with_capacity(4096);
    let mut chunk = [0u8; 4096];
    loop {
        let n = io
            .read(&mut chunk)
            .await
            .map_err(|e| format!("handshake: {e}"))?;
        if n == 0 {
            return Err("handshake: connection closed before the response".to_owned());
        }
        buf.extend_from_slice(&chunk[..n]);
        // The head size is bounded by the handshake's limit (an error past it).
        match client.handle_response(&buf) {
            Ok(Some((_, used))) => return Ok(buf.split_off(used)),
            Ok(None) => {}
            Err(e) => return Err(format!("handshake: {e}")),
        }
    }
}

/// Opens a publisher: a sockeye client with the command's settings.
async fn open_publisher(url: &str, config: WebSocketConfig) -> Result<ClientStream, String> {
    match tokio::time::timeout(
        OPEN_TIMEOUT,
        sockeye::ClientBuilder::new(url).config(config).connect(),
    )
    .await
    {
        Ok(Ok((ws, _))) => Ok(ws),
        Ok(Err(e)) => Err(format!("publisher connect: {}", chain(&e))),
        Err(_) => Err("publisher connect: timed out".to_owned()),
    }
}

/// The schedule of every publisher.
#[derive(Debug)]
struct Schedule {
    /// Time between two messages of one publisher.
    interval: Duration,
    measure_from: Instant,
    /// No message is scheduled at or after this.
    end: Instant,
    drain_deadline: Instant,
}

/// What one publisher did.
#[derive(Debug, Default)]
struct Published {
    /// Messages scheduled after the warm-up and sent.
    measured: u64,
    errors: BTreeMap<String, u64>,
}

/// Sends publisher `id`'s messages on schedule, then flushes; gives the stream back to be
/// closed once the subscribers are done.
async fn publish(
    mut ws: ClientStream,
    id: u32,
    publishers: u32,
    shared: &Shared,
    schedule: &Schedule,
) -> (Option<ClientStream>, Published) {
    let mut report = Published::default();
    let fail = |report: &mut Published, kind: String| {
        *report.errors.entry(kind).or_default() += 1;
    };
    let high_water = ws.config().write_buffer_high_water;
    let sent = &shared.sent[id as usize];
    // The publishers take turns, so that the total rate is even.
    let mut slot = shared.start
        + schedule
            .interval
            .mul_f64(f64::from(id) / f64::from(publishers));
    while slot < schedule.end {
        let now = Instant::now();
        while slot <= now && slot < schedule.end && ws.buffered_amount() < high_water {
            let ns = u64::try_from((slot - shared.start).as_nanos()).unwrap_or(u64::MAX);
            let seq = sent.get();
            // Counted before it is queued: a subscriber checks numbers against it.
            sent.set(seq + 1);
            if let Err(e) = ws.try_send(Message::binary(payload(id, seq, ns, shared.size))) {
                sent.set(seq);
                fail(&mut report, format!("publisher send: {}", chain(&e)));
                return (None, report);
            }
            if slot >= schedule.measure_from {
                report.measured += 1;
            }
            slot += schedule.interval;
        }
        if slot >= schedule.end {
            break;
        }
        if ws.buffered_amount() >= high_water {
            // The server reads the publisher slower than the schedule: write what is queued
            // (the messages due meanwhile go out late and their latency shows it).
            match tokio::time::timeout_at(schedule.drain_deadline, ws.flush()).await {
                Ok(Ok(())) => continue,
                Ok(Err(e)) => fail(&mut report, format!("publisher: {}", chain(&e))),
                Err(_) => fail(&mut report, "publisher: write stalled".to_owned()),
            }
            return (None, report);
        }
        tokio::select! {
            // Drives the writes; messages of other publishers are read and dropped.
            item = ws.next() => match item {
                Some(Ok(_)) => {}
                Some(Err(e)) => {
                    fail(&mut report, format!("publisher: {}", chain(&e)));
                    return (None, report);
                }
                None => {
                    let code = ws.close_info().map_or(1006, |closed| closed.code.0);
                    fail(&mut report, format!("publisher: closed by the server with {code}"));
                    return (None, report);
                }
            },
            () = tokio::time::sleep_until(slot) => {}
        }
    }
    match tokio::time::timeout_at(schedule.drain_deadline, ws.flush()).await {
        Ok(Ok(())) => (Some(ws), report),
        Ok(Err(e)) => {
            fail(&mut report, format!("publisher: {}", chain(&e)));
            (None, report)
        }
        Err(_) => {
            fail(&mut report, "publisher: write stalled".to_owned());
            (None, report)
        }
    }
}

/// Keeps a closed publisher's other traffic flowing until the subscribers are done: reads (and
/// drops) what the server sends it, so that its queue toward this publisher never fills.
async fn idle_publisher(ws: &mut ClientStream, done: &CancellationToken) {
    loop {
        tokio::select! {
            item = ws.next() => if !matches!(item, Some(Ok(_))) { return; },
            () = done.cancelled() => return,
        }
    }
}

/// CPU seconds process `pid` has used, from `/proc/PID/stat` (Linux); `None` elsewhere or when
/// the process is gone.
fn process_cpu(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The fields after the command name, which is in parentheses and may hold spaces.
    let rest = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime: fields 14 and 15 of the line, 12 and 13 after the name, in clock ticks.
    let ticks: u64 = fields
        .get(11..13)?
        .iter()
        .map(|f| f.parse::<u64>().ok())
        .sum::<Option<u64>>()?;
    // Linux reports these fields in USER_HZ, which is 100 on every architecture it runs on.
    Some(ticks as f64 / 100.0)
}

/// CPU seconds this process has used (user and system).
fn own_cpu() -> f64 {
    #[cfg(unix)]
    {
        use nix::sys::resource::{getrusage, UsageWho};
        getrusage(UsageWho::RUSAGE_SELF).map_or(0.0, |usage| {
            let secs = |t: nix::sys::time::TimeVal| t.tv_sec() as f64 + t.tv_usec() as f64 / 1e6;
            secs(usage.user_time()) + secs(usage.system_time())
        })
    }
    #[cfg(not(unix))]
    0.0
}

/// Raises the soft limit on open files towards the hard one when `needed` descriptors would not
/// fit.
#[cfg(unix)]
fn raise_fd_limit(needed: u64) {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    if let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE) {
        if soft < needed {
            let _ = setrlimit(Resource::RLIMIT_NOFILE, needed.min(hard), hard);
        }
    }
}

#[cfg(not(unix))]
fn raise_fd_limit(_needed: u64) {}

/// Runs `sockeye bench --fanout` and prints its report.
///
/// # Errors
///
/// [`Exit`] 2 for bad usage; [`Exit`] 1 (after the report) when a subscriber or publisher
/// failed, a message was missed, duplicated or out of order, or a subscriber was disconnected.
pub(super) async fn run(args: &BenchArgs, config: WebSocketConfig) -> anyhow::Result<()> {
    let usage = |message: &str| -> anyhow::Result<()> {
        eprintln!("sockeye: {message}");
        Err(Exit(2).into())
    };
    let url = match WsUrl::parse(&args.url) {
        Ok(url) => url,
        Err(e) => return usage(&format!("invalid url {:?}: {e}", args.url)),
    };
    let size = args.size.unwrap_or(super::FANOUT_SIZE);
    if !(HEADER..=MAX_FRAME).contains(&size) {
        return usage(&format!(
            "--size with --fanout: {HEADER} to {MAX_FRAME} bytes"
        ));
    }
    if args.rate <= 0.0 {
        return usage("--fanout needs --rate (messages per second, all publishers together)");
    }
    if args.limits.deflate {
        return usage("--fanout does not use --deflate (subscribers read frames uncompressed)");
    }
    let tls = if url.tls {
        let pem = match &args.ca.ca {
            Some(path) => match std::fs::read(path) {
                Ok(pem) => Some(pem),
                Err(e) => return usage(&format!("cannot read {}: {e}", path.display())),
            },
            None => None,
        };
        match sockeye::tls::client_config(pem.as_deref()) {
            Ok(tls) => Some(tokio_rustls::TlsConnector::from(tls)),
            Err(e) => return usage(&format!("cannot use the CA file: {}", chain(&e))),
        }
    } else {
        None
    };
    let subscribers = args.subscribers as usize;
    let publishers = args.publishers;
    raise_fd_limit(subscribers as u64 + u64::from(publishers) + 64);

    eprintln!(
        "sockeye bench --fanout: opening {subscribers} subscribers to {}",
        args.url
    );
    let seed = std::process::id();
    let attempts: Vec<Result<(Conn, Vec<u8>), String>> = futures_util::stream::iter(0..subscribers)
        .map(|index| {
            let mut nonce = [0u8; 16];
            nonce[..8].copy_from_slice(&(index as u64).to_le_bytes());
            nonce[8..12].copy_from_slice(&seed.to_le_bytes());
            let (url, tls) = (&url, tls.as_ref());
            async move {
                match tokio::time::timeout(OPEN_TIMEOUT, open(url, tls, nonce)).await {
                    Ok(result) => result,
                    Err(_) => Err("subscriber open: timed out".to_owned()),
                }
            }
        })
        .buffer_unordered(OPEN_CONCURRENCY)
        .collect()
        .await;
    let mut total = Tally::default();
    let mut conns = Vec::with_capacity(subscribers);
    for attempt in attempts {
        match attempt {
            Ok(conn) => conns.push(conn),
            Err(e) => total.error(e),
        }
    }
    let opened = conns.len();
    tokio::time::sleep(SETTLE).await;

    let mut streams = Vec::new();
    for _ in 0..publishers {
        match open_publisher(&args.url, config.clone()).await {
            Ok(ws) => streams.push(ws),
            Err(e) => total.error(e),
        }
    }
    if opened == 0 || streams.len() != publishers as usize {
        let report = Report::new(args, size, opened, 0, total, latency_histogram(), None);
        report.print(args.json);
        return Err(Exit(1).into());
    }

    let duration = seconds(args.duration.unwrap_or(10.0)).unwrap_or(Duration::from_secs(10));
    let warmup = seconds(args.warmup).unwrap_or_default();
    let drain_timeout = seconds(args.drain_timeout).unwrap_or_default();
    let start = Instant::now();
    let measure_from = start + warmup;
    let end = measure_from + duration;
    let schedule = Schedule {
        interval: Duration::from_secs_f64(f64::from(publishers) / args.rate),
        measure_from,
        end,
        drain_deadline: end + drain_timeout,
    };
    let shared = Shared {
        start,
        measure_from_ns: u64::try_from(warmup.as_nanos()).unwrap_or(u64::MAX),
        measure_from,
        size,
        sent: (0..publishers).map(|_| Cell::new(0)).collect(),
        publishing_over: CancellationToken::new(),
        total_sent: Cell::new(0),
        latency: RefCell::new(latency_histogram()),
        read_buf: RefCell::new(vec![0; READ_BUFFER]),
    };
    eprintln!(
        "sockeye bench --fanout: {opened} subscribers open, {publishers} publisher(s) sending {} msg/s \
         of {size} B for {:.1} s{}",
        args.rate,
        duration.as_secs_f64(),
        if warmup.is_zero() {
            String::new()
        } else {
            format!(" after {:.1} s of warm-up", warmup.as_secs_f64())
        }
    );

    let subscribers_done = CancellationToken::new();
    // (server, client) CPU seconds at the end of the warm-up and when the subscribers are done.
    let cpu_start = Cell::new(None);
    let cpu_end = Cell::new((None, 0.0));
    let window_end = Cell::new(measure_from);
    let sample = || (args.pid.and_then(process_cpu), own_cpu());
    let publishing = async {
        let (shared, schedule) = (&shared, &schedule);
        let results = futures_util::future::join_all(streams.into_iter().zip(0..).map(
            |(ws, id)| async move {
                let published = publish(ws, id, publishers, shared, schedule).await;
                if published.0.is_none() {
                    // A publisher that failed stops sending, but publishing lasts its
                    // schedule: subscribers keep watching their connections until then.
                    tokio::time::sleep_until(schedule.end).await;
                }
                published
            },
        ))
        .await;
        shared
            .total_sent
            .set(shared.sent.iter().map(Cell::get).sum());
        shared.publishing_over.cancel();
        // Until the subscribers are done, the publishers stay connected (and read).
        let mut streams = Vec::new();
        let mut measured = 0;
        let mut errors = BTreeMap::new();
        for (ws, published) in results {
            measured += published.measured;
            for (kind, count) in published.errors {
                *errors.entry(kind).or_insert(0) += count;
            }
            streams.extend(ws);
        }
        futures_util::future::join_all(
            streams
                .iter_mut()
                .map(|ws| idle_publisher(ws, &subscribers_done)),
        )
        .await;
        for mut ws in streams {
            let _ = tokio::time::timeout(WRITE_TIMEOUT, ws.close(CloseCode::NORMAL, "")).await;
        }
        (measured, errors)
    };
    let receiving = async {
        let tallies =
            futures_util::future::join_all(conns.into_iter().map(|(conn, leftover)| {
                subscribe(conn, leftover, &shared, schedule.drain_deadline)
            }))
            .await;
        // Subscribers all gone during the warm-up: the window is empty, not negative.
        tokio::time::sleep_until(measure_from).await;
        let end = sample();
        if cpu_start.get().is_none() {
            cpu_start.set(Some(end));
        }
        cpu_end.set(end);
        window_end.set(Instant::now());
        subscribers_done.cancel();
        tallies
    };
    let sampler = async {
        sleep_until(Some(measure_from)).await;
        if cpu_start.get().is_none() {
            cpu_start.set(Some(sample()));
        }
    };
    let ((measured, publish_errors), tallies, ()) = tokio::join!(publishing, receiving, sampler);
    for mut tally in tallies {
        tally.missed = shared.total_sent.get().saturating_sub(tally.distinct);
        total.merge(tally);
    }
    for (kind, count) in publish_errors {
        *total.errors.entry(kind).or_default() += count;
    }
    let ((server_before, client_before), (server_after, client_after)) =
        (cpu_start.get().unwrap_or_default(), cpu_end.get());
    let server_cpu = server_before.zip(server_after).map(|(b, a)| a - b);
    let client_cpu = client_after - client_before;
    // The measured window: the whole --duration, or until the last measured delivery if later.
    let elapsed = total
        .last_delivery
        .map_or(duration, |last| {
            last.saturating_duration_since(measure_from)
        })
        .max(duration);
    let latency = shared.latency.into_inner();
    let report = Report::new(args, size, opened, measured, total, latency, server_cpu)
        .elapsed(elapsed)
        .client_cpu(
            client_cpu,
            window_end.get().saturating_duration_since(measure_from),
        );
    report.print(args.json);
    if report.clean() {
        Ok(())
    } else {
        Err(Exit(1).into())
    }
}

/// The figures of a run, as printed.
#[derive(Debug)]
struct Report<'a> {
    args: &'a BenchArgs,
    size: usize,
    opened: usize,
    /// Messages sent after the warm-up (by all publishers).
    measured_sent: u64,
    tally: Tally,
    latency: Histogram<u64>,
    server_cpu: Option<f64>,
    /// This process's CPU seconds over the same window.
    client_cpu: f64,
    /// The window the CPU times cover: from the end of the warm-up until the subscribers are
    /// done.
    cpu_window: Duration,
    elapsed: Duration,
}

impl<'a> Report<'a> {
    fn new(
        args: &'a BenchArgs,
        size: usize,
        opened: usize,
        measured_sent: u64,
        tally: Tally,
        latency: Histogram<u64>,
        server_cpu: Option<f64>,
    ) -> Self {
        Self {
            args,
            size,
            opened,
            measured_sent,
            tally,
            latency,
            server_cpu,
            client_cpu: 0.0,
            cpu_window: Duration::ZERO,
            elapsed: Duration::ZERO,
        }
    }

    fn client_cpu(mut self, secs: f64, window: Duration) -> Self {
        self.client_cpu = secs;
        self.cpu_window = window;
        self
    }

    fn elapsed(mut self, elapsed: Duration) -> Self {
        self.elapsed = elapsed;
        self
    }

    /// No error, nothing missed, duplicated or out of order, nobody disconnected.
    fn clean(&self) -> bool {
        let t = &self.tally;
        t.errors.is_empty()
            && t.missed == 0
            && t.duplicates == 0
            && t.out_of_order == 0
            && t.disconnected.is_empty()
            && self.opened == self.args.subscribers as usize
    }

    fn print(&self, json: bool) {
        let t = &self.tally;
        let secs = self.elapsed.as_secs_f64();
        let per_sec = |n: u64| if secs > 0.0 { n as f64 / secs } else { 0.0 };
        let offered = self.args.rate * self.opened as f64;
        let achieved = per_sec(t.delivered);
        let quantile = |q: f64| {
            if self.latency.is_empty() {
                0
            } else {
                self.latency.value_at_quantile(q)
            }
        };
        let max = if self.latency.is_empty() {
            0
        } else {
            self.latency.max()
        };
        let per_read = if t.reads > 0 {
            t.frames as f64 / t.reads as f64
        } else {
            0.0
        };
        let disconnected: u64 = t.disconnected.values().sum();
        let per_cpu = self
            .server_cpu
            .filter(|cpu| *cpu > 0.0)
            .map(|cpu| t.received_in_window as f64 / cpu);
        let failed = self.args.subscribers as usize - self.opened;
        if json {
            let value = serde_json::json!({
                "url": self.args.url,
                "subscribers": {
                    "requested": self.args.subscribers, "opened": self.opened, "failed": failed,
                },
                "publishers": self.args.publishers,
                "size": self.size,
                "rate": self.args.rate,
                "messages_sent": self.measured_sent,
                "expected_deliveries": self.measured_sent * self.opened as u64,
                "deliveries": t.delivered,
                "elapsed_secs": secs,
                "offered_deliveries_per_sec": offered,
                "achieved_deliveries_per_sec": achieved,
                "missed": t.missed,
                "duplicates": t.duplicates,
                "out_of_order": t.out_of_order,
                "disconnected": disconnected,
                "close_codes": t.disconnected.iter()
                    .map(|(code, n)| (code.to_string(), *n))
                    .collect::<BTreeMap<_, _>>(),
                "latency_us": {
                    "p50": quantile(0.5), "p90": quantile(0.9), "p99": quantile(0.99),
                    "p99_9": quantile(0.999), "max": max,
                },
                "reads": t.reads,
                "frames": t.frames,
                "messages_per_read": per_read,
                "server_cpu_secs": self.server_cpu,
                "received_in_window": t.received_in_window,
                "client_cpu_secs": self.client_cpu,
                "cpu_window_secs": self.cpu_window.as_secs_f64(),
                "deliveries_per_server_cpu_sec": per_cpu,
                "errors": t.errors,
            });
            println!("{value}");
            return;
        }
        let ms = |micros: u64| micros as f64 / 1000.0;
        println!(
            "sockeye bench --fanout {}: {} subscribers ({} opened, {failed} failed), {} publisher(s), \
             {} B messages at {} msg/s",
            self.args.url, self.args.subscribers, self.opened, self.args.publishers, self.size,
            self.args.rate
        );
        println!(
            "deliveries: {} of {} expected in {secs:.2} s: {achieved:.0}/s achieved, {offered:.0}/s offered",
            t.delivered,
            self.measured_sent * self.opened as u64
        );
        println!(
            "missed:     {}, duplicates {}, out of order {}, disconnected {disconnected}{}",
            t.missed,
            t.duplicates,
            t.out_of_order,
            if t.disconnected.is_empty() {
                String::new()
            } else {
                format!(
                    " (close codes: {})",
                    t.disconnected
                        .iter()
                        .map(|(code, n)| format!("{n} × {code}"))
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            }
        );
        println!(
            "latency:    p50 {:.3} ms, p90 {:.3} ms, p99 {:.3} ms, p99.9 {:.3} ms, max {:.3} ms",
            ms(quantile(0.5)),
            ms(quantile(0.9)),
            ms(quantile(0.99)),
            ms(quantile(0.999)),
            ms(max)
        );
        println!("reads:      {} ({per_read:.1} messages per read)", t.reads);
        match (self.server_cpu, per_cpu) {
            (Some(cpu), Some(per_cpu)) => println!(
                "server CPU: {cpu:.2} s ({:.0} % of one core): {per_cpu:.0} deliveries per CPU-second",
                100.0 * cpu / self.cpu_window.as_secs_f64().max(1e-9)
            ),
            (Some(cpu), None) => println!("server CPU: {cpu:.2} s"),
            _ => {}
        }
        println!(
            "client CPU: {:.2} s in the {:.2} s from the end of the warm-up to the last subscriber done",
            self.client_cpu,
            self.cpu_window.as_secs_f64()
        );
        super::print_errors(&t.errors);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A server frame (unmasked), FIN set.
    fn server_frame(opcode: u8, payload: &[u8]) -> Vec<u8> {
        let mut out = vec![0x80 | opcode];
        match payload.len() {
            n if n < 126 => out.push(n as u8),
            n => {
                out.push(126);
                out.extend_from_slice(&(n as u16).to_be_bytes());
            }
        }
        out.extend_from_slice(payload);
        out
    }

    #[test]
    fn frames_are_found_whatever_the_read_boundaries() {
        let mut stream = Vec::new();
        let sizes = [0usize, 1, 125, 126, 300, 20, 65_535];
        for size in sizes {
            stream.extend(server_frame(0x2, &vec![7; size]));
        }
        for chunk in [1, 2, 3, 5, 127, 1000, stream.len()] {
            let mut frames = Frames::default();
            let mut got = Vec::new();
            for piece in stream.chunks(chunk) {
                frames
                    .feed(piece, |first, payload| {
                        assert_eq!(first, 0x82);
                        got.push(payload.len());
                        true
                    })
                    .expect("valid frames");
            }
            assert_eq!(got, sizes, "chunks of {chunk}");
            assert!(frames.carry.is_empty());
        }
    }

    #[test]
    fn masked_and_oversized_frames_are_errors() {
        let mut frames = Frames::default();
        assert!(frames
            .feed(&[0x82, 0x81, 1, 2, 3, 4, 5], |_, _| true)
            .is_err());
        let mut frames = Frames::default();
        let mut huge = vec![0x82, 127];
        huge.extend_from_slice(&(1u64 << 40).to_be_bytes());
        assert!(frames.feed(&huge, |_, _| true).is_err());
    }

    fn shared(publishers: usize, size: usize) -> Shared {
        Shared {
            start: Instant::now(),
            measure_from_ns: 0,
            measure_from: Instant::now(),
            size,
            sent: (0..publishers).map(|_| Cell::new(0)).collect(),
            publishing_over: CancellationToken::new(),
            total_sent: Cell::new(0),
            latency: RefCell::new(latency_histogram()),
            read_buf: RefCell::new(Vec::new()),
        }
    }

    #[tokio::test]
    async fn gaps_duplicates_and_disorder_are_counted() {
        let shared = shared(2, 32);
        shared.sent[0].set(10);
        shared.sent[1].set(3);
        let mut sub = Subscriber::new(&shared);
        let mut stream = Vec::new();
        for (id, seq) in [
            (0, 0),
            (0, 1),
            (0, 3),
            (0, 2),
            (0, 3),
            (1, 0),
            (1, 2),
            (0, 9),
        ] {
            stream.extend(server_frame(0x2, &payload(id, seq, 0, 32)));
        }
        // A ping in between is answered with a pong carrying its payload.
        stream.extend(server_frame(0x9, b"hi"));
        assert!(sub.feed(&stream, Instant::now()));
        assert_eq!(sub.tally.distinct, 7);
        assert_eq!(sub.tally.delivered, 7);
        assert_eq!(sub.tally.duplicates, 1);
        assert_eq!(sub.tally.out_of_order, 1);
        assert_eq!(shared.latency.borrow().len(), 7);
        assert!(sub.tally.errors.is_empty(), "{:?}", sub.tally.errors);
        let mut pong = Vec::new();
        control_frame(0xA, b"hi", &mut pong);
        assert_eq!(sub.out, pong);
        // A number not sent yet, a wrong size, a publisher that does not exist: errors.
        let mut bad = server_frame(0x2, &payload(0, 10, 0, 32));
        bad.extend(server_frame(0x2, &payload(0, 1, 0, 31)));
        bad.extend(server_frame(0x2, &payload(2, 0, 0, 32)));
        assert!(sub.feed(&bad, Instant::now()));
        assert_eq!(sub.tally.errors.values().sum::<u64>(), 3);
        assert_eq!(sub.tally.distinct, 7);
        // A close frame ends the subscriber and is answered with its code.
        assert!(!sub.feed(&server_frame(0x8, &1001u16.to_be_bytes()), Instant::now()));
        assert_eq!(sub.closed, Some(1001));
    }

    #[test]
    fn payload_carries_id_sequence_and_time() {
        let data = payload(3, 0x0102_0304_0506_0708, 42, 100);
        assert_eq!(data.len(), 100);
        assert_eq!(&data[..4], &3u32.to_le_bytes());
        assert_eq!(&data[4..12], &0x0102_0304_0506_0708u64.to_le_bytes());
        assert_eq!(&data[12..20], &42u64.to_le_bytes());
        assert!(data[20..].iter().all(|&b| b == 0));
    }
}
