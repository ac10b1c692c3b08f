//! permessage-deflate round trip through the public API (STYLE.md §10 `deflate`): one
//! `Connection` compresses fuzz-chosen messages (whole or in fragments, with fuzz-chosen window
//! bits, context takeover, level and threshold), its peer inflates them from fuzz-chosen chunks.
//! Oracles: the peer delivers exactly the messages sent, in order, until one exceeds its
//! `max_message_size`; that one fails the connection with 1009 and nothing over the limit is
//! delivered; the sender's output is valid for its role and inflates with flate2 too.
//!
//! Layout: role/limit flags, deflate flags, chunking seed, then messages: a header byte (bits
//! 0–5 length, bit 6 fragmented, bit 7 repeat the content 1100 times: up to 69 kB,
//! past the inflater's 32 KiB step and the 64 KiB limit) and the content.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sockeye_fuzz::{check_wire, deflate_setup, hex, make_connection, Input, Observer};
use sockeye_proto::{DataKind, Message, ProtocolError, Role, State};

fuzz_target!(|data: &[u8]| {
    let mut input = Input::new(data);
    let flags = input.byte();
    let (params, config) = deflate_setup(input.byte());
    let mut seed = u32::from(input.byte()) | 0x100;

    let sender_role = if flags & 0x80 != 0 {
        Role::Server
    } else {
        Role::Client
    };
    let receiver_role = match sender_role {
        Role::Server => Role::Client,
        Role::Client => Role::Server,
    };
    // The sender has no small limits (it only sends); the receiver gets the fuzzed ones, but
    // never a frame limit (a compressed frame may be larger than its message).
    let (mut sender, _) =
        make_connection(sender_role, 0x10 & flags, Some((params, config.clone())));
    let (mut receiver, max_message) =
        make_connection(receiver_role, flags & 0x03 | 0x0C, Some((params, config)));

    let mut sent = Vec::new();
    let mut wire = Vec::new();
    // Repetition is how small inputs make large (compressible) messages; cap it per run.
    let mut budget: usize = 1 << 20;
    while !input.is_empty() {
        let h = input.byte();
        let mut content = input.take(usize::from(h & 0x3F)).to_vec();
        if h & 0x80 != 0 && content.len() * 1100 <= budget {
            content = content.repeat(1100);
            budget -= content.len();
        }
        let kind = if std::str::from_utf8(&content).is_ok() {
            DataKind::Text
        } else {
            DataKind::Binary
        };
        if h & 0x40 != 0 {
            let cut1 = content.len() / 3;
            let cut2 = content.len() * 2 / 3;
            for (part, fin) in [
                (&content[..cut1], false),
                (&content[cut1..cut2], false),
                (&content[cut2..], true),
            ] {
                sender
                    .send_fragment(kind, part, fin)
                    .expect("send_fragment on an open connection");
            }
        } else {
            sender
                .send(kind, &content)
                .expect("send on an open connection");
        }
        sent.push((kind, content));
        let mut buf = Vec::new();
        while sender.poll_transmit(&mut buf) != sockeye_proto::Transmit::Idle {}
        wire.extend_from_slice(&buf);
    }
    // The sender's output is valid for its role and inflates (flate2) to what was sent.
    let summary = match check_wire(&wire, sender_role, true) {
        Ok(s) => s,
        Err(e) => panic!("sender output invalid: {e}\n{}", hex(&wire)),
    };
    assert_eq!(summary.messages.len(), sent.len());
    for (got, (kind, want)) in summary.messages.iter().zip(&sent) {
        assert_eq!(got.text, *kind == DataKind::Text);
        assert!(
            got.payload == *want,
            "flate2 inflates a sent message differently"
        );
    }

    // Feed the receiver in chunks of 1..=300 bytes from the seed.
    let mut obs = Observer::new(receiver_role, true, max_message);
    let mut rest = &wire[..];
    while !rest.is_empty() {
        seed ^= seed << 13;
        seed ^= seed >> 17;
        seed ^= seed << 5;
        let n = (seed % 300 + 1) as usize;
        let n = n.min(rest.len());
        receiver.handle_bytes(&rest[..n]);
        rest = &rest[n..];
        obs.transmit(&mut receiver);
        obs.events(&mut receiver);
        obs.transmit(&mut receiver);
    }
    let delivered = &obs.delivered;
    let first_too_big = sent.iter().position(|(_, m)| m.len() > max_message);
    let expected = first_too_big.unwrap_or(sent.len());
    assert_eq!(
        delivered.len(),
        expected,
        "messages delivered vs sent (limit {max_message})"
    );
    for (i, (got, (kind, want))) in delivered.iter().zip(&sent).enumerate() {
        let (got_kind, got_bytes) = match got {
            Message::Text(t) => (DataKind::Text, t.as_bytes()),
            Message::Binary(b) => (DataKind::Binary, &b[..]),
            other => panic!("unexpected {other:?}"),
        };
        assert_eq!(got_kind, *kind, "message {i}: kind");
        assert!(
            got_bytes == &want[..],
            "message {i}: round trip changed {} bytes into {}",
            want.len(),
            got_bytes.len()
        );
    }
    if first_too_big.is_some() {
        let closed = obs
            .closed_event
            .as_ref()
            .expect("message over the limit did not close");
        assert_eq!(closed.code.0, 1009, "{closed:?}");
        assert!(
            matches!(closed.error, Some(ProtocolError::MessageTooBig { .. })),
            "{closed:?}"
        );
    } else {
        assert!(
            obs.closed_event.is_none(),
            "closed without cause: {:?}",
            obs.closed_event
        );
        assert_eq!(receiver.state(), State::Open);
    }
    receiver.handle_eof();
    obs.transmit(&mut receiver);
    obs.events(&mut receiver);
    obs.transmit(&mut receiver);
    obs.finish();
});
