//! The client side of the opening handshake
//! ([RFC 6455 §4.1](https://www.rfc-editor.org/rfc/rfc6455#section-4.1)).

use http::header::{
    HeaderMap, HeaderName, HeaderValue, CONNECTION, CONTENT_LENGTH, HOST, LOCATION, ORIGIN,
    SEC_WEBSOCKET_ACCEPT, SEC_WEBSOCKET_EXTENSIONS, SEC_WEBSOCKET_KEY, SEC_WEBSOCKET_PROTOCOL,
    SEC_WEBSOCKET_VERSION, UPGRADE,
};
use http::{Response, StatusCode, Version};

use super::accept_key::{accept_key, key_from_nonce};
use super::{
    check_partial_size, check_upgrade_headers, copy_headers, from_httparse, is_token,
    HandshakeConfig, HandshakeError, Negotiated,
};
use crate::deflate::{DeflateConfig, DeflateParams, ExtensionError};

/// Largest body of a refusal that a client reads, to report it with the status.
pub const MAX_REFUSAL_BODY: usize = 64 << 10;

/// How much of a refusal's body to read: its `Content-Length`, or [`MAX_REFUSAL_BODY`] without
/// one, and never more than [`MAX_REFUSAL_BODY`].
pub fn refusal_body_len(response: &Response<()>) -> usize {
    response
        .headers()
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok())
        .unwrap_or(MAX_REFUSAL_BODY)
        .min(MAX_REFUSAL_BODY)
}

/// What the server's answer to the upgrade request means for the client.
///
/// Not `#[non_exhaustive]`: a client must handle every kind of answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// `101 Switching Protocols`, valid: the connection speaks WebSocket with what was agreed.
    Accepted(Negotiated),
    /// A redirect (301, 302, 307 or 308 with a `Location`) to follow: the `Location` value, to
    /// resolve with [`Redirects::follow`](super::Redirects::follow).
    Redirect(String),
    /// Any other answer: the server refused. Read up to `body_len` bytes of body (fewer if the
    /// connection ends or the peer pauses), then report the status and body.
    Refused {
        /// How many body bytes to read ([`refusal_body_len`]).
        body_len: usize,
    },
}

/// What the client asks for: target, origin and extra headers.
#[derive(Debug, Clone)]
pub struct ClientRequest {
    pub(super) host: String,
    pub(super) resource: String,
    pub(super) headers: HeaderMap,
    pub(super) deflate: Option<DeflateConfig>,
    pub(super) protocols: Vec<String>,
}

impl ClientRequest {
    /// A request for `resource` (path and query, e.g. `/chat?room=1`) on `host` (the `Host`
    /// header value: host, and port when it is not the scheme's default).
    pub fn new(host: impl Into<String>, resource: impl Into<String>) -> Self {
        let resource = resource.into();
        Self {
            host: host.into(),
            resource: if resource.is_empty() {
                "/".to_owned()
            } else {
                resource
            },
            headers: HeaderMap::new(),
            deflate: None,
            protocols: Vec::new(),
        }
    }

    /// Offers subprotocols (`Sec-WebSocket-Protocol`), most preferred first. The server picks
    /// one or none; picking one not offered fails the handshake.
    ///
    /// # Errors
    ///
    /// [`HandshakeError::InvalidProtocol`] for an empty name, a name that is not an HTTP token
    /// (RFC 6455 §4.1: "each value MUST be a non-empty string with characters in the range
    /// U+0021 to U+007E not including separator characters"), or a duplicate.
    pub fn protocols<I, P>(mut self, protocols: I) -> Result<Self, HandshakeError>
    where
        I: IntoIterator<Item = P>,
        P: Into<String>,
    {
        let mut list: Vec<String> = Vec::new();
        for protocol in protocols {
            let protocol = protocol.into();
            if !is_token(protocol.as_bytes()) || list.contains(&protocol) {
                return Err(HandshakeError::InvalidProtocol);
            }
            list.push(protocol);
        }
        self.protocols = list;
        Ok(self)
    }

    /// Offers permessage-deflate with `config` (RFC 7692).
    #[must_use]
    pub fn deflate(mut self, config: DeflateConfig) -> Self {
        self.deflate = Some(config);
        self
    }

    /// Sets the `Origin` header.
    #[must_use]
    pub fn origin(mut self, origin: HeaderValue) -> Self {
        self.headers.insert(ORIGIN, origin);
        self
    }

    /// Adds a header (a token, a cookie). The handshake's own headers cannot be overridden.
    #[must_use]
    pub fn header(mut self, name: HeaderName, value: HeaderValue) -> Self {
        self.headers.append(name, value);
        self
    }
}

/// A client handshake in progress: the request sent and the accept value expected.
#[derive(Debug, Clone)]
pub struct ClientHandshake {
    expected_accept: String,
    config: HandshakeConfig,
    deflate_offer: Option<DeflateConfig>,
    deflate: Option<DeflateParams>,
    offered_protocols: Vec<String>,
    protocol: Option<String>,
}

impl ClientHandshake {
    /// Starts a handshake: appends the request to `out`. `nonce` must come from a CSPRNG
    /// (§4.1: "randomly selected 16-byte value").
    pub fn new(
        request: &ClientRequest,
        nonce: [u8; 16],
        config: HandshakeConfig,
        out: &mut Vec<u8>,
    ) -> Self {
        let key = key_from_nonce(nonce);
        out.extend_from_slice(b"GET ");
        out.extend_from_slice(request.resource.as_bytes());
        out.extend_from_slice(b" HTTP/1.1\r\nHost: ");
        out.extend_from_slice(request.host.as_bytes());
        out.extend_from_slice(
            b"\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: ",
        );
        out.extend_from_slice(key.as_bytes());
        out.extend_from_slice(b"\r\n");
        if !request.protocols.is_empty() {
            out.extend_from_slice(b"Sec-WebSocket-Protocol: ");
            out.extend_from_slice(request.protocols.join(", ").as_bytes());
            out.extend_from_slice(b"\r\n");
        }
        if let Some(deflate) = &request.deflate {
            out.extend_from_slice(b"Sec-WebSocket-Extensions: ");
            out.extend_from_slice(deflate.offer().as_bytes());
            out.extend_from_slice(b"\r\n");
        }
        let own = [
            HOST,
            UPGRADE,
            CONNECTION,
            SEC_WEBSOCKET_VERSION,
            SEC_WEBSOCKET_KEY,
            SEC_WEBSOCKET_EXTENSIONS,
            SEC_WEBSOCKET_PROTOCOL,
        ];
        for (name, value) in &request.headers {
            if own.contains(name) {
                continue;
            }
            out.extend_from_slice(name.as_str().as_bytes());
            out.extend_from_slice(b": ");
            out.extend_from_slice(value.as_bytes());
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(b"\r\n");
        Self {
            expected_accept: accept_key(key.as_bytes()),
            config,
            deflate_offer: request.deflate.clone(),
            deflate: None,
            offered_protocols: request.protocols.clone(),
            protocol: None,
        }
    }

    /// The subprotocol the server selected, after a successful
    /// [`handle_response`](Self::handle_response).
    pub fn protocol(&self) -> Option<&str> {
        self.protocol.as_deref()
    }

    /// The permessage-deflate parameters the server agreed to, after a successful
    /// [`handle_response`](Self::handle_response).
    pub fn deflate(&self) -> Option<DeflateParams> {
        self.deflate
    }

    /// What was agreed, after a successful [`handle_response`](Self::handle_response).
    pub fn negotiated(&self) -> Negotiated {
        Negotiated::new(self.protocol.clone(), self.deflate)
    }

    /// Judges a response head read by [`parse_response`](Self::parse_response): accepted (a
    /// valid `101`), a redirect to follow (only when `follow_redirects`), or refused.
    ///
    /// # Errors
    ///
    /// A `101` that fails the checks of [`validate_response`](Self::validate_response).
    pub fn outcome(
        &mut self,
        response: &Response<()>,
        follow_redirects: bool,
    ) -> Result<Outcome, HandshakeError> {
        let status = response.status().as_u16();
        if status == 101 {
            self.validate_response(response)?;
            return Ok(Outcome::Accepted(self.negotiated()));
        }
        if follow_redirects && matches!(status, 301 | 302 | 307 | 308) {
            if let Some(location) = response
                .headers()
                .get(LOCATION)
                .and_then(|v| v.to_str().ok())
            {
                return Ok(Outcome::Redirect(location.to_owned()));
            }
        }
        Ok(Outcome::Refused {
            body_len: refusal_body_len(response),
        })
    }

    /// Parses and validates the server's response at the start of `buf`.
    ///
    /// Returns `Ok(None)` while the head is incomplete, else the response and the number of bytes
    /// of its head; later bytes are WebSocket frames.
    ///
    /// # Errors
    ///
    /// [`HandshakeError::UnexpectedStatus`] when the status is not 101, `BadHeader` for a
    /// missing `Upgrade` or `Connection`, [`HandshakeError::BadAccept`] for a wrong
    /// `Sec-WebSocket-Accept`, and `UnexpectedExtension`/`UnexpectedProtocol` when the server
    /// selects what was not offered (§4.1: "the client MUST _Fail the WebSocket Connection_").
    pub fn handle_response(
        &mut self,
        buf: &[u8],
    ) -> Result<Option<(Response<()>, usize)>, HandshakeError> {
        let Some((response, used)) = self.parse_response(buf)? else {
            return Ok(None);
        };
        self.validate_response(&response)?;
        Ok(Some((response, used)))
    }

    /// Parses the server's response head without judging it, so that a caller can read the
    /// body of a refusal (a 401 with its explanation, a redirect) before reporting it.
    ///
    /// # Errors
    ///
    /// Malformed HTTP and the head-size and header-count limits.
    pub fn parse_response(
        &self,
        buf: &[u8],
    ) -> Result<Option<(Response<()>, usize)>, HandshakeError> {
        let mut headers = vec![httparse::EMPTY_HEADER; self.config.max_headers];
        let mut parsed = httparse::Response::new(&mut headers);
        let used = match parsed.parse(buf) {
            Ok(httparse::Status::Complete(used)) => used,
            Ok(httparse::Status::Partial) => {
                return check_partial_size(buf, &self.config).map(|()| None)
            }
            Err(err) => {
                check_partial_size(buf, &self.config)?;
                return Err(from_httparse(err, &self.config));
            }
        };
        if used > self.config.max_head_size {
            return Err(HandshakeError::HeadTooLarge {
                limit: self.config.max_head_size,
            });
        }
        let code = parsed.code.unwrap_or(0);
        let mut response = Response::new(());
        *response.status_mut() = StatusCode::from_u16(code)
            .map_err(|_| HandshakeError::MalformedHttp("invalid status"))?;
        *response.version_mut() = Version::HTTP_11;
        copy_headers(parsed.headers, response.headers_mut())?;
        Ok(Some((response, used)))
    }

    /// Checks a parsed response: §4.1, the client's checks on the server's handshake, items 1–6,
    /// and records the agreed extension and subprotocol.
    ///
    /// # Errors
    ///
    /// As [`handle_response`](Self::handle_response).
    pub fn validate_response(&mut self, response: &Response<()>) -> Result<(), HandshakeError> {
        let code = response.status().as_u16();
        if code != 101 {
            return Err(HandshakeError::UnexpectedStatus(code));
        }
        let headers = response.headers();
        check_upgrade_headers(headers)?;
        let mut accepts = headers.get_all(SEC_WEBSOCKET_ACCEPT).iter();
        match (accepts.next(), accepts.next()) {
            (Some(accept), None) if accept.as_bytes() == self.expected_accept.as_bytes() => {}
            _ => return Err(HandshakeError::BadAccept),
        }
        let (deflate, protocol) = check_selection(
            headers,
            self.deflate_offer.as_ref(),
            &self.offered_protocols,
        )?;
        self.deflate = deflate;
        self.protocol = protocol;
        Ok(())
    }
}

/// Checks the extension and subprotocol a server's answer selects against what the client
/// offered (§4.1, items 5 and 6); returns the agreed deflate parameters and subprotocol. Shared
/// by the HTTP/1.1 handshake and extended CONNECT over HTTP/2 (RFC 8441).
pub(super) fn check_selection(
    headers: &HeaderMap,
    deflate_offer: Option<&DeflateConfig>,
    offered_protocols: &[String],
) -> Result<(Option<DeflateParams>, Option<String>), HandshakeError> {
    let mut deflate = None;
    if headers.contains_key(SEC_WEBSOCKET_EXTENSIONS) {
        let Some(offer) = deflate_offer else {
            return Err(HandshakeError::UnexpectedExtension);
        };
        let values = headers
            .get_all(SEC_WEBSOCKET_EXTENSIONS)
            .iter()
            .map(HeaderValue::as_bytes);
        deflate = match offer.check_response(values) {
            Ok(params) => params,
            Err(ExtensionError::NotOffered) => return Err(HandshakeError::UnexpectedExtension),
            Err(e) => return Err(HandshakeError::InvalidExtension(e)),
        };
    }
    let mut protocols = headers.get_all(SEC_WEBSOCKET_PROTOCOL).iter();
    let protocol = match (protocols.next(), protocols.next()) {
        (None, _) => None,
        // §4.1: "If the response includes a |Sec-WebSocket-Protocol| header field and this
        // header field indicates the use of a subprotocol that was not present in the
        // client's handshake ... the client MUST _Fail the WebSocket Connection_."
        (Some(value), None) => {
            let value = value
                .to_str()
                .map_err(|_| HandshakeError::UnexpectedProtocol)?;
            if !offered_protocols.iter().any(|p| p == value) {
                return Err(HandshakeError::UnexpectedProtocol);
            }
            Some(value.to_owned())
        }
        (Some(_), Some(_)) => return Err(HandshakeError::UnexpectedProtocol),
    };
    Ok((deflate, protocol))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::handshake::{accept_response, accept_response_with, parse_request, write_response};

    #[test]
    fn deflate_is_offered_and_agreed() {
        let mut out = Vec::new();
        let request = ClientRequest::new("h", "/").deflate(DeflateConfig::default());
        let mut handshake =
            ClientHandshake::new(&request, [3; 16], HandshakeConfig::default(), &mut out);
        let (request, _) = parse_request(&out, &HandshakeConfig::default())
            .unwrap()
            .unwrap();
        let (response, params) =
            accept_response_with(&request, Some(&DeflateConfig::default()), None);
        assert!(params.is_some());
        let mut bytes = Vec::new();
        write_response(&response, b"", &mut bytes);
        handshake.handle_response(&bytes).unwrap().unwrap();
        assert_eq!(handshake.deflate(), params);
        // Without an offer the server answers without the extension.
        let (response, params) = accept_response_with(&request, None, None);
        assert!(params.is_none());
        assert!(!response.headers().contains_key(SEC_WEBSOCKET_EXTENSIONS));
    }

    #[test]
    fn subprotocols_are_offered_selected_and_checked() {
        assert_eq!(
            ClientRequest::new("h", "/").protocols(["a b"]).unwrap_err(),
            HandshakeError::InvalidProtocol
        );
        assert!(ClientRequest::new("h", "/").protocols(["x", "x"]).is_err());
        assert!(ClientRequest::new("h", "/").protocols([""]).is_err());
        let request = ClientRequest::new("h", "/")
            .protocols(["graphql-transport-ws", "mqtt"])
            .unwrap();
        let mut out = Vec::new();
        let mut handshake =
            ClientHandshake::new(&request, [5; 16], HandshakeConfig::default(), &mut out);
        let (parsed, _) = parse_request(&out, &HandshakeConfig::default())
            .unwrap()
            .unwrap();
        assert_eq!(
            crate::handshake::requested_protocols(&parsed),
            ["graphql-transport-ws", "mqtt"]
        );
        for (chosen, ok) in [(Some("mqtt"), true), (None, true), (Some("chat"), false)] {
            let (response, _) = accept_response_with(&parsed, None, chosen);
            let mut bytes = Vec::new();
            write_response(&response, b"", &mut bytes);
            let result = handshake.handle_response(&bytes);
            assert_eq!(result.is_ok(), ok, "{chosen:?}");
            if ok {
                assert_eq!(handshake.protocol(), chosen);
            }
        }
    }

    fn start() -> (ClientHandshake, Vec<u8>) {
        let mut out = Vec::new();
        let request = ClientRequest::new("example.com:8080", "/a?b=c")
            .origin(HeaderValue::from_static("http://example.com"))
            .header(
                HeaderName::from_static("authorization"),
                HeaderValue::from_static("Bearer t"),
            );
        let handshake =
            ClientHandshake::new(&request, [1; 16], HandshakeConfig::default(), &mut out);
        (handshake, out)
    }

    #[test]
    fn request_is_accepted_by_our_server_and_response_by_our_client() {
        let (mut handshake, request_bytes) = start();
        let (request, _) = parse_request(&request_bytes, &HandshakeConfig::default())
            .unwrap()
            .unwrap();
        assert_eq!(request.uri(), "/a?b=c");
        assert_eq!(request.headers()["host"], "example.com:8080");
        assert_eq!(request.headers()["origin"], "http://example.com");
        assert_eq!(request.headers()["authorization"], "Bearer t");
        let mut response_bytes = Vec::new();
        write_response(&accept_response(&request), b"", &mut response_bytes);
        let head_len = response_bytes.len();
        response_bytes.extend_from_slice(&[0x81, 0x00]);
        for len in 0..head_len {
            assert!(matches!(
                handshake.handle_response(&response_bytes[..len]),
                Ok(None)
            ));
        }
        let (response, used) = handshake.handle_response(&response_bytes).unwrap().unwrap();
        assert_eq!(response.status(), 101);
        assert_eq!(used, head_len);
    }

    #[test]
    fn rejects_bad_responses() {
        let (mut handshake, request_bytes) = start();
        let (request, _) = parse_request(&request_bytes, &HandshakeConfig::default())
            .unwrap()
            .unwrap();
        let mut good = Vec::new();
        write_response(&accept_response(&request), b"", &mut good);
        let good = String::from_utf8(good).unwrap();
        let mut check = |from: &str, to: &str, want: HandshakeError| {
            let bad = good.replacen(from, to, 1);
            assert_eq!(
                handshake.handle_response(bad.as_bytes()).unwrap_err(),
                want,
                "{from} -> {to}"
            );
        };
        check(
            "101 Switching Protocols",
            "403 Forbidden",
            HandshakeError::UnexpectedStatus(403),
        );
        check(
            "upgrade: websocket",
            "upgrade: h2c",
            HandshakeError::BadHeader("upgrade"),
        );
        check(
            "connection: Upgrade",
            "connection: close",
            HandshakeError::BadHeader("connection"),
        );
        check(
            "sec-websocket-accept: ",
            "sec-websocket-accept: x",
            HandshakeError::BadAccept,
        );
        check(
            "\r\n\r\n",
            "\r\nsec-websocket-extensions: permessage-deflate\r\n\r\n",
            HandshakeError::UnexpectedExtension,
        );
        check(
            "\r\n\r\n",
            "\r\nsec-websocket-protocol: chat\r\n\r\n",
            HandshakeError::UnexpectedProtocol,
        );
    }
}
