//! [`Rewind`]: a transport whose first reads give back bytes already read from it, so that a
//! server can look at the start of a connection (the HTTP/2 preface, RFC 9113 §3.4) and still
//! hand the whole byte stream to whichever protocol it turned out to be.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// A transport whose reads yield `prefix` (bytes read from it before) and then the
/// transport's own bytes; writes go straight to the transport.
#[derive(Debug)]
pub(crate) struct Rewind<S> {
    /// Bytes read ahead, replayed first; freed once replayed.
    prefix: Vec<u8>,
    /// Bytes of `prefix` already replayed.
    replayed: usize,
    io: S,
}

impl<S> Rewind<S> {
    /// `io`, whose reads first give back `prefix`.
    pub(crate) fn new(prefix: Vec<u8>, io: S) -> Self {
        Self {
            prefix,
            replayed: 0,
            io,
        }
    }

    /// `io` with nothing to replay.
    pub(crate) fn plain(io: S) -> Self {
        Self::new(Vec::new(), io)
    }

    /// The transport.
    #[cfg(feature = "http2")]
    pub(crate) fn get_ref(&self) -> &S {
        &self.io
    }

    /// The transport and the bytes read ahead that were not replayed yet.
    pub(crate) fn into_parts(mut self) -> (S, Vec<u8>) {
        self.prefix.drain(..self.replayed);
        (self.io, self.prefix)
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Rewind<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let rest = &this.prefix[this.replayed..];
        if rest.is_empty() {
            return Pin::new(&mut this.io).poll_read(cx, buf);
        }
        let n = rest.len().min(buf.remaining());
        buf.put_slice(&rest[..n]);
        this.replayed += n;
        if this.replayed == this.prefix.len() {
            this.prefix = Vec::new();
            this.replayed = 0;
        }
        Poll::Ready(Ok(()))
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Rewind<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

    use super::Rewind;

    #[tokio::test]
    async fn replays_the_prefix_then_reads_the_transport() {
        let (mut peer, io) = tokio::io::duplex(64);
        peer.write_all(b" world").await.unwrap();
        drop(peer);
        let mut rewind = Rewind::new(b"hello".to_vec(), io);
        // A read smaller than the prefix takes part of it; the rest comes next.
        let mut small = [0; 3];
        assert_eq!(rewind.read(&mut small).await.unwrap(), 3);
        assert_eq!(&small, b"hel");
        let mut all = Vec::new();
        rewind.read_to_end(&mut all).await.unwrap();
        assert_eq!(all, b"lo world");
    }

    #[tokio::test]
    async fn parts_keep_what_was_not_replayed_and_writes_pass_through() {
        let (mut peer, io) = tokio::io::duplex(64);
        let mut rewind = Rewind::new(b"abcdef".to_vec(), io);
        let mut two = [0; 2];
        rewind.read_exact(&mut two).await.unwrap();
        rewind.write_all(b"out").await.unwrap();
        let (_io, rest) = rewind.into_parts();
        assert_eq!(rest, b"cdef");
        let mut out = [0; 3];
        peer.read_exact(&mut out).await.unwrap();
        assert_eq!(&out, b"out");
    }
}
