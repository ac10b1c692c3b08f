//! The server side of the opening handshake
//! ([RFC 6455 §4.2](https://www.rfc-editor.org/rfc/rfc6455#section-4.2)).

use http::header::{
    HeaderName, HeaderValue, ALLOW, CONNECTION, CONTENT_LENGTH, CONTENT_TYPE, HOST,
    SEC_WEBSOCKET_ACCEPT, SEC_WEBSOCKET_EXTENSIONS, SEC_WEBSOCKET_KEY, SEC_WEBSOCKET_PROTOCOL,
    SEC_WEBSOCKET_VERSION, UPGRADE,
};
use http::{Method, Request, Response, StatusCode, Version};

use super::accept_key::{accept_key, is_valid_key};
use super::{
    check_partial_size, check_upgrade_headers, copy_headers, from_httparse, HandshakeConfig,
    HandshakeError,
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
    validate_request(&request)?;
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
