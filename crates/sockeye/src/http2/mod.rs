//! WebSockets over HTTP/2 ([RFC 8441](https://www.rfc-editor.org/rfc/rfc8441), cargo feature
//! `http2`): one TCP (+ TLS) connection carries many WebSockets, each on its own stream opened
//! with an extended CONNECT (`:method CONNECT`, `:protocol websocket`).
//!
//! - **Server**: [`Server::http2(true)`](crate::Server::http2) serves HTTP/2 next to
//!   HTTP/1.1. On a TLS listener it offers ALPN `h2` and `http/1.1` and follows the client's
//!   choice; on a cleartext listener it recognises the HTTP/2 connection preface (h2c with
//!   prior knowledge) and serves anything else as HTTP/1.1. HTTP/2 connections run on hyper's
//!   HTTP/2 server with `SETTINGS_ENABLE_CONNECT_PROTOCOL`; each WebSocket stream goes through
//!   the same Origin policy, handshake callback, subprotocol and permessage-deflate
//!   negotiation, connection limit and handler as an HTTP/1.1 upgrade, and the handler receives
//!   the same [`ServerStream`] (its transport is
//!   [`Transport::Http2`]). The request it receives says `HTTP/2.0` in
//!   [`version()`](http::Request::version) and its URI is absolute (`https://host/path`, from
//!   `:scheme`, `:authority` and `:path`); there is no `Host` header.
//! - **Client**: [`ClientBuilder::http2(true)`](crate::ClientBuilder::http2) opens one HTTP/2
//!   connection per WebSocket; [`H2Connection`] opens one connection and then any number of
//!   WebSockets over it. Both fail with [`Error::Http2NotNegotiated`] when a TLS server does
//!   not pick `h2`, and [`Error::ExtendedConnectDisabled`] when the server does not send
//!   `SETTINGS_ENABLE_CONNECT_PROTOCOL`.
//!
//! Closing a WebSocket ends only its stream (END_STREAM once the close handshake is done;
//! RST_STREAM when it is dropped); the connection and its other streams go on. HTTP/2 flow
//! control applies per stream and per connection.

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderValue, Request, Response, StatusCode};
use http_body_util::{BodyExt as _, Empty, Full, Limited};
use hyper::body::{Body as _, Incoming};
use hyper::ext::Protocol;
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::{TokioExecutor, TokioIo};
use sockeye_proto::handshake::{
    reject_connect_response, validate_connect_request, ClientRequest, ConnectHandshake,
    HandshakeError, Negotiated, ServerPolicy, MAX_REFUSAL_BODY, WEBSOCKET_PROTOCOL,
};
use sockeye_proto::Role;
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot, OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::client::handshake::upgrade_request;
use crate::client::url::WsUrl;
use crate::config::WebSocketConfig;
use crate::error::Error;
use crate::server::handshake::Hooks;
use crate::stream::WebSocketStream;
use crate::stream::{ClientStream, ServerStream};
use crate::transport::{H2Stream, Transport};

/// Most WebSocket streams open at once on one HTTP/2 connection a [`Server`](crate::Server)
/// serves (`SETTINGS_MAX_CONCURRENT_STREAMS`). Every stream also counts against
/// [`Server::max_connections`](crate::Server::max_connections).
pub const MAX_CONCURRENT_STREAMS: u32 = 256;

/// The least HTTP/2 send buffer a stream of a [`Server`](crate::Server) gets, whatever
/// [`WebSocketConfig::write_buffer_high_water`] says: one DATA frame of the default size.
const MIN_SEND_BUF: usize = 16 << 10;

/// The HTTP/2 connection preface a client with prior knowledge sends first (RFC 9113 §3.4).
pub(crate) const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

// ---------------------------------------------------------------------------------------------
// Server

/// What a [`Server`](crate::Server) shares with each HTTP/2 connection it serves.
pub(crate) struct H2Serve<H> {
    pub(crate) config: WebSocketConfig,
    pub(crate) hooks: Hooks,
    pub(crate) handler: Arc<H>,
    pub(crate) shutdown: CancellationToken,
    pub(crate) limit: Arc<Semaphore>,
}

/// A WebSocket stream whose `200` is being sent: the rest of its setup, run on the
/// connection's task set.
struct Opening {
    on_upgrade: OnUpgrade,
    request: Request<()>,
    negotiated: Negotiated,
    _permit: OwnedSemaphorePermit,
}

/// What the per-request service needs; shared by every stream of one connection.
struct Route {
    /// The handshake policy: the server's hooks with its configuration.
    policy: ServerPolicy,
    limit: Arc<Semaphore>,
    peer: SocketAddr,
    opened: mpsc::UnboundedSender<Opening>,
}

/// Whether the first bytes of a cleartext connection are (so far) the HTTP/2 preface:
/// `Some(true)` when complete, `Some(false)` when they are not, `None` when more bytes are
/// needed to tell.
pub(crate) fn preface_state(start: &[u8]) -> Option<bool> {
    let n = start.len().min(PREFACE.len());
    if start[..n] != PREFACE[..n] {
        Some(false)
    } else if n == PREFACE.len() {
        Some(true)
    } else {
        None
    }
}

/// Reads the first bytes of a cleartext connection until they show whether it starts with the
/// HTTP/2 preface (RFC 9113 §3.4): at most the preface's 24 bytes, fewer as soon as one differs
/// or at end of stream (then `false`: the HTTP/1.1 handshake, fed the same bytes, reports it).
/// Returns the bytes read, for the transport to replay, and whether they are the preface.
///
/// # Errors
///
/// [`Error::HandshakeTimeout`] when a client sends part of the preface and then nothing until
/// `timeout`; [`Error::Io`].
pub(crate) async fn read_preface(
    tcp: &mut TcpStream,
    timeout: Duration,
) -> Result<(Vec<u8>, bool), Error> {
    let mut start = [0; PREFACE.len()];
    let mut filled = 0;
    let read = async {
        loop {
            // Only as much as the rest of the preface: whatever follows stays in the socket.
            let n = tcp.read(&mut start[filled..]).await?;
            filled += n;
            if n == 0 {
                return Ok::<_, io::Error>(false);
            }
            if let Some(found) = preface_state(&start[..filled]) {
                return Ok(found);
            }
        }
    };
    let found = tokio::time::timeout(timeout, read)
        .await
        .map_err(|_| Error::HandshakeTimeout)??;
    Ok((start[..filled].to_vec(), found))
}

/// Serves one HTTP/2 connection until the peer closes it and its WebSocket handlers are done,
/// or the server shuts down: GOAWAY, then each WebSocket closes with 1001.
pub(crate) async fn serve_connection<IO, H, F>(
    io: IO,
    peer: SocketAddr,
    tls: bool,
    serve: H2Serve<H>,
) where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    H: Fn(ServerStream, Request<()>) -> F + Send + Sync + 'static,
    F: Future<Output = ()> + Send + 'static,
{
    let H2Serve {
        config,
        hooks,
        handler,
        shutdown,
        limit,
    } = serve;
    let (opened, mut openings) = mpsc::unbounded_channel();
    let route = Arc::new(Route {
        policy: hooks.policy(&config),
        limit,
        peer,
        opened,
    });
    let service = hyper::service::service_fn(move |request: Request<Incoming>| {
        let route = route.clone();
        async move { Ok::<_, Infallible>(answer(request, &route)) }
    });
    let mut builder = hyper::server::conn::http2::Builder::new(TokioExecutor::new());
    let max_header_list = u32::try_from(config.handshake.max_head_size).unwrap_or(u32::MAX);
    builder
        .enable_connect_protocol()
        .max_concurrent_streams(MAX_CONCURRENT_STREAMS)
        .max_header_list_size(max_header_list)
        // What each stream may queue for a peer that does not read: as much as a WebSocket
        // buffers before `send` waits (hyper's default, 400 KiB, would let one connection
        // hold 100 MiB over its 256 streams). Never 0, where no write could ever proceed.
        .max_send_buf_size(config.write_buffer_high_water.max(MIN_SEND_BUF));
    let mut connection = Some(Box::pin(
        builder.serve_connection(TokioIo::new(io), service),
    ));
    let mut streams = JoinSet::new();
    let mut shutting_down = false;
    // A connection without WebSockets (never any, or all closed) is closed (GOAWAY) after the
    // handshake timeout, as an HTTP/1.1 connection is after its one request.
    let idle_limit = config.handshake_timeout;
    let idle = tokio::time::sleep(idle_limit);
    tokio::pin!(idle);
    // Whether the idle GOAWAY has been sent. A graceful shutdown waits for the peer to answer
    // a PING (and for its streams to end): a peer that never answers (or never sends its
    // preface and SETTINGS) would keep the connection, and its `max_connections` slot, for
    // ever. So it gets one more handshake timeout, then the connection is dropped.
    let mut idle_goaway = false;
    loop {
        tokio::select! {
            () = &mut idle, if streams.is_empty()
                && connection.is_some()
                && (!shutting_down || idle_goaway) => {
                if idle_goaway {
                    tracing::debug!(%peer, "http/2 connection still open after goaway: dropped");
                    connection = None;
                } else {
                    tracing::debug!(%peer, "idle http/2 connection: goaway");
                    shutting_down = true;
                    idle_goaway = true;
                    if let Some(connection) = connection.as_mut() {
                        connection.as_mut().graceful_shutdown();
                    }
                    idle.as_mut().reset(tokio::time::Instant::now() + idle_limit);
                }
            }
            done = async { connection.as_mut().expect("guarded").await }, if connection.is_some() => {
                if let Err(e) = done {
                    tracing::debug!(%peer, error = %e, "http/2 connection ended");
                }
                // The service (and its sender) is dropped with the connection.
                connection = None;
            }
            Some(opening) = openings.recv() => {
                let config = config.clone();
                let handler = handler.clone();
                let shutdown = shutdown.clone();
                streams.spawn(run_stream(opening, peer, tls, config, handler, shutdown));
            }
            Some(_) = streams.join_next(), if !streams.is_empty() => {
                if streams.is_empty() {
                    idle.as_mut().reset(tokio::time::Instant::now() + idle_limit);
                }
            }
            () = shutdown.cancelled(), if !shutting_down => {
                shutting_down = true;
                if let Some(connection) = connection.as_mut() {
                    connection.as_mut().graceful_shutdown();
                }
            }
            else => break,
        }
    }
}

/// Sets up one accepted WebSocket stream once hyper has sent its `200`, then runs the handler.
async fn run_stream<H, F>(
    opening: Opening,
    peer: SocketAddr,
    tls: bool,
    config: WebSocketConfig,
    handler: Arc<H>,
    shutdown: CancellationToken,
) where
    H: Fn(ServerStream, Request<()>) -> F + Send + Sync + 'static,
    F: Future<Output = ()> + Send + 'static,
{
    let Opening {
        on_upgrade,
        request,
        negotiated,
        _permit,
    } = opening;
    let upgraded = match on_upgrade.await {
        Ok(upgraded) => upgraded,
        Err(e) => {
            tracing::debug!(%peer, error = %e, "http/2 websocket stream failed to open");
            return;
        }
    };
    let io = Transport::Http2(Box::new(H2Stream::new(upgraded, Some(peer), tls)));
    let mut ws = WebSocketStream::from_negotiated(io, Role::Server, config, negotiated, &[]);
    ws.set_shutdown_signal(shutdown);
    tracing::info!(
        %peer,
        path = %path_and_query(&request),
        http = ?request.version(),
        "connection open"
    );
    handler(ws, request).await;
}

/// The answer to one request on an HTTP/2 connection: a WebSocket stream's `200`, a refusal,
/// or a plain HTTP answer from [`Server::on_http`](crate::Server::on_http).
fn answer(mut request: Request<Incoming>, route: &Route) -> Response<Full<Bytes>> {
    let head = head_of(&request);
    let protocol = request
        .extensions()
        .get::<Protocol>()
        .map(|p| p.as_str().to_owned());
    if head.method() != http::Method::CONNECT && protocol.is_none() {
        let has_body = !request.body().is_end_stream();
        return plain(&head, has_body, route);
    }
    if let Err(err) = validate_connect_request(&head, protocol.as_deref()) {
        tracing::info!(peer = %route.peer, status = err.status(), error = %err, "handshake rejected");
        let (response, body) = reject_connect_response(&err);
        return response.map(|()| Full::new(Bytes::from(body)));
    }
    let accept = match route.policy.decide(&head, Some(route.peer)) {
        Ok(accept) => accept,
        Err(mut response) => {
            tracing::info!(peer = %route.peer, status = response.status().as_u16(), "handshake refused");
            // Over HTTP/2 any 2xx accepts the extended CONNECT (RFC 8441 §5), and a 1xx is
            // not a final answer: a callback's refusal must not say either.
            let status = response.status();
            if status.is_informational() || status.is_success() {
                tracing::warn!(%status, "handshake callback refused with a non-refusing status: 500");
                *response = http::Response::new(Vec::new());
                *response.status_mut() = StatusCode::INTERNAL_SERVER_ERROR;
            }
            return h2_response(*response);
        }
    };
    let Ok(permit) = route.limit.clone().try_acquire_owned() else {
        tracing::info!(peer = %route.peer, "connection limit reached: 503");
        return h2_response(crate::server::handshake::overloaded());
    };
    let (response, negotiated) = route.policy.accept_connect(&head, accept);
    let opening = Opening {
        on_upgrade: hyper::upgrade::on(&mut request),
        request: head,
        negotiated,
        _permit: permit,
    };
    if route.opened.send(opening).is_err() {
        let mut gone = Response::new(Full::default());
        *gone.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
        return gone;
    }
    response.map(|()| Full::default())
}

/// A plain HTTP request over HTTP/2: `GET`/`HEAD` go to the `on_http` callback, as over
/// HTTP/1.1 (413 for a request with a body); anything else, or a declined request, gets the
/// refusal of a request that is not an extended CONNECT.
fn plain(head: &Request<()>, has_body: bool, route: &Route) -> Response<Full<Bytes>> {
    let response = match route.policy.answer_http(head, has_body) {
        Some(response) => response,
        None => {
            let (response, body) = reject_connect_response(&HandshakeError::MethodNotAllowed);
            response.map(|()| body)
        }
    };
    tracing::info!(
        peer = %route.peer,
        method = %head.method(),
        path = %path_and_query(head),
        status = response.status().as_u16(),
        http = ?head.version(),
        "http request"
    );
    let mut response = h2_response(response);
    if head.method() == http::Method::HEAD {
        *response.body_mut() = Full::default();
    }
    response
}

/// A response for HTTP/2: the connection-specific headers HTTP/2 forbids removed, the length
/// set.
fn h2_response(response: http::Response<Vec<u8>>) -> Response<Full<Bytes>> {
    let (mut parts, body) = response.into_parts();
    for name in [
        http::header::CONNECTION,
        http::header::TRANSFER_ENCODING,
        http::header::UPGRADE,
    ] {
        parts.headers.remove(name);
    }
    parts.headers.remove("keep-alive");
    parts
        .headers
        .insert(http::header::CONTENT_LENGTH, HeaderValue::from(body.len()));
    parts.version = http::Version::HTTP_2;
    Response::from_parts(parts, Full::new(Bytes::from(body)))
}

/// The path and query of a request's absolute URI, as an HTTP/1.1 request line has it (for the
/// access log).
fn path_and_query(request: &Request<()>) -> &str {
    request.uri().path_and_query().map_or("/", |p| p.as_str())
}

/// The head of a request, for the proto crate's checks and the handler.
fn head_of<B>(request: &Request<B>) -> Request<()> {
    let mut head = Request::new(());
    *head.method_mut() = request.method().clone();
    *head.uri_mut() = request.uri().clone();
    *head.version_mut() = request.version();
    *head.headers_mut() = request.headers().clone();
    head
}

// ---------------------------------------------------------------------------------------------
// Client

/// One HTTP/2 connection to a server over which WebSockets are opened, each on its own stream
/// (RFC 8441). Cloning it shares the connection.
///
/// ```no_run
/// # async fn run() -> Result<(), sockeye::Error> {
/// use sockeye::http2::H2Connection;
///
/// let connection = H2Connection::connect("wss://example.com", sockeye::WebSocketConfig::default()).await?;
/// let (chat, _) = connection.websocket("/chat").await?;
/// let (feed, _) = connection.websocket("/feed").await?;
/// # drop((chat, feed)); Ok(()) }
/// ```
///
/// The connection lives while this handle or any of its WebSockets does; dropping every one of
/// them closes it.
#[derive(Debug, Clone)]
pub struct H2Connection {
    sender: hyper::client::conn::http2::SendRequest<Empty<Bytes>>,
    url: WsUrl,
    config: WebSocketConfig,
    peer: Option<SocketAddr>,
}

/// The client's `initial_max_send_streams` before the server's SETTINGS arrive: a value no
/// server that means to serve WebSockets sends, so that a change shows that the SETTINGS were
/// received (a server announcing no `SETTINGS_MAX_CONCURRENT_STREAMS` gives unlimited, one
/// that allows a single stream gives 1). Only a server that allows no stream at all and does
/// not enable extended CONNECT is not told apart from a silent one: the handshake timeout
/// ends the wait.
const UNSETTLED_STREAMS: usize = 0;

impl H2Connection {
    /// Connects to the origin of `url` (`ws://` for h2c with prior knowledge, `wss://` for
    /// TLS with ALPN `h2`; the path is ignored) through the configured proxy if any, with the
    /// connect and handshake timeouts of `config`, and waits for the server's SETTINGS.
    ///
    /// # Errors
    ///
    /// [`Error::Url`], [`Error::Io`], [`Error::Tls`], [`Error::ConnectTimeout`],
    /// [`Error::HandshakeTimeout`]; [`Error::Http2NotNegotiated`] when a TLS server does not
    /// pick `h2`, or a cleartext server closes without answering the HTTP/2 preface;
    /// [`Error::ExtendedConnectDisabled`] when the server's SETTINGS do not enable
    /// extended CONNECT.
    pub async fn connect(url: &str, config: WebSocketConfig) -> Result<Self, Error> {
        let url = WsUrl::parse(url)?;
        Self::connect_url(url, config).await
    }

    pub(crate) async fn connect_url(url: WsUrl, config: WebSocketConfig) -> Result<Self, Error> {
        let tcp = crate::client::tcp::connect_tcp(&url, &config).await?;
        config.apply_tcp_options(&tcp)?;
        let peer = tcp.peer_addr().ok();
        let deadline = config.handshake_timeout;
        tokio::time::timeout(deadline, async {
            let io = if url.tls {
                // `http/1.1` too, so that a server without HTTP/2 completes the TLS handshake
                // and the caller can report `Http2NotNegotiated` rather than a TLS alert.
                crate::transport::connect_tls(tcp, &url.host, &config, &[b"h2", b"http/1.1"])
                    .await?
            } else {
                Transport::Plain(tcp)
            };
            if url.tls && io.alpn_protocol() != Some(b"h2") {
                return Err(Error::Http2NotNegotiated);
            }
            let (sender, connection) =
                hyper::client::conn::http2::Builder::new(TokioExecutor::new())
                    .initial_max_send_streams(UNSETTLED_STREAMS)
                    .handshake(TokioIo::new(io))
                    .await
                    .map_err(hyper_error)?;
            // The server's SETTINGS are its first frame: the connection's task reports whether
            // they enable extended CONNECT as soon as they have been applied.
            let (settled, settings) = oneshot::channel();
            tokio::spawn(drive(Box::pin(connection), settled));
            match settings.await {
                Ok(true) => {}
                Ok(false) => return Err(Error::ExtendedConnectDisabled),
                // The connection ended before any SETTINGS: not an HTTP/2 server (an
                // HTTP/1.1-only server answers the h2c preface with an error and closes).
                Err(_) => return Err(Error::Http2NotNegotiated),
            }
            Ok(Self {
                sender,
                url,
                config,
                peer,
            })
        })
        .await
        .map_err(|_| Error::HandshakeTimeout)?
    }

    /// Opens a WebSocket to `resource` (path and query, e.g. `/chat?room=1`) on a new stream,
    /// offering the subprotocols and permessage-deflate of the connection's configuration.
    ///
    /// # Errors
    ///
    /// As [`websocket_with`](Self::websocket_with).
    pub async fn websocket(&self, resource: &str) -> Result<(ClientStream, Response<()>), Error> {
        self.websocket_with(resource, &http::HeaderMap::new()).await
    }

    /// Like [`websocket`](Self::websocket), adding `headers` to the request (`Authorization`,
    /// `Origin`, cookies…).
    ///
    /// # Errors
    ///
    /// [`Error::Http`] with the status, headers and up to 64 KiB of the body when the server
    /// answers other than 2xx (redirects are not followed); [`Error::Handshake`] when it
    /// selects what was not offered; [`Error::HandshakeTimeout`]; [`Error::Io`] when the
    /// connection has failed.
    pub async fn websocket_with(
        &self,
        resource: &str,
        headers: &http::HeaderMap,
    ) -> Result<(ClientStream, Response<()>), Error> {
        let mut url = self.url.clone();
        url.resource = if resource.is_empty() {
            "/".to_owned()
        } else {
            resource.to_owned()
        };
        let request = upgrade_request(&url, &self.config, headers)?;
        tokio::time::timeout(self.config.handshake_timeout, self.open(&request))
            .await
            .map_err(|_| Error::HandshakeTimeout)?
    }

    async fn open(&self, request: &ClientRequest) -> Result<(ClientStream, Response<()>), Error> {
        let scheme = if self.url.tls { "https" } else { "http" };
        let (handshake, head) = ConnectHandshake::new(request, scheme)?;
        let mut request = head.map(|()| Empty::<Bytes>::new());
        request
            .extensions_mut()
            .insert(Protocol::from_static(WEBSOCKET_PROTOCOL));
        let mut sender = self.sender.clone();
        sender.ready().await.map_err(hyper_error)?;
        let mut response = sender.send_request(request).await.map_err(hyper_error)?;
        let head = head_of_response(&response);
        if !response.status().is_success() {
            let body = Limited::new(response.into_body(), MAX_REFUSAL_BODY)
                .collect()
                .await
                .map(|collected| collected.to_bytes().to_vec())
                .unwrap_or_default();
            let (parts, ()) = head.into_parts();
            return Err(Error::Http(Box::new(Response::from_parts(parts, body))));
        }
        let (deflate, protocol) = handshake.validate_response(&head)?;
        let negotiated = Negotiated::new(protocol, deflate);
        let upgraded = hyper::upgrade::on(&mut response)
            .await
            .map_err(hyper_error)?;
        let io = Transport::Http2(Box::new(H2Stream::new(upgraded, self.peer, self.url.tls)));
        let ws = WebSocketStream::from_negotiated(
            io,
            Role::Client,
            self.config.clone(),
            negotiated,
            &[],
        );
        Ok((ws, head))
    }

    /// Whether the connection has failed or been closed: no more WebSockets can be opened.
    pub fn is_closed(&self) -> bool {
        self.sender.is_closed()
    }
}

/// The longest pause between two looks at whether the server's SETTINGS have arrived: the most
/// that [`drive`] adds to a slow server's round trip.
const MAX_SETTINGS_POLL: Duration = Duration::from_millis(8);

/// Drives a client connection to its end, sending on `settled` whether the server enabled
/// extended CONNECT once its first SETTINGS have been applied.
async fn drive<T>(
    mut connection: Pin<
        Box<hyper::client::conn::http2::Connection<T, Empty<Bytes>, TokioExecutor>>,
    >,
    settled: oneshot::Sender<bool>,
) where
    T: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    // hyper runs the HTTP/2 frames on a task of its own, which does not wake this one when the
    // SETTINGS arrive, and exposes no event for them (sending the first request sooner would
    // fail: h2 refuses `:protocol` until the server has enabled it). So look, after 1 ms and
    // then at doubling intervals of at most `MAX_SETTINGS_POLL`, until they have been applied
    // or the caller gives up (its handshake timeout bounds the wait), then just drive the
    // connection.
    let mut pause = Duration::from_millis(1);
    let ended = loop {
        tokio::select! {
            ended = connection.as_mut() => break ended,
            () = tokio::time::sleep(pause) => {
                pause = (pause * 2).min(MAX_SETTINGS_POLL);
                let enabled = connection.is_extended_connect_protocol_enabled();
                if enabled || connection.current_max_send_streams() != UNSETTLED_STREAMS {
                    let _ = settled.send(enabled);
                    break connection.await;
                }
                if settled.is_closed() {
                    // The caller gave up (timeout): drop the connection.
                    return;
                }
            }
        }
    };
    if let Err(e) = ended {
        tracing::debug!(error = %e, "http/2 connection ended");
    }
}

/// Connects over HTTP/2 for [`ClientBuilder::http2`](crate::ClientBuilder::http2): one
/// connection for one WebSocket.
pub(crate) async fn connect_one(
    url: WsUrl,
    config: WebSocketConfig,
    headers: &http::HeaderMap,
) -> Result<(ClientStream, Response<()>), Error> {
    let resource = url.resource.clone();
    let connection = H2Connection::connect_url(url, config).await?;
    connection.websocket_with(&resource, headers).await
}

fn head_of_response<B>(response: &Response<B>) -> Response<()> {
    let mut head = Response::new(());
    *head.status_mut() = response.status();
    *head.version_mut() = response.version();
    *head.headers_mut() = response.headers().clone();
    head
}

fn hyper_error(e: hyper::Error) -> Error {
    Error::Io(io::Error::other(e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_preface_is_recognised_at_every_length() {
        for n in 0..PREFACE.len() {
            assert_eq!(preface_state(&PREFACE[..n]), None, "prefix of {n} bytes");
        }
        assert_eq!(preface_state(PREFACE), Some(true));
        assert_eq!(preface_state(b"GET / HTTP/1.1\r\n"), Some(false));
        assert_eq!(preface_state(b"PRX"), Some(false));
    }
}
