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
