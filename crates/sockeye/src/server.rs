//! The server: the opening handshake over tokio and a listener that hands each upgraded
//! connection to user code.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http::Request;
use sockeye_proto::handshake::{
    accept_response_with, parse_request, reject_response, write_response, HandshakeError,
};
use sockeye_proto::Role;
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream, ToSocketAddrs};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::config::WebSocketConfig;
use crate::error::Error;
use crate::stream::WebSocketStream;

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
/// `Sec-WebSocket-Version: 13`, 431) and the connection is shut down.
///
/// # Errors
///
/// [`Error::Handshake`] for an invalid request, [`Error::HandshakeTimeout`] after
/// [`WebSocketConfig::handshake_timeout`], [`Error::Io`].
pub async fn accept_with_config<S: AsyncRead + AsyncWrite + Unpin>(
    mut io: S,
    config: WebSocketConfig,
) -> Result<(WebSocketStream<S>, Request<()>), Error> {
    let timeout = config.handshake_timeout;
    let mut buf = Vec::with_capacity(1024);
    let parsed = tokio::time::timeout(timeout, read_request(&mut io, &mut buf, &config)).await;
    let result = match parsed {
        Err(_) => return Err(Error::HandshakeTimeout),
        Ok(Err(Error::Handshake(err))) => Err(err),
        Ok(Err(other)) => return Err(other),
        Ok(Ok(found)) => Ok(found),
    };
    let mut out = Vec::new();
    match result {
        Ok((request, used)) => {
            let (response, deflate) = accept_response_with(&request, config.deflate.as_ref());
            write_response(&response, b"", &mut out);
            io.write_all(&out).await?;
            io.flush().await?;
            tracing::debug!(path = %request.uri(), "websocket connection accepted");
            let ws = WebSocketStream::from_raw_negotiated(
                io,
                Role::Server,
                config,
                deflate,
                &buf[used..],
            );
            Ok((ws, request))
        }
        Err(err) => {
            tracing::debug!(error = %err, status = err.status(), "handshake rejected");
            let (response, body) = reject_response(&err);
            write_response(&response, &body, &mut out);
            // Best effort: the peer may already be gone.
            let _ = tokio::time::timeout(timeout, async {
                io.write_all(&out).await?;
                io.shutdown().await
            })
            .await;
            Err(Error::Handshake(err))
        }
    }
}

async fn read_request<S: AsyncRead + Unpin>(
    io: &mut S,
    buf: &mut Vec<u8>,
    config: &WebSocketConfig,
) -> Result<(Request<()>, usize), Error> {
    loop {
        let n = io.read_buf(buf).await?;
        if let Some(found) = parse_request(buf, &config.handshake)? {
            return Ok(found);
        }
        if n == 0 {
            // The peer closed before the head ended: nobody to answer.
            return Err(Error::Io(io::ErrorKind::UnexpectedEof.into()));
        }
    }
}

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
}

/// Default for [`Server::max_connections`].
pub const DEFAULT_MAX_CONNECTIONS: usize = 10_000;

/// Answer to a connection over [`Server::max_connections`].
const OVERLOADED: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\nConnection: close\r\nRetry-After: 1\r\nContent-Length: 0\r\n\r\n";

impl Server {
    /// Listens on `addr`.
    ///
    /// # Errors
    ///
    /// When the address cannot be bound.
    pub async fn bind(addr: impl ToSocketAddrs) -> io::Result<Self> {
        Ok(Self::from_listener(TcpListener::bind(addr).await?))
    }

    /// Serves on an existing listener.
    pub fn from_listener(listener: TcpListener) -> Self {
        Self {
            listener,
            config: WebSocketConfig::default(),
            max_connections: DEFAULT_MAX_CONNECTIONS,
            shutdown_timeout: Duration::from_secs(10),
        }
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
    pub async fn accept(
        &self,
    ) -> Result<(WebSocketStream<TcpStream>, Request<()>, SocketAddr), Error> {
        let (tcp, peer) = self.listener.accept().await?;
        self.config.apply_tcp_options(&tcp)?;
        let (ws, request) = accept_with_config(tcp, self.config.clone()).await?;
        Ok((ws, request, peer))
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
        H: Fn(WebSocketStream<TcpStream>, Request<()>) -> F + Send + Sync + 'static,
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
        H: Fn(WebSocketStream<TcpStream>, Request<()>) -> F + Send + Sync + 'static,
        F: Future<Output = ()> + Send + 'static,
    {
        let Self {
            listener,
            config,
            max_connections,
            shutdown_timeout,
        } = self;
        let handler = Arc::new(handler);
        let shutdown = CancellationToken::new();
        let limit = Arc::new(Semaphore::new(max_connections));
        let mut tasks = JoinSet::new();
        let mut signal = std::pin::pin!(signal);
        loop {
            let (tcp, peer) = tokio::select! {
                () = &mut signal => break,
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
            let Ok(permit) = limit.clone().try_acquire_owned() else {
                tracing::info!(%peer, "connection limit reached: 503");
                // Best effort, never waits: the peer gets the answer if its buffer has room.
                let _ = tcp.try_write(OVERLOADED);
                continue;
            };
            let handler = handler.clone();
            let config = config.clone();
            let shutdown = shutdown.clone();
            tasks.spawn(async move {
                let _permit = permit;
                if let Err(e) = config.apply_tcp_options(&tcp) {
                    tracing::debug!(%peer, error = %e, "cannot set socket options");
                }
                let accepted = tokio::select! {
                    accepted = accept_with_config(tcp, config) => accepted,
                    () = shutdown.cancelled() => return,
                };
                match accepted {
                    Ok((mut ws, request)) => {
                        tracing::info!(%peer, path = %request.uri(), "connection open");
                        ws.set_shutdown_signal(shutdown);
                        handler(ws, request).await;
                    }
                    Err(Error::Handshake(err)) => log_rejected(peer, &err),
                    Err(e) => tracing::debug!(%peer, error = %e, "handshake failed"),
                }
            });
        }
        drop(listener);
        tracing::info!(connections = tasks.len(), "shutting down");
        shutdown.cancel();
        let drained = tokio::time::timeout(shutdown_timeout, async {
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
        Ok(())
    }
}

fn log_rejected(peer: SocketAddr, err: &HandshakeError) {
    tracing::info!(%peer, status = err.status(), error = %err, "handshake rejected");
}
