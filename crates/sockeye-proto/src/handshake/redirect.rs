//! Following a server's redirect of the opening handshake
//! ([RFC 6455 §4.1](https://www.rfc-editor.org/rfc/rfc6455#section-4.1): "the client MAY
//! follow redirects").
//!
//! A client that follows redirects asks [`Redirects::follow`] where a `Location` points (an
//! absolute URL it then parses itself), and [`Redirects::check`] whether it may go there with
//! the headers it has: never from `wss` to `ws`, and without credentials to another origin.

use http::header::{HeaderMap, AUTHORIZATION, COOKIE};

use std::fmt;

/// Where a client connects: the parts of a `ws://` or `wss://` URL the redirect rules need.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Endpoint<'a> {
    /// `wss` (TLS) rather than `ws`.
    pub secure: bool,
    /// The host name or address, without brackets or port.
    pub host: &'a str,
    /// The port, explicit or the scheme's default.
    pub port: u16,
    /// The `Host` header value: host, and port when it is not the scheme's default.
    pub authority: &'a str,
}

impl Endpoint<'_> {
    /// Same scheme, host (in any case) and port: RFC 6454's origin of a URL.
    pub fn same_origin(&self, other: &Endpoint<'_>) -> bool {
        self.secure == other.secure
            && self.port == other.port
            && self.host.eq_ignore_ascii_case(other.host)
    }
}

/// Why a redirect is not followed.
///
/// Not `#[non_exhaustive]`: clients map each reason to their own error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RedirectError {
    /// More redirects than the limit given to [`Redirects::new`].
    TooMany {
        /// The limit.
        limit: usize,
    },
    /// A `Location` that is a relative path (`other`, `../x`) rather than an absolute URL, a
    /// network-path reference (`//host/path`) or an absolute path (`/path`).
    BadLocation,
    /// A redirect from `wss` to `ws`, which would send the rest of the exchange in the clear.
    Downgrade,
}

impl fmt::Display for RedirectError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::TooMany { limit } => write!(f, "more than {limit} redirects"),
            Self::BadLocation => f.write_str("redirect location is a relative path"),
            Self::Downgrade => f.write_str("redirect from wss to ws"),
        }
    }
}

impl std::error::Error for RedirectError {}

/// The redirects of one connection attempt: how many were followed, and the rules for the next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Redirects {
    limit: usize,
    followed: usize,
}

impl Redirects {
    /// Follows at most `limit` redirects; `0` follows none, so a redirect is reported as a
    /// refusal (see [`enabled`](Self::enabled)).
    pub fn new(limit: usize) -> Self {
        Self { limit, followed: 0 }
    }

    /// Whether redirects are followed at all: what
    /// [`ClientHandshake::outcome`](super::ClientHandshake::outcome) is told.
    pub fn enabled(&self) -> bool {
        self.limit > 0
    }

    /// How many redirects were followed so far.
    pub fn followed(&self) -> usize {
        self.followed
    }

    /// Counts a redirect from `from` to `location` (a `Location` header value) and resolves
    /// it: an absolute URL (`ws://`, `wss://`, `http://`, `https://` kept as given), a
    /// network-path reference (`//host:port/path`, keeping the scheme) or an absolute path
    /// (keeping the scheme and authority). The caller parses the URL, then calls
    /// [`check`](Self::check).
    ///
    /// # Errors
    ///
    /// [`RedirectError::TooMany`] past the limit, [`RedirectError::BadLocation`] for a
    /// relative path.
    pub fn follow(&mut self, from: &Endpoint<'_>, location: &str) -> Result<String, RedirectError> {
        if self.followed == self.limit {
            return Err(RedirectError::TooMany { limit: self.limit });
        }
        self.followed += 1;
        let scheme = if from.secure { "wss" } else { "ws" };
        if let Some(authority_and_path) = location.strip_prefix("//") {
            return Ok(format!("{scheme}://{authority_and_path}"));
        }
        if location.starts_with('/') {
            return Ok(format!("{scheme}://{}{location}", from.authority));
        }
        if location.contains("://") {
            return Ok(location.to_owned());
        }
        Err(RedirectError::BadLocation)
    }

    /// Whether the client may go from `from` to `to`, and with which of its `headers`: a
    /// redirect to another origin (scheme, host or port) drops `Authorization` and `Cookie`, as
    /// Fetch, curl and Go do, since they were meant for the first server.
    ///
    /// # Errors
    ///
    /// [`RedirectError::Downgrade`] from `wss` to `ws`.
    pub fn check(
        from: &Endpoint<'_>,
        to: &Endpoint<'_>,
        headers: &mut HeaderMap,
    ) -> Result<(), RedirectError> {
        if from.secure && !to.secure {
            return Err(RedirectError::Downgrade);
        }
        if !from.same_origin(to) {
            headers.remove(AUTHORIZATION);
            headers.remove(COOKIE);
        }
        Ok(())
    }
}
