//! `Sec-WebSocket-Extensions` negotiation (RFC 7692) on arbitrary header bytes: values are the
//! input split at '\n', server and client configurations come from the first two bytes (window
//! bits include out-of-range values, which the configs clamp). Oracles: no panic;
//! - an offer the server accepts yields parameters in range that grant what the server imposes,
//!   and its response string (`DeflateParams` Display) is accepted by a default client back into
//!   the very same parameters;
//! - a response the client accepts yields parameters in range and within its offer, and
//!   re-serialising them is accepted into the same parameters (idempotent);
//! - the client's own `offer()` is accepted by the server, and the server's response to it is
//!   accepted by that client with the same parameters on both sides.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sockeye_fuzz::Input;
use sockeye_proto::deflate::{DeflateConfig, DeflateParams};

const BITS: [Option<u8>; 8] = [
    None,
    Some(8),
    Some(9),
    Some(12),
    Some(15),
    Some(0),
    Some(16),
    Some(255),
];

fn config(b: u8) -> DeflateConfig {
    let mut c = DeflateConfig::default();
    c.server_no_context_takeover = b & 1 != 0;
    c.client_no_context_takeover = b & 2 != 0;
    c.server_max_window_bits = BITS[usize::from(b >> 2 & 7)];
    c.client_max_window_bits = BITS[usize::from(b >> 5 & 7)];
    c
}

fn clamp(b: u8) -> u8 {
    b.clamp(8, 15)
}

fn in_range(p: &DeflateParams) {
    assert!((8..=15).contains(&p.server_max_window_bits), "{p:?}");
    assert!((8..=15).contains(&p.client_max_window_bits), "{p:?}");
}

/// The server's side of an agreement holds what the server imposes on itself and the client.
fn server_grants(server: &DeflateConfig, p: &DeflateParams) {
    in_range(p);
    if let Some(cap) = server.server_max_window_bits {
        assert!(
            p.server_max_window_bits <= clamp(cap),
            "{p:?} over server cap {cap}"
        );
    }
    if server.server_no_context_takeover {
        assert!(p.server_no_context_takeover, "{p:?}");
    }
    if server.client_no_context_takeover {
        assert!(p.client_no_context_takeover, "{p:?}");
    }
}

/// The client's side of an agreement is within what it offered.
fn client_gets(client: &DeflateConfig, p: &DeflateParams) {
    in_range(p);
    if let Some(asked) = client.server_max_window_bits {
        assert!(
            p.server_max_window_bits <= clamp(asked),
            "{p:?} for {client:?}"
        );
    }
    if let Some(offered) = client.client_max_window_bits {
        assert!(
            p.client_max_window_bits <= clamp(offered),
            "{p:?} for {client:?}"
        );
    }
    if client.server_no_context_takeover {
        assert!(p.server_no_context_takeover, "{p:?}");
    }
    if client.client_no_context_takeover {
        assert!(p.client_no_context_takeover, "{p:?}");
    }
}

fuzz_target!(|data: &[u8]| {
    let mut input = Input::new(data);
    let server = config(input.byte());
    let client = config(input.byte());
    let header = input.rest();
    let values: Vec<&[u8]> = header.split(|&b| b == b'\n').collect();

    // The server side on arbitrary offers.
    if let Some(p) = server.accept_offer(values.iter().copied()) {
        server_grants(&server, &p);
        let response = p.to_string();
        assert_eq!(
            DeflateConfig::default().check_response([response.as_bytes()]),
            Ok(Some(p)),
            "a default client rejects or misreads {response:?}"
        );
    }

    // The client side on arbitrary responses.
    match client.check_response(values.iter().copied()) {
        Ok(Some(p)) => {
            client_gets(&client, &p);
            let again = p.to_string();
            assert_eq!(
                client.check_response([again.as_bytes()]),
                Ok(Some(p)),
                "re-serialised {again:?}"
            );
        }
        Ok(None) => assert!(
            values.iter().all(|v| v.is_empty()),
            "declined a non-empty response"
        ),
        Err(_) => {}
    }

    // The client's own offer, answered by the server, read back by the client.
    let offer = client.offer();
    let p = server
        .accept_offer([offer.as_bytes()])
        .unwrap_or_else(|| panic!("server declines our own offer {offer:?}"));
    server_grants(&server, &p);
    let response = p.to_string();
    match client.check_response([response.as_bytes()]) {
        Ok(Some(agreed)) => {
            client_gets(&client, &agreed);
            assert_eq!(
                agreed, p,
                "{offer:?} -> {response:?}: client and server disagree"
            );
        }
        other => panic!("{offer:?} -> {response:?}: client says {other:?}"),
    }
});
