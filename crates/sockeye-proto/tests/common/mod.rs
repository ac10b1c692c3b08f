//! Helpers shared by the conversation tests (STYLE.md §9).
//!
//! The frame builder and the frame parser here are written from RFC 6455 §5.2 directly, without
//! `FrameHeader`, so that the tests check the crate against an independent oracle rather than
//! against itself.
#![allow(dead_code)]

use std::fmt::Write as _;

use sockeye_proto::{
    CloseCode, Closed, Config, Connection, Event, Initiator, MaskSource, ProtocolError, Role,
    State, Transmit,
};

pub(crate) const OP_CONT: u8 = 0x0;
pub(crate) const OP_TEXT: u8 = 0x1;
pub(crate) const OP_BINARY: u8 = 0x2;
pub(crate) const OP_CLOSE: u8 = 0x8;
pub(crate) const OP_PING: u8 = 0x9;
pub(crate) const OP_PONG: u8 = 0xA;

/// Masking key of the RFC 6455 §5.7 examples; used by every test client and for every frame the
/// tests send to a server.
pub(crate) const KEY: [u8; 4] = [0x37, 0xfa, 0x21, 0x3d];

/// The sizes where the length encoding changes form (§5.2).
pub(crate) const BOUNDARY_SIZES: [usize; 5] = [0, 125, 126, 65535, 65536];

// ---------------------------------------------------------------------------------------------
// Building frames
// ---------------------------------------------------------------------------------------------

/// A whole frame, encoded by hand from §5.2: minimal length form, payload masked with `mask`.
/// `rsv` holds RSV1..RSV3 in its low three bits (RSV1 = 0b100).
pub(crate) fn frame(
    opcode: u8,
    fin: bool,
    rsv: u8,
    mask: Option<[u8; 4]>,
    payload: &[u8],
) -> Vec<u8> {
    assert!(opcode < 16 && rsv < 8);
    let len = payload.len();
    let len = if len < 126 {
        Len::Short(len as u8)
    } else if len <= 0xFFFF {
        Len::Medium(len as u16)
    } else {
        Len::Long(len as u64)
    };
    let mut out = raw_header(first_byte(opcode, fin, rsv), mask, len);
    match mask {
        Some(key) => out.extend(payload.iter().enumerate().map(|(i, b)| b ^ key[i % 4])),
        None => out.extend_from_slice(payload),
    }
    out
}

/// A frame as a client sends it to a server: masked with [`KEY`], no RSV bits.
pub(crate) fn masked(opcode: u8, fin: bool, payload: &[u8]) -> Vec<u8> {
    frame(opcode, fin, 0, Some(KEY), payload)
}

/// A frame as a server sends it to a client: unmasked, no RSV bits.
pub(crate) fn unmasked(opcode: u8, fin: bool, payload: &[u8]) -> Vec<u8> {
    frame(opcode, fin, 0, None, payload)
}

/// A well-formed frame that the peer of `receiver` would send it.
pub(crate) fn from_peer(receiver: Role, opcode: u8, fin: bool, payload: &[u8]) -> Vec<u8> {
    match receiver {
        Role::Server => masked(opcode, fin, payload),
        Role::Client => unmasked(opcode, fin, payload),
    }
}

/// The frame a connection of role `sender` built by [`connection`] writes (clients mask with
/// [`KEY`]).
pub(crate) fn from_self(sender: Role, opcode: u8, fin: bool, payload: &[u8]) -> Vec<u8> {
    from_peer(peer_of(sender), opcode, fin, payload)
}

pub(crate) fn peer_of(role: Role) -> Role {
    match role {
        Role::Client => Role::Server,
        Role::Server => Role::Client,
    }
}

/// The mask for frames sent to `receiver`.
pub(crate) fn mask_for(receiver: Role) -> Option<[u8; 4]> {
    match receiver {
        Role::Server => Some(KEY),
        Role::Client => None,
    }
}

pub(crate) fn first_byte(opcode: u8, fin: bool, rsv: u8) -> u8 {
    (u8::from(fin) << 7) | (rsv << 4) | opcode
}

/// A payload length in one of the three wire forms, written as given (minimal or not).
#[derive(Debug, Clone, Copy)]
pub(crate) enum Len {
    /// 7-bit length (0..=127 on the wire; 126 and 127 are the escapes).
    Short(u8),
    /// 126 + 16-bit length.
    Medium(u16),
    /// 127 + 64-bit length.
    Long(u64),
}

/// A frame header written byte by byte, with any length form: for hostile headers.
pub(crate) fn raw_header(b0: u8, mask: Option<[u8; 4]>, len: Len) -> Vec<u8> {
    let mask_bit = if mask.is_some() { 0x80 } else { 0 };
    let mut out = vec![b0];
    match len {
        Len::Short(n) => {
            assert!(n < 126);
            out.push(mask_bit | n);
        }
        Len::Medium(n) => {
            out.push(mask_bit | 126);
            out.extend_from_slice(&n.to_be_bytes());
        }
        Len::Long(n) => {
            out.push(mask_bit | 127);
            out.extend_from_slice(&n.to_be_bytes());
        }
    }
    if let Some(key) = mask {
        out.extend_from_slice(&key);
    }
    out
}

/// The body of a close frame: a big-endian code and a reason.
pub(crate) fn close_payload(code: u16, reason: &[u8]) -> Vec<u8> {
    let mut out = code.to_be_bytes().to_vec();
    out.extend_from_slice(reason);
    out
}

/// Deterministic bytes for payloads.
pub(crate) fn pattern(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 31 + 7) as u8).collect()
}

// ---------------------------------------------------------------------------------------------
// Parsing frames (the oracle for what a connection sends)
// ---------------------------------------------------------------------------------------------

/// A frame parsed by [`parse_wire`], payload already unmasked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct WireFrame {
    pub(crate) fin: bool,
    pub(crate) rsv: u8,
    pub(crate) opcode: u8,
    pub(crate) mask: Option<[u8; 4]>,
    pub(crate) payload: Vec<u8>,
}

/// Splits `bytes` into frames, from §5.2. Panics on a truncated frame or a non-minimal length.
pub(crate) fn parse_wire(mut bytes: &[u8]) -> Vec<WireFrame> {
    let mut frames = Vec::new();
    while !bytes.is_empty() {
        assert!(bytes.len() >= 2, "truncated frame header: {bytes:02x?}");
        let b0 = bytes[0];
        let b1 = bytes[1];
        let mut pos = 2;
        let len = match b1 & 0x7F {
            126 => {
                let n = u64::from(u16::from_be_bytes([bytes[2], bytes[3]]));
                assert!(n >= 126, "non-minimal 16-bit length {n}");
                pos = 4;
                n
            }
            127 => {
                let mut be = [0u8; 8];
                be.copy_from_slice(&bytes[2..10]);
                let n = u64::from_be_bytes(be);
                assert!(n > 0xFFFF && n >> 63 == 0, "bad 64-bit length {n}");
                pos = 10;
                n
            }
            n => u64::from(n),
        };
        let mask = if b1 & 0x80 != 0 {
            let key = [bytes[pos], bytes[pos + 1], bytes[pos + 2], bytes[pos + 3]];
            pos += 4;
            Some(key)
        } else {
            None
        };
        let len = usize::try_from(len).unwrap();
        assert!(
            bytes.len() >= pos + len,
            "truncated payload: need {len}, have {}",
            bytes.len() - pos
        );
        let mut payload = bytes[pos..pos + len].to_vec();
        if let Some(key) = mask {
            for (i, b) in payload.iter_mut().enumerate() {
                *b ^= key[i % 4];
            }
        }
        frames.push(WireFrame {
            fin: b0 & 0x80 != 0,
            rsv: (b0 >> 4) & 0x7,
            opcode: b0 & 0x0F,
            mask,
            payload,
        });
        bytes = &bytes[pos + len..];
    }
    frames
}

fn describe(bytes: &[u8]) -> String {
    let mut s = String::new();
    for f in parse_wire(bytes) {
        let shown = &f.payload[..f.payload.len().min(32)];
        let _ = writeln!(
            s,
            "  op={:#x} fin={} rsv={} mask={:02x?} len={} payload={:02x?}{}",
            f.opcode,
            f.fin,
            f.rsv,
            f.mask,
            f.payload.len(),
            shown,
            if f.payload.len() > 32 { "..." } else { "" }
        );
    }
    s
}

// ---------------------------------------------------------------------------------------------
// Connections
// ---------------------------------------------------------------------------------------------

/// A mask source that always returns [`KEY`].
pub(crate) fn fixed_mask() -> Box<dyn MaskSource> {
    Box::new(|| KEY)
}

pub(crate) fn connection(role: Role, config: Config) -> Connection {
    Connection::new(role, config, fixed_mask())
}

pub(crate) fn server() -> Connection {
    connection(Role::Server, Config::default())
}

pub(crate) fn client() -> Connection {
    connection(Role::Client, Config::default())
}

pub(crate) const ROLES: [Role; 2] = [Role::Server, Role::Client];

/// Everything a connection produced since the last drain.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Drained {
    pub(crate) sent: Vec<u8>,
    pub(crate) shutdown: bool,
    pub(crate) events: Vec<Event>,
}

impl Drained {
    fn absorb(&mut self, next: Drained) {
        assert!(
            !(self.shutdown && (next.shutdown || !next.sent.is_empty())),
            "output after Transmit::Shutdown"
        );
        assert!(
            next.events.is_empty() || !self.events.iter().any(is_closed),
            "events after Event::Closed: {:?}",
            next.events
        );
        self.sent.extend_from_slice(&next.sent);
        self.shutdown |= next.shutdown;
        self.events.extend(next.events);
    }
}

pub(crate) fn is_closed(event: &Event) -> bool {
    matches!(event, Event::Closed(_))
}

/// Takes all pending output and events, checking the invariants of both queues: `Shutdown`
/// comes once and last, `Closed` comes once and last. Polls both queues until neither yields
/// anything, since taking events may queue output (a failure is acted on once the messages
/// before it are taken).
pub(crate) fn drain(conn: &mut Connection) -> Drained {
    let mut d = Drained::default();
    loop {
        let mut progress = false;
        loop {
            let mut buf = Vec::new();
            match conn.poll_transmit(&mut buf) {
                Transmit::Bytes => {
                    assert!(!buf.is_empty(), "Transmit::Bytes with no bytes");
                    assert!(!d.shutdown, "bytes after Transmit::Shutdown");
                    d.sent.extend_from_slice(&buf);
                    progress = true;
                }
                Transmit::Shutdown => {
                    assert!(!d.shutdown, "Transmit::Shutdown twice");
                    assert!(buf.is_empty());
                    assert_eq!(conn.state(), State::Closed, "shutdown before Closed");
                    d.shutdown = true;
                    progress = true;
                }
                Transmit::Idle => {
                    assert!(buf.is_empty());
                    break;
                }
            }
        }
        while let Some(event) = conn.poll_event() {
            assert!(
                !d.events.iter().any(is_closed),
                "event after Closed: {event:?}"
            );
            d.events.push(event);
            progress = true;
        }
        if !progress {
            return d;
        }
    }
}

/// Feeds `input` to a fresh connection from `make` in one call, and to another byte by byte
/// (draining after every byte), and asserts both produce the same output and events. Returns a
/// third fresh connection fed the whole input and not yet drained, for the test's own asserts.
pub(crate) fn feed_both(make: impl Fn() -> Connection, input: &[u8]) -> Connection {
    let mut whole = make();
    whole.handle_bytes(input);
    let whole = drain(&mut whole);

    let mut bytewise = make();
    let mut acc = drain(&mut bytewise);
    for &b in input {
        bytewise.handle_bytes(&[b]);
        acc.absorb(drain(&mut bytewise));
    }
    assert_eq!(
        whole, acc,
        "feeding whole and byte by byte must give the same output and events"
    );

    let mut conn = make();
    conn.handle_bytes(input);
    conn
}

/// As [`feed_both`] with a fresh connection of `role` and the default config.
pub(crate) fn feed(role: Role, input: &[u8]) -> Connection {
    feed_both(|| connection(role, Config::default()), input)
}

/// Drains the transmit queue and asserts it held exactly `expected` (concatenated), with no
/// `Transmit::Shutdown`.
#[track_caller]
pub(crate) fn assert_sent<F: AsRef<[u8]>>(conn: &mut Connection, expected: &[F]) {
    let (sent, shutdown) = take_transmit(conn);
    assert!(!shutdown, "unexpected Transmit::Shutdown");
    compare_sent(&sent, expected);
}

/// Drains the transmit queue and asserts it held exactly `expected` followed by
/// `Transmit::Shutdown`, then `Transmit::Idle`.
#[track_caller]
pub(crate) fn assert_sent_then_shutdown<F: AsRef<[u8]>>(conn: &mut Connection, expected: &[F]) {
    let (sent, shutdown) = take_transmit(conn);
    assert!(shutdown, "expected Transmit::Shutdown");
    compare_sent(&sent, expected);
}

#[track_caller]
pub(crate) fn assert_nothing_sent(conn: &mut Connection) {
    assert_sent::<&[u8]>(conn, &[]);
}

#[track_caller]
fn compare_sent<F: AsRef<[u8]>>(sent: &[u8], expected: &[F]) {
    let expected: Vec<u8> = expected.iter().flat_map(|f| f.as_ref().to_vec()).collect();
    if sent != expected {
        panic!(
            "sent bytes differ\nsent:\n{}expected:\n{}",
            describe(sent),
            describe(&expected)
        );
    }
}

/// Polls until `Idle`; returns the bytes and whether `Shutdown` was seen (it must come last).
fn take_transmit(conn: &mut Connection) -> (Vec<u8>, bool) {
    let mut out = Vec::new();
    let mut shutdown = false;
    loop {
        match conn.poll_transmit(&mut out) {
            Transmit::Bytes => assert!(!shutdown, "bytes after Transmit::Shutdown"),
            Transmit::Shutdown => {
                assert!(!shutdown, "Transmit::Shutdown twice");
                shutdown = true;
            }
            Transmit::Idle => return (out, shutdown),
        }
    }
}

/// Drains the event queue and asserts it held exactly `expected`.
#[track_caller]
pub(crate) fn assert_events(conn: &mut Connection, expected: &[Event]) {
    let mut got = Vec::new();
    while let Some(e) = conn.poll_event() {
        got.push(e);
    }
    assert_eq!(got, expected);
}

/// `Event::Closed` without an error.
pub(crate) fn closed(
    code: CloseCode,
    reason: &str,
    initiator: Initiator,
    was_clean: bool,
) -> Event {
    Event::Closed(Closed {
        code,
        reason: reason.to_owned(),
        initiator,
        was_clean,
        error: None,
    })
}

/// Asserts the connection failed (§7.1.7) with `code`: its output ends with a close frame
/// carrying `code` (masked iff it is a client), followed by `Transmit::Shutdown`; its last event
/// is `Event::Closed` with that code, `was_clean == false` and an error whose close code is
/// `code`. Events before `Closed` are returned with the error for further checks.
#[track_caller]
pub(crate) fn assert_failing(
    conn: &mut Connection,
    code: CloseCode,
) -> (ProtocolError, Vec<Event>) {
    let Drained {
        sent,
        shutdown,
        events,
    } = drain(conn);
    let frames = parse_wire(&sent);
    let close = frames
        .last()
        .unwrap_or_else(|| panic!("no close frame sent when failing with {code:?}"));
    assert_eq!(
        close.opcode, OP_CLOSE,
        "last frame sent is not a close frame"
    );
    assert!(close.fin && close.rsv == 0);
    assert_eq!(
        close.payload.get(..2),
        Some(&code.0.to_be_bytes()[..]),
        "close frame code"
    );
    assert!(close.payload.len() <= 125);
    assert!(
        std::str::from_utf8(&close.payload[2..]).is_ok(),
        "close reason not UTF-8"
    );
    assert_eq!(
        frames.iter().filter(|f| f.opcode == OP_CLOSE).count(),
        1,
        "one close frame"
    );
    for f in &frames {
        assert_eq!(
            f.mask.is_some(),
            conn.role() == Role::Client,
            "masking of frame {f:?}"
        );
    }
    assert!(shutdown, "Transmit::Shutdown must follow the close frame");
    finish_failing(conn, code, events)
}

/// As [`assert_failing`] for a connection that had already sent its close frame: nothing more
/// is transmitted except `Transmit::Shutdown`.
#[track_caller]
pub(crate) fn assert_failing_after_close_sent(
    conn: &mut Connection,
    code: CloseCode,
) -> (ProtocolError, Vec<Event>) {
    let Drained {
        sent,
        shutdown,
        events,
    } = drain(conn);
    assert!(sent.is_empty(), "sent after close: {}", describe(&sent));
    assert!(shutdown, "Transmit::Shutdown expected");
    finish_failing(conn, code, events)
}

#[track_caller]
fn finish_failing(
    conn: &mut Connection,
    code: CloseCode,
    mut events: Vec<Event>,
) -> (ProtocolError, Vec<Event>) {
    let Some(Event::Closed(last)) = events.pop() else {
        panic!("last event is not Closed: {events:?}");
    };
    assert!(!events.iter().any(is_closed), "two Closed events");
    assert_eq!(last.code, code, "Closed code ({last:?})");
    assert!(!last.was_clean, "a failed connection is not clean");
    assert_eq!(last.initiator, Initiator::Library);
    let error = last.error.expect("Closed.error must say why it failed");
    assert_eq!(error.close_code(), code);
    assert_eq!(conn.state(), State::Closed);
    assert!(!conn.close_expected());
    // Nothing more comes out, whatever is fed.
    conn.handle_bytes(&[0x81, 0x80, 0, 0, 0, 0, 0x89, 0x00]);
    conn.handle_eof();
    conn.handle_timeout();
    assert_eq!(drain(conn), Drained::default());
    (error, events)
}

/// A failing test for a violation that both roles must detect in the same way: `input` is what
/// the peer sends (built by `build` for the receiving role). Checks both feeding ways and returns
/// the errors for each role.
#[track_caller]
pub(crate) fn assert_both_roles_fail(
    build: impl Fn(Role) -> Vec<u8>,
    code: CloseCode,
    expected: &ProtocolError,
) {
    for role in ROLES {
        let input = build(role);
        let mut conn = feed(role, &input);
        let (err, events) = assert_failing(&mut conn, code);
        assert_eq!(&err, expected, "{role:?}");
        assert!(events.is_empty(), "{role:?}: unexpected events {events:?}");
    }
}

// ---------------------------------------------------------------------------------------------
// Two connected ends
// ---------------------------------------------------------------------------------------------

/// A client and a server connected back to back (quinn-proto's `Pair`). `Transmit::Shutdown` on
/// one side is end of stream on the other.
pub(crate) struct Pair {
    pub(crate) client: Connection,
    pub(crate) server: Connection,
    pub(crate) client_events: Vec<Event>,
    pub(crate) server_events: Vec<Event>,
    /// Every byte the client wrote.
    pub(crate) client_sent: Vec<u8>,
    /// Every byte the server wrote.
    pub(crate) server_sent: Vec<u8>,
    pub(crate) client_shutdown: bool,
    pub(crate) server_shutdown: bool,
}

impl Pair {
    pub(crate) fn new() -> Self {
        Self::with(Config::default(), fixed_mask())
    }

    pub(crate) fn with(config: Config, masks: Box<dyn MaskSource>) -> Self {
        Self {
            client: Connection::new(Role::Client, config.clone(), masks),
            server: Connection::new(Role::Server, config, fixed_mask()),
            client_events: Vec::new(),
            server_events: Vec::new(),
            client_sent: Vec::new(),
            server_sent: Vec::new(),
            client_shutdown: false,
            server_shutdown: false,
        }
    }

    /// Moves bytes both ways until neither side has anything to say.
    pub(crate) fn drive(&mut self) {
        loop {
            let c = drain(&mut self.client);
            let s = drain(&mut self.server);
            self.client_events.extend(c.events);
            self.server_events.extend(s.events);
            let progress = !c.sent.is_empty() || !s.sent.is_empty() || c.shutdown || s.shutdown;
            if !c.sent.is_empty() {
                self.server.handle_bytes(&c.sent);
                self.client_sent.extend_from_slice(&c.sent);
            }
            if !s.sent.is_empty() {
                self.client.handle_bytes(&s.sent);
                self.server_sent.extend_from_slice(&s.sent);
            }
            if c.shutdown {
                self.client_shutdown = true;
                self.server.handle_eof();
            }
            if s.shutdown {
                self.server_shutdown = true;
                self.client.handle_eof();
            }
            if !progress {
                return;
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// permessage-deflate (RFC 7692)
// ---------------------------------------------------------------------------------------------

/// RSV1 in the `rsv` argument of [`frame`]: the "Per-Message Compressed" bit (RFC 7692 §6).
pub(crate) const RSV1: u8 = 0b100;

/// The four octets removed from the end of a compressed message and appended again before
/// inflating (RFC 7692 §7.2.1, §7.2.2). Written out here rather than taken from the crate.
pub(crate) const TRAILER: [u8; 4] = [0x00, 0x00, 0xff, 0xff];

/// Negotiates permessage-deflate as the opening handshake does: the client's offer, the
/// server's choice, the client's check of the response. Returns the parameters each side ends
/// up with, `(client, server)`; panics when the server declines or the client rejects.
pub(crate) fn negotiate(
    client: &sockeye_proto::deflate::DeflateConfig,
    server: &sockeye_proto::deflate::DeflateConfig,
) -> (
    sockeye_proto::deflate::DeflateParams,
    sockeye_proto::deflate::DeflateParams,
) {
    let offer = client.offer();
    let accepted = server
        .accept_offer([offer.as_bytes()])
        .unwrap_or_else(|| panic!("server declined {offer:?}"));
    let response = accepted.to_string();
    let agreed = client
        .check_response([response.as_bytes()])
        .unwrap_or_else(|e| panic!("client rejected {response:?}: {e}"))
        .unwrap_or_else(|| panic!("client saw no extension in {response:?}"));
    (agreed, accepted)
}

/// A connection of `role` with permessage-deflate in force (`deflate` gives the level and the
/// threshold) and a fixed client mask.
pub(crate) fn deflate_connection(
    role: Role,
    config: Config,
    params: sockeye_proto::deflate::DeflateParams,
    deflate: &sockeye_proto::deflate::DeflateConfig,
) -> Connection {
    connection(role, config).with_deflate(params, deflate)
}

/// A raw-DEFLATE compressor as a peer would use it, straight from flate2: `level` 6,
/// `window_bits` 9..=15.
pub(crate) fn compressor(window_bits: u8) -> flate2::Compress {
    flate2::Compress::new_with_window_bits(flate2::Compression::new(6), false, window_bits)
}

/// Compresses the pieces of one message with flate2, each ending in a sync flush, as a sender
/// following RFC 7692 §7.2.1 does; the last piece has the trailing `00 00 ff ff` removed.
/// Returns one payload per piece (one per frame of a fragmented message).
pub(crate) fn compress_pieces(compress: &mut flate2::Compress, pieces: &[&[u8]]) -> Vec<Vec<u8>> {
    let mut payloads = Vec::new();
    for (i, piece) in pieces.iter().enumerate() {
        let mut out = Vec::with_capacity(piece.len() + 64);
        let mut consumed = 0;
        loop {
            if out.capacity() - out.len() < 64 {
                out.reserve(out.capacity().max(1024));
            }
            let before = compress.total_in();
            compress
                .compress_vec(&piece[consumed..], &mut out, flate2::FlushCompress::Sync)
                .expect("compress");
            consumed += (compress.total_in() - before) as usize;
            if consumed == piece.len() && out.len() < out.capacity() {
                break;
            }
        }
        if i + 1 == pieces.len() && out.is_empty() {
            // zlib emits nothing for an empty flush right after a flush; RFC 7692 §7.2.3.6 gives
            // the single octet 0x00 for that case.
            out.push(0x00);
        } else if i + 1 == pieces.len() {
            assert!(
                out.ends_with(&TRAILER),
                "a sync flush ends with 00 00 ff ff"
            );
            out.truncate(out.len() - TRAILER.len());
        }
        payloads.push(out);
    }
    payloads
}

/// Compresses a whole message with flate2 (see [`compress_pieces`]).
pub(crate) fn compress_message(compress: &mut flate2::Compress, message: &[u8]) -> Vec<u8> {
    compress_pieces(compress, &[message]).remove(0)
}

/// Inflates one message payload with flate2 as RFC 7692 §7.2.2 says: append `00 00 ff ff`,
/// inflate, at most `step` bytes of output per call. zlib-rs keeps a 32 KiB window whatever
/// window size it is given, so this cannot tell whether a sender kept to a smaller window: use
/// [`Puff`] for that.
pub(crate) fn inflate_message(
    decompress: &mut flate2::Decompress,
    payload: &[u8],
    step: usize,
) -> Result<Vec<u8>, String> {
    let input = [payload, &TRAILER[..]].concat();
    let mut out = Vec::new();
    let mut pos = 0;
    let mut buf = vec![0u8; step];
    loop {
        let (in_before, out_before) = (decompress.total_in(), decompress.total_out());
        let status = decompress
            .decompress(&input[pos..], &mut buf, flate2::FlushDecompress::Sync)
            .map_err(|e| e.to_string())?;
        let consumed = (decompress.total_in() - in_before) as usize;
        let produced = (decompress.total_out() - out_before) as usize;
        pos += consumed;
        out.extend_from_slice(&buf[..produced]);
        if status == flate2::Status::StreamEnd {
            return Ok(out);
        }
        if consumed == 0 && produced == 0 {
            if pos == input.len() {
                return Ok(out);
            }
            return Err(format!("no progress at input offset {pos}"));
        }
    }
}

/// Writes bits as DEFLATE packs them (RFC 1951 §3.1.1): fields least significant bit first,
/// Huffman codes most significant bit first.
#[derive(Debug, Default)]
pub(crate) struct BitWriter {
    pub(crate) bytes: Vec<u8>,
    used: u32,
}

impl BitWriter {
    /// A field of `len` bits, least significant first.
    pub(crate) fn bits(&mut self, value: u32, len: u32) {
        for i in 0..len {
            self.bit((value >> i) & 1 == 1);
        }
    }

    /// A Huffman code of `len` bits, most significant first.
    pub(crate) fn code(&mut self, code: u32, len: u32) {
        for i in (0..len).rev() {
            self.bit((code >> i) & 1 == 1);
        }
    }

    fn bit(&mut self, bit: bool) {
        if self.used == 0 {
            self.bytes.push(0);
        }
        if bit {
            *self.bytes.last_mut().unwrap() |= 1 << self.used;
        }
        self.used = (self.used + 1) % 8;
    }
}

/// A decompression bomb built by hand from RFC 1951 (no compressor involved): one dynamic
/// Huffman block holding a literal zero and then `matches` copies of (length 258, distance 1),
/// two bits each, so that every payload byte inflates to 1032 zero bytes. The message inflates
/// to `1 + 258 * matches` zero bytes; the payload is about `matches / 4` bytes, ends as RFC 7692
/// §7.2.1 says (an empty stored block started, its `00 00 ff ff` left to the receiver).
pub(crate) fn zero_bomb(matches: usize) -> Vec<u8> {
    let mut w = BitWriter::default();
    w.bits(0, 1); // BFINAL = 0
    w.bits(2, 2); // BTYPE = 10: dynamic Huffman codes
    w.bits(29, 5); // HLIT: 286 literal/length codes (up to 285, length 258)
    w.bits(0, 5); // HDIST: 1 distance code (0, distance 1)
    w.bits(14, 4); // HCLEN: 18 code length code lengths
                   // Code length alphabet: 18 -> "0", 1 -> "10", 2 -> "11" (lengths 1, 2, 2), given in the
                   // order 16 17 18 0 8 7 9 6 10 5 11 4 12 3 13 2 14 1.
    for len in [0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2, 0, 2] {
        w.bits(len, 3);
    }
    let (cl_18, cl_1, cl_2) = ((0b0, 1), (0b10, 2), (0b11, 2));
    // Literal/length lengths: 0 -> 2, 1..=255 -> 0, 256 -> 2, 257..=284 -> 0, 285 -> 1;
    // then the one distance length: 0 -> 1.
    w.code(cl_2.0, cl_2.1); // symbol 0: 2
    w.code(cl_18.0, cl_18.1); // symbols 1..=138: 0
    w.bits(138 - 11, 7);
    w.code(cl_18.0, cl_18.1); // symbols 139..=255: 0
    w.bits(117 - 11, 7);
    w.code(cl_2.0, cl_2.1); // symbol 256: 2
    w.code(cl_18.0, cl_18.1); // symbols 257..=284: 0
    w.bits(28 - 11, 7);
    w.code(cl_1.0, cl_1.1); // symbol 285: 1
    w.code(cl_1.0, cl_1.1); // distance code 0: 1
                            // Canonical codes: 285 -> "0", 0 -> "10", 256 -> "11"; distance 0 -> "0".
    w.code(0b10, 2); // literal 0
    for _ in 0..matches {
        w.code(0b0, 1); // length 258
        w.code(0b0, 1); // distance 1
    }
    w.code(0b11, 2); // end of block
                     // RFC 7692 §7.2.1: end with an empty stored block (header 000, padding), minus 00 00 ff ff.
    w.bits(0, 3);
    w.bytes
}

/// Builds a [`Pair`] whose ends negotiated permessage-deflate from `client` and `server` (as
/// [`negotiate`] does), with `config` limits on both.
impl Pair {
    pub(crate) fn with_deflate(
        config: Config,
        client: &sockeye_proto::deflate::DeflateConfig,
        server: &sockeye_proto::deflate::DeflateConfig,
    ) -> Self {
        let (client_params, server_params) = negotiate(client, server);
        let mut pair = Self::with(config.clone(), fixed_mask());
        pair.client = Connection::new(Role::Client, config.clone(), fixed_mask())
            .with_deflate(client_params, client);
        pair.server =
            Connection::new(Role::Server, config, fixed_mask()).with_deflate(server_params, server);
        pair
    }
}

/// A DEFLATE decoder written from RFC 1951 (after the structure of zlib's `puff.c`), slow and
/// strict: the oracle for what a connection compresses. Unlike zlib-rs, whose inflater keeps a
/// 32 KiB window whatever it is told, it refuses back-references beyond `1 << window_bits`
/// bytes, and it refuses a message that does not end on a block boundary.
#[derive(Debug)]
pub(crate) struct Puff {
    /// Everything decoded in this DEFLATE stream: the LZ77 history.
    history: Vec<u8>,
    window: usize,
}

impl Puff {
    pub(crate) fn new(window_bits: u8) -> Self {
        Self {
            history: Vec::new(),
            window: 1 << window_bits,
        }
    }

    /// Decodes one message payload as RFC 7692 §7.2.2 says (`00 00 ff ff` appended); the window
    /// carries over to the next call (context takeover). A block with BFINAL is refused: a
    /// sync-flushing sender never ends its stream.
    pub(crate) fn message(&mut self, payload: &[u8]) -> Result<Vec<u8>, String> {
        let input = [payload, &TRAILER[..]].concat();
        let mut bits = Bits {
            data: &input,
            pos: 0,
            buf: 0,
            count: 0,
        };
        let start = self.history.len();
        while !(bits.pos == bits.data.len() && bits.count == 0) {
            if bits.need(1)? == 1 {
                return Err("block with BFINAL set".into());
            }
            match bits.need(2)? {
                0 => self.stored(&mut bits)?,
                1 => {
                    let mut lengths = [0u8; 288];
                    lengths[..144].fill(8);
                    lengths[144..256].fill(9);
                    lengths[256..280].fill(7);
                    lengths[280..].fill(8);
                    let lencode = Huffman::new(&lengths)?;
                    let distcode = Huffman::new(&[5; 30])?;
                    self.codes(&mut bits, &lencode, &distcode)?;
                }
                2 => {
                    let (lencode, distcode) = dynamic_codes(&mut bits)?;
                    self.codes(&mut bits, &lencode, &distcode)?;
                }
                _ => return Err("block type 11".into()),
            }
        }
        Ok(self.history[start..].to_vec())
    }

    fn stored(&mut self, bits: &mut Bits<'_>) -> Result<(), String> {
        bits.buf = 0;
        bits.count = 0;
        let header = bits
            .data
            .get(bits.pos..bits.pos + 4)
            .ok_or("truncated stored block header")?;
        let len = u16::from_le_bytes([header[0], header[1]]);
        let nlen = u16::from_le_bytes([header[2], header[3]]);
        if len != !nlen {
            return Err("stored block NLEN is not !LEN".into());
        }
        bits.pos += 4;
        let body = bits
            .data
            .get(bits.pos..bits.pos + usize::from(len))
            .ok_or("truncated stored block")?;
        self.history.extend_from_slice(body);
        bits.pos += usize::from(len);
        Ok(())
    }

    fn codes(
        &mut self,
        bits: &mut Bits<'_>,
        lencode: &Huffman,
        distcode: &Huffman,
    ) -> Result<(), String> {
        const LEN_BASE: [usize; 29] = [
            3, 4, 5, 6, 7, 8, 9, 10, 11, 13, 15, 17, 19, 23, 27, 31, 35, 43, 51, 59, 67, 83, 99,
            115, 131, 163, 195, 227, 258,
        ];
        const LEN_EXTRA: [u32; 29] = [
            0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3, 4, 4, 4, 4, 5, 5, 5, 5, 0,
        ];
        const DIST_BASE: [usize; 30] = [
            1, 2, 3, 4, 5, 7, 9, 13, 17, 25, 33, 49, 65, 97, 129, 193, 257, 385, 513, 769, 1025,
            1537, 2049, 3073, 4097, 6145, 8193, 12289, 16385, 24577,
        ];
        const DIST_EXTRA: [u32; 30] = [
            0, 0, 0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6, 7, 7, 8, 8, 9, 9, 10, 10, 11, 11, 12,
            12, 13, 13,
        ];
        loop {
            let symbol = lencode.decode(bits)?;
            if symbol < 256 {
                self.history.push(symbol as u8);
                continue;
            }
            if symbol == 256 {
                return Ok(());
            }
            let symbol = symbol - 257;
            if symbol >= 29 {
                return Err(format!("invalid length symbol {}", symbol + 257));
            }
            let len = LEN_BASE[symbol] + bits.need(LEN_EXTRA[symbol])? as usize;
            let dsym = distcode.decode(bits)?;
            if dsym >= 30 {
                return Err(format!("invalid distance symbol {dsym}"));
            }
            let dist = DIST_BASE[dsym] + bits.need(DIST_EXTRA[dsym])? as usize;
            if dist > self.history.len() {
                return Err(format!("distance {dist} before the start of the stream"));
            }
            if dist > self.window {
                return Err(format!(
                    "distance {dist} beyond the {}-byte window",
                    self.window
                ));
            }
            for _ in 0..len {
                self.history.push(self.history[self.history.len() - dist]);
            }
        }
    }
}

struct Bits<'a> {
    data: &'a [u8],
    pos: usize,
    buf: u32,
    count: u32,
}

impl Bits<'_> {
    fn need(&mut self, n: u32) -> Result<u32, String> {
        while self.count < n {
            let byte = *self.data.get(self.pos).ok_or("truncated block")?;
            self.buf |= u32::from(byte) << self.count;
            self.pos += 1;
            self.count += 8;
        }
        let value = self.buf & ((1u32 << n) - 1);
        self.buf = if n == 32 { 0 } else { self.buf >> n };
        self.count -= n;
        Ok(value)
    }
}

/// A canonical Huffman code (RFC 1951 §3.2.2): how many codes of each length, and the symbols
/// in code order.
struct Huffman {
    count: [i32; 16],
    symbol: Vec<usize>,
}

impl Huffman {
    /// Refuses over-subscribed codes; incomplete ones are refused later by `decode`, when a
    /// missing code is met (puff.c allows them only for a single code of length one).
    fn new(lengths: &[u8]) -> Result<Self, String> {
        let mut count = [0i32; 16];
        for &len in lengths {
            count[usize::from(len)] += 1;
        }
        let mut left = 1i32;
        for &c in &count[1..] {
            left = (left << 1) - c;
            if left < 0 {
                return Err("over-subscribed code".into());
            }
        }
        let mut offset = [0usize; 16];
        for len in 1..15 {
            offset[len + 1] = offset[len] + count[len] as usize;
        }
        let mut symbol = vec![0; lengths.len()];
        for (s, &len) in lengths.iter().enumerate() {
            if len != 0 {
                symbol[offset[usize::from(len)]] = s;
                offset[usize::from(len)] += 1;
            }
        }
        Ok(Self { count, symbol })
    }

    fn decode(&self, bits: &mut Bits<'_>) -> Result<usize, String> {
        let (mut code, mut first, mut index) = (0i32, 0i32, 0i32);
        for len in 1..16 {
            code |= bits.need(1)? as i32;
            let count = self.count[len];
            if code - count < first {
                return Ok(self.symbol[(index + (code - first)) as usize]);
            }
            index += count;
            first += count;
            first <<= 1;
            code <<= 1;
        }
        Err("code not in the Huffman table".into())
    }
}

fn dynamic_codes(bits: &mut Bits<'_>) -> Result<(Huffman, Huffman), String> {
    const ORDER: [usize; 19] = [
        16, 17, 18, 0, 8, 7, 9, 6, 10, 5, 11, 4, 12, 3, 13, 2, 14, 1, 15,
    ];
    let nlen = bits.need(5)? as usize + 257;
    let ndist = bits.need(5)? as usize + 1;
    let ncode = bits.need(4)? as usize + 4;
    if nlen > 286 || ndist > 30 {
        return Err("too many length or distance codes".into());
    }
    let mut cl_lengths = [0u8; 19];
    for &i in &ORDER[..ncode] {
        cl_lengths[i] = bits.need(3)? as u8;
    }
    let clcode = Huffman::new(&cl_lengths)?;
    let mut lengths = vec![0u8; nlen + ndist];
    let mut i = 0;
    while i < nlen + ndist {
        let symbol = clcode.decode(bits)?;
        let (value, repeat) = match symbol {
            0..=15 => (symbol as u8, 1),
            16 => {
                let previous = *lengths[..i]
                    .last()
                    .ok_or("repeat with no previous length")?;
                (previous, 3 + bits.need(2)? as usize)
            }
            17 => (0, 3 + bits.need(3)? as usize),
            _ => (0, 11 + bits.need(7)? as usize),
        };
        if i + repeat > nlen + ndist {
            return Err("too many code lengths".into());
        }
        lengths[i..i + repeat].fill(value);
        i += repeat;
    }
    if lengths[256] == 0 {
        return Err("no end-of-block code".into());
    }
    Ok((
        Huffman::new(&lengths[..nlen])?,
        Huffman::new(&lengths[nlen..])?,
    ))
}
