//! Micro-benchmarks of sockeye-proto's hot paths, each beside the same operation in
//! tungstenite 0.30 (through tokio-tungstenite's re-export) and fastwebsockets 0.10 where those
//! crates make it public, and beside `memcpy` (`copy_from_slice`) of the same size as a ceiling.
//!
//! | group | what one iteration does |
//! |---|---|
//! | `header_parse/<form>` | parse one frame header: 7-bit, 16-bit and 64-bit lengths, masked and not |
//! | `unmask/<size>/<align>` | XOR a payload in place with a key; the buffer starts `align` bytes past a 64-byte boundary |
//! | `utf8/<text>/<size>` | validate ASCII or mixed multi-byte text |
//! | `encode/<size>` | encode and mask one client frame into a reused buffer |
//! | `connection/<size>` | a server receives 64 masked text messages of `size` bytes, read in 64 KiB pieces, and takes every message |
//!
//! Run with `scripts/bench-micro.sh`, which pins the process to a core and writes
//! `target/bench-micro/summary.md`. `SOCKEYE_BENCH_CLOCK=cpu` reports the thread's CPU time
//! instead of wall time (see `sockeye_bench::Timer`).

use std::hint::black_box;
use std::io::{Cursor, Read, Write};
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use criterion::measurement::WallTime;
use criterion::{criterion_group, criterion_main, BenchmarkGroup, Criterion, Throughput};
use futures_util::FutureExt;
use sockeye_bench::{Rng, Timer};
use sockeye_proto::frame::{apply_mask, apply_mask_bytewise, FrameHeader, OpCode};
use sockeye_proto::{
    Config, Connection, DataKind, Event, Message, Role, Transmit, Utf8State, Utf8Validator,
};
use tokio_tungstenite::tungstenite;

const KEY: [u8; 4] = [0x37, 0xfa, 0x21, 0x3d];
const KIB: usize = 1 << 10;
const MIB: usize = 1 << 20;

/// Runs `f` once per iteration on the clock chosen by `SOCKEYE_BENCH_CLOCK`.
fn run(group: &mut BenchmarkGroup<'_, WallTime>, timer: &mut Timer, id: &str, mut f: impl FnMut()) {
    group.bench_function(id, |b| {
        b.iter_custom(|iters| {
            timer.time(|| {
                for _ in 0..iters {
                    f();
                }
            })
        })
    });
}

fn size_name(size: usize) -> String {
    match size {
        s if s >= MIB && s % MIB == 0 => format!("{}MiB", s / MIB),
        s if s >= KIB && s % KIB == 0 => format!("{}KiB", s / KIB),
        s => format!("{s}B"),
    }
}

fn random_bytes(rng: &mut Rng, len: usize) -> Vec<u8> {
    (0..len).map(|_| rng.next_u64() as u8).collect()
}

/// A buffer of `len` bytes that starts `align` bytes past a 64-byte boundary.
struct Placed {
    storage: Vec<u8>,
    start: usize,
    len: usize,
}

impl Placed {
    fn new(contents: &[u8], align: usize) -> Self {
        let mut storage = vec![0u8; contents.len() + 128];
        let base = storage.as_ptr() as usize;
        let start = (64 - base % 64) % 64 + align;
        storage[start..start + contents.len()].copy_from_slice(contents);
        Self {
            storage,
            start,
            len: contents.len(),
        }
    }

    fn get(&mut self) -> &mut [u8] {
        &mut self.storage[self.start..self.start + self.len]
    }
}

fn header_parse(c: &mut Criterion, timer: &mut Timer) {
    let mut group = c.benchmark_group("header_parse");
    group.throughput(Throughput::Elements(1));
    for (form, len) in [("7bit", 100u64), ("16bit", 1000), ("64bit", 100_000)] {
        for masked in [false, true] {
            let mut header = FrameHeader::new(OpCode::Binary, len);
            header.mask = masked.then_some(KEY);
            let mut wire = Vec::new();
            header.encode(&mut wire);
            let (parsed, used) = FrameHeader::parse(&wire).unwrap().unwrap();
            assert_eq!((parsed, used), (header, wire.len()));
            let (theirs, their_len) =
                tungstenite::protocol::frame::FrameHeader::parse(&mut Cursor::new(&wire))
                    .unwrap()
                    .unwrap();
            assert_eq!((theirs.mask, their_len), (header.mask, len));

            let name = format!("{form}-{}", if masked { "masked" } else { "unmasked" });
            run(&mut group, timer, &format!("{name}/sockeye"), || {
                black_box(FrameHeader::parse(black_box(&wire)).ok());
            });
            run(&mut group, timer, &format!("{name}/tungstenite"), || {
                let mut cursor = Cursor::new(black_box(&wire[..]));
                black_box(tungstenite::protocol::frame::FrameHeader::parse(&mut cursor).ok());
            });
        }
    }
    group.finish();
}

fn unmask(c: &mut Criterion, timer: &mut Timer) {
    let mut group = c.benchmark_group("unmask");
    let mut rng = Rng::new(1);
    for size in [16, 125, KIB, 64 * KIB, MIB, 16 * MIB] {
        let contents = random_bytes(&mut rng, size);
        let mut expected = contents.clone();
        apply_mask_bytewise(&mut expected, KEY, 0);
        group.throughput(Throughput::Bytes(size as u64));
        if size >= MIB {
            group.sample_size(10);
        } else {
            group.sample_size(30);
        }
        // Every misalignment at 64 KiB; aligned and off by one everywhere else.
        let aligns: &[usize] = if size == 64 * KIB {
            &[0, 1, 2, 3, 4, 5, 6, 7]
        } else {
            &[0, 1]
        };
        for &align in aligns {
            let id = format!("{}/align{align}", size_name(size));
            let mut buf = Placed::new(&contents, align);
            apply_mask(buf.get(), KEY, 0);
            assert_eq!(buf.get(), &expected[..], "sockeye {id}");
            run(&mut group, timer, &format!("{id}/sockeye"), || {
                apply_mask(black_box(buf.get()), KEY, 0);
            });
            let mut buf = Placed::new(&contents, align);
            fastwebsockets::unmask(buf.get(), KEY);
            assert_eq!(buf.get(), &expected[..], "fastwebsockets {id}");
            run(&mut group, timer, &format!("{id}/fastwebsockets"), || {
                fastwebsockets::unmask(black_box(buf.get()), KEY);
            });
            let mut dst = Placed::new(&contents, align);
            run(&mut group, timer, &format!("{id}/memcpy"), || {
                dst.get().copy_from_slice(black_box(&contents));
                black_box(dst.get());
            });
            if align == 0 && size <= MIB {
                let mut buf = Placed::new(&contents, align);
                run(&mut group, timer, &format!("{id}/sockeye-bytewise"), || {
                    apply_mask_bytewise(black_box(buf.get()), KEY, 0);
                });
            }
        }
    }
    group.finish();
}

/// Text of exactly `size` bytes: ASCII only, or a mix of 1- to 4-byte characters.
fn text(size: usize, multibyte: bool) -> Vec<u8> {
    let pattern = if multibyte {
        "Grüße, κόσμε! Привет, мир. こんにちは世界 🦀🌍 ünïcödé "
    } else {
        "{\"type\":\"chat\",\"room\":\"general\",\"text\":\"hello, world\",\"seq\":12345} "
    };
    let mut out = String::with_capacity(size + 8);
    while out.len() < size {
        for ch in pattern.chars() {
            if out.len() + ch.len_utf8() > size {
                break;
            }
            out.push(ch);
        }
        if out.len() + 4 > size {
            // Pad with ASCII to the exact size.
            while out.len() < size {
                out.push('.');
            }
        }
    }
    out.into_bytes()
}

fn utf8(c: &mut Criterion, timer: &mut Timer) {
    let mut group = c.benchmark_group("utf8");
    for (kind, multibyte) in [("ascii", false), ("multibyte", true)] {
        for size in [KIB, 64 * KIB, MIB] {
            let data = text(size, multibyte);
            assert_eq!(data.len(), size);
            assert!(std::str::from_utf8(&data).is_ok());
            group.throughput(Throughput::Bytes(size as u64));
            group.sample_size(if size >= MIB { 20 } else { 50 });
            let id = format!("{kind}/{}", size_name(size));
            assert_eq!(Utf8Validator::new().feed(&data), Utf8State::Complete);
            run(&mut group, timer, &format!("{id}/sockeye"), || {
                let mut validator = Utf8Validator::new();
                black_box(validator.feed(black_box(&data)));
            });
            run(&mut group, timer, &format!("{id}/std"), || {
                black_box(std::str::from_utf8(black_box(&data)).is_ok());
            });
            run(&mut group, timer, &format!("{id}/simdutf8-basic"), || {
                black_box(simdutf8::basic::from_utf8(black_box(&data)).is_ok());
            });
            run(&mut group, timer, &format!("{id}/simdutf8-compat"), || {
                black_box(simdutf8::compat::from_utf8(black_box(&data)).is_ok());
            });
            let mut copy = vec![0u8; size];
            run(&mut group, timer, &format!("{id}/memcpy"), || {
                copy.copy_from_slice(black_box(&data));
                black_box(&mut copy);
            });
        }
    }
    group.finish();
}

fn encode(c: &mut Criterion, timer: &mut Timer) {
    let mut group = c.benchmark_group("encode");
    let mut rng = Rng::new(2);
    for size in [20, KIB, 64 * KIB] {
        let payload = random_bytes(&mut rng, size);
        group.throughput(Throughput::Bytes(size as u64));
        let id = size_name(size);

        // The reference frame: sockeye's header encoder and the byte-wise mask.
        let mut header = FrameHeader::new(OpCode::Binary, size as u64);
        header.mask = Some(KEY);
        let mut expected = Vec::new();
        header.encode(&mut expected);
        let start = expected.len();
        expected.extend_from_slice(&payload);
        apply_mask_bytewise(&mut expected[start..], KEY, 0);

        let mut client = Connection::new(Role::Client, Config::default(), Box::new(|| KEY));
        let mut out = Vec::new();
        client.send(DataKind::Binary, &payload).unwrap();
        assert_eq!(client.poll_transmit(&mut out), Transmit::Bytes);
        assert_eq!(out, expected, "sockeye Connection {id}");
        run(&mut group, timer, &format!("{id}/sockeye"), || {
            out.clear();
            client.send(DataKind::Binary, black_box(&payload)).unwrap();
            let _ = client.poll_transmit(&mut out);
            black_box(&mut out);
        });

        let mut frame_out = Vec::new();
        let write_frame = |out: &mut Vec<u8>, payload: &[u8]| {
            out.clear();
            let mut header = FrameHeader::new(OpCode::Binary, payload.len() as u64);
            header.mask = Some(KEY);
            header.encode(out);
            let start = out.len();
            out.extend_from_slice(payload);
            apply_mask(&mut out[start..], KEY, 0);
        };
        write_frame(&mut frame_out, &payload);
        assert_eq!(frame_out, expected, "sockeye frame {id}");
        run(&mut group, timer, &format!("{id}/sockeye-frame"), || {
            write_frame(&mut frame_out, black_box(&payload));
            black_box(&mut frame_out);
        });

        // tungstenite: what `WebSocket::write` does with a binary message (Bytes payload,
        // masked copy in `Frame::format`).
        let tungstenite_frame = |payload: &[u8], out: &mut Vec<u8>| {
            out.clear();
            let mut frame = tungstenite::protocol::frame::Frame::message(
                bytes::Bytes::copy_from_slice(payload),
                tungstenite::protocol::frame::coding::OpCode::Data(
                    tungstenite::protocol::frame::coding::Data::Binary,
                ),
                true,
            );
            frame.header_mut().mask = Some(KEY);
            frame.format(out).unwrap();
        };
        let mut t_out = Vec::new();
        tungstenite_frame(&payload, &mut t_out);
        assert_eq!(t_out, expected, "tungstenite {id}");
        run(&mut group, timer, &format!("{id}/tungstenite"), || {
            tungstenite_frame(black_box(&payload), &mut t_out);
            black_box(&mut t_out);
        });

        // fastwebsockets: what `WebSocketWrite::write_frame` does as a client (mask the
        // payload, then `Frame::write` into its buffer).
        let fws_frame = |payload: &[u8], out: &mut Vec<u8>| -> usize {
            let mut frame = fastwebsockets::Frame::new(
                true,
                fastwebsockets::OpCode::Binary,
                Some(KEY),
                fastwebsockets::Payload::Borrowed(payload),
            );
            frame.mask();
            frame.write(out).len()
        };
        let mut f_out = Vec::new();
        let len = fws_frame(&payload, &mut f_out);
        assert_eq!(f_out[..len], expected[..], "fastwebsockets {id}");
        run(&mut group, timer, &format!("{id}/fastwebsockets"), || {
            black_box(fws_frame(black_box(&payload), &mut f_out));
        });

        let mut copy = Vec::new();
        run(&mut group, timer, &format!("{id}/memcpy"), || {
            copy.clear();
            copy.extend_from_slice(black_box(&payload));
            black_box(&mut copy);
        });
    }
    group.finish();
}

/// Messages per iteration of the `connection` group.
const MESSAGES: usize = 64;
/// Bytes handed to the connection per read, as `WebSocketStream`'s default read buffer.
const READ_SIZE: usize = 64 * KIB;

/// `MESSAGES` masked text frames of `size` bytes each, as a client would send them.
fn client_wire(size: usize) -> (Vec<u8>, Vec<u8>) {
    let text = text(size, false);
    let mut rng = Rng::new(3);
    let mut wire = Vec::new();
    for _ in 0..MESSAGES {
        let key = (rng.next_u64() as u32).to_ne_bytes();
        let mut header = FrameHeader::new(OpCode::Text, size as u64);
        header.mask = Some(key);
        header.encode(&mut wire);
        let start = wire.len();
        wire.extend_from_slice(&text);
        apply_mask(&mut wire[start..], key, 0);
    }
    (wire, text)
}

/// An endless transport that replays `wire` (a whole number of frames) on every read and
/// discards writes: for tungstenite (`Read + Write`) and fastwebsockets (tokio's traits).
struct Replay {
    wire: Vec<u8>,
    position: usize,
}

impl Replay {
    fn new(wire: Vec<u8>) -> Self {
        Self { wire, position: 0 }
    }

    fn fill(&mut self, buf: &mut [u8]) -> usize {
        let available = &self.wire[self.position..];
        let n = available.len().min(buf.len()).min(READ_SIZE);
        buf[..n].copy_from_slice(&available[..n]);
        self.position = (self.position + n) % self.wire.len();
        n
    }
}

impl Read for Replay {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        Ok(self.fill(buf))
    }
}

impl Write for Replay {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl tokio::io::AsyncRead for Replay {
    fn poll_read(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        let n = this.fill(buf.initialize_unfilled());
        buf.advance(n);
        Poll::Ready(Ok(()))
    }
}

impl tokio::io::AsyncWrite for Replay {
    fn poll_write(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Poll::Ready(Ok(buf.len()))
    }
    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

fn connection(c: &mut Criterion, timer: &mut Timer) {
    let mut group = c.benchmark_group("connection");
    for size in [20, KIB, 64 * KIB] {
        let (wire, text) = client_wire(size);
        group.throughput(Throughput::Elements(MESSAGES as u64));
        group.sample_size(if size >= 64 * KIB { 20 } else { 50 });
        let id = size_name(size);

        let mut server = Connection::new(Role::Server, Config::default(), Box::new(|| [0; 4]));
        let receive_all = |server: &mut Connection| -> usize {
            let mut received = 0;
            for read in wire.chunks(READ_SIZE) {
                server.handle_bytes(read);
                while let Some(event) = server.poll_event() {
                    received += 1;
                    black_box(event);
                }
            }
            received
        };
        {
            // Check once what the loop below only counts.
            server.handle_bytes(&wire);
            for _ in 0..MESSAGES {
                match server.poll_event() {
                    Some(Event::Message(Message::Text(t))) => assert_eq!(t.as_bytes(), &text[..]),
                    other => panic!("sockeye {id}: {other:?}"),
                }
            }
            assert_eq!(server.poll_event(), None);
        }
        run(&mut group, timer, &format!("{id}/sockeye"), || {
            assert_eq!(receive_all(&mut server), MESSAGES);
        });

        let mut socket = tungstenite::WebSocket::from_raw_socket(
            Replay::new(wire.clone()),
            tungstenite::protocol::Role::Server,
            None,
        );
        match socket.read().unwrap() {
            tungstenite::Message::Text(t) => assert_eq!(t.as_bytes(), &text[..]),
            other => panic!("tungstenite {id}: {other:?}"),
        }
        for _ in 1..MESSAGES {
            socket.read().unwrap();
        }
        run(&mut group, timer, &format!("{id}/tungstenite"), || {
            for _ in 0..MESSAGES {
                black_box(socket.read().unwrap());
            }
        });

        let mut ws = fastwebsockets::WebSocket::after_handshake(
            Replay::new(wire.clone()),
            fastwebsockets::Role::Server,
        );
        ws.set_max_message_size(16 * MIB);
        {
            let frame = ws.read_frame().now_or_never().unwrap().unwrap();
            assert_eq!(frame.opcode, fastwebsockets::OpCode::Text);
            assert_eq!(&frame.payload[..], &text[..]);
        }
        for _ in 1..MESSAGES {
            ws.read_frame().now_or_never().unwrap().unwrap();
        }
        run(&mut group, timer, &format!("{id}/fastwebsockets"), || {
            for _ in 0..MESSAGES {
                let frame = ws.read_frame().now_or_never().unwrap().unwrap();
                black_box(frame.payload.len());
            }
        });
    }
    group.finish();
}

fn benches(c: &mut Criterion) {
    let mut timer = Timer::from_env();
    header_parse(c, &mut timer);
    timer.report("header_parse");
    unmask(c, &mut timer);
    timer.report("unmask");
    utf8(c, &mut timer);
    timer.report("utf8");
    encode(c, &mut timer);
    timer.report("encode");
    connection(c, &mut timer);
    timer.report("connection");
}

criterion_group! {
    name = micro;
    config = Criterion::default()
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_secs(1));
    targets = benches
}
criterion_main!(micro);
