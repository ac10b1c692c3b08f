//! Raw DEFLATE as permessage-deflate uses it: one compressor and one decompressor per
//! direction kept for the whole connection (context takeover), a sync flush after every
//! message, the `00 00 ff ff` trailer removed before "sending" and restored before inflating,
//! level 6, a 32 KiB window. Two backends:
//!
//! - `flate2-zlib-rs`: flate2 1.1 with the zlib-rs backend, as sockeye-proto uses it;
//! - `miniz_oxide`: the `miniz_oxide` crate's streaming API, used directly.
//!
//! For each message size (1 KiB JSON messages; 64 KiB JSON sync batches):
//!
//! - `compress/<backend>`: compress the next message;
//! - `decompress/<backend>`: inflate the next message of one stream made once by zlib-rs,
//!   the same input for both backends;
//! - `roundtrip/<backend>`: compress the next message and inflate the result with the same
//!   backend, as an echo through two peers of that backend costs.
//!
//! Throughput is in bytes of uncompressed message. Both backends write into the same kind of
//! preallocated buffer, so allocation is not measured. Before measuring, the compressed size per
//! message is printed on stderr (lines starting with `size:`). `SOCKEYE_BENCH_CLOCK=cpu` reports
//! the thread's CPU time instead of wall time (see `sockeye_bench::Clock`).

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress};
use miniz_oxide::deflate::core::CompressorOxide;
use miniz_oxide::inflate::stream::InflateState;
use miniz_oxide::{DataFormat, MZFlush};
use sockeye_bench::Timer;
use std::hint::black_box;

const TRAILER: [u8; 4] = [0x00, 0x00, 0xFF, 0xFF];
const LEVEL: u8 = 6;
const SEED: u64 = 0xDEF1_A7E5;

/// One end of a compressed connection: compresses into `wire`, inflates into `out`.
trait Codec {
    /// Compresses `message` into the wire buffer (sync flush, trailer removed); returns its
    /// length.
    fn compress(&mut self, message: &[u8]) -> usize;
    /// The compressed bytes of the last `compress`.
    fn wire(&self) -> &[u8];
    /// Inflates `wire` followed by the trailer; returns the decompressed bytes.
    fn decompress(&mut self, wire: &[u8]) -> &[u8];
}

/// Output buffers large enough never to fill: sized once, reused for every message.
struct Buffers {
    wire: Vec<u8>,
    wire_len: usize,
    out: Vec<u8>,
}

impl Buffers {
    fn new(max_message: usize) -> Self {
        Self {
            wire: vec![0; max_message + max_message / 8 + 1024],
            wire_len: 0,
            out: vec![0; max_message + 1024],
        }
    }

    fn strip_trailer(&mut self, len: usize) -> usize {
        let len = if self.wire[..len].ends_with(&TRAILER) {
            len - TRAILER.len()
        } else {
            len
        };
        self.wire_len = len;
        len
    }
}

struct Flate2 {
    compress: Compress,
    decompress: Decompress,
    buf: Buffers,
}

impl Flate2 {
    fn new(max_message: usize) -> Self {
        Self {
            compress: Compress::new_with_window_bits(Compression::new(LEVEL.into()), false, 15),
            decompress: Decompress::new_with_window_bits(false, 15),
            buf: Buffers::new(max_message),
        }
    }
}

impl Codec for Flate2 {
    fn compress(&mut self, message: &[u8]) -> usize {
        let (mut consumed, mut len) = (0, 0);
        loop {
            let (in0, out0) = (self.compress.total_in(), self.compress.total_out());
            self.compress
                .compress(
                    &message[consumed..],
                    &mut self.buf.wire[len..],
                    FlushCompress::Sync,
                )
                .expect("deflate");
            consumed += (self.compress.total_in() - in0) as usize;
            len += (self.compress.total_out() - out0) as usize;
            // The sync flush is complete once output space is left over.
            if consumed == message.len() && len < self.buf.wire.len() {
                break;
            }
        }
        self.buf.strip_trailer(len)
    }

    fn wire(&self) -> &[u8] {
        &self.buf.wire[..self.buf.wire_len]
    }

    fn decompress(&mut self, wire: &[u8]) -> &[u8] {
        let mut len = 0;
        for mut input in [wire, &TRAILER[..]] {
            while !input.is_empty() {
                let (in0, out0) = (self.decompress.total_in(), self.decompress.total_out());
                self.decompress
                    .decompress(input, &mut self.buf.out[len..], FlushDecompress::None)
                    .expect("inflate");
                let consumed = (self.decompress.total_in() - in0) as usize;
                let produced = (self.decompress.total_out() - out0) as usize;
                assert!(consumed + produced > 0, "inflate made no progress");
                input = &input[consumed..];
                len += produced;
            }
        }
        &self.buf.out[..len]
    }
}

struct Miniz {
    compress: Box<CompressorOxide>,
    decompress: Box<InflateState>,
    buf: Buffers,
}

impl Miniz {
    fn new(max_message: usize) -> Self {
        let mut compress = Box::<CompressorOxide>::default();
        compress.set_format_and_level(DataFormat::Raw, LEVEL);
        Self {
            compress,
            decompress: InflateState::new_boxed(DataFormat::Raw),
            buf: Buffers::new(max_message),
        }
    }
}

impl Codec for Miniz {
    fn compress(&mut self, message: &[u8]) -> usize {
        let (mut consumed, mut len) = (0, 0);
        loop {
            let result = miniz_oxide::deflate::stream::deflate(
                &mut self.compress,
                &message[consumed..],
                &mut self.buf.wire[len..],
                MZFlush::Sync,
            );
            result.status.expect("deflate");
            consumed += result.bytes_consumed;
            len += result.bytes_written;
            if consumed == message.len() && len < self.buf.wire.len() {
                break;
            }
        }
        self.buf.strip_trailer(len)
    }

    fn wire(&self) -> &[u8] {
        &self.buf.wire[..self.buf.wire_len]
    }

    fn decompress(&mut self, wire: &[u8]) -> &[u8] {
        let mut len = 0;
        for mut input in [wire, &TRAILER[..]] {
            while !input.is_empty() {
                let result = miniz_oxide::inflate::stream::inflate(
                    &mut self.decompress,
                    input,
                    &mut self.buf.out[len..],
                    MZFlush::None,
                );
                result.status.expect("inflate");
                let (consumed, produced) = (result.bytes_consumed, result.bytes_written);
                assert!(consumed + produced > 0, "inflate made no progress");
                input = &input[consumed..];
                len += produced;
            }
        }
        &self.buf.out[..len]
    }
}

/// Compresses every message in order with `codec` and checks the round trip; returns the
/// compressed stream (one entry per message) and prints its size.
fn compress_all(
    name: &str,
    label: &str,
    codec: &mut impl Codec,
    messages: &[String],
) -> Vec<Vec<u8>> {
    let mut total = 0;
    let stream: Vec<Vec<u8>> = messages
        .iter()
        .map(|m| {
            codec.compress(m.as_bytes());
            let wire = codec.wire().to_vec();
            total += wire.len();
            assert_eq!(codec.decompress(&wire), m.as_bytes(), "round trip");
            wire
        })
        .collect();
    let input: usize = messages.iter().map(String::len).sum();
    eprintln!(
        "size: {label} {name}: {} B -> {:.0} B per message ({:.1}% of the input)",
        input / messages.len(),
        total as f64 / messages.len() as f64,
        100.0 * total as f64 / input as f64,
    );
    stream
}

fn bench_size(c: &mut Criterion, label: &str, messages: &[String]) {
    let size = messages[0].len();
    // The shared input of `decompress`: zlib-rs's stream, checked to inflate with miniz too.
    let stream = compress_all("flate2-zlib-rs", label, &mut Flate2::new(size), messages);
    compress_all("miniz_oxide", label, &mut Miniz::new(size), messages);
    let mut miniz = Miniz::new(size);
    for (wire, message) in stream.iter().zip(messages) {
        assert_eq!(miniz.decompress(wire), message.as_bytes(), "cross inflate");
    }

    let mut group = c.benchmark_group(format!("backends_{label}"));
    group.throughput(Throughput::Bytes(size as u64));

    fn bench<C: Codec>(
        group: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>,
        name: &str,
        messages: &[String],
        stream: &[Vec<u8>],
        new: impl Fn() -> C,
    ) {
        let mut timer = Timer::from_env();
        let mut codec = new();
        let mut i = 0;
        group.bench_function(format!("compress/{name}"), |b| {
            b.iter_custom(|iters| {
                timer.time(|| {
                    for _ in 0..iters {
                        black_box(codec.compress(messages[i % messages.len()].as_bytes()));
                        i += 1;
                    }
                })
            });
        });
        timer.report(&format!("compress/{name}"));
        // Cycling through the stream is valid: in the first pass nothing preceded message 0,
        // so no back-reference reaches before it in later passes either.
        let mut codec = new();
        let mut i = 0;
        group.bench_function(format!("decompress/{name}"), |b| {
            b.iter_custom(|iters| {
                timer.time(|| {
                    for _ in 0..iters {
                        black_box(codec.decompress(&stream[i % stream.len()]).len());
                        i += 1;
                    }
                })
            });
        });
        timer.report(&format!("decompress/{name}"));
        let (mut sender, mut receiver) = (new(), new());
        let mut i = 0;
        group.bench_function(format!("roundtrip/{name}"), |b| {
            b.iter_custom(|iters| {
                timer.time(|| {
                    for _ in 0..iters {
                        let message = messages[i % messages.len()].as_bytes();
                        let len = sender.compress(message);
                        let out = receiver.decompress(&sender.wire()[..len]).len();
                        debug_assert_eq!(out, message.len());
                        black_box(out);
                        i += 1;
                    }
                })
            });
        });
        timer.report(&format!("roundtrip/{name}"));
    }

    bench(&mut group, "flate2-zlib-rs", messages, &stream, || {
        Flate2::new(size)
    });
    bench(&mut group, "miniz_oxide", messages, &stream, || {
        Miniz::new(size)
    });
    group.finish();
}

fn backends(c: &mut Criterion) {
    bench_size(c, "1KiB", &sockeye_bench::json_messages(1_000, 1024, SEED));
    bench_size(c, "64KiB", &sockeye_bench::json_batches(32, 64 << 10, SEED));
}

criterion_group!(benches, backends);
criterion_main!(benches);
