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
}

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
        }
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
        tcp.set_nodelay(true)?;
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
        let handler = Arc::new(handler);
        loop {
            let (tcp, peer) = match self.listener.accept().await {
                Ok(accepted) => accepted,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            let handler = handler.clone();
            let config = self.config.clone();
            tokio::spawn(async move {
                let _ = tcp.set_nodelay(true);
                match accept_with_config(tcp, config).await {
                    Ok((ws, request)) => {
                        tracing::info!(%peer, path = %request.uri(), "connection open");
                        handler(ws, request).await;
                    }
                    Err(Error::Handshake(err)) => log_rejected(peer, &err),
                    Err(e) => tracing::debug!(%peer, error = %e, "handshake failed"),
                }
            });
        }
    }
}

fn log_rejected(peer: SocketAddr, err: &HandshakeError) {
    tracing::info!(%peer, status = err.status(), error = %err, "handshake rejected");
}
