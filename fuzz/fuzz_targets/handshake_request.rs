//! `parse_request` on arbitrary bytes with fuzz-chosen limits. Oracles: an accepted head is
//! within `max_head_size` and the header-count limit, is GET with exactly one valid key and
//! version 13, is decided by its own bytes (every shorter prefix asks for more); its 101 answer
//! carries `Sec-WebSocket-Accept` = base64(sha1(key + GUID)) computed here, and our own client,
//! built with the same key, accepts that answer (with permessage-deflate when agreed). A head
//! still incomplete is below the size limit; `HeadTooLarge` only at or past it.
#![no_main]

use base64::Engine as _;
use libfuzzer_sys::fuzz_target;
use sockeye_fuzz::{expected_accept, has_token, prefix_lengths};
use sockeye_proto::deflate::DeflateConfig;
use sockeye_proto::handshake::{
    accept_response_with, parse_request, write_response, ClientHandshake, ClientRequest,
    HandshakeConfig, HandshakeError,
};

fuzz_target!(|data: &[u8]| {
    let Some((&flags, head)) = data.split_first() else {
        return;
    };
    let mut config = HandshakeConfig::default();
    config.max_head_size = [16 << 10, 256, 128, 1024][usize::from(flags & 3)];
    config.max_headers = [128, 4, 8, 32][usize::from(flags >> 2 & 3)];
    let limit = config.max_head_size;

    match parse_request(head, &config) {
        Ok(None) => assert!(
            head.len() < limit,
            "incomplete head of {} bytes past the {limit} limit",
            head.len()
        ),
        Err(HandshakeError::HeadTooLarge { limit: l }) => {
            assert_eq!(l, limit);
            assert!(
                head.len() >= limit,
                "HeadTooLarge for {} bytes under {limit}",
                head.len()
            );
        }
        Err(_) => {}
        Ok(Some((request, used))) => {
            assert!(used <= head.len(), "used {used} of {}", head.len());
            assert!(
                used <= limit,
                "accepted a head of {used} bytes over the {limit} limit"
            );
            // httparse takes LF or CRLF line ends, mixed: the head ends with LF, then LF or CRLF.
            assert!(
                head[..used].ends_with(b"\n\n") || head[..used].ends_with(b"\n\r\n"),
                "head does not end with a blank line"
            );
            assert!(
                request.headers().len() <= config.max_headers,
                "{} headers over the {} limit",
                request.headers().len(),
                config.max_headers
            );
            assert_eq!(request.method(), "GET");
            let keys: Vec<_> = request
                .headers()
                .get_all("sec-websocket-key")
                .iter()
                .collect();
            assert_eq!(keys.len(), 1, "accepted with {} keys", keys.len());
            let key = keys[0].as_bytes();
            let nonce = base64::engine::general_purpose::STANDARD
                .decode(key)
                .expect("accepted key is base64");
            assert_eq!(nonce.len(), 16, "accepted key of {} bytes", nonce.len());
            let versions: Vec<_> = request
                .headers()
                .get_all("sec-websocket-version")
                .iter()
                .collect();
            assert_eq!(versions.len(), 1);
            assert_eq!(versions[0].as_bytes().trim_ascii(), b"13");
            assert!(request
                .headers()
                .get_all("upgrade")
                .iter()
                .any(|v| has_token(v.as_bytes(), "websocket")));
            assert!(request
                .headers()
                .get_all("connection")
                .iter()
                .any(|v| has_token(v.as_bytes(), "upgrade")));

            // The head's own bytes decide it.
            for k in prefix_lengths(used) {
                assert!(
                    matches!(parse_request(&head[..k], &config), Ok(None)),
                    "prefix of {k} bytes of a {used}-byte head"
                );
            }
            let (again, used_again) = parse_request(&head[..used], &config).unwrap().unwrap();
            assert_eq!(used_again, used);
            assert_eq!(again.uri(), request.uri());
            assert_eq!(again.headers(), request.headers());

            // The answer.
            let server_deflate = DeflateConfig::default();
            let (response, params) = accept_response_with(&request, Some(&server_deflate), None);
            assert_eq!(response.status(), 101);
            let accepts: Vec<_> = response
                .headers()
                .get_all("sec-websocket-accept")
                .iter()
                .collect();
            assert_eq!(accepts.len(), 1);
            assert_eq!(
                accepts[0].as_bytes(),
                expected_accept(key).as_bytes(),
                "wrong Sec-WebSocket-Accept"
            );
            assert!(has_token(
                response.headers()["upgrade"].as_bytes(),
                "websocket"
            ));
            assert!(has_token(
                response.headers()["connection"].as_bytes(),
                "upgrade"
            ));
            match &params {
                Some(p) => {
                    assert_eq!(
                        response.headers()["sec-websocket-extensions"].as_bytes(),
                        p.to_string().as_bytes()
                    );
                    assert!(
                        (8..=15).contains(&p.server_max_window_bits)
                            && (8..=15).contains(&p.client_max_window_bits),
                        "{p:?}"
                    );
                }
                None => assert!(!response.headers().contains_key("sec-websocket-extensions")),
            }

            // Our own client, with this key and a default deflate offer, accepts the answer.
            let nonce: [u8; 16] = nonce.try_into().unwrap();
            let client_request =
                ClientRequest::new("fuzz.example", "/").deflate(DeflateConfig::default());
            let mut ignored = Vec::new();
            let mut client = ClientHandshake::new(
                &client_request,
                nonce,
                HandshakeConfig::default(),
                &mut ignored,
            );
            let mut bytes = Vec::new();
            write_response(&response, b"", &mut bytes);
            match client.handle_response(&bytes) {
                Ok(Some((answer, n))) => {
                    assert_eq!(n, bytes.len());
                    assert_eq!(answer.status(), 101);
                    assert_eq!(
                        client.deflate(),
                        params,
                        "client and server disagree on deflate"
                    );
                }
                other => panic!(
                    "our client rejects our answer: {other:?}\n{}",
                    String::from_utf8_lossy(&bytes)
                ),
            }
        }
    }
});
