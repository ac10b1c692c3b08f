//! The client: URL parsing, TCP connect and the opening handshake over tokio.

use http::Response;
use sockeye_proto::handshake::{ClientHandshake, ClientRequest};
use sockeye_proto::Role;
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _};
use tokio::net::TcpStream;

use crate::config::WebSocketConfig;
use crate::error::{Error, UrlError};
use crate::mask::nonce;
use crate::stream::WebSocketStream;

/// A parsed `ws://` URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WsUrl {
    /// Host name or IP literal, without IPv6 brackets.
    pub host: String,
    /// Port (80 when the URL has none).
    pub port: u16,
    /// Path and query, at least `/`.
    pub resource: String,
    /// The `Host` header value.
    pub host_header: String,
}

impl WsUrl {
    /// Parses `ws://host[:port][/path][?query]`; `http://` is accepted as `ws://`.
    ///
    /// # Errors
    ///
    /// [`UrlError`] for a malformed URL, another scheme, a missing host or a fragment.
    pub fn parse(url: &str) -> Result<Self, UrlError> {
        if url.contains('#') {
            return Err(UrlError::Fragment);
        }
        let uri: http::Uri = url.parse().map_err(|_| UrlError::Malformed)?;
        let scheme = uri
            .scheme_str()
            .ok_or(UrlError::Malformed)?
            .to_ascii_lowercase();
        let default_port = match scheme.as_str() {
            "ws" | "http" => 80,
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
        let resource = uri
            .path_and_query()
            .map_or("/", http::uri::PathAndQuery::as_str);
        let resource = if resource.is_empty() { "/" } else { resource };
        Ok(Self {
            host: host
                .trim_start_matches('[')
                .trim_end_matches(']')
                .to_owned(),
            port,
            resource: resource.to_owned(),
            host_header,
        })
    }
}

/// Connects to a `ws://` URL with default settings.
///
/// ```no_run
/// # async fn run() -> Result<(), sockeye::Error> {
/// use futures_util::{SinkExt, StreamExt};
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
/// [`Error::Url`], [`Error::Io`] when the TCP connection fails, [`Error::Handshake`] when the
/// server's answer is not a valid upgrade, [`Error::HandshakeTimeout`].
pub async fn connect(url: &str) -> Result<(WebSocketStream<TcpStream>, Response<()>), Error> {
    connect_with_config(url, WebSocketConfig::default()).await
}

/// Connects to a `ws://` URL with `config`.
///
/// # Errors
///
/// As [`connect`].
pub async fn connect_with_config(
    url: &str,
    config: WebSocketConfig,
) -> Result<(WebSocketStream<TcpStream>, Response<()>), Error> {
    let url = WsUrl::parse(url)?;
    let deadline = config.handshake_timeout;
    tokio::time::timeout(deadline, async {
        let tcp = TcpStream::connect((url.host.as_str(), url.port)).await?;
        config.apply_tcp_options(&tcp)?;
        let mut request = ClientRequest::new(url.host_header.clone(), url.resource.clone());
        if let Some(deflate) = &config.deflate {
            request = request.deflate(deflate.clone());
        }
        client_handshake(tcp, &request, config).await
    })
    .await
    .map_err(|_| Error::HandshakeTimeout)?
}

/// Performs the client handshake on an established transport (no timeout: wrap it in
/// `tokio::time::timeout`).
///
/// # Errors
///
/// [`Error::Io`] and [`Error::Handshake`].
pub async fn client_handshake<S: AsyncRead + AsyncWrite + Unpin>(
    mut io: S,
    request: &ClientRequest,
    config: WebSocketConfig,
) -> Result<(WebSocketStream<S>, Response<()>), Error> {
    let mut out = Vec::new();
    let mut handshake = ClientHandshake::new(request, nonce()?, config.handshake.clone(), &mut out);
    io.write_all(&out).await?;
    io.flush().await?;
    let mut buf = Vec::with_capacity(1024);
    loop {
        if io.read_buf(&mut buf).await? == 0 {
            return Err(Error::Io(std::io::ErrorKind::UnexpectedEof.into()));
        }
        if let Some((response, used)) = handshake.handle_response(&buf)? {
            tracing::debug!(status = %response.status(), "websocket client connected");
            let deflate = handshake.deflate();
            let ws = WebSocketStream::from_raw_negotiated(
                io,
                Role::Client,
                config,
                deflate,
                &buf[used..],
            );
            return Ok((ws, response));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
        assert_eq!(WsUrl::parse("not a url"), Err(UrlError::Malformed));
        assert_eq!(WsUrl::parse("/just/a/path"), Err(UrlError::Malformed));
    }
}
