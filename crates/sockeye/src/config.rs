//! Settings of the tokio layer. Every default is safe for a server on the open internet.

use std::time::Duration;

use sockeye_proto::deflate::{DeflateConfig, DeflateParams};
use sockeye_proto::handshake::HandshakeConfig;
use sockeye_proto::{Connection, MaskSource, Role};

use crate::client::proxy::ProxyConfig;

/// Settings for a client or server connection.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct WebSocketConfig {
    /// Limits of the protocol core: frame and message size (default 16 MiB each).
    pub protocol: sockeye_proto::Config,
    /// Limits of the opening handshake: head size (16 KiB) and header count (128).
    pub handshake: HandshakeConfig,
    /// Longest time the opening handshake may take, from TCP accept (or connect) to the last
    /// byte of the head. Guards against slowloris clients.
    ///
    /// Default: 10 s.
    pub handshake_timeout: Duration,
    /// Longest wait for the peer's close frame after sending ours, and, as a client, for the
    /// server to close TCP after the close handshake. Then the connection is dropped.
    ///
    /// Default: 10 s.
    pub close_timeout: Duration,
    /// Outgoing bytes buffered before `Sink::poll_ready` (and so `send().await`) waits for the
    /// socket. Raising it trades memory per slow peer for fewer waits.
    ///
    /// Default: 64 KiB.
    pub write_buffer_high_water: usize,
    /// Size of the buffer each read from the socket fills.
    ///
    /// Default: 64 KiB.
    pub read_buffer_size: usize,
    /// permessage-deflate (RFC 7692): a client offers it, a server accepts offers. Costs CPU and
    /// about 300 KiB of zlib state per connection; `max_message_size` bounds the *decompressed*
    /// size, checked while inflating.
    ///
    /// Default: `None` (off).
    pub deflate: Option<DeflateConfig>,
    /// Send a ping when nothing has been received for this long; `None` disables keepalive.
    /// Timers run while the stream (or its receiving half) is being polled.
    ///
    /// Default: 20 s.
    pub keepalive_interval: Option<Duration>,
    /// After a keepalive ping, how long to wait for a pong or any other data. Then the
    /// connection is aborted with close code 1011 and the stream yields
    /// [`Error::KeepaliveTimeout`](crate::Error::KeepaliveTimeout).
    ///
    /// Default: 20 s.
    pub keepalive_timeout: Duration,
    /// Close the connection (code 1001, reason "idle timeout") when no text or binary message
    /// has been received or sent for this long. `None` disables it.
    ///
    /// Default: `None`.
    pub idle_timeout: Option<Duration>,
    /// Longest time the transport may refuse every byte while output is queued (a peer that
    /// stopped reading). Then queued output is dropped and the connection is aborted with close
    /// code 1008 ("peer too slow"); the stream yields
    /// [`Error::WriteTimeout`](crate::Error::WriteTimeout). `None`: wait forever (keepalive
    /// still catches peers that neither read nor answer pings).
    ///
    /// Default: `None`.
    pub write_timeout: Option<Duration>,
    /// Set `TCP_NODELAY` on sockets sockeye opens or accepts (frames are written whole, so
    /// Nagle's algorithm only adds latency).
    ///
    /// Default: true.
    pub tcp_nodelay: bool,
    /// Enable TCP keepalive probes after this much idle time on sockets sockeye opens or
    /// accepts. `None` leaves the OS default (off on Linux).
    ///
    /// Default: `None`.
    pub tcp_keepalive: Option<Duration>,
    /// Subprotocols: a client offers them in this order; a server selects the first one the
    /// client offered, in the client's order, that appears here (unless a handshake callback
    /// chooses). Empty: none offered or selected.
    ///
    /// Default: empty.
    pub protocols: Vec<String>,
    /// Longest time for DNS resolution and the TCP connect (or the proxy tunnel).
    ///
    /// Default: 10 s.
    pub connect_timeout: Duration,
    /// Redirects (301, 302, 307, 308) a client follows during the handshake; `ws` to `wss` is
    /// allowed, `wss` to `ws` refused. 0 disables redirects.
    ///
    /// Default: 0.
    pub max_redirects: usize,
    /// Where a client connects: directly, through a [`Proxy`](crate::Proxy) (HTTP `CONNECT`
    /// or SOCKS5), or through the proxy the environment names (`HTTPS_PROXY`, `HTTP_PROXY`,
    /// `ALL_PROXY`, `NO_PROXY`, as curl reads them). The tunnel counts against
    /// [`connect_timeout`](Self::connect_timeout); TLS and the handshake then run through it
    /// to the server, so a proxy sees only the server's host and port, and TLS still verifies
    /// the server's name.
    ///
    /// Default: [`ProxyConfig::Direct`] (the environment is read only when asked).
    pub proxy: ProxyConfig,
    /// The TLS configuration of `wss://` clients. `None`: the bundled Mozilla roots
    /// (`webpki-roots`) with ALPN `http/1.1`; see [`tls::client_config`](crate::tls::client_config)
    /// to add a private CA.
    ///
    /// Default: `None`.
    #[cfg(feature = "rustls")]
    pub tls_client: Option<std::sync::Arc<tokio_rustls::rustls::ClientConfig>>,
}

impl Default for WebSocketConfig {
    fn default() -> Self {
        Self {
            protocol: sockeye_proto::Config::default(),
            handshake: HandshakeConfig::default(),
            handshake_timeout: Duration::from_secs(10),
            close_timeout: Duration::from_secs(10),
            write_buffer_high_water: 64 << 10,
            read_buffer_size: 64 << 10,
            deflate: None,
            keepalive_interval: Some(Duration::from_secs(20)),
            keepalive_timeout: Duration::from_secs(20),
            idle_timeout: None,
            write_timeout: None,
            tcp_nodelay: true,
            tcp_keepalive: None,
            protocols: Vec::new(),
            connect_timeout: Duration::from_secs(10),
            max_redirects: 0,
            proxy: ProxyConfig::Direct,
            #[cfg(feature = "rustls")]
            tls_client: None,
        }
    }
}

impl WebSocketConfig {
    /// The protocol state machine of a connection whose handshake agreed `deflate`, fed the
    /// `leftover` bytes read past the handshake head: what the async and blocking streams
    /// drive. `self.deflate` supplies the compression level and threshold.
    pub(crate) fn connection(
        &self,
        role: Role,
        masks: Box<dyn MaskSource>,
        deflate: Option<DeflateParams>,
        leftover: &[u8],
    ) -> Connection {
        let mut conn = Connection::new(role, self.protocol.clone(), masks);
        if let Some(params) = deflate {
            conn = conn.with_deflate(params, &self.deflate.clone().unwrap_or_default());
        }
        conn.handle_bytes(leftover);
        conn
    }

    /// Sets the largest message (after reassembly) accepted; `None` removes the limit.
    #[must_use]
    pub fn max_message_size(mut self, limit: Option<usize>) -> Self {
        self.protocol.max_message_size = limit;
        self
    }

    /// Sets the largest frame payload accepted; `None` removes the limit.
    #[must_use]
    pub fn max_frame_size(mut self, limit: Option<usize>) -> Self {
        self.protocol.max_frame_size = limit;
        self
    }

    /// Sets [`handshake_timeout`](Self::handshake_timeout).
    #[must_use]
    pub fn handshake_timeout(mut self, timeout: Duration) -> Self {
        self.handshake_timeout = timeout;
        self
    }

    /// Sets [`close_timeout`](Self::close_timeout).
    #[must_use]
    pub fn close_timeout(mut self, timeout: Duration) -> Self {
        self.close_timeout = timeout;
        self
    }

    /// Sets [`deflate`](Self::deflate).
    #[must_use]
    pub fn deflate(mut self, deflate: Option<DeflateConfig>) -> Self {
        self.deflate = deflate;
        self
    }

    /// Sets [`keepalive_interval`](Self::keepalive_interval) and
    /// [`keepalive_timeout`](Self::keepalive_timeout).
    #[must_use]
    pub fn keepalive(mut self, interval: Option<Duration>, timeout: Duration) -> Self {
        self.keepalive_interval = interval;
        self.keepalive_timeout = timeout;
        self
    }

    /// Sets [`protocols`](Self::protocols).
    #[must_use]
    pub fn protocols<I, P>(mut self, protocols: I) -> Self
    where
        I: IntoIterator<Item = P>,
        P: Into<String>,
    {
        self.protocols = protocols.into_iter().map(Into::into).collect();
        self
    }

    /// Sets [`max_redirects`](Self::max_redirects).
    #[must_use]
    pub fn max_redirects(mut self, max: usize) -> Self {
        self.max_redirects = max;
        self
    }

    /// Sets [`proxy`](Self::proxy): a [`Proxy`](crate::Proxy), or a [`ProxyConfig`].
    ///
    /// ```
    /// use sockeye::{Proxy, ProxyConfig, WebSocketConfig};
    ///
    /// let via_squid = WebSocketConfig::default().proxy(Proxy::http("squid.internal", 3128));
    /// let like_curl = WebSocketConfig::default().proxy(ProxyConfig::FromEnv);
    /// # drop((via_squid, like_curl));
    /// ```
    #[must_use]
    pub fn proxy(mut self, proxy: impl Into<ProxyConfig>) -> Self {
        self.proxy = proxy.into();
        self
    }

    /// Sets [`tls_client`](Self::tls_client).
    #[cfg(feature = "rustls")]
    #[must_use]
    pub fn tls_client(
        mut self,
        config: std::sync::Arc<tokio_rustls::rustls::ClientConfig>,
    ) -> Self {
        self.tls_client = Some(config);
        self
    }

    /// Sets [`idle_timeout`](Self::idle_timeout).
    #[must_use]
    pub fn idle_timeout(mut self, timeout: Option<Duration>) -> Self {
        self.idle_timeout = timeout;
        self
    }

    /// Sets [`write_timeout`](Self::write_timeout).
    #[must_use]
    pub fn write_timeout(mut self, timeout: Option<Duration>) -> Self {
        self.write_timeout = timeout;
        self
    }

    /// Applies [`tcp_nodelay`](Self::tcp_nodelay) and [`tcp_keepalive`](Self::tcp_keepalive) to
    /// a socket.
    pub(crate) fn apply_tcp_options(&self, tcp: &tokio::net::TcpStream) -> std::io::Result<()> {
        tcp.set_nodelay(self.tcp_nodelay)?;
        if let Some(idle) = self.tcp_keepalive {
            let keepalive = socket2::TcpKeepalive::new().with_time(idle);
            socket2::SockRef::from(tcp).set_tcp_keepalive(&keepalive)?;
        }
        Ok(())
    }

    /// Sets [`write_buffer_high_water`](Self::write_buffer_high_water).
    #[must_use]
    pub fn write_buffer_high_water(mut self, bytes: usize) -> Self {
        self.write_buffer_high_water = bytes;
        self
    }
}
