//! `ClientHandshake::handle_response` with a fixed nonce (RFC 6455 §1.3's "the sample nonce")
//! on arbitrary bytes, with and without a permessage-deflate offer (fuzz-chosen). Oracles: no
//! panic; an accepted response is 101, has exactly one `Sec-WebSocket-Accept` equal to
//! base64(sha1(key + GUID)) computed here, `Upgrade: websocket` and `Connection: upgrade`, no
//! subprotocol, a head within the limit decided by its own bytes; agreed deflate parameters are
//! in range and within what was offered; no extension means none agreed.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sockeye_fuzz::{expected_accept, has_token, prefix_lengths};
use sockeye_proto::deflate::DeflateConfig;
use sockeye_proto::handshake::{ClientHandshake, ClientRequest, HandshakeConfig, HandshakeError};

const NONCE: [u8; 16] = *b"the sample nonce";
const KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";

fn clamp(b: u8) -> u8 {
    b.clamp(8, 15)
}

fuzz_target!(|data: &[u8]| {
    let Some((&flags, head)) = data.split_first() else {
        return;
    };
    let offer = (flags & 1 != 0).then(|| {
        let mut c = DeflateConfig::default();
        c.server_no_context_takeover = flags & 2 != 0;
        c.client_no_context_takeover = flags & 4 != 0;
        c.server_max_window_bits = [None, Some(10), Some(15), Some(8)][usize::from(flags >> 3 & 3)];
        c.client_max_window_bits = [None, Some(12), Some(15), Some(0)][usize::from(flags >> 5 & 3)];
        c
    });
    let mut config = HandshakeConfig::default();
    if flags & 0x80 != 0 {
        config.max_head_size = 512;
        config.max_headers = 8;
    }
    let limit = config.max_head_size;
    let mut request = ClientRequest::new("server.example.com", "/chat");
    if let Some(c) = &offer {
        request = request.deflate(c.clone());
    }
    let mut sent = Vec::new();
    let start = |sent: &mut Vec<u8>| ClientHandshake::new(&request, NONCE, config.clone(), sent);
    let mut client = start(&mut sent);
    assert!(
        sent.windows(KEY.len()).any(|w| w == KEY.as_bytes()),
        "request does not carry the key"
    );
    let expected = expected_accept(KEY.as_bytes());

    match client.handle_response(head) {
        Ok(None) => assert!(
            head.len() < limit,
            "incomplete head of {} bytes past the {limit} limit",
            head.len()
        ),
        Err(HandshakeError::HeadTooLarge { .. }) => assert!(head.len() >= limit),
        Err(_) => {}
        Ok(Some((response, used))) => {
            assert_eq!(
                response.status(),
                101,
                "accepted status {}",
                response.status()
            );
            assert!(used <= head.len() && used <= limit, "used {used}");
            let h = response.headers();
            let accepts: Vec<_> = h.get_all("sec-websocket-accept").iter().collect();
            assert_eq!(accepts.len(), 1, "{} accept headers", accepts.len());
            assert_eq!(
                accepts[0].as_bytes(),
                expected.as_bytes(),
                "wrong accept value accepted"
            );
            assert!(h
                .get_all("upgrade")
                .iter()
                .any(|v| has_token(v.as_bytes(), "websocket")));
            assert!(h
                .get_all("connection")
                .iter()
                .any(|v| has_token(v.as_bytes(), "upgrade")));
            assert!(!h.contains_key("sec-websocket-protocol"));
            match (client.deflate(), &offer) {
                (None, _) => {
                    // Declined: no extension header, or one that is empty.
                    assert!(
                        h.get_all("sec-websocket-extensions")
                            .iter()
                            .all(|v| v.as_bytes().is_empty()),
                        "extension header but no agreement"
                    );
                }
                (Some(_), None) => panic!("deflate agreed without an offer"),
                (Some(p), Some(c)) => {
                    assert!(h.contains_key("sec-websocket-extensions"));
                    assert!((8..=15).contains(&p.server_max_window_bits), "{p:?}");
                    assert!((8..=15).contains(&p.client_max_window_bits), "{p:?}");
                    if let Some(asked) = c.server_max_window_bits {
                        assert!(p.server_max_window_bits <= clamp(asked), "{p:?} for {c:?}");
                    }
                    if let Some(offered) = c.client_max_window_bits {
                        assert!(
                            p.client_max_window_bits <= clamp(offered),
                            "{p:?} for {c:?}"
                        );
                    }
                    if c.server_no_context_takeover {
                        assert!(p.server_no_context_takeover, "{p:?} for {c:?}");
                    }
                    if c.client_no_context_takeover {
                        assert!(p.client_no_context_takeover, "{p:?} for {c:?}");
                    }
                }
            }
            for k in prefix_lengths(used) {
                let mut fresh = start(&mut Vec::new());
                assert!(
                    matches!(fresh.handle_response(&head[..k]), Ok(None)),
                    "prefix of {k} bytes of a {used}-byte head"
                );
            }
            let mut fresh = start(&mut Vec::new());
            let (_, used_again) = fresh.handle_response(&head[..used]).unwrap().unwrap();
            assert_eq!(used_again, used);
            assert_eq!(fresh.deflate(), client.deflate());
        }
    }
});
