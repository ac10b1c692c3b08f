//! The opening handshake ([RFC 6455 §4](https://www.rfc-editor.org/rfc/rfc6455#section-4)).
//!
//! Both sides work on byte buffers the caller fills: a parse returns `Ok(None)` until the whole
//! head (up to the blank line) is there, then the parsed head and how many bytes it used. Bytes
//! after the head already belong to the WebSocket connection.
//!
//! Each side is an object in the shape of python-websockets' `ServerProtocol` and
//! `ClientProtocol`: [`ServerHandshake`] is fed the client's bytes and answers an upgrade, a
//! plain HTTP request or a refusal; [`ClientHandshake`] writes the request and reads the
//! server's answer as accepted, a redirect to follow ([`Redirects`]) or a refusal. Both end in
//! one [`Negotiated`] value, from which a runtime builds its connection.

mod accept_key;
mod client;
mod extended_connect;
mod redirect;
mod server;
pub(crate) mod token;

pub use accept_key::{accept_key, key_from_nonce, WEBSOCKET_GUID};
pub use client::{refusal_body_len, ClientHandshake, ClientRequest, Outcome, MAX_REFUSAL_BODY};
pub use extended_connect::{
    accept_connect_response, reject_connect_response, validate_connect_request, ConnectHandshake,
    WEBSOCKET_PROTOCOL,
};
pub use redirect::{Endpoint, RedirectError, Redirects};
pub use server::{
    accept_response, accept_response_with, is_upgrade_request, parse_request, reject_response,
    validate_request, write_response, Accept, HandshakeCallback, HandshakeDecision,
    HandshakeRequest, HttpCallback, Incoming, OriginCallback, OriginPolicy, ServerHandshake,
    ServerPolicy,
};
pub(crate) use token::is_token;

use crate::deflate::{DeflateParams, ExtensionError};

/// What an opening handshake agreed, on either side and over either HTTP version: everything a
/// runtime needs, besides its configuration, to build the connection.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Negotiated {
    /// The subprotocol selected (`Sec-WebSocket-Protocol`), if any.
    pub protocol: Option<String>,
    /// The permessage-deflate parameters agreed (`Sec-WebSocket-Extensions`), if any.
    pub deflate: Option<DeflateParams>,
}

impl Negotiated {
    /// A result with this subprotocol and these permessage-deflate parameters.
    pub fn new(protocol: Option<String>, deflate: Option<DeflateParams>) -> Self {
        Self { protocol, deflate }
    }
}

use std::fmt;

/// Limits on the opening handshake.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct HandshakeConfig {
    /// Largest request or response head (request line, headers, blank line), in bytes. A larger
    /// request is answered 431.
    ///
    /// Default: 16 KiB (python-websockets and nginx use 8–16 KiB).
    pub max_head_size: usize,
    /// Most header fields. More are answered 431.
    ///
    /// Default: 128.
    pub max_headers: usize,
}

impl Default for HandshakeConfig {
    fn default() -> Self {
        Self {
            max_head_size: 16 << 10,
            max_headers: 128,
        }
    }
}

/// Why an opening handshake failed.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum HandshakeError {
    /// The head is not valid HTTP/1.1.
    MalformedHttp(&'static str),
    /// The head is larger than [`HandshakeConfig::max_head_size`].
    HeadTooLarge {
        /// The configured limit.
        limit: usize,
    },
    /// More header fields than [`HandshakeConfig::max_headers`].
    TooManyHeaders {
        /// The configured limit.
        limit: usize,
    },
    /// The request method is not GET (answered 405).
    MethodNotAllowed,
    /// The HTTP version is older than 1.1.
    UnsupportedHttpVersion,
    /// A required header is missing or has the wrong value (answered 400).
    BadHeader(&'static str),
    /// `Sec-WebSocket-Version` is not 13 (answered 426 with `Sec-WebSocket-Version: 13`).
    UnsupportedVersion,
    /// The server answered with a status other than 101.
    UnexpectedStatus(u16),
    /// `Sec-WebSocket-Accept` does not match the key sent.
    BadAccept,
    /// The server selected an extension the client did not offer.
    UnexpectedExtension,
    /// The server's `Sec-WebSocket-Extensions` response is malformed or grants parameters that
    /// were not offered (RFC 7692 §5).
    InvalidExtension(ExtensionError),
    /// The server selected a subprotocol the client did not offer.
    UnexpectedProtocol,
    /// A subprotocol name that is empty, not an HTTP token, or offered twice.
    InvalidProtocol,
}

impl HandshakeError {
    /// The HTTP status a server answers this error with.
    pub const fn status(&self) -> u16 {
        match self {
            Self::MethodNotAllowed => 405,
            Self::UnsupportedVersion => 426,
            Self::HeadTooLarge { .. } | Self::TooManyHeaders { .. } => 431,
            Self::UnsupportedHttpVersion => 505,
            Self::MalformedHttp(_)
            | Self::BadHeader(_)
            | Self::UnexpectedStatus(_)
            | Self::BadAccept
            | Self::UnexpectedExtension
            | Self::InvalidExtension(_)
            | Self::UnexpectedProtocol
            | Self::InvalidProtocol => 400,
        }
    }
}

impl fmt::Display for HandshakeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::MalformedHttp(what) => write!(f, "malformed http: {what}"),
            Self::HeadTooLarge { limit } => write!(f, "handshake head larger than {limit} bytes"),
            Self::TooManyHeaders { limit } => write!(f, "more than {limit} header fields"),
            Self::MethodNotAllowed => f.write_str("method is not GET"),
            Self::UnsupportedHttpVersion => f.write_str("http version older than 1.1"),
            Self::BadHeader(what) => write!(f, "bad handshake header: {what}"),
            Self::UnsupportedVersion => f.write_str("sec-websocket-version is not 13"),
            Self::UnexpectedStatus(code) => write!(f, "server answered {code}, not 101"),
            Self::BadAccept => f.write_str("sec-websocket-accept does not match the key"),
            Self::UnexpectedExtension => f.write_str("server selected an extension not offered"),
            Self::InvalidExtension(e) => write!(f, "bad extension response: {e}"),
            Self::UnexpectedProtocol => f.write_str("server selected a subprotocol not offered"),
            Self::InvalidProtocol => f.write_str("invalid or duplicate subprotocol name"),
        }
    }
}

impl std::error::Error for HandshakeError {}

/// Whether a comma-separated header value contains `token`, compared case-insensitively
/// (RFC 7230 §7 lists; `Connection: keep-alive, Upgrade`).
pub(crate) fn header_has_token(value: &[u8], token: &str) -> bool {
    value
        .split(|&b| b == b',')
        .any(|item| item.trim_ascii().eq_ignore_ascii_case(token.as_bytes()))
}

/// Both sides' check of `Upgrade: websocket` and `Connection: Upgrade` (RFC 6455 §4.1 items 2–3
/// of the client's checks, §4.2.1 items 3–4 of the server's): each a token in a list, in any
/// case, possibly over several header lines.
pub(crate) fn check_upgrade_headers(headers: &http::HeaderMap) -> Result<(), HandshakeError> {
    let has = |name: http::header::HeaderName, token: &str| {
        headers
            .get_all(name)
            .iter()
            .any(|v| header_has_token(v.as_bytes(), token))
    };
    if !has(http::header::UPGRADE, "websocket") {
        return Err(HandshakeError::BadHeader("upgrade"));
    }
    if !has(http::header::CONNECTION, "upgrade") {
        return Err(HandshakeError::BadHeader("connection"));
    }
    Ok(())
}

/// Maps an `httparse` error to a [`HandshakeError`].
pub(crate) fn from_httparse(err: httparse::Error, config: &HandshakeConfig) -> HandshakeError {
    match err {
        httparse::Error::TooManyHeaders => HandshakeError::TooManyHeaders {
            limit: config.max_headers,
        },
        httparse::Error::HeaderName => HandshakeError::MalformedHttp("invalid header name"),
        httparse::Error::HeaderValue => HandshakeError::MalformedHttp("invalid header value"),
        httparse::Error::NewLine => HandshakeError::MalformedHttp("invalid line ending"),
        httparse::Error::Status => HandshakeError::MalformedHttp("invalid status"),
        httparse::Error::Token => HandshakeError::MalformedHttp("invalid token"),
        httparse::Error::Version => HandshakeError::MalformedHttp("invalid http version"),
    }
}

/// The subprotocols a request offers, in the client's order (`Sec-WebSocket-Protocol`, which
/// may be repeated and holds comma-separated tokens).
pub fn requested_protocols(request: &http::Request<()>) -> Vec<String> {
    request
        .headers()
        .get_all(http::header::SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|p| is_token(p.as_bytes()))
        .map(str::to_owned)
        .collect()
}

/// Copies parsed header fields into an `http` header map.
pub(crate) fn copy_headers(
    parsed: &[httparse::Header<'_>],
    into: &mut http::HeaderMap,
) -> Result<(), HandshakeError> {
    for header in parsed {
        let name = http::HeaderName::from_bytes(header.name.as_bytes())
            .map_err(|_| HandshakeError::MalformedHttp("invalid header name"))?;
        let value = http::HeaderValue::from_bytes(header.value)
            .map_err(|_| HandshakeError::MalformedHttp("invalid header value"))?;
        into.append(name, value);
    }
    Ok(())
}

/// Checks the head-size limit on a buffer whose head is still incomplete.
pub(crate) fn check_partial_size(
    buf: &[u8],
    config: &HandshakeConfig,
) -> Result<(), HandshakeError> {
    if buf.len() >= config.max_head_size {
        Err(HandshakeError::HeadTooLarge {
            limit: config.max_head_size,
        })
    } else {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_lists() {
        assert!(header_has_token(b"keep-alive, Upgrade", "upgrade"));
        assert!(header_has_token(b"UPGRADE", "upgrade"));
        assert!(!header_has_token(b"upgrades", "upgrade"));
        assert!(!header_has_token(b"", "upgrade"));
    }
}
