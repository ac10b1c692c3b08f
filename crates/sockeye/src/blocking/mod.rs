//! A blocking WebSocket ([RFC 6455](https://www.rfc-editor.org/rfc/rfc6455)) client and server
//! over `std::net`: no tokio runtime, one thread per connection.
//!
//! The protocol is the same [`Connection`] state machine the async layer drives; this module
//! moves its bytes with [`Read`] and [`Write`] and turns the timeouts of [`WebSocketConfig`]
//! into socket read and write timeouts.
//!
//! ```no_run
//! # fn run() -> Result<(), sockeye::Error> {
//! use sockeye::{blocking, CloseCode, Message};
//!
//! let (mut ws, _response) = blocking::connect("ws://127.0.0.1:9001/chat")?;
//! ws.send("hello")?;
//! if let Some(Message::Text(reply)) = ws.read()? {
//!     println!("{reply}");
//! }
//! ws.close(CloseCode::NORMAL, "bye")?;
//! # Ok(()) }
//! ```
//!
//! # What applies from [`WebSocketConfig`]
//!
//! - Frame and message size limits, handshake head limits, permessage-deflate, subprotocols,
//!   `TCP_NODELAY`, TCP keepalive, redirects, the client's TLS settings.
//! - [`connect_timeout`](WebSocketConfig::connect_timeout) bounds the TCP connect (name
//!   resolution uses the system resolver, which has its own timeout).
//! - [`handshake_timeout`](WebSocketConfig::handshake_timeout) bounds the TLS and HTTP
//!   handshakes, through socket read and write timeouts (cleared afterwards).
//! - [`close_timeout`](WebSocketConfig::close_timeout) bounds the wait for the peer's close
//!   frame (and, as a client, for the server to close TCP) once this end sent its own, and the
//!   writes of the close handshake.
//!
//! The handshakes are the ones the async layer drives: the server's policy and answers
//! ([`ServerHandshake`]), the client's outcome and redirect rules ([`ClientHandshake`]), with
//! extra request headers through [`connect_with_headers`].
//!
//! Not run by the blocking API: keepalive pings, the idle timeout, the write timeout, the
//! write-buffer high-water mark and proxies (a configured proxy is refused: the HTTP CONNECT and
//! SOCKS5 tunnels are async code over tokio, and a blocking copy of them would be a second
//! implementation to keep in step; use the async client for proxies). Nothing reads the
//! socket between calls, so a ping is answered at the next [`WebSocket::read`]; set a read
//! timeout on the socket (through [`WebSocket::get_ref`]) to bound a read: it then fails with
//! [`Error::Io`] of kind `WouldBlock` or `TimedOut` and the connection stays usable.

use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpStream, ToSocketAddrs};
use std::time::{Duration, Instant};

use http::{Request, Response};
use sockeye_proto::handshake::{
    ClientHandshake, ClientRequest, Incoming, Negotiated, Outcome, Redirects, ServerHandshake,
};
use sockeye_proto::{
    CloseCode, Closed, Connection, DataKind, Event, Message, PreparedMessage, Role, SendError,
    State,
};

use crate::browser::ReadyState;
use crate::client::{follow_redirect, upgrade_request, Attempt, WsUrl, BODY_QUIET};
use crate::config::WebSocketConfig;
use crate::error::Error;
use crate::rng::{nonce, OsMaskSource};
use crate::server::{upgrade_or_end, Ending, Hooks, Upgrade};
use crate::stream::write_queued;

/// What the blocking API needs from a transport besides [`Read`] and [`Write`]: timeouts (to
/// bound the handshake and the close handshake) and a half-close (to end the connection).
///
/// Implemented for [`TcpStream`], Unix sockets, [`Transport`] and rustls' `StreamOwned`
/// over any of them. Any other stream can use the defaults with `impl Socket for MyStream {}`:
/// timeouts are then not enforced (the stream's own apply) and the half-close only flushes.
pub trait Socket: Read + Write {
    /// Sets how long a read may block; `None` blocks until data arrives.
    ///
    /// # Errors
    ///
    /// When the transport refuses the setting.
    fn set_read_timeout(&self, timeout: Option<Duration>) -> io::Result<()> {
        let _ = timeout;
        Ok(())
    }

    /// Sets how long a write may block; `None` blocks until the peer accepts bytes.
    ///
    /// # Errors
    ///
    /// When the transport refuses the setting.
    fn set_write_timeout(&self, timeout: Option<Duration>) -> io::Result<()> {
        let _ = timeout;
        Ok(())
    }

    /// Flushes and shuts the write side down (TCP FIN; TLS `close_notify`, then FIN).
    ///
    /// # Errors
    ///
    /// When the transport fails.
    fn shutdown_write(&mut self) -> io::Result<()> {
        self.flush()
    }
}

impl Socket for TcpStream {
    fn set_read_timeout(&self, timeout: Option<Duration>) -> io::Result<()> {
        TcpStream::set_read_timeout(self, timeout)
    }

    fn set_write_timeout(&self, timeout: Option<Duration>) -> io::Result<()> {
        TcpStream::set_write_timeout(self, timeout)
    }

    fn shutdown_write(&mut self) -> io::Result<()> {
        self.shutdown(Shutdown::Write)
    }
}

#[cfg(unix)]
impl Socket for std::os::unix::net::UnixStream {
    fn set_read_timeout(&self, timeout: Option<Duration>) -> io::Result<()> {
        std::os::unix::net::UnixStream::set_read_timeout(self, timeout)
    }

    fn set_write_timeout(&self, timeout: Option<Duration>) -> io::Result<()> {
        std::os::unix::net::UnixStream::set_write_timeout(self, timeout)
    }

    fn shutdown_write(&mut self) -> io::Result<()> {
        self.shutdown(Shutdown::Write)
    }
}

#[cfg(feature = "rustls")]
impl<C, D, T> Socket for crate::tls::rustls::StreamOwned<C, T>
where
    C: std::ops::DerefMut + std::ops::Deref<Target = crate::tls::rustls::ConnectionCommon<D>>,
    D: crate::tls::rustls::SideData,
    T: Socket,
{
    fn set_read_timeout(&self, timeout: Option<Duration>) -> io::Result<()> {
        self.sock.set_read_timeout(timeout)
    }

    fn set_write_timeout(&self, timeout: Option<Duration>) -> io::Result<()> {
        self.sock.set_write_timeout(timeout)
    }

    fn shutdown_write(&mut self) -> io::Result<()> {
        self.conn.send_close_notify();
        self.flush()?;
        self.sock.shutdown_write()
    }
}

/// The transport of blocking client connections: TCP, or TLS over TCP for `wss://`.
#[derive(Debug)]
#[non_exhaustive]
pub enum Transport {
    /// Unencrypted (`ws://`).
    Plain(TcpStream),
    /// TLS (`wss://`).
    #[cfg(feature = "rustls")]
    Tls(Box<crate::tls::rustls::StreamOwned<crate::tls::rustls::ClientConnection, TcpStream>>),
}

impl Transport {
    /// Whether the transport is encrypted.
    pub fn is_tls(&self) -> bool {
        !matches!(self, Self::Plain(_))
    }

    /// The TCP connection underneath.
    pub fn get_ref(&self) -> &TcpStream {
        match self {
            Self::Plain(tcp) => tcp,
            #[cfg(feature = "rustls")]
            Self::Tls(tls) => &tls.sock,
        }
    }

    /// The ALPN protocol agreed in the TLS handshake, if any.
    pub fn alpn_protocol(&self) -> Option<&[u8]> {
        match self {
            Self::Plain(_) => None,
            #[cfg(feature = "rustls")]
            Self::Tls(tls) => tls.conn.alpn_protocol(),
        }
    }

    fn as_socket(&self) -> &dyn Socket {
        match self {
            Self::Plain(tcp) => tcp,
            #[cfg(feature = "rustls")]
            Self::Tls(tls) => tls.as_ref(),
        }
    }

    fn as_socket_mut(&mut self) -> &mut dyn Socket {
        match self {
            Self::Plain(tcp) => tcp,
            #[cfg(feature = "rustls")]
            Self::Tls(tls) => tls.as_mut(),
        }
    }
}

impl Read for Transport {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.as_socket_mut().read(buf)
    }
}

impl Write for Transport {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.as_socket_mut().write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.as_socket_mut().flush()
    }
}

impl Socket for Transport {
    fn set_read_timeout(&self, timeout: Option<Duration>) -> io::Result<()> {
        self.as_socket().set_read_timeout(timeout)
    }

    fn set_write_timeout(&self, timeout: Option<Duration>) -> io::Result<()> {
        self.as_socket().set_write_timeout(timeout)
    }

    fn shutdown_write(&mut self) -> io::Result<()> {
        self.as_socket_mut().shutdown_write()
    }
}

/// A blocking client connection, as [`connect`] returns it.
pub type ClientWebSocket = WebSocket<Transport>;

/// The name [`Transport`] had before, when it shared it with the async crate's.
#[doc(hidden)]
pub type MaybeTlsStream = Transport;

/// A WebSocket connection over a blocking transport `S`.
///
/// [`read`](Self::read) returns data messages (answering pings on the way);
/// [`send`](Self::send) writes one; [`close`](Self::close) performs the close handshake.
/// Every call blocks the calling thread; nothing happens between calls.
pub struct WebSocket<S> {
    io: S,
    conn: Connection,
    config: WebSocketConfig,
    needs_flush: bool,
    read_buf: Vec<u8>,
    /// The transport failed; nothing more is read or written.
    io_failed: bool,
    /// How the connection ended, once [`read`](Self::read) or [`close`](Self::close) saw it.
    closed: Option<Closed>,
    /// When the wait for the peer's close frame (or the server's TCP close) ends.
    close_deadline: Option<Instant>,
    protocol: Option<String>,
}

impl<S> std::fmt::Debug for WebSocket<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebSocket")
            .field("conn", &self.conn)
            .field("closed", &self.closed)
            .finish_non_exhaustive()
    }
}

/// A read or write that ran into a socket timeout.
fn is_timeout(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
    )
}

impl<S: Socket> WebSocket<S> {
    /// Wraps a transport on which the opening handshake is already done.
    ///
    /// `leftover` holds bytes read past the handshake head; they are the first WebSocket bytes.
    pub fn from_raw(io: S, role: Role, config: WebSocketConfig, leftover: &[u8]) -> Self {
        Self::from_negotiated(io, role, config, Negotiated::default(), leftover)
    }

    /// Wraps a transport on which the opening handshake is done, with what it agreed: the
    /// subprotocol ([`protocol`](Self::protocol)) and the permessage-deflate parameters
    /// (`config.deflate` supplies the compression level and threshold).
    ///
    /// `leftover` holds bytes read past the handshake head; they are the first WebSocket bytes.
    pub fn from_negotiated(
        io: S,
        role: Role,
        config: WebSocketConfig,
        negotiated: Negotiated,
        leftover: &[u8],
    ) -> Self {
        let Negotiated {
            protocol, deflate, ..
        } = negotiated;
        let conn = config.connection(role, Box::new(OsMaskSource::new()), deflate, leftover);
        Self {
            io,
            conn,
            config,
            needs_flush: false,
            read_buf: Vec::new(),
            io_failed: false,
            closed: None,
            close_deadline: None,
            protocol,
        }
    }

    /// Sends a message and writes it (with anything queued before it) to the transport.
    ///
    /// # Errors
    ///
    /// [`Error::Send`] when the connection is closing or closed or the message is not valid (a
    /// control frame over 125 bytes, a bad close code); [`Error::Io`] when the transport fails.
    /// A write timeout set on the socket fails with [`Error::Io`] of kind `WouldBlock` or
    /// `TimedOut`; what was not written stays queued for the next call.
    pub fn send(&mut self, message: impl Into<Message>) -> Result<(), Error> {
        if self.io_failed || self.closed.is_some() {
            return Err(Error::Send(SendError::Closed));
        }
        match message.into() {
            Message::Text(text) => self.conn.send(DataKind::Text, text.as_bytes()),
            Message::Binary(data) => self.conn.send(DataKind::Binary, &data),
            Message::Ping(data) => self.conn.ping(&data),
            Message::Pong(data) => self.conn.pong(&data),
            Message::Close(Some(frame)) => self.conn.close(frame.code, &frame.reason),
            Message::Close(None) => self.conn.close(CloseCode::NORMAL, ""),
        }?;
        self.flush()
    }

    /// Sends a message prepared for many connections and writes it, like [`send`](Self::send):
    /// the frame (and, where this connection compresses without context takeover, the
    /// compressed payload) is shared with every other connection that sends `prepared`; see
    /// [`PreparedMessage`].
    ///
    /// # Errors
    ///
    /// As [`send`](Self::send).
    pub fn send_prepared(&mut self, prepared: &PreparedMessage) -> Result<(), Error> {
        if self.io_failed || self.closed.is_some() {
            return Err(Error::Send(SendError::Closed));
        }
        self.conn.send_prepared(prepared)?;
        self.flush()
    }

    /// Writes everything queued to the transport.
    ///
    /// # Errors
    ///
    /// [`Error::Io`] when the transport fails (or a write timeout set on the socket expires).
    pub fn flush(&mut self) -> Result<(), Error> {
        if self.io_failed {
            return Err(Error::Io(io::ErrorKind::BrokenPipe.into()));
        }
        loop {
            // Written straight from the connection's queue, large shared payloads uncopied.
            let io = &mut self.io;
            let written = write_queued(&mut self.conn, true, |slices| match slices {
                [one] => io.write(one),
                several => io.write_vectored(several),
            });
            let Some(written) = written else {
                if self.conn.take_shutdown() {
                    // The close handshake is over; a peer that already went away makes the
                    // half-close fail, which changes nothing.
                    if let Err(e) = self.io.shutdown_write() {
                        tracing::debug!(error = %e, "shutdown failed");
                    }
                    self.needs_flush = false;
                    continue;
                }
                if self.needs_flush {
                    if let Err(e) = self.io.flush() {
                        return Err(self.write_failed(e));
                    }
                    self.needs_flush = false;
                }
                return Ok(());
            };
            match written {
                Ok(0) => return Err(self.write_failed(io::ErrorKind::WriteZero.into())),
                Ok(n) => {
                    self.conn.advance_written(n);
                    self.needs_flush = true;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(self.write_failed(e)),
            }
        }
    }

    /// A write error: a timeout while open is the caller's (the rest stays queued); any other
    /// error, or a timeout during the close handshake, ends the connection.
    fn write_failed(&mut self, e: io::Error) -> Error {
        if !(is_timeout(&e) && self.conn.state() == State::Open) {
            tracing::debug!(error = %e, "write failed");
            self.io_failed = true;
            self.conn.handle_eof();
        }
        Error::Io(e)
    }

    /// Reads until the next text or binary message arrives. Pings are answered (the pong is
    /// written before the next read from the socket); pongs and the peer's close frame are
    /// consumed. After the peer's close frame the close handshake is completed here.
    ///
    /// Returns `Ok(None)` once the connection is closed: at the clean close itself and at every
    /// call after the end, whatever it was ([`close_info`](Self::close_info) says how it
    /// ended), as [`WebSocketStream`](crate::WebSocketStream) ends with `None`.
    ///
    /// # Errors
    ///
    /// - [`Error::Protocol`] when the peer violated the protocol: the connection was failed
    ///   with the error's close code (e.g. 1002, or 1009 for a message over the limit).
    /// - [`Error::AbnormalClosure`] when the transport ended without a close handshake, or the
    ///   close timeout expired.
    /// - [`Error::Io`] when the transport fails; of kind `WouldBlock` or `TimedOut` when a read
    ///   timeout set on the socket expires, in which case the connection stays usable.
    pub fn read(&mut self) -> Result<Option<Message>, Error> {
        if self.closed.is_some() {
            return Ok(None);
        }
        self.next_message()
    }

    /// Performs the close handshake: sends a close frame with `code` and `reason`, reads until
    /// the peer's close frame (dropping data messages that arrive meanwhile: to receive them,
    /// [`send`](Self::send) a [`Message::Close`] and [`read`](Self::read) on) or the close
    /// timeout, then shuts the transport down. Calling it after a close frame was sent just
    /// waits for the end; after the end, it does nothing.
    ///
    /// # Errors
    ///
    /// [`Error::Send`] for a code that may not be sent or a reason over 123 bytes (nothing is
    /// sent); [`Error::AbnormalClosure`] when the close timeout expired or the transport ended
    /// first; [`Error::Protocol`] when the peer violated the protocol meanwhile; [`Error::Io`]
    /// when the transport fails.
    pub fn close(&mut self, code: CloseCode, reason: &str) -> Result<(), Error> {
        if self.closed.is_some() {
            return Ok(());
        }
        if self.conn.state() == State::Open {
            self.conn.close(code, reason)?;
        }
        // A peer that stopped reading cannot hold the close frame up beyond the close timeout.
        let _ = self.io.set_write_timeout(Some(self.config.close_timeout));
        if let Err(e) = self.flush() {
            tracing::debug!(error = %e, "writing the close frame failed");
        }
        loop {
            if self.next_message()?.is_none() {
                return Ok(());
            }
        }
    }

    /// The next data message; `None` after a clean close (recorded in `closed`).
    fn next_message(&mut self) -> Result<Option<Message>, Error> {
        loop {
            match self.conn.poll_event() {
                Some(Event::Message(message)) => {
                    if message.is_data() {
                        return Ok(Some(message));
                    }
                    // A ping's pong or a close's echo is queued: written below.
                    continue;
                }
                Some(Event::Closed(closed)) => return self.finish(closed),
                None => {}
            }
            if self.io_failed {
                // The connection was told of the end: its `Closed` event came first.
                return Err(Error::AbnormalClosure);
            }
            match self.flush() {
                Ok(()) => {}
                Err(e) if self.io_failed => {
                    tracing::debug!(error = %e, "write failed while reading");
                    continue;
                }
                Err(e) => return Err(e),
            }
            let closing = self.conn.close_expected();
            if closing {
                let timeout = self.config.close_timeout;
                let deadline = *self
                    .close_deadline
                    .get_or_insert_with(|| Instant::now() + timeout);
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    tracing::debug!("close timeout");
                    self.conn.handle_timeout();
                    continue;
                }
                if let Err(e) = self.io.set_read_timeout(Some(left)) {
                    tracing::debug!(error = %e, "cannot set the close timeout");
                }
            }
            match self.read_once() {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                // The close timer: checked at the top of the next round.
                Err(e) if is_timeout(&e) && closing => {}
                // The caller's own read timeout: nothing is lost.
                Err(e) if is_timeout(&e) => return Err(Error::Io(e)),
                Err(e) => {
                    tracing::debug!(error = %e, "read failed");
                    self.io_failed = true;
                    self.conn.handle_eof();
                    // Nothing was queued before this read: only the end follows.
                    while let Some(event) = self.conn.poll_event() {
                        if let Event::Closed(closed) = event {
                            self.closed = Some(closed);
                        }
                    }
                    return Err(Error::Io(e));
                }
            }
        }
    }

    /// One read from the transport into the connection.
    fn read_once(&mut self) -> io::Result<()> {
        let size = self.config.read_buffer_size.max(1024);
        if self.read_buf.len() < size {
            self.read_buf.resize(size, 0);
        }
        match self.io.read(&mut self.read_buf[..size]) {
            // TLS without `close_notify`: the TCP end is the end.
            Ok(0) => self.conn.handle_eof(),
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => self.conn.handle_eof(),
            Ok(n) => self.conn.handle_bytes(&self.read_buf[..n]),
            Err(e) => return Err(e),
        }
        Ok(())
    }

    /// Records the end: writes the close echo and the shutdown (within the close timeout) and
    /// reports how the connection ended.
    fn finish(&mut self, closed: Closed) -> Result<Option<Message>, Error> {
        tracing::debug!(
            code = closed.code.0,
            clean = closed.was_clean,
            "connection closed"
        );
        if !self.io_failed {
            let _ = self.io.set_write_timeout(Some(self.config.close_timeout));
            if let Err(e) = self.flush() {
                tracing::debug!(error = %e, "closing write failed");
            }
        }
        let result = match (&closed.error, closed.was_clean) {
            (Some(err), _) => Err(Error::Protocol(err.clone())),
            (None, false) => Err(Error::AbnormalClosure),
            (None, true) => Ok(None),
        };
        self.closed = Some(closed);
        self.read_buf = Vec::new();
        result
    }
}

impl<S> WebSocket<S> {
    /// The ready state.
    pub fn state(&self) -> State {
        if self.closed.is_some() {
            State::Closed
        } else {
            match self.conn.state() {
                // The end is not reported yet; to the user it is still closing.
                State::Closed => State::Closing,
                state => state,
            }
        }
    }

    /// The ready state as the browser's `WebSocket.readyState` reports it, the same type as
    /// [`crate::WebSocket::ready_state`]: [`state`](Self::state) in the browser's terms.
    pub fn ready_state(&self) -> ReadyState {
        self.state().into()
    }

    /// The subprotocol agreed in the opening handshake (the browser's `WebSocket.protocol`).
    pub fn protocol(&self) -> Option<&str> {
        self.protocol.as_deref()
    }

    /// The extensions in force, as the `Sec-WebSocket-Extensions` value agreed in the handshake
    /// (the browser's `WebSocket.extensions`); empty when none.
    pub fn extensions(&self) -> String {
        self.conn
            .deflate_params()
            .map_or_else(String::new, ToString::to_string)
    }

    /// Bytes accepted by [`send`](Self::send) and not yet written to the transport (after a
    /// write timeout, for instance).
    pub fn buffered_amount(&self) -> usize {
        self.conn.buffered_amount()
    }

    /// How the connection ended, once [`read`](Self::read) or [`close`](Self::close) saw the
    /// end.
    pub fn close_info(&self) -> Option<&Closed> {
        self.closed.as_ref()
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
}

// ---- Server ---------------------------------------------------------------------------------

/// Accepts a WebSocket connection on `io` with default settings.
///
/// # Errors
///
/// As [`accept_with_config`].
pub fn accept<S: Socket>(io: S) -> Result<WebSocket<S>, Error> {
    accept_with_config(io, WebSocketConfig::default()).map(|(ws, _)| ws)
}

/// Reads the upgrade request from `io`, answers it and returns the connection with the request
/// (method, path and query, headers), as [`crate::accept_with_config`] does.
///
/// An invalid request is answered with the RFC's status (400, 405, 426, 431) and the transport
/// is shut down. The subprotocol is the first one the client offered that
/// [`WebSocketConfig::protocols`] lists; permessage-deflate is accepted when
/// [`WebSocketConfig::deflate`] is set. The whole exchange must finish within
/// [`WebSocketConfig::handshake_timeout`] (through the socket's read and write timeouts,
/// which are cleared afterwards).
///
/// ```no_run
/// use std::net::TcpListener;
/// use sockeye::blocking;
///
/// let listener = TcpListener::bind("127.0.0.1:9001")?;
/// for tcp in listener.incoming().take(1) {
///     std::thread::spawn(move || -> Result<(), sockeye::Error> {
///         let mut ws = blocking::accept(tcp?)?;
///         while let Some(message) = ws.read()? {
///             ws.send(message)?;
///         }
///         Ok(())
///     });
/// }
/// # Ok::<(), std::io::Error>(())
/// ```
///
/// # Errors
///
/// [`Error::Handshake`] for an invalid request, [`Error::HandshakeTimeout`],
/// [`Error::Io`].
pub fn accept_with_config<S: Socket>(
    mut io: S,
    config: WebSocketConfig,
) -> Result<(WebSocket<S>, Request<()>), Error> {
    let deadline = Instant::now() + config.handshake_timeout;
    let mut handshake = ServerHandshake::new(Hooks::default().policy(&config), None);
    let incoming = read_request(&mut io, &mut handshake, deadline)?;
    let Upgrade {
        request,
        response,
        negotiated,
    } = match upgrade_or_end(incoming, None) {
        Ok(upgrade) => upgrade,
        Err(Ending { bytes, error }) => {
            // Best effort: the peer may already be gone.
            if arm(&io, deadline).is_ok() && io.write_all(&bytes).is_ok() {
                let _ = io.shutdown_write();
                linger(&mut io, deadline);
            }
            return Err(error);
        }
    };
    arm(&io, deadline)?;
    io.write_all(&response)
        .and_then(|()| io.flush())
        .map_err(handshake_io)?;
    disarm(&io)?;
    let leftover = handshake.leftover();
    let ws = WebSocket::from_negotiated(io, Role::Server, config, negotiated, leftover);
    Ok((ws, request))
}

/// Reads until the handshake can answer, within `deadline`.
fn read_request<S: Socket>(
    io: &mut S,
    handshake: &mut ServerHandshake,
    deadline: Instant,
) -> Result<Incoming, Error> {
    let mut chunk = [0u8; 4096];
    loop {
        arm(io, deadline)?;
        let n = match io.read(&mut chunk) {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(handshake_io(e)),
        };
        if let Some(incoming) = handshake.handle_bytes(&chunk[..n]) {
            return Ok(incoming);
        }
        if n == 0 {
            // The peer closed before the head ended: nobody to answer.
            return Err(Error::Io(io::ErrorKind::UnexpectedEof.into()));
        }
    }
}

/// Reads and drops what the peer still sends after a refusal, until it closes, 64 KiB or one
/// second (and at most until `deadline`): closing a socket with unread input makes TCP send a
/// reset, which can destroy the refusal before the peer reads it.
fn linger<S: Socket>(io: &mut S, deadline: Instant) {
    const MAX_LINGER: Duration = Duration::from_secs(1);
    const MAX_DRAIN: usize = 64 << 10;
    let deadline = deadline.min(Instant::now() + MAX_LINGER);
    let mut chunk = [0u8; 4096];
    let mut drained = 0;
    while drained < MAX_DRAIN && arm(io, deadline).is_ok() {
        match io.read(&mut chunk) {
            Ok(0) | Err(_) => break,
            Ok(n) => drained += n,
        }
    }
}

/// Sets the socket's timeouts to what is left before `deadline`.
fn arm(io: &(impl Socket + ?Sized), deadline: Instant) -> Result<(), Error> {
    let left = deadline.saturating_duration_since(Instant::now());
    if left.is_zero() {
        return Err(Error::HandshakeTimeout);
    }
    io.set_read_timeout(Some(left))?;
    io.set_write_timeout(Some(left))?;
    Ok(())
}

/// Clears the handshake's timeouts.
fn disarm(io: &(impl Socket + ?Sized)) -> Result<(), Error> {
    io.set_read_timeout(None)?;
    io.set_write_timeout(None)?;
    Ok(())
}

/// An I/O error during the handshake: a socket timeout is the handshake timeout.
fn handshake_io(e: io::Error) -> Error {
    if is_timeout(&e) {
        Error::HandshakeTimeout
    } else {
        Error::Io(e)
    }
}

// ---- Client ---------------------------------------------------------------------------------

/// Connects to a `ws://` or `wss://` URL with default settings: the blocking
/// [`crate::connect`].
///
/// # Errors
///
/// As [`connect_with_config`].
pub fn connect(url: &str) -> Result<(ClientWebSocket, Response<()>), Error> {
    connect_with_config(url, WebSocketConfig::default())
}

/// Connects to a `ws://` or `wss://` URL with `config`, following redirects up to
/// [`WebSocketConfig::max_redirects`] (`wss` to `ws` refused).
///
/// `wss://` uses [`WebSocketConfig::tls_client`] or, without it, the bundled Mozilla roots,
/// as the async client does.
///
/// # Errors
///
/// [`Error::Url`], [`Error::Io`] when the TCP connection fails (or a proxy is configured: the
/// blocking client connects directly only), [`Error::ConnectTimeout`], [`Error::Tls`],
/// [`Error::Http`] when the server answers with another status, [`Error::Handshake`] when its
/// answer is not a valid upgrade, [`Error::HandshakeTimeout`],
/// [`Error::TooManyRedirects`].
pub fn connect_with_config(
    url: &str,
    config: WebSocketConfig,
) -> Result<(ClientWebSocket, Response<()>), Error> {
    connect_with_headers(url, http::HeaderMap::new(), config)
}

/// Like [`connect_with_config`], adding `headers` to the upgrade request (a token, a cookie,
/// `Origin`), as [`ClientBuilder::header`](crate::ClientBuilder::header) does for the async
/// client. The handshake's own headers cannot be overridden; a redirect to another origin
/// drops `Authorization` and `Cookie`.
///
/// The blocking client connects directly only: it does not speak to HTTP or SOCKS proxies,
/// whose code is async (a configured proxy fails with [`Error::Io`] of kind `Unsupported`);
/// use the async client through a runtime for them.
///
/// # Errors
///
/// As [`connect_with_config`].
pub fn connect_with_headers(
    url: &str,
    mut headers: http::HeaderMap,
    config: WebSocketConfig,
) -> Result<(ClientWebSocket, Response<()>), Error> {
    // Invalid subprotocol names fail here, before any connection is made.
    ClientRequest::new("", "/").protocols(config.protocols.iter().cloned())?;
    let mut url = WsUrl::parse(url)?;
    let mut redirects = Redirects::new(config.max_redirects);
    loop {
        match connect_once(&url, &config, &headers, redirects.enabled())? {
            Attempt::Connected(ws, response) => return Ok((*ws, response)),
            Attempt::Redirect(location) => {
                url = follow_redirect(&mut redirects, &url, &location, &mut headers)?;
            }
        }
    }
}

fn connect_once(
    url: &WsUrl,
    config: &WebSocketConfig,
    headers: &http::HeaderMap,
    follow_redirects: bool,
) -> Result<Attempt<ClientWebSocket>, Error> {
    if config
        .proxy
        .proxy_for(url)
        .map_err(|e| crate::ProxyError::InvalidUrl(Box::new(e)))?
        .is_some()
    {
        return Err(Error::Io(io::Error::new(
            io::ErrorKind::Unsupported,
            "the blocking client does not connect through proxies",
        )));
    }
    let tcp = connect_tcp(url, config.connect_timeout)?;
    tcp.set_nodelay(config.tcp_nodelay)?;
    if let Some(idle) = config.tcp_keepalive {
        let keepalive = socket2::TcpKeepalive::new().with_time(idle);
        socket2::SockRef::from(&tcp).set_tcp_keepalive(&keepalive)?;
    }
    let deadline = Instant::now() + config.handshake_timeout;
    let io = if url.tls {
        tls_connect(tcp, url, config, deadline)?
    } else {
        Transport::Plain(tcp)
    };
    let request = upgrade_request(url, config, headers)?;
    handshake(io, &request, config, follow_redirects, deadline)
}

/// The TCP connection: every address of the host in turn, all within `timeout`.
fn connect_tcp(url: &WsUrl, timeout: Duration) -> Result<TcpStream, Error> {
    let deadline = Instant::now() + timeout;
    let mut last_err = None;
    for addr in (url.host.as_str(), url.port).to_socket_addrs()? {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(Error::ConnectTimeout);
        }
        match TcpStream::connect_timeout(&addr, left) {
            Ok(tcp) => return Ok(tcp),
            Err(e) if is_timeout(&e) => return Err(Error::ConnectTimeout),
            Err(e) => last_err = Some(e),
        }
    }
    Err(Error::Io(last_err.unwrap_or_else(|| {
        io::Error::new(io::ErrorKind::NotFound, "host name resolved to no address")
    })))
}

#[cfg(feature = "rustls")]
fn tls_connect(
    tcp: TcpStream,
    url: &WsUrl,
    config: &WebSocketConfig,
    deadline: Instant,
) -> Result<Transport, Error> {
    use crate::tls::rustls;

    let (tls, name) = crate::tls::client_session(config.tls_client.as_ref(), &url.host, &[])?;
    let conn = rustls::ClientConnection::new(tls, name).map_err(|e| Error::Tls(Box::new(e)))?;
    let mut stream = rustls::StreamOwned::new(conn, tcp);
    while stream.conn.is_handshaking() {
        arm(&stream.sock, deadline)?;
        if let Err(e) = stream.conn.complete_io(&mut stream.sock) {
            return Err(if is_timeout(&e) {
                Error::HandshakeTimeout
            } else {
                crate::tls::handshake_error(e)
            });
        }
    }
    Ok(Transport::Tls(Box::new(stream)))
}

#[cfg(not(feature = "rustls"))]
fn tls_connect(
    _tcp: TcpStream,
    _url: &WsUrl,
    _config: &WebSocketConfig,
    _deadline: Instant,
) -> Result<Transport, Error> {
    Err(crate::error::UrlError::TlsDisabled.into())
}

fn handshake(
    mut io: Transport,
    request: &ClientRequest,
    config: &WebSocketConfig,
    follow_redirects: bool,
    deadline: Instant,
) -> Result<Attempt<ClientWebSocket>, Error> {
    let mut out = Vec::new();
    let mut handshake = ClientHandshake::new(request, nonce()?, config.handshake.clone(), &mut out);
    arm(&io, deadline)?;
    io.write_all(&out)
        .and_then(|()| io.flush())
        .map_err(handshake_io)?;
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 4096];
    loop {
        arm(&io, deadline)?;
        let n = match io.read(&mut chunk) {
            Ok(0) => return Err(Error::Io(io::ErrorKind::UnexpectedEof.into())),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(handshake_io(e)),
        };
        buf.extend_from_slice(&chunk[..n]);
        let Some((response, used)) = handshake.parse_response(&buf)? else {
            continue;
        };
        return match handshake.outcome(&response, follow_redirects)? {
            Outcome::Accepted(negotiated) => {
                disarm(&io)?;
                tracing::debug!(status = %response.status(), "websocket client connected");
                let leftover = &buf[used..];
                let ws = WebSocket::from_negotiated(
                    io,
                    Role::Client,
                    config.clone(),
                    negotiated,
                    leftover,
                );
                Ok(Attempt::Connected(Box::new(ws), response))
            }
            Outcome::Redirect(location) => Ok(Attempt::Redirect(location)),
            Outcome::Refused { body_len } => {
                let body = read_body(&mut io, body_len, buf.split_off(used), deadline);
                let (parts, ()) = response.into_parts();
                Err(Error::Http(Box::new(Response::from_parts(parts, body))))
            }
        };
    }
}

/// Reads the body of a refusal as the async client does: `wanted` bytes
/// ([`Outcome::Refused`]), fewer if the connection ends, the peer pauses for half a second or
/// the handshake deadline passes.
fn read_body(io: &mut Transport, wanted: usize, mut body: Vec<u8>, deadline: Instant) -> Vec<u8> {
    let mut chunk = [0u8; 4096];
    while body.len() < wanted {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() || io.set_read_timeout(Some(left.min(BODY_QUIET))).is_err() {
            break;
        }
        match io.read(&mut chunk) {
            Ok(0) | Err(_) => break,
            Ok(n) => body.extend_from_slice(&chunk[..n]),
        }
    }
    body.truncate(wanted);
    body
}

#[cfg(all(test, unix))]
mod tests {
    use std::os::unix::net::UnixStream;

    use super::*;

    /// A transport with no timeouts or half-close of its own: the trait's defaults.
    #[derive(Debug)]
    struct Plain(UnixStream);

    impl Read for Plain {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            self.0.read(buf)
        }
    }

    impl Write for Plain {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.0.write(buf)
        }

        fn flush(&mut self) -> io::Result<()> {
            self.0.flush()
        }
    }

    impl Socket for Plain {}

    fn bounded_pair() -> (UnixStream, UnixStream) {
        let (a, b) = UnixStream::pair().unwrap();
        for end in [&a, &b] {
            end.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        }
        (a, b)
    }

    #[test]
    fn connections_can_move_between_threads() {
        fn assert_send<T: Send>() {}
        assert_send::<ClientWebSocket>();
        assert_send::<WebSocket<TcpStream>>();
    }

    #[test]
    fn prepared_messages_go_out_like_messages() {
        let prepared = PreparedMessage::new(Message::binary(vec![3; 70_000]));
        let mut readers = Vec::new();
        let mut servers = Vec::new();
        for _ in 0..3 {
            let (a, b) = bounded_pair();
            servers.push(WebSocket::from_raw(
                Plain(a),
                Role::Server,
                WebSocketConfig::default(),
                &[],
            ));
            readers.push(std::thread::spawn(move || {
                let mut client =
                    WebSocket::from_raw(Plain(b), Role::Client, WebSocketConfig::default(), &[]);
                client.read().unwrap()
            }));
        }
        for server in &mut servers {
            server.send_prepared(&prepared).unwrap();
        }
        for reader in readers {
            assert_eq!(reader.join().unwrap().as_ref(), Some(prepared.message()));
        }
    }

    #[test]
    fn leftover_bytes_are_the_first_frames() {
        let (a, _b) = bounded_pair();
        // A masked "Hi" from a client (mask 0), already read past the handshake head.
        let mut server = WebSocket::from_raw(
            a,
            Role::Server,
            WebSocketConfig::default(),
            &[0x81, 0x82, 0, 0, 0, 0, b'H', b'i'],
        );
        assert_eq!(server.read().unwrap(), Some(Message::text("Hi")));
    }

    #[test]
    fn pair_over_a_stream_with_default_socket_methods() {
        let (a, b) = bounded_pair();
        let server = std::thread::spawn(move || {
            let mut ws =
                WebSocket::from_raw(Plain(b), Role::Server, WebSocketConfig::default(), &[]);
            let mut echoed = 0;
            let end = loop {
                match ws.read() {
                    Ok(Some(message)) => {
                        ws.send(message).unwrap();
                        echoed += 1;
                    }
                    Ok(None) => break Ok(()),
                    Err(e) => break Err(e),
                }
            };
            (echoed, end, ws.close_info().cloned())
        });
        let mut client = WebSocket::from_raw(a, Role::Client, WebSocketConfig::default(), &[]);
        client.send(Message::Ping(b"p".to_vec().into())).unwrap();
        for message in [Message::text("one"), Message::binary(vec![7; 70_000])] {
            client.send(message.clone()).unwrap();
            assert_eq!(client.read().unwrap(), Some(message));
        }
        // Sending after the close frame is refused; close reports a clean end.
        client.close(CloseCode(4321), "done").unwrap();
        assert!(matches!(
            client.send("x"),
            Err(Error::Send(SendError::Closed))
        ));
        let closed = client.close_info().unwrap();
        assert!(closed.was_clean, "{closed:?}");
        assert_eq!(client.state(), State::Closed);
        let (echoed, end, closed) = server.join().unwrap();
        assert_eq!(echoed, 2);
        // A clean close ends the reads with `None`, not an error.
        assert!(end.is_ok(), "{end:?}");
        let closed = closed.unwrap();
        assert_eq!(
            (closed.code, closed.reason.as_str()),
            (CloseCode(4321), "done")
        );
    }

    #[test]
    fn invalid_close_codes_are_refused_before_sending() {
        let (a, _b) = bounded_pair();
        let mut ws = WebSocket::from_raw(a, Role::Client, WebSocketConfig::default(), &[]);
        assert!(matches!(
            ws.close(CloseCode::ABNORMAL, ""),
            Err(Error::Send(SendError::InvalidCloseCode(1006)))
        ));
        assert_eq!(ws.state(), State::Open);
        assert_eq!(ws.buffered_amount(), 0);
    }
}
