//! Harness and independent oracles shared by the fuzz targets (STYLE.md §10).
//!
//! Nothing here trusts `sockeye-proto` to check itself: the wire parser is written from
//! RFC 6455 §5.2 directly (not with `FrameHeader`), close codes are checked against the RFC's
//! ranges written out here, compressed payloads are inflated with flate2 rather than the
//! crate's `Inflater`, and UTF-8 is checked with `std::str::from_utf8`.

use flate2::{Decompress, FlushDecompress, Status};
use sockeye_proto::deflate::{DeflateConfig, DeflateParams};
use sockeye_proto::{
    CloseCode, Config, Connection, DataKind, Event, Initiator, Message, Role, SendError, State,
    Transmit,
};

/// RFC 6455 §5.5: control frames carry at most 125 bytes.
pub const MAX_CONTROL: usize = 125;
/// RFC 6455 §1.3.
pub const GUID: &str = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

/// Close codes that may appear in a close frame (RFC 6455 §7.4.1–§7.4.2 and the IANA
/// registry), written out independently of `CloseCode::is_valid_on_wire`.
pub fn code_on_wire(code: u16) -> bool {
    matches!(code, 1000 | 1001 | 1002 | 1003 | 1007..=1014 | 3000..=4999)
}

/// `base64(sha1(key + GUID))`, computed without the crate (RFC 6455 §4.2.2).
pub fn expected_accept(key: &[u8]) -> String {
    use base64::Engine as _;
    use sha1::Digest as _;
    let mut sha = sha1::Sha1::new();
    sha.update(key);
    sha.update(GUID.as_bytes());
    base64::engine::general_purpose::STANDARD.encode(sha.finalize())
}

/// Whether a comma-separated header value holds `token` (case-insensitive, RFC 7230 §7).
pub fn has_token(value: &[u8], token: &str) -> bool {
    value.split(|&b| b == b',').any(|item| {
        let item = std::str::from_utf8(item)
            .unwrap_or("")
            .trim_matches([' ', '\t']);
        item.eq_ignore_ascii_case(token)
    })
}

/// A few prefix lengths below `used` (all of them for short heads): a parser that accepted
/// `used` bytes must ask for more on each of them.
pub fn prefix_lengths(used: usize) -> Vec<usize> {
    if used <= 64 {
        (0..used).collect()
    } else {
        let mut v: Vec<usize> = (0..16).collect();
        v.extend([used / 4, used / 2, used - 4, used - 3, used - 2, used - 1]);
        v
    }
}

// ---------------------------------------------------------------------------------------------
// Reading input
// ---------------------------------------------------------------------------------------------

/// Takes bytes off the front of the fuzz input; runs out into zeros.
#[derive(Debug)]
pub struct Input<'a> {
    data: &'a [u8],
}

impl<'a> Input<'a> {
    /// Wraps `data`.
    pub fn new(data: &'a [u8]) -> Self {
        Self { data }
    }

    /// The next byte, 0 once the input is used up.
    pub fn byte(&mut self) -> u8 {
        match self.data.split_first() {
            Some((&b, rest)) => {
                self.data = rest;
                b
            }
            None => 0,
        }
    }

    /// Up to `n` bytes.
    pub fn take(&mut self, n: usize) -> &'a [u8] {
        let (head, rest) = self.data.split_at(n.min(self.data.len()));
        self.data = rest;
        head
    }

    /// Everything left.
    pub fn rest(&mut self) -> &'a [u8] {
        std::mem::take(&mut self.data)
    }

    /// Whether nothing is left.
    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }
}

/// Chunk size from the low five bits of a script byte: 1–24 bytes, then 32 … 65536, then all.
pub fn chunk_size(b: u8) -> usize {
    match b & 0x1F {
        s @ 0..=23 => usize::from(s) + 1,
        24 => 32,
        25 => 64,
        26 => 128,
        27 => 256,
        28 => 1024,
        29 => 4096,
        30 => 65536,
        _ => usize::MAX,
    }
}

// ---------------------------------------------------------------------------------------------
// The wire: an independent frame parser (RFC 6455 §5.2) and checker
// ---------------------------------------------------------------------------------------------

/// One frame as read from a connection's output, payload unmasked.
#[derive(Debug, Clone)]
pub struct WireFrame {
    /// FIN.
    pub fin: bool,
    /// RSV1..RSV3.
    pub rsv: [bool; 3],
    /// Opcode, 0–15.
    pub opcode: u8,
    /// Unmasked payload.
    pub payload: Vec<u8>,
}

/// Parses the complete output of a connection of role `sender`. Every byte must belong to a
/// whole, well-formed frame: minimal length encoding, the 64-bit length's high bit clear, masked
/// exactly when a client sends.
pub fn parse_wire(mut bytes: &[u8], sender: Role) -> Result<Vec<WireFrame>, String> {
    let mut frames = Vec::new();
    while !bytes.is_empty() {
        let at = frames.len();
        if bytes.len() < 2 {
            return Err(format!("frame {at}: truncated header"));
        }
        let (b0, b1) = (bytes[0], bytes[1]);
        let mut pos = 2;
        let len = match b1 & 0x7F {
            126 => {
                let Some(b) = bytes.get(2..4) else {
                    return Err(format!("frame {at}: truncated 16-bit length"));
                };
                pos = 4;
                let len = u64::from(b[0]) << 8 | u64::from(b[1]);
                if len < 126 {
                    return Err(format!("frame {at}: non-minimal 16-bit length {len}"));
                }
                len
            }
            127 => {
                let Some(b) = bytes.get(2..10) else {
                    return Err(format!("frame {at}: truncated 64-bit length"));
                };
                pos = 10;
                let len = b.iter().fold(0u64, |acc, &x| acc << 8 | u64::from(x));
                if len >> 63 != 0 {
                    return Err(format!("frame {at}: 64-bit length with the high bit set"));
                }
                if len < 65536 {
                    return Err(format!("frame {at}: non-minimal 64-bit length {len}"));
                }
                len
            }
            short => u64::from(short),
        };
        let masked = b1 & 0x80 != 0;
        match (sender, masked) {
            (Role::Client, false) => return Err(format!("frame {at}: client frame not masked")),
            (Role::Server, true) => return Err(format!("frame {at}: server frame masked")),
            _ => {}
        }
        let key = if masked {
            let Some(k) = bytes.get(pos..pos + 4) else {
                return Err(format!("frame {at}: truncated masking key"));
            };
            pos += 4;
            Some([k[0], k[1], k[2], k[3]])
        } else {
            None
        };
        let len = usize::try_from(len).map_err(|_| format!("frame {at}: length {len}"))?;
        if bytes.len() - pos < len {
            return Err(format!(
                "frame {at}: truncated payload ({} of {len} bytes)",
                bytes.len() - pos
            ));
        }
        let mut payload = bytes[pos..pos + len].to_vec();
        if let Some(k) = key {
            // §5.3, four bytes at a time (payload byte j ^ key[j mod 4]).
            let mut words = payload.chunks_exact_mut(4);
            for w in &mut words {
                w[0] ^= k[0];
                w[1] ^= k[1];
                w[2] ^= k[2];
                w[3] ^= k[3];
            }
            for (b, k) in words.into_remainder().iter_mut().zip(k) {
                *b ^= k;
            }
        }
        frames.push(WireFrame {
            fin: b0 & 0x80 != 0,
            rsv: [b0 & 0x40 != 0, b0 & 0x20 != 0, b0 & 0x10 != 0],
            opcode: b0 & 0x0F,
            payload,
        });
        bytes = &bytes[pos + len..];
    }
    Ok(frames)
}

/// A data message reassembled from the wire (or sent by the application).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DataMessage {
    /// Text (opcode 1) rather than binary.
    pub text: bool,
    /// The payload, decompressed.
    pub payload: Vec<u8>,
}

/// What a connection's output amounts to, once checked frame by frame.
#[derive(Debug, Default)]
pub struct WireSummary {
    /// Complete data messages, in order.
    pub messages: Vec<DataMessage>,
    /// The data message still open at the end (FIN not seen), payload not decompressed.
    pub partial: Option<DataMessage>,
    /// Ping payloads sent.
    pub pings: Vec<Vec<u8>>,
    /// Pong payloads sent.
    pub pongs: Vec<Vec<u8>>,
    /// The close frame's code (`Some(None)`: empty close frame).
    pub close: Option<Option<u16>>,
}

/// Checks a connection's output as its peer would (RFC 6455 §5, RFC 7692 §6):
/// reserved bits, opcodes, control frame rules, close frame bodies, fragmentation order,
/// nothing after a close frame, text that is UTF-8. Compressed messages are inflated with
/// flate2 (window 15, context kept, which also reads a sender that resets its context).
pub fn check_wire(bytes: &[u8], sender: Role, deflate: bool) -> Result<WireSummary, String> {
    let frames = parse_wire(bytes, sender)?;
    let mut summary = WireSummary::default();
    let mut inflater = Decompress::new(false);
    // (text, compressed, payload) of the message being sent.
    let mut open: Option<(bool, bool, Vec<u8>)> = None;
    for (i, f) in frames.iter().enumerate() {
        if summary.close.is_some() {
            return Err(format!(
                "frame {i} (opcode {}) after the close frame",
                f.opcode
            ));
        }
        if f.rsv[1] || f.rsv[2] {
            return Err(format!("frame {i}: RSV2/RSV3 set"));
        }
        if f.rsv[0] && !(deflate && matches!(f.opcode, 1 | 2)) {
            return Err(format!(
                "frame {i}: RSV1 on opcode {} (deflate {deflate})",
                f.opcode
            ));
        }
        match f.opcode {
            8..=10 => {
                if f.payload.len() > MAX_CONTROL {
                    return Err(format!("frame {i}: control payload {}", f.payload.len()));
                }
                if !f.fin {
                    return Err(format!("frame {i}: fragmented control frame"));
                }
                match f.opcode {
                    8 => {
                        summary.close = Some(
                            check_close_body(&f.payload).map_err(|e| format!("frame {i}: {e}"))?,
                        )
                    }
                    9 => summary.pings.push(f.payload.clone()),
                    _ => summary.pongs.push(f.payload.clone()),
                }
            }
            0 => {
                let Some((_, _, buf)) = open.as_mut() else {
                    return Err(format!("frame {i}: continuation without a message"));
                };
                buf.extend_from_slice(&f.payload);
            }
            1 | 2 => {
                if open.is_some() {
                    return Err(format!("frame {i}: new message inside a fragmented one"));
                }
                open = Some((f.opcode == 1, f.rsv[0], f.payload.clone()));
            }
            op => return Err(format!("frame {i}: reserved opcode {op}")),
        }
        if f.opcode & 0x8 == 0 && f.fin {
            let (text, compressed, raw) = open.take().unwrap_or_default();
            let payload = if compressed {
                inflate_message(&mut inflater, &raw).map_err(|e| format!("frame {i}: {e}"))?
            } else {
                raw
            };
            if text && std::str::from_utf8(&payload).is_err() {
                return Err(format!("frame {i}: text message is not UTF-8"));
            }
            summary.messages.push(DataMessage { text, payload });
        }
    }
    summary.partial = open.map(|(text, _, payload)| DataMessage { text, payload });
    Ok(summary)
}

/// A close frame body (§5.5.1): empty, or a sendable code and a UTF-8 reason of ≤ 123 bytes.
fn check_close_body(payload: &[u8]) -> Result<Option<u16>, String> {
    match payload {
        [] => Ok(None),
        [_] => Err("one-byte close body".into()),
        [hi, lo, reason @ ..] => {
            let code = u16::from_be_bytes([*hi, *lo]);
            if !code_on_wire(code) {
                return Err(format!("close code {code} may not be sent"));
            }
            if std::str::from_utf8(reason).is_err() {
                return Err("close reason is not UTF-8".into());
            }
            Ok(Some(code))
        }
    }
}

/// Inflates one permessage-deflate message (RFC 7692 §7.2.2: append 00 00 ff ff, inflate).
pub fn inflate_message(d: &mut Decompress, raw: &[u8]) -> Result<Vec<u8>, String> {
    let mut input = raw.to_vec();
    input.extend_from_slice(&[0x00, 0x00, 0xFF, 0xFF]);
    let mut out: Vec<u8> = Vec::with_capacity(raw.len() * 4 + 256);
    let mut pos = 0;
    loop {
        if out.capacity() - out.len() < 256 {
            out.reserve(out.capacity().max(4096));
        }
        let (in0, out0) = (d.total_in(), d.total_out());
        let status = d
            .decompress_vec(&input[pos..], &mut out, FlushDecompress::Sync)
            .map_err(|e| format!("compressed message does not inflate: {e}"))?;
        let consumed = (d.total_in() - in0) as usize;
        let produced = (d.total_out() - out0) as usize;
        pos += consumed;
        if status == Status::StreamEnd {
            return Err("compressed message has a final (BFINAL) block".into());
        }
        if pos == input.len() && out.len() < out.capacity() {
            return Ok(out);
        }
        if consumed == 0 && produced == 0 {
            return Err("inflate made no progress".into());
        }
        if out.len() > 64 << 20 {
            return Err("inflated message over 64 MiB".into());
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Driving a connection
// ---------------------------------------------------------------------------------------------

/// Message size limits chosen by the fuzzer.
pub fn limits(flags: u8) -> (usize, Option<usize>) {
    let message = [64 << 10, 1024, 126, 0][usize::from(flags & 3)];
    let frame = [Some(64 << 10), Some(4096), Some(125), None][usize::from(flags >> 2 & 3)];
    (message, frame)
}

/// A connection of `role` with small limits from `flags`, and deflate when `deflate` is given.
pub fn make_connection(
    role: Role,
    flags: u8,
    deflate: Option<(DeflateParams, DeflateConfig)>,
) -> (Connection, usize) {
    let (max_message, max_frame) = limits(flags);
    let config = Config::default()
        .max_message_size(Some(max_message))
        .max_frame_size(max_frame);
    let zero_mask = flags & 0x10 != 0;
    let mut n: u32 = 0x1234_5678;
    let masks = Box::new(move || {
        if zero_mask {
            return [0; 4];
        }
        n = n.wrapping_mul(0x9E37_79B9).wrapping_add(0x7F4A_7C15);
        n.to_le_bytes()
    });
    let conn = Connection::new(role, config, masks);
    let conn = match deflate {
        Some((params, config)) => conn.with_deflate(params, &config),
        None => conn,
    };
    (conn, max_message)
}

/// Deflate parameters from fuzz flags: context takeover and window bits for both ends.
pub fn deflate_setup(b: u8) -> (DeflateParams, DeflateConfig) {
    let mut params = DeflateParams::new();
    params.server_no_context_takeover = b & 1 != 0;
    params.client_no_context_takeover = b & 2 != 0;
    params.server_max_window_bits = [15, 9, 8, 12][usize::from(b >> 2 & 3)];
    params.client_max_window_bits = [15, 8, 10, 15][usize::from(b >> 4 & 3)];
    let mut config = DeflateConfig::default();
    config.level = [6, 1, 9, 0][usize::from(b >> 6 & 3)];
    config.compression_threshold = if b & 0x40 != 0 { 16 } else { 0 };
    (params, config)
}

/// Watches everything a connection emits, and checks it as it goes.
#[derive(Debug)]
pub struct Observer {
    role: Role,
    deflate: bool,
    max_message: usize,
    /// Every byte taken from `poll_transmit`.
    pub wire: Vec<u8>,
    shutdown: bool,
    closed: bool,
    close_message: bool,
    /// Ping payloads received (the pongs the connection owes come from these).
    pings_received: Vec<Vec<u8>>,
    /// Data messages the application sent successfully, in order.
    pub sent: Vec<DataMessage>,
    /// The fragmented message the application is sending.
    pub sending: Option<DataMessage>,
    pings_sent: Vec<Vec<u8>>,
    pongs_sent: Vec<Vec<u8>>,
    /// Data messages delivered, in order.
    pub delivered: Vec<Message>,
    /// The `Closed` event, once seen.
    pub closed_event: Option<sockeye_proto::Closed>,
    /// Every event, in order.
    pub events: Vec<Event>,
}

impl Observer {
    /// An observer for a connection of `role`.
    pub fn new(role: Role, deflate: bool, max_message: usize) -> Self {
        Self {
            role,
            deflate,
            max_message,
            wire: Vec::new(),
            shutdown: false,
            closed: false,
            close_message: false,
            pings_received: Vec::new(),
            sent: Vec::new(),
            sending: None,
            pings_sent: Vec::new(),
            pongs_sent: Vec::new(),
            delivered: Vec::new(),
            closed_event: None,
            events: Vec::new(),
        }
    }

    /// Takes everything `poll_transmit` has.
    pub fn transmit(&mut self, conn: &mut Connection) {
        for _ in 0..64 {
            let mut buf = Vec::new();
            match conn.poll_transmit(&mut buf) {
                Transmit::Idle => {
                    assert!(buf.is_empty(), "Idle with {} bytes", buf.len());
                    return;
                }
                Transmit::Bytes => {
                    assert!(!self.shutdown, "bytes written after Transmit::Shutdown");
                    assert!(!buf.is_empty(), "Transmit::Bytes with no bytes");
                    self.wire.extend_from_slice(&buf);
                }
                Transmit::Shutdown => {
                    assert!(buf.is_empty(), "Shutdown with {} bytes", buf.len());
                    assert!(!self.shutdown, "Transmit::Shutdown returned twice");
                    assert_eq!(conn.state(), State::Closed, "Shutdown before Closed");
                    self.shutdown = true;
                }
            }
        }
        panic!("poll_transmit never returned Idle");
    }

    /// Takes every event, checking each.
    pub fn events(&mut self, conn: &mut Connection) {
        for _ in 0..4096 {
            let Some(event) = conn.poll_event() else {
                return;
            };
            self.event(conn, event);
        }
        panic!("poll_event never returned None");
    }

    fn event(&mut self, conn: &Connection, event: Event) {
        assert!(!self.closed, "event after Event::Closed: {event:?}");
        self.events.push(event.clone());
        match event {
            Event::Message(message) => {
                assert!(
                    !self.close_message,
                    "message after the peer's close frame: {message:?}"
                );
                match &message {
                    Message::Text(t) => {
                        assert!(
                            std::str::from_utf8(t.as_bytes()).is_ok(),
                            "Text message is not UTF-8"
                        );
                        assert!(
                            t.len() <= self.max_message,
                            "text message of {} bytes over the {} limit",
                            t.len(),
                            self.max_message
                        );
                        self.delivered.push(message);
                    }
                    Message::Binary(b) => {
                        assert!(
                            b.len() <= self.max_message,
                            "binary message of {} bytes over the {} limit",
                            b.len(),
                            self.max_message
                        );
                        self.delivered.push(message);
                    }
                    Message::Ping(p) => {
                        assert!(p.len() <= MAX_CONTROL, "ping of {} bytes", p.len());
                        self.pings_received.push(p.to_vec());
                    }
                    Message::Pong(p) => {
                        assert!(p.len() <= MAX_CONTROL, "pong of {} bytes", p.len())
                    }
                    Message::Close(frame) => {
                        self.close_message = true;
                        if let Some(f) = frame {
                            assert!(code_on_wire(f.code.0), "received close code {}", f.code.0);
                            assert!(f.reason.len() <= 123, "close reason {}", f.reason.len());
                            assert!(std::str::from_utf8(f.reason.as_bytes()).is_ok());
                        }
                    }
                }
            }
            Event::Closed(closed) => {
                self.closed = true;
                assert_eq!(
                    conn.state(),
                    State::Closed,
                    "Closed event but state {:?}",
                    conn.state()
                );
                if let Some(err) = &closed.error {
                    assert_eq!(closed.code, err.close_code(), "{closed:?}");
                    assert_eq!(closed.initiator, Initiator::Library, "{closed:?}");
                    assert!(!closed.was_clean, "{closed:?}");
                }
                self.closed_event = Some(closed);
            }
        }
    }

    /// Records the result of `send`, checking it against the state.
    pub fn sent_whole(
        &mut self,
        open: bool,
        text: bool,
        payload: &[u8],
        result: Result<(), SendError>,
    ) {
        if !open {
            assert_eq!(result, Err(SendError::Closed), "send while not open");
            return;
        }
        if self.sending.is_some() {
            assert_eq!(result, Err(SendError::FragmentInProgress));
            return;
        }
        assert_eq!(result, Ok(()), "send while open");
        self.sent.push(DataMessage {
            text,
            payload: payload.to_vec(),
        });
    }

    /// Records the result of `send_fragment`.
    pub fn sent_fragment(
        &mut self,
        open: bool,
        text: bool,
        payload: &[u8],
        fin: bool,
        result: Result<(), SendError>,
    ) {
        if !open {
            assert_eq!(
                result,
                Err(SendError::Closed),
                "send_fragment while not open"
            );
            return;
        }
        match &mut self.sending {
            Some(m) if m.text != text => {
                assert_eq!(result, Err(SendError::FragmentInProgress));
                return;
            }
            Some(m) => m.payload.extend_from_slice(payload),
            None => {
                self.sending = Some(DataMessage {
                    text,
                    payload: payload.to_vec(),
                })
            }
        }
        assert_eq!(result, Ok(()), "send_fragment while open");
        if fin {
            self.sent.extend(self.sending.take());
        }
    }

    /// Records the result of `ping` or `pong`.
    pub fn sent_control(
        &mut self,
        open: bool,
        ping: bool,
        payload: &[u8],
        result: Result<(), SendError>,
    ) {
        if !open {
            assert_eq!(result, Err(SendError::Closed));
        } else if payload.len() > MAX_CONTROL {
            assert_eq!(result, Err(SendError::ControlFrameTooBig));
        } else {
            assert_eq!(result, Ok(()));
            if ping {
                self.pings_sent.push(payload.to_vec());
            } else {
                self.pongs_sent.push(payload.to_vec());
            }
        }
    }

    /// Ends the run: the whole output must be well-formed frames for the peer, carrying exactly
    /// what the application sent, with every pong answering a ping or sent by the application.
    pub fn finish(&self) {
        let summary = match check_wire(&self.wire, self.role, self.deflate) {
            Ok(s) => s,
            Err(e) => panic!(
                "invalid output of the {:?}: {e}\nwire: {}",
                self.role,
                hex(&self.wire)
            ),
        };
        assert_eq!(
            summary.messages.len(),
            self.sent.len(),
            "data messages on the wire vs sent"
        );
        for (i, (got, want)) in summary.messages.iter().zip(&self.sent).enumerate() {
            assert_eq!(got.text, want.text, "message {i}: kind");
            assert!(
                got.payload == want.payload,
                "message {i}: payload differs ({} vs {} bytes)",
                got.payload.len(),
                want.payload.len()
            );
        }
        // Every fragment the application queued went out (output is taken after each call),
        // so an unfinished message is unfinished on the wire too.
        match (&summary.partial, &self.sending) {
            (None, None) => {}
            (Some(got), Some(want)) => {
                assert_eq!(got.text, want.text, "unfinished message: kind");
                if !self.deflate {
                    assert!(got.payload == want.payload, "unfinished message: payload");
                }
            }
            (got, want) => panic!("unfinished message: wire {got:?}, application {want:?}"),
        }
        for ping in &summary.pings {
            assert!(
                self.pings_sent.contains(ping),
                "ping the application did not send"
            );
        }
        for pong in &summary.pongs {
            assert!(
                self.pongs_sent.contains(pong) || self.pings_received.contains(pong),
                "pong that answers no ping: {}",
                hex(pong)
            );
        }
    }
}

/// Lowercase hex, for messages.
pub fn hex(bytes: &[u8]) -> String {
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes.iter().take(512) {
        s.push_str(&format!("{b:02x}"));
    }
    if bytes.len() > 512 {
        s.push_str("...");
    }
    s
}

/// Text of exactly `len` bytes with multi-byte characters when `rich`. (Built with `repeat`,
/// not char by char: the harness is instrumented too, and 70 kB payloads made byte by byte
/// used to cost most of a run.)
pub fn text_payload(len: usize, rich: bool) -> Vec<u8> {
    let unit = if rich { "aé€𝄞" } else { "helo" };
    let mut s = unit.repeat(len / unit.len() + 1);
    let mut end = len;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s.truncate(end);
    let mut bytes = s.into_bytes();
    bytes.resize(len, b'a');
    bytes
}

/// Binary of `len` bytes: compressible when `repetitive`, else pseudo-random (a 4 KiB
/// pseudo-random block, repeated).
pub fn binary_payload(len: usize, seed: u8, repetitive: bool) -> Vec<u8> {
    let block: Vec<u8> = if repetitive {
        (0..7u8).map(|i| i ^ seed).collect()
    } else {
        let mut x = u32::from(seed) | 0x1_0000;
        (0..len.min(4096))
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                x as u8
            })
            .collect()
    };
    if block.is_empty() {
        return Vec::new();
    }
    let mut out = block.repeat(len / block.len() + 1);
    out.truncate(len);
    out
}

const SEND_LENS: [usize; 8] = [0, 1, 5, 31, 125, 126, 1000, 70_000];
const CLOSE_CODES: [u16; 16] = [
    1000, 1001, 1002, 1003, 1004, 1005, 1006, 1007, 1011, 1014, 1015, 1016, 2999, 3000, 4999, 5000,
];

/// Runs one connection over fuzz input.
///
/// Layout: `flags`, `deflate flags` (deflate targets only), `n`, `n` script bytes, then the
/// bytes the peer sent. Each script byte feeds a chunk of the peer's bytes (its low five bits
/// choose the size, see [`chunk_size`]) and then does what its high three bits say:
///
/// | bits 7–5 | action (a parameter byte follows in the script where noted) |
/// |---|---|
/// | 0, 1 | take the events |
/// | 2 | leave the events queued (they pile up behind a violation) |
/// | 3 | application `send` / `send_fragment` (parameter) |
/// | 4 | application `ping` / `pong` (parameter) |
/// | 5 | application `close` (parameter) |
/// | 6 | `handle_timeout` |
/// | 7 | `handle_eof` or `abort` (parameter) |
///
/// When the script ends the rest of the peer's bytes are fed at once; then end of stream.
pub fn run_connection(role: Role, with_deflate: bool, data: &[u8]) {
    let mut input = Input::new(data);
    let flags = input.byte();
    let deflate = with_deflate.then(|| deflate_setup(input.byte()));
    let script_len = usize::from(input.byte());
    let script = input.take(script_len);
    let mut stream = input.rest();
    // Only chunking (no application calls, no timer): then the result must not depend on it.
    let chunking_only = script.iter().all(|b| b >> 5 <= 2);
    let whole_stream = stream;
    let reference_setup = deflate.clone();
    let mut script = Input::new(script);

    let (mut conn, max_message) = make_connection(role, flags, deflate);
    let mut obs = Observer::new(role, with_deflate, max_message);
    let mut big_sends = 0;

    while !script.is_empty() {
        let b = script.byte();
        let n = chunk_size(b).min(stream.len());
        if n > 0 {
            conn.handle_bytes(&stream[..n]);
            stream = &stream[n..];
        }
        obs.transmit(&mut conn);
        match b >> 5 {
            2 => {}
            3 => {
                let p = script.byte();
                let text = p & 1 != 0;
                let mut len = SEND_LENS[usize::from(p >> 1 & 7)];
                if len > 1000 {
                    // A 64-bit length once or twice per run is enough; compressing 70 kB
                    // under AddressSanitizer costs ~30 ms, so the deflate target sends 4 kB.
                    big_sends += 1;
                    if big_sends > 2 {
                        len = 1000;
                    } else if with_deflate {
                        len = 4000;
                    }
                }
                let payload = if text {
                    text_payload(len, p & 0x80 != 0)
                } else {
                    binary_payload(len, p, p & 0x80 != 0)
                };
                let open = conn.state() == State::Open;
                let kind = if text {
                    DataKind::Text
                } else {
                    DataKind::Binary
                };
                if p & 0x10 != 0 {
                    let fin = p & 0x20 != 0;
                    let r = conn.send_fragment(kind, &payload, fin);
                    obs.sent_fragment(open, text, &payload, fin, r);
                } else {
                    let r = conn.send(kind, &payload);
                    obs.sent_whole(open, text, &payload, r);
                }
            }
            4 => {
                let p = script.byte();
                let payload = binary_payload(usize::from(p >> 1), p, false);
                let open = conn.state() == State::Open;
                let r = if p & 1 != 0 {
                    conn.ping(&payload)
                } else {
                    conn.pong(&payload)
                };
                obs.sent_control(open, p & 1 != 0, &payload, r);
            }
            5 => {
                let p = script.byte();
                let code = CLOSE_CODES[usize::from(p & 15)];
                let reason = text_payload(usize::from(p >> 4) * 9, p & 0x80 != 0);
                let reason = String::from_utf8(reason).expect("text_payload is UTF-8");
                let open = conn.state() == State::Open;
                let r = conn.close(CloseCode(code), &reason);
                if !open {
                    assert_eq!(r, Err(SendError::Closed));
                } else if !code_on_wire(code) {
                    assert_eq!(r, Err(SendError::InvalidCloseCode(code)));
                } else if reason.len() > 123 {
                    assert_eq!(r, Err(SendError::CloseReasonTooLong));
                } else {
                    assert_eq!(r, Ok(()));
                    assert_ne!(conn.state(), State::Open, "open after close()");
                }
            }
            6 => conn.handle_timeout(),
            7 => {
                let p = script.byte();
                if p & 1 != 0 {
                    conn.handle_eof();
                    obs.transmit(&mut conn);
                    obs.events(&mut conn);
                    assert_eq!(conn.state(), State::Closed, "open after end of stream");
                } else {
                    let code = CLOSE_CODES[usize::from(p >> 1 & 15)];
                    conn.abort(CloseCode(code), "fuzz abort");
                    assert_eq!(conn.state(), State::Closed, "open after abort");
                }
            }
            _ => {}
        }
        obs.transmit(&mut conn);
        if b >> 5 != 2 {
            obs.events(&mut conn);
            obs.transmit(&mut conn);
        }
    }
    if !stream.is_empty() {
        conn.handle_bytes(stream);
    }
    obs.transmit(&mut conn);
    obs.events(&mut conn);
    obs.transmit(&mut conn);
    conn.handle_eof();
    obs.transmit(&mut conn);
    obs.events(&mut conn);
    obs.transmit(&mut conn);
    assert_eq!(conn.state(), State::Closed);
    assert!(
        obs.closed_event.is_some(),
        "no Event::Closed after end of stream"
    );
    assert!(obs.shutdown, "no Transmit::Shutdown after Closed");
    obs.finish();

    if chunking_only {
        // The same bytes in one piece: the same events, and the same frames apart from pongs
        // (a burst of pings read at once is answered by at most MAX_PENDING_PONGS pongs).
        let (mut reference, _) = make_connection(role, flags, reference_setup);
        let mut whole = Observer::new(role, with_deflate, max_message);
        reference.handle_bytes(whole_stream);
        whole.transmit(&mut reference);
        whole.events(&mut reference);
        whole.transmit(&mut reference);
        reference.handle_eof();
        whole.transmit(&mut reference);
        whole.events(&mut reference);
        whole.transmit(&mut reference);
        whole.finish();
        assert_eq!(
            obs.events, whole.events,
            "events depend on how the input was chunked"
        );
        let frames = |wire: &[u8]| -> Vec<(u8, bool, [bool; 3], Vec<u8>)> {
            parse_wire(wire, role)
                .expect("checked by finish")
                .into_iter()
                .filter(|f| f.opcode != 0xA)
                .map(|f| (f.opcode, f.fin, f.rsv, f.payload))
                .collect()
        };
        assert_eq!(
            frames(&obs.wire),
            frames(&whole.wire),
            "output (pongs aside) depends on how the input was chunked"
        );
    }
}
