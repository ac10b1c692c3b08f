//! The client: URL parsing, TCP connect and the opening handshake over tokio.

use http::Response;
use sockeye_proto::handshake::{
    ClientHandshake, ClientRequest, Endpoint, HandshakeError, Outcome, RedirectError, Redirects,
};
use sockeye_proto::Role;
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _};
use tokio::net::TcpStream;

use crate::config::WebSocketConfig;
use crate::error::{Error, UrlError};
use crate::mask::nonce;
use crate::stream::WebSocketStream;
use crate::transport::MaybeTlsStream;

/// A parsed WebSocket URL.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct WsUrl {
    /// `wss` (or `https`): TLS.
    pub tls: bool,
    /// Host name or IP literal, without IPv6 brackets.
    pub host: String,
    /// Port (80 for `ws`, 443 for `wss` when the URL has none).
    pub port: u16,
    /// Path and query, at least `/`.
    pub resource: String,
    /// The `Host` header value (with the port when it is not the scheme's default).
    pub host_header: String,
    /// `Basic` credentials from the URL's userinfo (`ws://user:pass@host/`), as an
    /// `Authorization` header value.
    pub authorization: Option<String>,
}

impl WsUrl {
    /// Where it points, for the redirect rules.
    pub(crate) fn endpoint(&self) -> Endpoint<'_> {
        Endpoint {
            secure: self.tls,
            host: &self.host,
            port: self.port,
            authority: &self.host_header,
        }
    }

    /// Parses `ws[s]://[user[:pass]@]host[:port][/path][?query]`; `http` and `https` are
    /// accepted as `ws` and `wss`, as the WHATWG WebSocket constructor does.
    ///
    /// # Errors
    ///
    /// [`UrlError`] for a malformed URL, another scheme, a missing host or a fragment (which
    /// the WHATWG constructor rejects too).
    pub fn parse(url: &str) -> Result<Self, UrlError> {
        if url.contains('#') {
            return Err(UrlError::Fragment);
        }
        let uri: http::Uri = url.parse().map_err(|_| UrlError::Malformed)?;
        let scheme = uri
            .scheme_str()
            .ok_or(UrlError::Malformed)?
            .to_ascii_lowercase();
        let (tls, default_port) = match scheme.as_str() {
            "ws" | "http" => (false, 80),
            "wss" | "https" => (true, 443),
            other => return Err(UrlError::UnsupportedScheme(other.to_owned())),
        };
        let authority = uri.authority().ok_or(UrlError::MissingHost)?;
        let host = authority.host();
        if host.is_empty() {
            return Err(UrlError::MissingHost);
        }
        let port = authority.port_u16().unwrap_or(default_port);
        let host_header = if port == default_port {
            host.to_owned()
        } else {
            format!("{host}:{port}")
        };
        let authorization = authority
            .as_str()
            .rsplit_once('@')
            .filter(|(userinfo, _)| !userinfo.is_empty())
            .map(|(userinfo, _)| basic_authorization(userinfo))
            .transpose()?;
        let resource = uri
            .path_and_query()
            .map_or("/", http::uri::PathAndQuery::as_str);
        // RFC 6455 §3: the resource name is "/" when the path is empty, with the query after
        // it (`ws://h?x=1` asks for `/?x=1`).
        let resource = match resource {
            "" => "/".to_owned(),
            query if query.starts_with('?') => format!("/{query}"),
            path => path.to_owned(),
        };
        Ok(Self {
            tls,
            host: host
                .trim_start_matches('[')
                .trim_end_matches(']')
                .to_owned(),
            port,
            resource,
            host_header,
            authorization,
        })
    }
}

/// `Basic base64(user:password)` from a URL's percent-encoded userinfo (RFC 7617); a userinfo
/// without a password (`ws://user@host/`) has an empty one, as browsers and curl send it.
fn basic_authorization(userinfo: &str) -> Result<String, UrlError> {
    let mut decoded = percent_decode(userinfo).ok_or(UrlError::Malformed)?;
    if !userinfo.contains(':') {
        decoded.push(b':');
    }
    Ok(basic_credentials(&decoded))
}

/// `Basic base64(user-pass)` (RFC 7617 §2), for `Authorization` and `Proxy-Authorization`.
pub(crate) fn basic_credentials(user_pass: &[u8]) -> String {
    use base64::Engine as _;
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(user_pass)
    )
}

/// Decodes the `%XX` escapes of a URL component
/// ([RFC 3986 §2.1](https://www.rfc-editor.org/rfc/rfc3986#section-2.1)): user information,
/// a path. `None` when a `%` is not followed by exactly two hexadecimal digits.
///
/// ```
/// assert_eq!(sockeye::percent_decode("a%20b%2F").as_deref(), Some(&b"a b/"[..]));
/// assert_eq!(sockeye::percent_decode("%+1"), None);
/// ```
pub fn percent_decode(s: &str) -> Option<Vec<u8>> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&byte) = bytes.get(i) {
        if byte == b'%' {
            let [high, low] = *bytes.get(i + 1..i + 3)? else {
                return None;
            };
            // Two hex digits exactly: `u8::from_str_radix` alone would also take a sign ("%+1").
            out.push(hex_value(high)? << 4 | hex_value(low)?);
            i += 3;
        } else {
            out.push(byte);
            i += 1;
        }
    }
    Some(out)
}

/// The value of one hexadecimal digit.
fn hex_value(digit: u8) -> Option<u8> {
    match digit {
        b'0'..=b'9' => Some(digit - b'0'),
        b'a'..=b'f' => Some(digit - b'a' + 10),
        b'A'..=b'F' => Some(digit - b'A' + 10),
        _ => None,
    }
}

/// The upgrade request for `url`: the subprotocols and permessage-deflate offer of `config`,
/// and `Authorization` from the URL's credentials.
pub(crate) fn upgrade_request(
    url: &WsUrl,
    config: &WebSocketConfig,
    headers: &http::HeaderMap,
) -> Result<ClientRequest, Error> {
    let mut request = ClientRequest::new(url.host_header.clone(), url.resource.clone())
        .protocols(config.protocols.iter().cloned())?;
    if let Some(deflate) = &config.deflate {
        request = request.deflate(deflate.clone());
    }
    if let Some(auth) = &url.authorization {
        if let Ok(value) = http::HeaderValue::from_str(auth) {
            request = request.header(http::header::AUTHORIZATION, value);
        }
    }
    for (name, value) in headers {
        request = request.header(name.clone(), value.clone());
    }
    Ok(request)
}

/// The transport of client connections: TCP, or TLS over TCP for `wss://`.
pub type ClientStream = WebSocketStream<MaybeTlsStream<TcpStream>>;

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
    /// [`crate::h2`]): ALPN `h2` for `wss://`, prior knowledge (h2c) for `ws://`. The
    /// connection carries this one WebSocket; [`H2Connection`](crate::h2::H2Connection) opens
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
    /// [`UrlError::BadRedirect`] for a `wss` to `ws` redirect.
    pub async fn connect(mut self) -> Result<(ClientStream, Response<()>), Error> {
        if self.invalid_header {
            return Err(HandshakeError::BadHeader("invalid extra header").into());
        }
        // Invalid subprotocol names fail here, before any connection is made.
        ClientRequest::new("", "/").protocols(self.config.protocols.iter().cloned())?;
        let mut url = WsUrl::parse(&self.url)?;
        #[cfg(feature = "http2")]
        if self.http2 {
            return crate::h2::connect_one(url, self.config, &self.headers).await;
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
        let tcp = crate::proxy::connect_tcp(url, config).await?;
        config.apply_tcp_options(&tcp)?;
        let deadline = config.handshake_timeout;
        tokio::time::timeout(deadline, async {
            let io = if url.tls {
                tls_connect(tcp, url, config).await?
            } else {
                MaybeTlsStream::Plain(tcp)
            };
            let request = upgrade_request(url, config, &self.headers)?;
            handshake(io, &request, config.clone(), follow_redirects).await
        })
        .await
        .map_err(|_| Error::HandshakeTimeout)?
    }
}

/// The end of one connection attempt: connected, or redirected to a `Location`.
pub(crate) enum Attempt<C> {
    Connected(Box<C>, Response<()>),
    Redirect(String),
}

/// Takes a redirect from `url` to `location` by the handshake's rules ([`Redirects`]): the
/// next URL, with `headers` stripped of credentials when it is another origin. Shared by the
/// async and blocking clients.
pub(crate) fn follow_redirect(
    redirects: &mut Redirects,
    url: &WsUrl,
    location: &str,
    headers: &mut http::HeaderMap,
) -> Result<WsUrl, Error> {
    let refused = |e: RedirectError| match e {
        RedirectError::TooMany { .. } => Error::TooManyRedirects,
        RedirectError::BadLocation | RedirectError::Downgrade => UrlError::BadRedirect.into(),
    };
    let next = WsUrl::parse(
        &redirects
            .follow(&url.endpoint(), location)
            .map_err(refused)?,
    )?;
    Redirects::check(&url.endpoint(), &next.endpoint(), headers).map_err(refused)?;
    tracing::debug!(location, "following redirect");
    Ok(next)
}

#[cfg(feature = "rustls")]
async fn tls_connect(
    tcp: TcpStream,
    url: &WsUrl,
    config: &WebSocketConfig,
) -> Result<MaybeTlsStream<TcpStream>, Error> {
    let tls = match &config.tls_client {
        Some(tls) => tls.clone(),
        None => crate::tls::default_client_config()?,
    };
    crate::tls::connect(tcp, &url.host, tls).await
}

#[cfg(not(feature = "rustls"))]
async fn tls_connect(
    _tcp: TcpStream,
    _url: &WsUrl,
    _config: &WebSocketConfig,
) -> Result<MaybeTlsStream<TcpStream>, Error> {
    Err(UrlError::TlsDisabled.into())
}

async fn handshake<S: AsyncRead + AsyncWrite + Unpin>(
    mut io: S,
    request: &ClientRequest,
    config: WebSocketConfig,
    follow_redirects: bool,
) -> Result<Attempt<WebSocketStream<S>>, Error> {
    let mut out = Vec::new();
    let mut handshake = ClientHandshake::new(request, nonce()?, config.handshake.clone(), &mut out);
    io.write_all(&out).await?;
    io.flush().await?;
    let mut buf = Vec::with_capacity(1024);
    loop {
        if io.read_buf(&mut buf).await? == 0 {
            return Err(Error::Io(std::io::ErrorKind::UnexpectedEof.into()));
        }
        let Some((response, used)) = handshake.parse_response(&buf)? else {
            continue;
        };
        return match handshake.outcome(&response, follow_redirects)? {
            Outcome::Accepted(negotiated) => {
                tracing::debug!(status = %response.status(), "websocket client connected");
                let leftover = &buf[used..];
                let ws = WebSocketStream::from_negotiated(
                    io,
                    Role::Client,
                    config,
                    negotiated,
                    leftover,
                );
                Ok(Attempt::Connected(Box::new(ws), response))
            }
            Outcome::Redirect(location) => Ok(Attempt::Redirect(location)),
            Outcome::Refused { body_len } => {
                let body = read_body(&mut io, body_len, buf.split_off(used)).await;
                let (parts, ()) = response.into_parts();
                Err(Error::Http(Box::new(Response::from_parts(parts, body))))
            }
        };
    }
}

/// Reads the body of a refusal: `wanted` bytes ([`Outcome::Refused`]), fewer if the connection
/// ends or the peer pauses for [`BODY_QUIET`]. Chunked bodies are kept as they came (not
/// decoded).
async fn read_body<S: AsyncRead + Unpin>(io: &mut S, wanted: usize, mut body: Vec<u8>) -> Vec<u8> {
    // A body without a length on a connection kept open (chunked, keep-alive) has no end we
    // can see: stop after a short quiet spell so the status is reported, not a timeout.
    while body.len() < wanted {
        match tokio::time::timeout(BODY_QUIET, io.read_buf(&mut body)).await {
            Ok(Ok(0) | Err(_)) | Err(_) => break,
            Ok(Ok(_)) => {}
        }
    }
    body.truncate(wanted);
    body
}

/// How long a refusal's body may pause before the client reports what arrived.
pub(crate) const BODY_QUIET: std::time::Duration = std::time::Duration::from_millis(500);

/// Performs the client handshake on an established transport (no timeout: wrap it in
/// `tokio::time::timeout`), with the extensions and subprotocols in `config`.
///
/// # Errors
///
/// [`Error::Io`], [`Error::Http`] and [`Error::Handshake`].
pub async fn client_handshake<S: AsyncRead + AsyncWrite + Unpin>(
    io: S,
    request: &ClientRequest,
    config: WebSocketConfig,
) -> Result<(WebSocketStream<S>, Response<()>), Error> {
    match handshake(io, request, config, false).await? {
        Attempt::Connected(ws, response) => Ok((*ws, response)),
        Attempt::Redirect(_) => Err(Error::TooManyRedirects),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percent_decode_takes_exactly_two_hex_digits() {
        assert_eq!(
            percent_decode("/a%2e%2E/b%7e").as_deref(),
            Some(&b"/a../b~"[..])
        );
        assert_eq!(percent_decode("%00%ff").as_deref(), Some(&[0, 255][..]));
        // `from_str_radix` accepts a sign: "%+1" and "%-0" once decoded to 1 and 0.
        for bad in ["%", "%2", "%zz", "%+1", "%-0", "%+f", "% 1", "%1g", "a%é"] {
            assert_eq!(percent_decode(bad), None, "{bad:?}");
        }
        // The same rule for credentials in a URL.
        assert_eq!(
            WsUrl::parse("ws://us%+1er:pw@example.com/").unwrap_err(),
            UrlError::Malformed
        );
    }

    #[test]
    fn parses_urls() {
        let u = WsUrl::parse("ws://example.com/chat?x=1").unwrap();
        assert_eq!(
            (u.host.as_str(), u.port, u.resource.as_str()),
            ("example.com", 80, "/chat?x=1")
        );
        assert_eq!(u.host_header, "example.com");
        let u = WsUrl::parse("ws://[::1]:9001").unwrap();
        assert_eq!(
            (u.host.as_str(), u.port, u.resource.as_str()),
            ("::1", 9001, "/")
        );
        assert_eq!(u.host_header, "[::1]:9001");
        let u = WsUrl::parse("http://127.0.0.1:80/a").unwrap();
        assert_eq!(u.host_header, "127.0.0.1");
        assert_eq!(WsUrl::parse("ws://h/#frag"), Err(UrlError::Fragment));
        assert_eq!(
            WsUrl::parse("ftp://h/"),
            Err(UrlError::UnsupportedScheme("ftp".into()))
        );
        let u = WsUrl::parse("wss://example.com/a").unwrap();
        assert!(u.tls);
        assert_eq!((u.port, u.host_header.as_str()), (443, "example.com"));
        let u = WsUrl::parse("https://example.com:8443").unwrap();
        assert_eq!((u.tls, u.host_header.as_str()), (true, "example.com:8443"));
        let u = WsUrl::parse("ws://Aladdin:open%20sesame@h/").unwrap();
        assert_eq!(
            u.authorization.as_deref(),
            Some("Basic QWxhZGRpbjpvcGVuIHNlc2FtZQ==")
        );
        assert_eq!(u.host_header, "h");
        assert_eq!(WsUrl::parse("ws://a:%zz@h/"), Err(UrlError::Malformed));
        assert_eq!(WsUrl::parse("not a url"), Err(UrlError::Malformed));
        assert_eq!(WsUrl::parse("/just/a/path"), Err(UrlError::Malformed));
    }
}
