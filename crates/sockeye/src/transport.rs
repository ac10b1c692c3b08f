//! [`MaybeTlsStream`]: the transport of connections sockeye opens or accepts itself.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// A transport that is plain TCP or TLS over it.
#[derive(Debug)]
#[non_exhaustive]
pub enum MaybeTlsStream<S> {
    /// Unencrypted (`ws://`).
    Plain(S),
    /// TLS, client side (`wss://`).
    #[cfg(feature = "rustls")]
    ClientTls(Box<tokio_rustls::client::TlsStream<S>>),
    /// TLS, server side.
    #[cfg(feature = "rustls")]
    ServerTls(Box<tokio_rustls::server::TlsStream<S>>),
}

impl<S> MaybeTlsStream<S> {
    /// Whether the transport is encrypted.
    pub fn is_tls(&self) -> bool {
        !matches!(self, Self::Plain(_))
    }

    /// The underlying transport.
    pub fn get_ref(&self) -> &S {
        match self {
            Self::Plain(s) => s,
            #[cfg(feature = "rustls")]
            Self::ClientTls(s) => s.get_ref().0,
            #[cfg(feature = "rustls")]
            Self::ServerTls(s) => s.get_ref().0,
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
        }
    }
}

macro_rules! delegate {
    ($self:ident, $s:ident => $e:expr) => {
        match $self.get_mut() {
            MaybeTlsStream::Plain($s) => $e,
            #[cfg(feature = "rustls")]
            MaybeTlsStream::ClientTls($s) => $e,
            #[cfg(feature = "rustls")]
            MaybeTlsStream::ServerTls($s) => $e,
        }
    };
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncRead for MaybeTlsStream<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        delegate!(self, s => Pin::new(s).poll_read(cx, buf))
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncWrite for MaybeTlsStream<S> {
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
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        delegate!(self, s => Pin::new(s).poll_flush(cx))
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        delegate!(self, s => Pin::new(s).poll_shutdown(cx))
    }
}
