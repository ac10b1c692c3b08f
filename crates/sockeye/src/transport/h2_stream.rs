//! One stream of an HTTP/2 connection (RFC 8441) as a byte transport.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};

use hyper::upgrade::Upgraded;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

#[cfg(doc)]
use crate::transport::Transport;

/// One stream of an HTTP/2 connection carrying a WebSocket: the transport of
/// [`Transport::Http2`]. Reading yields the stream's DATA; writing sends DATA within
/// HTTP/2 flow control; shutting down ends the stream (END_STREAM).
#[derive(Debug)]
pub struct H2Stream {
    io: TokioIo<Upgraded>,
    peer: Option<SocketAddr>,
    tls: bool,
}

impl H2Stream {
    pub(crate) fn new(upgraded: Upgraded, peer: Option<SocketAddr>, tls: bool) -> Self {
        Self {
            io: TokioIo::new(upgraded),
            peer,
            tls,
        }
    }

    /// The address of the peer of the HTTP/2 connection, when known.
    pub fn peer_addr(&self) -> Option<SocketAddr> {
        self.peer
    }

    /// Whether the HTTP/2 connection runs over TLS (else cleartext h2c).
    pub fn is_tls(&self) -> bool {
        self.tls
    }
}

impl AsyncRead for H2Stream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl AsyncWrite for H2Stream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}
