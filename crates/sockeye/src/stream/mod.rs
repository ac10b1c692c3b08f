//! [`WebSocketStream`]: a [`Connection`] driven over an async transport. The only code that
//! reads from or writes to the socket.

use std::future::{poll_fn, Future as _};
use std::io::{self, IoSlice};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{ready, Context, Poll, Wake, Waker};

use futures_core::{FusedStream, Stream};
use futures_sink::Sink;
use futures_util::stream::{SplitSink, SplitStream};
use futures_util::task::AtomicWaker;
use futures_util::StreamExt as _;
use sockeye_proto::deflate::DeflateParams;
use sockeye_proto::handshake::Negotiated;
use sockeye_proto::{
    CloseCode, Closed, Connection, DataKind, Event, MaskSource, Message, PreparedMessage, Role,
    SendError, State,
};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};
use tokio_util::sync::{CancellationToken, WaitForCancellationFutureOwned};

use crate::config::WebSocketConfig;
use crate::error::{Error, LocalClose};
use crate::rng::OsMaskSource;
use crate::transport::Transport;

/// Wakes both the task reading and the task writing: the transport keeps one waker per
/// direction, and either half may be the one that polled it last. `read` holds the waker of the
/// last `poll_next`, `write` that of the last `Sink` poll, `send`, `flush` or `close`; the
/// transport and the close timer are only ever polled with `both_halves` (a waker made of
/// this pair), so neither half can
/// overwrite the other's waker.
#[derive(Debug)]
struct WakerPair {
    read: AtomicWaker,
    write: AtomicWaker,
    /// A timer or the shutdown signal woke the stream (or one was armed): the next
    /// housekeeping polls them. Without it they are not polled at all, since each holds the
    /// (unchanging) [`HousekeepingWaker`] already.
    housekeeping_due: AtomicBool,
}

impl Default for WakerPair {
    fn default() -> Self {
        Self {
            read: AtomicWaker::new(),
            write: AtomicWaker::new(),
            housekeeping_due: AtomicBool::new(true),
        }
    }
}

impl Wake for WakerPair {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.read.wake();
        self.write.wake();
    }
}

/// The waker the keepalive, idle and write timers and the shutdown signal are polled with:
/// records that housekeeping is due, then wakes both halves like `both_halves`.
#[derive(Debug)]
struct HousekeepingWaker(Arc<WakerPair>);

impl Wake for HousekeepingWaker {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.0.housekeeping_due.store(true, Ordering::Release);
        self.0.wake_by_ref();
    }
}

/// A WebSocket connection over `S` (a `TcpStream`, a TLS stream, a `DuplexStream`…).
///
/// - As a [`Stream`] it yields received messages: `Text`, `Binary`, and, for information,
///   `Ping`, `Pong` (pings are answered automatically) and `Close` (the peer's close frame). A
///   clean close ends the stream with `None`; a protocol violation yields
///   `Err(Error::Protocol)` and a connection lost without a close handshake
///   `Err(Error::AbnormalClosure)`, then `None`.
/// - As a [`Sink`] it sends messages; `poll_ready` waits while at least
///   [`WebSocketConfig::write_buffer_high_water`] bytes are queued. `poll_close` performs the
///   close handshake with code 1000.
/// - [`split`](Self::split) gives halves for two tasks.
pub struct WebSocketStream<S> {
    io: S,
    conn: Connection,
    /// Boxed, like the close state below: a stream lives inline in its task's future, often
    /// more than once, so rarely used parts stay out of it.
    /// Shared by every connection of a server (one allocation, not one per connection).
    config: Arc<WebSocketConfig>,
    needs_flush: bool,
    shutdown_pending: bool,
    /// The `Closed` event, once seen; the stream has ended.
    closed: Option<Box<Closed>>,
    /// The `Closed` event waiting for its close frame to be written before it is yielded.
    closing_event: Option<Box<Closed>>,
    close_timer: Option<Pin<Box<Sleep>>>,
    io_failed: bool,
    wakers: Arc<WakerPair>,
    /// Wakes both halves ([`WakerPair`]): the waker the transport and the close timer see.
    both_halves: Waker,
    /// Wakes like `both_halves` and marks housekeeping as due; see [`HousekeepingWaker`].
    housekeeping_waker: Waker,
    liveness: Liveness,
    /// Why this end aborted the connection, reported when the stream ends.
    aborted: Option<LocalClose>,
    /// The subprotocol agreed in the handshake.
    protocol: Option<Box<str>>,
}

/// Keepalive, idle and write timers, and the server's shutdown signal.
struct Liveness {
    last_read: Instant,
    last_message: Instant,
    keepalive: Option<Pin<Box<Sleep>>>,
    /// A keepalive ping was sent and nothing has been read since. A flag rather than a
    /// comparison of instants: a pong read in the same clock tick as the ping (a coarse or
    /// paused clock) is still an answer.
    ping_unanswered: bool,
    idle: Option<Pin<Box<Sleep>>>,
    write_blocked: Option<Pin<Box<Sleep>>>,
    shutdown: Option<Pin<Box<WaitForCancellationFutureOwned>>>,
}

/// Starts the close handshake of `conn` for a local reason, after the output already queued.
fn close_locally(conn: &mut Connection, cause: LocalClose) {
    // Fails only when a close frame was already sent: that close goes on.
    let _ = conn.close(cause.close_code(), cause.reason());
}

thread_local! {
    /// The buffer every connection polled on this thread reads into.
    static READ_BUF: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Most slices given to one vectored write (Linux's `IOV_MAX` is 1,024; a burst of large
/// messages beyond this goes out in several writes).
const MAX_WRITE_SLICES: usize = 64;

/// Hands the next write of `conn`'s queue to `write`: every slice (up to
/// [`MAX_WRITE_SLICES`]) when there are several and the transport writes `vectored`, else the
/// first one alone; `None` when nothing is queued. The caller then reports what was written
/// with [`Connection::advance_written`]. Shared by the async stream and the blocking API.
///
/// Two slots are filled first and the long array only for a vectored write of several slices:
/// most writes are one slice (frames encoded into one buffer), and this runs on every poll of
/// the stream, mostly to find nothing queued. Filling 64 empty slices each time cost about 8% of
/// a 1 KiB echo's instructions.
pub(crate) fn write_queued<R>(
    conn: &mut Connection,
    vectored: bool,
    write: impl FnOnce(&[IoSlice<'_>]) -> R,
) -> Option<R> {
    let mut first = [IoSlice::new(&[]); 2];
    match conn.poll_write_slices(&mut first) {
        0 => None,
        1 => Some(write(&first[..1])),
        _ if vectored => {
            let mut slices = [IoSlice::new(&[]); MAX_WRITE_SLICES];
            let count = conn.poll_write_slices(&mut slices);
            Some(write(&slices[..count]))
        }
        _ => Some(write(&first[..1])),
    }
}

/// Payload of keepalive pings.
const KEEPALIVE_PAYLOAD: &[u8] = b"sockeye-keepalive";

impl<S> std::fmt::Debug for WebSocketStream<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebSocketStream")
            .field("conn", &self.conn)
            .finish_non_exhaustive()
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> WebSocketStream<S> {
    /// Wraps a transport on which the opening handshake is already done.
    ///
    /// `leftover` holds bytes read past the handshake head; they are the first WebSocket bytes.
    pub fn from_raw(io: S, role: Role, config: WebSocketConfig, leftover: &[u8]) -> Self {
        Self::from_negotiated(io, role, config, Negotiated::default(), leftover)
    }

    /// Like [`from_raw`](Self::from_raw), with the permessage-deflate parameters agreed in the
    /// handshake.
    #[deprecated(note = "use `from_negotiated`, which also takes the subprotocol")]
    pub fn from_raw_negotiated(
        io: S,
        role: Role,
        config: WebSocketConfig,
        deflate: Option<DeflateParams>,
        leftover: &[u8],
    ) -> Self {
        Self::from_negotiated(io, role, config, Negotiated::new(None, deflate), leftover)
    }

    /// Wraps a transport on which the opening handshake is done, with what it agreed: the
    /// subprotocol ([`protocol`](Self::protocol)) and the permessage-deflate parameters
    /// (`config.deflate` supplies the compression level and threshold). Every handshake in
    /// this crate ends here.
    ///
    /// `leftover` holds bytes read past the handshake head; they are the first WebSocket bytes.
    pub fn from_negotiated(
        io: S,
        role: Role,
        config: impl Into<Arc<WebSocketConfig>>,
        negotiated: Negotiated,
        leftover: &[u8],
    ) -> Self {
        let config = config.into();
        let Negotiated {
            protocol, deflate, ..
        } = negotiated;
        let masks: Box<dyn MaskSource> = match role {
            Role::Client => Box::new(OsMaskSource::new()),
            // RFC 6455 §5.1: "A server MUST NOT mask any frames that it sends to the client", so
            // a server's connection never asks for a key: a zero-sized source (no allocation,
            // no key buffer) that would still give a random one.
            Role::Server => Box::new(|| {
                let mut key = [0; 4];
                getrandom::fill(&mut key).expect("the OS random number generator failed");
                key
            }),
        };
        let conn = config.connection(role, masks, deflate, leftover);
        let wakers = Arc::new(WakerPair::default());
        let both_halves = Waker::from(wakers.clone());
        let housekeeping_waker = Waker::from(Arc::new(HousekeepingWaker(wakers.clone())));
        Self {
            io,
            conn,
            config,
            needs_flush: false,
            shutdown_pending: false,
            closed: None,
            closing_event: None,
            close_timer: None,
            io_failed: false,
            wakers,
            both_halves,
            housekeeping_waker,
            liveness: Liveness {
                last_read: Instant::now(),
                last_message: Instant::now(),
                keepalive: None,
                ping_unanswered: false,
                idle: None,
                write_blocked: None,
                shutdown: None,
            },
            aborted: None,
            protocol: protocol.map(String::into_boxed_str),
        }
    }

    /// The subprotocol agreed in the opening handshake (the browser's `WebSocket.protocol`).
    pub fn protocol(&self) -> Option<&str> {
        self.protocol.as_deref()
    }

    /// Closes the connection with 1001 ("server shutting down") once `token` is cancelled,
    /// while the stream is being polled. Used by [`Server`](crate::Server).
    pub(crate) fn set_shutdown_signal(&mut self, token: CancellationToken) {
        self.liveness.shutdown = Some(Box::pin(token.cancelled_owned()));
        self.housekeeping_due();
    }

    /// Queues a message without waiting.
    ///
    /// The message is written by the next operation that polls the stream (`recv`, `send`,
    /// `flush`…).
    ///
    /// # Errors
    ///
    /// [`Error::QueueFull`] when at least
    /// [`WebSocketConfig::write_buffer_high_water`] bytes are already buffered (nothing is
    /// queued); [`Error::Send`] as for [`send`](Self::send).
    pub fn try_send(&mut self, message: impl Into<Message>) -> Result<(), Error> {
        self.check_usable()?;
        if self.buffered_amount() >= self.config.write_buffer_high_water {
            return Err(Error::QueueFull);
        }
        self.start_send_inner(message.into())
    }

    /// Queues a message prepared for many connections without waiting, like
    /// [`try_send`](Self::try_send): the frame (and, without context takeover, the compressed
    /// payload) is shared with every other connection that sends `prepared`; see
    /// [`PreparedMessage`].
    ///
    /// # Errors
    ///
    /// As [`try_send`](Self::try_send).
    pub fn try_send_prepared(&mut self, prepared: &PreparedMessage) -> Result<(), Error> {
        self.check_usable()?;
        if self.buffered_amount() >= self.config.write_buffer_high_water {
            return Err(Error::QueueFull);
        }
        self.start_send_prepared(prepared)
    }

    /// Queues a message prepared for many connections once the outgoing buffer is below its
    /// high-water mark, without writing it: `SinkExt::feed` for a [`PreparedMessage`] (the
    /// stream's `Sink` takes [`Message`]s; a second `Sink` impl would make every untyped
    /// `poll_ready`/`poll_flush`/`poll_close` call ambiguous). The frame (and, without context
    /// takeover, the compressed payload) is shared with every other connection that sends
    /// `prepared`. Write with [`flush`](Self::flush).
    ///
    /// ```no_run
    /// # async fn broadcast(subscribers: &mut [sockeye::ServerStream]) -> Result<(), sockeye::Error> {
    /// use sockeye::{Message, PreparedMessage};
    ///
    /// let prepared = PreparedMessage::new(Message::text("price update"));
    /// for ws in subscribers.iter_mut() {
    ///     ws.feed_prepared(&prepared).await?;
    /// }
    /// for ws in subscribers.iter_mut() {
    ///     ws.flush().await?;
    /// }
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// # Errors
    ///
    /// As [`send`](Self::send).
    ///
    /// # Cancel safety
    ///
    /// Dropping the future while it waits for room drops nothing; once it returns the message
    /// is queued.
    pub async fn feed_prepared(&mut self, prepared: &PreparedMessage) -> Result<(), Error> {
        poll_fn(|cx| self.poll_ready_inner(cx)).await?;
        self.start_send_prepared(prepared)
    }

    /// Sends a message prepared for many connections and waits until it is written, like
    /// [`send`](Self::send); see [`feed_prepared`](Self::feed_prepared) and
    /// [`PreparedMessage`].
    ///
    /// # Errors
    ///
    /// As [`send`](Self::send).
    ///
    /// # Cancel safety
    ///
    /// As [`send`](Self::send).
    pub async fn send_prepared(&mut self, prepared: &PreparedMessage) -> Result<(), Error> {
        poll_fn(|cx| self.poll_ready_inner(cx)).await?;
        self.start_send_prepared(prepared)?;
        poll_fn(|cx| self.poll_flush_inner(cx)).await
    }

    /// The ready state.
    pub fn state(&self) -> State {
        if self.closed.is_some() {
            State::Closed
        } else {
            match self.conn.state() {
                // The Closed event is not delivered yet; to the user it is still closing.
                State::Closed => State::Closing,
                state => state,
            }
        }
    }

    /// How the connection ended, once the stream has yielded its last item.
    pub fn close_info(&self) -> Option<&Closed> {
        self.closed.as_deref()
    }

    /// Bytes accepted by `send` and not yet written to the transport.
    pub fn buffered_amount(&self) -> usize {
        self.conn.buffered_amount()
    }

    /// The extensions in force, as the `Sec-WebSocket-Extensions` value agreed in the handshake
    /// (the browser's `WebSocket.extensions`); empty when none.
    pub fn extensions(&self) -> String {
        self.conn
            .deflate_params()
            .map_or_else(String::new, ToString::to_string)
    }

    /// The settings in force.
    pub fn config(&self) -> &WebSocketConfig {
        &self.config
    }

    /// The transport.
    pub fn get_ref(&self) -> &S {
        &self.io
    }

    /// The transport, mutably. Reading or writing it directly corrupts the connection.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.io
    }

    /// Receives the next message; `None` once the connection is closed.
    ///
    /// # Cancel safety
    ///
    /// Cancel-safe: a message is never lost when the future is dropped before completing.
    pub async fn recv(&mut self) -> Option<Result<Message, Error>> {
        self.next().await
    }

    /// Sends a message and waits until it is written to the transport.
    ///
    /// For echo and request-response loops, [`send_batched`](Self::send_batched) answers a
    /// burst of received messages with one write instead of one per message.
    ///
    /// # Errors
    ///
    /// [`Error::Send`] when the connection is closing or the message is not valid (a control
    /// frame over 125 bytes, a bad close code); [`Error::Io`] when the transport fails.
    ///
    /// # Cancel safety
    ///
    /// The message is queued whole once the outgoing buffer is below its high-water mark (at the
    /// first poll unless the peer is slow); dropping the future while it waits for room drops
    /// the message, dropping it after leaves the message queued, written by the next operation
    /// on the stream.
    pub async fn send(&mut self, message: impl Into<Message>) -> Result<(), Error> {
        let message = message.into();
        poll_fn(|cx| self.poll_ready_inner(cx)).await?;
        self.start_send_inner(message)?;
        poll_fn(|cx| self.poll_flush_inner(cx)).await
    }

    /// Sends a message like [`send`](Self::send), but never compressed: with permessage-deflate
    /// in force the frame goes out with RSV1 clear, as Node `ws`'s
    /// `send(data, { compress: false })` sends it. For payloads that do not shrink (images,
    /// already-compressed data) or must not be compressed with text an attacker controls; see
    /// [`Connection::send_uncompressed`](sockeye_proto::Connection::send_uncompressed). To
    /// broadcast one, [`feed_prepared`](Self::feed_prepared) a
    /// [`PreparedMessage::uncompressed`]. Control messages are sent as by `send`.
    ///
    /// # Errors
    ///
    /// As [`send`](Self::send).
    ///
    /// # Cancel safety
    ///
    /// As [`send`](Self::send).
    pub async fn send_uncompressed(&mut self, message: impl Into<Message>) -> Result<(), Error> {
        let message = message.into();
        poll_fn(|cx| self.poll_ready_inner(cx)).await?;
        match message {
            Message::Text(text) => {
                self.check_usable()?;
                self.note_message();
                self.conn
                    .send_uncompressed(DataKind::Text, text.into_bytes())?;
            }
            Message::Binary(data) => {
                self.check_usable()?;
                self.note_message();
                self.conn.send_uncompressed(DataKind::Binary, data)?;
            }
            control => self.start_send_inner(control)?,
        }
        poll_fn(|cx| self.poll_flush_inner(cx)).await
    }

    /// Sends a message like [`send`](Self::send), except that when a received message is
    /// already waiting to be read it only queues this one: the write is left to the next
    /// operation on the stream.
    ///
    /// This is how an echo or request-response loop
    /// (`while let Some(m) = ws.next().await { ws.send_batched(m).await? }`) answers a burst
    /// of messages with one write instead of one per message: the next
    /// [`next`](futures_util::StreamExt::next) returns the waiting message at once, and
    /// whatever is queued is written before the stream waits for input, together with the
    /// answers to the rest of the burst. A lone message is written at once, as by `send`.
    ///
    /// Queued data is written by the next `next`/`recv` that would wait, by
    /// [`flush`](Self::flush), [`close`](Self::close) or a `send`; it is **dropped with the
    /// stream**, so a loop that may stop after a reply must `flush` (or `close`) before
    /// dropping the stream, and a reply is delayed while the application handles the
    /// messages behind it.
    ///
    /// # Errors
    ///
    /// As [`send`](Self::send).
    ///
    /// # Cancel safety
    ///
    /// As [`send`](Self::send).
    pub async fn send_batched(&mut self, message: impl Into<Message>) -> Result<(), Error> {
        let message = message.into();
        poll_fn(|cx| self.poll_ready_inner(cx)).await?;
        self.start_send_inner(message)?;
        if self.conn.pending_events() > 0 {
            // A received message is ready: the caller's next read returns it without waiting,
            // and the stream writes this one before it waits for input (`poll_next_inner`).
            return Ok(());
        }
        poll_fn(|cx| self.poll_flush_inner(cx)).await
    }

    /// Queues one fragment of a message (RFC 6455 §5.4) without waiting; see
    /// [`Connection::send_fragment`]. Call [`flush`](Self::flush) to write it.
    ///
    /// # Errors
    ///
    /// [`Error::Send`] when the connection is closing or `kind` differs from the message in
    /// progress.
    pub fn send_fragment(
        &mut self,
        kind: DataKind,
        payload: &[u8],
        fin: bool,
    ) -> Result<(), Error> {
        self.check_usable()?;
        self.conn.send_fragment(kind, payload, fin)?;
        Ok(())
    }

    /// Writes everything queued to the transport.
    ///
    /// # Errors
    ///
    /// [`Error::Io`] when the transport fails.
    pub async fn flush(&mut self) -> Result<(), Error> {
        poll_fn(|cx| self.poll_flush_inner(cx)).await
    }

    /// Performs the close handshake: sends a close frame with `code` and `reason`, waits up to
    /// the close timeout for the peer's, then shuts the transport down. Data messages that
    /// arrive meanwhile are dropped. To receive them instead (RFC 6455 lets the peer's data
    /// arrive until its close frame), send [`Message::Close`] and read on until `None`: the
    /// close timeout bounds that wait too. Calling it again after a close frame was sent just
    /// waits for the end.
    ///
    /// # Errors
    ///
    /// [`Error::Send`] for a code that may not be sent or a reason over 123 bytes (nothing is
    /// sent); [`Error::Io`] when the transport fails.
    ///
    /// # Cancel safety
    ///
    /// The close frame is queued at the first poll; calling `close` again resumes the wait.
    pub async fn close(&mut self, code: CloseCode, reason: &str) -> Result<(), Error> {
        if self.conn.state() == State::Open {
            self.conn.close(code, reason)?;
        }
        poll_fn(|cx| {
            self.wakers.write.register(cx.waker());
            self.poll_close_handshake()
        })
        .await
    }

    /// Splits into a sending and a receiving half that can be used from two tasks.
    pub fn split(self) -> (SplitSink<Self, Message>, SplitStream<Self>) {
        futures_util::StreamExt::split(self)
    }

    fn check_usable(&self) -> Result<(), Error> {
        if self.io_failed || self.closed.is_some() {
            return Err(Error::Send(SendError::Closed));
        }
        Ok(())
    }

    /// Writes what the connection has to send; `Ready(Ok)` when nothing is left.
    fn poll_drain(&mut self) -> Poll<Result<(), Error>> {
        if self.io_failed {
            return Poll::Ready(Err(Error::Io(io::ErrorKind::BrokenPipe.into())));
        }
        match self.poll_drain_io() {
            Poll::Ready(Err(e)) => {
                self.io_failed = true;
                self.conn.handle_eof();
                Poll::Ready(Err(Error::Io(e)))
            }
            Poll::Ready(Ok(())) => Poll::Ready(Ok(())),
            Poll::Pending => Poll::Pending,
        }
    }

    /// Writes the connection's queue straight from it: several frames in one write, large
    /// shared payloads with their headers in one vectored write when the transport supports
    /// it, else the next contiguous piece.
    fn poll_drain_io(&mut self) -> Poll<io::Result<()>> {
        loop {
            let mut halves_cx = Context::from_waker(&self.both_halves);
            let io = &mut self.io;
            let written = write_queued(
                &mut self.conn,
                io.is_write_vectored(),
                |slices| match slices {
                    [one] => Pin::new(io).poll_write(&mut halves_cx, one),
                    several => Pin::new(io).poll_write_vectored(&mut halves_cx, several),
                },
            );
            let Some(written) = written else {
                if self.conn.take_shutdown() {
                    self.shutdown_pending = true;
                }
                if self.shutdown_pending {
                    ready!(Pin::new(&mut self.io).poll_shutdown(&mut halves_cx))?;
                    self.shutdown_pending = false;
                    self.needs_flush = false;
                    continue;
                }
                if self.needs_flush {
                    ready!(Pin::new(&mut self.io).poll_flush(&mut halves_cx))?;
                    self.needs_flush = false;
                }
                return Poll::Ready(Ok(()));
            };
            let n = match written {
                Poll::Ready(result) => result?,
                Poll::Pending => {
                    self.arm_write_timer();
                    return Poll::Pending;
                }
            };
            self.liveness.write_blocked = None;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.conn.advance_written(n);
            self.needs_flush = true;
        }
    }

    /// Reads once from the transport into the connection. `Ready(Ok)` means progress was made.
    fn poll_read_once(&mut self) -> Poll<Result<(), Error>> {
        if self.conn.close_expected() && self.poll_close_timer() {
            self.conn.handle_timeout();
            return Poll::Ready(Ok(()));
        }
        // The connection copies (or stashes) every byte it is given, so one read buffer per
        // thread serves every connection: an idle connection holds no read buffer. A transport
        // that is itself a sockeye stream on this thread finds it borrowed and uses its own.
        let result = READ_BUF.with(|cell| match cell.try_borrow_mut() {
            Ok(mut shared) => self.read_into(&mut shared),
            Err(_) => self.read_into(&mut Vec::new()),
        });
        match ready!(result) {
            Ok(()) => Poll::Ready(Ok(())),
            Err(e) => {
                self.io_failed = true;
                self.conn.handle_eof();
                Poll::Ready(Err(Error::Io(e)))
            }
        }
    }

    /// One read from the transport through `read_buf` into the connection.
    fn read_into(&mut self, read_buf: &mut Vec<u8>) -> Poll<io::Result<()>> {
        let size = self.config.read_buffer_size.max(1024);
        if read_buf.len() < size {
            read_buf.resize(size, 0);
        }
        let mut halves_cx = Context::from_waker(&self.both_halves);
        let mut buf = ReadBuf::new(&mut read_buf[..size]);
        let result = ready!(Pin::new(&mut self.io).poll_read(&mut halves_cx, &mut buf));
        if result.is_ok() {
            let filled = buf.filled();
            if filled.is_empty() {
                self.conn.handle_eof();
            } else {
                self.liveness.last_read = Instant::now();
                self.liveness.ping_unanswered = false;
                self.conn.handle_bytes(filled);
            }
        }
        Poll::Ready(result)
    }

    /// Polls the close timer, started at its first poll; true once it has fired.
    fn poll_close_timer(&mut self) -> bool {
        let timeout = self.config.close_timeout;
        let timer = self
            .close_timer
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)));
        let mut halves_cx = Context::from_waker(&self.both_halves);
        timer.as_mut().poll(&mut halves_cx).is_ready()
    }

    fn poll_next_inner(&mut self) -> Poll<Option<Result<Message, Error>>> {
        loop {
            if self.closed.is_some() {
                return Poll::Ready(None);
            }
            if let Some(closed) = self.closing_event.take() {
                // Write the close frame (and shut down) before reporting the end, so that a
                // caller who drops the stream on `None` or `Err` still closed properly; but a
                // peer that reads nothing is not waited for beyond the close timeout, nor at all
                // once the write timeout has found that it stopped reading.
                if !self.io_failed
                    && self.poll_drain().is_pending()
                    && self.aborted != Some(LocalClose::WriteTimeout)
                    && !self.poll_close_timer()
                {
                    self.closing_event = Some(closed);
                    return Poll::Pending;
                }
                return Poll::Ready(self.finish(closed));
            }
            match self.conn.poll_event() {
                Some(Event::Message(message)) => {
                    if message.is_data() {
                        self.note_message();
                    } else if let Poll::Ready(Err(e)) = self.poll_drain() {
                        // A ping's pong or a close's echo goes out at once. Data the
                        // application queued waits until the stream has no message ready, so
                        // that replies to a burst leave in one write.
                        tracing::debug!(error = %e, "write failed while reading");
                    }
                    return Poll::Ready(Some(Ok(message)));
                }
                Some(Event::Closed(closed)) => {
                    self.closing_event = Some(Box::new(closed));
                    continue;
                }
                None => {}
            }
            if !self.io_failed {
                if let Poll::Ready(Err(e)) = self.poll_drain() {
                    tracing::debug!(error = %e, "write failed while reading");
                    continue;
                }
            }
            if self.poll_housekeeping() {
                continue;
            }
            ready!(self.poll_read_once())
                .err()
                .inspect(|e| tracing::debug!(error = %e, "read failed"));
        }
    }

    fn finish(&mut self, closed: Box<Closed>) -> Option<Result<Message, Error>> {
        tracing::debug!(
            code = closed.code.0,
            clean = closed.was_clean,
            "connection closed"
        );
        let aborted = self.aborted.and_then(LocalClose::error);
        let result = match (aborted, &closed.error, closed.was_clean) {
            (Some(err), _, _) => Some(Err(err)),
            (None, Some(err), _) => Some(Err(Error::Protocol(err.clone()))),
            (None, None, false) => Some(Err(Error::AbnormalClosure)),
            (None, None, true) => None,
        };
        self.closed = Some(closed);
        result
    }

    /// Drives the connection until it is closed, dropping messages that arrive meanwhile.
    fn poll_close_handshake(&mut self) -> Poll<Result<(), Error>> {
        loop {
            if self.closed.is_some() && !self.shutdown_pending {
                return Poll::Ready(Ok(()));
            }
            match self.poll_next_inner() {
                Poll::Ready(Some(Ok(_))) => {}
                Poll::Ready(Some(Err(e))) => return Poll::Ready(Err(e)),
                Poll::Ready(None) => {
                    if self.io_failed {
                        return Poll::Ready(Ok(()));
                    }
                    // The shutdown still has to be written; a peer that reads nothing is not
                    // waited for beyond the close timeout (whose timer also wakes this task).
                    return match self.poll_drain() {
                        Poll::Pending if self.poll_close_timer() => Poll::Ready(Ok(())),
                        other => other,
                    };
                }
                Poll::Pending => return Poll::Pending,
            }
        }
    }

    fn poll_ready_inner(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        self.wakers.write.register(cx.waker());
        self.check_usable()?;
        if self.buffered_amount() >= self.config.write_buffer_high_water
            && self.poll_drain()?.is_pending()
        {
            if self.poll_housekeeping() {
                if let Some(err) = self.aborted.and_then(LocalClose::error) {
                    let _ = self.poll_drain();
                    return Poll::Ready(Err(err));
                }
            }
            return Poll::Pending;
        }
        Poll::Ready(Ok(()))
    }

    /// Records data traffic for the idle timeout; without one there is no clock to read.
    fn note_message(&mut self) {
        if self.config.idle_timeout.is_some() {
            self.liveness.last_message = Instant::now();
        }
    }

    fn start_send_inner(&mut self, message: Message) -> Result<(), Error> {
        self.check_usable()?;
        if message.is_data() {
            self.note_message();
        }
        match message {
            // Large payloads are queued without a copy where the frame allows (a server's,
            // uncompressed) and written from the caller's buffer.
            Message::Text(text) => self.conn.send_shared(DataKind::Text, text.into_bytes()),
            Message::Binary(data) => self.conn.send_shared(DataKind::Binary, data),
            Message::Ping(data) => self.conn.ping(&data),
            Message::Pong(data) => self.conn.pong(&data),
            Message::Close(Some(frame)) => self.conn.close(frame.code, &frame.reason),
            Message::Close(None) => self.conn.close(CloseCode::NORMAL, ""),
        }?;
        Ok(())
    }

    fn start_send_prepared(&mut self, prepared: &PreparedMessage) -> Result<(), Error> {
        self.check_usable()?;
        if prepared.message().is_data() {
            self.note_message();
        }
        self.conn.send_prepared(prepared)?;
        Ok(())
    }

    fn poll_flush_inner(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        self.wakers.write.register(cx.waker());
        match self.poll_drain() {
            Poll::Pending => {
                if self.poll_housekeeping() {
                    if let Some(err) = self.aborted.and_then(LocalClose::error) {
                        let _ = self.poll_drain();
                        return Poll::Ready(Err(err));
                    }
                }
                Poll::Pending
            }
            ready => ready,
        }
    }

    fn arm_write_timer(&mut self) {
        if let (Some(timeout), None) = (self.config.write_timeout, &self.liveness.write_blocked) {
            self.liveness.write_blocked = Some(Box::pin(tokio::time::sleep(timeout)));
            self.housekeeping_due();
        }
    }

    /// Makes the next housekeeping poll the timers and the shutdown signal (one was armed).
    fn housekeeping_due(&self) {
        self.wakers.housekeeping_due.store(true, Ordering::Release);
    }

    /// Ends the connection for a local reason: drops queued output, queues a close frame.
    fn abort(&mut self, reason: LocalClose) {
        tracing::debug!(?reason, "aborting connection");
        self.aborted = Some(reason);
        // The connection drops its queue; it sends no close frame when a frame is partly
        // written (the peer would read it as the rest of that frame).
        self.conn.abort(reason.close_code(), reason.reason());
    }

    /// Runs the shutdown signal and the keepalive, idle and write timers (registered with the
    /// housekeeping waker, so either half is woken). Returns true when it changed the
    /// connection.
    ///
    /// It runs each time the stream is about to wait, but polls only when one of them woke the
    /// stream or was armed since: polling them is not free (the shutdown signal takes a lock),
    /// and a poll that is not due finds nothing ready.
    fn poll_housekeeping(&mut self) -> bool {
        if self.closed.is_some() || self.conn.state() == State::Closed {
            return false;
        }
        if !self.wakers.housekeeping_due.swap(false, Ordering::AcqRel) {
            return false;
        }
        let mut cx = Context::from_waker(&self.housekeeping_waker);
        let mut changed = false;
        if let Some(shutdown) = self.liveness.shutdown.as_mut() {
            if shutdown.as_mut().poll(&mut cx).is_ready() {
                self.liveness.shutdown = None;
                if self.conn.state() == State::Open {
                    tracing::debug!("server shutting down: closing with 1001");
                    close_locally(&mut self.conn, LocalClose::Shutdown);
                    changed = true;
                }
            }
        }
        if let Some(timer) = self.liveness.write_blocked.as_mut() {
            if timer.as_mut().poll(&mut cx).is_ready() {
                self.liveness.write_blocked = None;
                self.abort(LocalClose::WriteTimeout);
                return true;
            }
        }
        if let Some(interval) = self.config.keepalive_interval {
            let timer = self
                .liveness
                .keepalive
                .get_or_insert_with(|| Box::pin(tokio::time::sleep(interval)));
            while timer.as_mut().poll(&mut cx).is_ready() {
                let now = Instant::now();
                // Once answered (a pong or any other data), the ping is forgotten and the next
                // one is due an interval after the last read, as below.
                if self.liveness.ping_unanswered {
                    self.abort(LocalClose::Keepalive);
                    return true;
                }
                let due = self.liveness.last_read + interval;
                if now < due {
                    timer.as_mut().reset(due);
                } else if self.conn.state() == State::Open
                    && self.conn.ping(KEEPALIVE_PAYLOAD).is_ok()
                {
                    self.liveness.ping_unanswered = true;
                    timer.as_mut().reset(now + self.config.keepalive_timeout);
                    changed = true;
                } else {
                    timer.as_mut().reset(now + interval);
                }
            }
        }
        if let Some(idle) = self.config.idle_timeout {
            let timer = self
                .liveness
                .idle
                .get_or_insert_with(|| Box::pin(tokio::time::sleep(idle)));
            while timer.as_mut().poll(&mut cx).is_ready() {
                let due = self.liveness.last_message + idle;
                if Instant::now() < due {
                    timer.as_mut().reset(due);
                    continue;
                }
                if self.conn.state() == State::Open {
                    tracing::debug!("idle timeout: closing with 1001");
                    close_locally(&mut self.conn, LocalClose::Idle);
                    changed = true;
                }
                self.liveness.idle = None;
                break;
            }
        }
        changed
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> Stream for WebSocketStream<S> {
    type Item = Result<Message, Error>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        this.wakers.read.register(cx.waker());
        this.poll_next_inner()
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> FusedStream for WebSocketStream<S> {
    fn is_terminated(&self) -> bool {
        self.closed.is_some()
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> Sink<Message> for WebSocketStream<S> {
    type Error = Error;

    fn poll_ready(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        self.get_mut().poll_ready_inner(cx)
    }

    fn start_send(self: Pin<&mut Self>, item: Message) -> Result<(), Error> {
        self.get_mut().start_send_inner(item)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        self.get_mut().poll_flush_inner(cx)
    }

    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        let this = self.get_mut();
        if this.conn.state() == State::Open {
            this.conn.close(CloseCode::NORMAL, "")?;
        }
        this.wakers.write.register(cx.waker());
        this.poll_close_handshake()
    }
}

/// The transport of client connections: TCP, or TLS over TCP for `wss://`.
pub type ClientStream = WebSocketStream<Transport<tokio::net::TcpStream>>;

/// The connections a [`Server`](crate::Server) hands out: TCP, or TLS over TCP when the server
/// has a certificate.
pub type ServerStream = WebSocketStream<Transport<tokio::net::TcpStream>>;

#[cfg(test)]
mod tests {
    use super::*;

    /// A connection's stream lives inline in its task (a server's handler future holds it), so
    /// its size is part of every idle connection's memory: rarely used parts stay boxed.
    #[test]
    fn stream_stays_small() {
        let size = std::mem::size_of::<WebSocketStream<tokio::net::TcpStream>>();
        // 624 bytes on x86_64 Linux with Rust 1.95 (656 with a second write queue in the stream,
        // 1,048 with the settings and close state inline; the connection's shared-payload queue
        // is boxed, the subprotocol is a `Box<str>`).
        assert!(size <= 624, "WebSocketStream<TcpStream> is {size} bytes");
    }

    /// A server's mask source is a zero-sized stand-in (RFC 6455 §5.1: servers never mask); its
    /// frames still go out unmasked.
    #[test]
    fn server_frames_go_out_unmasked() {
        let (a, _b) = tokio::io::duplex(64);
        let mut ws = WebSocketStream::from_raw(a, Role::Server, WebSocketConfig::default(), &[]);
        // The server's frames go out unmasked.
        ws.conn.send(DataKind::Binary, b"hi").unwrap();
        let mut out = Vec::new();
        let _ = ws.conn.poll_transmit(&mut out);
        assert_eq!(out, [0x82, 0x02, b'h', b'i']);
    }
}
