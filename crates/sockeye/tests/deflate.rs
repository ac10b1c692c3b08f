//! permessage-deflate (RFC 7692) over loopback TCP: negotiation as `extensions()` reports it,
//! echo of compressed messages from empty to 1 MiB, fallback when one side does not take part,
//! and the frames a sockeye client and server put on the wire, checked by a raw peer with
//! flate2.

mod common;

use common::*;
use flate2::{Decompress, FlushDecompress, Status};
use futures_util::StreamExt as _;
use sockeye::{CloseCode, DeflateConfig, Message, Server, WebSocketConfig};
use tokio::net::TcpStream;

const RSV1: u8 = 0b100;

/// "Hello" compressed (RFC 7692 §7.2.3.1), and the repeat that refers back to it (§7.2.3.2).
const HELLO: [u8; 7] = [0xf2, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00];
const HELLO_AGAIN: [u8; 5] = [0xf2, 0x00, 0x11, 0x00, 0x00];

fn deflate_config(edit: impl FnOnce(&mut DeflateConfig)) -> DeflateConfig {
    let mut config = DeflateConfig::default();
    edit(&mut config);
    config
}

fn deflating(config: DeflateConfig) -> WebSocketConfig {
    WebSocketConfig::default().deflate(Some(config))
}

/// Inflates one message payload with flate2 (RFC 7692 §7.2.2: append `00 00 ff ff`).
fn inflate(decompress: &mut Decompress, payload: &[u8]) -> Vec<u8> {
    let input = [payload, &[0x00, 0x00, 0xff, 0xff]].concat();
    let mut out = Vec::new();
    let mut pos = 0;
    loop {
        let mut buf = [0u8; 4096];
        let (in_before, out_before) = (decompress.total_in(), decompress.total_out());
        let status = decompress
            .decompress(&input[pos..], &mut buf, FlushDecompress::Sync)
            .expect("valid DEFLATE data");
        let consumed = (decompress.total_in() - in_before) as usize;
        let produced = (decompress.total_out() - out_before) as usize;
        pos += consumed;
        out.extend_from_slice(&buf[..produced]);
        assert_ne!(
            status,
            Status::StreamEnd,
            "sockeye never ends the DEFLATE stream"
        );
        if consumed == 0 && produced == 0 {
            assert_eq!(pos, input.len(), "undecodable input left");
            return out;
        }
    }
}

/// Text and binary messages from empty to 1 MiB: compressible text, a repeating pattern, and
/// noise that deflate cannot shrink.
fn messages() -> Vec<Message> {
    let mut rng = 0x9E37_79B9_7F4A_7C15_u64;
    let mut noise = |len: usize| -> Vec<u8> {
        (0..len)
            .map(|_| {
                rng ^= rng << 13;
                rng ^= rng >> 7;
                rng ^= rng << 17;
                rng as u8
            })
            .collect()
    };
    let words = "permessage-deflate compresses every message with one shared window ";
    let mut out = Vec::new();
    for (i, len) in [0, 1, 125, 126, 1000, 65_535, 65_536, 300_000, 1 << 20]
        .into_iter()
        .enumerate()
    {
        let text: String = words.chars().cycle().skip(i).take(len).collect();
        out.push(Message::text(text));
        out.push(Message::binary(pattern(len, i as u32)));
        if len <= 65_536 || len == 1 << 20 {
            out.push(Message::binary(noise(len)));
        }
    }
    out
}

/// Sends every message from the client, expects each echoed back whole, then closes cleanly.
async fn echo_everything(
    mut client: sockeye::WebSocketStream<sockeye::Transport<TcpStream>>,
    server: sockeye::WebSocketStream<sockeye::Transport<TcpStream>>,
    messages: &[Message],
) {
    let echo = spawn_echo(server);
    for message in messages {
        within("send", client.send(message.clone())).await.unwrap();
        let echoed = within("echo", client.next())
            .await
            .expect("stream open")
            .expect("no error");
        assert!(
            echoed == *message,
            "echo of a {}-byte message differs",
            message.as_payload().len()
        );
    }
    within("close", client.close(CloseCode::NORMAL, "done"))
        .await
        .unwrap();
    let report = within("echo task", echo).await.unwrap();
    assert_eq!(report.echoed, messages.len());
    assert!(report.error.is_none(), "{:?}", report.error);
    let closed = report.closed.expect("closed");
    assert!(
        closed.was_clean && closed.code == CloseCode::NORMAL,
        "{closed:?}"
    );
}

#[tokio::test]
async fn both_ends_negotiate_and_echo_every_size() {
    let config = deflating(DeflateConfig::default());
    let (client, server) = tcp_pair_with(config.clone(), config.clone()).await;
    // The client offers "permessage-deflate; client_max_window_bits"; a default server resets
    // both contexts (RFC 7692 §7.1.1.1, §7.1.1.2 let it add both parameters unasked).
    let agreed = "permessage-deflate; server_no_context_takeover; client_no_context_takeover";
    assert_eq!(client.extensions(), agreed);
    assert_eq!(server.extensions(), agreed);
    echo_everything(client, server, &messages()).await;
    // A server that allows context takeover, with nothing to limit, accepts the bare extension.
    let allowing = deflating(deflate_config(|c| {
        c.server_context_takeover = true;
        c.client_context_takeover = true;
    }));
    let (client, server) = tcp_pair_with(config, allowing).await;
    assert_eq!(client.extensions(), "permessage-deflate");
    assert_eq!(server.extensions(), "permessage-deflate");
    echo_everything(client, server, &messages()).await;
}

#[tokio::test]
async fn negotiated_parameters_show_in_extensions() {
    let messages: Vec<Message> = messages()
        .into_iter()
        .filter(|m| m.as_payload().len() <= 65_536)
        .collect();

    // Everything requested by the client, granted by a default server.
    let client = deflating(deflate_config(|c| {
        c.server_no_context_takeover = true;
        c.client_no_context_takeover = true;
        c.server_max_window_bits = Some(10);
        c.client_max_window_bits = Some(12);
    }));
    let (client, server) = tcp_pair_with(client, deflating(DeflateConfig::default())).await;
    let agreed = "permessage-deflate; server_no_context_takeover; client_no_context_takeover; \
                  server_max_window_bits=10; client_max_window_bits=12";
    assert_eq!(client.extensions(), agreed);
    assert_eq!(server.extensions(), agreed);
    echo_everything(client, server, &messages).await;

    // Imposed by the server on a default client.
    let server = deflating(deflate_config(|c| {
        c.server_no_context_takeover = true;
        c.client_context_takeover = true;
        c.client_max_window_bits = Some(9);
    }));
    let (client, server) = tcp_pair_with(deflating(DeflateConfig::default()), server).await;
    let agreed = "permessage-deflate; server_no_context_takeover; client_max_window_bits=9";
    assert_eq!(client.extensions(), agreed);
    assert_eq!(server.extensions(), agreed);
    echo_everything(client, server, &messages).await;

    // Windows of 8 bits: both ends send uncompressed messages, and it still works.
    let client = deflating(deflate_config(|c| {
        c.server_max_window_bits = Some(8);
        c.client_max_window_bits = Some(8);
    }));
    let (client, server) = tcp_pair_with(client, deflating(DeflateConfig::default())).await;
    let agreed = "permessage-deflate; server_no_context_takeover; client_no_context_takeover; \
                  server_max_window_bits=8; client_max_window_bits=8";
    assert_eq!(client.extensions(), agreed);
    assert_eq!(server.extensions(), agreed);
    echo_everything(client, server, &messages[..12]).await;
}

#[tokio::test]
async fn one_side_without_deflate_falls_back_to_plain_frames() {
    let messages: Vec<Message> = messages()
        .into_iter()
        .filter(|m| m.as_payload().len() <= 300_000)
        .collect();
    let with = deflating(DeflateConfig::default());
    let without = WebSocketConfig::default();
    for (client, server) in [(with.clone(), without.clone()), (without, with)] {
        let (client, server) = tcp_pair_with(client, server).await;
        assert_eq!(client.extensions(), "");
        assert_eq!(server.extensions(), "");
        echo_everything(client, server, &messages).await;
    }
}

#[tokio::test]
async fn a_sockeye_client_compresses_on_the_wire() {
    let (listener, url) = listener().await;
    let config = deflating(DeflateConfig::default());
    let (client, mut raw) = within("handshake", async {
        tokio::join!(
            sockeye::connect_with_config(&url, config),
            raw_server_accept(&listener, |accept| {
                let mut response = switching_protocols(accept);
                // Insert the extension before the blank line.
                response.truncate(response.len() - 2);
                response.extend_from_slice(b"Sec-WebSocket-Extensions: permessage-deflate\r\n\r\n");
                response
            })
        )
    })
    .await;
    let (mut client, _) = client.expect("client handshake");
    assert_eq!(client.extensions(), "permessage-deflate");

    // The client's messages: RSV1, masked, and they inflate (with context takeover) to what
    // was sent. The repeat follows the first within the 32 KiB window, so it refers back to it.
    let text: String = (0..400)
        .map(|i| format!("message {i}: hello, compressed world! "))
        .collect();
    let data = pattern(70_000, 3);
    client.send(Message::text(text.clone())).await.unwrap();
    client.send(Message::text(text.clone())).await.unwrap();
    client.send(Message::binary(data.clone())).await.unwrap();
    let mut oracle = Decompress::new(false);
    let mut sizes = Vec::new();
    for (opcode, expected) in [
        (TEXT, text.as_bytes()),
        (TEXT, text.as_bytes()),
        (BINARY, &data),
    ] {
        let (rsv, frame) = within("client frame", raw.read_frame_rsv())
            .await
            .expect("frame");
        assert_eq!((rsv, frame.opcode, frame.fin), (RSV1, opcode, true));
        assert!(frame.masked, "client frames are masked");
        assert!(inflate(&mut oracle, &frame.payload) == expected);
        sizes.push(frame.payload.len());
    }
    assert!(sizes[0] < text.len() / 4, "{sizes:?}");
    assert!(
        sizes[1] < sizes[0] / 4,
        "the repeat uses the shared window: {sizes:?}"
    );
    // Pings are never compressed.
    client
        .send(Message::Ping(b"uncompressed".to_vec().into()))
        .await
        .unwrap();
    let (rsv, frame) = raw.read_frame_rsv().await.expect("ping");
    assert_eq!(
        (rsv, frame.opcode, &frame.payload[..]),
        (0, PING, &b"uncompressed"[..])
    );

    // The RFC 7692 §7.2.3 examples from the server: one message, then a repeat that refers
    // back to it, then an uncompressed one.
    raw.write(&compressed_frame(true, TEXT, &HELLO, None)).await;
    raw.write(&compressed_frame(true, TEXT, &HELLO_AGAIN, None))
        .await;
    raw.send_frame(true, BINARY, b"plain").await;
    for expected in [
        Message::text("Hello"),
        Message::text("Hello"),
        Message::binary(&b"plain"[..]),
    ] {
        let got = within("client receives", client.next())
            .await
            .expect("open")
            .expect("no error");
        assert_eq!(got, expected);
    }
    raw.send_frame(true, CLOSE, &close_payload(1000, "")).await;
    let item = within("close", client.next()).await.expect("open").unwrap();
    assert!(matches!(item, Message::Close(Some(_))), "{item:?}");
    let echo = within("close echo", raw.read_frame()).await.expect("close");
    assert_eq!(echo.close_code().0, 1000);
    drop(raw);
    assert!(within("end", client.next()).await.is_none());
    assert!(client.close_info().expect("closed").was_clean);
}

#[tokio::test]
async fn a_sockeye_server_compresses_on_the_wire() {
    let server = Server::bind("127.0.0.1:0")
        .await
        .expect("bind")
        .config(deflating(deflate_config(|c| {
            c.server_no_context_takeover = true
        })));
    let addr = server.local_addr().unwrap();
    let (accepted, mut raw) = within("handshake", async {
        tokio::join!(server.accept(), async {
            let tcp = TcpStream::connect(addr).await.expect("connect");
            let mut raw = RawPeer::new(tcp, Some([0x37, 0xfa, 0x21, 0x3d]));
            raw.write(
                upgrade_request(
                    "Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n",
                )
                .as_bytes(),
            )
            .await;
            let head = raw.read_head().await;
            assert!(head.starts_with("HTTP/1.1 101 "), "{head}");
            assert_eq!(
                header(&head, "sec-websocket-extensions"),
                Some("permessage-deflate; server_no_context_takeover; client_no_context_takeover")
            );
            raw
        })
    })
    .await;
    let (mut server, _, _) = accepted.expect("server handshake");
    assert_eq!(
        server.extensions(),
        "permessage-deflate; server_no_context_takeover; client_no_context_takeover"
    );

    // server_no_context_takeover: the same message twice gives the same bytes, each inflating
    // on its own.
    let text = "server to client, compressed ".repeat(100);
    server.send(Message::text(text.clone())).await.unwrap();
    server.send(Message::text(text.clone())).await.unwrap();
    let mut payloads = Vec::new();
    for _ in 0..2 {
        let (rsv, frame) = within("server frame", raw.read_frame_rsv())
            .await
            .expect("frame");
        assert_eq!((rsv, frame.opcode, frame.masked), (RSV1, TEXT, false));
        assert!(inflate(&mut Decompress::new(false), &frame.payload) == text.as_bytes());
        payloads.push(frame.payload);
    }
    assert_eq!(payloads[0], payloads[1]);
    assert!(payloads[0].len() < text.len() / 10);

    // Sent uncompressed on request (RSV1 clear), alone and as a prepared broadcast; then
    // compressed again.
    server
        .send_uncompressed(Message::text(text.clone()))
        .await
        .unwrap();
    let prepared = sockeye::PreparedMessage::uncompressed(Message::binary(text.clone()));
    server.send_prepared(&prepared).await.unwrap();
    server.send(Message::text(text.clone())).await.unwrap();
    for (want_rsv, opcode) in [(0, TEXT), (0, BINARY), (RSV1, TEXT)] {
        let (rsv, frame) = within("server frame", raw.read_frame_rsv())
            .await
            .expect("frame");
        assert_eq!((rsv, frame.opcode), (want_rsv, opcode));
        if want_rsv == 0 {
            assert!(frame.payload == text.as_bytes());
        } else {
            assert_eq!(frame.payload, payloads[0]);
        }
    }

    // A masked compressed message from the raw client, in two fragments (§7.2.3.1).
    raw.write(&compressed_frame(false, TEXT, &HELLO[..3], raw.mask))
        .await;
    raw.send_frame(true, CONTINUATION, &HELLO[3..]).await;
    let got = within("server receives", server.next())
        .await
        .expect("open")
        .expect("no error");
    assert_eq!(got, Message::text("Hello"));
    raw.send_frame(true, CLOSE, &close_payload(1000, "")).await;
    let (item, echo) = within("close echo", async {
        tokio::join!(server.next(), raw.read_frame())
    })
    .await;
    assert!(
        matches!(item, Some(Ok(Message::Close(Some(_))))),
        "{item:?}"
    );
    assert_eq!(echo.expect("close").close_code().0, 1000);
}

#[tokio::test]
async fn the_hand_built_bomb_inflates_to_zeros() {
    // The bomb of `deflate_bomb.rs`, small: flate2 agrees with what it promises.
    let bomb = zero_bomb(10_000);
    assert!(bomb.len() < 2600, "{}", bomb.len());
    let out = inflate(&mut Decompress::new(false), &bomb);
    assert_eq!(out.len(), 1 + 258 * 10_000);
    assert!(out.iter().all(|&b| b == 0));
}

/// A broadcast: one `PreparedMessage` fed to several server streams, some negotiating
/// `server_no_context_takeover` (compressed once for all) and some not (compressed each), and
/// to a stream without deflate. Every client receives every message whole, in order.
#[tokio::test]
async fn prepared_messages_reach_every_subscriber() {
    let mut pairs = Vec::new();
    for server_nct in [true, true, false, false] {
        let server = deflating(deflate_config(|c| c.server_context_takeover = !server_nct));
        pairs.push(tcp_pair_with(deflating(DeflateConfig::default()), server).await);
    }
    pairs.push(
        tcp_pair_with(
            WebSocketConfig::default(),
            deflating(DeflateConfig::default()),
        )
        .await,
    );
    let (mut clients, mut servers): (Vec<_>, Vec<_>) = pairs.into_iter().unzip();
    assert_eq!(
        servers[0].extensions(),
        "permessage-deflate; server_no_context_takeover; client_no_context_takeover"
    );
    assert_eq!(
        servers[2].extensions(),
        "permessage-deflate; client_no_context_takeover"
    );
    assert_eq!(servers[4].extensions(), "");
    let messages = messages();
    let prepared: Vec<sockeye::PreparedMessage> = messages
        .iter()
        .cloned()
        .map(sockeye::PreparedMessage::from)
        .collect();
    let readers: Vec<_> = clients
        .drain(..)
        .map(|mut client| {
            let count = messages.len();
            tokio::spawn(async move {
                let mut got = Vec::new();
                while got.len() < count {
                    got.push(client.next().await.expect("open").expect("no error"));
                }
                got
            })
        })
        .collect();
    for message in &prepared {
        for server in &mut servers {
            within("feed", server.feed_prepared(message)).await.unwrap();
        }
    }
    for server in &mut servers {
        within("flush", server.flush()).await.unwrap();
    }
    for reader in readers {
        let got = within("receive", reader).await.unwrap();
        assert!(got == messages, "a subscriber got different messages");
    }
    // The waiting and non-waiting forms queue alike.
    let prepared = sockeye::PreparedMessage::new(Message::text("last"));
    servers[0].send_prepared(&prepared).await.unwrap();
    servers[1].try_send_prepared(&prepared).unwrap();
}
