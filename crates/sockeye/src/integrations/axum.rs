//! An [axum](https://docs.rs/axum) 0.8 extractor that upgrades a request to a sockeye WebSocket
//! ([RFC 6455 §4.2](https://www.rfc-editor.org/rfc/rfc6455#section-4.2)), over
//! [`crate::integrations::hyper`].
//!
//! ```no_run
//! use axum::response::Response;
//! use axum::routing::get;
//! use axum::Router;
//! use futures_util::StreamExt;
//! use sockeye::integrations::axum::{AxumWebSocket, WebSocketUpgrade};
//!
//! async fn ws_handler(upgrade: WebSocketUpgrade) -> Response {
//!     upgrade.protocols(["chat"]).on_upgrade(echo)
//! }
//!
//! async fn echo(mut ws: AxumWebSocket) {
//!     while let Some(Ok(message)) = ws.next().await {
//!         if message.is_data() && ws.send(message).await.is_err() {
//!             break;
//!         }
//!     }
//! }
//!
//! # async fn run() -> std::io::Result<()> {
//! let app = Router::new().route("/ws", get(ws_handler));
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:3000").await?;
//! axum::serve(listener, app).await
//! # }
//! ```

use std::future::Future;

use ::axum::body::Body;
use ::axum::extract::{FromRequestParts, OptionalFromRequestParts};
use ::axum::response::{IntoResponse, Response};
use http::request::Parts;
use http::Request;

use crate::config::WebSocketConfig;
use crate::integrations::hyper::{HyperWebSocket, UpgradeError, UpgradeRequest};

/// The connection [`WebSocketUpgrade::on_upgrade`] hands to its callback.
pub type AxumWebSocket = HyperWebSocket;

/// The rejection of [`WebSocketUpgrade`]: the request is not a valid WebSocket upgrade (400,
/// 405, 426 with `Sec-WebSocket-Version: 13`, 505) or the connection cannot be upgraded (500).
/// Its [`IntoResponse`] is [`UpgradeError::to_response`].
pub type WebSocketUpgradeRejection = UpgradeError;

/// Extracts a WebSocket upgrade request; the handler answers it with
/// [`on_upgrade`](Self::on_upgrade).
///
/// Extraction validates the request as [`Server`](crate::Server) does (RFC 6455 §4.2.1) and
/// rejects an invalid one with [`WebSocketUpgradeRejection`], whose response carries the RFC's
/// status. As `Option<WebSocketUpgrade>` it yields `None` for a request that does not ask for
/// an upgrade (no `Upgrade: websocket` with `Connection: Upgrade`), so one route can serve
/// both; a request that asks for one but is invalid is still rejected.
///
/// ```no_run
/// use axum::response::Response;
/// use futures_util::StreamExt;
/// use sockeye::integrations::axum::WebSocketUpgrade;
/// use sockeye::{DeflateConfig, Message, WebSocketConfig};
///
/// async fn handler(upgrade: WebSocketUpgrade) -> Response {
///     let config = WebSocketConfig::default().deflate(Some(DeflateConfig::default()));
///     upgrade
///         .config(config)
///         .protocols(["v2.chat", "v1.chat"])
///         .on_upgrade(|mut ws| async move {
///             while let Some(Ok(Message::Text(text))) = ws.next().await {
///                 println!("{text} (over {:?})", ws.protocol());
///             }
///         })
/// }
/// ```
#[derive(Debug)]
pub struct WebSocketUpgrade {
    request: UpgradeRequest,
    config: WebSocketConfig,
}

impl WebSocketUpgrade {
    /// Uses `config` for the connection: limits, timeouts, keepalive, permessage-deflate
    /// ([`WebSocketConfig::deflate`]) and subprotocols. Replaces the whole configuration, so call
    /// it before [`protocols`](Self::protocols).
    #[must_use]
    pub fn config(mut self, config: WebSocketConfig) -> Self {
        self.config = config;
        self
    }

    /// The subprotocols this server speaks: the first one the client offered (in the client's
    /// order) that is listed here is selected. Sets [`WebSocketConfig::protocols`].
    #[must_use]
    pub fn protocols<I, P>(mut self, protocols: I) -> Self
    where
        I: IntoIterator<Item = P>,
        P: Into<String>,
    {
        self.config = self.config.protocols(protocols);
        self
    }

    /// The request without its body: path and query, headers (`Origin`, cookies…).
    pub fn request(&self) -> &Request<()> {
        self.request.request()
    }

    /// The subprotocols the client offered, in its order.
    pub fn requested_protocols(&self) -> Vec<String> {
        self.request.protocols()
    }

    /// Accepts the upgrade: returns the `101 Switching Protocols` response for the handler to
    /// return, and spawns a tokio task that waits for hyper to hand over the connection and then
    /// runs `callback` with it.
    ///
    /// Like [`Server::serve`](crate::Server::serve) and the [`WebSocket`](crate::WebSocket)
    /// constructors, it spawns a task (so it must run inside a tokio runtime, as axum handlers
    /// do): axum handlers must return the response before the connection exists. If
    /// the upgrade fails (the client left before the response was sent), the failure is logged
    /// at `debug` and `callback` is not called.
    pub fn on_upgrade<F, Fut>(self, callback: F) -> Response
    where
        F: FnOnce(AxumWebSocket) -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let (response, upgrade) = self.request.accept(self.config);
        tokio::spawn(async move {
            match upgrade.await {
                Ok(ws) => callback(ws).await,
                Err(e) => tracing::debug!(error = %e, "websocket upgrade failed"),
            }
        });
        response.map(Body::new)
    }
}

impl<S: Send + Sync> FromRequestParts<S> for WebSocketUpgrade {
    type Rejection = WebSocketUpgradeRejection;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        let request = UpgradeRequest::from_parts(parts)?;
        Ok(Self {
            request,
            config: WebSocketConfig::default(),
        })
    }
}

impl<S: Send + Sync> OptionalFromRequestParts<S> for WebSocketUpgrade {
    type Rejection = WebSocketUpgradeRejection;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &S,
    ) -> Result<Option<Self>, Self::Rejection> {
        if !sockeye_proto::handshake::is_upgrade_request(&parts.headers) {
            return Ok(None);
        }
        <Self as FromRequestParts<S>>::from_request_parts(parts, state)
            .await
            .map(Some)
    }
}

impl IntoResponse for UpgradeError {
    fn into_response(self) -> Response {
        tracing::debug!(error = %self, status = %self.status(), "websocket upgrade refused");
        self.to_response().map(Body::new)
    }
}
