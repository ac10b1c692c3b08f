//! [`WebSocket`]: the browser's `WebSocket` interface
//! ([WHATWG WebSockets Standard](https://websockets.spec.whatwg.org/#the-websocket-interface))
//! as a cheap, clonable handle to a connection driven by its own task, with events
//! ([`WebSocket::next_event`]) or handlers ([`WebSocketBuilder::on_message`]…).
//!
//! ```no_run
//! # async fn run() -> Result<(), sockeye::Error> {
//! use sockeye::{Event, Message, WebSocket};
//!
//! let ws = WebSocket::new("ws://127.0.0.1:9001/chat")?; // returns at once, Connecting
//! while let Some(event) = ws.next_event().await {
//!     match event {
//!         Event::Open => ws.send("hello")?,
//!         Event::Message(Message::Text(text)) => {
//!             println!("{text}");
//!             ws.close(Some(1000), Some("done"))?;
//!         }
//!         Event::Close(close) => println!("closed: {} {}", close.code, close.reason),
//!         _ => {}
//!     }
//! }
//! # Ok(()) }
//! ```
//!
//! # The browser interface, member by member
//!
//! | browser `WebSocket` | sockeye |
//! |---|---|
//! | `new WebSocket(url, protocols)` | [`WebSocket::new`], [`WebSocket::with_protocols`], [`WebSocket::builder`]: return at once in `Connecting` and connect in a spawned task; a `SyntaxError` (bad URL or scheme, fragment, invalid or duplicate subprotocol) is an `Err` at once: [`Error::Url`], [`Error::Handshake`] |
//! | `url` | [`WebSocket::url`]: the parsed URL, `http(s)` mapped to `ws(s)`, without credentials; on a server, the request URI |
//! | `readyState` | [`WebSocket::ready_state`] → [`ReadyState`] |
//! | `CONNECTING`, `OPEN`, `CLOSING`, `CLOSED` (0–3) | [`WebSocket::CONNECTING`]… (`ReadyState::Connecting as u16 == 0`…) |
//! | `bufferedAmount` | [`WebSocket::buffered_amount`]: bytes accepted by `send` and not yet written to the socket (payload bytes while queued, frame bytes once in the connection's buffer) |
//! | `extensions` | [`WebSocket::extensions`] (`""` before open or when none) |
//! | `protocol` | [`WebSocket::protocol`] (`""` before open or when none) |
//! | `binaryType` | none: binary messages are always [`Message::Binary`] holding [`Bytes`](bytes::Bytes) (the `"arraybuffer"` behaviour; there is no `Blob`) |
//! | `send(data)` | [`WebSocket::send`] (`&str`, `String`, `&[u8]`, `Vec<u8>`, `Bytes`, [`Message`]); `InvalidStateError` while connecting is an `Err`; [`WebSocket::send_async`] waits for room |
//! | `close(code, reason)` | [`WebSocket::close`]: code 1000 or 3000–4999 (else `InvalidAccessError`: [`SendError::InvalidCloseCode`]), reason at most 123 UTF-8 bytes (else `SyntaxError`: [`SendError::CloseReasonTooLong`]) |
//! | `onopen`, `onmessage`, `onerror`, `onclose` | [`WebSocketBuilder::on_open`], [`on_message`](WebSocketBuilder::on_message), [`on_error`](WebSocketBuilder::on_error), [`on_close`](WebSocketBuilder::on_close); or [`Event::Open`], [`Event::Message`], [`Event::Error`], [`Event::Close`] from [`WebSocket::next_event`] |
//! | `CloseEvent` `code`, `reason`, `wasClean` | [`CloseEvent`]: the code of the close frame received, 1005 when it had none, 1006 when none was received (RFC 6455 §7.1.5) |
//!
//! Where the standard is silent or sockeye differs:
//!
//! - `send` after `close()` (or once the peer closed) fails with
//!   [`Error::Send`]`(`[`SendError::Closed`]`)` instead of discarding the data silently; `send`
//!   while connecting fails with [`Error::InvalidState`] (the standard's `InvalidStateError`).
//! - The browser buffers without limit; sockeye accepts data while
//!   [`buffered_amount`](WebSocket::buffered_amount) is below
//!   [`WebSocketConfig::write_buffer_high_water`] (default 64 KiB) and at most
//!   [`MAX_QUEUED_MESSAGES`] messages, then `send` fails with [`Error::QueueFull`] and nothing
//!   is queued; [`send_async`](WebSocket::send_async) waits for room instead.
//! - `close()` without a code sends 1000 (the browser sends a close frame without a code,
//!   which the peer reports as 1005). Data queued before `close` is sent before the close frame.
//! - Events wait in a queue of [`EVENT_QUEUE`] events; while it is full the connection stops
//!   reading, as a stream that is not polled does. With handlers, every event goes to its
//!   handler (or nowhere when that handler is not set) and `next_event` returns `None`.
//! - Dropping every handle of a connection that uses events closes it with 1001 (the browser
//!   starts the closing handshake when a `WebSocket` is garbage-collected); a connection with
//!   handlers lives until it is closed, as a browser `WebSocket` with listeners does.
//! - A server-side `WebSocket` ([`Server::on_connection`], [`WebSocket::from_stream`]) starts
//!   `Open`, still delivers [`Event::Open`] first, and has the same members.
//! - A handler that panics (or an [`on_connection`](Server::on_connection) future that
//!   panics) does not take the connection down silently: the panic is caught and logged, the
//!   connection is closed with 1011 (internal error) and the remaining events are delivered;
//!   a panic in `on_error` or `on_close` is caught and logged. If the task driving a
//!   connection ends any other way (its runtime shuts down), the state still becomes
//!   [`Closed`](ReadyState::Closed), so that no handle waits on a dead connection.
//!
//! # Cancel safety
//!
//! [`WebSocket::next_event`] is cancel-safe: an event is never lost. [`WebSocket::send_async`]
//! queues the message whole when it completes; dropped before, nothing is sent.

use std::fmt;
use std::future::{poll_fn, Future};
use std::io;
use std::panic::AssertUnwindSafe;
use std::pin::{pin, Pin};
use std::sync::atomic::{AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::task::{ready, Context, Poll};

use futures_core::Stream;
use futures_sink::Sink;
use futures_util::FutureExt as _;
use http::Request;
use sockeye_proto::handshake::{ClientRequest, HandshakeError};
use sockeye_proto::{
    CloseCode, CloseFrame, Initiator, Message, SendError, State, MAX_CLOSE_REASON,
};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::mpsc::error::TrySendError;
use tokio::sync::{mpsc, Notify};
use tokio_util::sync::PollSender;

use crate::client::{ClientBuilder, WsUrl};
use crate::config::WebSocketConfig;
use crate::error::{Error, LocalClose, UrlError};
use crate::server::Server;
use crate::stream::WebSocketStream;

/// Most messages queued by [`WebSocket::send`] and not yet handed to the connection, whatever
/// their size (so that empty messages cannot grow the queue without bound).
pub const MAX_QUEUED_MESSAGES: usize = 1024;

/// Events delivered by the connection task and not yet taken by [`WebSocket::next_event`];
/// while the queue is full the task stops reading from the socket.
pub const EVENT_QUEUE: usize = 32;

/// The state of a [`WebSocket`], as the browser's `readyState`; the discriminants are the
/// standard's constants (`CONNECTING` = 0 … `CLOSED` = 3). The connection's own [`State`] has
/// the same values but no `Connecting`: it exists only once the handshake is done.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[repr(u8)]
pub enum ReadyState {
    /// The opening handshake is in progress.
    Connecting = 0,
    /// Data can flow both ways.
    Open = 1,
    /// The closing handshake has started.
    Closing = 2,
    /// The connection is closed (or could not be opened).
    Closed = 3,
}

impl ReadyState {
    /// The standard's numeric value (`WebSocket.CONNECTING` … `WebSocket.CLOSED`).
    pub const fn as_u16(self) -> u16 {
        self as u16
    }

    const fn from_u8(value: u8) -> Self {
        match value {
            0 => Self::Connecting,
            1 => Self::Open,
            2 => Self::Closing,
            _ => Self::Closed,
        }
    }
}

impl From<State> for ReadyState {
    fn from(state: State) -> Self {
        match state {
            State::Open => Self::Open,
            State::Closing => Self::Closing,
            State::Closed => Self::Closed,
        }
    }
}

/// Something that happened on a [`WebSocket`], in the standard's order: `Open` once, then
/// `Message`s, then, when the connection ends, `Error` if it failed, then `Close` exactly once.
#[derive(Debug)]
#[non_exhaustive]
pub enum Event {
    /// The opening handshake succeeded (`onopen`).
    Open,
    /// A text or binary message arrived (`onmessage`). Pings, pongs and close frames are
    /// handled inside and not reported, as in the browser.
    Message(Message),
    /// The connection failed (`onerror`): the opening handshake failed, the peer broke the
    /// protocol or the connection was lost. Always followed by [`Event::Close`].
    Error(Error),
    /// The connection is closed (`onclose`); always the last event.
    Close(CloseEvent),
}

/// How a connection ended (the browser's `CloseEvent`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CloseEvent {
    /// The close code: the one in the peer's close frame, 1005 when that frame had none, 1006
    /// when no close frame was received (the connection was lost, or sockeye failed it).
    pub code: u16,
    /// The reason that came with `code`.
    pub reason: String,
    /// Whether the closing handshake completed (`wasClean`).
    pub was_clean: bool,
}

impl CloseEvent {
    /// The close event of a connection that ended without a closing handshake.
    fn abnormal() -> Self {
        Self {
            code: CloseCode::ABNORMAL.0,
            reason: String::new(),
            was_clean: false,
        }
    }
}

/// State shared by the handles and the connection task.
#[derive(Debug)]
struct Shared {
    url: String,
    /// A [`ReadyState`]; only ever moves forward.
    state: AtomicU8,
    /// The subprotocol and extensions agreed in the handshake, once open.
    negotiated: OnceLock<(String, String)>,
    /// Payload bytes in the send queue.
    queued: AtomicUsize,
    /// [`WebSocketStream::buffered_amount`] as last seen by the task.
    in_stream: AtomicUsize,
    high_water: usize,
    /// Notified when the buffered amount falls or the state changes.
    room: Notify,
}

impl Shared {
    fn ready_state(&self) -> ReadyState {
        ReadyState::from_u8(self.state.load(Ordering::Acquire))
    }

    /// Moves the state forward to `state` (never back).
    fn advance(&self, state: ReadyState) {
        let before = self.state.fetch_max(state as u8, Ordering::AcqRel);
        if before < state as u8 {
            tracing::debug!(?state, "websocket ready state");
            self.room.notify_waiters();
        }
    }

    fn buffered_amount(&self) -> usize {
        self.queued.load(Ordering::Acquire) + self.in_stream.load(Ordering::Acquire)
    }

    /// Counts `len` more queued bytes if the buffered amount is below the high-water mark.
    /// Check and count are one atomic step, so that senders racing on clones cannot all pass
    /// the check before any of them counts: at most one message goes over the mark.
    fn try_reserve(&self, len: usize) -> bool {
        let mut queued = self.queued.load(Ordering::Acquire);
        loop {
            let buffered = queued.saturating_add(self.in_stream.load(Ordering::Acquire));
            if buffered >= self.high_water {
                return false;
            }
            match self.queued.compare_exchange_weak(
                queued,
                queued.saturating_add(len),
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => return true,
                Err(actual) => queued = actual,
            }
        }
    }

    /// Gives back a reservation whose message was not queued, and wakes the senders that may
    /// have seen it and gone waiting.
    fn release(&self, len: usize) {
        self.queued.fetch_sub(len, Ordering::AcqRel);
        self.room.notify_waiters();
    }
}

/// What the handles send to the task besides data.
#[derive(Debug)]
enum Control {
    /// Start the closing handshake (after the data queued before it).
    Close(CloseCode, String),
    /// `close()` while connecting: fail the connection.
    Abort,
}

/// What every clone of a [`WebSocket`] shares.
#[derive(Debug)]
struct Handle {
    shared: Arc<Shared>,
    data_tx: mpsc::Sender<Message>,
    control_tx: mpsc::UnboundedSender<Control>,
    events: tokio::sync::Mutex<mpsc::Receiver<Event>>,
}

/// A WebSocket connection shaped like the browser's `WebSocket`: a cheap [`Clone`] handle whose
/// connection runs in its own task. See the [module docs](self) for the member-by-member
/// mapping.
///
/// # Panics
///
/// The constructors spawn a tokio task: called outside a tokio runtime, they panic.
#[derive(Clone)]
pub struct WebSocket {
    handle: Arc<Handle>,
}

impl fmt::Debug for WebSocket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WebSocket")
            .field("url", &self.url())
            .field("ready_state", &self.ready_state())
            .field("buffered_amount", &self.buffered_amount())
            .finish_non_exhaustive()
    }
}

type OpenHandler = Box<dyn FnMut(&WebSocket) + Send>;
type MessageHandler = Box<dyn FnMut(&WebSocket, Message) + Send>;
type ErrorHandler = Box<dyn FnMut(&WebSocket, Error) + Send>;
type CloseHandler = Box<dyn FnMut(&WebSocket, CloseEvent) + Send>;

/// The `on*` handlers of a connection.
#[derive(Default)]
struct Handlers {
    on_open: Option<OpenHandler>,
    on_message: Option<MessageHandler>,
    on_error: Option<ErrorHandler>,
    on_close: Option<CloseHandler>,
}

impl Handlers {
    fn is_empty(&self) -> bool {
        self.on_open.is_none()
            && self.on_message.is_none()
            && self.on_error.is_none()
            && self.on_close.is_none()
    }

    /// Runs the handler of `event`; `Err(())` when it panicked (the panic is caught: the
    /// connection task must survive it to close the connection and report the end).
    fn dispatch(&mut self, ws: &WebSocket, event: Event) -> Result<(), ()> {
        let call = AssertUnwindSafe(|| match event {
            Event::Open => {
                if let Some(handler) = &mut self.on_open {
                    handler(ws);
                }
            }
            Event::Message(message) => {
                if let Some(handler) = &mut self.on_message {
                    handler(ws, message);
                }
            }
            Event::Error(error) => {
                if let Some(handler) = &mut self.on_error {
                    handler(ws, error);
                }
            }
            Event::Close(close) => {
                if let Some(handler) = &mut self.on_close {
                    handler(ws, close);
                }
            }
        });
        std::panic::catch_unwind(call).map_err(|_| {
            tracing::error!("websocket event handler panicked");
        })
    }
}

impl fmt::Debug for Handlers {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Handlers")
            .field("on_open", &self.on_open.is_some())
            .field("on_message", &self.on_message.is_some())
            .field("on_error", &self.on_error.is_some())
            .field("on_close", &self.on_close.is_some())
            .finish()
    }
}

/// Where the task delivers events.
enum EventSink {
    /// The queue read by [`WebSocket::next_event`].
    Queue(PollSender<Event>),
    /// The handlers, with a handle to pass them.
    Handlers(Box<Handlers>, WebSocket),
    /// Nobody listens any more (every handle was dropped).
    Discard,
}

impl EventSink {
    /// Ready when an event can be delivered without waiting.
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        if let Self::Queue(tx) = self {
            match ready!(tx.poll_reserve(cx)) {
                Ok(()) => {}
                Err(_) => *self = Self::Discard,
            }
        }
        Poll::Ready(())
    }

    /// Delivers `event`; `Err(())` when its handler panicked.
    async fn emit(&mut self, event: Event) -> Result<(), ()> {
        poll_fn(|cx| self.poll_ready(cx)).await;
        match self {
            Self::Queue(tx) => {
                if tx.send_item(event).is_err() {
                    *self = Self::Discard;
                }
                Ok(())
            }
            Self::Handlers(handlers, ws) => handlers.dispatch(ws, event),
            Self::Discard => Ok(()),
        }
    }
}

/// The task's ends of the handles' channels.
struct Channels {
    shared: Arc<Shared>,
    data_rx: mpsc::Receiver<Message>,
    control_rx: mpsc::UnboundedReceiver<Control>,
    sink: EventSink,
}

impl Drop for Channels {
    /// The task is over, whichever way it ended (a panic, a runtime shutting down, an aborted
    /// server task): no handle may go on seeing a live connection, nor wait for room.
    fn drop(&mut self) {
        self.shared.advance(ReadyState::Closed);
    }
}

impl WebSocket {
    /// `readyState` `CONNECTING` (0).
    pub const CONNECTING: ReadyState = ReadyState::Connecting;
    /// `readyState` `OPEN` (1).
    pub const OPEN: ReadyState = ReadyState::Open;
    /// `readyState` `CLOSING` (2).
    pub const CLOSING: ReadyState = ReadyState::Closing;
    /// `readyState` `CLOSED` (3).
    pub const CLOSED: ReadyState = ReadyState::Closed;

    /// Connects to `url` with default settings, as `new WebSocket(url)`: returns at once in
    /// [`ReadyState::Connecting`] and connects in a spawned task; [`Event::Open`] or
    /// [`Event::Error`] tells how it went.
    ///
    /// # Errors
    ///
    /// The standard's `SyntaxError` cases, before anything is sent: [`Error::Url`] for a
    /// malformed URL, a scheme other than `ws`, `wss`, `http`, `https`, or a fragment.
    ///
    /// # Panics
    ///
    /// Outside a tokio runtime.
    pub fn new(url: &str) -> Result<Self, Error> {
        Self::builder(url).connect()
    }

    /// Connects to `url` offering `protocols`, as `new WebSocket(url, protocols)`.
    ///
    /// # Errors
    ///
    /// As [`new`](Self::new); [`Error::Handshake`] when a subprotocol is not a valid HTTP token
    /// or appears twice.
    ///
    /// # Panics
    ///
    /// Outside a tokio runtime.
    pub fn with_protocols<I, P>(url: &str, protocols: I) -> Result<Self, Error>
    where
        I: IntoIterator<Item = P>,
        P: Into<String>,
    {
        Self::builder(url).protocols(protocols).connect()
    }

    /// A connection to `url` with settings, headers and handlers.
    pub fn builder(url: impl Into<String>) -> WebSocketBuilder {
        WebSocketBuilder {
            url: url.into(),
            config: WebSocketConfig::default(),
            protocols: None,
            headers: Vec::new(),
            bad_header: false,
            handlers: Handlers::default(),
        }
    }

    /// Wraps an open connection (e.g. from [`accept`](crate::accept)) and drives it in a
    /// spawned task. It starts [`ReadyState::Open`]; `url` is what [`url`](Self::url) reports.
    ///
    /// # Panics
    ///
    /// Outside a tokio runtime.
    pub fn from_stream<S>(stream: WebSocketStream<S>, url: impl Into<String>) -> Self
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let (ws, task) = Self::attach(stream, url.into());
        tokio::spawn(task);
        ws
    }

    /// A handle for an open connection and the future that drives it.
    fn attach<S>(stream: WebSocketStream<S>, url: String) -> (Self, impl Future<Output = ()>)
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let high_water = stream.config().write_buffer_high_water;
        let (ws, channels) = Self::make(url, ReadyState::Open, high_water, Handlers::default());
        let _ = channels.shared.negotiated.set((
            stream.protocol().unwrap_or_default().to_owned(),
            stream.extensions(),
        ));
        (ws, Driver::new(stream, channels).run())
    }

    /// A handle and the task's ends of its channels.
    fn make(
        url: String,
        state: ReadyState,
        high_water: usize,
        handlers: Handlers,
    ) -> (Self, Channels) {
        let shared = Arc::new(Shared {
            url,
            state: AtomicU8::new(state as u8),
            negotiated: OnceLock::new(),
            queued: AtomicUsize::new(0),
            in_stream: AtomicUsize::new(0),
            high_water,
            room: Notify::new(),
        });
        let (data_tx, data_rx) = mpsc::channel(MAX_QUEUED_MESSAGES);
        let (control_tx, control_rx) = mpsc::unbounded_channel();
        let (event_tx, event_rx) = mpsc::channel(EVENT_QUEUE);
        let ws = Self {
            handle: Arc::new(Handle {
                shared: shared.clone(),
                data_tx,
                control_tx,
                events: tokio::sync::Mutex::new(event_rx),
            }),
        };
        let sink = if handlers.is_empty() {
            EventSink::Queue(PollSender::new(event_tx))
        } else {
            // The queue's sender is dropped: `next_event` returns `None` at once.
            EventSink::Handlers(Box::new(handlers), ws.clone())
        };
        let channels = Channels {
            shared,
            data_rx,
            control_rx,
            sink,
        };
        (ws, channels)
    }

    /// The URL (`url`): for a client, the parsed URL with `http(s)` mapped to `ws(s)` and
    /// without credentials; for a server-side connection, the request URI (path and query).
    pub fn url(&self) -> &str {
        &self.handle.shared.url
    }

    /// The state (`readyState`).
    pub fn ready_state(&self) -> ReadyState {
        self.handle.shared.ready_state()
    }

    /// Bytes accepted by [`send`](Self::send) and not yet written to the socket
    /// (`bufferedAmount`): the payloads in the send queue plus the connection's outgoing buffer
    /// (frames, as they go on the wire). It grows while
    /// the peer does not read and falls back as the socket accepts the bytes.
    pub fn buffered_amount(&self) -> usize {
        self.handle.shared.buffered_amount()
    }

    /// The subprotocol the server selected (`protocol`); empty before open or when none.
    pub fn protocol(&self) -> &str {
        self.handle
            .shared
            .negotiated
            .get()
            .map_or("", |(protocol, _)| protocol)
    }

    /// The extensions in force, as the `Sec-WebSocket-Extensions` value agreed (`extensions`);
    /// empty before open or when none.
    pub fn extensions(&self) -> &str {
        self.handle
            .shared
            .negotiated
            .get()
            .map_or("", |(_, extensions)| extensions)
    }

    /// Queues a message (`send()`) without waiting: `&str` and `String` are sent as text,
    /// `&[u8]`, `Vec<u8>` and `Bytes` as binary; a [`Message::Close`] starts the closing
    /// handshake as [`close`](Self::close) does (with any sendable code).
    ///
    /// # Errors
    ///
    /// - [`Error::InvalidState`] while [`Connecting`](ReadyState::Connecting) (the standard's
    ///   `InvalidStateError`);
    /// - [`Error::Send`]`(`[`SendError::Closed`]`)` once closing or closed;
    /// - [`Error::QueueFull`] when [`buffered_amount`](Self::buffered_amount) is at least
    ///   [`WebSocketConfig::write_buffer_high_water`] or [`MAX_QUEUED_MESSAGES`] messages wait:
    ///   nothing is queued.
    pub fn send(&self, message: impl Into<Message>) -> Result<(), Error> {
        let message = message.into();
        if let Message::Close(frame) = message {
            return self.close_frame(frame);
        }
        self.check_open()?;
        let shared = &self.handle.shared;
        let len = message.as_payload().len();
        if !shared.try_reserve(len) {
            return Err(Error::QueueFull);
        }
        match self.handle.data_tx.try_send(message) {
            Ok(()) => Ok(()),
            Err(full_or_closed) => {
                shared.release(len);
                Err(match full_or_closed {
                    TrySendError::Full(_) => Error::QueueFull,
                    TrySendError::Closed(_) => Error::Send(SendError::Closed),
                })
            }
        }
    }

    /// Like [`send`](Self::send), but waits while the queue is full instead of failing.
    ///
    /// # Errors
    ///
    /// As [`send`](Self::send), except [`Error::QueueFull`].
    ///
    /// # Cancel safety
    ///
    /// The message is queued whole when the future completes; dropped before, nothing is sent.
    pub async fn send_async(&self, message: impl Into<Message>) -> Result<(), Error> {
        let message = message.into();
        if let Message::Close(frame) = message {
            return self.close_frame(frame);
        }
        let shared = &self.handle.shared;
        loop {
            let mut room = pin!(shared.room.notified());
            room.as_mut().enable();
            self.check_open()?;
            if shared.buffered_amount() < shared.high_water {
                // A slot in the queue first, then the bytes: both are taken without an await
                // in between, so a cancelled call holds nothing.
                let permit = self
                    .handle
                    .data_tx
                    .reserve()
                    .await
                    .map_err(|_| Error::Send(SendError::Closed))?;
                self.check_open()?;
                if shared.try_reserve(message.as_payload().len()) {
                    permit.send(message);
                    return Ok(());
                }
            }
            room.await;
        }
    }

    /// Starts the closing handshake (`close(code, reason)`): the close frame follows the data
    /// already queued. While connecting, fails the connection instead ([`Event::Error`], then
    /// [`Event::Close`] with 1006). Does nothing once closing or closed.
    ///
    /// Without a code, 1000 is sent.
    ///
    /// # Errors
    ///
    /// Nothing is sent when `code` is neither 1000 nor 3000–4999
    /// ([`SendError::InvalidCloseCode`], the standard's `InvalidAccessError`) or `reason` is
    /// over 123 UTF-8 bytes ([`SendError::CloseReasonTooLong`], its `SyntaxError`).
    pub fn close(&self, code: Option<u16>, reason: Option<&str>) -> Result<(), Error> {
        // WHATWG WebSockets, close(): "If code is present, but is neither an integer equal to
        // 1000 nor an integer in the range 3000 to 4999, inclusive, throw an
        // "InvalidAccessError" DOMException."
        if let Some(code) = code {
            if code != 1000 && !(3000..=4999).contains(&code) {
                return Err(SendError::InvalidCloseCode(code).into());
            }
        }
        let reason = reason.unwrap_or_default();
        // "If reasonBytes is longer than 123 bytes, then throw a "SyntaxError" DOMException."
        if reason.len() > MAX_CLOSE_REASON {
            return Err(SendError::CloseReasonTooLong.into());
        }
        self.start_closing(CloseCode(code.unwrap_or(1000)), reason.to_owned());
        Ok(())
    }

    /// `send(Message::Close(..))`: any code the protocol allows.
    fn close_frame(&self, frame: Option<CloseFrame>) -> Result<(), Error> {
        let (code, reason) = frame.map_or((CloseCode::NORMAL, String::new()), |frame| {
            (frame.code, frame.reason.to_string())
        });
        if !code.is_sendable() {
            return Err(SendError::InvalidCloseCode(code.0).into());
        }
        if reason.len() > MAX_CLOSE_REASON {
            return Err(SendError::CloseReasonTooLong.into());
        }
        self.start_closing(code, reason);
        Ok(())
    }

    fn start_closing(&self, code: CloseCode, reason: String) {
        start_closing(&self.handle.shared, &self.handle.control_tx, code, reason);
    }

    fn check_open(&self) -> Result<(), Error> {
        match self.ready_state() {
            ReadyState::Open => Ok(()),
            ReadyState::Connecting => Err(Error::InvalidState),
            ReadyState::Closing | ReadyState::Closed => Err(SendError::Closed.into()),
        }
    }

    /// The next event; `None` after [`Event::Close`], or at once on a connection that uses
    /// handlers. Clones share one queue: each event goes to one caller.
    ///
    /// # Cancel safety
    ///
    /// Cancel-safe: an event is never lost when the future is dropped.
    pub async fn next_event(&self) -> Option<Event> {
        self.handle.events.lock().await.recv().await
    }
}

/// Moves the state to Closing and asks the task to close (or, while connecting, to fail the
/// connection); does nothing once closing or closed.
fn start_closing(
    shared: &Shared,
    control_tx: &mpsc::UnboundedSender<Control>,
    code: CloseCode,
    reason: String,
) {
    let mut current = shared.state.load(Ordering::Acquire);
    loop {
        let control = match ReadyState::from_u8(current) {
            ReadyState::Connecting => Control::Abort,
            ReadyState::Open => Control::Close(code, reason.clone()),
            ReadyState::Closing | ReadyState::Closed => return,
        };
        match shared.state.compare_exchange(
            current,
            ReadyState::Closing as u8,
            Ordering::AcqRel,
            Ordering::Acquire,
        ) {
            Ok(_) => {
                // The task may be gone already (it then reports Closed soon).
                let _ = control_tx.send(control);
                shared.room.notify_waiters();
                return;
            }
            Err(actual) => current = actual,
        }
    }
}

/// A user handler panicked: the connection task survives it to close with 1011 (no reason:
/// panic messages may be security-sensitive) and to report the end to every handle.
fn handler_panicked(shared: &Shared, control_tx: &mpsc::UnboundedSender<Control>) {
    tracing::error!("websocket connection handler panicked");
    let cause = LocalClose::HandlerFailed;
    start_closing(
        shared,
        control_tx,
        cause.close_code(),
        cause.reason().to_owned(),
    );
}

/// Builds a client [`WebSocket`]: subprotocols, settings, headers, handlers.
///
/// ```no_run
/// # async fn run() -> Result<(), sockeye::Error> {
/// use sockeye::WebSocket;
///
/// let ws = WebSocket::builder("ws://127.0.0.1:9001/")
///     .protocols(["chat"])
///     .on_open(|ws| {
///         let _ = ws.send("hello");
///     })
///     .on_message(|ws, message| {
///         println!("{message:?}");
///         let _ = ws.close(None, None);
///     })
///     .on_error(|_, error| eprintln!("error: {error}"))
///     .on_close(|_, close| println!("closed with {}", close.code))
///     .connect()?;
/// # drop(ws); Ok(()) }
/// ```
pub struct WebSocketBuilder {
    url: String,
    config: WebSocketConfig,
    protocols: Option<Vec<String>>,
    headers: Vec<(String, String)>,
    bad_header: bool,
    handlers: Handlers,
}

impl fmt::Debug for WebSocketBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WebSocketBuilder")
            .field("url", &self.url)
            .field("protocols", &self.protocols)
            .field("handlers", &self.handlers)
            .finish_non_exhaustive()
    }
}

impl WebSocketBuilder {
    /// Offers these subprotocols, most preferred first (overrides
    /// [`WebSocketConfig::protocols`] whatever the order of calls).
    #[must_use]
    pub fn protocols<I, P>(mut self, protocols: I) -> Self
    where
        I: IntoIterator<Item = P>,
        P: Into<String>,
    {
        self.protocols = Some(protocols.into_iter().map(Into::into).collect());
        self
    }

    /// Uses `config` (its `write_buffer_high_water` also bounds [`WebSocket::send`]'s queue).
    #[must_use]
    pub fn config(mut self, config: WebSocketConfig) -> Self {
        self.config = config;
        self
    }

    /// Adds a request header; an invalid name or value makes [`connect`](Self::connect) fail.
    #[must_use]
    pub fn header(mut self, name: &str, value: &str) -> Self {
        let valid = http::HeaderName::from_bytes(name.as_bytes()).is_ok()
            && http::HeaderValue::from_str(value).is_ok();
        if valid {
            self.headers.push((name.to_owned(), value.to_owned()));
        } else {
            self.bad_header = true;
        }
        self
    }

    /// Sets the `Origin` header, as a browser does.
    #[must_use]
    pub fn origin(self, origin: &str) -> Self {
        self.header("origin", origin)
    }

    /// `onopen`: runs on the connection task once the handshake succeeded.
    #[must_use]
    pub fn on_open(mut self, handler: impl FnMut(&WebSocket) + Send + 'static) -> Self {
        self.handlers.on_open = Some(Box::new(handler));
        self
    }

    /// `onmessage`: runs on the connection task for each text or binary message. It may call
    /// [`WebSocket::send`] and [`WebSocket::close`] (they never wait); while it runs, nothing is
    /// read. If it (or `on_open`) panics, the panic is caught and logged and the connection is
    /// closed with 1011; `on_close` still runs.
    #[must_use]
    pub fn on_message(mut self, handler: impl FnMut(&WebSocket, Message) + Send + 'static) -> Self {
        self.handlers.on_message = Some(Box::new(handler));
        self
    }

    /// `onerror`: runs when the connection fails, just before `onclose`.
    #[must_use]
    pub fn on_error(mut self, handler: impl FnMut(&WebSocket, Error) + Send + 'static) -> Self {
        self.handlers.on_error = Some(Box::new(handler));
        self
    }

    /// `onclose`: runs once when the connection is closed; the last handler called.
    #[must_use]
    pub fn on_close(
        mut self,
        handler: impl FnMut(&WebSocket, CloseEvent) + Send + 'static,
    ) -> Self {
        self.handlers.on_close = Some(Box::new(handler));
        self
    }

    /// Checks the URL and subprotocols, then returns the handle in
    /// [`ReadyState::Connecting`] and connects in a spawned task. With at least one handler set,
    /// events go to the handlers (and [`WebSocket::next_event`] returns `None`).
    ///
    /// # Errors
    ///
    /// [`Error::Url`] for a malformed URL, another scheme, a fragment, or `wss` without the
    /// `rustls` feature; [`Error::Handshake`] for an invalid or duplicate subprotocol or an
    /// invalid header.
    ///
    /// # Panics
    ///
    /// Outside a tokio runtime.
    pub fn connect(self) -> Result<WebSocket, Error> {
        if self.bad_header {
            return Err(HandshakeError::BadHeader("invalid extra header").into());
        }
        let mut config = self.config;
        if let Some(protocols) = self.protocols {
            config.protocols = protocols;
        }
        // WHATWG WebSockets, constructor: "If any of the values in protocols occur more than
        // once or otherwise fail to match the requirements for elements that comprise the
        // value of `Sec-WebSocket-Protocol` fields [...] throw a "SyntaxError" DOMException."
        ClientRequest::new("", "/").protocols(config.protocols.iter().cloned())?;
        let url = WsUrl::parse(&self.url)?;
        if url.tls && !cfg!(feature = "rustls") {
            return Err(UrlError::TlsDisabled.into());
        }
        let scheme = if url.tls { "wss" } else { "ws" };
        let serialized = format!("{scheme}://{}{}", url.host_header, url.resource);
        let high_water = config.write_buffer_high_water;
        let mut client = ClientBuilder::new(self.url).config(config);
        for (name, value) in &self.headers {
            client = client.header(name, value);
        }
        let (ws, channels) = WebSocket::make(
            serialized,
            ReadyState::Connecting,
            high_water,
            self.handlers,
        );
        tokio::spawn(run_client(client, channels));
        Ok(ws)
    }
}

/// The client task: connect (unless `close()` comes first), then drive the connection.
async fn run_client(client: ClientBuilder, mut channels: Channels) {
    let connected = tokio::select! {
        biased;
        control = channels.control_rx.recv() => match control {
            Some(_) => Err(Error::Io(io::Error::new(
                io::ErrorKind::ConnectionAborted,
                "closed before the connection was established",
            ))),
            // Every handle was dropped: nobody to tell.
            None => return,
        },
        connected = client.connect() => connected,
    };
    let shared = channels.shared.clone();
    let result = connected.and_then(|(stream, _response)| {
        let _ = shared.negotiated.set((
            stream.protocol().unwrap_or_default().to_owned(),
            stream.extensions(),
        ));
        let opened = shared.state.compare_exchange(
            ReadyState::Connecting as u8,
            ReadyState::Open as u8,
            Ordering::AcqRel,
            Ordering::Acquire,
        );
        match opened {
            Ok(_) => Ok(stream),
            // `close()` won the race: fail the connection (dropping the stream).
            Err(_) => Err(Error::Io(io::Error::new(
                io::ErrorKind::ConnectionAborted,
                "closed before the connection was established",
            ))),
        }
    });
    match result {
        Ok(stream) => Driver::new(stream, channels).run().await,
        Err(error) => {
            tracing::debug!(%error, "websocket connection failed");
            // WHATWG WebSockets, "fail the WebSocket connection": readyState becomes CLOSED,
            // then an error event, then a close event with code 1006.
            shared.advance(ReadyState::Closed);
            // A panicking handler is logged by `emit`; nothing is left to close.
            let _ = channels.sink.emit(Event::Error(error)).await;
            let _ = channels
                .sink
                .emit(Event::Close(CloseEvent::abnormal()))
                .await;
        }
    }
}

/// Drives an open connection: moves queued messages into the stream, reads and delivers events.
struct Driver<S> {
    stream: WebSocketStream<S>,
    channels: Channels,
    /// A message taken from the queue, waiting for room in the stream.
    pending: Option<Message>,
    /// Every handle was dropped.
    orphaned: bool,
}

impl<S: AsyncRead + AsyncWrite + Unpin> Driver<S> {
    fn new(stream: WebSocketStream<S>, channels: Channels) -> Self {
        Self {
            stream,
            channels,
            pending: None,
            orphaned: false,
        }
    }

    async fn run(mut self) {
        if self.channels.sink.emit(Event::Open).await.is_err() {
            self.close_locally(LocalClose::HandlerFailed);
        }
        let mut error = None;
        loop {
            match poll_fn(|cx| self.poll_step(cx)).await {
                // WHATWG WebSockets, "when a WebSocket message has been received": "If
                // readyState is not OPEN (1), then return." Data the peer sent before it saw
                // this end's close frame arrives after `close()` and is dropped here.
                Some(Ok(Message::Text(_) | Message::Binary(_)))
                    if self.channels.shared.ready_state() != ReadyState::Open => {}
                Some(Ok(message @ (Message::Text(_) | Message::Binary(_)))) => {
                    let delivered = self.channels.sink.emit(Event::Message(message)).await;
                    if delivered.is_err() {
                        // python-websockets closes with 1011 when a handler raises.
                        self.close_locally(LocalClose::HandlerFailed);
                    }
                }
                Some(Ok(Message::Close(_))) => self.channels.shared.advance(ReadyState::Closing),
                Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
                Some(Err(e)) => {
                    error.get_or_insert(e);
                }
                None => break,
            }
        }
        let close = self
            .stream
            .close_info()
            .map_or_else(CloseEvent::abnormal, |closed| {
                // RFC 6455 §7.1.5: "If _The WebSocket Connection is Closed_ and no Close control
                // frame was received by the endpoint [...], _The WebSocket Connection Close
                // Code_ is considered to be 1006." A connection this end failed (a protocol
                // violation, a timeout) reports 1006 as the browser does, whatever code it sent.
                if !closed.was_clean && closed.initiator == Initiator::Library {
                    CloseEvent::abnormal()
                } else {
                    CloseEvent {
                        code: closed.code.0,
                        reason: closed.reason.clone(),
                        was_clean: closed.was_clean,
                    }
                }
            });
        let shared = &self.channels.shared;
        shared
            .in_stream
            .store(self.stream.buffered_amount(), Ordering::Release);
        // WHATWG WebSockets, "when the WebSocket connection is closed": readyState becomes
        // CLOSED, then an error event if the connection failed, then the close event.
        shared.advance(ReadyState::Closed);
        // The abnormal end is reported by the error event; a clean close has none.
        // A panic in these last handlers is logged by `emit`: the connection is already over.
        if let Some(error) = error {
            let _ = self.channels.sink.emit(Event::Error(error)).await;
        }
        let _ = self.channels.sink.emit(Event::Close(close)).await;
    }

    /// Hands queued messages to the stream, then reads once an event can be delivered.
    fn poll_step(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Message, Error>>> {
        self.poll_commands(cx);
        ready!(self.channels.sink.poll_ready(cx));
        let item = Pin::new(&mut self.stream).poll_next(cx);
        self.publish();
        item
    }

    /// Moves messages from the send queue into the stream while it has room, then closes if
    /// asked (after the data queued before), and flushes.
    fn poll_commands(&mut self, cx: &mut Context<'_>) {
        loop {
            if let Some(message) = self.pending.take() {
                let len = message.as_payload().len();
                let shared = &self.channels.shared;
                match Pin::new(&mut self.stream).poll_ready(cx) {
                    Poll::Pending => {
                        self.pending = Some(message);
                        break;
                    }
                    Poll::Ready(Ok(())) => match Pin::new(&mut self.stream).start_send(message) {
                        // Counted in the stream before leaving the queue, so that
                        // `buffered_amount` never dips while the message moves.
                        Ok(()) => {
                            shared.in_stream.fetch_add(len, Ordering::AcqRel);
                            shared.queued.fetch_sub(len, Ordering::AcqRel);
                        }
                        Err(e) => {
                            tracing::debug!(error = %e, "queued message dropped");
                            shared.release(len);
                        }
                    },
                    Poll::Ready(Err(e)) => {
                        tracing::debug!(error = %e, "queued message dropped");
                        shared.release(len);
                    }
                }
                continue;
            }
            if !self.orphaned {
                match self.channels.data_rx.poll_recv(cx) {
                    Poll::Ready(Some(message)) => {
                        self.pending = Some(message);
                        continue;
                    }
                    Poll::Ready(None) => {
                        self.orphaned = true;
                        self.channels.sink = EventSink::Discard;
                        continue;
                    }
                    Poll::Pending => {}
                }
            }
            match self.channels.control_rx.poll_recv(cx) {
                Poll::Ready(Some(Control::Close(code, reason))) => {
                    self.start_close(code, &reason);
                    continue;
                }
                Poll::Ready(Some(Control::Abort)) => {
                    self.start_close(CloseCode::NORMAL, "");
                    continue;
                }
                Poll::Ready(None) | Poll::Pending => {}
            }
            if self.orphaned {
                // Every handle is gone: close as a browser does when a `WebSocket` is
                // garbage-collected, unless a close was asked for before the last handle went
                // (1011 after a panicking `on_connection` future).
                self.close_locally(LocalClose::Orphaned);
            }
            break;
        }
        if let Poll::Ready(Err(e)) = Pin::new(&mut self.stream).poll_flush(cx) {
            tracing::debug!(error = %e, "flush failed");
        }
        self.publish();
    }

    /// Sends a close frame, unless one was sent or received already.
    /// Starts the close handshake for a local reason.
    fn close_locally(&mut self, cause: LocalClose) {
        self.start_close(cause.close_code(), cause.reason());
    }

    fn start_close(&mut self, code: CloseCode, reason: &str) {
        self.channels.shared.advance(ReadyState::Closing);
        if self.stream.state() != State::Open {
            return;
        }
        let frame = CloseFrame {
            code,
            reason: reason.into(),
        };
        // Fails only when a close frame was already sent: nothing to do.
        let _ = Pin::new(&mut self.stream).start_send(Message::Close(Some(frame)));
    }

    /// Publishes the stream's buffered amount and state to the handles.
    fn publish(&self) {
        let shared = &self.channels.shared;
        let now = self.stream.buffered_amount();
        let before = shared.in_stream.swap(now, Ordering::AcqRel);
        if now < before {
            shared.room.notify_waiters();
        }
        match ReadyState::from(self.stream.state()) {
            // Closed is published with the close event, after the last item.
            ReadyState::Closing | ReadyState::Closed => shared.advance(ReadyState::Closing),
            ReadyState::Connecting | ReadyState::Open => {}
        }
    }
}

impl Server {
    /// Runs the server, handing each connection to `handler` as a [`WebSocket`] (already
    /// [`Open`](ReadyState::Open); [`url`](WebSocket::url) is the request URI) with its
    /// upgrade request. The connection is driven on the server's task for it, alongside the
    /// handler's future: [`serve_with_shutdown`](Self::serve_with_shutdown)'s graceful
    /// shutdown covers it. A connection whose handles are all dropped is closed with 1001; if
    /// the handler's future panics, the panic is caught and logged and the connection closed
    /// with 1011.
    ///
    /// ```no_run
    /// # async fn run() -> std::io::Result<()> {
    /// use sockeye::{Event, Server};
    ///
    /// let server = Server::bind("127.0.0.1:9001").await?;
    /// server
    ///     .on_connection(|ws, _request| async move {
    ///         while let Some(event) = ws.next_event().await {
    ///             if let Event::Message(message) = event {
    ///                 let _ = ws.send_async(message).await;
    ///             }
    ///         }
    ///     })
    ///     .await
    /// # }
    /// ```
    ///
    /// # Errors
    ///
    /// As [`serve`](Self::serve): never returns `Ok`.
    pub async fn on_connection<H, F>(self, handler: H) -> io::Result<()>
    where
        H: Fn(WebSocket, Request<()>) -> F + Send + Sync + 'static,
        F: Future<Output = ()> + Send + 'static,
    {
        self.on_connection_with_shutdown(handler, std::future::pending())
            .await
    }

    /// [`on_connection`](Self::on_connection) until `signal` completes, then shuts down as
    /// [`serve_with_shutdown`](Self::serve_with_shutdown) does.
    ///
    /// # Errors
    ///
    /// As [`serve_with_shutdown`](Self::serve_with_shutdown).
    pub async fn on_connection_with_shutdown<H, F>(
        self,
        handler: H,
        signal: impl Future<Output = ()>,
    ) -> io::Result<()>
    where
        H: Fn(WebSocket, Request<()>) -> F + Send + Sync + 'static,
        F: Future<Output = ()> + Send + 'static,
    {
        self.serve_with_shutdown(
            move |stream, request| {
                let (ws, driver) = WebSocket::attach(stream, request.uri().to_string());
                let shared = ws.handle.shared.clone();
                let control_tx = ws.handle.control_tx.clone();
                // The handler may panic while making its future, or while it runs.
                let user = match std::panic::catch_unwind(AssertUnwindSafe(|| handler(ws, request)))
                {
                    Ok(user) => Some(AssertUnwindSafe(user).catch_unwind()),
                    Err(_) => {
                        // Asked for before the driver first runs, so that it is not taken for
                        // a handler that dropped its handles (1001).
                        handler_panicked(&shared, &control_tx);
                        None
                    }
                };
                let user = async move {
                    if let Some(user) = user {
                        if user.await.is_err() {
                            handler_panicked(&shared, &control_tx);
                        }
                    }
                };
                async move {
                    tokio::join!(driver, user);
                }
            },
            signal,
        )
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_state_values_are_the_standards() {
        assert_eq!(WebSocket::CONNECTING.as_u16(), 0);
        assert_eq!(WebSocket::OPEN.as_u16(), 1);
        assert_eq!(WebSocket::CLOSING.as_u16(), 2);
        assert_eq!(WebSocket::CLOSED.as_u16(), 3);
        for state in [
            ReadyState::Connecting,
            ReadyState::Open,
            ReadyState::Closing,
            ReadyState::Closed,
        ] {
            assert_eq!(ReadyState::from_u8(state as u8), state);
        }
    }

    #[tokio::test]
    async fn close_arguments_are_checked_before_anything_is_sent() {
        let (ws, mut channels) =
            WebSocket::make("/".into(), ReadyState::Open, 1024, Handlers::default());
        for code in [0, 999, 1001, 1005, 1006, 2999, 5000, u16::MAX] {
            assert!(
                matches!(
                    ws.close(Some(code), None),
                    Err(Error::Send(SendError::InvalidCloseCode(c))) if c == code
                ),
                "code {code}"
            );
        }
        let long = "é".repeat(62); // 124 bytes
        assert!(matches!(
            ws.close(Some(1000), Some(&long)),
            Err(Error::Send(SendError::CloseReasonTooLong))
        ));
        assert_eq!(ws.ready_state(), ReadyState::Open);
        assert!(channels.control_rx.try_recv().is_err(), "nothing queued");
        ws.close(Some(4999), Some(&long[..122])).unwrap();
        assert_eq!(ws.ready_state(), ReadyState::Closing);
        assert!(matches!(
            channels.control_rx.try_recv(),
            Ok(Control::Close(CloseCode(4999), reason)) if reason.len() == 122
        ));
        // Closing: a second close does nothing, send fails.
        ws.close(None, None).unwrap();
        assert!(channels.control_rx.try_recv().is_err());
        assert!(matches!(
            ws.send("late"),
            Err(Error::Send(SendError::Closed))
        ));
    }

    #[tokio::test]
    async fn send_is_bounded_by_the_high_water_mark() {
        let (ws, mut channels) =
            WebSocket::make("/".into(), ReadyState::Open, 100, Handlers::default());
        ws.send(vec![0u8; 60]).unwrap();
        ws.send(vec![0u8; 60]).unwrap();
        assert_eq!(ws.buffered_amount(), 120);
        assert!(matches!(ws.send("x"), Err(Error::QueueFull)));
        assert_eq!(
            ws.buffered_amount(),
            120,
            "a refused message is not counted"
        );
        assert!(channels.data_rx.try_recv().is_ok());
        channels.shared.queued.fetch_sub(60, Ordering::AcqRel);
        ws.send("x").unwrap();
        assert_eq!(ws.buffered_amount(), 61);
    }

    #[test]
    fn racing_senders_go_over_the_high_water_mark_by_one_message_at_most() {
        let (ws, _channels) =
            WebSocket::make("/".into(), ReadyState::Open, 100, Handlers::default());
        let start = Arc::new(std::sync::Barrier::new(8));
        let senders: Vec<_> = (0..8)
            .map(|_| {
                let (ws, start) = (ws.clone(), start.clone());
                std::thread::spawn(move || {
                    start.wait();
                    ws.send(vec![0u8; 60]).is_ok()
                })
            })
            .collect();
        let accepted = senders
            .into_iter()
            .map(|sender| sender.join().unwrap())
            .filter(|&ok| ok)
            .count();
        // 0 < 100: accepted; 60 < 100: accepted; 120: full, whatever the interleaving.
        assert_eq!(accepted, 2);
        assert_eq!(ws.buffered_amount(), 120);
    }

    #[tokio::test]
    async fn send_fails_while_connecting() {
        let (ws, _channels) =
            WebSocket::make("/".into(), ReadyState::Connecting, 100, Handlers::default());
        let err = ws.send("early").unwrap_err();
        assert!(matches!(err, Error::InvalidState), "{err:?}");
        let err = ws.send_async("early").await.unwrap_err();
        assert!(matches!(err, Error::InvalidState), "{err:?}");
        assert_eq!(ws.buffered_amount(), 0);
    }
}
