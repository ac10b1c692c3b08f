//! The server's opening handshake over tokio: the Origin policy, the handshake callback,
//! subprotocol choice, refusals and plain-HTTP answers.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http::Request;
use sockeye_proto::deflate::DeflateParams;
use sockeye_proto::handshake::{
    accept_response_with, parse_request, reject_response, requested_protocols, write_response,
    HandshakeError,
};
use sockeye_proto::Role;
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _};

use crate::config::WebSocketConfig;
use crate::error::Error;
use crate::stream::WebSocketStream;

/// Accepts a WebSocket connection on `io` with default settings.
///
/// # Errors
///
/// As [`accept_with_config`].
pub async fn accept<S: AsyncRead + AsyncWrite + Unpin>(io: S) -> Result<WebSocketStream<S>, Error> {
    accept_with_config(io, WebSocketConfig::default())
        .await
        .map(|(ws, _)| ws)
}

/// Reads the upgrade request from `io`, answers it and returns the connection with the request
/// (method, path and query, headers).
///
/// An invalid request is answered with the RFC's status (400, 405, 426 with
/// `Sec-WebSocket-Version: 13`, 431) and the connection is shut down. The subprotocol is the
/// first one the client offered that [`WebSocketConfig::protocols`] lists.
///
/// # Errors
///
/// [`Error::Handshake`] for an invalid request, [`Error::HandshakeTimeout`] after
/// [`WebSocketConfig::handshake_timeout`], [`Error::Io`].
pub async fn accept_with_config<S: AsyncRead + AsyncWrite + Unpin>(
    io: S,
    config: WebSocketConfig,
) -> Result<(WebSocketStream<S>, Request<()>), Error> {
    accept_hooked(io, config, &Hooks::default(), None).await
}

/// What a handshake callback sees: the upgrade request and where it came from.
#[derive(Debug)]
#[non_exhaustive]
pub struct HandshakeRequest<'a> {
    /// Method, path and query, headers.
    pub request: &'a Request<()>,
    /// The peer's address, when known.
    pub peer: Option<SocketAddr>,
    /// The subprotocols the client offered, in its order.
    pub protocols: Vec<String>,
    /// The subprotocol sockeye would pick from [`WebSocketConfig::protocols`].
    pub default_protocol: Option<String>,
}

/// A handshake callback's answer.
#[derive(Debug)]
pub enum HandshakeDecision {
    /// Upgrade, with extra response headers and a subprotocol.
    Accept(Accept),
    /// Refuse with this response (status, headers, body), e.g. 401 with `WWW-Authenticate`.
    Reject(http::Response<Vec<u8>>),
}

impl HandshakeDecision {
    /// Refuses with `status` and a plain-text `body`.
    pub fn reject(status: u16, body: impl Into<Vec<u8>>) -> Self {
        let mut response = http::Response::new(body.into());
        *response.status_mut() =
            http::StatusCode::from_u16(status).unwrap_or(http::StatusCode::FORBIDDEN);
        response.headers_mut().insert(
            http::header::CONTENT_TYPE,
            http::HeaderValue::from_static("text/plain; charset=utf-8"),
        );
        Self::Reject(response)
    }
}

/// How to accept an upgrade.
#[derive(Debug, Default)]
#[non_exhaustive]
pub struct Accept {
    /// Headers added to the `101` response (e.g. `Set-Cookie`).
    pub headers: http::HeaderMap,
    /// The subprotocol to select; it must be one the client offered, else none is selected.
    pub protocol: Option<String>,
}

impl Accept {
    /// Accept with the subprotocol sockeye picked (see [`HandshakeRequest::default_protocol`]).
    pub fn with_protocol(protocol: Option<String>) -> Self {
        Self {
            headers: http::HeaderMap::new(),
            protocol,
        }
    }

    /// Adds a response header.
    #[must_use]
    pub fn header(mut self, name: http::HeaderName, value: http::HeaderValue) -> Self {
        self.headers.append(name, value);
        self
    }
}

/// The server's handshake callback.
pub type HandshakeCallback =
    Arc<dyn Fn(&HandshakeRequest<'_>) -> HandshakeDecision + Send + Sync + 'static>;

/// The server's answer to plain HTTP requests (see [`Server::on_http`]): `Some(response)` to
/// answer, `None` to keep the default refusal.
pub type HttpCallback =
    Arc<dyn Fn(&Request<()>) -> Option<http::Response<Vec<u8>>> + Send + Sync + 'static>;

/// Which `Origin` headers a server accepts: the defence against cross-site WebSocket
/// hijacking, since browsers send cookies with WebSocket handshakes. A refused origin gets
/// `403 Forbidden`.
#[derive(Clone, Default)]
#[non_exhaustive]
pub enum OriginPolicy {
    /// Every origin (the default: right for non-browser clients and public endpoints).
    #[default]
    Any,
    /// Only these origins (compared case-insensitively, e.g. `https://example.com`). Requests
    /// without `Origin` (non-browser clients; browsers always send it) are accepted.
    AllowList(Vec<String>),
    /// A predicate on the `Origin` header value (`None` when absent).
    Callback(OriginCallback),
}

/// A predicate on the `Origin` header value, for [`OriginPolicy::Callback`].
pub type OriginCallback = Arc<dyn Fn(Option<&str>) -> bool + Send + Sync + 'static>;

impl std::fmt::Debug for OriginPolicy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Any => f.write_str("Any"),
            Self::AllowList(list) => f.debug_tuple("AllowList").field(list).finish(),
            Self::Callback(_) => f.write_str("Callback(..)"),
        }
    }
}

impl OriginPolicy {
    fn allows(&self, origin: Option<&str>) -> bool {
        match self {
            Self::Any => true,
            Self::AllowList(list) => {
                origin.is_none_or(|o| list.iter().any(|allowed| allowed.eq_ignore_ascii_case(o)))
            }
            Self::Callback(f) => f(origin),
        }
    }
}

/// The server's hooks into the handshake.
#[derive(Clone, Default)]
pub(crate) struct Hooks {
    pub(crate) on_handshake: Option<HandshakeCallback>,
    pub(crate) origin: OriginPolicy,
    pub(crate) on_http: Option<HttpCallback>,
}

impl std::fmt::Debug for Hooks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hooks")
            .field("on_handshake", &self.on_handshake.is_some())
            .field("origin", &self.origin)
            .field("on_http", &self.on_http.is_some())
            .finish()
    }
}

pub(super) async fn accept_hooked<S: AsyncRead + AsyncWrite + Unpin>(
    mut io: S,
    config: WebSocketConfig,
    hooks: &Hooks,
    peer: Option<SocketAddr>,
) -> Result<(WebSocketStream<S>, Request<()>), Error> {
    let timeout = config.handshake_timeout;
    let mut buf = Vec::with_capacity(1024);
    let parsed = tokio::time::timeout(timeout, read_request(&mut io, &mut buf, &config)).await;
    let (request, used) = match parsed {
        Err(_) => return Err(Error::HandshakeTimeout),
        Ok(Err(Error::Handshake(err))) => {
            if let Some(on_http) = &hooks.on_http {
                if let Some(plain) = parse_plain_request(&buf, &config.handshake) {
                    if let Some(err) = answer_plain(&mut io, on_http, plain, peer, timeout).await {
                        return Err(err);
                    }
                }
            }
            tracing::debug!(error = %err, status = err.status(), "handshake rejected");
            let (response, body) = reject_response(&err);
            send_refusal(&mut io, &response, &body, timeout).await;
            return Err(Error::Handshake(err));
        }
        Ok(Err(other)) => return Err(other),
        Ok(Ok(found)) => found,
    };
    let accept = match decide(&request, &config, hooks, peer) {
        Ok(accept) => accept,
        Err(refusal) => {
            let reject = HandshakeDecision::Reject(*refusal);
            return Err(refuse(&mut io, reject, timeout).await);
        }
    };
    let protocol = accept.protocol;
    let (mut response, deflate) =
        accept_response_with(&request, config.deflate.as_ref(), protocol.as_deref());
    for (name, value) in &accept.headers {
        response.headers_mut().append(name.clone(), value.clone());
    }
    let mut out = Vec::new();
    write_response(&response, b"", &mut out);
    io.write_all(&out).await?;
    io.flush().await?;
    tracing::debug!(path = %request.uri(), ?protocol, "websocket connection accepted");
    let mut ws =
        WebSocketStream::from_raw_negotiated(io, Role::Server, config, deflate, &buf[used..]);
    ws.set_protocol(protocol);
    Ok((ws, request))
}

/// The origin policy and the handshake callback on a valid upgrade `request`, whichever HTTP
/// version carried it: the acceptance (extra headers, and a subprotocol the client offered or
/// none), or the refusal to send.
pub(crate) fn decide(
    request: &Request<()>,
    config: &WebSocketConfig,
    hooks: &Hooks,
    peer: Option<SocketAddr>,
) -> Result<Accept, Box<http::Response<Vec<u8>>>> {
    let origin_header = request.headers().get(http::header::ORIGIN);
    let origin = origin_header.and_then(|v| v.to_str().ok());
    // RFC 6454 serializes origins in ASCII: one with other bytes matches nothing, rather than
    // passing as absent (which an allow-list accepts).
    let unreadable = origin_header.is_some() && origin.is_none();
    if (unreadable && !matches!(hooks.origin, OriginPolicy::Any)) || !hooks.origin.allows(origin) {
        tracing::debug!(?origin, "origin refused");
        let mut refusal = http::Response::new(b"origin not allowed\n".to_vec());
        *refusal.status_mut() = http::StatusCode::FORBIDDEN;
        refusal.headers_mut().insert(
            http::header::CONTENT_TYPE,
            http::HeaderValue::from_static("text/plain; charset=utf-8"),
        );
        return Err(Box::new(refusal));
    }
    let protocols = requested_protocols(request);
    let default_protocol = select_protocol(&protocols, config);
    let accept = match &hooks.on_handshake {
        None => Accept::with_protocol(default_protocol),
        Some(callback) => {
            let seen = HandshakeRequest {
                request,
                peer,
                protocols: protocols.clone(),
                default_protocol,
            };
            match callback(&seen) {
                HandshakeDecision::Accept(accept) => accept,
                HandshakeDecision::Reject(refusal) => return Err(Box::new(refusal)),
            }
        }
    };
    // §4.2.2: the selected subprotocol must be one the client offered.
    Ok(Accept {
        headers: accept.headers,
        protocol: accept.protocol.filter(|p| protocols.contains(p)),
    })
}

/// The subprotocol selected by default: the first one the client `offered` (in its order) that
/// [`WebSocketConfig::protocols`] lists. RFC 6455 §4.2.2: the server's choice "MUST be one of
/// the values sent by the client".
pub(crate) fn select_protocol(offered: &[String], config: &WebSocketConfig) -> Option<String> {
    offered
        .iter()
        .find(|p| config.protocols.contains(p))
        .cloned()
}

/// How a valid upgrade request is accepted without a handshake callback: what
/// [`blocking::accept`](crate::blocking::accept) and `integrations::hyper::upgrade` (feature `hyper`) answer.
#[derive(Debug)]
pub(crate) struct Agreement {
    /// The `101 Switching Protocols` response.
    pub(crate) response: http::Response<()>,
    /// The permessage-deflate parameters agreed, if any.
    pub(crate) deflate: Option<DeflateParams>,
    /// The subprotocol selected ([`select_protocol`]).
    pub(crate) protocol: Option<String>,
}

/// Accepts a valid upgrade `request` with `config`, as [`Server`] does without a handshake
/// callback.
pub(crate) fn agree(request: &Request<()>, config: &WebSocketConfig) -> Agreement {
    let protocol = select_protocol(&requested_protocols(request), config);
    let (response, deflate) =
        accept_response_with(request, config.deflate.as_ref(), protocol.as_deref());
    Agreement {
        response,
        deflate,
        protocol,
    }
}

/// Writes a refusal chosen by the origin policy or the handshake callback; returns the error
/// for the caller.
pub(super) async fn refuse<S: AsyncWrite + Unpin>(
    io: &mut S,
    decision: HandshakeDecision,
    timeout: Duration,
) -> Error {
    let HandshakeDecision::Reject(mut response) = decision else {
        return Error::Handshake(Box::new(HandshakeError::BadHeader("refused")));
    };
    let length = http::HeaderValue::from(response.body().len());
    response
        .headers_mut()
        .insert(http::header::CONTENT_LENGTH, length);
    response.headers_mut().insert(
        http::header::CONNECTION,
        http::HeaderValue::from_static("close"),
    );
    let (parts, body) = response.into_parts();
    let head = http::Response::from_parts(parts, ());
    send_refusal(io, &head, &body, timeout).await;
    let (parts, ()) = head.into_parts();
    Error::Http(Box::new(http::Response::from_parts(parts, body)))
}

pub(super) async fn send_refusal<S: AsyncWrite + Unpin>(
    io: &mut S,
    response: &http::Response<()>,
    body: &[u8],
    timeout: Duration,
) {
    let mut out = Vec::new();
    write_response(response, body, &mut out);
    // Best effort: the peer may already be gone.
    let _ = tokio::time::timeout(timeout, async {
        io.write_all(&out).await?;
        io.shutdown().await
    })
    .await;
}

/// A complete `GET` or `HEAD` request without an `Upgrade` header: ordinary HTTP, for
/// [`Server::on_http`].
#[derive(Debug)]
pub(super) struct PlainRequest {
    request: Request<()>,
    /// It announced a body (`Content-Length` other than 0, or `Transfer-Encoding`).
    has_body: bool,
}

/// Parses the head at the start of `buf` as a plain HTTP/1.0 or 1.1 `GET`/`HEAD` request within
/// the handshake limits. `None` for anything else (incomplete, malformed, another method, an
/// `Upgrade` header of any kind): such requests keep their handshake refusal.
pub(super) fn parse_plain_request(
    buf: &[u8],
    config: &sockeye_proto::handshake::HandshakeConfig,
) -> Option<PlainRequest> {
    let mut headers = vec![httparse::EMPTY_HEADER; config.max_headers];
    let mut parsed = httparse::Request::new(&mut headers);
    let used = match parsed.parse(buf) {
        Ok(httparse::Status::Complete(used)) => used,
        _ => return None,
    };
    if used > config.max_head_size {
        return None;
    }
    let method = match parsed.method? {
        "GET" => http::Method::GET,
        "HEAD" => http::Method::HEAD,
        _ => return None,
    };
    let version = match parsed.version? {
        0 => http::Version::HTTP_10,
        1 => http::Version::HTTP_11,
        _ => return None,
    };
    let mut request = Request::builder()
        .method(method)
        .version(version)
        .uri(parsed.path?)
        .body(())
        .ok()?;
    for header in parsed.headers.iter() {
        let name = http::HeaderName::from_bytes(header.name.as_bytes()).ok()?;
        let value = http::HeaderValue::from_bytes(header.value).ok()?;
        request.headers_mut().append(name, value);
    }
    let headers = request.headers();
    if headers.contains_key(http::header::UPGRADE) {
        return None;
    }
    let has_body = headers.contains_key(http::header::TRANSFER_ENCODING)
        || headers
            .get_all(http::header::CONTENT_LENGTH)
            .iter()
            .any(|v| v.as_bytes().trim_ascii() != b"0");
    Some(PlainRequest { request, has_body })
}

/// Answers a plain HTTP request with the [`Server::on_http`] callback's response (413 for a
/// request with a body, which is never read), logs it and closes. `None` when the callback
/// declines: the caller sends its usual refusal.
pub(super) async fn answer_plain<S: AsyncWrite + Unpin>(
    io: &mut S,
    on_http: &HttpCallback,
    plain: PlainRequest,
    peer: Option<SocketAddr>,
    timeout: Duration,
) -> Option<Error> {
    let PlainRequest { request, has_body } = plain;
    let mut response = if has_body {
        let mut refusal = http::Response::new(b"request bodies are not accepted\n".to_vec());
        *refusal.status_mut() = http::StatusCode::PAYLOAD_TOO_LARGE;
        refusal.headers_mut().insert(
            http::header::CONTENT_TYPE,
            http::HeaderValue::from_static("text/plain; charset=utf-8"),
        );
        refusal
    } else {
        on_http(&request)?
    };
    // The body is sent whole, then the connection is closed: its length is known.
    let length = http::HeaderValue::from(response.body().len());
    let headers = response.headers_mut();
    headers.remove(http::header::TRANSFER_ENCODING);
    headers.insert(http::header::CONTENT_LENGTH, length);
    headers.insert(
        http::header::CONNECTION,
        http::HeaderValue::from_static("close"),
    );
    tracing::info!(
        peer = %peer.map_or_else(|| "-".to_owned(), |p| p.to_string()),
        method = %request.method(),
        path = %request.uri(),
        status = response.status().as_u16(),
        "http request"
    );
    let (parts, body) = response.into_parts();
    let head = http::Response::from_parts(parts, ());
    // RFC 9110 §9.3.2: the answer to HEAD has the headers of the answer to GET, without content.
    let sent: &[u8] = if request.method() == http::Method::HEAD {
        &[]
    } else {
        &body
    };
    send_refusal(io, &head, sent, timeout).await;
    let (parts, ()) = head.into_parts();
    Some(Error::Http(Box::new(http::Response::from_parts(
        parts, body,
    ))))
}

pub(super) async fn read_request<S: AsyncRead + Unpin>(
    io: &mut S,
    buf: &mut Vec<u8>,
    config: &WebSocketConfig,
) -> Result<(Request<()>, usize), Error> {
    loop {
        let n = io.read_buf(buf).await?;
        if let Some(found) = parse_request(buf, &config.handshake)? {
            return Ok(found);
        }
        if n == 0 {
            // The peer closed before the head ended: nobody to answer.
            return Err(Error::Io(io::ErrorKind::UnexpectedEof.into()));
        }
    }
}
