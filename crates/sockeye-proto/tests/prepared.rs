//! `PreparedMessage`: a message framed (and compressed) once for many connections. The wire
//! is the oracle: what `send_prepared` queues decodes to the original at a real peer (a
//! `Connection` of the other role, and the strict `Puff` decoder for the window), and is byte
//! for byte what `send_shared` queues on the same connection.

mod common;

use std::io::IoSlice;

use bytes::Bytes;
use common::*;
use sockeye_proto::deflate::DeflateConfig;
use sockeye_proto::{
    Config, Connection, DataKind, Event, Message, PreparedMessage, Role, SendError, SHARE_THRESHOLD,
};

/// Messages of every path: empty, small, over [`SHARE_THRESHOLD`] compressible (its compressed
/// form is small) and incompressible (its compressed form is shared too), text and binary.
fn messages() -> Vec<Message> {
    let json = r#"{"type":"tick","symbol":"ACME","price":101.25,"volume":1200}"#;
    let mut noise = Vec::with_capacity(SHARE_THRESHOLD * 2);
    let mut x: u32 = 0x1234_5678;
    while noise.len() < SHARE_THRESHOLD * 2 {
        // xorshift: incompressible bytes, so the compressed payload is over SHARE_THRESHOLD.
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        noise.extend_from_slice(&x.to_le_bytes());
    }
    vec![
        Message::text(json),
        Message::text(""),
        Message::binary(pattern(300)),
        Message::text(json.repeat(SHARE_THRESHOLD / json.len() + 10)),
        Message::binary(noise),
        Message::text("Hello"),
        Message::text(json),
    ]
}

/// Everything `conn` queued, through the slices the transport writes from.
fn take(conn: &mut Connection) -> Vec<u8> {
    let mut wire = Vec::new();
    loop {
        let mut slices = [IoSlice::new(&[]); 16];
        let count = conn.poll_write_slices(&mut slices);
        if count == 0 {
            return wire;
        }
        let mut taken = 0;
        for slice in &slices[..count] {
            wire.extend_from_slice(slice);
            taken += slice.len();
        }
        conn.advance_written(taken);
    }
}

/// The data messages `conn` delivers for `wire`.
fn receive(conn: &mut Connection, wire: &[u8]) -> Vec<Message> {
    conn.handle_bytes(wire);
    let mut got = Vec::new();
    while let Some(event) = conn.poll_event() {
        match event {
            Event::Message(m) if m.is_data() => got.push(m),
            other => panic!("unexpected {other:?}"),
        }
    }
    got
}

fn send_ordinary(conn: &mut Connection, message: &Message) {
    match message {
        Message::Text(t) => conn.send_shared(DataKind::Text, t.clone().into_bytes()),
        Message::Binary(b) => conn.send_shared(DataKind::Binary, b.clone()),
        other => panic!("not data: {other:?}"),
    }
    .unwrap();
}

/// Every combination the tests negotiate: context takeover on and off each way, every window
/// the server may compress with, and the compression threshold.
fn configs() -> Vec<(DeflateConfig, DeflateConfig)> {
    let mut all = Vec::new();
    for server_nct in [false, true] {
        for client_nct in [false, true] {
            for bits in 8..=15u8 {
                let mut client = DeflateConfig::default();
                client.server_no_context_takeover = server_nct;
                client.client_no_context_takeover = client_nct;
                client.server_max_window_bits = Some(bits);
                client.client_max_window_bits = Some(bits);
                // A server that allows context takeover: the client's requests decide.
                let mut server = DeflateConfig::default();
                server.server_context_takeover = true;
                server.client_context_takeover = true;
                all.push((client, server));
            }
        }
    }
    // The default server: no context takeover either way, whatever the client asked.
    all.push((DeflateConfig::default(), DeflateConfig::default()));
    let mut threshold = DeflateConfig::default();
    threshold.compression_threshold = 100;
    all.push((DeflateConfig::default(), threshold));
    all
}

/// Sends [`messages`] from `sender` with `send_prepared`, through `prepared`, and from `twin` (the
/// same connection, created alike) with `send_shared`: same wire bytes, decoded by `receiver`
/// to the originals.
fn check(
    sender: &mut Connection,
    twin: &mut Connection,
    receiver: &mut Connection,
    prepared: &[PreparedMessage],
    what: &str,
) -> Vec<u8> {
    let mut all = Vec::new();
    for prepared in prepared {
        sender.send_prepared(prepared).unwrap();
        send_ordinary(twin, prepared.message());
        let wire = take(sender);
        let expected = take(twin);
        assert!(
            wire == expected,
            "{what}: prepared {} bytes, send_shared {} bytes",
            wire.len(),
            expected.len()
        );
        assert_eq!(
            receive(receiver, &wire),
            [prepared.message().clone()],
            "{what}"
        );
        all.extend(wire);
    }
    all
}

#[test]
fn prepared_messages_decode_and_match_ordinary_sends_on_every_parameter_set() {
    let prepared: Vec<PreparedMessage> =
        messages().into_iter().map(PreparedMessage::from).collect();
    // The same prepared messages on every connection: cached compressed forms are reused
    // across parameter sets only where they match.
    for (client_config, server_config) in configs() {
        let (client_params, server_params) = negotiate(&client_config, &server_config);
        let what = format!("{server_params}");
        let server = || {
            Connection::new(Role::Server, Config::default(), fixed_mask())
                .with_deflate(server_params, &server_config)
        };
        let client = || {
            Connection::new(Role::Client, Config::default(), fixed_mask())
                .with_deflate(client_params, &client_config)
        };
        // Server to client: shared framing and, without context takeover, compression.
        let wire = check(
            &mut server(),
            &mut server(),
            &mut client(),
            &prepared,
            &what,
        );
        // The strict decoder: the server kept to its window.
        let mut puff = Puff::new(server_params.server_max_window_bits.max(9));
        for frame in parse_wire(&wire) {
            if frame.rsv & RSV1 != 0 {
                let decoded = puff.message(&frame.payload).unwrap();
                assert!(
                    prepared.iter().any(|p| p.message().as_payload() == decoded),
                    "{what}"
                );
                if server_params.server_no_context_takeover {
                    puff = Puff::new(server_params.server_max_window_bits.max(9));
                }
            } else {
                assert!(
                    server_params.server_max_window_bits == 8
                        || frame.payload.len() < server_config.compression_threshold,
                    "{what}: uncompressed frame"
                );
            }
        }
        // Client to server: masked, so each connection frames for itself.
        check(
            &mut client(),
            &mut client(),
            &mut server(),
            &prepared,
            &what,
        );
    }
}

#[test]
fn plain_server_frames_share_the_payload() {
    let big = Bytes::from(pattern(SHARE_THRESHOLD * 3));
    let prepared = PreparedMessage::new(Message::Binary(big.clone()));
    let small = PreparedMessage::new(Message::text("hi"));
    for _ in 0..3 {
        let mut conn = server();
        conn.send_prepared(&prepared).unwrap();
        conn.send_prepared(&small).unwrap();
        let mut slices = [IoSlice::new(&[]); 8];
        let count = conn.poll_write_slices(&mut slices);
        assert_eq!(count, 3, "header, the payload itself, the small frame");
        assert_eq!(&*slices[0], [0x82, 126, 0xc0, 0]);
        assert_eq!(slices[1].as_ptr(), big.as_ptr());
        assert_eq!(&*slices[2], b"\x81\x02hi");
    }
}

#[test]
fn compressed_forms_are_shared_between_connections() {
    // Incompressible, so that the compressed payload is large enough to be shared too.
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let noise: Vec<u8> = (0..SHARE_THRESHOLD * 2)
        .map(|_| {
            x ^= x << 7;
            x ^= x >> 9;
            x as u8
        })
        .collect();
    let prepared = PreparedMessage::new(Message::binary(noise.clone()));
    // The default server resets its context: every connection compresses alike.
    let config = DeflateConfig::default();
    let (client_params, server_params) = negotiate(&config, &DeflateConfig::default());
    assert!(server_params.server_no_context_takeover);
    let mut payloads = Vec::new();
    for _ in 0..4 {
        let mut conn = Connection::new(Role::Server, Config::default(), fixed_mask())
            .with_deflate(server_params, &DeflateConfig::default());
        conn.send_prepared(&prepared).unwrap();
        let mut slices = [IoSlice::new(&[]); 8];
        let count = conn.poll_write_slices(&mut slices);
        assert_eq!(count, 2, "header, then the shared compressed payload");
        assert_eq!(slices[0][0], 0xC2, "FIN, RSV1, binary");
        payloads.push((slices[1].as_ptr() as usize, slices[1].len()));
        let wire = take(&mut conn);
        let mut client = Connection::new(Role::Client, Config::default(), fixed_mask())
            .with_deflate(client_params, &config);
        assert_eq!(
            receive(&mut client, &wire),
            [Message::binary(noise.clone())]
        );
    }
    assert!(
        payloads.windows(2).all(|w| w[0] == w[1]),
        "every connection queues the same compressed bytes: {payloads:?}"
    );
}

#[test]
fn send_prepared_checks_like_send() {
    let prepared = PreparedMessage::new(Message::text("x"));
    let mut conn = server();
    conn.send_fragment(DataKind::Binary, b"a", false).unwrap();
    assert_eq!(
        conn.send_prepared(&prepared),
        Err(SendError::FragmentInProgress)
    );
    conn.send_fragment(DataKind::Binary, b"b", true).unwrap();
    conn.send_prepared(&prepared).unwrap();
    conn.send_prepared(&PreparedMessage::new(Message::Close(None)))
        .unwrap();
    assert_eq!(conn.send_prepared(&prepared), Err(SendError::Closed));
    // Control messages go out as ping, pong and close would send them.
    let mut conn = server();
    conn.send_prepared(&PreparedMessage::new(Message::Ping(Bytes::from_static(
        b"p",
    ))))
    .unwrap();
    conn.send_prepared(&PreparedMessage::new(Message::Pong(Bytes::from_static(
        b"q",
    ))))
    .unwrap();
    assert_eq!(
        conn.send_prepared(&PreparedMessage::new(Message::Ping(Bytes::from(vec![
            0;
            126
        ])))),
        Err(SendError::ControlFrameTooBig)
    );
    assert_eq!(take(&mut conn), b"\x89\x01p\x8a\x01q");
}

/// `send_uncompressed` and `PreparedMessage::uncompressed` on connections that compress: the
/// frame goes out with RSV1 clear and the peer decodes it; with context takeover the messages
/// around it still decode (an uncompressed message leaves the window alone).
#[test]
fn uncompressed_messages_go_out_with_rsv1_clear() {
    let text = "an uncompressed message among compressed ones; ".repeat(400);
    let big = Bytes::from(text.clone().into_bytes());
    for (client_config, server_config) in configs() {
        let (client_params, server_params) = negotiate(&client_config, &server_config);
        let what = format!("{server_params}");
        let mut server = Connection::new(Role::Server, Config::default(), fixed_mask())
            .with_deflate(server_params, &server_config);
        let mut client = Connection::new(Role::Client, Config::default(), fixed_mask())
            .with_deflate(client_params, &client_config);
        let prepared = PreparedMessage::uncompressed(Message::text(text.clone()));
        assert!(!prepared.is_compressible());
        for masked in [false, true] {
            let (sender, receiver) = if masked {
                (&mut client, &mut server)
            } else {
                (&mut server, &mut client)
            };
            sender.send(DataKind::Text, text.as_bytes()).unwrap();
            sender
                .send_uncompressed(DataKind::Text, big.clone())
                .unwrap();
            sender.send_prepared(&prepared).unwrap();
            sender.send(DataKind::Text, text.as_bytes()).unwrap();
            let wire = take(sender);
            let frames = parse_wire(&wire);
            let rsv: Vec<u8> = frames.iter().map(|f| f.rsv & RSV1).collect();
            let compresses = if masked {
                client_params.client_max_window_bits > 8
            } else {
                server_params.server_max_window_bits > 8
                    && server_config.compression_threshold <= text.len()
            };
            let on = if compresses { RSV1 } else { 0 };
            assert_eq!(rsv, [on, 0, 0, on], "{what}, masked {masked}");
            assert_eq!(frames[1].payload, text.as_bytes(), "{what}");
            assert_eq!(frames[2].payload, text.as_bytes(), "{what}");
            assert_eq!(
                receive(receiver, &wire),
                vec![Message::text(text.clone()); 4],
                "{what}"
            );
        }
    }
    // On a server connection a large uncompressed payload is queued without a copy, prepared
    // or not, and nothing is compressed for the prepared one.
    let (_, server_params) = negotiate(&DeflateConfig::default(), &DeflateConfig::default());
    let prepared = PreparedMessage::uncompressed(Message::Text(text.clone().into()));
    let payload = match prepared.message() {
        Message::Text(t) => t.as_bytes().as_ptr(),
        _ => unreachable!(),
    };
    let mut server = Connection::new(Role::Server, Config::default(), fixed_mask())
        .with_deflate(server_params, &DeflateConfig::default());
    server
        .send_uncompressed(DataKind::Binary, big.clone())
        .unwrap();
    server.send_prepared(&prepared).unwrap();
    let mut slices = [IoSlice::new(&[]); 8];
    assert_eq!(server.poll_write_slices(&mut slices), 4);
    assert_eq!(slices[0][0], 0x82, "FIN, binary, RSV1 clear");
    assert_eq!(slices[1].as_ptr(), big.as_ptr());
    assert_eq!(slices[2][0], 0x81, "FIN, text, RSV1 clear");
    assert_eq!(slices[3].as_ptr(), payload);
}
