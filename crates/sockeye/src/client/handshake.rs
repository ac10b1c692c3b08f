//! The client's opening handshake over an established transport: it writes the core's
//! [`ClientHandshake`] request and reads the answer until its outcome (accepted, a redirect to
//! follow by the core's [`Redirects`] rules, a refusal whose body it reads).

use http::Response;
use sockeye_proto::handshake::{ClientHandshake, ClientRequest, Outcome, RedirectError, Redirects};
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

pub(super) async fn handshake<S: AsyncRead + AsyncWrite + Unpin>(
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
