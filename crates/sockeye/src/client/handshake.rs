//! The client's opening handshake over an established transport: the upgrade request, the
//! response, redirects and refusal bodies.

use http::Response;
use sockeye_proto::handshake::{ClientHandshake, ClientRequest};
use sockeye_proto::Role;
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _};

use crate::client::url::WsUrl;
use crate::config::WebSocketConfig;
use crate::error::{Error, UrlError};
use crate::rng::nonce;
use crate::stream::WebSocketStream;

/// The upgrade request for `url`: the subprotocols and permessage-deflate offer of `config`,
/// and `Authorization` from the URL's credentials.
pub(crate) fn upgrade_request(
    url: &WsUrl,
    config: &WebSocketConfig,
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
    Ok(request)
}

pub(super) enum Attempt<S> {
    Connected(Box<WebSocketStream<S>>, Response<()>),
    Redirect(String),
}

/// The URL a `Location` header points to, relative to `base`: absolute, a network-path
/// reference (`//host:port/path`, keeping the scheme) or an absolute path (keeping the scheme
/// and authority). Relative paths (`other`, `../x`) are refused.
pub(crate) fn resolve_redirect(base: &WsUrl, location: &str) -> Result<WsUrl, Error> {
    let scheme = if base.tls { "wss" } else { "ws" };
    if let Some(authority_and_path) = location.strip_prefix("//") {
        return Ok(WsUrl::parse(&format!("{scheme}://{authority_and_path}"))?);
    }
    if location.starts_with('/') {
        return Ok(WsUrl::parse(&format!(
            "{scheme}://{}{location}",
            base.host_header
        ))?);
    }
    if location.contains("://") {
        return Ok(WsUrl::parse(location)?);
    }
    Err(UrlError::BadRedirect.into())
}

/// Largest response body kept when the server refuses the upgrade.
pub(crate) const MAX_ERROR_BODY: usize = 64 << 10;

pub(super) async fn handshake<S: AsyncRead + AsyncWrite + Unpin>(
    mut io: S,
    request: &ClientRequest,
    config: WebSocketConfig,
    follow_redirects: bool,
) -> Result<Attempt<S>, Error> {
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
        let status = response.status().as_u16();
        if status != 101 {
            if follow_redirects && matches!(status, 301 | 302 | 307 | 308) {
                if let Some(location) = response
                    .headers()
                    .get(http::header::LOCATION)
                    .and_then(|v| v.to_str().ok())
                {
                    return Ok(Attempt::Redirect(location.to_owned()));
                }
            }
            let body = read_body(&mut io, &response, buf.split_off(used)).await;
            let (parts, ()) = response.into_parts();
            return Err(Error::Http(Box::new(Response::from_parts(parts, body))));
        }
        handshake.validate_response(&response)?;
        tracing::debug!(status = %response.status(), "websocket client connected");
        let deflate = handshake.deflate();
        let protocol = handshake.protocol().map(str::to_owned);
        let mut ws =
            WebSocketStream::from_raw_negotiated(io, Role::Client, config, deflate, &buf[used..]);
        ws.set_protocol(protocol);
        return Ok(Attempt::Connected(Box::new(ws), response));
    }
}

/// How much of a refusal's body to read: its `Content-Length`, or [`MAX_ERROR_BODY`] without
/// one, and never more than [`MAX_ERROR_BODY`].
pub(crate) fn refusal_body_len(response: &Response<()>) -> usize {
    response
        .headers()
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok())
        .unwrap_or(MAX_ERROR_BODY)
        .min(MAX_ERROR_BODY)
}

/// Reads the body of a refusal: `Content-Length` bytes, or until the end, at most
/// [`MAX_ERROR_BODY`]; whatever arrived once the peer pauses for [`BODY_QUIET`]. Chunked
/// bodies are kept as they came (not decoded).
async fn read_body<S: AsyncRead + Unpin>(
    io: &mut S,
    response: &Response<()>,
    mut body: Vec<u8>,
) -> Vec<u8> {
    let wanted = refusal_body_len(response);
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
