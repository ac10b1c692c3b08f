//! Property tests: header round trips, chunking independence of the connection, and robustness
//! against arbitrary input (the oracles of STYLE.md §10, run as proptests).

mod common;

use common::*;
use proptest::prelude::*;
use sockeye_proto::frame::{CloseCode, FrameHeader, OpCode};
use sockeye_proto::{Config, Connection, Event, Message, Role, Transmit};

// ---------------------------------------------------------------------------------------------
// (1) Frame headers
// ---------------------------------------------------------------------------------------------

fn opcode() -> impl Strategy<Value = OpCode> {
    prop::sample::select(vec![
        OpCode::Continuation,
        OpCode::Text,
        OpCode::Binary,
        OpCode::Close,
        OpCode::Ping,
        OpCode::Pong,
    ])
}

fn payload_len() -> impl Strategy<Value = u64> {
    prop_oneof![
        0..126u64,
        126..=0xFFFFu64,
        0x1_0000..(1u64 << 63),
        prop::sample::select(vec![
            0,
            125,
            126,
            127,
            0xFFFF,
            0x1_0000,
            1 << 62,
            (1 << 63) - 1
        ]),
    ]
}

prop_compose! {
    fn header()(
        fin in any::<bool>(),
        rsv1 in any::<bool>(),
        rsv2 in any::<bool>(),
        rsv3 in any::<bool>(),
        opcode in opcode(),
        mask in prop::option::of(any::<[u8; 4]>()),
        payload_len in payload_len(),
    ) -> FrameHeader {
        let mut h = FrameHeader::new(opcode, payload_len);
        h.fin = fin;
        h.rsv1 = rsv1;
        h.rsv2 = rsv2;
        h.rsv3 = rsv3;
        h.mask = mask;
        h
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn header_encode_then_parse_round_trips(h in header()) {
        let mut out = Vec::new();
        h.encode(&mut out);
        prop_assert_eq!(out.len(), h.encoded_len());
        prop_assert_eq!(FrameHeader::parse(&out), Ok(Some((h, out.len()))));
        // Every strict prefix asks for more bytes.
        for end in 0..out.len() {
            prop_assert_eq!(FrameHeader::parse(&out[..end]), Ok(None));
        }
        // Trailing payload bytes are not consumed.
        out.extend_from_slice(&[0xAA; 3]);
        prop_assert_eq!(FrameHeader::parse(&out), Ok(Some((h, out.len() - 3))));
    }

    #[test]
    fn accepted_header_bytes_re_encode_exactly(data in prop::collection::vec(any::<u8>(), 0..=16)) {
        if let Ok(Some((h, used))) = FrameHeader::parse(&data) {
            let mut out = Vec::new();
            h.encode(&mut out);
            prop_assert_eq!(&out[..], &data[..used], "accepted header must round-trip");
        }
    }

    #[test]
    fn header_encoding_matches_the_hand_written_oracle(h in header()) {
        // The oracle builds whole frames, so keep payloads small.
        prop_assume!(h.payload_len <= 70_000);
        let mut out = Vec::new();
        h.encode(&mut out);
        let rsv = (u8::from(h.rsv1) << 2) | (u8::from(h.rsv2) << 1) | u8::from(h.rsv3);
        let payload = vec![0u8; h.payload_len as usize];
        let oracle = frame(h.opcode.as_u8(), h.fin, rsv, h.mask, &payload);
        prop_assert_eq!(&out[..], &oracle[..out.len()]);
        prop_assert_eq!(out.len() + payload.len(), oracle.len());
    }
}

// ---------------------------------------------------------------------------------------------
// (2) Message sequences are independent of how the bytes are split
// ---------------------------------------------------------------------------------------------

/// One data message as sent: its payload, where it is cut into fragments, and the pings that
/// go between the fragments.
#[derive(Debug, Clone)]
struct Planned {
    text: bool,
    payload: Vec<u8>,
    /// Fragment boundaries (byte offsets; sorted, duplicates allowed: empty fragments).
    cuts: Vec<usize>,
    /// `(after fragment i, ping payload)`.
    pings: Vec<(usize, Vec<u8>)>,
    /// One masking key per frame (cycled).
    keys: Vec<[u8; 4]>,
}

fn planned() -> impl Strategy<Value = Planned> {
    planned_sized(".{0,40}", 300, 126)
}

fn planned_sized(
    text: &'static str,
    max_binary: usize,
    max_ping: usize,
) -> impl Strategy<Value = Planned> {
    let body = prop_oneof![
        text.prop_map(|s: String| (true, s.into_bytes())),
        prop::collection::vec(any::<u8>(), 0..max_binary).prop_map(|b| (false, b)),
    ];
    (
        body,
        prop::collection::vec(any::<prop::sample::Index>(), 0..5),
        prop::collection::vec(
            (
                any::<prop::sample::Index>(),
                prop::collection::vec(any::<u8>(), 0..max_ping),
            ),
            0..3,
        ),
        prop::collection::vec(any::<[u8; 4]>(), 1..4),
    )
        .prop_map(|((text, payload), cuts, pings, keys)| {
            let mut cuts: Vec<usize> = cuts.iter().map(|i| i.index(payload.len() + 1)).collect();
            cuts.sort_unstable();
            let fragments = cuts.len() + 1;
            let pings = pings
                .into_iter()
                .map(|(i, p)| (i.index(fragments), p))
                .collect();
            Planned {
                text,
                payload,
                cuts,
                pings,
                keys,
            }
        })
}

/// Encodes the messages as client frames; returns the wire bytes, the events a server must
/// report and the pongs it must send.
fn encode(messages: &[Planned]) -> (Vec<u8>, Vec<Event>, Vec<u8>) {
    let mut wire = Vec::new();
    let mut events = Vec::new();
    let mut pongs = Vec::new();
    let mut n = 0usize;
    for m in messages {
        let mut key = || {
            n += 1;
            m.keys[n % m.keys.len()]
        };
        let bounds: Vec<usize> = std::iter::once(0)
            .chain(m.cuts.iter().copied())
            .chain(std::iter::once(m.payload.len()))
            .collect();
        let fragments = bounds.len() - 1;
        for i in 0..fragments {
            let opcode = match (i, m.text) {
                (0, true) => OP_TEXT,
                (0, false) => OP_BINARY,
                _ => OP_CONT,
            };
            let piece = &m.payload[bounds[i]..bounds[i + 1]];
            wire.extend(frame(opcode, i + 1 == fragments, 0, Some(key()), piece));
            if i + 1 < fragments {
                for (_, p) in m.pings.iter().filter(|(after, _)| *after == i) {
                    wire.extend(frame(OP_PING, true, 0, Some(key()), p));
                    events.push(Event::Message(Message::Ping(p.clone().into())));
                    pongs.extend(unmasked(OP_PONG, true, p));
                }
            }
        }
        let message = if m.text {
            Message::text(String::from_utf8(m.payload.clone()).unwrap())
        } else {
            Message::binary(m.payload.clone())
        };
        events.push(Event::Message(message));
        // Pings planned after the last fragment go between this message and the next.
        for (_, p) in m.pings.iter().filter(|(after, _)| *after + 1 == fragments) {
            wire.extend(frame(OP_PING, true, 0, Some(key()), p));
            events.push(Event::Message(Message::Ping(p.clone().into())));
            pongs.extend(unmasked(OP_PONG, true, p));
        }
    }
    (wire, events, pongs)
}

fn feed_chunks(conn: &mut Connection, input: &[u8], splits: &[usize]) -> Drained {
    let mut acc = Drained::default();
    let mut start = 0;
    for &end in splits.iter().chain(std::iter::once(&input.len())) {
        conn.handle_bytes(&input[start..end]);
        let d = drain(conn);
        acc.sent.extend(d.sent);
        acc.shutdown |= d.shutdown;
        acc.events.extend(d.events);
        start = end;
    }
    acc
}

fn sorted_splits(len: usize, idx: &[prop::sample::Index]) -> Vec<usize> {
    let mut s: Vec<usize> = idx.iter().map(|i| i.index(len + 1)).collect();
    s.sort_unstable();
    s
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(96))]

    #[test]
    fn message_sequence_is_independent_of_chunking(
        messages in prop::collection::vec(planned(), 0..6),
        splits in prop::collection::vec(any::<prop::sample::Index>(), 0..20),
    ) {
        let (wire, expected_events, expected_pongs) = encode(&messages);
        let mut whole = server();
        let whole = feed_chunks(&mut whole, &wire, &[]);
        prop_assert_eq!(&whole.events, &expected_events);
        prop_assert_eq!(&whole.sent, &expected_pongs);
        prop_assert!(!whole.shutdown);

        let splits = sorted_splits(wire.len(), &splits);
        let mut chunked = server();
        let chunked = feed_chunks(&mut chunked, &wire, &splits);
        prop_assert_eq!(chunked, whole);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    #[test]
    fn small_message_sequence_at_every_split_point(
        messages in prop::collection::vec(planned_sized(".{0,6}", 16, 6), 1..3),
    ) {
        let (wire, expected_events, expected_pongs) = encode(&messages);
        let expected = Drained { sent: expected_pongs, shutdown: false, events: expected_events };
        for split in 0..=wire.len() {
            let mut conn = server();
            prop_assert_eq!(feed_chunks(&mut conn, &wire, &[split]), expected.clone(), "split {}", split);
        }
        let every: Vec<usize> = (1..wire.len()).collect();
        let mut conn = server();
        prop_assert_eq!(feed_chunks(&mut conn, &wire, &every), expected);
    }
}

// ---------------------------------------------------------------------------------------------
// (3) Arbitrary input never panics, and the output is valid for the peer
// ---------------------------------------------------------------------------------------------

const SMALL_LIMIT: usize = 1024;

/// A piece of input: raw noise, or a frame that is well formed but for random fields, so that
/// the connection gets past the header checks often enough to reach deeper states.
#[derive(Debug, Clone)]
enum Segment {
    Noise(Vec<u8>),
    Frame {
        opcode: u8,
        fin: bool,
        rsv: u8,
        /// Masked the wrong way for the receiving role.
        wrong_mask: bool,
        key: [u8; 4],
        payload: Vec<u8>,
    },
    /// A header with a 64-bit length and nothing after it.
    BigHeader {
        b0: u8,
        masked: bool,
        len: u64,
    },
}

impl Segment {
    fn render(&self, receiver: Role) -> Vec<u8> {
        match self {
            Self::Noise(bytes) => bytes.clone(),
            Self::Frame {
                opcode,
                fin,
                rsv,
                wrong_mask,
                key,
                payload,
            } => {
                let masked = (receiver == Role::Server) != *wrong_mask;
                frame(*opcode, *fin, *rsv, masked.then_some(*key), payload)
            }
            Self::BigHeader { b0, masked, len } => {
                raw_header(*b0, masked.then_some(KEY), Len::Long(*len))
            }
        }
    }
}

fn segment() -> impl Strategy<Value = Segment> {
    let noise = prop::collection::vec(any::<u8>(), 0..40).prop_map(Segment::Noise);
    let payload = prop_oneof![
        8 => prop::collection::vec(any::<u8>(), 0..130),
        4 => ".{0,20}".prop_map(String::into_bytes),
        1 => prop::collection::vec(any::<u8>(), 400..700),
    ];
    let framed = (
        prop_oneof![
            20 => prop::sample::select(vec![0u8, 1, 2, 1, 2, 0, 0, 9, 10, 8]),
            1 => 0u8..16,
        ],
        prop::bool::weighted(0.75),
        prop_oneof![30 => Just(0u8), 1 => 1u8..8],
        prop::bool::weighted(0.02),
        any::<[u8; 4]>(),
        payload,
        prop::sample::select(vec![0u16, 1000, 1000, 1001, 1005, 4000]),
    )
        .prop_map(|(opcode, fin, rsv, wrong_mask, key, mut payload, code)| {
            if opcode == OP_CLOSE && code != 0 && payload.len() >= 2 {
                payload[..2].copy_from_slice(&code.to_be_bytes());
                payload.truncate(10);
            }
            Segment::Frame {
                opcode,
                fin,
                rsv,
                wrong_mask,
                key,
                payload,
            }
        });
    let big_header = (any::<u8>(), any::<bool>(), any::<u64>())
        .prop_map(|(b0, masked, len)| Segment::BigHeader { b0, masked, len });
    prop_oneof![30 => framed, 2 => noise, 1 => big_header]
}

/// Checks that `out` is a sequence of frames a peer of `role` accepts.
fn check_output_for_peer(role: Role, out: &[u8]) -> Result<(), TestCaseError> {
    let mut rest = out;
    let mut close_seen = false;
    while !rest.is_empty() {
        let parsed = FrameHeader::parse(rest);
        let Ok(Some((h, used))) = parsed else {
            return Err(TestCaseError::fail(format!(
                "bad frame in output: {parsed:?}"
            )));
        };
        prop_assert!(!close_seen, "frame after close frame");
        prop_assert_eq!(h.mask.is_some(), role == Role::Client, "masking");
        prop_assert!(!h.rsv1 && !h.rsv2 && !h.rsv3);
        // Without calls to send, a connection writes only pongs and close frames.
        prop_assert!(
            matches!(h.opcode, OpCode::Pong | OpCode::Close),
            "{:?}",
            h.opcode
        );
        prop_assert!(h.fin && h.payload_len <= 125);
        let len = h.payload_len as usize;
        prop_assert!(rest.len() >= used + len, "truncated payload");
        let mut payload = rest[used..used + len].to_vec();
        if let Some(key) = h.mask {
            payload
                .iter_mut()
                .enumerate()
                .for_each(|(i, b)| *b ^= key[i % 4]);
        }
        if h.opcode == OpCode::Close {
            close_seen = true;
            prop_assert!(payload.len() != 1);
            if payload.len() >= 2 {
                let code = CloseCode(u16::from_be_bytes([payload[0], payload[1]]));
                prop_assert!(code.is_valid_on_wire(), "{:?}", code);
                prop_assert!(std::str::from_utf8(&payload[2..]).is_ok());
            }
        }
        rest = &rest[used + len..];
    }
    Ok(())
}

fn check_events(events: &[Event]) -> Result<(), TestCaseError> {
    let closed = events.iter().filter(|e| is_closed(e)).count();
    prop_assert!(closed <= 1);
    if closed == 1 {
        prop_assert!(is_closed(events.last().unwrap()), "event after Closed");
    }
    for e in events {
        if let Event::Message(m) = e {
            prop_assert!(m.as_payload().len() <= SMALL_LIMIT);
            if let Message::Ping(p) | Message::Pong(p) = m {
                prop_assert!(p.len() <= 125);
            }
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn arbitrary_input_is_handled_safely(
        segments in prop::collection::vec(segment(), 0..12),
        splits in prop::collection::vec(any::<prop::sample::Index>(), 0..10),
    ) {
        for role in ROLES {
            let input: Vec<u8> = segments.iter().flat_map(|s| s.render(role)).collect();
            let splits = sorted_splits(input.len(), &splits);
            let config = Config::default()
                .max_message_size(Some(SMALL_LIMIT))
                .max_frame_size(Some(SMALL_LIMIT / 2));
            let mut whole = connection(role, config.clone());
            let mut whole_d = feed_chunks(&mut whole, &input, &[]);
            let mut chunked = connection(role, config);
            let mut chunked_d = feed_chunks(&mut chunked, &input, &splits);
            prop_assert_eq!(&chunked_d, &whole_d, "{:?}", role);

            for (conn, d) in [(&mut whole, &mut whole_d), (&mut chunked, &mut chunked_d)] {
                // End of stream always ends the connection, exactly once.
                conn.handle_eof();
                let tail = drain(conn);
                prop_assert!(!(d.shutdown && (tail.shutdown || !tail.sent.is_empty())));
                prop_assert!(tail.events.is_empty() || !d.events.iter().any(is_closed));
                d.sent.extend(tail.sent);
                d.shutdown |= tail.shutdown;
                d.events.extend(tail.events);
                prop_assert!(d.shutdown);
                prop_assert_eq!(d.events.iter().filter(|e| is_closed(e)).count(), 1);
                check_output_for_peer(role, &d.sent)?;
                check_events(&d.events)?;
                // Nothing after the end.
                conn.handle_bytes(&input);
                conn.handle_timeout();
                let mut buf = Vec::new();
                prop_assert_eq!(conn.poll_transmit(&mut buf), Transmit::Idle);
                prop_assert_eq!(conn.poll_event(), None);
            }
        }
    }
}
