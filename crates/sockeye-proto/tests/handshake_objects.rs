//! The opening handshake as two objects: [`ServerHandshake`] fed bytes (whole and one at a
//! time) and [`ClientHandshake`]'s outcome with the redirect rules, checked against each other.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use sockeye_proto::deflate::DeflateConfig;
use sockeye_proto::handshake::{
    Accept, ClientHandshake, ClientRequest, Endpoint, HandshakeConfig, HandshakeDecision,
    HandshakeError, Incoming, Negotiated, OriginPolicy, Outcome, RedirectError, Redirects,
    ServerHandshake, ServerPolicy, MAX_REFUSAL_BODY,
};
use sockeye_proto::http::{self, HeaderMap, HeaderValue, Request, Response};

const UPGRADE: &str = "GET /chat?room=1 HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n";

/// Feeds `bytes` whole and one byte at a time to handshakes with `policy`; checks that both
/// ways give the same answer and that nothing is answered before the head is complete.
fn feed(policy: &ServerPolicy, bytes: &[u8]) -> (Incoming, Vec<u8>) {
    let mut whole = ServerHandshake::new(policy.clone(), None);
    let first = whole
        .handle_bytes(bytes)
        .expect("a complete head is answered");
    let mut split = ServerHandshake::new(policy.clone(), None);
    let mut answer = None;
    for (i, byte) in bytes.iter().enumerate() {
        let got = split.handle_bytes(&[*byte]);
        if answer.is_some() {
            assert!(got.is_none(), "answered twice, at byte {i}");
        } else {
            answer = got;
        }
    }
    let answer = answer.expect("answered byte by byte");
    assert_eq!(
        bytes_of(&first),
        bytes_of(&answer),
        "whole and split differ"
    );
    assert_eq!(whole.leftover(), split.leftover());
    (first, whole.leftover().to_vec())
}

/// The `101` answer and the agreement of an upgrade `policy` accepts.
fn upgraded(policy: &ServerPolicy, bytes: &[u8]) -> (Vec<u8>, Negotiated) {
    match feed(policy, bytes).0 {
        Incoming::Upgrade {
            response,
            negotiated,
            ..
        } => (response, negotiated),
        other => panic!("not accepted: {other:?}"),
    }
}

fn bytes_of(incoming: &Incoming) -> Vec<u8> {
    match incoming {
        Incoming::Upgrade { response, .. } => response.clone(),
        Incoming::Http { bytes, .. }
        | Incoming::Refused { bytes, .. }
        | Incoming::Invalid { bytes, .. } => bytes.clone(),
    }
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8(bytes.to_vec()).expect("utf-8")
}

/// A policy whose `on_http` answers `/` with "hello" and declines anything else.
fn with_http() -> ServerPolicy {
    let mut policy = ServerPolicy::default();
    policy.on_http = Some(Arc::new(|request: &Request<()>| {
        (request.uri().path() == "/").then(|| Response::new(b"hello".to_vec()))
    }));
    policy
}

#[test]
fn upgrade_is_accepted_with_the_leftover_bytes() {
    let mut bytes = UPGRADE.as_bytes().to_vec();
    bytes.extend_from_slice(&[0x81, 0x80]);
    let (incoming, leftover) = feed(&ServerPolicy::default(), &bytes);
    let Incoming::Upgrade {
        request,
        response,
        negotiated,
    } = incoming
    else {
        panic!("not an upgrade: {incoming:?}");
    };
    assert_eq!(request.uri(), "/chat?room=1");
    let response = text(&response);
    assert!(
        response.starts_with("HTTP/1.1 101 Switching Protocols\r\n"),
        "{response}"
    );
    assert!(response.contains("sec-websocket-accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n"));
    assert_eq!(negotiated, Negotiated::default());
    assert_eq!(leftover, [0x81, 0x80]);
}

#[test]
fn plain_get_and_head_are_answered_by_the_policy() {
    let (incoming, _) = feed(&with_http(), b"GET / HTTP/1.1\r\nHost: h\r\n\r\n");
    let Incoming::Http { answer, bytes, .. } = incoming else {
        panic!("not plain http: {incoming:?}");
    };
    assert_eq!(answer.status(), 200);
    let sent = text(&bytes);
    assert!(sent.starts_with("HTTP/1.1 200 OK\r\n"), "{sent}");
    assert!(sent.contains("content-length: 5\r\n"), "{sent}");
    assert!(sent.contains("connection: close\r\n"), "{sent}");
    assert!(sent.ends_with("\r\n\r\nhello"), "{sent}");

    let (incoming, _) = feed(&with_http(), b"HEAD / HTTP/1.0\r\n\r\n");
    let Incoming::Http { answer, bytes, .. } = incoming else {
        panic!("not plain http: {incoming:?}");
    };
    assert_eq!(answer.body(), b"hello");
    let sent = text(&bytes);
    assert!(sent.contains("content-length: 5\r\n"), "{sent}");
    assert!(sent.ends_with("\r\n\r\n"), "HEAD has no body: {sent}");

    let (incoming, _) = feed(&with_http(), b"GET / HTTP/1.1\r\nContent-Length: 3\r\n\r\n");
    assert!(text(&bytes_of(&incoming)).starts_with("HTTP/1.1 413 "));
}

#[test]
fn plain_requests_not_answered_get_the_handshake_refusal() {
    for (policy, request) in [
        (ServerPolicy::default(), "GET / HTTP/1.1\r\nHost: h\r\n\r\n"),
        (with_http(), "GET /elsewhere HTTP/1.1\r\nHost: h\r\n\r\n"),
        (
            with_http(),
            "GET / HTTP/1.1\r\nHost: h\r\nUpgrade: h2c\r\n\r\n",
        ),
    ] {
        let (incoming, _) = feed(&policy, request.as_bytes());
        let Incoming::Invalid { error, bytes } = incoming else {
            panic!("{request:?} answered: {incoming:?}");
        };
        assert_eq!(error, HandshakeError::BadHeader("upgrade"), "{request:?}");
        assert!(text(&bytes).starts_with("HTTP/1.1 400 Bad Request\r\n"));
    }
    let (incoming, _) = feed(&with_http(), b"POST / HTTP/1.1\r\nHost: h\r\n\r\n");
    assert!(text(&bytes_of(&incoming)).starts_with("HTTP/1.1 405 "));
}

#[test]
fn bad_requests_are_refused_with_the_rfc_status() {
    let (incoming, _) = feed(
        &ServerPolicy::default(),
        b"GET / HTTP/1.1\r\nHo st: h\r\n\r\n",
    );
    assert!(matches!(
        incoming,
        Incoming::Invalid {
            error: HandshakeError::MalformedHttp(_),
            ..
        }
    ));
    assert!(text(&bytes_of(&incoming)).starts_with("HTTP/1.1 400 "));

    let old = UPGRADE.replace("Version: 13", "Version: 8");
    let (incoming, _) = feed(&ServerPolicy::default(), old.as_bytes());
    let sent = text(&bytes_of(&incoming));
    assert!(
        sent.starts_with("HTTP/1.1 426 Upgrade Required\r\n"),
        "{sent}"
    );
    assert!(sent.contains("sec-websocket-version: 13\r\n"), "{sent}");

    let missing = UPGRADE.replace("Sec-WebSocket-Version: 13\r\n", "");
    let (incoming, _) = feed(&ServerPolicy::default(), missing.as_bytes());
    let Incoming::Invalid { error, .. } = incoming else {
        panic!("accepted without a version: {incoming:?}");
    };
    assert_eq!(error, HandshakeError::BadHeader("sec-websocket-version"));

    let mut policy = ServerPolicy::default();
    policy.limits = HandshakeConfig::default();
    policy.limits.max_head_size = 64;
    let mut handshake = ServerHandshake::new(policy, None);
    let Some(Incoming::Invalid { error, bytes }) = handshake.handle_bytes(UPGRADE.as_bytes())
    else {
        panic!("a head over the limit is refused");
    };
    assert_eq!(error, HandshakeError::HeadTooLarge { limit: 64 });
    assert!(text(&bytes).starts_with("HTTP/1.1 431 "));
}

#[test]
fn origin_policy_refuses_with_403() {
    let mut policy = ServerPolicy::default();
    policy.origin = OriginPolicy::AllowList(vec!["https://good.example".into()]);
    let from =
        |origin: &str| UPGRADE.replace("Host: h\r\n", &format!("Host: h\r\nOrigin: {origin}\r\n"));
    let (incoming, _) = feed(&policy, from("https://evil.example").as_bytes());
    let Incoming::Refused { answer, bytes, .. } = incoming else {
        panic!("origin not refused: {incoming:?}");
    };
    assert_eq!(answer.status(), 403);
    assert_eq!(answer.body(), b"origin not allowed\n");
    let sent = text(&bytes);
    assert!(sent.starts_with("HTTP/1.1 403 Forbidden\r\n"), "{sent}");
    assert!(sent.ends_with("\r\n\r\norigin not allowed\n"), "{sent}");
    let (incoming, _) = feed(&policy, from("HTTPS://GOOD.example").as_bytes());
    assert!(matches!(incoming, Incoming::Upgrade { .. }), "{incoming:?}");
    // No Origin: a non-browser client, accepted by an allow-list.
    let (incoming, _) = feed(&policy, UPGRADE.as_bytes());
    assert!(matches!(incoming, Incoming::Upgrade { .. }), "{incoming:?}");
    // A header that is not ASCII matches nothing.
    let value = HeaderValue::from_bytes(b"https://good.example\xff").expect("opaque value");
    assert!(!policy.origin.allows(Some(&value)));
    assert!(OriginPolicy::Any.allows(Some(&value)));
}

#[test]
fn the_callback_picks_protocol_and_headers_or_refuses() {
    let calls = Arc::new(AtomicUsize::new(0));
    let seen = calls.clone();
    let mut policy = ServerPolicy::default();
    policy.protocols = vec!["mqtt".into(), "chat".into()];
    policy.deflate = Some(DeflateConfig::default());
    policy.on_handshake = Some(Arc::new(move |request| {
        seen.fetch_add(1, Ordering::SeqCst);
        assert_eq!(request.protocols, ["chat", "mqtt"]);
        assert_eq!(request.default_protocol.as_deref(), Some("chat"));
        if request.request.uri().path() == "/no" {
            return HandshakeDecision::reject(401, "who are you?");
        }
        HandshakeDecision::Accept(
            Accept::with_protocol(Some("mqtt".into()))
                .header(http::header::SET_COOKIE, HeaderValue::from_static("a=b")),
        )
    }));
    let offer = UPGRADE.replace(
        "Host: h\r\n",
        "Host: h\r\nSec-WebSocket-Protocol: chat, mqtt\r\nSec-WebSocket-Extensions: permessage-deflate\r\n",
    );
    let (response, negotiated) = upgraded(&policy, offer.as_bytes());
    assert_eq!(negotiated.protocol.as_deref(), Some("mqtt"));
    assert!(negotiated.deflate.is_some());
    let response = text(&response);
    assert!(
        response.contains("sec-websocket-protocol: mqtt\r\n"),
        "{response}"
    );
    assert!(response.contains("set-cookie: a=b\r\n"), "{response}");
    assert!(
        response.contains("sec-websocket-extensions: permessage-deflate"),
        "{response}"
    );

    let refused = offer.replace("GET /chat?room=1", "GET /no");
    let (incoming, _) = feed(&policy, refused.as_bytes());
    let Incoming::Refused { answer, bytes, .. } = incoming else {
        panic!("accepted: {incoming:?}");
    };
    assert_eq!(answer.status(), 401);
    assert!(text(&bytes).ends_with("\r\n\r\nwho are you?"));
    // Whole and split, twice each.
    assert_eq!(calls.load(Ordering::SeqCst), 4);
}

#[test]
fn a_protocol_the_client_did_not_offer_is_not_selected() {
    let mut policy = ServerPolicy::default();
    policy.on_handshake = Some(Arc::new(|_: &_| {
        HandshakeDecision::Accept(Accept::with_protocol(Some("other".into())))
    }));
    let (response, negotiated) = upgraded(&policy, UPGRADE.as_bytes());
    assert_eq!(negotiated.protocol, None);
    assert!(!text(&response).contains("sec-websocket-protocol"));
}

/// A client handshake and the head of `answer` to it.
fn client_sees(answer: &str) -> (ClientHandshake, Response<()>) {
    let mut out = Vec::new();
    let request = ClientRequest::new("h", "/");
    let handshake = ClientHandshake::new(&request, [7; 16], HandshakeConfig::default(), &mut out);
    let bytes = answer.as_bytes();
    for len in 0..bytes.len() {
        if let Some((_, used)) = handshake.parse_response(&bytes[..len]).expect("parses") {
            assert_eq!(used, len, "head complete before its end");
        }
    }
    let (response, _) = handshake
        .parse_response(bytes)
        .expect("parses")
        .expect("complete");
    (handshake, response)
}

#[test]
fn client_outcome_accepted_from_our_server() {
    let mut out = Vec::new();
    let request = ClientRequest::new("h", "/x")
        .deflate(DeflateConfig::default())
        .protocols(["chat"])
        .expect("valid names");
    let mut client = ClientHandshake::new(&request, [9; 16], HandshakeConfig::default(), &mut out);
    let mut policy = ServerPolicy::default();
    policy.protocols = vec!["chat".into()];
    policy.deflate = Some(DeflateConfig::default());
    let (response, server_side) = upgraded(&policy, &out);
    let (head, _) = client.parse_response(&response).unwrap().unwrap();
    let Outcome::Accepted(client_side) = client.outcome(&head, true).expect("valid") else {
        panic!("not accepted");
    };
    assert_eq!(client_side, server_side);
    assert_eq!(client_side.protocol.as_deref(), Some("chat"));
}

#[test]
fn client_outcome_redirect_and_refusal() {
    for status in [301, 302, 307, 308] {
        let answer = format!("HTTP/1.1 {status} Moved\r\nLocation: /next\r\n\r\n");
        let (mut client, head) = client_sees(&answer);
        assert_eq!(
            client.outcome(&head, true),
            Ok(Outcome::Redirect("/next".into()))
        );
        // Not following: a refusal like any other.
        assert_eq!(
            client.outcome(&head, false),
            Ok(Outcome::Refused {
                body_len: MAX_REFUSAL_BODY
            })
        );
    }
    // 303 and a redirect without Location are refusals.
    let (mut client, head) = client_sees("HTTP/1.1 303 See Other\r\nLocation: /x\r\n\r\n");
    assert!(matches!(
        client.outcome(&head, true),
        Ok(Outcome::Refused { .. })
    ));
    let (mut client, head) = client_sees("HTTP/1.1 302 Found\r\nContent-Length: 12\r\n\r\n");
    assert_eq!(
        client.outcome(&head, true),
        Ok(Outcome::Refused { body_len: 12 })
    );
    let big = format!("HTTP/1.1 401 No\r\nContent-Length: {}\r\n\r\n", 1 << 30);
    let (mut client, head) = client_sees(&big);
    assert_eq!(
        client.outcome(&head, true),
        Ok(Outcome::Refused {
            body_len: MAX_REFUSAL_BODY
        })
    );
    // A 101 is judged: a wrong accept fails.
    let (mut client, head) = client_sees(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: x\r\n\r\n",
    );
    assert_eq!(client.outcome(&head, true), Err(HandshakeError::BadAccept));
}

const FROM: Endpoint<'static> = Endpoint {
    secure: true,
    host: "example.com",
    port: 443,
    authority: "example.com",
};

#[test]
fn redirect_locations_resolve_against_the_current_url() {
    let mut redirects = Redirects::new(10);
    assert!(redirects.enabled());
    assert_eq!(
        redirects.follow(&FROM, "/a?b").as_deref(),
        Ok("wss://example.com/a?b")
    );
    assert_eq!(
        redirects.follow(&FROM, "//other:8443/c").as_deref(),
        Ok("wss://other:8443/c")
    );
    assert_eq!(
        redirects.follow(&FROM, "ws://plain/").as_deref(),
        Ok("ws://plain/")
    );
    assert_eq!(
        redirects.follow(&FROM, "../x"),
        Err(RedirectError::BadLocation)
    );
    assert_eq!(
        redirects.follow(&FROM, "x"),
        Err(RedirectError::BadLocation)
    );
    assert_eq!(redirects.followed(), 5);
}

#[test]
fn redirects_stop_at_the_limit() {
    let mut redirects = Redirects::new(2);
    assert!(redirects.follow(&FROM, "/1").is_ok());
    assert!(redirects.follow(&FROM, "/2").is_ok());
    assert_eq!(
        redirects.follow(&FROM, "/3"),
        Err(RedirectError::TooMany { limit: 2 })
    );
    let mut none = Redirects::new(0);
    assert!(!none.enabled());
    assert_eq!(
        none.follow(&FROM, "/1"),
        Err(RedirectError::TooMany { limit: 0 })
    );
}

#[test]
fn redirects_never_downgrade_and_drop_credentials_across_origins() {
    let credentials = || {
        let mut headers = HeaderMap::new();
        headers.insert(
            http::header::AUTHORIZATION,
            HeaderValue::from_static("Bearer t"),
        );
        headers.insert(http::header::COOKIE, HeaderValue::from_static("a=b"));
        headers.insert(http::header::USER_AGENT, HeaderValue::from_static("me"));
        headers
    };
    let plain = Endpoint {
        secure: false,
        port: 80,
        ..FROM
    };
    let mut headers = credentials();
    assert_eq!(
        Redirects::check(&FROM, &plain, &mut headers),
        Err(RedirectError::Downgrade)
    );
    // ws to wss is an upgrade, but another origin.
    let mut headers = credentials();
    assert_eq!(Redirects::check(&plain, &FROM, &mut headers), Ok(()));
    assert_eq!(headers.len(), 1);
    assert!(headers.contains_key(http::header::USER_AGENT));
    // Same origin, host in another case: everything kept.
    let same = Endpoint {
        host: "EXAMPLE.com",
        ..FROM
    };
    let mut headers = credentials();
    assert_eq!(Redirects::check(&FROM, &same, &mut headers), Ok(()));
    assert_eq!(headers.len(), 3);
    // Another port is another origin.
    let port = Endpoint { port: 8443, ..FROM };
    let mut headers = credentials();
    assert_eq!(Redirects::check(&FROM, &port, &mut headers), Ok(()));
    assert_eq!(headers.len(), 1);
}
