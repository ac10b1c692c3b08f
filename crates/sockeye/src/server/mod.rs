//! The server: a listener with a connection limit and graceful shutdown that hands each
//! upgraded connection to user code.
//!
//! `handshake.rs` (a leaf) drives the core's `ServerHandshake` over tokio for HTTP/1.1; the
//! Origin policy, the handshake callback, the subprotocol choice, refusals and the plain-HTTP
//! answers are the core's `ServerPolicy`. HTTP/2 (`crate::http2`, feature `http2`) sits above
//! this folder: it reuses that policy, and
//! the accept loop hands it h2c and ALPN `h2` connections; nothing in this folder imports more
//! of it.

pub(crate) mod handshake;

use handshake::accept_hooked;
#[cfg(feature = "http2")]
use handshake::accept_rewound;
pub use handshake::{
    accept, accept_with_config, Accept, HandshakeCallback, HandshakeDecision, HandshakeRequest,
    HttpCallback, OriginCallback, OriginPolicy,
};
pub(crate) use handshake::{overloaded, upgrade_or_end, Ending, Hooks, Upgrade};

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use futures_util::future::Either;
use http::Request;
use sockeye_proto::handshake::{HandshakeError, ServerHandshake};
use tokio::net::{TcpListener, TcpSocket, TcpStream, ToSocketAddrs};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::config::WebSocketConfig;
use crate::error::Error;
use crate::stream::ServerStream;
#[cfg(feature = "http2")]
use crate::transport::Rewind;
use crate::transport::Transport;

/// A WebSocket server: a TCP listener whose connections are upgraded and handed to a handler.
///
/// ```no_run
/// # async fn run() -> std::io::Result<()> {
/// use futures_util::{SinkExt, StreamExt};
///
/// let server = sockeye::Server::bind("127.0.0.1:9001").await?;
/// println!("listening on ws://{}/", server.local_addr()?);
/// server
///     .serve(|mut ws, _request| async move {
///         while let Some(Ok(message)) = ws.next().await {
///             if message.is_data() && ws.send(message).await.is_err() {
///                 break;
///             }
///         }
///     })
///     .await
/// # }
/// ```
#[derive(Debug)]
pub struct Server {
    listener: TcpListener,
    config: WebSocketConfig,
    max_connections: usize,
    shutdown_timeout: Duration,
    threads: usize,
    hooks: Hooks,
    #[cfg(feature = "rustls")]
    tls: Option<Arc<tokio_rustls::rustls::ServerConfig>>,
    #[cfg(feature = "http2")]
    http2: bool,
}

/// Default for [`Server::max_connections`].
pub const DEFAULT_MAX_CONNECTIONS: usize = 10_000;

impl Server {
    /// Listens on `addr` (the first of its addresses that can be bound), with `SO_REUSEADDR`
    /// and a listen backlog of 1024 connections, capped by the kernel (`net.core.somaxconn` on
    /// Linux). Use [`from_listener`](Self::from_listener) for other socket options.
    ///
    /// # Errors
    ///
    /// When no address of `addr` can be bound.
    pub async fn bind(addr: impl ToSocketAddrs) -> io::Result<Self> {
        let mut last_err = None;
        for addr in tokio::net::lookup_host(addr).await? {
            match listen(addr) {
                Ok(listener) => return Ok(Self::from_listener(listener)),
                Err(e) => last_err = Some(e),
            }
        }
        Err(last_err.unwrap_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                "could not resolve to any address",
            )
        }))
    }

    /// Serves on an existing listener.
    pub fn from_listener(listener: TcpListener) -> Self {
        Self {
            listener,
            config: WebSocketConfig::default(),
            max_connections: DEFAULT_MAX_CONNECTIONS,
            hooks: Hooks::default(),
            #[cfg(feature = "rustls")]
            tls: None,
            shutdown_timeout: Duration::from_secs(10),
            threads: 1,
            #[cfg(feature = "http2")]
            http2: false,
        }
    }

    /// Also serves WebSockets over HTTP/2 (RFC 8441, feature `http2`; see [`crate::http2`]):
    /// with [`tls`](Self::tls), ALPN offers `h2` before `http/1.1` and the client's choice is
    /// followed; without, a connection that starts with the HTTP/2 preface (h2c with prior
    /// knowledge) is served as HTTP/2 and any other as HTTP/1.1. WebSocket streams go through
    /// the same Origin policy, handshake callback, [`on_http`](Self::on_http), limits (each
    /// stream counts against [`max_connections`](Self::max_connections), as does the
    /// connection) and handler as HTTP/1.1 upgrades; the handler's request says `HTTP/2.0`.
    ///
    /// Applies to [`serve`](Self::serve) and [`serve_with_shutdown`](Self::serve_with_shutdown);
    /// [`accept`](Self::accept) stays HTTP/1.1. Default: off.
    #[cfg(feature = "http2")]
    #[must_use]
    pub fn http2(mut self, enabled: bool) -> Self {
        self.http2 = enabled;
        self
    }

    /// Serves TLS (`wss://`) with `config`, e.g. from
    /// [`tls::server_config_from_pem_files`](crate::tls::server_config_from_pem_files). The TLS
    /// handshake counts against the handshake timeout.
    #[cfg(feature = "rustls")]
    #[must_use]
    pub fn tls(mut self, config: Arc<tokio_rustls::rustls::ServerConfig>) -> Self {
        self.tls = Some(config);
        self
    }

    /// Calls `callback` with every valid upgrade request (after the origin check); it accepts
    /// (adding response headers, choosing the subprotocol) or refuses with any response.
    ///
    /// ```
    /// use sockeye::{Accept, HandshakeDecision, Server};
    ///
    /// # async fn run() -> std::io::Result<()> {
    /// let server = Server::bind("127.0.0.1:0").await?.on_handshake(|hs| {
    ///     match hs.request.headers().get("authorization") {
    ///         Some(token) if token == "Bearer letmein" => {
    ///             HandshakeDecision::Accept(Accept::with_protocol(hs.default_protocol.clone()))
    ///         }
    ///         _ => {
    ///             let mut refusal = http::Response::new(b"token required\n".to_vec());
    ///             *refusal.status_mut() = http::StatusCode::UNAUTHORIZED;
    ///             refusal.headers_mut().insert(
    ///                 "www-authenticate",
    ///                 http::HeaderValue::from_static("Bearer"),
    ///             );
    ///             HandshakeDecision::Reject(refusal)
    ///         }
    ///     }
    /// });
    /// # drop(server); Ok(()) }
    /// ```
    #[must_use]
    pub fn on_handshake<F>(mut self, callback: F) -> Self
    where
        F: Fn(&HandshakeRequest<'_>) -> HandshakeDecision + Send + Sync + 'static,
    {
        self.hooks.on_handshake = Some(Arc::new(callback));
        self
    }

    /// Sets the [`OriginPolicy`] (default: any origin).
    #[must_use]
    pub fn origin_policy(mut self, policy: OriginPolicy) -> Self {
        self.hooks.origin = policy;
        self
    }

    /// Answers plain HTTP requests on the WebSocket port: a `GET` or `HEAD` (HTTP/1.0 or 1.1)
    /// without an `Upgrade` header is passed to `callback`, whose `Some(response)` is sent
    /// (with `Content-Length` and `Connection: close` set, any `Transfer-Encoding` removed, and
    /// without the body for `HEAD`) before the connection is closed; `None` keeps the refusal
    /// sent without a callback (`400 Bad Request` for a request that asks for no upgrade). A
    /// request that announces a body gets `413 Payload Too Large` without being read. Other
    /// methods and every upgrade request, valid or not, are handled as without the callback.
    /// Each answered request is logged at `info` (peer, method, path, status).
    ///
    /// The callback runs on the connection's task: it should not block for long.
    ///
    /// ```
    /// use sockeye::Server;
    ///
    /// # async fn run() -> std::io::Result<()> {
    /// let server = Server::bind("127.0.0.1:0").await?.on_http(|request| {
    ///     (request.uri().path() == "/health").then(|| http::Response::new(b"ok\n".to_vec()))
    /// });
    /// # drop(server); Ok(()) }
    /// ```
    #[must_use]
    pub fn on_http<F>(mut self, callback: F) -> Self
    where
        F: Fn(&Request<()>) -> Option<http::Response<Vec<u8>>> + Send + Sync + 'static,
    {
        self.hooks.on_http = Some(Arc::new(callback));
        self
    }

    /// Most connections served at once, handshakes included. A connection over the limit is
    /// accepted at the TCP level, answered `503 Service Unavailable` with `Retry-After: 1`
    /// without reading its request, and closed; it costs no task.
    ///
    /// Default: 10,000 ([`DEFAULT_MAX_CONNECTIONS`]).
    #[must_use]
    pub fn max_connections(mut self, limit: usize) -> Self {
        self.max_connections = limit;
        self
    }

    /// How long [`serve_with_shutdown`](Self::serve_with_shutdown) waits for connections to
    /// finish their close handshakes before dropping them.
    ///
    /// Default: 10 s.
    #[must_use]
    pub fn shutdown_timeout(mut self, timeout: Duration) -> Self {
        self.shutdown_timeout = timeout;
        self
    }

    /// Serves on `threads` threads (0: one per core the process may use, from
    /// [`std::thread::available_parallelism`]) in [`serve`](Self::serve) and
    /// [`serve_with_shutdown`](Self::serve_with_shutdown).
    ///
    /// The calling task's runtime is the first; every other thread runs a current-thread
    /// tokio runtime of its own, and every thread accepts from the same listening socket, so
    /// the kernel hands each new connection to whichever thread is waiting for one (a less busy
    /// thread takes more). A connection stays on the thread that accepted it for its whole
    /// life: its handler and the tasks it spawns run there, with no cross-thread wake-ups and
    /// no work stealing, so per connection a server of N threads costs what a server of one
    /// does. The handler must therefore be `Send + Sync` and its futures `Send`, as always
    /// here; state shared between connections (a `sockeye_hub::Hub`, counters) must be
    /// thread-safe. The connection limit, the shutdown signal and the shutdown timeout apply
    /// to all threads together.
    ///
    /// This is also how an application uses every core with its own runtime: one
    /// current-thread runtime per core, each accepting from a clone of one listener
    /// (`std::net::TcpListener::try_clone`) — rather than one multi-threaded runtime, whose
    /// work stealing moves a connection's task between cores.
    ///
    /// Default: 1 (the calling runtime only).
    #[must_use]
    pub fn threads(mut self, threads: usize) -> Self {
        self.threads = match threads {
            0 => std::thread::available_parallelism().map_or(1, usize::from),
            n => n,
        };
        self
    }

    /// Uses `config` for every connection.
    #[must_use]
    pub fn config(mut self, config: WebSocketConfig) -> Self {
        self.config = config;
        self
    }

    /// The address listened on.
    ///
    /// # Errors
    ///
    /// When the OS cannot tell.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Accepts the next TCP connection and performs its opening handshake (bounded by the
    /// handshake timeout).
    ///
    /// # Errors
    ///
    /// The handshake's error; [`Error::Io`] when accepting fails.
    pub async fn accept(&self) -> Result<(ServerStream, Request<()>, SocketAddr), Error> {
        let (tcp, peer) = self.listener.accept().await?;
        self.config.apply_tcp_options(&tcp)?;
        let (ws, request) = upgrade(
            tcp,
            peer,
            &Arc::new(self.config.clone()),
            &self.hooks,
            self.tls_config(),
        )
        .await?;
        Ok((ws, request, peer))
    }

    #[cfg(feature = "rustls")]
    fn tls_config(&self) -> Option<Arc<tokio_rustls::rustls::ServerConfig>> {
        self.tls.clone()
    }

    #[cfg(not(feature = "rustls"))]
    fn tls_config(&self) -> Option<NoTls> {
        None
    }

    /// Runs forever: accepts connections and spawns one tokio task per connection that performs
    /// the handshake and then runs `handler`. Failed handshakes are answered and logged at
    /// `debug`.
    ///
    /// # Errors
    ///
    /// Never returns `Ok`; accept errors such as running out of file descriptors are logged and
    /// retried after a short pause rather than returned.
    pub async fn serve<H, F>(self, handler: H) -> io::Result<()>
    where
        H: Fn(ServerStream, Request<()>) -> F + Send + Sync + 'static,
        F: Future<Output = ()> + Send + 'static,
    {
        self.serve_with_shutdown(handler, std::future::pending())
            .await
    }

    /// Like [`serve`](Self::serve) until `signal` completes, then shuts down gracefully: stops
    /// accepting, closes every open connection with 1001 ("server shutting down") after what it
    /// has queued, waits up to [`shutdown_timeout`](Self::shutdown_timeout) for the close
    /// handshakes (and handlers) to finish, then drops the rest.
    ///
    /// A connection is closed when its stream is next polled, so handlers should keep reading
    /// (`while let Some(msg) = ws.next().await`), as every handler that waits for messages does.
    ///
    /// # Errors
    ///
    /// Only from the final wait; accept errors are logged and retried.
    pub async fn serve_with_shutdown<H, F>(
        self,
        handler: H,
        signal: impl Future<Output = ()>,
    ) -> io::Result<()>
    where
        H: Fn(ServerStream, Request<()>) -> F + Send + Sync + 'static,
        F: Future<Output = ()> + Send + 'static,
    {
        let tls = self.tls_config();
        #[cfg(feature = "http2")]
        let http2 = self.http2;
        #[cfg(not(feature = "http2"))]
        let http2 = false;
        #[cfg(all(feature = "http2", feature = "rustls"))]
        let tls = tls.map(|tls| {
            if http2 {
                crate::tls::with_h2_alpn(&tls)
            } else {
                tls
            }
        });
        let Self {
            listener,
            config,
            max_connections,
            shutdown_timeout,
            hooks,
            threads,
            ..
        } = self;
        let shared = Arc::new(Shared {
            handler: Arc::new(handler),
            config: Arc::new(config),
            hooks,
            tls,
            http2,
            limit: Arc::new(Semaphore::new(max_connections.min(Semaphore::MAX_PERMITS))),
            shutdown: CancellationToken::new(),
            shutdown_timeout,
        });
        let (listener, others) = if threads > 1 {
            let listener = listener.into_std()?;
            let mut others = Vec::with_capacity(threads - 1);
            for i in 1..threads {
                others.push(spawn_accept_thread(
                    i,
                    listener.try_clone()?,
                    shared.clone(),
                )?);
            }
            (TcpListener::from_std(listener)?, others)
        } else {
            (listener, Vec::new())
        };
        let stop = async {
            signal.await;
            shared.shutdown.cancel();
        };
        accept_loop(listener, &shared, stop).await;
        // Also if the signal never fired: this loop ends only then.
        shared.shutdown.cancel();
        for done in others {
            // Err: the thread ended (its sender dropped), which is what is waited for.
            let _ = done.await;
        }
        Ok(())
    }
}

/// What every accept loop of a [`Server`] shares: the handler and its settings, the
/// connection limit and the shutdown signal.
struct Shared<H, T> {
    handler: Arc<H>,
    config: Arc<WebSocketConfig>,
    hooks: Hooks,
    tls: Option<T>,
    http2: bool,
    limit: Arc<Semaphore>,
    /// Cancelled when the server shuts down: stops every accept loop and closes every
    /// connection with 1001.
    shutdown: CancellationToken,
    shutdown_timeout: Duration,
}

#[cfg(feature = "rustls")]
type TlsConfig = Arc<tokio_rustls::rustls::ServerConfig>;
#[cfg(not(feature = "rustls"))]
type TlsConfig = NoTls;

/// Starts accept thread `i`: a current-thread runtime of its own accepting from `listener`
/// (a clone of the server's socket) until the server shuts down. The receiver completes (with
/// an error: its sender is dropped) when the thread has finished.
fn spawn_accept_thread<H, F>(
    i: usize,
    listener: std::net::TcpListener,
    shared: Arc<Shared<H, TlsConfig>>,
) -> io::Result<tokio::sync::oneshot::Receiver<()>>
where
    H: Fn(ServerStream, Request<()>) -> F + Send + Sync + 'static,
    F: Future<Output = ()> + Send + 'static,
{
    let (done, finished) = tokio::sync::oneshot::channel::<()>();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    std::thread::Builder::new()
        .name(format!("sockeye-server-{i}"))
        .spawn(move || {
            let _done = done;
            runtime.block_on(async {
                match TcpListener::from_std(listener) {
                    Ok(listener) => {
                        let stop = shared.shutdown.clone();
                        accept_loop(listener, &shared, stop.cancelled_owned()).await;
                    }
                    Err(e) => tracing::warn!(error = %e, thread = i, "cannot listen"),
                }
            });
        })?;
    Ok(finished)
}

/// Accepts connections and serves each in a task of the current runtime until `stop`
/// completes; then closes this loop's connections (the shutdown signal) and waits up to the
/// shutdown timeout for them.
async fn accept_loop<H, F>(
    listener: TcpListener,
    shared: &Arc<Shared<H, TlsConfig>>,
    stop: impl Future<Output = ()>,
) where
    H: Fn(ServerStream, Request<()>) -> F + Send + Sync + 'static,
    F: Future<Output = ()> + Send + 'static,
{
    let (overloaded, _) = ServerHandshake::reject(overloaded());
    let mut tasks = JoinSet::new();
    let mut stop = std::pin::pin!(stop);
    loop {
        let (tcp, peer) = tokio::select! {
            () = &mut stop => break,
            Some(_) = tasks.join_next(), if !tasks.is_empty() => continue,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let Ok(permit) = shared.limit.clone().try_acquire_owned() else {
            tracing::info!(%peer, "connection limit reached: 503");
            // Best effort, never waits: the peer gets the answer if its buffer has room.
            let _ = tcp.try_write(&overloaded);
            continue;
        };
        tasks.spawn(serve_connection(tcp, peer, permit, shared.clone()));
    }
    drop(listener);
    tracing::info!(connections = tasks.len(), "shutting down");
    shared.shutdown.cancel();
    let drained = tokio::time::timeout(shared.shutdown_timeout, async {
        while tasks.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        tracing::info!(
            connections = tasks.len(),
            "shutdown timeout: dropping connections"
        );
        tasks.shutdown().await;
    }
}

/// One connection's task: the handshake (HTTP/1.1, or HTTP/2 and its streams), then the
/// handler, holding one permit of the connection limit.
async fn serve_connection<H, F>(
    tcp: TcpStream,
    peer: SocketAddr,
    permit: tokio::sync::OwnedSemaphorePermit,
    shared: Arc<Shared<H, TlsConfig>>,
) where
    H: Fn(ServerStream, Request<()>) -> F + Send + Sync + 'static,
    F: Future<Output = ()> + Send + 'static,
{
    let _permit = permit;
    // Boxed: the handshake's state (several KiB with TLS) and what it leaves behind are freed
    // once it is done. A task's size is that of its largest state: here, the handler's future
    // and these few locals, for the connection's whole life.
    let Some(connection) = Box::pin(open_connection(tcp, peer, &shared)).await else {
        return;
    };
    connection.await;
}

/// The handshake of a new connection (or nothing if the server shuts down first), and then
/// what serves it: the handler, or (HTTP/2) the connection's streams.
async fn open_connection<H, F>(
    tcp: TcpStream,
    peer: SocketAddr,
    shared: &Arc<Shared<H, TlsConfig>>,
) -> Option<Either<F, Http2Task>>
where
    H: Fn(ServerStream, Request<()>) -> F + Send + Sync + 'static,
    F: Future<Output = ()> + Send + 'static,
{
    let Shared {
        config,
        hooks,
        tls,
        http2,
        shutdown,
        ..
    } = &**shared;
    if let Err(e) = config.apply_tcp_options(&tcp) {
        tracing::debug!(%peer, error = %e, "cannot set socket options");
    }
    let accepted = tokio::select! {
        accepted = open(tcp, peer, config, hooks, tls.clone(), *http2) => accepted,
        () = shutdown.cancelled() => return None,
    };
    Some(match accepted {
        #[cfg(feature = "http2")]
        Ok(Opened::Http2(io)) => {
            tracing::debug!(%peer, tls = io.get_ref().is_tls(), "http/2 connection");
            let serve = crate::http2::H2Serve {
                config: WebSocketConfig::clone(config),
                hooks: hooks.clone(),
                handler: shared.handler.clone(),
                shutdown: shutdown.clone(),
                limit: shared.limit.clone(),
            };
            let tls = io.get_ref().is_tls();
            Either::Right(Box::pin(crate::http2::serve_connection(
                io, peer, tls, serve,
            )))
        }
        // Out of its box: moved out of in place, the box would be freed only when this
        // function's state is.
        Ok(Opened::WebSocket(ws, request)) => Either::Left(start_handler(
            &*shared.handler,
            (unbox(ws), request),
            peer,
            shutdown.clone(),
        )),
        Err(Error::Handshake(err)) => {
            log_rejected(peer, &err);
            return None;
        }
        Err(e) => {
            tracing::debug!(%peer, error = %e, "handshake failed");
            return None;
        }
    })
}

/// An HTTP/2 connection's task, boxed: its state would otherwise size every connection's task.
#[cfg(feature = "http2")]
type Http2Task = std::pin::Pin<Box<dyn Future<Output = ()> + Send>>;
#[cfg(not(feature = "http2"))]
type Http2Task = std::future::Pending<()>;

/// Stands in for a TLS configuration when the `rustls` feature is off: it has no value.
#[cfg(not(feature = "rustls"))]
#[derive(Debug, Clone)]
enum NoTls {}

/// The value of `boxed`, its allocation freed now.
#[allow(clippy::boxed_local)] // Taking the box is the point: it is freed on return.
fn unbox<T>(boxed: Box<T>) -> T {
    *boxed
}

/// Hands an upgraded connection to the handler. A plain function, not part of the task's async
/// block: there, the stream and request, once borrowed, would keep slots of their own in the
/// task beside the handler's future (which holds them again) for the connection's whole life.
fn start_handler<H, F>(
    handler: &H,
    (mut ws, request): (ServerStream, Request<()>),
    peer: SocketAddr,
    shutdown: CancellationToken,
) -> F
where
    H: Fn(ServerStream, Request<()>) -> F,
{
    tracing::info!(%peer, path = %request.uri(), http = ?request.version(), "connection open");
    ws.set_shutdown_signal(shutdown);
    handler(ws, request)
}

/// TLS (when configured) and the WebSocket handshake, within the handshake timeout.
async fn upgrade(
    tcp: TcpStream,
    peer: SocketAddr,
    config: &Arc<WebSocketConfig>,
    hooks: &Hooks,
    #[cfg(feature = "rustls")] tls: Option<Arc<tokio_rustls::rustls::ServerConfig>>,
    #[cfg(not(feature = "rustls"))] tls: Option<NoTls>,
) -> Result<(ServerStream, Request<()>), Error> {
    let io = match tls {
        Some(tls) => accept_tls(tcp, config, tls).await?,
        None => Transport::Plain(tcp),
    };
    accept_hooked(io, config.clone(), hooks, Some(peer)).await
}

/// The server's TLS handshake, within the handshake timeout.
#[cfg(feature = "rustls")]
async fn accept_tls(
    tcp: TcpStream,
    config: &WebSocketConfig,
    tls: Arc<tokio_rustls::rustls::ServerConfig>,
) -> Result<Transport<TcpStream>, Error> {
    tokio::time::timeout(config.handshake_timeout, crate::tls::accept(tcp, tls))
        .await
        .map_err(|_| Error::HandshakeTimeout)?
}

#[cfg(not(feature = "rustls"))]
async fn accept_tls(
    _tcp: TcpStream,
    _config: &WebSocketConfig,
    tls: NoTls,
) -> Result<Transport<TcpStream>, Error> {
    match tls {}
}

/// What a new connection turned out to be.
enum Opened {
    /// An HTTP/1.1 WebSocket upgrade, done.
    WebSocket(Box<ServerStream>, Request<()>),
    /// An HTTP/2 connection (ALPN `h2`, or the h2c preface), to serve with `h2`; its reads
    /// first replay the preface read to recognise it.
    #[cfg(feature = "http2")]
    Http2(Rewind<Transport<TcpStream>>),
}

/// TLS (when configured) and then, when `http2` is on and the client chose HTTP/2, the HTTP/2
/// connection; else the HTTP/1.1 WebSocket handshake, within the handshake timeout.
async fn open(
    tcp: TcpStream,
    peer: SocketAddr,
    config: &Arc<WebSocketConfig>,
    hooks: &Hooks,
    #[cfg(feature = "rustls")] tls: Option<Arc<tokio_rustls::rustls::ServerConfig>>,
    #[cfg(not(feature = "rustls"))] tls: Option<NoTls>,
    http2: bool,
) -> Result<Opened, Error> {
    #[cfg(feature = "http2")]
    if http2 {
        let io = match tls {
            Some(tls) => Rewind::plain(accept_tls(tcp, config, tls).await?),
            None => {
                // The first bytes tell h2c with prior knowledge from HTTP/1.1; whichever it is
                // reads them again.
                let mut tcp = tcp;
                let (start, h2c) =
                    crate::http2::read_preface(&mut tcp, config.handshake_timeout).await?;
                let io = Rewind::new(start, Transport::Plain(tcp));
                if h2c {
                    return Ok(Opened::Http2(io));
                }
                io
            }
        };
        if io.get_ref().alpn_protocol() == Some(b"h2") {
            return Ok(Opened::Http2(io));
        }
        let (ws, request) = accept_rewound(io, config.clone(), hooks, Some(peer)).await?;
        return Ok(Opened::WebSocket(Box::new(ws), request));
    }
    #[cfg(not(feature = "http2"))]
    let _ = http2;
    let (ws, request) = upgrade(tcp, peer, config, hooks, tls).await?;
    Ok(Opened::WebSocket(Box::new(ws), request))
}

/// Connections the kernel completes and queues before the server accepts them. tokio's
/// `TcpListener::bind` uses std's 128: a burst of more simultaneous connects overflows the queue,
/// and the kernel drops SYNs and ACKs, so every client caught in the burst, well-behaved or not,
/// waits for a retransmission (1 s, then 3 s…).
const LISTEN_BACKLOG: u32 = 1024;

fn listen(addr: SocketAddr) -> io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    // As std and tokio do on Unix: a restarted server can bind while old connections linger in
    // TIME_WAIT.
    #[cfg(not(windows))]
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(LISTEN_BACKLOG)
}

fn log_rejected(peer: SocketAddr, err: &HandshakeError) {
    tracing::info!(%peer, status = err.status(), error = %err, "handshake rejected");
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

    use super::*;

    const UPGRADE: &str = "GET /chat HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n";

    /// Hooks whose `on_http` answers `/` with "hello" and declines anything else, counting
    /// its calls.
    fn hooks(calls: Arc<AtomicUsize>) -> Hooks {
        Hooks {
            on_http: Some(Arc::new(move |request: &Request<()>| {
                calls.fetch_add(1, Ordering::SeqCst);
                (request.uri().path() == "/").then(|| {
                    let mut response = http::Response::new(b"hello".to_vec());
                    response.headers_mut().insert(
                        http::header::CONTENT_TYPE,
                        http::HeaderValue::from_static("text/plain"),
                    );
                    response
                })
            })),
            ..Hooks::default()
        }
    }

    /// Sends `request` to a server with `hooks` over a pipe, fed one byte at a time; returns
    /// what the server wrote (up to EOF, or the end of the head for an upgrade) and its result.
    async fn exchange(request: &str, hooks: &Hooks) -> (String, Result<Request<()>, Error>) {
        let (mut client, server) = tokio::io::duplex(1 << 16);
        let config = WebSocketConfig::default();
        let accepted = accept_hooked(server, Arc::new(config), hooks, None);
        let talk = async {
            for byte in request.as_bytes() {
                client.write_all(&[*byte]).await.expect("write");
            }
            let mut seen = Vec::new();
            let mut chunk = [0; 1024];
            while !String::from_utf8_lossy(&seen).contains("\r\n\r\n") {
                let n = client.read(&mut chunk).await.expect("read");
                assert_ne!(n, 0, "server closed before answering");
                seen.extend_from_slice(&chunk[..n]);
            }
            (client, seen)
        };
        let ((mut client, mut seen), result) =
            tokio::time::timeout(Duration::from_secs(10), async {
                tokio::join!(talk, accepted)
            })
            .await
            .expect("exchange timed out");
        let result = result.map(|(_ws, request)| request);
        if result.is_err() {
            // A refused or answered connection is shut down: read the rest of the body.
            tokio::time::timeout(Duration::from_secs(10), client.read_to_end(&mut seen))
                .await
                .expect("shutdown timed out")
                .expect("read");
        }
        (String::from_utf8(seen).expect("utf-8"), result)
    }

    #[tokio::test]
    async fn on_http_answers_get_and_head() {
        let calls = Arc::new(AtomicUsize::new(0));
        let hooks = hooks(calls.clone());
        let (text, result) = exchange("GET /?x=1 HTTP/1.1\r\nHost: h\r\n\r\n", &hooks).await;
        assert!(text.starts_with("HTTP/1.1 200 OK\r\n"), "{text}");
        assert!(text.contains("content-length: 5\r\n"), "{text}");
        assert!(text.contains("connection: close\r\n"), "{text}");
        assert!(text.ends_with("\r\n\r\nhello"), "{text}");
        assert!(matches!(result, Err(Error::Http(r)) if r.status() == 200));

        let (text, _) = exchange("HEAD / HTTP/1.0\r\n\r\n", &hooks).await;
        assert!(text.starts_with("HTTP/1.1 200 OK\r\n"), "{text}");
        assert!(text.contains("content-length: 5\r\n"), "{text}");
        assert!(text.ends_with("\r\n\r\n"), "HEAD must have no body: {text}");
        assert_eq!(calls.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn on_http_declined_or_absent_keeps_the_refusal() {
        let calls = Arc::new(AtomicUsize::new(0));
        let request = "GET /elsewhere HTTP/1.1\r\nHost: h\r\n\r\n";
        let (declined, result) = exchange(request, &hooks(calls.clone())).await;
        assert!(matches!(result, Err(Error::Handshake(_))));
        let (without, _) = exchange(request, &Hooks::default()).await;
        assert!(declined.starts_with("HTTP/1.1 4"), "{declined}");
        assert_eq!(declined, without);
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn on_http_leaves_bodies_methods_and_upgrades_alone() {
        let calls = Arc::new(AtomicUsize::new(0));
        let hooks = hooks(calls.clone());
        let (text, _) = exchange(
            "GET / HTTP/1.1\r\nHost: h\r\nContent-Length: 4\r\n\r\n",
            &hooks,
        )
        .await;
        assert!(text.starts_with("HTTP/1.1 413 "), "{text}");
        let (text, _) = exchange(
            "GET / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n",
            &hooks,
        )
        .await;
        assert!(text.starts_with("HTTP/1.1 413 "), "{text}");
        let (text, _) = exchange("POST / HTTP/1.1\r\nHost: h\r\n\r\n", &hooks).await;
        assert!(text.starts_with("HTTP/1.1 405 "), "{text}");
        // An upgrade request, valid or not, is never plain HTTP.
        let (text, result) = exchange(UPGRADE, &hooks).await;
        assert!(text.starts_with("HTTP/1.1 101 "), "{text}");
        assert_eq!(result.expect("upgrade").uri(), "/chat");
        let broken = UPGRADE.replace("Sec-WebSocket-Version: 13\r\n", "");
        let (text, _) = exchange(&broken, &hooks).await;
        assert!(text.starts_with("HTTP/1.1 400 "), "{text}");
        assert_eq!(calls.load(Ordering::SeqCst), 0);
    }

    #[tokio::test]
    async fn server_on_http_over_tcp() {
        let server = Server::bind("127.0.0.1:0")
            .await
            .expect("bind")
            .on_http(|_| Some(http::Response::new(b"page".to_vec())));
        let addr = server.local_addr().expect("addr");
        let serving = tokio::spawn(server.serve(|_ws, _request| async {}));
        let mut tcp = TcpStream::connect(addr).await.expect("connect");
        tcp.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .expect("write");
        let mut seen = Vec::new();
        tokio::time::timeout(Duration::from_secs(10), tcp.read_to_end(&mut seen))
            .await
            .expect("answer timed out")
            .expect("read");
        let text = String::from_utf8(seen).expect("utf-8");
        assert!(text.starts_with("HTTP/1.1 200 OK\r\n"), "{text}");
        assert!(text.ends_with("\r\n\r\npage"), "{text}");
        serving.abort();
    }
}
