//! The client: [`ClientBuilder`], [`connect`] and the redirect loop over tokio.
//!
//! Below it, each a leaf: `url.rs` parses `ws://`/`wss://` URLs, `proxy.rs` chooses and opens
//! proxy tunnels, `tcp.rs` opens the TCP connection (direct or through the proxy),
//! `handshake.rs` runs the opening handshake on an established transport. HTTP/2
//! (`crate::http2`, feature `http2`) sits above this folder and is reached from
//! [`ClientBuilder::connect`] through one `#[cfg]`; it uses only the leaves.

pub(crate) mod handshake;
pub(crate) mod proxy;
pub(crate) mod tcp;
pub(crate) mod url;

pub use handshake::client_handshake;
use handshake::handshake;
pub(crate) use handshake::{follow_redirect, upgrade_request, Attempt, BODY_QUIET};
pub use url::{percent_decode, WsUrl};

use http::Response;
use sockeye_proto::handshake::{ClientRequest, HandshakeError, Redirects};

use crate::config::WebSocketConfig;
use crate::error::Error;
use crate::stream::ClientStream;
use crate::transport::Transport;

/// Connects to a `ws://` or `wss://` URL with default settings.
///
/// ```no_run
/// # async fn run() -> Result<(), sockeye::Error> {
/// use futures_util::StreamExt;
/// use sockeye::Message;
///
/// let (mut ws, _response) = sockeye::connect("ws://127.0.0.1:9001/chat").await?;
/// ws.send(Message::text("hello")).await?;
/// if let Some(Ok(Message::Text(reply))) = ws.next().await {
///     println!("{reply}");
/// }
/// ws.close(sockeye::CloseCode::NORMAL, "bye").await?;
/// # Ok(()) }
/// ```
///
/// # Errors
///
/// [`Error::Url`], [`Error::Io`] when the TCP connection fails, [`Error::Tls`],
/// [`Error::Http`] when the server answers with another status, [`Error::Handshake`] when its
/// answer is not a valid upgrade, [`Error::ConnectTimeout`], [`Error::HandshakeTimeout`],
/// [`Error::Proxy`] when the configured proxy refuses the tunnel.
pub async fn connect(url: &str) -> Result<(ClientStream, Response<()>), Error> {
    ClientBuilder::new(url).connect().await
}

/// Connects to a `ws://` or `wss://` URL with `config`.
///
/// # Errors
///
/// As [`connect`].
pub async fn connect_with_config(
    url: &str,
    config: WebSocketConfig,
) -> Result<(ClientStream, Response<()>), Error> {
    ClientBuilder::new(url).config(config).connect().await
}

/// Builds a client connection: URL, settings, subprotocols, extra headers, `Origin`.
///
/// ```no_run
/// # async fn run() -> Result<(), sockeye::Error> {
/// let (ws, _) = sockeye::ClientBuilder::new("wss://example.com/graphql")
///     .protocols(["graphql-transport-ws"])
///     .header("authorization", "Bearer secret")
///     .origin("https://example.com")
///     .connect()
///     .await?;
/// assert_eq!(ws.protocol(), Some("graphql-transport-ws"));
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct ClientBuilder {
    url: String,
    config: WebSocketConfig,
    headers: http::HeaderMap,
    invalid_header: bool,
    #[cfg(feature = "http2")]
    http2: bool,
}

impl ClientBuilder {
    /// A connection to `url` with default settings.
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            config: WebSocketConfig::default(),
            headers: http::HeaderMap::new(),
            invalid_header: false,
            #[cfg(feature = "http2")]
            http2: false,
        }
    }

    /// Connects over HTTP/2 with an extended CONNECT (RFC 8441, feature `http2`; see
    /// [`crate::http2`]): ALPN `h2` for `wss://`, prior knowledge (h2c) for `ws://`. The
    /// connection carries this one WebSocket; [`H2Connection`](crate::http2::H2Connection) opens
    /// several over one connection. Redirects are not followed (a 3xx is [`Error::Http`]).
    ///
    /// [`connect`](Self::connect) then also fails with [`Error::Http2NotNegotiated`] when a
    /// TLS server does not pick `h2`, and [`Error::ExtendedConnectDisabled`] when the server
    /// does not allow extended CONNECT. Default: off (HTTP/1.1).
    #[cfg(feature = "http2")]
    #[must_use]
    pub fn http2(mut self, enabled: bool) -> Self {
        self.http2 = enabled;
        self
    }

    /// Uses `config`.
    #[must_use]
    pub fn config(mut self, config: WebSocketConfig) -> Self {
        self.config = config;
        self
    }

    /// Offers these subprotocols, most preferred first (sets
    /// [`WebSocketConfig::protocols`]).
    #[must_use]
    pub fn protocols<I, P>(mut self, protocols: I) -> Self
    where
        I: IntoIterator<Item = P>,
        P: Into<String>,
    {
        self.config = self.config.protocols(protocols);
        self
    }

    /// Adds a request header (a token, a cookie). An invalid name or value makes
    /// [`connect`](Self::connect) fail with [`HandshakeError::BadHeader`].
    #[must_use]
    pub fn header(mut self, name: &str, value: &str) -> Self {
        match (
            http::HeaderName::from_bytes(name.as_bytes()),
            http::HeaderValue::from_str(value),
        ) {
            (Ok(name), Ok(value)) => {
                self.headers.append(name, value);
            }
            _ => self.invalid_header = true,
        }
        self
    }

    /// Sets the `Origin` header, as a browser does.
    #[must_use]
    pub fn origin(self, origin: &str) -> Self {
        self.header("origin", origin)
    }

    /// Connects and performs the opening handshake, following redirects up to
    /// [`WebSocketConfig::max_redirects`].
    ///
    /// A redirect to another origin (scheme, host or port) drops the `Authorization` and
    /// `Cookie` headers added with [`header`](Self::header), as Fetch, curl and Go do: they
    /// were meant for the first server.
    ///
    /// # Errors
    ///
    /// As [`connect`]; [`Error::TooManyRedirects`]; [`Error::Url`] with
    /// [`UrlError::BadRedirect`](crate::UrlError::BadRedirect) for a `wss` to `ws` redirect.
    pub async fn connect(mut self) -> Result<(ClientStream, Response<()>), Error> {
        if self.invalid_header {
            return Err(HandshakeError::BadHeader("invalid extra header").into());
        }
        // Invalid subprotocol names fail here, before any connection is made.
        ClientRequest::new("", "/").protocols(self.config.protocols.iter().cloned())?;
        let mut url = WsUrl::parse(&self.url)?;
        #[cfg(feature = "http2")]
        if self.http2 {
            return crate::http2::connect_one(url, self.config, &self.headers).await;
        }
        let mut redirects = Redirects::new(self.config.max_redirects);
        loop {
            match self.connect_once(&url, redirects.enabled()).await? {
                Attempt::Connected(ws, response) => return Ok((*ws, response)),
                Attempt::Redirect(location) => {
                    url = follow_redirect(&mut redirects, &url, &location, &mut self.headers)?;
                }
            }
        }
    }

    async fn connect_once(
        &self,
        url: &WsUrl,
        follow_redirects: bool,
    ) -> Result<Attempt<ClientStream>, Error> {
        let config = &self.config;
        let tcp = tcp::connect_tcp(url, config).await?;
        config.apply_tcp_options(&tcp)?;
        let deadline = config.handshake_timeout;
        tokio::time::timeout(deadline, async {
            let io = if url.tls {
                crate::transport::connect_tls(tcp, &url.host, config, &[]).await?
            } else {
                Transport::Plain(tcp)
            };
            let request = upgrade_request(url, config, &self.headers)?;
            handshake(io, &request, config.clone(), follow_redirects).await
        })
        .await
        .map_err(|_| Error::HandshakeTimeout)?
    }
}
