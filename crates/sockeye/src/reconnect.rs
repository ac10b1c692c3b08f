//! [`ReconnectingClient`]: an opt-in client that reconnects after an abnormal close or a
//! failed connect, waiting longer after each failure in a row ([`Backoff`]: exponential, with
//! jitter, bounded), and reports every step as a [`ReconnectEvent`].
//!
//! It is built on [`ClientBuilder::connect`] and [`WebSocketStream`](crate::WebSocketStream);
//! each connection is a new WebSocket session, so messages sent while disconnected are not
//! queued and messages in flight when a connection is lost are lost with it.

use std::collections::VecDeque;
use std::fmt;
use std::future::{poll_fn, Future};
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use futures_core::{FusedStream, Stream};
use futures_sink::Sink as _;
use futures_util::StreamExt as _;
use http::Response;
use sockeye_proto::{CloseCode, Closed, Initiator, Message, SendError, State};
use tokio::time::{Instant, Sleep};

use crate::client::ClientBuilder;
use crate::error::{Error, ProxyError};
use crate::stream::ClientStream;

/// How long a [`ReconnectingClient`] waits before each reconnect attempt, and when it gives up.
///
/// The n-th reconnect attempt in a row waits `min(max, initial × multiplierⁿ⁻¹)`, spread by
/// `± jitter` of itself and capped at `max` again. With the defaults: about 0.5 s, 1 s, 2 s,
/// 4 s, … 30 s, each ± 20 %, forever.
///
/// ```
/// use std::time::Duration;
/// use sockeye::Backoff;
///
/// let backoff = Backoff::default()
///     .initial(Duration::from_millis(100))
///     .max(Duration::from_secs(5))
///     .max_attempts(Some(8));
/// assert_eq!(backoff.base_delay(1), Duration::from_millis(100));
/// assert_eq!(backoff.base_delay(3), Duration::from_millis(400));
/// assert_eq!(backoff.base_delay(20), Duration::from_secs(5));
/// ```
#[derive(Debug, Clone, Copy, PartialEq)]
#[non_exhaustive]
pub struct Backoff {
    /// Delay before the first reconnect attempt (before jitter).
    ///
    /// Default: 500 ms.
    pub initial: Duration,
    /// Longest delay, jitter included. Bounds the wait after a long outage.
    ///
    /// Default: 30 s.
    pub max: Duration,
    /// Factor applied to the delay after each further failure in a row; below 1 (or NaN) counts
    /// as 1 (a constant delay).
    ///
    /// Default: 2.
    pub multiplier: f64,
    /// Random spread of each delay as a fraction of it: a delay `d` becomes uniform in
    /// `[d × (1 − jitter), d × (1 + jitter)]`, capped at `max`; clamped to `0..=1`. Spreads the
    /// reconnects of many clients after a server restart; 0 makes delays exact.
    ///
    /// Default: 0.2.
    pub jitter: f64,
    /// Most reconnect attempts in a row; when the last one fails the client gives up
    /// ([`ReconnectEvent::GaveUp`]). `Some(0)`: never reconnect. `None`: retry forever (every
    /// wait is still bounded by `max`).
    ///
    /// Default: `None`.
    pub max_attempts: Option<u32>,
    /// A connection that stays open this long resets the count of failures. A connection lost
    /// sooner counts as a failed attempt, so that a server that accepts and then drops every
    /// connection is retried with growing delays (and, with `max_attempts`, given up on).
    ///
    /// Default: 10 s.
    pub reset_after: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Self {
            initial: Duration::from_millis(500),
            max: Duration::from_secs(30),
            multiplier: 2.0,
            jitter: 0.2,
            max_attempts: None,
            reset_after: Duration::from_secs(10),
        }
    }
}

impl Backoff {
    /// Sets [`initial`](Self::initial).
    #[must_use]
    pub fn initial(mut self, delay: Duration) -> Self {
        self.initial = delay;
        self
    }

    /// Sets [`max`](Self::max).
    #[must_use]
    pub fn max(mut self, delay: Duration) -> Self {
        self.max = delay;
        self
    }

    /// Sets [`multiplier`](Self::multiplier).
    #[must_use]
    pub fn multiplier(mut self, factor: f64) -> Self {
        self.multiplier = factor;
        self
    }

    /// Sets [`jitter`](Self::jitter).
    #[must_use]
    pub fn jitter(mut self, fraction: f64) -> Self {
        self.jitter = fraction;
        self
    }

    /// Sets [`max_attempts`](Self::max_attempts).
    #[must_use]
    pub fn max_attempts(mut self, attempts: Option<u32>) -> Self {
        self.max_attempts = attempts;
        self
    }

    /// Sets [`reset_after`](Self::reset_after).
    #[must_use]
    pub fn reset_after(mut self, period: Duration) -> Self {
        self.reset_after = period;
        self
    }

    /// The delay before reconnect attempt `attempt` (1 for the first) without jitter:
    /// `min(max, initial × multiplier^(attempt − 1))`.
    pub fn base_delay(&self, attempt: u32) -> Duration {
        if self.initial.is_zero() {
            return Duration::ZERO;
        }
        let multiplier = if self.multiplier >= 1.0 {
            self.multiplier
        } else {
            1.0
        };
        let exponent = attempt.saturating_sub(1).min(4096) as i32;
        let secs = self.initial.as_secs_f64() * multiplier.powi(exponent);
        Duration::try_from_secs_f64(secs)
            .unwrap_or(self.max)
            .min(self.max)
    }

    /// The delay before reconnect attempt `attempt` with jitter drawn from the OS random
    /// number generator (none if it fails).
    pub fn delay(&self, attempt: u32) -> Duration {
        let mut bytes = [0u8; 8];
        let unit = match getrandom::fill(&mut bytes) {
            // The top 53 bits: uniform in [0, 1).
            Ok(()) => (u64::from_le_bytes(bytes) >> 11) as f64 / (1u64 << 53) as f64,
            Err(_) => 0.5,
        };
        self.jittered_delay(attempt, unit)
    }

    /// [`base_delay`](Self::base_delay) spread by jitter, `unit` uniform in `[0, 1)`.
    fn jittered_delay(&self, attempt: u32, unit: f64) -> Duration {
        let base = self.base_delay(attempt);
        let jitter = if self.jitter > 0.0 {
            self.jitter.min(1.0)
        } else {
            0.0
        };
        let factor = 1.0 + jitter * (2.0 * unit - 1.0);
        Duration::try_from_secs_f64(base.as_secs_f64() * factor)
            .unwrap_or(base)
            .min(self.max)
    }
}

/// What happened to a [`ReconnectingClient`].
#[derive(Debug)]
#[non_exhaustive]
pub enum ReconnectEvent {
    /// A connection is open: sending works from now on.
    Connected {
        /// 0 for the first connection made at the first try; else the reconnect attempt that
        /// succeeded (as in [`Reconnecting`](Self::Reconnecting)).
        attempt: u32,
        /// The server's `101 Switching Protocols` response.
        response: Response<()>,
    },
    /// A message arrived: data, and, for information, pings, pongs and the server's close
    /// frame, as [`WebSocketStream`](crate::WebSocketStream) yields them.
    Message(Message),
    /// An open connection ended. Followed by [`Reconnecting`](Self::Reconnecting),
    /// [`GaveUp`](Self::GaveUp), or, when the end was not a reason to reconnect (see
    /// [`ReconnectingClient`]), by the end of the events.
    Disconnected {
        /// How it ended: code, reason, who started it, whether it was clean.
        close: Option<Closed>,
        /// The stream's error when the end was abnormal ([`Error::AbnormalClosure`],
        /// [`Error::Io`], [`Error::KeepaliveTimeout`], [`Error::Protocol`]…).
        error: Option<Error>,
    },
    /// A connection attempt failed. Followed by [`Reconnecting`](Self::Reconnecting) or
    /// [`GaveUp`](Self::GaveUp).
    ConnectFailed {
        /// As in [`Connected`](Self::Connected).
        attempt: u32,
        /// Why.
        error: Error,
    },
    /// Waiting `delay` before reconnect attempt `attempt`.
    Reconnecting {
        /// The number of this reconnect attempt in a row, from 1.
        attempt: u32,
        /// The wait, from [`Backoff::delay`].
        delay: Duration,
    },
    /// No further attempt: [`Backoff::max_attempts`] is reached, or the last failure will not
    /// go away by retrying (see [`ReconnectingClient`]). The last event.
    GaveUp {
        /// Failures in a row, the last one included: failed connects and connections lost
        /// before [`Backoff::reset_after`].
        failures: u32,
    },
}

type ConnectFuture =
    Pin<Box<dyn Future<Output = Result<(ClientStream, Response<()>), Error>> + Send>>;

enum Phase {
    /// Connect at the next poll.
    Idle,
    Connecting(ConnectFuture),
    Open {
        ws: Box<ClientStream>,
        since: Instant,
    },
    Waiting(Pin<Box<Sleep>>),
    /// No more events.
    Done,
}

/// A client connection that reconnects, with [`Backoff`], after it is lost or fails to open.
///
/// Drive it with [`next_event`](Self::next_event) (or as a [`Stream`] of [`ReconnectEvent`]s):
/// nothing happens, not even the first connect, until it is polled, and messages, keepalive
/// pings and reconnects only progress while it is.
///
/// **When it reconnects.** After a failed connect, unless the failure is permanent; after a
/// connection ends abnormally (an [`Error`]: no close handshake, I/O error, keepalive or write
/// timeout, a protocol violation by the server); and after the server closes with a code that
/// says "come back": 1001 going away, 1011 internal error, 1012 service restart, 1013 try again
/// later, 1014 bad gateway ([`default_close_policy`](Self::default_close_policy); replace it
/// with [`reconnect_on_close`](Self::reconnect_on_close)). It never reconnects after a close
/// this end asked for ([`close`](Self::close), a `Message::Close` sent, the idle timeout), nor
/// after the server's 1000 or any other code: those end the events after
/// [`ReconnectEvent::Disconnected`].
///
/// **Permanent failures** end with [`ReconnectEvent::GaveUp`] at once: an invalid URL or
/// header, TLS errors (an untrusted certificate), an HTTP refusal other than 408, 429 and 5xx,
/// an invalid handshake answer, too many redirects, proxy authentication failures and a proxy
/// that refuses the target by rule. DNS, TCP, timeouts, 5xx answers and unreachable targets are
/// retried.
///
/// **Sending** fails fast with [`Error::Send`]`(`[`SendError::Closed`]`)` while there is no
/// open connection: nothing is queued for a later connection, which would be a different
/// session. Resend what matters (subscriptions, state) on [`ReconnectEvent::Connected`].
///
/// ```no_run
/// # async fn run() -> Result<(), sockeye::Error> {
/// use sockeye::{Backoff, ClientBuilder, CloseCode, Message, ReconnectEvent, ReconnectingClient};
///
/// let mut client = ReconnectingClient::new(
///     ClientBuilder::new("wss://example.com/feed"),
///     Backoff::default().max_attempts(Some(10)),
/// );
/// while let Some(event) = client.next_event().await {
///     match event {
///         // Subscribe on every connection; if this send fails, the connection is gone and
///         // the next `Connected` tries again.
///         ReconnectEvent::Connected { .. } => {
///             let _ = client.send(Message::text("subscribe")).await;
///         }
///         ReconnectEvent::Message(Message::Text(text)) if text == "bye" => {
///             client.close(CloseCode::NORMAL, "done").await?;
///         }
///         ReconnectEvent::Reconnecting { attempt, delay } => {
///             eprintln!("reconnect attempt {attempt} in {delay:?}");
///         }
///         _ => {}
///     }
/// }
/// # Ok(()) }
/// ```
///
/// # Cancel safety
///
/// [`next_event`](Self::next_event) is cancel-safe: the connect in progress, the wait and
/// undelivered events stay in the client. [`send`](Self::send) is as
/// [`WebSocketStream::send`](crate::WebSocketStream::send); [`close`](Self::close) may be
/// called again to resume, and no reconnect happens after its first poll.
pub struct ReconnectingClient {
    builder: ClientBuilder,
    backoff: Backoff,
    close_policy: fn(&Closed) -> bool,
    phase: Phase,
    /// Failures in a row since the last connection that stayed up for `reset_after`.
    failures: u32,
    /// Events to deliver before polling anything (at most two).
    events: VecDeque<ReconnectEvent>,
    /// The open connection's error, held until it ends.
    stream_error: Option<Error>,
    /// The user asked to close: never reconnect.
    closing: bool,
}

impl fmt::Debug for ReconnectingClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let phase = match &self.phase {
            Phase::Idle => "idle",
            Phase::Connecting(_) => "connecting",
            Phase::Open { .. } => "open",
            Phase::Waiting(_) => "waiting",
            Phase::Done => "done",
        };
        // Not the builder: its headers may carry credentials.
        f.debug_struct("ReconnectingClient")
            .field("backoff", &self.backoff)
            .field("phase", &phase)
            .field("failures", &self.failures)
            .field("closing", &self.closing)
            .finish_non_exhaustive()
    }
}

impl ReconnectingClient {
    /// A client for `builder`'s URL and settings (proxy included), reconnecting with
    /// `backoff`. It connects when first polled.
    pub fn new(builder: ClientBuilder, backoff: Backoff) -> Self {
        Self {
            builder,
            backoff,
            close_policy: Self::default_close_policy,
            phase: Phase::Idle,
            failures: 0,
            events: VecDeque::with_capacity(2),
            stream_error: None,
            closing: false,
        }
    }

    /// Decides, for a clean close started by the server, whether to reconnect.
    #[must_use]
    pub fn reconnect_on_close(mut self, policy: fn(&Closed) -> bool) -> Self {
        self.close_policy = policy;
        self
    }

    /// The default close policy: reconnect after the server's 1001 (going away), 1011
    /// (internal error), 1012 (service restart), 1013 (try again later) and 1014 (bad gateway);
    /// not after 1000, 1005 (no code), policy or data errors, or application codes.
    pub fn default_close_policy(close: &Closed) -> bool {
        matches!(
            close.code,
            CloseCode::GOING_AWAY
                | CloseCode::INTERNAL_ERROR
                | CloseCode::SERVICE_RESTART
                | CloseCode::TRY_AGAIN_LATER
                | CloseCode::BAD_GATEWAY
        )
    }

    /// The open connection, if any (for its subprotocol, extensions, state).
    pub fn stream(&self) -> Option<&ClientStream> {
        match &self.phase {
            Phase::Open { ws, .. } => Some(ws),
            _ => None,
        }
    }

    /// Whether a connection is open and not closing.
    pub fn is_connected(&self) -> bool {
        !self.closing && self.stream().is_some_and(|ws| ws.state() == State::Open)
    }

    /// The next event; `None` once the client has given up, the server ended the session, or
    /// [`close`](Self::close) was called.
    ///
    /// # Cancel safety
    ///
    /// Cancel-safe: progress and undelivered events stay in the client.
    pub async fn next_event(&mut self) -> Option<ReconnectEvent> {
        poll_fn(|cx| self.poll_event(cx)).await
    }

    /// Sends a message on the open connection and waits until it is written.
    ///
    /// # Errors
    ///
    /// [`Error::Send`] with [`SendError::Closed`] when no connection is open (connecting,
    /// waiting to reconnect, closed); otherwise as
    /// [`WebSocketStream::send`](crate::WebSocketStream::send). A failed write means the
    /// connection is lost: [`next_event`](Self::next_event) reports it and reconnects.
    ///
    /// # Cancel safety
    ///
    /// As [`WebSocketStream::send`](crate::WebSocketStream::send).
    pub async fn send(&mut self, message: impl Into<Message>) -> Result<(), Error> {
        match &mut self.phase {
            Phase::Open { ws, .. } if !self.closing => ws.send(message).await,
            _ => Err(SendError::Closed.into()),
        }
    }

    /// Closes for good: performs the close handshake on the open connection (as
    /// [`WebSocketStream::close`](crate::WebSocketStream::close)), or stops connecting or
    /// waiting. No reconnect follows, and [`next_event`](Self::next_event) returns `None`.
    ///
    /// # Errors
    ///
    /// [`Error::Send`] for a code that may not be sent or a reason over 123 bytes (nothing
    /// happens: the connection stays open and reconnecting); [`Error::Io`] when the transport
    /// fails during the close handshake (the client is closed all the same).
    ///
    /// # Cancel safety
    ///
    /// From its first poll the client is closing and never reconnects; call `close` again (or
    /// [`next_event`](Self::next_event)) to finish the close handshake.
    pub async fn close(&mut self, code: CloseCode, reason: &str) -> Result<(), Error> {
        let Phase::Open { ws, .. } = &mut self.phase else {
            self.closing = true;
            self.phase = Phase::Done;
            return Ok(());
        };
        let was_closing = self.closing;
        self.closing = true;
        let result = ws.close(code, reason).await;
        if matches!(result, Err(Error::Send(_))) && ws.state() == State::Open {
            // An invalid code or reason: nothing was sent.
            self.closing = was_closing;
            return result;
        }
        tracing::debug!("reconnecting client closed by the application");
        self.phase = Phase::Done;
        result
    }

    fn poll_event(&mut self, cx: &mut Context<'_>) -> Poll<Option<ReconnectEvent>> {
        if self.closing {
            return self.poll_closing(cx);
        }
        loop {
            if let Some(event) = self.events.pop_front() {
                return Poll::Ready(Some(event));
            }
            match &mut self.phase {
                Phase::Idle => {
                    tracing::debug!(attempt = self.failures, "connecting");
                    self.phase = Phase::Connecting(Box::pin(self.builder.clone().connect()));
                }
                Phase::Connecting(connect) => {
                    let attempt = self.failures;
                    match ready!(connect.as_mut().poll(cx)) {
                        Ok((ws, response)) => {
                            tracing::debug!(attempt, "connected");
                            self.phase = Phase::Open {
                                ws: Box::new(ws),
                                since: Instant::now(),
                            };
                            return Poll::Ready(Some(ReconnectEvent::Connected {
                                attempt,
                                response,
                            }));
                        }
                        Err(error) => {
                            tracing::debug!(attempt, %error, "connect failed");
                            self.failures = self.failures.saturating_add(1);
                            let retry = is_transient(&error);
                            self.events
                                .push_back(ReconnectEvent::ConnectFailed { attempt, error });
                            self.retry_or_give_up(retry);
                        }
                    }
                }
                Phase::Waiting(sleep) => {
                    ready!(sleep.as_mut().poll(cx));
                    self.phase = Phase::Idle;
                }
                Phase::Open { ws, since } => match ready!(ws.poll_next_unpin(cx)) {
                    Some(Ok(message)) => {
                        return Poll::Ready(Some(ReconnectEvent::Message(message)))
                    }
                    Some(Err(error)) => {
                        // The stream ends after its error; report both together.
                        self.stream_error.get_or_insert(error);
                    }
                    None => {
                        let close = ws.close_info().cloned();
                        let stable = since.elapsed() >= self.backoff.reset_after;
                        self.phase = Phase::Done;
                        self.disconnected(close, stable);
                    }
                },
                Phase::Done => return Poll::Ready(None),
            }
        }
    }

    /// After [`close`](Self::close) started: finishes the close handshake if a cancelled
    /// `close` left one running, then ends.
    fn poll_closing(&mut self, cx: &mut Context<'_>) -> Poll<Option<ReconnectEvent>> {
        self.events.clear();
        if let Phase::Open { ws, .. } = &mut self.phase {
            if let Err(error) = ready!(Pin::new(&mut **ws).poll_close(cx)) {
                tracing::debug!(%error, "close handshake failed");
            }
        }
        self.phase = Phase::Done;
        Poll::Ready(None)
    }

    /// Reports the end of the open connection and decides what follows.
    fn disconnected(&mut self, close: Option<Closed>, stable: bool) {
        let error = self.stream_error.take();
        let retry = match (&error, &close) {
            (Some(error), _) => is_transient(error),
            // RFC 6455 §7.1.5: without a close handshake the close code is 1006 (abnormal).
            (None, Some(close)) if !close.was_clean => true,
            // A close this end started (the application or the idle timeout) is final.
            (None, Some(close)) => {
                close.initiator == Initiator::Remote && (self.close_policy)(close)
            }
            (None, None) => true,
        };
        tracing::debug!(
            code = close.as_ref().map(|c| c.code.0),
            retry,
            stable,
            "connection lost"
        );
        if stable {
            self.failures = 0;
        }
        self.events
            .push_back(ReconnectEvent::Disconnected { close, error });
        if retry {
            self.failures = self.failures.saturating_add(1);
            self.retry_or_give_up(true);
        }
    }

    /// After failure number `self.failures`: waits for the next attempt, or gives up.
    fn retry_or_give_up(&mut self, retry: bool) {
        let exhausted = self
            .backoff
            .max_attempts
            .is_some_and(|max| self.failures > max);
        if !retry || exhausted {
            tracing::debug!(failures = self.failures, "giving up");
            self.events.push_back(ReconnectEvent::GaveUp {
                failures: self.failures,
            });
            self.phase = Phase::Done;
            return;
        }
        let attempt = self.failures;
        let delay = self.backoff.delay(attempt);
        tracing::debug!(attempt, ?delay, "reconnecting after a delay");
        self.events
            .push_back(ReconnectEvent::Reconnecting { attempt, delay });
        self.phase = Phase::Waiting(Box::pin(tokio::time::sleep(delay)));
    }
}

impl Stream for ReconnectingClient {
    type Item = ReconnectEvent;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<ReconnectEvent>> {
        self.get_mut().poll_event(cx)
    }
}

impl FusedStream for ReconnectingClient {
    fn is_terminated(&self) -> bool {
        matches!(self.phase, Phase::Done) && (self.closing || self.events.is_empty())
    }
}

/// Whether retrying may succeed where `error` failed.
fn is_transient(error: &Error) -> bool {
    match error {
        Error::Io(_)
        | Error::ConnectTimeout
        | Error::HandshakeTimeout
        | Error::AbnormalClosure
        | Error::KeepaliveTimeout
        | Error::WriteTimeout
        | Error::Protocol(_) => true,
        Error::Http(response) => {
            let status = response.status();
            status.is_server_error()
                || status == http::StatusCode::REQUEST_TIMEOUT
                || status == http::StatusCode::TOO_MANY_REQUESTS
        }
        Error::Proxy(error) => match error {
            ProxyError::HttpStatus(status) => *status >= 500 || matches!(status, 408 | 429),
            // General failure, network or host unreachable, connection refused, TTL expired.
            ProxyError::Socks5Reply(code) => matches!(code, 0x01 | 0x03..=0x06),
            ProxyError::Closed | ProxyError::BadResponse => true,
            ProxyError::InvalidUrl(_)
            | ProxyError::AuthRequired
            | ProxyError::AuthFailed
            | ProxyError::InvalidCredentials
            | ProxyError::InvalidTarget
            | ProxyError::NoAcceptableAuthMethod => false,
        },
        Error::Handshake(_)
        | Error::Send(_)
        | Error::Url(_)
        | Error::QueueFull
        | Error::InvalidState
        | Error::Tls(_)
        | Error::TooManyRedirects
        | Error::Http2NotNegotiated
        | Error::ExtendedConnectDisabled => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_caps_and_jitters_within_bounds() {
        let backoff = Backoff::default();
        let expected = [0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0];
        for (i, secs) in expected.iter().enumerate() {
            let attempt = i as u32 + 1;
            assert_eq!(
                backoff.base_delay(attempt),
                Duration::from_secs_f64(*secs),
                "attempt {attempt}"
            );
            let base = backoff.base_delay(attempt).as_secs_f64();
            let low = backoff.jittered_delay(attempt, 0.0).as_secs_f64();
            let high = backoff.jittered_delay(attempt, 0.999_999).as_secs_f64();
            assert!((low - base * 0.8).abs() < 1e-6, "{low} vs {base}");
            assert!(high <= 30.0 && high >= base.min(30.0) * 0.999, "{high}");
            for _ in 0..50 {
                let d = backoff.delay(attempt).as_secs_f64();
                assert!(d >= base * 0.8 - 1e-9 && d <= (base * 1.2).min(30.0) + 1e-9);
            }
        }
        assert_eq!(backoff.base_delay(u32::MAX), Duration::from_secs(30));
        // Random jitter actually varies.
        let draws: std::collections::HashSet<_> = (0..20).map(|_| backoff.delay(3)).collect();
        assert!(draws.len() > 10, "{draws:?}");
    }

    #[test]
    fn backoff_sanitizes_settings() {
        let b = Backoff::default().multiplier(f64::NAN).jitter(f64::NAN);
        assert_eq!(b.delay(5), Duration::from_millis(500));
        let b = Backoff::default().multiplier(0.1).jitter(-3.0);
        assert_eq!(b.delay(5), Duration::from_millis(500));
        let b = Backoff::default().jitter(7.0);
        assert_eq!(b.jittered_delay(1, 0.0), Duration::ZERO);
        assert_eq!(b.jittered_delay(1, 0.75), Duration::from_millis(750));
        let b = Backoff::default().initial(Duration::ZERO);
        assert_eq!(b.delay(100), Duration::ZERO);
        let b = Backoff::default()
            .initial(Duration::from_secs(60))
            .multiplier(f64::INFINITY)
            .jitter(0.0);
        assert_eq!(b.delay(3), Duration::from_secs(30));
        let b = Backoff::default().max(Duration::MAX).multiplier(10.0);
        assert!(b.base_delay(1000) > Duration::from_secs(1 << 40));
    }

    #[test]
    fn client_can_move_to_a_task() {
        fn assert_send<T: Send + Unpin + 'static>() {}
        assert_send::<ReconnectingClient>();
        assert_send::<ReconnectEvent>();
    }

    #[test]
    fn transient_errors() {
        assert!(is_transient(&Error::AbnormalClosure));
        assert!(is_transient(&Error::Io(
            std::io::ErrorKind::ConnectionRefused.into()
        )));
        assert!(is_transient(&Error::Proxy(ProxyError::Socks5Reply(5))));
        assert!(!is_transient(&Error::Proxy(ProxyError::Socks5Reply(2))));
        assert!(!is_transient(&Error::Proxy(ProxyError::AuthFailed)));
        assert!(!is_transient(&Error::Proxy(ProxyError::HttpStatus(403))));
        assert!(is_transient(&Error::Proxy(ProxyError::HttpStatus(502))));
        let http = |status: u16| {
            let mut response = http::Response::new(Vec::new());
            *response.status_mut() = http::StatusCode::from_u16(status).unwrap();
            Error::Http(Box::new(response))
        };
        assert!(is_transient(&http(503)));
        assert!(is_transient(&http(429)));
        assert!(!is_transient(&http(401)));
        assert!(!is_transient(&http(404)));
    }
}
