//! [`Transport`]: the transport of connections sockeye opens or accepts itself.
//!
//! With the `http2` feature a connection may also be one stream of an HTTP/2 connection
//! ([`Transport::Http2`], RFC 8441), so that servers and clients hand out one
//! WebSocket type whichever HTTP version carried the handshake.

#[cfg(feature = "http2")]
mod h2_stream;
mod rewind;
#[cfg(feature = "rustls")]
pub mod tls;

#[cfg(feature = "http2")]
pub(crate) use h2_stream::H2Stream;
pub(crate) use rewind::Rewind;

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// The transport of a connection sockeye opened or accepted itself: plain TCP, TLS over it, or
/// (feature `http2`) one stream of an HTTP/2 connection.
#[derive(Debug)]
#[non_exhaustive]
pub enum Transport<S> {
    /// Unencrypted (`ws://`).
    Plain(S),
    /// TLS, client side (`wss://`).
    #[cfg(feature = "rustls")]
    ClientTls(Box<tokio_rustls::client::TlsStream<S>>),
    /// TLS, server side.
    #[cfg(feature = "rustls")]
    ServerTls(Box<tokio_rustls::server::TlsStream<S>>),
    /// One stream of an HTTP/2 connection (extended CONNECT, RFC 8441), over TLS or cleartext
    /// (h2c). The connection itself is driven by its own task.
    #[cfg(feature = "http2")]
    Http2(Box<H2Stream>),
}

impl<S> Transport<S> {
    /// Whether the transport is encrypted.
    pub fn is_tls(&self) -> bool {
        match self {
            Self::Plain(_) => false,
            #[cfg(feature = "http2")]
            Self::Http2(s) => s.is_tls(),
            #[cfg(feature = "rustls")]
            _ => true,
        }
    }

    /// The underlying transport; `None` for a stream of an HTTP/2 connection, whose transport
    /// is shared by every stream and owned by the connection's task.
    pub fn get_ref(&self) -> Option<&S> {
        match self {
            Self::Plain(s) => Some(s),
            #[cfg(feature = "rustls")]
            Self::ClientTls(s) => Some(s.get_ref().0),
            #[cfg(feature = "rustls")]
            Self::ServerTls(s) => Some(s.get_ref().0),
            #[cfg(feature = "http2")]
            Self::Http2(_) => None,
        }
    }

    /// The HTTP version that carried the opening handshake: HTTP/2 for
    /// [`Http2`](Self::Http2), HTTP/1.1 otherwise.
    pub fn http_version(&self) -> http::Version {
        match self {
            #[cfg(feature = "http2")]
            Self::Http2(_) => http::Version::HTTP_2,
            _ => http::Version::HTTP_11,
        }
    }

    /// The ALPN protocol agreed in the TLS handshake, if any.
    pub fn alpn_protocol(&self) -> Option<&[u8]> {
        match self {
            Self::Plain(_) => None,
            #[cfg(feature = "rustls")]
            Self::ClientTls(s) => s.get_ref().1.alpn_protocol(),
            #[cfg(feature = "rustls")]
            Self::ServerTls(s) => s.get_ref().1.alpn_protocol(),
            #[cfg(feature = "http2")]
            Self::Http2(s) => s.is_tls().then_some(&b"h2"[..]),
        }
    }
}

impl Transport<tokio::net::TcpStream> {
    /// The peer's address: of the TCP connection, or of the HTTP/2 connection carrying the
    /// stream.
    ///
    /// # Errors
    ///
    /// When the OS cannot tell, or the address of an HTTP/2 connection is not known.
    pub fn peer_addr(&self) -> io::Result<std::net::SocketAddr> {
        match self {
            #[cfg(feature = "http2")]
            Self::Http2(s) => s
                .peer_addr()
                .ok_or_else(|| io::Error::other("peer address not known")),
            other => match other.get_ref() {
                Some(tcp) => tcp.peer_addr(),
                None => Err(io::Error::other("peer address not known")),
            },
        }
    }
}

macro_rules! delegate {
    ($self:ident, $s:ident => $e:expr) => {
        match $self.get_mut() {
            Transport::Plain($s) => $e,
            #[cfg(feature = "rustls")]
            Transport::ClientTls($s) => $e,
            #[cfg(feature = "rustls")]
            Transport::ServerTls($s) => $e,
            #[cfg(feature = "http2")]
            Transport::Http2($s) => $e,
        }
    };
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncRead for Transport<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        delegate!(self, s => Pin::new(s).poll_read(cx, buf))
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncWrite for Transport<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        delegate!(self, s => Pin::new(s).poll_write(cx, buf))
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        delegate!(self, s => Pin::new(s).poll_write_vectored(cx, bufs))
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Self::Plain(s) => s.is_write_vectored(),
            #[cfg(feature = "rustls")]
            Self::ClientTls(s) => s.is_write_vectored(),
            #[cfg(feature = "rustls")]
            Self::ServerTls(s) => s.is_write_vectored(),
            #[cfg(feature = "http2")]
            Self::Http2(s) => s.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        delegate!(self, s => Pin::new(s).poll_flush(cx))
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        delegate!(self, s => Pin::new(s).poll_shutdown(cx))
    }
}

/// Opens TLS over `tcp` to `host` with the client settings of `config` (its `tls_client`, else
/// the bundled roots), offering `alpn` instead of the configuration's own protocols when some
/// are given.
///
/// # Errors
///
/// [`Error::Tls`]; [`UrlError::TlsDisabled`](crate::UrlError::TlsDisabled) in a build without
/// TLS.
pub(crate) async fn connect_tls(
    tcp: tokio::net::TcpStream,
    host: &str,
    config: &crate::WebSocketConfig,
    alpn: &[&[u8]],
) -> Result<Transport<tokio::net::TcpStream>, crate::Error> {
    #[cfg(feature = "rustls")]
    {
        let (tls, name) = tls::client_session(config.tls_client.as_ref(), host, alpn)?;
        tls::connect(tcp, name, tls).await
    }
    #[cfg(not(feature = "rustls"))]
    {
        let _ = (tcp, host, config, alpn);
        Err(crate::error::UrlError::TlsDisabled.into())
    }
}
