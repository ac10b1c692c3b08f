//! The error type of the tokio layer.

use std::{fmt, io};

use sockeye_proto::handshake::HandshakeError;
use sockeye_proto::{CloseCode, ProtocolError, SendError};

/// Everything that can go wrong on a sockeye connection.
#[derive(Debug)]
#[non_exhaustive]
pub enum Error {
    /// The transport failed.
    Io(io::Error),
    /// The peer violated RFC 6455; the connection was failed with the error's close code.
    Protocol(ProtocolError),
    /// The opening handshake failed.
    Handshake(Box<HandshakeError>),
    /// The caller's request could not be carried out; the connection is unchanged.
    Send(SendError),
    /// The URL cannot be connected to.
    Url(UrlError),
    /// The opening handshake did not finish within the handshake timeout.
    HandshakeTimeout,
    /// The connection ended without a close handshake (close code 1006).
    AbnormalClosure,
    /// No pong or other data arrived within the keepalive timeout; the connection was aborted
    /// with close code 1011.
    KeepaliveTimeout,
    /// The peer accepted no bytes within the write timeout; queued output was dropped and the
    /// connection aborted with close code 1008.
    WriteTimeout,
    /// [`WebSocketStream::try_send`](crate::WebSocketStream::try_send) found the outgoing
    /// buffer above its high-water mark; nothing was queued.
    QueueFull,
    /// The operation is not allowed in the connection's current ready state: e.g.
    /// [`WebSocket::send`](crate::WebSocket::send) while still
    /// [`Connecting`](crate::ReadyState::Connecting) (the WHATWG standard's
    /// `InvalidStateError`). Nothing was sent; the connection is unchanged.
    InvalidState,
    /// TLS failed: a certificate the client does not trust (the source names the reason,
    /// e.g. `UnknownIssuer`, `NotValidForName`), malformed PEM, a handshake failure.
    Tls(Box<dyn std::error::Error + Send + Sync>),
    /// The server answered the upgrade with another HTTP status (a 401 with
    /// `WWW-Authenticate`, a 403, a 404…). The response, with up to 64 KiB of its body, says
    /// why.
    Http(Box<http::Response<Vec<u8>>>),
    /// More redirects than [`WebSocketConfig::max_redirects`](crate::WebSocketConfig::max_redirects).
    TooManyRedirects,
    /// Connecting (DNS and TCP, or the proxy) took longer than the connect timeout.
    ConnectTimeout,
    /// The proxy could not open a tunnel to the server: it refused the credentials, refused
    /// the target, or did not speak HTTP `CONNECT` or SOCKS5.
    Proxy(ProxyError),
    /// An HTTP/2 connection was asked for (`ClientBuilder::http2`, feature `http2`), but the
    /// server did not agree to HTTP/2: no ALPN `h2` in the TLS handshake, or (cleartext) it
    /// closed the connection without answering the HTTP/2 preface with its SETTINGS.
    Http2NotNegotiated,
    /// The HTTP/2 server does not accept WebSockets: it did not send
    /// `SETTINGS_ENABLE_CONNECT_PROTOCOL = 1` (RFC 8441 §3), so extended CONNECT may not be
    /// used.
    ExtendedConnectDisabled,
}

/// Why this end closed a connection by itself: neither the application asked for it nor the
/// peer did anything wrong. One exhaustive mapping to close codes, in the form of
/// [`ProtocolError::close_code`]: a new cause must choose its code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum LocalClose {
    /// The server is shutting down gracefully.
    Shutdown,
    /// No message within [`WebSocketConfig::idle_timeout`](crate::WebSocketConfig::idle_timeout).
    Idle,
    /// No pong or other data within the keepalive timeout.
    Keepalive,
    /// The peer took no bytes within the write timeout.
    WriteTimeout,
    /// A handler of the browser-shaped API panicked or stopped taking events.
    HandlerFailed,
    /// Every handle of a browser-shaped connection was dropped.
    Orphaned,
}

impl LocalClose {
    /// The close code sent for this cause
    /// ([RFC 6455 §7.4.1](https://www.rfc-editor.org/rfc/rfc6455#section-7.4.1)).
    pub(crate) const fn close_code(self) -> CloseCode {
        match self {
            // 1001: "an endpoint is \"going away\", such as a server going down or a browser
            // having navigated away from a page" (a dropped browser `WebSocket` sends it too).
            Self::Shutdown | Self::Idle | Self::Orphaned => CloseCode::GOING_AWAY,
            // 1008: "it has received a message that violates its policy"; a peer that takes no
            // bytes breaks the write-timeout policy.
            Self::WriteTimeout => CloseCode::POLICY_VIOLATION,
            // 1011: "an unexpected condition that prevented it from fulfilling the request".
            Self::Keepalive | Self::HandlerFailed => CloseCode::INTERNAL_ERROR,
        }
    }

    /// The close reason sent for this cause. Empty after a handler failure: panic messages may
    /// be security-sensitive (python-websockets sends none with its 1011 either).
    pub(crate) const fn reason(self) -> &'static str {
        match self {
            Self::Shutdown => "server shutting down",
            Self::Idle => "idle timeout",
            Self::Keepalive => "keepalive timeout",
            Self::WriteTimeout => "peer too slow",
            Self::HandlerFailed | Self::Orphaned => "",
        }
    }

    /// The error a stream reports when it ends after this cause, if any: an abort (queued
    /// output dropped, the transport closed without waiting for the peer's close frame) is an
    /// error; the others are close handshakes like the application's own.
    pub(crate) const fn error(self) -> Option<Error> {
        match self {
            Self::Keepalive => Some(Error::KeepaliveTimeout),
            Self::WriteTimeout => Some(Error::WriteTimeout),
            Self::Shutdown | Self::Idle | Self::HandlerFailed | Self::Orphaned => None,
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Io(_) => f.write_str("i/o error"),
            Self::Protocol(_) => f.write_str("protocol violation by the peer"),
            Self::Handshake(_) => f.write_str("opening handshake failed"),
            Self::Send(_) => f.write_str("cannot send"),
            Self::Url(_) => f.write_str("invalid websocket url"),
            Self::HandshakeTimeout => f.write_str("opening handshake timed out"),
            Self::AbnormalClosure => f.write_str("connection closed without a close handshake"),
            Self::KeepaliveTimeout => f.write_str("keepalive timeout: no answer to ping"),
            Self::WriteTimeout => f.write_str("write timeout: peer stopped reading"),
            Self::QueueFull => f.write_str("outgoing queue is full"),
            Self::InvalidState => f.write_str("not allowed in the current ready state"),
            Self::Tls(_) => f.write_str("tls error"),
            Self::Http(response) => write!(f, "server answered http {}", response.status()),
            Self::TooManyRedirects => f.write_str("too many redirects"),
            Self::ConnectTimeout => f.write_str("connect timed out"),
            Self::Proxy(_) => f.write_str("proxy tunnel failed"),
            Self::Http2NotNegotiated => f.write_str("server does not speak http/2"),
            Self::ExtendedConnectDisabled => f.write_str(
                "http/2 server does not accept websockets (no SETTINGS_ENABLE_CONNECT_PROTOCOL)",
            ),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Io(e) => Some(e),
            Self::Protocol(e) => Some(e),
            Self::Handshake(e) => Some(e.as_ref()),
            Self::Send(e) => Some(e),
            Self::Url(e) => Some(e),
            Self::Tls(e) => Some(e.as_ref()),
            Self::Proxy(e) => Some(e),
            Self::Http(_) | Self::TooManyRedirects | Self::ConnectTimeout => None,
            Self::HandshakeTimeout
            | Self::AbnormalClosure
            | Self::KeepaliveTimeout
            | Self::WriteTimeout
            | Self::QueueFull
            | Self::InvalidState
            | Self::Http2NotNegotiated
            | Self::ExtendedConnectDisabled => None,
        }
    }
}

impl From<io::Error> for Error {
    fn from(e: io::Error) -> Self {
        Self::Io(e)
    }
}

impl From<ProtocolError> for Error {
    fn from(e: ProtocolError) -> Self {
        Self::Protocol(e)
    }
}

impl From<HandshakeError> for Error {
    fn from(e: HandshakeError) -> Self {
        Self::Handshake(Box::new(e))
    }
}

impl From<SendError> for Error {
    fn from(e: SendError) -> Self {
        Self::Send(e)
    }
}

impl From<ProxyError> for Error {
    fn from(e: ProxyError) -> Self {
        Self::Proxy(e)
    }
}

impl From<UrlError> for Error {
    fn from(e: UrlError) -> Self {
        Self::Url(e)
    }
}

/// Why a URL cannot be used.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum UrlError {
    /// Not a URL.
    Malformed,
    /// The scheme is not `ws` (or `http`, mapped to `ws`); for a proxy URL, not `http`,
    /// `socks5` or `socks5h`.
    UnsupportedScheme(String),
    /// No host.
    MissingHost,
    /// URLs with a fragment are rejected, as the WHATWG WebSocket constructor does.
    Fragment,
    /// `wss://` needs the `rustls` feature.
    TlsDisabled,
    /// A redirect from `wss` to `ws` (refused: it would drop encryption), or a redirect without
    /// a usable `Location`.
    BadRedirect,
}

impl fmt::Display for UrlError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Malformed => f.write_str("malformed url"),
            Self::UnsupportedScheme(s) => write!(f, "unsupported scheme {s:?}"),
            Self::MissingHost => f.write_str("url has no host"),
            Self::Fragment => f.write_str("websocket urls cannot have a fragment"),
            Self::TlsDisabled => f.write_str("wss needs the rustls feature"),
            Self::BadRedirect => f.write_str("redirect refused (wss to ws, or no location)"),
        }
    }
}

impl std::error::Error for UrlError {}

/// Why a proxy did not open a tunnel (see [`Proxy`](crate::Proxy)).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ProxyError {
    /// The proxy URL (given explicitly or found in the environment) cannot be used.
    InvalidUrl(Box<UrlError>),
    /// The proxy wants credentials and none were configured: HTTP `407 Proxy Authentication
    /// Required`, or a SOCKS5 proxy that accepts only authenticated clients.
    AuthRequired,
    /// The proxy rejected the configured credentials: HTTP 407 in answer to a
    /// `Proxy-Authorization` header, or a non-zero SOCKS5 username/password status
    /// ([RFC 1929 §2](https://www.rfc-editor.org/rfc/rfc1929#section-2)).
    AuthFailed,
    /// The configured credentials cannot be sent: a Basic user name containing `:`
    /// ([RFC 7617 §2](https://www.rfc-editor.org/rfc/rfc7617#section-2)), an empty SOCKS5 user
    /// name, or a SOCKS5 user name or password over 255 bytes.
    InvalidCredentials,
    /// The target host cannot be sent to the proxy: empty, containing whitespace or control
    /// characters, or (SOCKS5) over 255 bytes.
    InvalidTarget,
    /// The HTTP proxy answered `CONNECT` with this status other than 2xx and 407 (403: the
    /// target is not allowed; 502, 504: the proxy could not reach it).
    HttpStatus(u16),
    /// The SOCKS5 proxy answered `CONNECT` with this reply code
    /// ([RFC 1928 §6](https://www.rfc-editor.org/rfc/rfc1928#section-6)); see
    /// [`socks5_reply_text`](Self::socks5_reply_text).
    Socks5Reply(u8),
    /// The SOCKS5 proxy accepts none of the authentication methods offered (none, and
    /// username/password when credentials are configured).
    NoAcceptableAuthMethod,
    /// The proxy's answer is not HTTP/1.x or SOCKS5, or its HTTP head is over 16 KiB.
    BadResponse,
    /// The proxy closed the connection before answering.
    Closed,
}

impl ProxyError {
    /// Whether the proxy refused to authenticate this client ([`AuthRequired`](Self::AuthRequired)
    /// or [`AuthFailed`](Self::AuthFailed)).
    pub const fn is_auth(&self) -> bool {
        matches!(self, Self::AuthRequired | Self::AuthFailed)
    }

    /// The meaning of a SOCKS5 reply code
    /// ([RFC 1928 §6](https://www.rfc-editor.org/rfc/rfc1928#section-6)).
    pub const fn socks5_reply_text(code: u8) -> &'static str {
        match code {
            0x00 => "succeeded",
            0x01 => "general socks server failure",
            0x02 => "connection not allowed by ruleset",
            0x03 => "network unreachable",
            0x04 => "host unreachable",
            0x05 => "connection refused",
            0x06 => "ttl expired",
            0x07 => "command not supported",
            0x08 => "address type not supported",
            _ => "unassigned reply code",
        }
    }
}

impl fmt::Display for ProxyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::InvalidUrl(_) => f.write_str("invalid proxy url"),
            Self::AuthRequired => f.write_str("proxy requires authentication"),
            Self::AuthFailed => f.write_str("proxy rejected the credentials"),
            Self::InvalidCredentials => f.write_str("proxy credentials cannot be encoded"),
            Self::InvalidTarget => f.write_str("target host cannot be sent to the proxy"),
            Self::HttpStatus(status) => write!(f, "proxy refused connect with http {status}"),
            Self::Socks5Reply(code) => write!(
                f,
                "socks5 proxy refused connect: {} (reply {code:#04x})",
                Self::socks5_reply_text(*code)
            ),
            Self::NoAcceptableAuthMethod => {
                f.write_str("socks5 proxy accepts none of the offered authentication methods")
            }
            Self::BadResponse => f.write_str("malformed answer from the proxy"),
            Self::Closed => f.write_str("proxy closed the connection before answering"),
        }
    }
}

impl std::error::Error for ProxyError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::InvalidUrl(e) => Some(e.as_ref()),
            Self::AuthRequired
            | Self::AuthFailed
            | Self::InvalidCredentials
            | Self::InvalidTarget
            | Self::HttpStatus(_)
            | Self::Socks5Reply(_)
            | Self::NoAcceptableAuthMethod
            | Self::BadResponse
            | Self::Closed => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_stays_small() {
        assert!(
            std::mem::size_of::<Error>() <= 24,
            "{}",
            std::mem::size_of::<Error>()
        );
        assert!(std::mem::size_of::<ProxyError>() <= 16);
    }
}
