//! The error type of the tokio layer.

use std::{fmt, io};

use sockeye_proto::handshake::HandshakeError;
use sockeye_proto::{ProtocolError, SendError};

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
            Self::Tls(_) => f.write_str("tls error"),
            Self::Http(response) => write!(f, "server answered http {}", response.status()),
            Self::TooManyRedirects => f.write_str("too many redirects"),
            Self::ConnectTimeout => f.write_str("connect timed out"),
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
            Self::Http(_) | Self::TooManyRedirects | Self::ConnectTimeout => None,
            Self::HandshakeTimeout
            | Self::AbnormalClosure
            | Self::KeepaliveTimeout
            | Self::WriteTimeout
            | Self::QueueFull => None,
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
    /// The scheme is not `ws` (or `http`, mapped to `ws`).
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
    }
}
