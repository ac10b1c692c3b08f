//! The server's opening handshake over tokio for HTTP/1.1: it feeds what the client sends to
//! the core's [`ServerHandshake`] (the Origin policy, the handshake callback, the subprotocol
//! choice, refusals and plain-HTTP answers all live there) and writes its answer.

use std::borrow::Cow;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http::Request;
pub use sockeye_proto::handshake::{
    Accept, HandshakeCallback, HandshakeDecision, HandshakeRequest, HttpCallback, OriginCallback,
    OriginPolicy,
};
use sockeye_proto::handshake::{Incoming, Negotiated, ServerHandshake, ServerPolicy};
use sockeye_proto::Role;
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _};

use crate::config::WebSocketConfig;
use crate::error::Error;
use crate::stream::WebSocketStream;
use crate::transport::Rewind;

/// Accepts a WebSocket connection on `io` with default settings.
///
/// # Errors
///
/// As [`accept_with_config`].
pub async fn accept<S: AsyncRead + AsyncWrite + Unpin>(io: S) -> Result<WebSocketStream<S>, Error> {
    accept_with_config(io, WebSocketConfig::default())
        .await
        .map(|(ws, _)| ws)
}

/// Reads the upgrade request from `io`, answers it and returns the connection with the request
/// (method, path and query, headers).
///
/// An invalid request is answered with the RFC's status (400, 405, 426 with
/// `Sec-WebSocket-Version: 13`, 431) and the connection is shut down. The subprotocol is the
/// first one the client offered that [`WebSocketConfig::protocols`] lists.
///
/// # Errors
///
/// [`Error::Handshake`] for an invalid request, [`Error::HandshakeTimeout`] after
/// [`WebSocketConfig::handshake_timeout`], [`Error::Io`].
pub async fn accept_with_config<S: AsyncRead + AsyncWrite + Unpin>(
    io: S,
    config: WebSocketConfig,
) -> Result<(WebSocketStream<S>, Request<()>), Error> {
    accept_hooked(io, Arc::new(config), &Hooks::default(), None).await
}

/// The server's hooks into the handshake.
#[derive(Clone, Default)]
pub(crate) struct Hooks {
    pub(crate) on_handshake: Option<HandshakeCallback>,
    pub(crate) origin: OriginPolicy,
    pub(crate) on_http: Option<HttpCallback>,
}

impl std::fmt::Debug for Hooks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hooks")
            .field("on_handshake", &self.on_handshake.is_some())
            .field("origin", &self.origin)
            .field("on_http", &self.on_http.is_some())
            .finish()
    }
}

impl Hooks {
    /// The handshake policy of a connection: these hooks with `config`'s limits, subprotocols
    /// and permessage-deflate.
    pub(crate) fn policy(&self, config: &WebSocketConfig) -> ServerPolicy {
        let mut policy = ServerPolicy::default();
        policy.limits = config.handshake.clone();
        policy.origin = self.origin.clone();
        policy.protocols = config.protocols.clone();
        policy.deflate = config.deflate.clone();
        policy.on_handshake = self.on_handshake.clone();
        policy.on_http = self.on_http.clone();
        policy
    }
}

/// The HTTP/1.1 handshake over tokio: feeds what the client sends to a [`ServerHandshake`]
/// and writes its answer.
pub(super) async fn accept_hooked<S: AsyncRead + AsyncWrite + Unpin>(
    io: S,
    config: Arc<WebSocketConfig>,
    hooks: &Hooks,
    peer: Option<SocketAddr>,
) -> Result<(WebSocketStream<S>, Request<()>), Error> {
    accept_rewound(Rewind::plain(io), config, hooks, peer).await
}

/// [`accept_hooked`] on a transport whose first bytes were already read (the server looked
/// for the HTTP/2 preface): the request is read from `io`, which replays them first.
pub(super) async fn accept_rewound<S: AsyncRead + AsyncWrite + Unpin>(
    mut io: Rewind<S>,
    config: Arc<WebSocketConfig>,
    hooks: &Hooks,
    peer: Option<SocketAddr>,
) -> Result<(WebSocketStream<S>, Request<()>), Error> {
    let timeout = config.handshake_timeout;
    let mut handshake = ServerHandshake::new(hooks.policy(&config), peer);
    let incoming = tokio::time::timeout(timeout, read_request(&mut io, &mut handshake))
        .await
        .map_err(|_| Error::HandshakeTimeout)??;
    match upgrade_or_end(incoming, peer) {
        Ok(Upgrade {
            request,
            response,
            negotiated,
        }) => {
            io.write_all(&response).await?;
            io.flush().await?;
            let (io, unread) = io.into_parts();
            // The handshake read everything replayed (its first read has room for more than
            // the few bytes looked at); should some be left, they follow its leftover.
            let leftover = if unread.is_empty() {
                Cow::Borrowed(handshake.leftover())
            } else {
                Cow::Owned([handshake.leftover(), &unread].concat())
            };
            let ws =
                WebSocketStream::from_negotiated(io, Role::Server, config, negotiated, &leftover);
            Ok((ws, request))
        }
        Err(Ending { bytes, error }) => {
            send_refusal(&mut io, &bytes, timeout).await;
            Err(error)
        }
    }
}

/// An accepted upgrade, for the runtime to finish: write `response`, then build the connection.
pub(crate) struct Upgrade {
    pub(crate) request: Request<()>,
    /// The `101` answer.
    pub(crate) response: Vec<u8>,
    pub(crate) negotiated: Negotiated,
}

/// A handshake that ends the connection: write `bytes`, close, report `error`.
pub(crate) struct Ending {
    pub(crate) bytes: Vec<u8>,
    pub(crate) error: Error,
}

/// A handshake's answer, logged, for the runtimes that drive [`ServerHandshake`] (async and
/// blocking): an upgrade to finish, or an answer after which the connection closes.
pub(crate) fn upgrade_or_end(
    incoming: Incoming,
    peer: Option<SocketAddr>,
) -> Result<Upgrade, Ending> {
    match incoming {
        Incoming::Upgrade {
            request,
            response,
            negotiated,
        } => {
            tracing::debug!(path = %request.uri(), protocol = ?negotiated.protocol, "websocket connection accepted");
            Ok(Upgrade {
                request,
                response,
                negotiated,
            })
        }
        Incoming::Http {
            request,
            answer,
            bytes,
        } => {
            tracing::info!(
                peer = %peer.map_or_else(|| "-".to_owned(), |p| p.to_string()),
                method = %request.method(),
                path = %request.uri(),
                status = answer.status().as_u16(),
                "http request"
            );
            Err(Ending {
                bytes,
                error: Error::Http(Box::new(answer)),
            })
        }
        Incoming::Refused { answer, bytes, .. } => {
            tracing::debug!(status = answer.status().as_u16(), "handshake refused");
            Err(Ending {
                bytes,
                error: Error::Http(Box::new(answer)),
            })
        }
        Incoming::Invalid { error, bytes } => {
            tracing::debug!(%error, status = error.status(), "handshake rejected");
            Err(Ending {
                bytes,
                error: Error::Handshake(Box::new(error)),
            })
        }
    }
}

/// Writes an answer that ends the connection, then shuts it down; best effort (the peer may
/// already be gone), within `timeout`.
async fn send_refusal<S: AsyncWrite + Unpin>(io: &mut S, bytes: &[u8], timeout: Duration) {
    let _ = tokio::time::timeout(timeout, async {
        io.write_all(bytes).await?;
        io.shutdown().await
    })
    .await;
}

/// Reads until the handshake can answer.
async fn read_request<S: AsyncRead + Unpin>(
    io: &mut S,
    handshake: &mut ServerHandshake,
) -> Result<Incoming, Error> {
    let mut chunk = Vec::with_capacity(1024);
    loop {
        chunk.clear();
        let n = io.read_buf(&mut chunk).await?;
        if let Some(incoming) = handshake.handle_bytes(&chunk) {
            return Ok(incoming);
        }
        if n == 0 {
            // The peer closed before the head ended: nobody to answer.
            return Err(Error::Io(io::ErrorKind::UnexpectedEof.into()));
        }
    }
}

/// The answer to a connection (or an HTTP/2 stream) over [`Server::max_connections`](super::Server::max_connections):
/// `503 Service Unavailable`, `Retry-After: 1`, no body. HTTP/1.1 sends it as the core
/// serializes refusals (`Content-Length: 0`, `Connection: close`), HTTP/2 as a response.
pub(crate) fn overloaded() -> http::Response<Vec<u8>> {
    let mut response = http::Response::new(Vec::new());
    *response.status_mut() = http::StatusCode::SERVICE_UNAVAILABLE;
    response.headers_mut().insert(
        http::header::RETRY_AFTER,
        http::HeaderValue::from_static("1"),
    );
    response
}
