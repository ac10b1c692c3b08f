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
//!    what it gave; on [`Transmit::Shutdown`] shut the transport's write side down. A runtime
//!    that writes without copying uses [`poll_write_slices`](Connection::poll_write_slices),
//!    [`advance_written`](Connection::advance_written) and
//!    [`take_shutdown`](Connection::take_shutdown) instead: the same queue.
//! 3. Drain [`poll_event`](Connection::poll_event), then call `poll_transmit` again: a
//!    violation found behind complete messages queues its close frame only once those messages
//!    are taken (so replies to them go out first).
//! 4. While [`close_expected`](Connection::close_expected) is true, run a close timer; when it
//!    fires, call [`handle_timeout`](Connection::handle_timeout).
//!
//! # Layout
//!
//! [`Connection`] is a composition of three parts, each in its own file:
//!
//! - `recv.rs`: the [`Receiver`]: frame headers, payloads, reassembly, the input
//!   budget, inflating and UTF-8 checking (§5.2–§5.4, §8.1, RFC 7692).
//! - `send.rs`: the [`Outgoing`] queue: frames, masking, deflating, pongs owed
//!   and shared payloads (§5.1–§5.5), the one queue of outgoing bytes, written straight from.
//! - `closing.rs`: the close handshake as one [`Closing`] state, failing the
//!   connection and its end (§5.5.1, §7).

mod closing;
mod prepared;
mod recv;
mod send;

use std::collections::VecDeque;
use std::fmt;
use std::io::IoSlice;

use crate::close_code::CloseCode;
use crate::config::Config;
use crate::deflate::{DeflateConfig, DeflateParams, Deflater, Inflater};
use crate::error::ProtocolError;
use crate::message::Message;

use closing::{Closing, Deferred};
pub use prepared::PreparedMessage;
use recv::Receiver;
use send::Outgoing;
pub use send::{MaskSource, MAX_PENDING_PONGS, SHARE_THRESHOLD};

/// Which end of the connection this is. Clients mask, servers do not (§5.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    /// The end that sent the opening handshake request.
    Client,
    /// The end that answered it.
    Server,
}

/// The connection's ready state. A [`Connection`] exists only after the opening handshake, so
/// it starts [`Open`](Self::Open). The discriminants are those of the browser's
/// `WebSocket.readyState` (`OPEN` = 1 … `CLOSED` = 3; `CONNECTING` = 0 belongs to handles that
/// exist before the handshake, such as the `sockeye` crate's `ReadyState`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[repr(u8)]
pub enum State {
    /// Data can flow both ways.
    Open = 1,
    /// A close frame was sent or received; the handshake is not finished.
    Closing = 2,
    /// The connection is closed; [`Event::Closed`] was emitted.
    Closed = 3,
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
    /// Reading: frame headers, payloads, reassembly, the input budget and its stash.
    recv: Receiver,
    /// Writing: encoded frames, pongs owed and shared payloads, until `poll_transmit`.
    out: Outgoing,
    /// permessage-deflate, when negotiated: its deflater serves `out`, its inflater `recv`.
    deflate: Option<Box<Deflate>>,
    /// Where the close handshake stands.
    closing: Closing,
    /// A violation or the peer's close frame, found while earlier events were still queued;
    /// acted on once they are taken.
    deferred: Option<Deferred>,
    /// Events not yet taken by [`poll_event`](Connection::poll_event).
    events: VecDeque<Event>,
}

impl fmt::Debug for Connection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Connection")
            .field("role", &self.role)
            .field("state", &self.state())
            .field("read", &self.recv.read)
            .field("buffered_out", &self.out.buffered_amount())
            .finish_non_exhaustive()
    }
}

impl Connection {
    /// A connection in the [`State::Open`] state.
    pub fn new(role: Role, config: Config, masks: Box<dyn MaskSource>) -> Self {
        Self {
            role,
            config,
            recv: Receiver::new(),
            out: Outgoing::new(role, masks),
            deflate: None,
            closing: Closing::Open,
            deferred: None,
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
        self.closing.state()
    }

    /// Bytes queued for the transport: not yet taken by [`poll_transmit`](Self::poll_transmit)
    /// or reported written with [`advance_written`](Self::advance_written).
    pub fn buffered_amount(&self) -> usize {
        self.out.buffered_amount()
    }

    /// True while this end waits for the peer's close frame or, as a client, for the server to
    /// close TCP (§7.1.1: the server closes first). The caller then runs a close timer and calls
    /// [`handle_timeout`](Self::handle_timeout) when it fires.
    pub fn close_expected(&self) -> bool {
        self.closing.close_expected()
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
        if !self.recv.stashed.is_empty() {
            self.recv.stashed.extend_from_slice(data);
            self.resume_stashed();
            return;
        }
        let rest = self.process(data);
        if !rest.is_empty() {
            self.recv.stashed.extend_from_slice(rest);
        }
    }

    /// Reports that the transport reached end of stream. Without a finished close handshake this
    /// closes the connection abnormally (code 1006).
    pub fn handle_eof(&mut self) {
        if !self.recv.stashed.is_empty() && !self.recv.is_discarding() {
            // The end comes after the stashed input: act on it once that is parsed.
            self.recv.eof_after_stash = true;
            return;
        }
        self.recv.discard();
        self.run_deferred();
        match std::mem::replace(&mut self.closing, Closing::Open) {
            closed @ Closing::Closed { .. } => self.closing = closed,
            Closing::Received {
                code,
                reason,
                initiator,
            } => self.finish(code, reason, initiator, true, None),
            Closing::Open | Closing::Sent => self.finish(
                CloseCode::ABNORMAL,
                String::new(),
                Initiator::Remote,
                false,
                None,
            ),
        }
    }

    /// Reports that the close timer armed while [`close_expected`](Self::close_expected) fired:
    /// the connection is closed now and the transport should be dropped.
    pub fn handle_timeout(&mut self) {
        self.recv.stashed = Vec::new();
        self.run_deferred();
        if !self.close_expected() {
            return;
        }
        self.recv.discard();
        match std::mem::replace(&mut self.closing, Closing::Open) {
            Closing::Received {
                code,
                reason,
                initiator,
            } => self.finish(code, reason, initiator, true, None),
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
                self.recv.queued_bytes -= message.as_payload().len();
            }
        }
        event
    }

    /// Appends bytes to write to `out` (a copy of everything queued, taken from the queue that
    /// [`poll_write_slices`](Self::poll_write_slices) hands out without copying). Call after
    /// every input or command until it returns [`Transmit::Idle`].
    pub fn poll_transmit(&mut self, out: &mut Vec<u8>) -> Transmit {
        if self.out.transmit(out) {
            return Transmit::Bytes;
        }
        if self.closing.take_shutdown() {
            return Transmit::Shutdown;
        }
        Transmit::Idle
    }

    /// The queued output as slices in wire order, for the transport to write without a copy
    /// (a vectored write takes them all, a plain write the first): buffer ranges holding
    /// encoded frames, and payloads queued by [`send_shared`](Self::send_shared) as they were
    /// given. Fills as many of `dst` as are needed or fit and returns how many; 0 when nothing
    /// is queued (then see [`take_shutdown`](Self::take_shutdown)). Tell the connection what
    /// the transport took with [`advance_written`](Self::advance_written). Output queued after
    /// this call follows the slices given; [`poll_transmit`](Self::poll_transmit) takes from the
    /// same queue.
    ///
    /// ```
    /// use std::io::IoSlice;
    ///
    /// use bytes::Bytes;
    /// use sockeye_proto::{Config, Connection, DataKind, Role, SHARE_THRESHOLD};
    ///
    /// let mut server = Connection::new(Role::Server, Config::default(), Box::new(|| [0u8; 4]));
    /// let payload = Bytes::from(vec![7u8; SHARE_THRESHOLD]);
    /// server.send_shared(DataKind::Binary, payload.clone()).unwrap();
    /// server.ping(b"p").unwrap();
    /// let mut slices = [IoSlice::new(&[]); 8];
    /// // Header (4 bytes: 16-bit length), then the payload itself, then the ping.
    /// assert_eq!(server.poll_write_slices(&mut slices), 3);
    /// assert_eq!(&*slices[0], [0x82, 126, 0x40, 0x00]);
    /// assert_eq!(slices[1].as_ptr(), payload.as_ptr());
    /// assert_eq!(&*slices[2], [0x89, 1, b'p']);
    /// // The transport took the header and half of the payload.
    /// server.advance_written(4 + SHARE_THRESHOLD / 2);
    /// assert_eq!(server.buffered_amount(), SHARE_THRESHOLD / 2 + 3);
    /// ```
    pub fn poll_write_slices<'a>(&'a mut self, dst: &mut [IoSlice<'a>]) -> usize {
        self.out.slices(dst)
    }

    /// Records that the transport took the next `n` bytes of the slices from
    /// [`poll_write_slices`](Self::poll_write_slices).
    pub fn advance_written(&mut self, n: usize) {
        self.out.advance(n);
    }

    /// True once, when everything queued is written and the transport's write side is to be
    /// shut down: [`Transmit::Shutdown`] for callers of
    /// [`poll_write_slices`](Self::poll_write_slices).
    pub fn take_shutdown(&mut self) -> bool {
        self.out.is_empty() && self.closing.take_shutdown()
    }
}

/// Scratch buffers larger than this are freed after use rather than kept.
const SCRATCH_KEEP: usize = 64 << 10;

std::thread_local! {
    /// Compressed output or unmasked compressed input, between the codec and the queue: one
    /// buffer per thread, not per connection (an idle connection keeps none).
    static SCRATCH: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Runs `f` with this thread's empty scratch buffer, which is kept for the next call unless it
/// grew past [`SCRATCH_KEEP`].
fn with_scratch<R>(f: impl FnOnce(&mut Vec<u8>) -> R) -> R {
    // Taken out for the call: `f` cannot reach the thread-local itself, and a thread being torn
    // down (no thread-locals left) still gets a buffer.
    let mut scratch = SCRATCH.try_with(|s| s.take()).unwrap_or_default();
    scratch.clear();
    let result = f(&mut scratch);
    if scratch.capacity() <= SCRATCH_KEEP {
        let _ = SCRATCH.try_with(|s| *s.borrow_mut() = scratch);
    }
    result
}

/// permessage-deflate state of a connection (RFC 7692 §7): the sending half deflates in
/// `send.rs`, the receiving half inflates in `recv.rs`.
struct Deflate {
    deflater: Deflater,
    inflater: Inflater,
    threshold: usize,
    params: DeflateParams,
}

impl Deflate {
    /// Whether a new message of `len` bytes is sent compressed.
    fn compresses(&self, len: usize) -> bool {
        self.deflater.is_enabled() && len >= self.threshold
    }
}

#[cfg(test)]
mod tests {
    use super::State;

    /// The values of the browser's `readyState` (WHATWG WebSockets: `OPEN` = 1, `CLOSING` = 2,
    /// `CLOSED` = 3), which the `sockeye` crate's `ReadyState` shares.
    #[test]
    fn states_carry_the_browser_values() {
        let values = [State::Open, State::Closing, State::Closed].map(|state| state as u8);
        assert_eq!(values, [1, 2, 3]);
    }
}
