//! The server side of the opening handshake
//! ([RFC 6455 §4.2](https://www.rfc-editor.org/rfc/rfc6455#section-4.2)).
//!
//! [`ServerHandshake`] is the whole exchange as an object fed bytes: once the request head is
//! complete it says whether the request is an upgrade (with the `101` answer and the
//! [`Negotiated`] result), a plain HTTP request answered by the policy's callback, or a request
//! to refuse (with the bytes of the refusal). [`ServerPolicy`] holds the server's choices
//! (origins, subprotocols, permessage-deflate, the callbacks) and is shared by the servers that
//! parse HTTP themselves (hyper, HTTP/2 extended CONNECT). The free functions below are its
//! building blocks.

use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;

use http::header::{
    HeaderName, HeaderValue, ALLOW, CONNECTION, CONTENT_LENGTH, CONTENT_TYPE, HOST, ORIGIN,
    SEC_WEBSOCKET_ACCEPT, SEC_WEBSOCKET_EXTENSIONS, SEC_WEBSOCKET_KEY, SEC_WEBSOCKET_PROTOCOL,
    SEC_WEBSOCKET_VERSION, TRANSFER_ENCODING, UPGRADE,
};
use http::{Method, Request, Response, StatusCode, Version};

use super::accept_key::{accept_key, is_valid_key};
use super::{
    check_partial_size, check_upgrade_headers, copy_headers, from_httparse, requested_protocols,
    HandshakeConfig, HandshakeError, Negotiated,
};
use crate::deflate::{DeflateConfig, DeflateParams};

/// Parses and validates an upgrade request at the start of `buf`.
///
/// Returns `Ok(None)` while the head is incomplete, else the request and the number of bytes of
/// its head.
///
/// # Errors
///
/// A [`HandshakeError`] whose [`status`](HandshakeError::status) is the answer to send: 400 for a
/// malformed or incomplete upgrade request, 405 for a method other than GET, 426 for a
/// `Sec-WebSocket-Version` other than 13, 431 beyond the head size or header count limits.
pub fn parse_request(
    buf: &[u8],
    config: &HandshakeConfig,
) -> Result<Option<(Request<()>, usize)>, HandshakeError> {
    let Some((request, used)) = parse_head(buf, config)? else {
        return Ok(None);
    };
    validate_request(&request)?;
    Ok(Some((request, used)))
}

/// Parses the request head at the start of `buf` as HTTP/1.x without judging it as a
/// handshake: `Ok(None)` while it is incomplete, else the request and the length of its head.
fn parse_head(
    buf: &[u8],
    config: &HandshakeConfig,
) -> Result<Option<(Request<()>, usize)>, HandshakeError> {
    let mut headers = vec![httparse::EMPTY_HEADER; config.max_headers];
    let mut parsed = httparse::Request::new(&mut headers);
    let used = match parsed.parse(buf) {
        Ok(httparse::Status::Complete(used)) => used,
        Ok(httparse::Status::Partial) => return check_partial_size(buf, config).map(|()| None),
        Err(err) => {
            // A head cut off by the size limit can look malformed; report the limit.
            check_partial_size(buf, config)?;
            return Err(from_httparse(err, config));
        }
    };
    if used > config.max_head_size {
        return Err(HandshakeError::HeadTooLarge {
            limit: config.max_head_size,
        });
    }
    let method = parsed
        .method
        .and_then(|m| Method::from_bytes(m.as_bytes()).ok())
        .ok_or(HandshakeError::MalformedHttp("invalid method"))?;
    let version = match parsed.version {
        Some(1) => Version::HTTP_11,
        _ => Version::HTTP_10,
    };
    let path = parsed.path.unwrap_or("/");
    let mut request = Request::builder()
        .method(method)
        .version(version)
        .uri(path)
        .body(())
        .map_err(|_| HandshakeError::MalformedHttp("invalid request target"))?;
    copy_headers(parsed.headers, request.headers_mut())?;
    Ok(Some((request, used)))
}

/// Checks a parsed request against the opening handshake's rules
/// ([RFC 6455 §4.2.1](https://www.rfc-editor.org/rfc/rfc6455#section-4.2.1)): a GET over
/// HTTP/1.1 with one `Host`, `Upgrade: websocket`, `Connection: Upgrade`, one valid
/// `Sec-WebSocket-Key` and `Sec-WebSocket-Version: 13`.
///
/// [`parse_request`] runs it on the requests it parses; servers that parse HTTP themselves
/// (hyper) run it on theirs, so both accept exactly the same requests.
///
/// # Errors
///
/// A [`HandshakeError`] whose [`status`](HandshakeError::status) is the answer to send: 405 for
/// a method other than GET, 505 for a version other than HTTP/1.1, 426 for a
/// `Sec-WebSocket-Version` other than 13, 400 for any other missing or bad header.
pub fn validate_request<B>(request: &Request<B>) -> Result<(), HandshakeError> {
    // §4.2.1: "An HTTP/1.1 or higher GET request". Higher versions have no Upgrade mechanism
    // (HTTP/2 forbids connection-specific headers), so only HTTP/1.1 qualifies.
    if request.method() != Method::GET {
        return Err(HandshakeError::MethodNotAllowed);
    }
    if request.version() != Version::HTTP_11 {
        return Err(HandshakeError::UnsupportedHttpVersion);
    }
    let headers = request.headers();
    let single = |name: &HeaderName| {
        let mut values = headers.get_all(name).iter();
        match (values.next(), values.next()) {
            (Some(value), None) => Some(value),
            _ => None,
        }
    };
    // §4.2.1 items 2–6.
    if single(&HOST).is_none() {
        return Err(HandshakeError::BadHeader("host"));
    }
    check_upgrade_headers(headers)?;
    match single(&SEC_WEBSOCKET_KEY) {
        Some(key) if is_valid_key(key.as_bytes()) => {}
        _ => return Err(HandshakeError::BadHeader("sec-websocket-key")),
    }
    match single(&SEC_WEBSOCKET_VERSION) {
        Some(v) if v.as_bytes().trim_ascii() == b"13" => Ok(()),
        Some(_) => Err(HandshakeError::UnsupportedVersion),
        None => Err(HandshakeError::BadHeader("sec-websocket-version")),
    }
}

/// Whether `headers` ask for a WebSocket upgrade: `Upgrade` lists `websocket` and
/// `Connection` lists `upgrade` (in any case, possibly over several lines). Such a request is
/// then checked by [`validate_request`]; any other request is ordinary HTTP.
pub fn is_upgrade_request(headers: &http::HeaderMap) -> bool {
    check_upgrade_headers(headers).is_ok()
}

/// The `101 Switching Protocols` answer to a request accepted by [`parse_request`], accepting
/// the first acceptable permessage-deflate offer when `deflate` is given and naming `protocol`
/// as the subprotocol (it should be one the request offered, see
/// [`requested_protocols`](super::requested_protocols)). Returns the response and the agreed
/// deflate parameters (`None`: no compression).
pub fn accept_response_with(
    request: &Request<()>,
    deflate: Option<&DeflateConfig>,
    protocol: Option<&str>,
) -> (Response<()>, Option<DeflateParams>) {
    let mut response = accept_response(request);
    let params = add_selection(request, &mut response, deflate, protocol);
    (response, params)
}

/// Adds the subprotocol and the permessage-deflate answer to an accepting `response`; returns
/// the agreed deflate parameters. Shared with extended CONNECT over HTTP/2 (RFC 8441).
pub(super) fn add_selection(
    request: &Request<()>,
    response: &mut Response<()>,
    deflate: Option<&DeflateConfig>,
    protocol: Option<&str>,
) -> Option<DeflateParams> {
    if let Some(value) = protocol.and_then(|p| HeaderValue::from_str(p).ok()) {
        response.headers_mut().insert(SEC_WEBSOCKET_PROTOCOL, value);
    }
    let params = deflate.and_then(|config| {
        config.accept_offer(
            request
                .headers()
                .get_all(SEC_WEBSOCKET_EXTENSIONS)
                .iter()
                .map(HeaderValue::as_bytes),
        )
    });
    if let Some(params) = &params {
        if let Ok(value) = HeaderValue::from_str(&params.to_string()) {
            response
                .headers_mut()
                .insert(SEC_WEBSOCKET_EXTENSIONS, value);
        }
    }
    params
}

/// The `101 Switching Protocols` answer to a request accepted by [`parse_request`], with no
/// extension.
pub fn accept_response(request: &Request<()>) -> Response<()> {
    let key = request
        .headers()
        .get(SEC_WEBSOCKET_KEY)
        .map_or(&[][..], HeaderValue::as_bytes);
    let accept = HeaderValue::from_str(&accept_key(key))
        .unwrap_or_else(|_| unreachable!("base64 is a valid header value"));
    let mut response = Response::new(());
    *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let headers = response.headers_mut();
    headers.insert(UPGRADE, HeaderValue::from_static("websocket"));
    headers.insert(CONNECTION, HeaderValue::from_static("Upgrade"));
    headers.insert(SEC_WEBSOCKET_ACCEPT, accept);
    response
}

/// The HTTP answer to a failed handshake, with a short plain-text body.
pub fn reject_response(err: &HandshakeError) -> (Response<()>, Vec<u8>) {
    let status = StatusCode::from_u16(err.status()).unwrap_or(StatusCode::BAD_REQUEST);
    let body = format!("{err}\n").into_bytes();
    let mut response = Response::new(());
    *response.status_mut() = status;
    let headers = response.headers_mut();
    match err {
        // §4.2.2: "... MUST respond with an appropriate HTTP error code (such as 426 Upgrade
        // Required) and a |Sec-WebSocket-Version| header field indicating the version(s) the
        // server is capable of understanding."
        HandshakeError::UnsupportedVersion => {
            headers.insert(SEC_WEBSOCKET_VERSION, HeaderValue::from_static("13"));
            headers.insert(UPGRADE, HeaderValue::from_static("websocket"));
        }
        HandshakeError::MethodNotAllowed => {
            headers.insert(ALLOW, HeaderValue::from_static("GET"));
        }
        _ => {}
    }
    headers.insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    headers.insert(CONTENT_LENGTH, HeaderValue::from(body.len()));
    headers.insert(CONNECTION, HeaderValue::from_static("close"));
    (response, body)
}

/// Serialises a response head and body as HTTP/1.1.
pub fn write_response(response: &Response<()>, body: &[u8], out: &mut Vec<u8>) {
    let status = response.status();
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(status.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(status.canonical_reason().unwrap_or("Unknown").as_bytes());
    out.extend_from_slice(b"\r\n");
    for (name, value) in response.headers() {
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(body);
}

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

impl fmt::Debug for OriginPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Any => f.write_str("Any"),
            Self::AllowList(list) => f.debug_tuple("AllowList").field(list).finish(),
            Self::Callback(_) => f.write_str("Callback(..)"),
        }
    }
}

impl OriginPolicy {
    /// Whether a request with this `Origin` header (`None`: absent) may connect. A header that
    /// is not ASCII (RFC 6454 serializes origins in ASCII) matches no allow-list or predicate,
    /// rather than passing as absent.
    pub fn allows(&self, origin: Option<&HeaderValue>) -> bool {
        let text = origin.and_then(|v| v.to_str().ok());
        match self {
            Self::Any => true,
            _ if origin.is_some() && text.is_none() => false,
            Self::AllowList(list) => {
                text.is_none_or(|o| list.iter().any(|allowed| allowed.eq_ignore_ascii_case(o)))
            }
            Self::Callback(f) => f(text),
        }
    }
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
    /// The subprotocol the policy would pick from [`ServerPolicy::protocols`].
    pub default_protocol: Option<String>,
}

/// A handshake callback's answer.
#[derive(Debug)]
pub enum HandshakeDecision {
    /// Upgrade, with extra response headers and a subprotocol.
    Accept(Accept),
    /// Refuse with this response (status, headers, body), e.g. 401 with `WWW-Authenticate`.
    Reject(Response<Vec<u8>>),
}

impl HandshakeDecision {
    /// Refuses with `status` and a plain-text `body` (403 when `status` is not a valid code).
    pub fn reject(status: u16, body: impl Into<Vec<u8>>) -> Self {
        let status = StatusCode::from_u16(status).unwrap_or(StatusCode::FORBIDDEN);
        Self::Reject(text_response(status, body.into()))
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
    /// Accept with this subprotocol (see [`HandshakeRequest::default_protocol`]).
    pub fn with_protocol(protocol: Option<String>) -> Self {
        Self {
            headers: http::HeaderMap::new(),
            protocol,
        }
    }

    /// Adds a response header.
    #[must_use]
    pub fn header(mut self, name: HeaderName, value: HeaderValue) -> Self {
        self.headers.append(name, value);
        self
    }
}

/// A server's handshake callback: it sees each valid upgrade request that passed the origin
/// policy and accepts or refuses it.
pub type HandshakeCallback =
    Arc<dyn Fn(&HandshakeRequest<'_>) -> HandshakeDecision + Send + Sync + 'static>;

/// A server's answer to plain HTTP `GET`/`HEAD` requests: `Some(response)` to answer, `None`
/// to keep the handshake's refusal.
pub type HttpCallback =
    Arc<dyn Fn(&Request<()>) -> Option<Response<Vec<u8>>> + Send + Sync + 'static>;

/// What a server decides in the opening handshake, whichever HTTP version carries it: the
/// limits on the request head, which origins may connect, which subprotocols and extensions it
/// speaks, and the callbacks that may accept, refuse or answer a request themselves.
#[derive(Clone, Default)]
#[non_exhaustive]
pub struct ServerPolicy {
    /// Limits on the request head.
    pub limits: HandshakeConfig,
    /// Which `Origin` headers are accepted (default: any).
    pub origin: OriginPolicy,
    /// The subprotocols the server speaks; the first one the client offers (in the client's
    /// order) is selected by default.
    pub protocols: Vec<String>,
    /// permessage-deflate, when the server accepts it.
    pub deflate: Option<DeflateConfig>,
    /// Called on each valid upgrade request the origin policy lets through.
    pub on_handshake: Option<HandshakeCallback>,
    /// Answers plain HTTP `GET`/`HEAD` requests; without it they are refused as failed
    /// handshakes.
    pub on_http: Option<HttpCallback>,
}

impl fmt::Debug for ServerPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServerPolicy")
            .field("limits", &self.limits)
            .field("origin", &self.origin)
            .field("protocols", &self.protocols)
            .field("deflate", &self.deflate)
            .field("on_handshake", &self.on_handshake.is_some())
            .field("on_http", &self.on_http.is_some())
            .finish()
    }
}

impl ServerPolicy {
    /// The subprotocol selected by default: the first one the client `offered` (in its order)
    /// that [`protocols`](Self::protocols) lists. RFC 6455 §4.2.2: the server's choice "MUST
    /// be one of the values sent by the client".
    pub fn select_protocol(&self, offered: &[String]) -> Option<String> {
        offered.iter().find(|p| self.protocols.contains(p)).cloned()
    }

    /// How a valid upgrade `request` is accepted when no callback is consulted: with the
    /// default subprotocol and no extra headers.
    pub fn default_accept(&self, request: &Request<()>) -> Accept {
        Accept::with_protocol(self.select_protocol(&requested_protocols(request)))
    }

    /// The origin policy and the handshake callback on a valid upgrade `request` (over
    /// HTTP/1.1 or HTTP/2) from `peer`.
    ///
    /// # Errors
    ///
    /// The refusal to send: `403 Forbidden` for a refused origin, or the callback's response.
    pub fn decide(
        &self,
        request: &Request<()>,
        peer: Option<SocketAddr>,
    ) -> Result<Accept, Box<Response<Vec<u8>>>> {
        if !self.origin.allows(request.headers().get(ORIGIN)) {
            return Err(Box::new(text_response(
                StatusCode::FORBIDDEN,
                b"origin not allowed\n".to_vec(),
            )));
        }
        let Some(callback) = &self.on_handshake else {
            return Ok(self.default_accept(request));
        };
        let protocols = requested_protocols(request);
        let default_protocol = self.select_protocol(&protocols);
        let seen = HandshakeRequest {
            request,
            peer,
            protocols,
            default_protocol,
        };
        match callback(&seen) {
            HandshakeDecision::Accept(accept) => Ok(accept),
            HandshakeDecision::Reject(refusal) => Err(Box::new(refusal)),
        }
    }

    /// The `101 Switching Protocols` answer accepting `request` over HTTP/1.1 with `accept`,
    /// and what it agreed. A subprotocol the client did not offer is not selected (§4.2.2);
    /// permessage-deflate is agreed when [`deflate`](Self::deflate) is set and the client
    /// offered acceptable parameters.
    pub fn accept_response(
        &self,
        request: &Request<()>,
        accept: Accept,
    ) -> (Response<()>, Negotiated) {
        self.agree(request, accept, accept_response_with)
    }

    /// The answer to a plain HTTP `request` (not an upgrade), whichever HTTP version carried
    /// it: `None` unless [`on_http`](Self::on_http) is set and the method is `GET` or `HEAD`;
    /// `413 Payload Too Large` when the request announced a body (it is never read); else the
    /// callback's answer (`None` when it declines).
    pub fn answer_http(&self, request: &Request<()>, has_body: bool) -> Option<Response<Vec<u8>>> {
        let on_http = self.on_http.as_ref()?;
        if !matches!(*request.method(), Method::GET | Method::HEAD) {
            return None;
        }
        if has_body {
            return Some(text_response(
                StatusCode::PAYLOAD_TOO_LARGE,
                b"request bodies are not accepted\n".to_vec(),
            ));
        }
        on_http(request)
    }
}

/// The answer building of [`accept_response_with`] and its HTTP/2 twin
/// ([`accept_connect_response`](super::accept_connect_response)).
pub(super) type Answer =
    fn(&Request<()>, Option<&DeflateConfig>, Option<&str>) -> (Response<()>, Option<DeflateParams>);

impl ServerPolicy {
    /// `answer` to `request` with `accept`'s headers and subprotocol (dropped unless the
    /// client offered it), and what it agreed.
    pub(super) fn agree(
        &self,
        request: &Request<()>,
        accept: Accept,
        answer: Answer,
    ) -> (Response<()>, Negotiated) {
        let protocol = accept
            .protocol
            .filter(|p| requested_protocols(request).contains(p));
        let (mut response, deflate) = answer(request, self.deflate.as_ref(), protocol.as_deref());
        for (name, value) in &accept.headers {
            response.headers_mut().append(name.clone(), value.clone());
        }
        (response, Negotiated { protocol, deflate })
    }
}

/// A response with a plain-text body.
fn text_response(status: StatusCode, body: Vec<u8>) -> Response<Vec<u8>> {
    let mut response = Response::new(body);
    *response.status_mut() = status;
    response.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

/// What a [`ServerHandshake`] found once the request head was complete. Every variant but
/// `Upgrade` ends the connection: write the bytes, then close.
///
/// Not `#[non_exhaustive]`: a server must handle every kind of answer, so a new one should
/// break its `match`.
#[derive(Debug)]
pub enum Incoming {
    /// A valid upgrade request the policy accepted: write `response`, then the connection
    /// speaks WebSocket with what was `negotiated` (the first bytes are
    /// [`ServerHandshake::leftover`]).
    Upgrade {
        /// The request (method, path and query, headers).
        request: Request<()>,
        /// The `101` answer, serialized.
        response: Vec<u8>,
        /// The subprotocol and extension agreed.
        negotiated: Negotiated,
    },
    /// A plain HTTP request answered by [`ServerPolicy::on_http`] (or `413` for one with a
    /// body).
    Http {
        /// The request.
        request: Request<()>,
        /// The answer, with its whole body (also for `HEAD`, whose `bytes` carry none).
        answer: Response<Vec<u8>>,
        /// The answer, serialized.
        bytes: Vec<u8>,
    },
    /// A valid upgrade request refused by the origin policy or the handshake callback.
    Refused {
        /// The request.
        request: Request<()>,
        /// The refusal, with its body.
        answer: Response<Vec<u8>>,
        /// The refusal, serialized.
        bytes: Vec<u8>,
    },
    /// Not a valid upgrade request (nor a plain request that [`ServerPolicy::on_http`]
    /// answered): refused with the RFC's status (400, 405, 426 with `Sec-WebSocket-Version`,
    /// 431, 505).
    Invalid {
        /// What is wrong with it.
        error: HandshakeError,
        /// The refusal, serialized.
        bytes: Vec<u8>,
    },
}

/// The server side of the opening handshake over HTTP/1.1, fed the bytes the client sends.
///
/// The request head is parsed once: it is an upgrade, a plain HTTP request, or a request to
/// refuse, and the answer to each comes with it ([`Incoming`]).
///
/// ```
/// use sockeye_proto::handshake::{Incoming, ServerHandshake, ServerPolicy};
///
/// let mut handshake = ServerHandshake::new(ServerPolicy::default(), None);
/// let request = b"GET /chat HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\n\
///     Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
///     Sec-WebSocket-Version: 13\r\n\r\n";
/// let (first, rest) = request.split_at(20);
/// assert!(handshake.handle_bytes(first).is_none());
/// match handshake.handle_bytes(rest) {
///     Some(Incoming::Upgrade { response, .. }) => assert!(response.starts_with(b"HTTP/1.1 101 ")),
///     other => panic!("{other:?}"),
/// }
/// ```
#[derive(Debug)]
pub struct ServerHandshake {
    policy: ServerPolicy,
    peer: Option<SocketAddr>,
    buf: Vec<u8>,
    /// The length of the head once parsed.
    used: Option<usize>,
    /// The request was answered: later bytes are only kept.
    answered: bool,
}

impl ServerHandshake {
    /// A handshake with a client at `peer` (when known, for the handshake callback), decided by
    /// `policy`.
    pub fn new(policy: ServerPolicy, peer: Option<SocketAddr>) -> Self {
        Self {
            policy,
            peer,
            buf: Vec::new(),
            used: None,
            answered: false,
        }
    }

    /// The policy deciding this handshake.
    pub fn policy(&self) -> &ServerPolicy {
        &self.policy
    }

    /// Feeds bytes read from the client. Returns `None` while the request head is incomplete,
    /// then, once, what the request is with its answer; later calls return `None` and only
    /// keep the bytes (see [`leftover`](Self::leftover)).
    pub fn handle_bytes(&mut self, data: &[u8]) -> Option<Incoming> {
        self.buf.extend_from_slice(data);
        if self.answered {
            return None;
        }
        let parsed = parse_head(&self.buf, &self.policy.limits);
        self.answered = !matches!(parsed, Ok(None));
        let (request, used) = match parsed {
            Ok(None) => return None,
            Ok(Some(found)) => found,
            Err(error) => return Some(self.invalid(error)),
        };
        self.used = Some(used);
        if let Err(error) = validate_request(&request) {
            return Some(self.plain(request, error));
        }
        Some(match self.policy.decide(&request, self.peer) {
            Ok(accept) => {
                let (response, negotiated) = self.accept(&request, accept);
                Incoming::Upgrade {
                    request,
                    response,
                    negotiated,
                }
            }
            Err(refusal) => {
                let (bytes, answer) = Self::reject(*refusal);
                Incoming::Refused {
                    request,
                    answer,
                    bytes,
                }
            }
        })
    }

    /// The bytes received after the request head: the first WebSocket bytes of an accepted
    /// connection.
    pub fn leftover(&self) -> &[u8] {
        self.used.map_or(&[][..], |used| &self.buf[used..])
    }

    /// The `101` answer accepting `request` with `accept`, serialized, and what it agreed (see
    /// [`ServerPolicy::accept_response`]).
    pub fn accept(&self, request: &Request<()>, accept: Accept) -> (Vec<u8>, Negotiated) {
        let (response, negotiated) = self.policy.accept_response(request, accept);
        let mut out = Vec::new();
        write_response(&response, b"", &mut out);
        (out, negotiated)
    }

    /// A refusal (or any answer after which the connection closes), serialized: its
    /// `Content-Length` set to the body's length, without `Transfer-Encoding`, with
    /// `Connection: close`. Returns the bytes and the response as sent.
    pub fn reject(response: Response<Vec<u8>>) -> (Vec<u8>, Response<Vec<u8>>) {
        closing_answer(response, false)
    }

    /// The answer to a request whose head is not a valid upgrade: plain HTTP if the policy
    /// answers it, else the handshake's refusal.
    fn plain(&self, request: Request<()>, error: HandshakeError) -> Incoming {
        let headers = request.headers();
        // Any `Upgrade` header, even one that is not `websocket`, keeps the handshake refusal.
        if headers.contains_key(UPGRADE) {
            return self.invalid(error);
        }
        let has_body = headers.contains_key(TRANSFER_ENCODING)
            || headers
                .get_all(CONTENT_LENGTH)
                .iter()
                .any(|v| v.as_bytes().trim_ascii() != b"0");
        let Some(answer) = self.policy.answer_http(&request, has_body) else {
            return self.invalid(error);
        };
        // RFC 9110 §9.3.2: the answer to HEAD has the headers of the answer to GET, without
        // content.
        let (bytes, answer) = closing_answer(answer, request.method() == Method::HEAD);
        Incoming::Http {
            request,
            answer,
            bytes,
        }
    }

    fn invalid(&self, error: HandshakeError) -> Incoming {
        let (response, body) = reject_response(&error);
        let mut bytes = Vec::new();
        write_response(&response, &body, &mut bytes);
        Incoming::Invalid { error, bytes }
    }
}

/// Serializes an answer after which the connection closes (see [`ServerHandshake::reject`]);
/// without its body when `head_only`.
fn closing_answer(
    mut response: Response<Vec<u8>>,
    head_only: bool,
) -> (Vec<u8>, Response<Vec<u8>>) {
    let length = HeaderValue::from(response.body().len());
    let headers = response.headers_mut();
    headers.remove(TRANSFER_ENCODING);
    headers.insert(CONTENT_LENGTH, length);
    headers.insert(CONNECTION, HeaderValue::from_static("close"));
    let (parts, body) = response.into_parts();
    let head = Response::from_parts(parts, ());
    let mut bytes = Vec::new();
    write_response(&head, if head_only { &[] } else { &body }, &mut bytes);
    let (parts, ()) = head.into_parts();
    (bytes, Response::from_parts(parts, body))
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = "GET /chat?room=1 HTTP/1.1\r\nHost: server.example.com\r\nUpgrade: websocket\r\nConnection: keep-alive, Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nOrigin: http://example.com\r\nSec-WebSocket-Version: 13\r\n\r\n";

    fn parse(s: &str) -> Result<Option<(Request<()>, usize)>, HandshakeError> {
        parse_request(s.as_bytes(), &HandshakeConfig::default())
    }

    #[test]
    fn accepts_rfc_request_and_computes_accept() {
        let (request, used) = parse(GOOD).unwrap().unwrap();
        assert_eq!(used, GOOD.len());
        assert_eq!(request.uri(), "/chat?room=1");
        let response = accept_response(&request);
        assert_eq!(response.status(), 101);
        assert_eq!(
            response.headers()[SEC_WEBSOCKET_ACCEPT],
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
        let mut out = Vec::new();
        write_response(&response, b"", &mut out);
        let text = String::from_utf8(out).unwrap();
        assert!(text.starts_with("HTTP/1.1 101 Switching Protocols\r\n"));
        assert!(text.ends_with("\r\n\r\n"));
    }

    #[test]
    fn partial_request_asks_for_more_at_every_length() {
        for len in 0..GOOD.len() {
            assert!(matches!(parse(&GOOD[..len]), Ok(None)), "len {len}");
        }
    }

    #[test]
    fn answers_with_the_rfc_status() {
        let cases: &[(&str, &str, u16)] = &[
            ("GET ", "POST ", 405),
            ("Sec-WebSocket-Version: 13", "Sec-WebSocket-Version: 8", 426),
            ("Sec-WebSocket-Version: 13\r\n", "", 400),
            ("Upgrade: websocket\r\n", "", 400),
            (
                "Connection: keep-alive, Upgrade",
                "Connection: keep-alive",
                400,
            ),
            ("Host: server.example.com\r\n", "", 400),
            ("dGhlIHNhbXBsZSBub25jZQ==", "c2hvcnQ=", 400),
            ("HTTP/1.1", "HTTP/1.0", 505),
            ("Host:", "Ho st:", 400),
        ];
        for (from, to, status) in cases {
            let request = GOOD.replacen(from, to, 1);
            let err = parse(&request).unwrap_err();
            assert_eq!(err.status(), *status, "{from} -> {to}: {err}");
        }
        let (response, _) = reject_response(&HandshakeError::UnsupportedVersion);
        assert_eq!(response.headers()[SEC_WEBSOCKET_VERSION], "13");
    }

    #[test]
    fn validates_requests_parsed_elsewhere_as_parse_request_does() {
        let (parsed, _) = parse(GOOD).unwrap().unwrap();
        let mut request = Request::new("a body of any type");
        *request.uri_mut() = parsed.uri().clone();
        *request.headers_mut() = parsed.headers().clone();
        assert_eq!(validate_request(&request), Ok(()));
        assert!(is_upgrade_request(request.headers()));
        *request.version_mut() = Version::HTTP_2;
        assert_eq!(
            validate_request(&request),
            Err(HandshakeError::UnsupportedHttpVersion)
        );
        *request.version_mut() = Version::HTTP_11;
        *request.method_mut() = Method::POST;
        assert_eq!(
            validate_request(&request),
            Err(HandshakeError::MethodNotAllowed)
        );
        *request.method_mut() = Method::GET;
        request
            .headers_mut()
            .insert(SEC_WEBSOCKET_VERSION, HeaderValue::from_static("8"));
        assert_eq!(
            validate_request(&request),
            Err(HandshakeError::UnsupportedVersion)
        );
        request.headers_mut().remove(UPGRADE);
        assert!(!is_upgrade_request(request.headers()));
        assert_eq!(
            validate_request(&request),
            Err(HandshakeError::BadHeader("upgrade"))
        );
    }

    #[test]
    fn duplicate_key_is_rejected() {
        let request = GOOD.replacen(
            "Origin:",
            "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nOrigin:",
            1,
        );
        assert_eq!(
            parse(&request).unwrap_err(),
            HandshakeError::BadHeader("sec-websocket-key")
        );
    }

    #[test]
    fn limits_on_head_size_and_header_count() {
        let config = HandshakeConfig {
            max_head_size: 256,
            max_headers: 8,
        };
        let huge = format!("GET / HTTP/1.1\r\nX-Big: {}\r\n", "a".repeat(300));
        assert_eq!(
            parse_request(huge.as_bytes(), &config).unwrap_err(),
            HandshakeError::HeadTooLarge { limit: 256 }
        );
        let many = format!("GET / HTTP/1.1\r\n{}\r\n", "X: y\r\n".repeat(9));
        assert_eq!(
            parse_request(many.as_bytes(), &config).unwrap_err(),
            HandshakeError::TooManyHeaders { limit: 8 }
        );
    }
}
