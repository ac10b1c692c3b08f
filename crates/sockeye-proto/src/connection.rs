//! The connection state machine after the opening handshake
//! ([RFC 6455 §5](https://www.rfc-editor.org/rfc/rfc6455#section-5)–[§7](https://www.rfc-editor.org/rfc/rfc6455#section-7)).
//!
//! Bytes in ([`Connection::handle_bytes`]), events ([`Connection::poll_event`]) and bytes out
//! ([`Connection::poll_transmit`]). The caller owns the socket and the clock.
//!
//! # Call order
//!
//! 1. Feed every byte read from the transport to [`handle_bytes`](Connection::handle_bytes), and
//!    end of stream to [`handle_eof`](Connection::handle_eof).
//! 2. After every `handle_*`, [`send`](Connection::send) or [`close`](Connection::close), call
//!    [`poll_transmit`](Connection::poll_transmit) until it returns [`Transmit::Idle`] and write
//!    what it gave; on [`Transmit::Shutdown`] shut the transport's write side down.
//! 3. Drain [`poll_event`](Connection::poll_event), then call `poll_transmit` again: a
//!    violation found behind complete messages queues its close frame only once those messages
//!    are taken (so replies to them go out first).
//! 4. While [`close_expected`](Connection::close_expected) is true, run a close timer; when it
//!    fires, call [`handle_timeout`](Connection::handle_timeout).

use std::collections::VecDeque;
use std::fmt;

use bytes::{Bytes, BytesMut};

use crate::config::Config;
use crate::deflate::{DeflateConfig, DeflateParams, Deflater, InflateError, Inflater};
use crate::error::{ProtocolError, SendError};
use crate::frame::{
    apply_mask, CloseCode, CloseFrame, FrameHeader, OpCode, MAX_CLOSE_REASON, MAX_CONTROL_PAYLOAD,
    MAX_HEADER_SIZE,
};
use crate::message::{DataKind, Message, Utf8Bytes, Utf8State, Utf8Validator};

/// Which end of the connection this is. Clients mask, servers do not (§5.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    /// The end that sent the opening handshake request.
    Client,
    /// The end that answered it.
    Server,
}

/// Supplies client masking keys. RFC 6455 §5.3: "The masking key MUST be derived from a strong
/// source of entropy"; production callers use a CSPRNG, tests a fixed key.
pub trait MaskSource: Send {
    /// A fresh 4-byte masking key.
    fn next_mask(&mut self) -> [u8; 4];
}

impl<F: FnMut() -> [u8; 4] + Send> MaskSource for F {
    fn next_mask(&mut self) -> [u8; 4] {
        self()
    }
}

/// The connection's ready state, with the names of the browser's `WebSocket.readyState`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum State {
    /// The opening handshake is in progress. A [`Connection`] starts after it, so it is never in
    /// this state; the client and server handshake types are.
    Connecting,
    /// Data can flow both ways.
    Open,
    /// A close frame was sent or received; the handshake is not finished.
    Closing,
    /// The connection is closed; [`Event::Closed`] was emitted.
    Closed,
}

/// Who started the end of the connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Initiator {
    /// This end's application called [`Connection::close`].
    Application,
    /// The library failed the connection (a protocol violation) or a close timer fired.
    Library,
    /// The peer sent a close frame or dropped the connection.
    Remote,
}

/// How the connection ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Closed {
    /// The code of the peer's close frame; 1005 when it had none, 1006 when there was no close
    /// handshake, or the code this end sent when it failed the connection.
    pub code: CloseCode,
    /// The reason that goes with `code`.
    pub reason: String,
    /// Who started the end.
    pub initiator: Initiator,
    /// Whether both close frames were exchanged.
    pub was_clean: bool,
    /// The violation, when the library failed the connection.
    pub error: Option<ProtocolError>,
}

/// Something that happened on the connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A message arrived. Data messages that arrive after this end sent a close frame are
    /// delivered too, until the peer's close frame (RFC 6455 §1.4).
    Message(Message),
    /// The connection is closed. Always the last event.
    Closed(Closed),
}

/// What [`Connection::poll_transmit`] produced.
#[must_use]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transmit {
    /// Nothing to write.
    Idle,
    /// Bytes were appended to the caller's buffer.
    Bytes,
    /// Everything is written: shut the transport's write side down. Returned once.
    Shutdown,
}

#[derive(Debug, Clone, Copy)]
enum ReadState {
    Header,
    Payload {
        header: FrameHeader,
        remaining: u64,
        offset: usize,
    },
    /// After a close frame or a failure: input is ignored (§5.5.1, §7.1.7).
    Discard,
}

/// A WebSocket connection after the opening handshake: a pure state machine.
///
/// ```
/// use sockeye_proto::{Config, Connection, DataKind, Event, Message, Role, Transmit};
///
/// let mut server = Connection::new(Role::Server, Config::default(), Box::new(|| [0u8; 4]));
/// // A masked "Hi" from a client (mask 0 leaves the payload as is).
/// server.handle_bytes(&[0x81, 0x82, 0, 0, 0, 0, b'H', b'i']);
/// assert_eq!(server.poll_event(), Some(Event::Message(Message::text("Hi"))));
/// server.send(DataKind::Text, b"Hi").unwrap();
/// let mut out = Vec::new();
/// assert_eq!(server.poll_transmit(&mut out), Transmit::Bytes);
/// assert_eq!(out, [0x81, 0x02, b'H', b'i']);
/// ```
pub struct Connection {
    role: Role,
    config: Config,
    masks: Box<dyn MaskSource>,
    read: ReadState,
    header_buf: [u8; MAX_HEADER_SIZE],
    header_len: usize,
    /// Kind of the data message being received, if any.
    receiving: Option<DataKind>,
    message: BytesMut,
    utf8: Utf8Validator,
    utf8_state: Utf8State,
    control: Vec<u8>,
    /// Pongs owed, written at the next `poll_transmit` (at most `MAX_PENDING_PONGS`).
    pending_pongs: VecDeque<Bytes>,
    /// permessage-deflate, when negotiated.
    deflate: Option<Box<Deflate>>,
    /// Whether the data message being received is compressed (RSV1 on its first frame).
    compressed: bool,
    /// Whether the fragmented message being sent is compressed.
    sending_compressed: bool,
    out: Vec<u8>,
    /// Payloads queued by [`send_shared`](Connection::send_shared) without a copy, in order:
    /// each goes on the wire between `out[..position]` and `out[position..]`.
    /// Boxed and created on first use: a connection lives inline in the stream, idle or not.
    #[allow(clippy::box_collection, reason = "8 bytes inline instead of 32")]
    shared: Option<Box<VecDeque<(usize, Bytes)>>>,
    /// Kind of the fragmented message being sent, if any.
    sending: Option<DataKind>,
    close_sent: bool,
    close_received: bool,
    /// Code and reason of the peer's close frame, and who started the close handshake.
    close_info: Option<(CloseCode, String, Initiator)>,
    closed: bool,
    shutdown_sent: bool,
    /// A violation or the peer's close frame, found while earlier events were still queued;
    /// acted on once they are taken.
    deferred: Option<Deferred>,
    /// Input kept unparsed while queued data messages are over budget.
    stashed: Vec<u8>,
    /// End of stream seen while input was stashed.
    eof_after_stash: bool,
    /// Payload bytes of the data messages in `events`.
    queued_bytes: usize,
    events: VecDeque<Event>,
}

impl fmt::Debug for Connection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Connection")
            .field("role", &self.role)
            .field("state", &self.state())
            .field("read", &self.read)
            .field("buffered_out", &self.out.len())
            .finish_non_exhaustive()
    }
}

impl Connection {
    /// A connection in the [`State::Open`] state.
    pub fn new(role: Role, config: Config, masks: Box<dyn MaskSource>) -> Self {
        Self {
            role,
            config,
            masks,
            read: ReadState::Header,
            header_buf: [0; MAX_HEADER_SIZE],
            header_len: 0,
            receiving: None,
            message: BytesMut::new(),
            utf8: Utf8Validator::new(),
            utf8_state: Utf8State::Complete,
            control: Vec::new(),
            pending_pongs: VecDeque::new(),
            deflate: None,
            compressed: false,
            sending_compressed: false,
            out: Vec::new(),
            shared: None,
            sending: None,
            close_sent: false,
            close_received: false,
            close_info: None,
            closed: false,
            shutdown_sent: false,
            deferred: None,
            stashed: Vec::new(),
            eof_after_stash: false,
            queued_bytes: 0,
            events: VecDeque::new(),
        }
    }

    /// Enables permessage-deflate with the parameters agreed in the opening handshake; `config`
    /// gives this end's compression level and threshold.
    #[must_use]
    pub fn with_deflate(mut self, params: DeflateParams, config: &DeflateConfig) -> Self {
        let (own_bits, own_reset, peer_bits, peer_reset) = match self.role {
            Role::Server => (
                params.server_max_window_bits,
                params.server_no_context_takeover,
                params.client_max_window_bits,
                params.client_no_context_takeover,
            ),
            Role::Client => (
                params.client_max_window_bits,
                params.client_no_context_takeover,
                params.server_max_window_bits,
                params.server_no_context_takeover,
            ),
        };
        self.deflate = Some(Box::new(Deflate {
            deflater: Deflater::new(own_bits, own_reset, config.level),
            inflater: Inflater::new(peer_bits, peer_reset),
            threshold: config.compression_threshold,
            params,
            scratch: Vec::new(),
        }));
        self
    }

    /// The permessage-deflate parameters in force, if it was negotiated.
    pub fn deflate_params(&self) -> Option<&DeflateParams> {
        self.deflate.as_deref().map(|d| &d.params)
    }

    /// This end's role.
    pub fn role(&self) -> Role {
        self.role
    }

    /// The limits in force.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The ready state.
    pub fn state(&self) -> State {
        if self.closed {
            State::Closed
        } else if self.close_sent || self.close_received {
            State::Closing
        } else {
            State::Open
        }
    }

    /// Bytes queued for the transport and not yet taken by [`poll_transmit`](Self::poll_transmit).
    pub fn buffered_amount(&self) -> usize {
        self.out.len()
            + self
                .shared
                .iter()
                .flat_map(|queue| queue.iter())
                .map(|(_, p)| p.len())
                .sum::<usize>()
            + self
                .pending_pongs
                .iter()
                .map(|p| p.len() + 2)
                .sum::<usize>()
    }

    /// True while this end waits for the peer's close frame or, as a client, for the server to
    /// close TCP (§7.1.1: the server closes first). The caller then runs a close timer and calls
    /// [`handle_timeout`](Self::handle_timeout) when it fires.
    pub fn close_expected(&self) -> bool {
        self.close_sent && !self.closed
    }

    /// Feeds bytes read from the transport. Never fails: a violation queues a close frame and
    /// [`Event::Closed`], and later input is ignored.
    ///
    /// Once the data messages waiting in [`poll_event`](Self::poll_event) reach
    /// `max_message_size` bytes, the rest of the input is kept (not parsed) until they are
    /// taken: compressed input cannot make queued messages outgrow the limit, whatever the size
    /// of one read. A caller that reads only when `poll_event` returns `None` keeps that stash
    /// within one read.
    pub fn handle_bytes(&mut self, data: &[u8]) {
        if !self.stashed.is_empty() {
            self.stashed.extend_from_slice(data);
            self.resume_stashed();
            return;
        }
        let rest = self.process(data);
        if !rest.is_empty() {
            self.stashed.extend_from_slice(rest);
        }
    }

    fn over_budget(&self) -> bool {
        self.queued_bytes > 0
            && self
                .config
                .max_message_size
                .is_some_and(|limit| self.queued_bytes >= limit)
    }

    /// Parses stashed input while under budget.
    fn resume_stashed(&mut self) {
        if self.stashed.is_empty() || self.over_budget() {
            return;
        }
        let mut stashed = std::mem::take(&mut self.stashed);
        let consumed = stashed.len() - self.process(&stashed).len();
        stashed.drain(..consumed);
        self.stashed = stashed;
        if self.stashed.is_empty() && std::mem::take(&mut self.eof_after_stash) {
            self.handle_eof();
        }
    }

    /// Parses `data`; returns the part left unparsed because queued messages reached the budget.
    fn process<'a>(&mut self, mut data: &'a [u8]) -> &'a [u8] {
        while !data.is_empty() {
            if matches!(self.read, ReadState::Discard) {
                return &[];
            }
            if self.over_budget() {
                return data;
            }
            match self.read {
                ReadState::Discard => return &[],
                ReadState::Header if self.header_len == 0 => {
                    // The usual case: the whole header is in this read; parse it in place.
                    match FrameHeader::parse(data) {
                        Ok(None) => {
                            // Shorter than the header, so shorter than MAX_HEADER_SIZE; were it
                            // not, the rest would go through the general path below.
                            let keep = data.len().min(MAX_HEADER_SIZE);
                            self.header_buf[..keep].copy_from_slice(&data[..keep]);
                            self.header_len = keep;
                            data = &data[keep..];
                        }
                        Ok(Some((header, used))) => {
                            data = &data[used..];
                            self.start_frame(header);
                        }
                        Err(err) => {
                            self.fail(err);
                            return &[];
                        }
                    }
                }
                ReadState::Header => {
                    let take = (MAX_HEADER_SIZE - self.header_len).min(data.len());
                    let had = self.header_len;
                    self.header_buf[had..had + take].copy_from_slice(&data[..take]);
                    match FrameHeader::parse(&self.header_buf[..had + take]) {
                        Ok(None) => {
                            self.header_len = had + take;
                            data = &data[take..];
                        }
                        Ok(Some((header, used))) => {
                            self.header_len = 0;
                            data = &data[used - had..];
                            self.start_frame(header);
                        }
                        Err(err) => {
                            self.fail(err);
                            return &[];
                        }
                    }
                }
                ReadState::Payload {
                    header,
                    remaining,
                    offset,
                } => {
                    let take = usize::try_from(remaining).map_or(data.len(), |r| r.min(data.len()));
                    let (chunk, rest) = data.split_at(take);
                    data = rest;
                    let remaining = remaining - take as u64;
                    self.read = ReadState::Payload {
                        header,
                        remaining,
                        offset: offset + take,
                    };
                    self.handle_payload(&header, chunk, offset, data.len());
                    if remaining == 0 && matches!(self.read, ReadState::Payload { .. }) {
                        self.finish_frame(&header);
                    }
                }
            }
        }
        &[]
    }

    /// Reports that the transport reached end of stream. Without a finished close handshake this
    /// closes the connection abnormally (code 1006).
    pub fn handle_eof(&mut self) {
        if !self.stashed.is_empty() && !matches!(self.read, ReadState::Discard) {
            // The end comes after the stashed input: act on it once that is parsed.
            self.eof_after_stash = true;
            return;
        }
        self.read = ReadState::Discard;
        self.run_deferred();
        if self.closed {
            return;
        }
        if self.close_sent && self.close_received {
            let (code, reason, initiator) = self.close_info.take().unwrap_or((
                CloseCode::NO_STATUS_RCVD,
                String::new(),
                Initiator::Remote,
            ));
            self.finish(code, reason, initiator, true, None);
        } else {
            self.finish(
                CloseCode::ABNORMAL,
                String::new(),
                Initiator::Remote,
                false,
                None,
            );
        }
    }

    /// Reports that the close timer armed while [`close_expected`](Self::close_expected) fired:
    /// the connection is closed now and the transport should be dropped.
    pub fn handle_timeout(&mut self) {
        self.stashed = Vec::new();
        self.run_deferred();
        if !self.close_expected() {
            return;
        }
        self.read = ReadState::Discard;
        match self.close_info.take() {
            Some((code, reason, initiator)) if self.close_received => {
                self.finish(code, reason, initiator, true, None);
            }
            _ => self.finish(
                CloseCode::ABNORMAL,
                String::new(),
                Initiator::Library,
                false,
                None,
            ),
        }
    }

    /// Number of events ready to be taken by [`poll_event`](Self::poll_event).
    pub fn pending_events(&self) -> usize {
        self.events.len()
    }

    /// The next event, oldest first.
    ///
    /// A protocol violation or a close frame found after complete messages in the same input is
    /// acted on (close frame queued, [`Event::Closed`] emitted) only once those messages have
    /// been taken, so that what the application sends in answer to them goes out before the
    /// close frame.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.resume_stashed();
        if self.events.is_empty() {
            self.run_deferred();
        }
        let event = self.events.pop_front();
        if let Some(Event::Message(message)) = &event {
            if message.is_data() {
                self.queued_bytes -= message.as_payload().len();
            }
        }
        event
    }

    /// Appends bytes to write to `out`. Call after every input or command until it returns
    /// [`Transmit::Idle`].
    pub fn poll_transmit(&mut self, out: &mut Vec<u8>) -> Transmit {
        self.write_pending_pongs();
        if let Some(shared) = self.shared.take() {
            // Shared payloads are copied in place here; `poll_transmit_segments` avoids that.
            out.reserve(self.buffered_amount());
            let mut written = 0;
            for (position, payload) in *shared {
                out.extend_from_slice(&self.out[written..position]);
                out.extend_from_slice(&payload);
                written = position;
            }
            out.extend_from_slice(&self.out[written..]);
            self.out.clear();
            return Transmit::Bytes;
        }
        if !self.out.is_empty() {
            if out.is_empty() {
                std::mem::swap(out, &mut self.out);
            } else {
                out.append(&mut self.out);
            }
            return Transmit::Bytes;
        }
        if self.closed && !self.shutdown_sent {
            self.shutdown_sent = true;
            return Transmit::Shutdown;
        }
        Transmit::Idle
    }

    /// Like [`poll_transmit`](Self::poll_transmit), but payloads queued by
    /// [`send_shared`](Self::send_shared) are handed out as they are instead of being copied
    /// into `out`: each is added to `shared` as `(position, payload)`, meaning that `payload`
    /// goes on the wire after `out[..position]` and before `out[position..]` (positions index
    /// `out` as it is on return, in increasing order). Meant for vectored writes.
    ///
    /// ```
    /// use bytes::Bytes;
    /// use sockeye_proto::{Config, Connection, DataKind, Role, Transmit, SHARE_THRESHOLD};
    ///
    /// let mut server = Connection::new(Role::Server, Config::default(), Box::new(|| [0u8; 4]));
    /// let payload = Bytes::from(vec![7u8; SHARE_THRESHOLD]);
    /// server.send_shared(DataKind::Binary, payload.clone()).unwrap();
    /// server.ping(b"p").unwrap();
    /// let (mut out, mut shared) = (Vec::new(), Vec::new());
    /// assert_eq!(server.poll_transmit_segments(&mut out, &mut shared), Transmit::Bytes);
    /// // Header (4 bytes: 16-bit length), then the payload itself, then the ping.
    /// assert_eq!(out, [0x82, 126, 0x40, 0x00, 0x89, 1, b'p']);
    /// assert_eq!(shared, [(4, payload)]);
    /// ```
    pub fn poll_transmit_segments(
        &mut self,
        out: &mut Vec<u8>,
        shared: &mut impl Extend<(usize, Bytes)>,
    ) -> Transmit {
        self.write_pending_pongs();
        let Some(queue) = self.shared.take() else {
            return self.poll_transmit(out);
        };
        let base = out.len();
        shared.extend(
            queue
                .into_iter()
                .map(|(position, payload)| (base + position, payload)),
        );
        if out.is_empty() {
            std::mem::swap(out, &mut self.out);
        } else {
            out.append(&mut self.out);
        }
        Transmit::Bytes
    }

    /// Queues a whole message as one frame, like [`send`](Self::send), taking the payload as
    /// shared [`Bytes`]. When the frame needs neither masking (a server's) nor compression and
    /// the payload has at least [`SHARE_THRESHOLD`] bytes, only the header is encoded and the
    /// queue keeps the payload itself, which
    /// [`poll_transmit_segments`](Self::poll_transmit_segments) hands out without a copy;
    /// otherwise this is [`send`](Self::send).
    ///
    /// # Errors
    ///
    /// As [`send`](Self::send).
    pub fn send_shared(&mut self, kind: DataKind, payload: Bytes) -> Result<(), SendError> {
        if payload.len() < SHARE_THRESHOLD
            || self.role == Role::Client
            || self.should_compress(payload.len())
        {
            return self.send(kind, &payload);
        }
        self.check_open()?;
        if self.sending.is_some() {
            return Err(SendError::FragmentInProgress);
        }
        FrameHeader::new(opcode_of(kind), payload.len() as u64).encode(&mut self.out);
        let position = self.out.len();
        self.shared
            .get_or_insert_with(Box::default)
            .push_back((position, payload));
        Ok(())
    }

    /// Queues a whole message as one frame.
    ///
    /// # Errors
    ///
    /// [`SendError::Closed`] after a close frame was sent, [`SendError::FragmentInProgress`] while
    /// a message started with [`send_fragment`](Self::send_fragment) is unfinished.
    pub fn send(&mut self, kind: DataKind, payload: &[u8]) -> Result<(), SendError> {
        self.check_open()?;
        if self.sending.is_some() {
            return Err(SendError::FragmentInProgress);
        }
        let compress = self.should_compress(payload.len());
        self.write_data(opcode_of(kind), true, compress, payload);
        Ok(())
    }

    fn should_compress(&self, len: usize) -> bool {
        self.deflate
            .as_deref()
            .is_some_and(|d| d.deflater.is_enabled() && len >= d.threshold)
    }

    /// Writes a data frame, compressing its payload when `compress` (RSV1 goes on the first
    /// frame of the message only, §6.1 of RFC 7692).
    fn write_data(&mut self, opcode: OpCode, fin: bool, compress: bool, payload: &[u8]) {
        match self.deflate.as_deref_mut() {
            Some(deflate) if compress => {
                let mut scratch = std::mem::take(&mut deflate.scratch);
                scratch.clear();
                deflate.deflater.compress(payload, fin, &mut scratch);
                let rsv1 = opcode != OpCode::Continuation;
                self.write_frame_with(opcode, fin, rsv1, &scratch);
                if let Some(deflate) = self.deflate.as_deref_mut() {
                    if scratch.capacity() <= SCRATCH_KEEP {
                        deflate.scratch = scratch;
                    }
                }
            }
            _ => self.write_frame(opcode, fin, payload),
        }
    }

    /// Queues one fragment of a message (§5.4). The first call's `kind` sets the message's type;
    /// later calls must pass the same `kind`; `fin` ends the message. Control frames may be sent
    /// between fragments.
    ///
    /// # Errors
    ///
    /// [`SendError::Closed`] after a close frame was sent, [`SendError::FragmentInProgress`] when
    /// `kind` differs from the message in progress.
    pub fn send_fragment(
        &mut self,
        kind: DataKind,
        payload: &[u8],
        fin: bool,
    ) -> Result<(), SendError> {
        self.check_open()?;
        let opcode = match self.sending {
            None => {
                self.sending_compressed = self.should_compress(payload.len());
                opcode_of(kind)
            }
            Some(current) if current == kind => OpCode::Continuation,
            Some(_) => return Err(SendError::FragmentInProgress),
        };
        self.sending = if fin { None } else { Some(kind) };
        let compress = self.sending_compressed;
        self.write_data(opcode, fin, compress, payload);
        Ok(())
    }

    /// Queues a ping.
    ///
    /// # Errors
    ///
    /// [`SendError::Closed`] after a close frame was sent, [`SendError::ControlFrameTooBig`] for a
    /// payload over 125 bytes.
    pub fn ping(&mut self, payload: &[u8]) -> Result<(), SendError> {
        self.send_control(OpCode::Ping, payload)
    }

    /// Queues an unsolicited pong (a unidirectional heartbeat, §5.5.3).
    ///
    /// # Errors
    ///
    /// As [`ping`](Self::ping).
    pub fn pong(&mut self, payload: &[u8]) -> Result<(), SendError> {
        self.send_control(OpCode::Pong, payload)
    }

    /// Starts the closing handshake with `code` and `reason`; no data frame may follow.
    ///
    /// # Errors
    ///
    /// [`SendError::Closed`] when a close frame was already sent,
    /// [`SendError::InvalidCloseCode`] for a code that may not be sent,
    /// [`SendError::CloseReasonTooLong`] for a reason over 123 bytes. Nothing is sent on error.
    pub fn close(&mut self, code: CloseCode, reason: &str) -> Result<(), SendError> {
        self.check_open()?;
        if !code.is_sendable() {
            return Err(SendError::InvalidCloseCode(code.0));
        }
        if reason.len() > MAX_CLOSE_REASON {
            return Err(SendError::CloseReasonTooLong);
        }
        self.write_close(Some(code), reason);
        self.close_info = Some((
            CloseCode::NO_STATUS_RCVD,
            String::new(),
            Initiator::Application,
        ));
        Ok(())
    }

    /// Ends the connection now for a local reason (keepalive timeout, slow consumer, shutdown
    /// deadline): output not yet taken by [`poll_transmit`](Self::poll_transmit) is discarded, a
    /// close frame with `code` is queued unless one was sent, and [`Event::Closed`] (not clean,
    /// initiator [`Initiator::Library`]) follows. Does nothing once closed.
    pub fn abort(&mut self, code: CloseCode, reason: &str) {
        if self.closed {
            return;
        }
        self.deferred = None;
        self.stashed = Vec::new();
        self.out.clear();
        self.shared = None;
        self.pending_pongs.clear();
        if !self.close_sent && code.is_sendable() {
            self.write_close(Some(code), reason);
        }
        self.finish(code, reason.to_owned(), Initiator::Library, false, None);
    }

    fn check_open(&self) -> Result<(), SendError> {
        if self.close_sent || self.closed {
            Err(SendError::Closed)
        } else {
            Ok(())
        }
    }

    fn send_control(&mut self, opcode: OpCode, payload: &[u8]) -> Result<(), SendError> {
        self.check_open()?;
        if payload.len() > MAX_CONTROL_PAYLOAD {
            return Err(SendError::ControlFrameTooBig);
        }
        self.write_frame(opcode, true, payload);
        Ok(())
    }

    fn write_pending_pongs(&mut self) {
        while let Some(payload) = self.pending_pongs.pop_front() {
            if !self.close_sent {
                self.write_frame(OpCode::Pong, true, &payload);
            }
        }
    }

    fn write_close(&mut self, code: Option<CloseCode>, reason: &str) {
        // Pongs owed for pings received before this close go out first.
        self.write_pending_pongs();
        let mut payload = [0u8; MAX_CONTROL_PAYLOAD];
        let len = match code {
            Some(code) => {
                payload[..2].copy_from_slice(&code.0.to_be_bytes());
                let reason = truncate_utf8(reason, MAX_CLOSE_REASON);
                payload[2..2 + reason.len()].copy_from_slice(reason.as_bytes());
                2 + reason.len()
            }
            None => 0,
        };
        self.write_frame(OpCode::Close, true, &payload[..len]);
        self.close_sent = true;
    }

    fn write_frame(&mut self, opcode: OpCode, fin: bool, payload: &[u8]) {
        self.write_frame_with(opcode, fin, false, payload);
    }

    fn write_frame_with(&mut self, opcode: OpCode, fin: bool, rsv1: bool, payload: &[u8]) {
        let mut header = FrameHeader::new(opcode, payload.len() as u64);
        header.fin = fin;
        header.rsv1 = rsv1;
        if self.role == Role::Client {
            header.mask = Some(self.masks.next_mask());
        }
        self.out.reserve(header.encoded_len() + payload.len());
        header.encode(&mut self.out);
        let start = self.out.len();
        self.out.extend_from_slice(payload);
        if let Some(key) = header.mask {
            apply_mask(&mut self.out[start..], key, 0);
        }
    }

    fn start_frame(&mut self, header: FrameHeader) {
        if let Err(err) = self.check_header(&header) {
            return self.fail(err);
        }
        if let Some(kind) = data_kind(header.opcode) {
            self.receiving = Some(kind);
            self.compressed = header.rsv1;
            self.message.clear();
            self.utf8.reset();
            self.utf8_state = Utf8State::Complete;
        }
        if header.opcode.is_control() {
            self.control.clear();
        }
        self.read = ReadState::Payload {
            header,
            remaining: header.payload_len,
            offset: 0,
        };
        if header.payload_len == 0 {
            self.finish_frame(&header);
        }
    }

    fn check_header(&self, header: &FrameHeader) -> Result<(), ProtocolError> {
        match (self.role, header.mask.is_some()) {
            (Role::Server, false) => return Err(ProtocolError::UnmaskedFrame),
            (Role::Client, true) => return Err(ProtocolError::MaskedFrame),
            _ => {}
        }
        // §5.2: "MUST be 0 unless an extension is negotiated that defines meanings for non-zero
        // values. If a nonzero value is received ... the receiving endpoint MUST _Fail the
        // WebSocket Connection_."
        if header.rsv2 || header.rsv3 {
            return Err(ProtocolError::ReservedBits);
        }
        // RFC 7692 §6.1: RSV1 marks the first frame of a compressed message; on a control or
        // continuation frame, or without the extension, it is a violation.
        if header.rsv1
            && (self.deflate.is_none() || !matches!(header.opcode, OpCode::Text | OpCode::Binary))
        {
            return Err(ProtocolError::ReservedBits);
        }
        if header.opcode.is_control() {
            // §5.5: "All control frames MUST have a payload length of 125 bytes or less and MUST
            // NOT be fragmented."
            if header.payload_len > MAX_CONTROL_PAYLOAD as u64 {
                return Err(ProtocolError::ControlFrameTooBig);
            }
            if !header.fin {
                return Err(ProtocolError::FragmentedControlFrame);
            }
            return Ok(());
        }
        match (header.opcode, self.receiving) {
            (OpCode::Continuation, None) => return Err(ProtocolError::UnexpectedContinuation),
            (OpCode::Text | OpCode::Binary, Some(_)) => {
                return Err(ProtocolError::ExpectedContinuation)
            }
            _ => {}
        }
        if let Some(limit) = self.config.max_frame_size {
            if header.payload_len > limit as u64 {
                return Err(ProtocolError::FrameTooBig { limit });
            }
        }
        let compressed = if header.opcode == OpCode::Continuation {
            self.compressed
        } else {
            header.rsv1
        };
        // A compressed message's size is known only while inflating; it is checked there.
        if let (Some(limit), false) = (self.config.max_message_size, compressed) {
            let so_far = if header.opcode == OpCode::Continuation {
                self.message.len() as u64
            } else {
                0
            };
            if so_far + header.payload_len > limit as u64 {
                return Err(ProtocolError::MessageTooBig { limit });
            }
        }
        Ok(())
    }

    /// Takes the payload bytes `chunk` of the current frame, `offset` bytes into it; `following`
    /// bytes of input come after it in this read.
    fn handle_payload(
        &mut self,
        header: &FrameHeader,
        chunk: &[u8],
        offset: usize,
        following: usize,
    ) {
        if header.opcode.is_control() {
            let start = self.control.len();
            self.control.extend_from_slice(chunk);
            if let Some(key) = header.mask {
                apply_mask(&mut self.control[start..], key, offset);
            }
            return;
        }
        if self.compressed {
            if let Err(err) = self.inflate_chunk(header, chunk, offset) {
                // What was inflated before the error is checked first, so that the violation
                // reported (1007 or 1009) does not depend on how the input was split.
                self.check_text();
                return self.fail(err);
            }
        } else {
            let frame_len = usize::try_from(header.payload_len).unwrap_or(usize::MAX);
            if self.message.is_empty()
                && offset == 0
                && frame_len > MESSAGE_BLOCK
                && self.config.max_message_size.is_some()
                && self.message.capacity() < frame_len
            {
                // A large frame gets its whole announced length at once (only under a
                // `max_message_size`, which `check_header` held it to): growing by doubling
                // would copy it again on every step and, with the common allocators, map fresh
                // pages for each message instead of reusing freed ones. The peer's header alone
                // asks for it (untouched, so not resident), so it is asked for fallibly: should
                // the allocator refuse, the message grows with the bytes that actually arrive
                // instead of aborting the process.
                // A buffer the application has given back is reused in place.
                if !self.message.try_reclaim(frame_len) {
                    let mut block = Vec::new();
                    if block.try_reserve_exact(frame_len).is_ok() {
                        // Unique and empty: the conversion keeps the allocation and capacity.
                        self.message = BytesMut::from(Bytes::from(block));
                    }
                }
            } else if self.message.is_empty() && self.message.capacity() < chunk.len() {
                // The messages that follow in the same read are carved one after another out of
                // one block of up to MESSAGE_BLOCK bytes (`finish_message` splits each off), so
                // one allocation serves a burst of small messages, while a lone message gets no
                // more than its size (nothing idle is kept). A block the application has given
                // back is reused in place.
                let burst = (chunk.len() + following).min(MESSAGE_BLOCK);
                self.message.reserve(chunk.len().max(burst));
            }
            let start = self.message.len();
            self.message.extend_from_slice(chunk);
            if let Some(key) = header.mask {
                apply_mask(&mut self.message[start..], key, offset);
            }
        }
        self.check_text();
    }

    fn inflate_chunk(
        &mut self,
        header: &FrameHeader,
        chunk: &[u8],
        offset: usize,
    ) -> Result<(), ProtocolError> {
        let limit = self.config.max_message_size;
        let Some(deflate) = self.deflate.as_deref_mut() else {
            return Err(ProtocolError::ReservedBits);
        };
        let result = match header.mask {
            Some(key) => {
                let mut scratch = std::mem::take(&mut deflate.scratch);
                scratch.clear();
                scratch.extend_from_slice(chunk);
                apply_mask(&mut scratch, key, offset);
                let result = deflate.inflater.inflate(
                    &scratch,
                    &mut self.message,
                    limit.unwrap_or(usize::MAX),
                );
                if scratch.capacity() <= SCRATCH_KEEP {
                    deflate.scratch = scratch;
                }
                result
            }
            None => deflate
                .inflater
                .inflate(chunk, &mut self.message, limit.unwrap_or(usize::MAX)),
        };
        result.map_err(|err| inflate_error(err, limit))
    }

    fn check_text(&mut self) {
        if self.receiving == Some(DataKind::Text) {
            // RFC 6455 §8.1: "When an endpoint is to interpret a byte stream as UTF-8 but finds
            // that the byte stream is not, in fact, a valid UTF-8 stream, that endpoint MUST
            // _Fail the WebSocket Connection_." Checked per chunk, so it fails fast.
            self.utf8_state = self.utf8.feed(&self.message);
            if self.utf8_state == Utf8State::Invalid {
                self.fail(ProtocolError::InvalidUtf8);
            }
        }
    }

    fn finish_frame(&mut self, header: &FrameHeader) {
        self.read = ReadState::Header;
        match header.opcode {
            OpCode::Ping => {
                let payload = bytes::Bytes::copy_from_slice(&self.control);
                // §5.5.2: "Upon receipt of a Ping frame, an endpoint MUST send a Pong frame in
                // response, unless it already received a Close frame."
                // §5.5.3: "If an endpoint receives a Ping frame and has not yet sent Pong
                // frame(s) in response to previous Ping frame(s), the endpoint MAY elect to send
                // a Pong frame for only the most recently processed Ping frame." Pongs wait in a
                // short queue until the next poll_transmit; a flood drops the oldest.
                if !self.close_sent {
                    if self.pending_pongs.len() == MAX_PENDING_PONGS {
                        self.pending_pongs.pop_front();
                    }
                    self.pending_pongs.push_back(payload.clone());
                }
                self.events
                    .push_back(Event::Message(Message::Ping(payload)));
            }
            OpCode::Pong => {
                let payload = bytes::Bytes::copy_from_slice(&self.control);
                self.events
                    .push_back(Event::Message(Message::Pong(payload)));
            }
            OpCode::Close => self.handle_close_frame(),
            OpCode::Continuation | OpCode::Text | OpCode::Binary => {
                if header.fin {
                    self.finish_message();
                }
            }
        }
    }

    fn finish_message(&mut self) {
        if self.compressed {
            self.compressed = false;
            let limit = self.config.max_message_size;
            let result = match self.deflate.as_deref_mut() {
                Some(deflate) => deflate
                    .inflater
                    .finish_message(&mut self.message, limit.unwrap_or(usize::MAX))
                    .map_err(|err| inflate_error(err, limit)),
                None => Err(ProtocolError::ReservedBits),
            };
            // As in `handle_payload`: the inflated text is checked before an inflate error.
            self.check_text();
            if let Err(err) = result {
                return self.fail(err);
            }
            if self.closed || self.deferred.is_some() {
                return;
            }
        }
        let kind = self.receiving.take();
        let payload = self.message.split().freeze();
        if self.message.capacity() > SCRATCH_KEEP {
            // Spare room shares the delivered message's allocation: let it go with it.
            self.message = BytesMut::new();
        }
        let message = match kind {
            Some(DataKind::Text) => {
                if self.utf8_state != Utf8State::Complete {
                    return self.fail(ProtocolError::InvalidUtf8);
                }
                Message::Text(Utf8Bytes::from_validated(payload))
            }
            Some(DataKind::Binary) => Message::Binary(payload),
            None => return,
        };
        // RFC 6455 §1.4: "after receiving a control frame indicating the connection should be
        // closed, a peer discards any further data received"; data that arrives after this end
        // sent its close frame, until the peer's, is delivered (the peer may have sent it
        // before it saw ours). The browser-shaped `WebSocket` drops it, as WHATWG's does.
        self.queued_bytes += message.as_payload().len();
        self.events.push_back(Event::Message(message));
    }

    fn handle_close_frame(&mut self) {
        let frame = match parse_close_payload(&self.control) {
            Ok(frame) => frame,
            Err(err) => return self.fail(err),
        };
        // §5.5.1: "After sending a Close frame, the endpoint MUST NOT send any further data
        // frames"; after receiving one, nothing further is read.
        self.read = ReadState::Discard;
        if !self.close_sent && !self.events.is_empty() {
            // Messages that came before the close frame are still unread: answer the close
            // once they are taken, so that replies to them can still be sent.
            self.deferred = Some(Deferred::Close(frame));
            return;
        }
        self.accept_close(frame);
    }

    /// Acts on a deferred violation or close frame.
    fn run_deferred(&mut self) {
        match self.deferred.take() {
            Some(Deferred::Failure(err)) => self.fail_now(err),
            Some(Deferred::Close(frame)) => self.accept_close(frame),
            None => {}
        }
    }

    fn accept_close(&mut self, frame: Option<CloseFrame>) {
        self.read = ReadState::Discard;
        self.close_received = true;
        let (code, reason) = match &frame {
            Some(f) => (f.code, f.reason.to_string()),
            None => (CloseCode::NO_STATUS_RCVD, String::new()),
        };
        let initiator = if self.close_sent {
            self.close_info
                .as_ref()
                .map_or(Initiator::Application, |info| info.2)
        } else {
            // §5.5.1: "If an endpoint receives a Close frame and did not previously send a Close
            // frame, the endpoint MUST send a Close frame in response. ... It SHOULD typically
            // echo the status code it received." The reason is echoed too (already checked as
            // UTF-8 of at most 123 bytes), as Node's `ws`, Python's `websockets` and Bun do: a
            // peer that reads the echo (a browser's `CloseEvent.reason`) sees what it sent.
            let reason = frame.as_ref().map_or("", |f| f.reason.as_str());
            self.write_close(frame.as_ref().map(|f| f.code), reason);
            Initiator::Remote
        };
        self.events.push_back(Event::Message(Message::Close(frame)));
        // §7.1.1: "the underlying TCP connection, in most normal cases, SHOULD be closed first by
        // the server". A client waits for the server's end of stream (or its close timer).
        if self.role == Role::Server {
            self.close_info = None;
            self.finish(code, reason, initiator, true, None);
        } else {
            self.close_info = Some((code, reason, initiator));
        }
    }

    /// _Fail the WebSocket Connection_ (§7.1.7): send a close frame if none was sent, stop
    /// reading, report [`Event::Closed`] and shut the transport down.
    fn fail(&mut self, err: ProtocolError) {
        self.read = ReadState::Discard;
        if self.closed || self.deferred.is_some() {
            return;
        }
        if !self.events.is_empty() {
            self.deferred = Some(Deferred::Failure(err));
            return;
        }
        self.fail_now(err);
    }

    fn fail_now(&mut self, err: ProtocolError) {
        if self.closed {
            return;
        }
        let code = err.close_code();
        let reason = err.to_string();
        if !self.close_sent {
            self.write_close(Some(code), &reason);
        }
        self.finish(code, reason, Initiator::Library, false, Some(err));
    }

    fn finish(
        &mut self,
        code: CloseCode,
        reason: String,
        initiator: Initiator,
        was_clean: bool,
        error: Option<ProtocolError>,
    ) {
        self.closed = true;
        self.read = ReadState::Discard;
        self.receiving = None;
        self.message = BytesMut::new();
        self.control = Vec::new();
        self.events.push_back(Event::Closed(Closed {
            code,
            reason,
            initiator,
            was_clean,
            error,
        }));
    }
}

/// Pongs owed at once; beyond this a ping flood drops the oldest (RFC 6455 §5.5.3 allows
/// answering only the most recent ping).
pub const MAX_PENDING_PONGS: usize = 16;

/// Input acted on only after the events before it are taken.
#[derive(Debug)]
enum Deferred {
    Failure(ProtocolError),
    Close(Option<CloseFrame>),
}

/// Payloads from this size on are queued by [`Connection::send_shared`] without a copy (when
/// they need no masking or compression): below it, copying the payload next to its header costs
/// less than a second segment in the write.
pub const SHARE_THRESHOLD: usize = 16 << 10;

/// Scratch buffers larger than this are freed after use rather than kept.
const SCRATCH_KEEP: usize = 64 << 10;

/// Largest block reserved at once for the small messages of one read: they share one
/// allocation, split off it in turn (an application that keeps one of them keeps the block).
const MESSAGE_BLOCK: usize = 4 << 10;

/// permessage-deflate state of a connection.
struct Deflate {
    deflater: Deflater,
    inflater: Inflater,
    threshold: usize,
    params: DeflateParams,
    /// Unmasked input or compressed output, reused between messages.
    scratch: Vec<u8>,
}

fn inflate_error(err: InflateError, limit: Option<usize>) -> ProtocolError {
    match err {
        InflateError::TooBig => ProtocolError::MessageTooBig {
            limit: limit.unwrap_or(usize::MAX),
        },
        InflateError::Invalid => ProtocolError::InvalidCompressedData,
    }
}

fn opcode_of(kind: DataKind) -> OpCode {
    match kind {
        DataKind::Text => OpCode::Text,
        DataKind::Binary => OpCode::Binary,
    }
}

fn data_kind(opcode: OpCode) -> Option<DataKind> {
    match opcode {
        OpCode::Text => Some(DataKind::Text),
        OpCode::Binary => Some(DataKind::Binary),
        _ => None,
    }
}

/// Parses a close frame body (§5.5.1): empty, or a 2-byte code plus a UTF-8 reason.
fn parse_close_payload(payload: &[u8]) -> Result<Option<CloseFrame>, ProtocolError> {
    match payload {
        [] => Ok(None),
        [_] => Err(ProtocolError::InvalidCloseFrame),
        [hi, lo, reason @ ..] => {
            let code = CloseCode(u16::from_be_bytes([*hi, *lo]));
            if !code.is_valid_on_wire() {
                return Err(ProtocolError::InvalidCloseCode(code.0));
            }
            let reason = Utf8Bytes::try_from_bytes(bytes::Bytes::copy_from_slice(reason))
                .map_err(|_| ProtocolError::InvalidUtf8)?;
            Ok(Some(CloseFrame { code, reason }))
        }
    }
}

/// The longest prefix of `s` of at most `max` bytes that ends on a character boundary.
fn truncate_utf8(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Found by the `connection_deflate` fuzz target: a compressed text message that is both
    /// invalid UTF-8 and over the limit was failed with 1009 when it arrived in one read and
    /// with 1007 when it arrived byte by byte.
    #[test]
    fn compressed_violation_does_not_depend_on_chunking() {
        let mut text = vec![0xFF];
        text.extend_from_slice(&[b'a'; 1000]);
        let mut payload = Vec::new();
        Deflater::new(15, false, 6).compress(&text, true, &mut payload);
        let mut frame = FrameHeader::new(OpCode::Text, payload.len() as u64);
        frame.rsv1 = true;
        frame.mask = Some([0; 4]);
        let mut wire = Vec::new();
        frame.encode(&mut wire);
        wire.extend_from_slice(&payload);
        let closed = |chunk: usize| {
            let config = Config::default().max_message_size(Some(126));
            let mut conn = Connection::new(Role::Server, config, Box::new(|| [0u8; 4]))
                .with_deflate(DeflateParams::new(), &DeflateConfig::default());
            for piece in wire.chunks(chunk) {
                conn.handle_bytes(piece);
            }
            match conn.poll_event() {
                Some(Event::Closed(closed)) => closed.code,
                other => panic!("{other:?}"),
            }
        };
        assert_eq!(closed(wire.len()), CloseCode::INVALID_PAYLOAD);
        assert_eq!(closed(1), CloseCode::INVALID_PAYLOAD);
    }

    fn server() -> Connection {
        Connection::new(Role::Server, Config::default(), Box::new(|| [0u8; 4]))
    }

    /// The wire bytes of `out` with each shared payload put in at its position.
    fn splice(out: &[u8], shared: &[(usize, Bytes)]) -> Vec<u8> {
        let mut wire = Vec::new();
        let mut written = 0;
        for (position, payload) in shared {
            assert!(*position >= written && *position <= out.len(), "{position}");
            wire.extend_from_slice(&out[written..*position]);
            wire.extend_from_slice(payload);
            written = *position;
        }
        wire.extend_from_slice(&out[written..]);
        wire
    }

    /// A mix of small and large messages and control frames, sent through `send_shared` on one
    /// connection and through `send` on another.
    fn send_mix(conn: &mut Connection, shared: bool, payloads: &[Bytes]) {
        for (i, payload) in payloads.iter().enumerate() {
            let kind = if i % 2 == 0 {
                DataKind::Binary
            } else {
                DataKind::Text
            };
            if shared {
                conn.send_shared(kind, payload.clone()).unwrap();
            } else {
                conn.send(kind, payload).unwrap();
            }
            conn.ping(&[i as u8]).unwrap();
        }
        conn.close(CloseCode::NORMAL, "bye").unwrap();
    }

    fn mix() -> Vec<Bytes> {
        [
            10,
            SHARE_THRESHOLD,
            200,
            SHARE_THRESHOLD - 1,
            70_000,
            3 << 20,
            0,
        ]
        .iter()
        .enumerate()
        .map(|(i, &len)| Bytes::from(vec![b'a' + i as u8; len]))
        .collect()
    }

    #[test]
    fn shared_payloads_go_out_uncopied_and_in_order() {
        let payloads = mix();
        let mut expected = Vec::new();
        let mut plain = server();
        send_mix(&mut plain, false, &payloads);
        assert_eq!(plain.poll_transmit(&mut expected), Transmit::Bytes);

        let mut conn = server();
        send_mix(&mut conn, true, &payloads);
        assert_eq!(conn.buffered_amount(), expected.len());
        // Something already in the caller's buffer: positions count from its start.
        let mut out = b"xyz".to_vec();
        let mut shared = Vec::new();
        assert_eq!(
            conn.poll_transmit_segments(&mut out, &mut shared),
            Transmit::Bytes
        );
        assert_eq!(conn.buffered_amount(), 0);
        // The three payloads of at least SHARE_THRESHOLD bytes, the very allocations given.
        let large: Vec<&Bytes> = payloads
            .iter()
            .filter(|p| p.len() >= SHARE_THRESHOLD)
            .collect();
        assert_eq!(shared.len(), large.len());
        for ((_, got), given) in shared.iter().zip(&large) {
            assert_eq!(got.as_ptr(), given.as_ptr());
            assert_eq!(got.len(), given.len());
        }
        let wire = splice(&out, &shared);
        assert_eq!(&wire[..3], b"xyz");
        assert_eq!(wire[3..], expected[..]);
        assert_eq!(
            conn.poll_transmit_segments(&mut out, &mut shared),
            Transmit::Idle
        );
    }

    #[test]
    fn plain_poll_transmit_copies_shared_payloads_in_place() {
        let payloads = mix();
        let mut expected = Vec::new();
        let mut plain = server();
        send_mix(&mut plain, false, &payloads);
        let _ = plain.poll_transmit(&mut expected);
        let mut conn = server();
        send_mix(&mut conn, true, &payloads);
        let mut out = b"xyz".to_vec();
        assert_eq!(conn.poll_transmit(&mut out), Transmit::Bytes);
        assert_eq!(out[3..], expected[..]);
        assert_eq!(conn.buffered_amount(), 0);
    }

    #[test]
    fn shared_payloads_survive_transmits_in_between() {
        // A pong owed (written at the next transmit) and frames queued after a first transmit.
        let big = Bytes::from(vec![9u8; SHARE_THRESHOLD * 2]);
        let mut conn = server();
        conn.handle_bytes(&[0x89, 0x81, 0, 0, 0, 0, b'q']);
        conn.send_shared(DataKind::Binary, big.clone()).unwrap();
        let (mut out, mut shared) = (Vec::new(), Vec::new());
        let _ = conn.poll_transmit_segments(&mut out, &mut shared);
        let mut wire = splice(&out, &shared);
        out.clear();
        shared.clear();
        conn.send(DataKind::Text, b"t").unwrap();
        conn.send_shared(DataKind::Binary, big.clone()).unwrap();
        let _ = conn.poll_transmit_segments(&mut out, &mut shared);
        wire.extend(splice(&out, &shared));

        let mut plain = server();
        plain.handle_bytes(&[0x89, 0x81, 0, 0, 0, 0, b'q']);
        plain.send(DataKind::Binary, &big).unwrap();
        let mut expected = Vec::new();
        let _ = plain.poll_transmit(&mut expected);
        plain.send(DataKind::Text, b"t").unwrap();
        plain.send(DataKind::Binary, &big).unwrap();
        let _ = plain.poll_transmit(&mut expected);
        // The pong, owed before the first transmit, follows the first message.
        let pong = 4 + big.len();
        assert_eq!(expected[pong..pong + 3], [0x8A, 1, b'q']);
        assert!(wire == expected, "wire bytes differ");
    }

    #[test]
    fn masked_compressed_or_small_payloads_are_copied() {
        let big = Bytes::from(vec![5u8; SHARE_THRESHOLD * 4]);
        let mut client =
            Connection::new(Role::Client, Config::default(), Box::new(|| [1, 2, 3, 4]));
        let mut deflating = server().with_deflate(DeflateParams::new(), &DeflateConfig::default());
        let mut small = server();
        for (conn, payload) in [
            (&mut client, big.clone()),
            (&mut deflating, big.clone()),
            (&mut small, big.slice(..SHARE_THRESHOLD - 1)),
        ] {
            conn.send_shared(DataKind::Binary, payload).unwrap();
            let (mut out, mut shared) = (Vec::new(), Vec::new());
            assert_eq!(
                conn.poll_transmit_segments(&mut out, &mut shared),
                Transmit::Bytes
            );
            assert!(shared.is_empty());
            assert!(!out.is_empty());
        }
        // The client's frame is masked with its key, as `send` would.
        let mut expected = Vec::new();
        let mut plain = Connection::new(Role::Client, Config::default(), Box::new(|| [1, 2, 3, 4]));
        plain.send(DataKind::Binary, &big).unwrap();
        let _ = plain.poll_transmit(&mut expected);
        client.send_shared(DataKind::Binary, big.clone()).unwrap();
        let mut out = Vec::new();
        let _ = client.poll_transmit(&mut out);
        assert_eq!(out, expected);
    }

    #[test]
    fn send_shared_checks_like_send() {
        let big = Bytes::from(vec![1u8; SHARE_THRESHOLD]);
        let mut conn = server();
        conn.send_fragment(DataKind::Text, b"a", false).unwrap();
        assert_eq!(
            conn.send_shared(DataKind::Binary, big.clone()),
            Err(SendError::FragmentInProgress)
        );
        conn.send_fragment(DataKind::Text, b"b", true).unwrap();
        conn.send_shared(DataKind::Binary, big.clone()).unwrap();
        conn.close(CloseCode::NORMAL, "").unwrap();
        assert_eq!(
            conn.send_shared(DataKind::Binary, big.clone()),
            Err(SendError::Closed)
        );
        // An abort drops queued payloads with the rest of the output.
        let mut conn = server();
        conn.send_shared(DataKind::Binary, big.clone()).unwrap();
        conn.abort(CloseCode::POLICY_VIOLATION, "slow");
        let (mut out, mut shared) = (Vec::new(), Vec::new());
        let _ = conn.poll_transmit_segments(&mut out, &mut shared);
        assert!(shared.is_empty());
        assert_eq!(out[0], 0x88, "only the close frame is left");
    }

    #[test]
    fn truncate_respects_char_boundaries() {
        assert_eq!(truncate_utf8("héllo", 2), "h");
        assert_eq!(truncate_utf8("héllo", 3), "hé");
        assert_eq!(truncate_utf8("abc", 10), "abc");
    }

    #[test]
    fn close_payload_parsing() {
        assert_eq!(parse_close_payload(&[]), Ok(None));
        assert_eq!(
            parse_close_payload(&[3]),
            Err(ProtocolError::InvalidCloseFrame)
        );
        assert_eq!(
            parse_close_payload(&[0x03, 0xED]),
            Err(ProtocolError::InvalidCloseCode(1005))
        );
        assert_eq!(
            parse_close_payload(&[0x03, 0xE8, 0xFF]),
            Err(ProtocolError::InvalidUtf8)
        );
        let frame = parse_close_payload(&[0x03, 0xE8, b'o', b'k'])
            .unwrap()
            .unwrap();
        assert_eq!(frame.code, CloseCode::NORMAL);
        assert_eq!(frame.reason, "ok");
    }
}
