//! The opening handshake over HTTP/2: extended CONNECT
//! ([RFC 8441](https://www.rfc-editor.org/rfc/rfc8441)).
//!
//! A client opens a stream with `:method CONNECT`, `:protocol websocket`, `:scheme`, `:path` and
//! `:authority`, plus `Sec-WebSocket-Version: 13` and the usual `Sec-WebSocket-Protocol`,
//! `Sec-WebSocket-Extensions` and `Origin`; the server answers `200`. There is no
//! `Sec-WebSocket-Key`/`Sec-WebSocket-Accept` (§5: "are not used"), and no `Upgrade` or
//! `Connection` header (HTTP/2 forbids connection-specific headers). After the answer the
//! stream's DATA frames carry the WebSocket frames, exactly as a TCP connection would.
//!
//! The `:protocol` pseudo-header is not part of [`http::Request`]: HTTP/2 libraries carry it
//! in an extension (hyper's `hyper::ext::Protocol`), so [`validate_connect_request`] takes it
//! as a separate argument and [`ConnectHandshake::new`] leaves it to the caller.

use http::header::{
    HeaderValue, ALLOW, CONNECTION, HOST, SEC_WEBSOCKET_EXTENSIONS, SEC_WEBSOCKET_KEY,
    SEC_WEBSOCKET_PROTOCOL, SEC_WEBSOCKET_VERSION, UPGRADE,
};
use http::{Method, Request, Response, StatusCode, Uri, Version};

use super::client::check_selection;
use super::server::{add_selection, ServerPolicy};
use super::{reject_response, Accept, ClientRequest, HandshakeError, Negotiated};
use crate::deflate::{DeflateConfig, DeflateParams};

/// The `:protocol` value that asks for a WebSocket (RFC 8441 §4, the "websocket" entry of the
/// HTTP Upgrade Token registry).
pub const WEBSOCKET_PROTOCOL: &str = "websocket";

/// Checks an extended CONNECT request received over HTTP/2 whose `:protocol` pseudo-header is
/// `protocol` (`None` when absent): RFC 8441 §4 and §5.
///
/// Requires method CONNECT, version HTTP/2, `:protocol` `websocket`, a request target with
/// scheme and authority (`:scheme`, `:authority`; RFC 8441 §4: "the :scheme and :path
/// pseudo-header fields MUST be included") with an absolute path, no `Host` header naming
/// another authority (RFC 9113 §8.3.1), and exactly one `Sec-WebSocket-Version: 13`. A
/// `Sec-WebSocket-Key` is ignored (§5: not used).
///
/// # Errors
///
/// A [`HandshakeError`] whose [`status`](HandshakeError::status) is the answer to send: 405 for
/// another method, 505 for another HTTP version, 426 for a `Sec-WebSocket-Version` other than
/// 13, 400 for a missing or other `:protocol`, scheme, authority or path
/// (`BadHeader(":protocol")`, `BadHeader(":scheme")`, `BadHeader(":authority")`,
/// `BadHeader(":path")`), a conflicting `Host` (`BadHeader("host")`) or a bad version header.
pub fn validate_connect_request<B>(
    request: &Request<B>,
    protocol: Option<&str>,
) -> Result<(), HandshakeError> {
    if request.method() != Method::CONNECT {
        return Err(HandshakeError::MethodNotAllowed);
    }
    if request.version() != Version::HTTP_2 {
        return Err(HandshakeError::UnsupportedHttpVersion);
    }
    if protocol != Some(WEBSOCKET_PROTOCOL) {
        return Err(HandshakeError::BadHeader(":protocol"));
    }
    let uri = request.uri();
    if uri.scheme().is_none() {
        return Err(HandshakeError::BadHeader(":scheme"));
    }
    let Some(authority) = uri.authority() else {
        return Err(HandshakeError::BadHeader(":authority"));
    };
    // RFC 9113 §8.3.1: `:path` is an absolute path for http(s) targets (`http::Uri` cannot
    // tell an absent one from `/`; HTTP/2 libraries refuse an extended CONNECT without one).
    if !uri.path().starts_with('/') {
        return Err(HandshakeError::BadHeader(":path"));
    }
    // RFC 9113 §8.3.1: a `Host` that names another entity than `:authority` is malformed.
    let mut hosts = request.headers().get_all(HOST).iter();
    match (hosts.next(), hosts.next()) {
        (None, _) => {}
        (Some(host), None)
            if host
                .as_bytes()
                .eq_ignore_ascii_case(authority.as_str().as_bytes()) => {}
        _ => return Err(HandshakeError::BadHeader("host")),
    }
    let mut versions = request.headers().get_all(SEC_WEBSOCKET_VERSION).iter();
    match (versions.next(), versions.next()) {
        (Some(v), None) if v.as_bytes().trim_ascii() == b"13" => Ok(()),
        (Some(_), None) => Err(HandshakeError::UnsupportedVersion),
        _ => Err(HandshakeError::BadHeader("sec-websocket-version")),
    }
}

/// The `200` answer accepting a request that passed [`validate_connect_request`], accepting the
/// first acceptable permessage-deflate offer when `deflate` is given and naming `protocol` as
/// the subprotocol (it should be one the request offered). Returns the response and the agreed
/// deflate parameters, exactly as [`accept_response_with`](super::accept_response_with) does
/// for HTTP/1.1.
pub fn accept_connect_response(
    request: &Request<()>,
    deflate: Option<&DeflateConfig>,
    protocol: Option<&str>,
) -> (Response<()>, Option<DeflateParams>) {
    let mut response = Response::new(());
    *response.status_mut() = StatusCode::OK;
    *response.version_mut() = Version::HTTP_2;
    let params = add_selection(request, &mut response, deflate, protocol);
    (response, params)
}

/// The HTTP/2 answer to a failed extended CONNECT, with a short plain-text body: the statuses of
/// [`reject_response`] without the connection-specific headers HTTP/2 forbids (`Connection`,
/// `Upgrade`), and `Allow: CONNECT` for a wrong method.
pub fn reject_connect_response(err: &HandshakeError) -> (Response<()>, Vec<u8>) {
    let (mut response, body) = reject_response(err);
    *response.version_mut() = Version::HTTP_2;
    let headers = response.headers_mut();
    headers.remove(CONNECTION);
    headers.remove(UPGRADE);
    if headers.contains_key(ALLOW) {
        headers.insert(ALLOW, HeaderValue::from_static("CONNECT"));
    }
    (response, body)
}

impl ServerPolicy {
    /// The `200` answer accepting an extended CONNECT `request` over HTTP/2 (RFC 8441) with
    /// `accept`, and what it agreed, by the rules of [`accept_response`](Self::accept_response).
    pub fn accept_connect(
        &self,
        request: &Request<()>,
        accept: Accept,
    ) -> (Response<()>, Negotiated) {
        self.agree(request, accept, accept_connect_response)
    }
}

/// A client's extended CONNECT handshake: builds the request and checks the answer.
#[derive(Debug, Clone)]
pub struct ConnectHandshake {
    deflate_offer: Option<DeflateConfig>,
    offered_protocols: Vec<String>,
}

impl ConnectHandshake {
    /// Builds the extended CONNECT request for `request` over a connection with `scheme`
    /// (`https` for `wss://`, `http` for `ws://`): method CONNECT, version HTTP/2, target
    /// `scheme://host/resource`, `Sec-WebSocket-Version: 13`, the offered subprotocols and
    /// extensions and the extra headers (except `Host`, which becomes `:authority`, the
    /// connection-specific `Connection`/`Upgrade` and the handshake's own headers). The caller
    /// adds the `:protocol` pseudo-header ([`WEBSOCKET_PROTOCOL`]) as its HTTP/2 library
    /// expects.
    ///
    /// # Errors
    ///
    /// [`HandshakeError::MalformedHttp`] when host and resource do not form a valid URI.
    pub fn new(
        request: &ClientRequest,
        scheme: &str,
    ) -> Result<(Self, Request<()>), HandshakeError> {
        let target = format!("{scheme}://{}{}", request.host, request.resource);
        let uri = target
            .parse::<Uri>()
            .map_err(|_| HandshakeError::MalformedHttp("invalid request target"))?;
        let mut out = Request::new(());
        *out.method_mut() = Method::CONNECT;
        *out.version_mut() = Version::HTTP_2;
        *out.uri_mut() = uri;
        let headers = out.headers_mut();
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
            if !own.contains(name) {
                headers.append(name.clone(), value.clone());
            }
        }
        headers.insert(SEC_WEBSOCKET_VERSION, HeaderValue::from_static("13"));
        if !request.protocols.is_empty() {
            let list = HeaderValue::from_str(&request.protocols.join(", "))
                .map_err(|_| HandshakeError::InvalidProtocol)?;
            headers.insert(SEC_WEBSOCKET_PROTOCOL, list);
        }
        if let Some(deflate) = &request.deflate {
            let offer = HeaderValue::from_str(&deflate.offer())
                .map_err(|_| HandshakeError::MalformedHttp("invalid extension offer"))?;
            headers.insert(SEC_WEBSOCKET_EXTENSIONS, offer);
        }
        let handshake = Self {
            deflate_offer: request.deflate.clone(),
            offered_protocols: request.protocols.clone(),
        };
        Ok((handshake, out))
    }

    /// Checks the server's answer: a 2xx status (RFC 8441 §5: "a 2xx status code indicates
    /// success"), and an extension and subprotocol that were offered. Returns the agreed
    /// deflate parameters and subprotocol.
    ///
    /// # Errors
    ///
    /// [`HandshakeError::UnexpectedStatus`] for any other status; `UnexpectedExtension`,
    /// `InvalidExtension`, `UnexpectedProtocol` as over HTTP/1.1.
    pub fn validate_response(
        &self,
        response: &Response<()>,
    ) -> Result<(Option<DeflateParams>, Option<String>), HandshakeError> {
        if !response.status().is_success() {
            return Err(HandshakeError::UnexpectedStatus(response.status().as_u16()));
        }
        check_selection(
            response.headers(),
            self.deflate_offer.as_ref(),
            &self.offered_protocols,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn connect(extra: &[(&str, &str)]) -> Request<()> {
        let mut builder = Request::builder()
            .method(Method::CONNECT)
            .version(Version::HTTP_2)
            .uri("https://example.com/chat?room=1")
            .header("sec-websocket-version", "13");
        for (name, value) in extra {
            builder = builder.header(*name, *value);
        }
        builder.body(()).unwrap()
    }

    #[test]
    fn a_valid_extended_connect_passes() {
        let request = connect(&[("origin", "https://example.com")]);
        assert_eq!(
            validate_connect_request(&request, Some("websocket")),
            Ok(())
        );
        // §5: a key is not used, so its presence is harmless.
        let keyed = connect(&[("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ==")]);
        assert_eq!(validate_connect_request(&keyed, Some("websocket")), Ok(()));
    }

    #[test]
    fn each_requirement_is_checked_with_its_status() {
        let request = connect(&[]);
        let err = validate_connect_request(&request, None).unwrap_err();
        assert_eq!(err, HandshakeError::BadHeader(":protocol"));
        assert_eq!(err.status(), 400);
        let err = validate_connect_request(&request, Some("websockets")).unwrap_err();
        assert_eq!(err, HandshakeError::BadHeader(":protocol"));

        let mut get = connect(&[]);
        *get.method_mut() = Method::GET;
        let err = validate_connect_request(&get, Some("websocket")).unwrap_err();
        assert_eq!(err.status(), 405);

        let mut h1 = connect(&[]);
        *h1.version_mut() = Version::HTTP_11;
        let err = validate_connect_request(&h1, Some("websocket")).unwrap_err();
        assert_eq!(err.status(), 505);

        let mut pathless = connect(&[]);
        *pathless.uri_mut() = "/chat".parse().unwrap();
        let err = validate_connect_request(&pathless, Some("websocket")).unwrap_err();
        assert_eq!(err, HandshakeError::BadHeader(":scheme"));

        let mut starred = connect(&[]);
        *starred.uri_mut() = Uri::from_parts({
            let mut parts = http::uri::Parts::default();
            parts.scheme = Some(http::uri::Scheme::HTTPS);
            parts.authority = Some("example.com".parse().unwrap());
            parts.path_and_query = Some("*".parse().unwrap());
            parts
        })
        .unwrap();
        let err = validate_connect_request(&starred, Some("websocket")).unwrap_err();
        assert_eq!(err, HandshakeError::BadHeader(":path"));

        // A Host naming the :authority (any case) is harmless; another one, or two, are not.
        let same = connect(&[("host", "Example.COM")]);
        assert_eq!(validate_connect_request(&same, Some("websocket")), Ok(()));
        let other = connect(&[("host", "evil.example")]);
        let err = validate_connect_request(&other, Some("websocket")).unwrap_err();
        assert_eq!(err, HandshakeError::BadHeader("host"));
        assert_eq!(err.status(), 400);
        let two = connect(&[("host", "example.com"), ("host", "example.com")]);
        let err = validate_connect_request(&two, Some("websocket")).unwrap_err();
        assert_eq!(err, HandshakeError::BadHeader("host"));

        let mut old = connect(&[]);
        old.headers_mut()
            .insert(SEC_WEBSOCKET_VERSION, HeaderValue::from_static("8"));
        let err = validate_connect_request(&old, Some("websocket")).unwrap_err();
        assert_eq!(err.status(), 426);

        let mut twice = connect(&[]);
        twice
            .headers_mut()
            .append(SEC_WEBSOCKET_VERSION, HeaderValue::from_static("13"));
        let err = validate_connect_request(&twice, Some("websocket")).unwrap_err();
        assert_eq!(err, HandshakeError::BadHeader("sec-websocket-version"));

        let mut none = connect(&[]);
        none.headers_mut().remove(SEC_WEBSOCKET_VERSION);
        let err = validate_connect_request(&none, Some("websocket")).unwrap_err();
        assert_eq!(err, HandshakeError::BadHeader("sec-websocket-version"));
    }

    #[test]
    fn rejections_have_no_connection_specific_headers() {
        let (response, body) = reject_connect_response(&HandshakeError::UnsupportedVersion);
        assert_eq!(response.status(), 426);
        assert_eq!(response.headers()[SEC_WEBSOCKET_VERSION], "13");
        assert!(!response.headers().contains_key(CONNECTION));
        assert!(!response.headers().contains_key(UPGRADE));
        assert!(!body.is_empty());
        let (response, _) = reject_connect_response(&HandshakeError::MethodNotAllowed);
        assert_eq!(response.headers()[ALLOW], "CONNECT");
    }

    #[test]
    fn client_request_and_server_answer_agree() {
        let client = ClientRequest::new("example.com:8443", "/chat?room=1")
            .protocols(["v2.chat", "v1.chat"])
            .unwrap()
            .deflate(DeflateConfig::default())
            .header(
                http::header::AUTHORIZATION,
                HeaderValue::from_static("Bearer t"),
            )
            .header(HOST, HeaderValue::from_static("ignored"));
        let (handshake, request) = ConnectHandshake::new(&client, "https").unwrap();
        assert_eq!(request.method(), Method::CONNECT);
        assert_eq!(request.version(), Version::HTTP_2);
        assert_eq!(request.uri(), "https://example.com:8443/chat?room=1");
        assert!(!request.headers().contains_key(HOST));
        assert!(!request.headers().contains_key(SEC_WEBSOCKET_KEY));
        assert_eq!(request.headers()["authorization"], "Bearer t");
        validate_connect_request(&request, Some(WEBSOCKET_PROTOCOL)).unwrap();

        let offered = super::super::requested_protocols(&request);
        assert_eq!(offered, ["v2.chat", "v1.chat"]);
        let (response, server_params) =
            accept_connect_response(&request, Some(&DeflateConfig::default()), Some("v1.chat"));
        assert_eq!(response.status(), 200);
        assert!(server_params.is_some());
        let (client_params, protocol) = handshake.validate_response(&response).unwrap();
        assert_eq!(client_params, server_params);
        assert_eq!(protocol.as_deref(), Some("v1.chat"));
    }

    #[test]
    fn client_rejects_bad_answers() {
        let client = ClientRequest::new("h", "/").protocols(["a"]).unwrap();
        let (handshake, _) = ConnectHandshake::new(&client, "http").unwrap();
        let mut refused = Response::new(());
        *refused.status_mut() = StatusCode::FORBIDDEN;
        assert_eq!(
            handshake.validate_response(&refused),
            Err(HandshakeError::UnexpectedStatus(403))
        );
        let mut other = Response::new(());
        other
            .headers_mut()
            .insert(SEC_WEBSOCKET_PROTOCOL, HeaderValue::from_static("b"));
        assert_eq!(
            handshake.validate_response(&other),
            Err(HandshakeError::UnexpectedProtocol)
        );
        let mut deflated = Response::new(());
        deflated.headers_mut().insert(
            SEC_WEBSOCKET_EXTENSIONS,
            HeaderValue::from_static("permessage-deflate"),
        );
        assert_eq!(
            handshake.validate_response(&deflated),
            Err(HandshakeError::UnexpectedExtension)
        );
        assert_eq!(
            handshake.validate_response(&Response::new(())),
            Ok((None, None))
        );
    }

    #[test]
    fn a_bad_target_is_an_error_not_a_panic() {
        let client = ClientRequest::new("bad host", "/");
        assert!(matches!(
            ConnectHandshake::new(&client, "https"),
            Err(HandshakeError::MalformedHttp(_))
        ));
    }
}
