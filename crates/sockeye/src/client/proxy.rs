//! Client proxies: HTTP `CONNECT` tunnels
//! ([RFC 9110 §9.3.6](https://www.rfc-editor.org/rfc/rfc9110#section-9.3.6)) with Basic
//! authentication ([RFC 7617](https://www.rfc-editor.org/rfc/rfc7617)), and SOCKS5
//! ([RFC 1928](https://www.rfc-editor.org/rfc/rfc1928)) with username/password authentication
//! ([RFC 1929](https://www.rfc-editor.org/rfc/rfc1929)). A proxy is configured explicitly or
//! taken from `HTTPS_PROXY`, `HTTP_PROXY`, `ALL_PROXY` and `NO_PROXY` as curl does; see
//! [`ProxyConfig`].
//!
//! The tunnel carries the connection unchanged: for `wss://` the TLS handshake (with the
//! target's name as SNI) and then the WebSocket handshake run through it end to end.

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _};
use tokio::net::TcpStream;

use crate::client::url::{percent_decode, WsUrl};
use crate::error::{Error, ProxyError, UrlError};

/// Port of a proxy URL without one. curl uses 1080 for every proxy scheme, `http` included;
/// so does sockeye, so that one environment means the same to both.
pub const DEFAULT_PROXY_PORT: u16 = 1080;

/// Largest HTTP response head accepted from a proxy, in bytes.
const MAX_CONNECT_RESPONSE_SIZE: usize = 16 << 10;

/// Most header fields accepted in a proxy's response.
const MAX_CONNECT_RESPONSE_HEADERS: usize = 64;

/// A proxy to tunnel client connections through.
///
/// ```
/// use sockeye::Proxy;
///
/// let proxy = Proxy::parse("http://alice:s%40cret@proxy.internal:3128").unwrap();
/// assert_eq!(proxy, Proxy::http("proxy.internal", 3128).with_auth("alice", "s@cret"));
/// assert_eq!(
///     Proxy::parse("socks5h://127.0.0.1").unwrap(),
///     Proxy::socks5h("127.0.0.1", 1080)
/// );
/// ```
#[derive(Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Proxy {
    /// An HTTP proxy that opens tunnels with `CONNECT host:port`, sending the credentials, if
    /// any, as `Proxy-Authorization: Basic`. The connection to the proxy itself is plain TCP.
    Http {
        /// Host name or IP literal (without IPv6 brackets).
        host: String,
        /// Port.
        port: u16,
        /// User name and password.
        auth: Option<(String, String)>,
    },
    /// A SOCKS5 proxy, with username/password authentication when credentials are given.
    Socks5 {
        /// Host name or IP literal (without IPv6 brackets).
        host: String,
        /// Port.
        port: u16,
        /// User name (1 to 255 bytes) and password (up to 255 bytes).
        auth: Option<(String, String)>,
        /// Send the target's host name for the proxy to resolve (`socks5h://`); false resolves
        /// it locally and sends the address (`socks5://`), as curl does. IP literals are always
        /// sent as addresses.
        remote_dns: bool,
    },
}

impl fmt::Debug for Proxy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (name, host, port, auth) = match self {
            Self::Http { host, port, auth } => ("Http", host, port, auth),
            Self::Socks5 {
                host, port, auth, ..
            } => ("Socks5", host, port, auth),
        };
        let mut s = f.debug_struct(name);
        s.field("host", host)
            .field("port", port)
            .field("auth", &auth.as_ref().map(|(user, _)| (user, "<redacted>")));
        if let Self::Socks5 { remote_dns, .. } = self {
            s.field("remote_dns", remote_dns);
        }
        s.finish()
    }
}

impl Proxy {
    /// An HTTP `CONNECT` proxy without credentials.
    pub fn http(host: impl Into<String>, port: u16) -> Self {
        Self::Http {
            host: host.into(),
            port,
            auth: None,
        }
    }

    /// A SOCKS5 proxy that is sent resolved addresses (`socks5://`), without credentials.
    pub fn socks5(host: impl Into<String>, port: u16) -> Self {
        Self::Socks5 {
            host: host.into(),
            port,
            auth: None,
            remote_dns: false,
        }
    }

    /// A SOCKS5 proxy that resolves host names itself (`socks5h://`), without credentials.
    pub fn socks5h(host: impl Into<String>, port: u16) -> Self {
        Self::Socks5 {
            host: host.into(),
            port,
            auth: None,
            remote_dns: true,
        }
    }

    /// Sets the credentials.
    #[must_use]
    pub fn with_auth(mut self, user: impl Into<String>, password: impl Into<String>) -> Self {
        let credentials = Some((user.into(), password.into()));
        match &mut self {
            Self::Http { auth, .. } | Self::Socks5 { auth, .. } => *auth = credentials,
        }
        self
    }

    /// The proxy's host.
    pub fn host(&self) -> &str {
        match self {
            Self::Http { host, .. } | Self::Socks5 { host, .. } => host,
        }
    }

    /// The proxy's port.
    pub fn port(&self) -> u16 {
        match self {
            Self::Http { port, .. } | Self::Socks5 { port, .. } => *port,
        }
    }

    /// The credentials: user name and password.
    pub fn auth(&self) -> Option<(&str, &str)> {
        match self {
            Self::Http { auth, .. } | Self::Socks5 { auth, .. } => {
                auth.as_ref().map(|(u, p)| (u.as_str(), p.as_str()))
            }
        }
    }

    /// Parses `[scheme://][user[:password]@]host[:port][/]` with scheme `http` (the default,
    /// as in curl), `socks5` or `socks5h`. The user name and password are percent-decoded; the
    /// port defaults to [`DEFAULT_PROXY_PORT`] (1080, as in curl); a path is ignored.
    ///
    /// # Errors
    ///
    /// [`UrlError::UnsupportedScheme`] for another scheme (`https://` proxies, SOCKS4 are not
    /// supported), [`UrlError::MissingHost`], [`UrlError::Malformed`] for anything else that is
    /// not such a URL, including a port over 65535 and credentials that are not UTF-8.
    pub fn parse(url: &str) -> Result<Self, UrlError> {
        let url = url.trim();
        let with_scheme;
        let url = if url.contains("://") {
            url
        } else {
            with_scheme = format!("http://{url}");
            &with_scheme
        };
        let uri: http::Uri = url.parse().map_err(|_| UrlError::Malformed)?;
        let scheme = uri
            .scheme_str()
            .ok_or(UrlError::Malformed)?
            .to_ascii_lowercase();
        let authority = uri.authority().ok_or(UrlError::MissingHost)?;
        let host = authority
            .host()
            .trim_start_matches('[')
            .trim_end_matches(']');
        if host.is_empty() {
            return Err(UrlError::MissingHost);
        }
        // Parsed from the text: `http::Uri` reports an out-of-range port as no port at all.
        let host_port = authority
            .as_str()
            .rsplit_once('@')
            .map_or(authority.as_str(), |(_, host_port)| host_port);
        let port = match host_port.rsplit_once(':') {
            Some((before, port)) if !before.is_empty() && !port.contains(']') => {
                if port.is_empty() {
                    DEFAULT_PROXY_PORT
                } else {
                    port.parse::<u16>().map_err(|_| UrlError::Malformed)?
                }
            }
            _ => DEFAULT_PROXY_PORT,
        };
        let auth = match authority.as_str().rsplit_once('@') {
            Some(("", _)) | None => None,
            Some((userinfo, _)) => {
                let (user, password) = userinfo.split_once(':').unwrap_or((userinfo, ""));
                Some((decode_credential(user)?, decode_credential(password)?))
            }
        };
        let host = host.to_owned();
        match scheme.as_str() {
            "http" => Ok(Self::Http { host, port, auth }),
            "socks5" | "socks5h" => Ok(Self::Socks5 {
                host,
                port,
                auth,
                remote_dns: scheme == "socks5h",
            }),
            _ => Err(UrlError::UnsupportedScheme(scheme)),
        }
    }

    /// The proxy curl would use for `target`, from the process environment: see
    /// [`from_env_with`](Self::from_env_with).
    ///
    /// # Errors
    ///
    /// As [`parse`](Self::parse), for a variable that holds an unusable proxy URL (rather than
    /// silently connecting directly).
    pub fn from_env(target: &WsUrl) -> Result<Option<Self>, UrlError> {
        Self::from_env_with(target, |name| std::env::var(name).ok())
    }

    /// The proxy curl would use for `target`, reading variables through `lookup` (which
    /// returns a variable's value, or `None` when it is unset):
    ///
    /// 1. `no_proxy`, else `NO_PROXY`: a comma-separated list; when an entry matches the
    ///    target's host, no proxy is used. `*` matches every host; a host name matches itself
    ///    and its subdomains (`example.com` and `.example.com` both match `example.com` and
    ///    `ws.example.com`), case-insensitively; an IP address matches itself, and a CIDR block
    ///    (`10.0.0.0/8`, `fd00::/8`) the addresses in it. Ports in entries are not supported.
    /// 2. For `wss://`: `https_proxy`, else `HTTPS_PROXY`. For `ws://`: `http_proxy`, else
    ///    `HTTP_PROXY`, the latter ignored when `REQUEST_METHOD` is set: in a CGI program
    ///    `HTTP_PROXY` comes from the request's `Proxy` header ("httpoxy"), so curl never reads
    ///    it and Go ignores it there.
    /// 3. `all_proxy`, else `ALL_PROXY`.
    ///
    /// Empty values count as unset. The value is parsed with [`parse`](Self::parse).
    ///
    /// ```
    /// use sockeye::{Proxy, WsUrl};
    ///
    /// let env = |name: &str| match name {
    ///     "HTTPS_PROXY" => Some("http://proxy:3128".to_owned()),
    ///     "NO_PROXY" => Some("localhost,.internal".to_owned()),
    ///     _ => None,
    /// };
    /// let public = WsUrl::parse("wss://example.com/").unwrap();
    /// let internal = WsUrl::parse("wss://api.internal/").unwrap();
    /// assert_eq!(Proxy::from_env_with(&public, env).unwrap(), Some(Proxy::http("proxy", 3128)));
    /// assert_eq!(Proxy::from_env_with(&internal, env).unwrap(), None);
    /// ```
    ///
    /// # Errors
    ///
    /// As [`parse`](Self::parse), for the chosen variable's value.
    pub fn from_env_with(
        target: &WsUrl,
        lookup: impl Fn(&str) -> Option<String>,
    ) -> Result<Option<Self>, UrlError> {
        // Not hyper-util's `Matcher::from_env` (0.1.21), which fails
        // `env_chooses_by_scheme_like_curl`, `no_proxy_exempts_matching_hosts` and
        // `parses_proxy_urls`: it reads `HTTP_PROXY` before `http_proxy` (curl: lowercase
        // first), turns every proxy off when `REQUEST_METHOD` is set (curl ignores only
        // `HTTP_PROXY`), skips an unusable value silently instead of failing, decodes
        // credentials lossily, keeps HTTP credentials only as a `Basic` header value and reads
        // the process environment only.
        let get = |name: &str| lookup(name).filter(|value| !value.trim().is_empty());
        if let Some(list) = get("no_proxy").or_else(|| get("NO_PROXY")) {
            if no_proxy_matches(&list, &target.host) {
                return Ok(None);
            }
        }
        let for_scheme = if target.tls {
            get("https_proxy").or_else(|| get("HTTPS_PROXY"))
        } else {
            get("http_proxy").or_else(|| {
                if get("REQUEST_METHOD").is_some() {
                    None
                } else {
                    get("HTTP_PROXY")
                }
            })
        };
        for_scheme
            .or_else(|| get("all_proxy"))
            .or_else(|| get("ALL_PROXY"))
            .map(|value| Self::parse(&value))
            .transpose()
    }
}

fn decode_credential(encoded: &str) -> Result<String, UrlError> {
    let bytes = percent_decode(encoded).ok_or(UrlError::Malformed)?;
    String::from_utf8(bytes).map_err(|_| UrlError::Malformed)
}

/// Whether a `NO_PROXY` list exempts `host`; see [`Proxy::from_env_with`].
fn no_proxy_matches(list: &str, host: &str) -> bool {
    let host = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .trim_end_matches('.')
        .to_ascii_lowercase();
    let host_ip = host.parse::<IpAddr>().ok();
    list.split(',').map(str::trim).any(|entry| {
        if entry == "*" {
            return true;
        }
        let entry = entry
            .trim_start_matches('[')
            .trim_end_matches(']')
            .trim_end_matches('.')
            .to_ascii_lowercase();
        if entry.is_empty() {
            return false;
        }
        if let Some(ip) = host_ip {
            return match entry.split_once('/') {
                Some((network, bits)) => cidr_contains(network, bits, ip),
                None => entry.parse::<IpAddr>() == Ok(ip),
            };
        }
        let domain = entry.trim_start_matches('.');
        host == domain
            || host
                .strip_suffix(domain)
                .is_some_and(|prefix| prefix.ends_with('.'))
    })
}

/// Whether `ip` is in the block `network/bits`.
fn cidr_contains(network: &str, bits: &str, ip: IpAddr) -> bool {
    let (Ok(network), Ok(bits)) = (network.parse::<IpAddr>(), bits.parse::<u32>()) else {
        return false;
    };
    match (network, ip) {
        (IpAddr::V4(network), IpAddr::V4(ip)) if bits <= 32 => {
            let mask = u32::MAX.checked_shl(32 - bits).unwrap_or(0);
            u32::from(network) & mask == u32::from(ip) & mask
        }
        (IpAddr::V6(network), IpAddr::V6(ip)) if bits <= 128 => {
            let mask = u128::MAX.checked_shl(128 - bits).unwrap_or(0);
            u128::from(network) & mask == u128::from(ip) & mask
        }
        _ => false,
    }
}

/// Where client connections go: directly, or through a proxy.
///
/// Default: [`Direct`](Self::Direct). Reading the environment is opt-in.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum ProxyConfig {
    /// Connect directly; proxy variables in the environment are ignored.
    #[default]
    Direct,
    /// Connect every URL through this proxy (`NO_PROXY` does not apply).
    Proxy(Proxy),
    /// Use the proxy the environment names for each URL (redirects included), as
    /// [`Proxy::from_env`] finds it; directly when there is none.
    FromEnv,
}

impl From<Proxy> for ProxyConfig {
    fn from(proxy: Proxy) -> Self {
        Self::Proxy(proxy)
    }
}

impl ProxyConfig {
    /// The proxy to use for `target`, if any.
    ///
    /// # Errors
    ///
    /// With [`FromEnv`](Self::FromEnv), as [`Proxy::from_env`].
    pub fn proxy_for(&self, target: &WsUrl) -> Result<Option<Proxy>, UrlError> {
        match self {
            Self::Direct => Ok(None),
            Self::Proxy(proxy) => Ok(Some(proxy.clone())),
            Self::FromEnv => Proxy::from_env(target),
        }
    }
}

/// Connects to `proxy` and has it open a tunnel to `target_host:target_port`; the returned
/// stream then carries bytes to and from the target. `timeout` bounds everything: DNS, the TCP
/// connect to the proxy and the proxy's answer.
///
/// ```no_run
/// # async fn run() -> Result<(), sockeye::Error> {
/// use std::time::Duration;
/// use sockeye::Proxy;
///
/// let proxy = Proxy::parse("socks5h://127.0.0.1:1080").unwrap();
/// let tcp = sockeye::connect_via(&proxy, "example.com", 443, Duration::from_secs(10)).await?;
/// # drop(tcp); Ok(()) }
/// ```
///
/// # Errors
///
/// [`Error::ConnectTimeout`]; [`Error::Io`] when the proxy cannot be reached (or, for
/// `socks5://`, the target's name not resolved); [`Error::Proxy`] when the proxy refuses:
/// [`ProxyError::AuthRequired`] or [`ProxyError::AuthFailed`] for authentication,
/// [`ProxyError::HttpStatus`] or [`ProxyError::Socks5Reply`] for the target, and the other
/// [`ProxyError`]s for invalid credentials or answers.
pub async fn connect_via(
    proxy: &Proxy,
    target_host: &str,
    target_port: u16,
    timeout: Duration,
) -> Result<TcpStream, Error> {
    tokio::time::timeout(timeout, async {
        let mut tcp = TcpStream::connect((proxy.host(), proxy.port())).await?;
        tunnel(&mut tcp, proxy, target_host, target_port).await?;
        Ok(tcp)
    })
    .await
    .map_err(|_| Error::ConnectTimeout)?
}

// Hand-written rather than hyper-util's `Tunnel` and `SocksV5` connectors (0.1.21), which fail
// these tests (checked against the crate, not only read):
// - both read the proxy's answer into a buffer and drop what follows it, so the tunnel's first
//   bytes are lost (`http_connect_request_and_exact_read`, `socks5_requests`);
// - `Tunnel` reports every status but 200, and an answer that is not HTTP, as
//   `TunnelUnsuccessful` without the status: no `HttpStatus(403)`, no `BadResponse`
//   (`http_connect_failures`, tests/proxy.rs `http_proxy_refusing_the_target`); it accepts 100
//   header fields (`http_connect_header_count_is_bounded`) and refuses a 2xx other than 200,
//   which RFC 9110 §9.3.6 counts as success;
// - `SocksV5` with credentials offers only username/password, where curl also offers "no
//   authentication" (`socks5_requests`, tests/proxy.rs `socks5_username_password`), and fails
//   when the proxy picks the latter; it reads the whole reply before looking at its code, so a
//   proxy that refuses and closes is an I/O error, and codes above 8 are parse errors
//   (`socks5_failures`: `Socks5Reply`); for `socks5://` it resolves the target with the
//   blocking `ToSocketAddrs` on the runtime thread;
// - both are `Service<Uri>` connectors over a connection they own (`'static`), where `tunnel`
//   runs over a borrowed stream, as the unit tests drive it.

/// Asks the proxy at the other end of `io` for a tunnel to `host:port`. Reads nothing past the
/// proxy's answer: what follows belongs to the target.
pub(crate) async fn tunnel<S: AsyncRead + AsyncWrite + Unpin>(
    io: &mut S,
    proxy: &Proxy,
    host: &str,
    port: u16,
) -> Result<(), Error> {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if host.is_empty() || host.bytes().any(|b| b <= b' ' || b == 0x7f) {
        return Err(ProxyError::InvalidTarget.into());
    }
    match proxy {
        Proxy::Http { auth, .. } => http_connect(io, auth.as_ref(), host, port).await,
        Proxy::Socks5 {
            auth, remote_dns, ..
        } => socks5_connect(io, auth.as_ref(), *remote_dns, host, port).await,
    }
}

// ---- HTTP CONNECT ---------------------------------------------------------------------------

async fn http_connect<S: AsyncRead + AsyncWrite + Unpin>(
    io: &mut S,
    auth: Option<&(String, String)>,
    host: &str,
    port: u16,
) -> Result<(), Error> {
    // RFC 9110 §9.3.6: "the request-target consists of only the host name and port number of
    // the tunnel destination, separated by a colon"; an IPv6 literal in brackets (RFC 3986).
    let authority = if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    };
    let mut request = format!("CONNECT {authority} HTTP/1.1\r\nHost: {authority}\r\n");
    if let Some((user, password)) = auth {
        // RFC 7617 §2: "a user-id containing a colon character is invalid".
        if user.contains(':') {
            return Err(ProxyError::InvalidCredentials.into());
        }
        let credentials =
            crate::client::url::basic_credentials(format!("{user}:{password}").as_bytes());
        request.push_str(&format!("Proxy-Authorization: {credentials}\r\n"));
    }
    request.push_str("\r\n");
    io.write_all(request.as_bytes()).await?;
    io.flush().await?;
    let status = read_connect_response(io).await?;
    tracing::debug!(status, "proxy answered connect");
    match status {
        // RFC 9110 §9.3.6: "Any 2xx (Successful) response indicates that the sender (and all
        // inbound proxies) will switch to tunnel mode immediately after the response header
        // section"; a client "MUST ignore any Content-Length or Transfer-Encoding header fields".
        200..=299 => Ok(()),
        407 if auth.is_some() => Err(ProxyError::AuthFailed.into()),
        407 => Err(ProxyError::AuthRequired.into()),
        status => Err(ProxyError::HttpStatus(status).into()),
    }
}

/// Reads the proxy's response head and returns its status. Never reads past the head.
async fn read_connect_response<S: AsyncRead + Unpin>(io: &mut S) -> Result<u16, Error> {
    let mut buf = Vec::with_capacity(256);
    loop {
        // The head ends with an empty line (CRLF CRLF, or bare LF LF): read at most as many
        // bytes as could complete it, so that none of the tunnel's bytes are consumed.
        let wanted = if matches!(buf.last(), Some(b'\r' | b'\n')) {
            1
        } else {
            2
        };
        let start = buf.len();
        buf.resize(start + wanted, 0);
        let n = io.read(&mut buf[start..]).await?;
        buf.truncate(start + n);
        if n == 0 {
            return Err(ProxyError::Closed.into());
        }
        if buf.last() != Some(&b'\n') {
            if buf.len() >= MAX_CONNECT_RESPONSE_SIZE {
                return Err(ProxyError::BadResponse.into());
            }
            continue;
        }
        let mut headers = [httparse::EMPTY_HEADER; MAX_CONNECT_RESPONSE_HEADERS];
        let mut response = httparse::Response::new(&mut headers);
        match response.parse(&buf) {
            Ok(httparse::Status::Complete(_)) => {
                return response.code.ok_or_else(|| ProxyError::BadResponse.into());
            }
            Ok(httparse::Status::Partial) if buf.len() < MAX_CONNECT_RESPONSE_SIZE => {}
            Ok(httparse::Status::Partial) | Err(_) => return Err(ProxyError::BadResponse.into()),
        }
    }
}

// ---- SOCKS5 ---------------------------------------------------------------------------------

const SOCKS_VERSION: u8 = 0x05;
/// RFC 1928 §3: "X'00' NO AUTHENTICATION REQUIRED".
const METHOD_NONE: u8 = 0x00;
/// RFC 1928 §3: "X'02' USERNAME/PASSWORD".
const METHOD_PASSWORD: u8 = 0x02;
/// RFC 1928 §3: "X'FF' NO ACCEPTABLE METHODS".
const METHOD_NO_ACCEPTABLE: u8 = 0xFF;
/// RFC 1929 §2: "The VER field contains the current version of the subnegotiation, which is
/// X'01'".
const PASSWORD_VERSION: u8 = 0x01;
const CMD_CONNECT: u8 = 0x01;
const ATYP_IPV4: u8 = 0x01;
const ATYP_DOMAIN: u8 = 0x03;
const ATYP_IPV6: u8 = 0x04;

async fn socks5_connect<S: AsyncRead + AsyncWrite + Unpin>(
    io: &mut S,
    auth: Option<&(String, String)>,
    remote_dns: bool,
    host: &str,
    port: u16,
) -> Result<(), Error> {
    if let Some((user, password)) = auth {
        // RFC 1929 §2: ULEN and PLEN are single octets; a user name is at least one byte.
        if user.is_empty() || user.len() > 255 || password.len() > 255 {
            return Err(ProxyError::InvalidCredentials.into());
        }
    }
    let address = match host.parse::<IpAddr>() {
        Ok(ip) => Address::Ip(ip),
        Err(_) if remote_dns => {
            if host.len() > 255 {
                return Err(ProxyError::InvalidTarget.into());
            }
            Address::Domain(host)
        }
        Err(_) => {
            let resolved: Option<SocketAddr> = tokio::net::lookup_host((host, port)).await?.next();
            let resolved = resolved.ok_or_else(|| {
                std::io::Error::new(
                    std::io::ErrorKind::NotFound,
                    format!("{host} has no address"),
                )
            })?;
            Address::Ip(resolved.ip())
        }
    };

    // RFC 1928 §3: VER, NMETHODS, METHODS.
    let greeting: &[u8] = if auth.is_some() {
        &[SOCKS_VERSION, 2, METHOD_NONE, METHOD_PASSWORD]
    } else {
        &[SOCKS_VERSION, 1, METHOD_NONE]
    };
    io.write_all(greeting).await?;
    io.flush().await?;
    let mut choice = [0u8; 2];
    read_answer(io, &mut choice).await?;
    if choice[0] != SOCKS_VERSION {
        return Err(ProxyError::BadResponse.into());
    }
    match (choice[1], auth) {
        (METHOD_NONE, _) => {}
        (METHOD_PASSWORD, Some((user, password))) => {
            let mut request = Vec::with_capacity(3 + user.len() + password.len());
            request.extend_from_slice(&[PASSWORD_VERSION, user.len() as u8]);
            request.extend_from_slice(user.as_bytes());
            request.push(password.len() as u8);
            request.extend_from_slice(password.as_bytes());
            io.write_all(&request).await?;
            io.flush().await?;
            let mut status = [0u8; 2];
            read_answer(io, &mut status).await?;
            // The version octet is not checked: some servers answer X'05', and curl ignores it.
            // RFC 1929 §2: "A STATUS field of X'00' indicates success. If the server returns a
            // `failure' (STATUS value other than X'00') status, it MUST close the connection."
            if status[1] != 0 {
                return Err(ProxyError::AuthFailed.into());
            }
        }
        (METHOD_NO_ACCEPTABLE, None) => return Err(ProxyError::AuthRequired.into()),
        (METHOD_NO_ACCEPTABLE, Some(_)) => {
            return Err(ProxyError::NoAcceptableAuthMethod.into());
        }
        // A method that was not offered.
        _ => return Err(ProxyError::BadResponse.into()),
    }

    // RFC 1928 §4: VER, CMD, RSV, ATYP, DST.ADDR, DST.PORT.
    let mut request = vec![SOCKS_VERSION, CMD_CONNECT, 0x00];
    match address {
        Address::Ip(IpAddr::V4(ip)) => {
            request.push(ATYP_IPV4);
            request.extend_from_slice(&ip.octets());
        }
        Address::Ip(IpAddr::V6(ip)) => {
            request.push(ATYP_IPV6);
            request.extend_from_slice(&ip.octets());
        }
        Address::Domain(name) => {
            request.extend_from_slice(&[ATYP_DOMAIN, name.len() as u8]);
            request.extend_from_slice(name.as_bytes());
        }
    }
    request.extend_from_slice(&port.to_be_bytes());
    io.write_all(&request).await?;
    io.flush().await?;

    // RFC 1928 §6: VER, REP, RSV, ATYP, BND.ADDR, BND.PORT. VER and REP first: a proxy that
    // refuses may close right after them.
    let mut reply = [0u8; 2];
    read_answer(io, &mut reply).await?;
    if reply[0] != SOCKS_VERSION {
        return Err(ProxyError::BadResponse.into());
    }
    if reply[1] != 0x00 {
        return Err(ProxyError::Socks5Reply(reply[1]).into());
    }
    let mut rest = [0u8; 2];
    read_answer(io, &mut rest).await?;
    let bound_len = match rest[1] {
        ATYP_IPV4 => 4,
        ATYP_IPV6 => 16,
        ATYP_DOMAIN => {
            let mut len = [0u8; 1];
            read_answer(io, &mut len).await?;
            usize::from(len[0])
        }
        _ => return Err(ProxyError::BadResponse.into()),
    };
    // The bound address and port: read (so that the tunnel starts after them) and ignored.
    let mut bound = [0u8; 255 + 2];
    read_answer(io, &mut bound[..bound_len + 2]).await?;
    tracing::debug!("socks5 proxy opened the tunnel");
    Ok(())
}

enum Address<'a> {
    Ip(IpAddr),
    Domain(&'a str),
}

/// Reads exactly `buf.len()` bytes of the proxy's answer.
async fn read_answer<S: AsyncRead + Unpin>(io: &mut S, buf: &mut [u8]) -> Result<(), Error> {
    match io.read_exact(buf).await {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => Err(ProxyError::Closed.into()),
        Err(e) => Err(Error::Io(e)),
    }
}

#[cfg(test)]
mod tests {
    use std::error::Error as _;

    use super::*;

    fn env<'a>(vars: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<String> + 'a {
        move |name| {
            vars.iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| (*v).to_owned())
        }
    }

    fn url(s: &str) -> WsUrl {
        WsUrl::parse(s).unwrap()
    }

    #[test]
    fn parses_proxy_urls() {
        assert_eq!(
            Proxy::parse("http://proxy:3128").unwrap(),
            Proxy::http("proxy", 3128)
        );
        assert_eq!(
            Proxy::parse("proxy.corp").unwrap(),
            Proxy::http("proxy.corp", DEFAULT_PROXY_PORT)
        );
        assert_eq!(
            Proxy::parse(" HTTP://u:p%3Aq@[::1]:8080/ ").unwrap(),
            Proxy::http("::1", 8080).with_auth("u", "p:q")
        );
        assert_eq!(
            Proxy::parse("socks5://user@10.0.0.1").unwrap(),
            Proxy::socks5("10.0.0.1", 1080).with_auth("user", "")
        );
        assert_eq!(
            Proxy::parse("socks5h://a:b@h:9050").unwrap(),
            Proxy::socks5h("h", 9050).with_auth("a", "b")
        );
        assert_eq!(
            Proxy::parse("https://proxy:443"),
            Err(UrlError::UnsupportedScheme("https".into()))
        );
        assert_eq!(
            Proxy::parse("socks4://proxy"),
            Err(UrlError::UnsupportedScheme("socks4".into()))
        );
        assert_eq!(Proxy::parse("http://h:99999"), Err(UrlError::Malformed));
        assert_eq!(Proxy::parse("http://[::1]:70000"), Err(UrlError::Malformed));
        assert_eq!(
            Proxy::parse("http://[::1]").unwrap(),
            Proxy::http("::1", 1080)
        );
        assert_eq!(Proxy::parse("http://h:").unwrap(), Proxy::http("h", 1080));
        assert_eq!(Proxy::parse("http://u:%zz@h"), Err(UrlError::Malformed));
        assert_eq!(Proxy::parse("http://u:%ff@h"), Err(UrlError::Malformed));
        assert!(Proxy::parse("").is_err());
        assert!(Proxy::parse("http://").is_err());
    }

    #[test]
    fn debug_redacts_the_password() {
        let proxy = Proxy::http("h", 1).with_auth("alice", "hunter2");
        let text = format!("{proxy:?}");
        assert!(
            text.contains("alice") && !text.contains("hunter2"),
            "{text}"
        );
    }

    #[test]
    fn env_chooses_by_scheme_like_curl() {
        let vars = [
            ("https_proxy", "http://secure:1"),
            ("HTTP_PROXY", "http://plain:2"),
            ("ALL_PROXY", "socks5h://all:3"),
        ];
        let lookup = env(&vars);
        assert_eq!(
            Proxy::from_env_with(&url("wss://example.com/"), &lookup).unwrap(),
            Some(Proxy::http("secure", 1))
        );
        assert_eq!(
            Proxy::from_env_with(&url("ws://example.com/"), &lookup).unwrap(),
            Some(Proxy::http("plain", 2))
        );
        // Lowercase wins over uppercase.
        let vars = [("http_proxy", "lower:1"), ("HTTP_PROXY", "upper:2")];
        assert_eq!(
            Proxy::from_env_with(&url("ws://h/"), env(&vars)).unwrap(),
            Some(Proxy::http("lower", 1))
        );
        // ALL_PROXY is the fallback; an empty variable counts as unset.
        let vars = [("HTTPS_PROXY", ""), ("all_proxy", "socks5://all:3")];
        assert_eq!(
            Proxy::from_env_with(&url("wss://h/"), env(&vars)).unwrap(),
            Some(Proxy::socks5("all", 3))
        );
        // HTTPS_PROXY never applies to ws://, HTTP_PROXY never to wss://.
        assert_eq!(
            Proxy::from_env_with(&url("ws://h/"), env(&[("HTTPS_PROXY", "p:1")])).unwrap(),
            None
        );
        assert_eq!(
            Proxy::from_env_with(&url("wss://h/"), env(&[("HTTP_PROXY", "p:1")])).unwrap(),
            None
        );
        assert_eq!(
            Proxy::from_env_with(&url("ws://h/"), env(&[])).unwrap(),
            None
        );
        // httpoxy: in a CGI program, HTTP_PROXY comes from the client.
        let vars = [("REQUEST_METHOD", "GET"), ("HTTP_PROXY", "evil:1")];
        assert_eq!(
            Proxy::from_env_with(&url("ws://h/"), env(&vars)).unwrap(),
            None
        );
        let vars = [("REQUEST_METHOD", "GET"), ("http_proxy", "good:1")];
        assert_eq!(
            Proxy::from_env_with(&url("ws://h/"), env(&vars)).unwrap(),
            Some(Proxy::http("good", 1))
        );
        // An unusable value is an error, not a silent direct connection.
        assert_eq!(
            Proxy::from_env_with(&url("ws://h/"), env(&[("http_proxy", "ftp://p")])),
            Err(UrlError::UnsupportedScheme("ftp".into()))
        );
    }

    #[test]
    fn no_proxy_exempts_matching_hosts() {
        let exempt = |no_proxy: &str, target: &str| {
            let vars = [("ALL_PROXY", "http://p:1"), ("NO_PROXY", no_proxy)];
            Proxy::from_env_with(&url(target), env(&vars))
                .unwrap()
                .is_none()
        };
        assert!(exempt("*", "ws://anything/"));
        assert!(exempt("example.com", "ws://example.com/"));
        assert!(exempt("example.com", "wss://ws.example.com/"));
        assert!(exempt(".example.com", "ws://example.com/"));
        assert!(exempt(".example.com", "ws://a.b.example.com/"));
        assert!(exempt("EXAMPLE.com.", "ws://Example.COM/"));
        assert!(exempt("other, example.com ,x", "ws://example.com/"));
        assert!(!exempt("example.com", "ws://notexample.com/"));
        assert!(!exempt("www.example.com", "ws://example.com/"));
        assert!(!exempt("", "ws://example.com/"));
        assert!(!exempt("*.example.com", "ws://a.example.com/"));
        // IP literals: exact, CIDR, IPv6 with or without brackets.
        assert!(exempt("127.0.0.1", "ws://127.0.0.1:9000/"));
        assert!(!exempt("127.0.0.1", "ws://127.0.0.2/"));
        assert!(exempt("10.0.0.0/8", "ws://10.20.30.40/"));
        assert!(!exempt("10.0.0.0/8", "ws://11.0.0.1/"));
        assert!(exempt("0.0.0.0/0", "ws://8.8.8.8/"));
        assert!(exempt("::1", "ws://[::1]:1/"));
        assert!(exempt("[::1]", "ws://[::1]/"));
        assert!(exempt("fd00::/8", "ws://[fd12::5]/"));
        assert!(!exempt("fd00::/8", "ws://[fe80::1]/"));
        assert!(!exempt("10.0.0.0/8", "ws://[::1]/"));
        assert!(!exempt("10.0.0.0/33", "ws://10.0.0.1/"));
        // A domain entry never matches an IP literal.
        assert!(!exempt("0.1", "ws://10.0.0.1/"));
        // Lowercase no_proxy wins.
        let vars = [
            ("ALL_PROXY", "http://p:1"),
            ("no_proxy", "a.com"),
            ("NO_PROXY", "b.com"),
        ];
        assert!(Proxy::from_env_with(&url("ws://b.com/"), env(&vars))
            .unwrap()
            .is_some());
    }

    #[test]
    fn no_proxy_star_exempts_ip_literals_too() {
        // curl: "The only wildcard available is a single * character, which matches all hosts".
        for target in ["ws://10.0.0.1/", "ws://[::1]:8080/", "ws://example.com/"] {
            let vars = [("ALL_PROXY", "http://p:1"), ("NO_PROXY", "a.com, *")];
            assert_eq!(
                Proxy::from_env_with(&url(target), env(&vars)).unwrap(),
                None,
                "{target}"
            );
        }
    }

    /// Fails the test instead of hanging.
    async fn within<F: std::future::Future>(fut: F) -> F::Output {
        tokio::time::timeout(Duration::from_secs(20), fut)
            .await
            .expect("timed out")
    }

    /// Runs `tunnel` against a scripted proxy on the other end of a pipe; returns the bytes
    /// the client sent, the result, and what the client can read after the tunnel opened.
    async fn scripted(
        proxy: Proxy,
        host: &str,
        port: u16,
        answer: &[u8],
    ) -> (Vec<u8>, Result<(), Error>, Vec<u8>) {
        let (mut client, mut server) = tokio::io::duplex(4096);
        server.write_all(answer).await.unwrap();
        // The client reads the answer, then the end of the stream.
        server.shutdown().await.unwrap();
        let result = within(tunnel(&mut client, &proxy, host, port)).await;
        let mut rest = Vec::new();
        if result.is_ok() {
            client.read_to_end(&mut rest).await.unwrap();
        }
        drop(client);
        let mut sent = Vec::new();
        server.read_to_end(&mut sent).await.unwrap();
        (sent, result, rest)
    }

    #[tokio::test]
    async fn http_connect_request_and_exact_read() {
        let proxy = Proxy::http("p", 1).with_auth("Aladdin", "open sesame");
        let (sent, result, rest) = scripted(
            proxy,
            "::1",
            443,
            b"HTTP/1.1 200 Connection established\r\nX: y\r\n\r\ntunnel bytes",
        )
        .await;
        result.unwrap();
        assert_eq!(
            String::from_utf8(sent).unwrap(),
            "CONNECT [::1]:443 HTTP/1.1\r\nHost: [::1]:443\r\n\
             Proxy-Authorization: Basic QWxhZGRpbjpvcGVuIHNlc2FtZQ==\r\n\r\n"
        );
        assert_eq!(rest, b"tunnel bytes");
    }

    #[tokio::test]
    async fn http_connect_failures() {
        let run = |proxy: Proxy, answer: &'static [u8]| async move {
            scripted(proxy, "h", 80, answer).await.1.unwrap_err()
        };
        let plain = Proxy::http("p", 1);
        let authed = Proxy::http("p", 1).with_auth("u", "p");
        let e = run(
            plain.clone(),
            b"HTTP/1.1 407 Proxy Authentication Required\r\n\r\n",
        )
        .await;
        assert!(matches!(e, Error::Proxy(ProxyError::AuthRequired)), "{e:?}");
        let e = run(authed.clone(), b"HTTP/1.1 407 Nope\r\n\r\n").await;
        assert!(matches!(e, Error::Proxy(ProxyError::AuthFailed)), "{e:?}");
        let e = run(plain.clone(), b"HTTP/1.0 403 Forbidden\r\n\r\n").await;
        assert!(
            matches!(e, Error::Proxy(ProxyError::HttpStatus(403))),
            "{e:?}"
        );
        let e = run(plain.clone(), b"SSH-2.0-OpenSSH\r\n\r\n").await;
        assert!(matches!(e, Error::Proxy(ProxyError::BadResponse)), "{e:?}");
        let e = run(plain.clone(), b"HTTP/1.1 200 OK\r\n").await;
        assert!(matches!(e, Error::Proxy(ProxyError::Closed)), "{e:?}");
        let e = run(Proxy::http("p", 1).with_auth("a:b", "c"), b"").await;
        assert!(
            matches!(e, Error::Proxy(ProxyError::InvalidCredentials)),
            "{e:?}"
        );
        let e = scripted(plain.clone(), "h\r\nX: 1", 80, b"")
            .await
            .1
            .unwrap_err();
        assert!(
            matches!(e, Error::Proxy(ProxyError::InvalidTarget)),
            "{e:?}"
        );
    }

    #[tokio::test]
    async fn http_connect_response_size_is_bounded() {
        let (mut client, mut server) = tokio::io::duplex(64 << 10);
        let writer = tokio::spawn(async move {
            let mut head = b"HTTP/1.1 200 OK\r\nX-Long: ".to_vec();
            head.resize(2 * MAX_CONNECT_RESPONSE_SIZE, b'a');
            // Ignore errors: the client hangs up once it has seen enough.
            drop(server.write_all(&head).await);
            server
        });
        let e = within(tunnel(&mut client, &Proxy::http("p", 1), "h", 80))
            .await
            .unwrap_err();
        assert!(matches!(e, Error::Proxy(ProxyError::BadResponse)), "{e:?}");
        drop(client);
        let server = writer.await.unwrap();
        drop(server);
    }

    #[tokio::test]
    async fn http_connect_header_count_is_bounded() {
        let answer = |headers: usize| {
            let mut head = b"HTTP/1.1 200 OK\r\n".to_vec();
            for i in 0..headers {
                head.extend_from_slice(format!("X-{i}: v\r\n").as_bytes());
            }
            head.extend_from_slice(b"\r\n");
            head
        };
        let proxy = Proxy::http("p", 1);
        let at_limit = answer(MAX_CONNECT_RESPONSE_HEADERS);
        scripted(proxy.clone(), "h", 80, &at_limit).await.1.unwrap();
        let over = answer(MAX_CONNECT_RESPONSE_HEADERS + 1);
        let e = scripted(proxy, "h", 80, &over).await.1.unwrap_err();
        assert!(matches!(e, Error::Proxy(ProxyError::BadResponse)), "{e:?}");
    }

    #[tokio::test]
    async fn socks5_requests() {
        // socks5h with a name: ATYP 3; credentials offered and used.
        let proxy = Proxy::socks5h("p", 1).with_auth("user", "pw");
        let (sent, result, rest) = scripted(
            proxy,
            "example.com",
            8080,
            &[
                5, 2, // method: username/password
                1, 0, // auth ok
                5, 0, 0, 3, 4, b'n', b'a', b'm', b'e', 0, 80, // bound to a domain
                b'!',
            ],
        )
        .await;
        result.unwrap();
        let mut expected = vec![5, 2, 0, 2, 1, 4, b'u', b's', b'e', b'r', 2, b'p', b'w'];
        expected.extend_from_slice(&[5, 1, 0, 3, 11]);
        expected.extend_from_slice(b"example.com");
        expected.extend_from_slice(&8080u16.to_be_bytes());
        assert_eq!(sent, expected);
        assert_eq!(rest, b"!");

        // IP literals are addresses even with socks5h.
        let ok_v4 = [5, 0, 5, 0, 0, 1, 1, 2, 3, 4, 0, 80];
        let (sent, result, _) = scripted(Proxy::socks5h("p", 1), "10.1.2.3", 80, &ok_v4).await;
        result.unwrap();
        assert_eq!(sent, [5, 1, 0, 5, 1, 0, 1, 10, 1, 2, 3, 0, 80]);
        let mut ok_v6 = vec![5, 0, 5, 0, 0, 4];
        ok_v6.extend_from_slice(&[0; 18]);
        let (sent, result, _) = scripted(Proxy::socks5("p", 1), "[::1]", 443, &ok_v6).await;
        result.unwrap();
        let mut expected = vec![5, 1, 0, 5, 1, 0, 4];
        expected.extend_from_slice(&std::net::Ipv6Addr::LOCALHOST.octets());
        expected.extend_from_slice(&443u16.to_be_bytes());
        assert_eq!(sent, expected);
    }

    #[tokio::test]
    async fn socks5_failures() {
        let run = |proxy: Proxy, answer: &'static [u8]| async move {
            scripted(proxy, "10.0.0.1", 80, answer).await.1.unwrap_err()
        };
        let plain = Proxy::socks5h("p", 1);
        let authed = Proxy::socks5h("p", 1).with_auth("u", "p");
        let e = run(plain.clone(), &[5, 0xFF]).await;
        assert!(matches!(e, Error::Proxy(ProxyError::AuthRequired)), "{e:?}");
        let e = run(authed.clone(), &[5, 0xFF]).await;
        assert!(
            matches!(e, Error::Proxy(ProxyError::NoAcceptableAuthMethod)),
            "{e:?}"
        );
        let e = run(authed.clone(), &[5, 2, 1, 1]).await;
        assert!(matches!(e, Error::Proxy(ProxyError::AuthFailed)), "{e:?}");
        // Username/password chosen though not offered.
        let e = run(plain.clone(), &[5, 2]).await;
        assert!(matches!(e, Error::Proxy(ProxyError::BadResponse)), "{e:?}");
        let e = run(plain.clone(), &[4, 0]).await;
        assert!(matches!(e, Error::Proxy(ProxyError::BadResponse)), "{e:?}");
        let e = run(plain.clone(), &[5, 0, 5, 2]).await;
        assert!(
            matches!(e, Error::Proxy(ProxyError::Socks5Reply(2))),
            "{e:?}"
        );
        assert_eq!(
            e.source().unwrap().to_string(),
            "socks5 proxy refused connect: connection not allowed by ruleset (reply 0x02)"
        );
        let e = run(plain.clone(), &[5, 0, 5, 0, 0, 9]).await;
        assert!(matches!(e, Error::Proxy(ProxyError::BadResponse)), "{e:?}");
        let e = run(plain.clone(), &[5, 0, 5, 0, 0, 1, 1]).await;
        assert!(matches!(e, Error::Proxy(ProxyError::Closed)), "{e:?}");
        let e = run(Proxy::socks5h("p", 1).with_auth("", "p"), &[]).await;
        assert!(
            matches!(e, Error::Proxy(ProxyError::InvalidCredentials)),
            "{e:?}"
        );
        let long = "a".repeat(256);
        let e = run(Proxy::socks5h("p", 1).with_auth("u", long.clone()), &[]).await;
        assert!(
            matches!(e, Error::Proxy(ProxyError::InvalidCredentials)),
            "{e:?}"
        );
        let e = scripted(plain, &long, 80, &[]).await.1.unwrap_err();
        assert!(
            matches!(e, Error::Proxy(ProxyError::InvalidTarget)),
            "{e:?}"
        );
    }
}
