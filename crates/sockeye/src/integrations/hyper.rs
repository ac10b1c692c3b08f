//! Upgrading requests received by a [hyper](https://docs.rs/hyper) 1.x server to WebSocket
//! connections: the server side of the opening handshake
//! ([RFC 6455 §4.2](https://www.rfc-editor.org/rfc/rfc6455#section-4.2)) when hyper has already
//! parsed the request.
//!
//! hyper reads the request head; [`upgrade`] validates it with the same checks as
//! [`Server`](crate::Server) ([`validate_request`]), negotiates the subprotocol and
//! permessage-deflate as `Server` does and returns the `101 Switching Protocols` response for
//! the service to return, plus a [`HyperUpgrade`] future. Once hyper has written the response
//! and handed over the connection, the future yields a [`HyperWebSocket`].
//!
//! The connection must be served with upgrades enabled (`hyper::server::conn::http1::Builder`'s
//! `serve_connection(..).with_upgrades()`, or hyper-util's `auto` builder's
//! `serve_connection_with_upgrades`); `axum::serve` does this.
//!
//! hyper owns the socket and reads the request, so [`WebSocketConfig::handshake`],
//! [`handshake_timeout`](WebSocketConfig::handshake_timeout) and the TCP options
//! ([`tcp_nodelay`](WebSocketConfig::tcp_nodelay)…) do not apply here: hyper's own limits and
//! timeouts do. Every other setting applies to the upgraded connection.
//!
//! ```no_run
//! use std::convert::Infallible;
//!
//! use futures_util::StreamExt;
//! use http_body_util::Full;
//! use hyper::body::{Bytes, Incoming};
//! use hyper::{Request, Response};
//! use hyper_util::rt::TokioIo;
//! use sockeye::WebSocketConfig;
//!
//! async fn service(mut request: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
//!     if !sockeye::integrations::hyper::is_upgrade_request(&request) {
//!         return Ok(Response::new(Full::new(Bytes::from("not a websocket request\n"))));
//!     }
//!     match sockeye::integrations::hyper::upgrade(&mut request, WebSocketConfig::default()) {
//!         Ok((response, websocket)) => {
//!             tokio::spawn(async move {
//!                 let Ok(mut ws) = websocket.await else { return };
//!                 while let Some(Ok(message)) = ws.next().await {
//!                     if message.is_data() && ws.send(message).await.is_err() {
//!                         break;
//!                     }
//!                 }
//!             });
//!             Ok(response)
//!         }
//!         // 400, 405, 426 with `Sec-WebSocket-Version: 13`...
//!         Err(refused) => Ok(refused.to_response()),
//!     }
//! }
//!
//! # async fn run() -> std::io::Result<()> {
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:3000").await?;
//! loop {
//!     let (tcp, _) = listener.accept().await?;
//!     tokio::spawn(
//!         hyper::server::conn::http1::Builder::new()
//!             .serve_connection(TokioIo::new(tcp), hyper::service::service_fn(service))
//!             .with_upgrades(),
//!     );
//! }
//! # }
//! ```

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use bytes::Bytes;
use http::{HeaderValue, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::upgrade::{OnUpgrade, Upgraded};
use hyper_util::rt::TokioIo;
use sockeye_proto::handshake::{
    reject_response, requested_protocols, validate_request, HandshakeError, Negotiated,
};
use sockeye_proto::Role;

use crate::config::WebSocketConfig;
use crate::error::Error;
use crate::server::Hooks;
use crate::stream::WebSocketStream;

/// A WebSocket connection upgraded from a hyper server's HTTP/1.1 connection.
pub type HyperWebSocket = WebSocketStream<TokioIo<Upgraded>>;

/// Whether `request` asks for a WebSocket upgrade (`Upgrade: websocket` and
/// `Connection: Upgrade`), to route it to [`upgrade`] rather than to ordinary HTTP handling.
///
/// It does not check the rest of the handshake: [`upgrade`] does.
pub fn is_upgrade_request<B>(request: &Request<B>) -> bool {
    sockeye_proto::handshake::is_upgrade_request(request.headers())
}

/// Validates `request` as a WebSocket upgrade and accepts it with `config`: returns the
/// `101 Switching Protocols` response for the service to return and a future resolving to the
/// connection once hyper has sent the response.
///
/// The subprotocol is the first one the client offered that [`WebSocketConfig::protocols`]
/// lists; permessage-deflate is accepted when [`WebSocketConfig::deflate`] is set and the client
/// offered acceptable parameters. The request's upgrade handle is taken out of its extensions,
/// so a second call on the same request fails with [`UpgradeError::NotUpgradable`].
///
/// # Errors
///
/// [`UpgradeError::Handshake`] for a request RFC 6455 does not allow (answer it with
/// [`UpgradeError::to_response`]: 400, 405, 426 with `Sec-WebSocket-Version: 13`, 505);
/// [`UpgradeError::NotUpgradable`] when the connection cannot be upgraded.
pub fn upgrade<B>(
    request: &mut Request<B>,
    config: WebSocketConfig,
) -> Result<(Response<Full<Bytes>>, HyperUpgrade), UpgradeError> {
    Ok(UpgradeRequest::new(request)?.accept(config))
}

/// A validated upgrade request whose answer is not decided yet: the two halves of [`upgrade`],
/// for code that validates first and configures later (the axum extractor).
#[derive(Debug)]
pub struct UpgradeRequest {
    /// Method, target, version and headers of the request.
    head: Request<()>,
    on_upgrade: OnUpgrade,
}

impl UpgradeRequest {
    /// Validates `request` and takes its upgrade handle.
    ///
    /// # Errors
    ///
    /// As [`upgrade`]. On error the request is left unchanged.
    pub fn new<B>(request: &mut Request<B>) -> Result<Self, UpgradeError> {
        let head = head_of(
            request.method(),
            request.uri(),
            request.version(),
            request.headers(),
        );
        Self::validated(head, request.extensions_mut())
    }

    /// Like [`new`](Self::new), on the parts of a request (what an axum extractor sees).
    ///
    /// # Errors
    ///
    /// As [`upgrade`]. On error the parts are left unchanged.
    pub fn from_parts(parts: &mut http::request::Parts) -> Result<Self, UpgradeError> {
        let head = head_of(&parts.method, &parts.uri, parts.version, &parts.headers);
        Self::validated(head, &mut parts.extensions)
    }

    fn validated(
        head: Request<()>,
        extensions: &mut http::Extensions,
    ) -> Result<Self, UpgradeError> {
        validate_request(&head).map_err(UpgradeError::Handshake)?;
        // hyper puts the handle in the extensions of requests on connections served with
        // upgrades; without it the 101 would be sent and the connection then dropped.
        let on_upgrade = extensions
            .remove::<OnUpgrade>()
            .ok_or(UpgradeError::NotUpgradable)?;
        Ok(Self { head, on_upgrade })
    }

    /// The request without its body: method, path and query, version, headers.
    pub fn request(&self) -> &Request<()> {
        &self.head
    }

    /// The subprotocols the client offered, in its order.
    pub fn protocols(&self) -> Vec<String> {
        requested_protocols(&self.head)
    }

    /// Accepts the upgrade with `config`, as [`upgrade`] does.
    pub fn accept(self, config: WebSocketConfig) -> (Response<Full<Bytes>>, HyperUpgrade) {
        // The first subprotocol in the client's order that the configuration lists, as
        // `Server` picks it without a handshake callback.
        let policy = Hooks::default().policy(&config);
        let (response, negotiated) =
            policy.accept_response(&self.head, policy.default_accept(&self.head));
        tracing::debug!(path = %self.head.uri(), protocol = ?negotiated.protocol, "websocket upgrade accepted");
        let future = HyperUpgrade {
            on_upgrade: self.on_upgrade,
            setup: Some(Setup { config, negotiated }),
        };
        (response.map(|()| Full::default()), future)
    }
}

/// A copy of a request's head, for the proto crate's handshake functions.
fn head_of(
    method: &http::Method,
    uri: &http::Uri,
    version: http::Version,
    headers: &http::HeaderMap,
) -> Request<()> {
    let mut head = Request::new(());
    *head.method_mut() = method.clone();
    *head.uri_mut() = uri.clone();
    *head.version_mut() = version;
    *head.headers_mut() = headers.clone();
    head
}

/// Resolves to the WebSocket connection once hyper has sent the `101` response and released
/// the connection.
///
/// # Errors
///
/// [`Error::Io`] wrapping hyper's error when the upgrade fails (the client went away before
/// the response was sent, the service answered something other than the `101`, or the
/// connection is not served with upgrades).
///
/// # Cancel safety
///
/// Dropping it drops the connection once hyper hands it over.
#[derive(Debug)]
#[must_use = "the connection is dropped unless the future is awaited"]
pub struct HyperUpgrade {
    on_upgrade: OnUpgrade,
    /// What the handshake agreed; taken when the future completes.
    setup: Option<Setup>,
}

#[derive(Debug)]
struct Setup {
    config: WebSocketConfig,
    negotiated: Negotiated,
}

impl HyperUpgrade {
    /// The subprotocol the `101` response selects.
    pub fn protocol(&self) -> Option<&str> {
        self.setup
            .as_ref()
            .and_then(|s| s.negotiated.protocol.as_deref())
    }
}

impl Future for HyperUpgrade {
    type Output = Result<HyperWebSocket, Error>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let finished = || Error::Io(io::Error::other("upgrade future polled after completion"));
        if self.setup.is_none() {
            return Poll::Ready(Err(finished()));
        }
        let upgraded = ready!(Pin::new(&mut self.on_upgrade).poll(cx));
        let Some(setup) = self.setup.take() else {
            return Poll::Ready(Err(finished()));
        };
        let upgraded = upgraded.map_err(|e| {
            tracing::debug!(error = %e, "websocket upgrade failed");
            Error::Io(io::Error::other(e))
        })?;
        // hyper's `Upgraded` replays any bytes it read past the request head, so nothing is
        // left over here.
        Poll::Ready(Ok(WebSocketStream::from_negotiated(
            TokioIo::new(upgraded),
            Role::Server,
            setup.config,
            setup.negotiated,
            &[],
        )))
    }
}

/// Why a request cannot be upgraded. [`to_response`](Self::to_response) is the answer to send.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum UpgradeError {
    /// The request is not a valid WebSocket upgrade
    /// ([RFC 6455 §4.2.1](https://www.rfc-editor.org/rfc/rfc6455#section-4.2.1)).
    Handshake(HandshakeError),
    /// The request carries no hyper upgrade handle: the connection is not served with upgrades
    /// enabled, or the handle was already taken. Answered 500: the server is at fault.
    NotUpgradable,
}

impl UpgradeError {
    /// The HTTP status this error is answered with.
    pub fn status(&self) -> StatusCode {
        match self {
            Self::Handshake(err) => {
                StatusCode::from_u16(err.status()).unwrap_or(StatusCode::BAD_REQUEST)
            }
            Self::NotUpgradable => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The answer RFC 6455 asks for, with a short plain-text body: 400 for a malformed
    /// upgrade, 405 (with `Allow: GET`) for a method other than GET, 426 with
    /// `Sec-WebSocket-Version: 13` for another protocol version
    /// ([§4.2.2](https://www.rfc-editor.org/rfc/rfc6455#section-4.2.2)), 505 for an HTTP
    /// version other than 1.1, 500 for [`NotUpgradable`](Self::NotUpgradable).
    pub fn to_response(&self) -> Response<Full<Bytes>> {
        match self {
            Self::Handshake(err) => {
                let (head, body) = reject_response(err);
                head.map(|()| Full::new(Bytes::from(body)))
            }
            Self::NotUpgradable => {
                let body = format!("{self}\n");
                let mut response = Response::new(Full::new(Bytes::from(body)));
                *response.status_mut() = self.status();
                response.headers_mut().insert(
                    http::header::CONTENT_TYPE,
                    HeaderValue::from_static("text/plain; charset=utf-8"),
                );
                response
            }
        }
    }
}

impl std::fmt::Display for UpgradeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Handshake(_) => f.write_str("invalid websocket upgrade request"),
            Self::NotUpgradable => f.write_str("connection cannot be upgraded"),
        }
    }
}

impl std::error::Error for UpgradeError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Handshake(err) => Some(err),
            Self::NotUpgradable => None,
        }
    }
}

impl From<UpgradeError> for Response<Full<Bytes>> {
    fn from(err: UpgradeError) -> Self {
        err.to_response()
    }
}

impl From<UpgradeError> for Error {
    fn from(err: UpgradeError) -> Self {
        match err {
            UpgradeError::Handshake(err) => Self::Handshake(Box::new(err)),
            UpgradeError::NotUpgradable => Self::Io(io::Error::other(err)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(extra: &[(&str, &str)]) -> Request<()> {
        let mut builder = Request::get("/chat")
            .header("host", "localhost")
            .header("upgrade", "websocket")
            .header("connection", "keep-alive, Upgrade")
            .header("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ==")
            .header("sec-websocket-version", "13");
        for (name, value) in extra {
            builder = builder.header(*name, *value);
        }
        builder.body(()).unwrap()
    }

    #[test]
    fn a_valid_request_without_hyper_handle_is_not_upgradable() {
        let mut req = request(&[]);
        assert!(is_upgrade_request(&req));
        let err = upgrade(&mut req, WebSocketConfig::default()).unwrap_err();
        assert_eq!(err, UpgradeError::NotUpgradable);
        assert_eq!(err.to_response().status(), 500);
    }

    #[test]
    fn invalid_requests_get_the_rfc_answer() {
        let mut old = request(&[]);
        old.headers_mut()
            .insert("sec-websocket-version", HeaderValue::from_static("8"));
        let response = upgrade(&mut old, WebSocketConfig::default())
            .unwrap_err()
            .to_response();
        assert_eq!(response.status(), 426);
        assert_eq!(response.headers()["sec-websocket-version"], "13");

        let mut keyless = request(&[]);
        keyless.headers_mut().remove("sec-websocket-key");
        let err = upgrade(&mut keyless, WebSocketConfig::default()).unwrap_err();
        assert_eq!(
            err,
            UpgradeError::Handshake(HandshakeError::BadHeader("sec-websocket-key"))
        );
        assert_eq!(Response::from(err).status(), 400);

        let mut post = request(&[]);
        *post.method_mut() = http::Method::POST;
        let response = upgrade(&mut post, WebSocketConfig::default())
            .unwrap_err()
            .to_response();
        assert_eq!(response.status(), 405);
        assert_eq!(response.headers()["allow"], "GET");

        let plain = Request::get("/").header("host", "x").body(()).unwrap();
        assert!(!is_upgrade_request(&plain));
    }

    #[test]
    fn the_error_converts_to_the_crate_error() {
        let err = Error::from(UpgradeError::Handshake(HandshakeError::UnsupportedVersion));
        assert!(matches!(err, Error::Handshake(e) if *e == HandshakeError::UnsupportedVersion));
    }
}
