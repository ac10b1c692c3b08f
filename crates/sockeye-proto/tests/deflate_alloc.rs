//! Memory bound under permessage-deflate (decompression bombs, RFC 6455 §10.4): a compressed
//! message that inflates far past `max_message_size` fails the connection with 1009 while the
//! heap stays within a small multiple of the limit, never near the inflated size.
//!
//! A counting global allocator tracks the bytes currently allocated and their peak. This file
//! holds a single `#[test]` so that no other test allocates concurrently.
//!
//! Valid messages are handed over in chunks that never span two messages. `handle_bytes`
//! inflates every complete message in its input before any is taken, so one read holding many
//! small compressed messages queues all of them inflated: up to about 1032 times the bytes of
//! the read (8 KiB of ~1 KB messages at a 1 MiB limit peaks near 12 MiB). That bound is set by
//! the read size, not by `max_message_size`, and is not what this file checks.

mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

use common::*;
use sockeye_proto::deflate::{DeflateConfig, DeflateParams};
use sockeye_proto::{CloseCode, Config, Event, ProtocolError, Role, Transmit};

struct Counting;

static CURRENT: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

fn grew(bytes: usize) {
    let now = CURRENT.fetch_add(bytes, Ordering::SeqCst) + bytes;
    PEAK.fetch_max(now, Ordering::SeqCst);
}

fn shrank(bytes: usize) {
    CURRENT.fetch_sub(bytes, Ordering::SeqCst);
}

// SAFETY: every method forwards its arguments unchanged to `System`, which implements the
// `GlobalAlloc` contract; the bookkeeping only updates atomics and never allocates.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: the caller upholds `alloc`'s contract for `layout`; we pass it on as is.
        let ptr = unsafe { System.alloc(layout) };
        if !ptr.is_null() {
            grew(layout.size());
        }
        ptr
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: as for `alloc`.
        let ptr = unsafe { System.alloc_zeroed(layout) };
        if !ptr.is_null() {
            grew(layout.size());
        }
        ptr
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` was returned by this allocator, i.e. by `System`, for `layout`.
        unsafe { System.dealloc(ptr, layout) };
        shrank(layout.size());
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: `ptr` was returned by `System` for `layout`, and the caller upholds
        // `realloc`'s contract for `new_size`.
        let new = unsafe { System.realloc(ptr, layout, new_size) };
        if !new.is_null() {
            // Count the old and new blocks as briefly coexisting, as they do when moved.
            grew(new_size);
            shrank(layout.size());
        }
        new
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

const MIB: usize = 1 << 20;
const LIMIT: usize = MIB;
/// Allowed growth: the message buffer grows by doubling, so it may reach twice the limit, and
/// while it moves the old block coexists with the new one (3x); plus zlib's state (about 300 KiB
/// to compress with a 32 KiB window, 40 KiB to inflate) and read buffers.
const BOUND: usize = 3 * LIMIT + MIB;
/// Largest read handed to the connection in one call, as a transport's read buffer would be.
const CHUNK: usize = 8 * 1024;

/// Peak growth of the heap while `f` runs, in bytes.
fn peak_growth(f: impl FnOnce()) -> usize {
    let base = CURRENT.load(Ordering::SeqCst);
    PEAK.store(base, Ordering::SeqCst);
    f();
    PEAK.load(Ordering::SeqCst).saturating_sub(base)
}

/// What a connection reported, kept small.
#[derive(Debug, Default, PartialEq, Eq)]
struct Outcome {
    largest_message: usize,
    messages: usize,
    error: Option<ProtocolError>,
    close_code: Option<CloseCode>,
}

/// Creates a deflating connection of `role` with the message limit, feeds it `chunks` one by
/// one, draining after every chunk as a transport driver does, and drops what it gets.
fn run(role: Role, chunks: &[&[u8]]) -> Outcome {
    let mut conn = deflate_connection(
        role,
        Config::default().max_message_size(Some(LIMIT)),
        DeflateParams::new(),
        &DeflateConfig::default(),
    );
    let mut outcome = Outcome::default();
    let mut out = Vec::with_capacity(256);
    for chunk in chunks {
        conn.handle_bytes(chunk);
        loop {
            let mut progress = false;
            while conn.poll_transmit(&mut out) != Transmit::Idle {
                out.clear();
                progress = true;
            }
            while let Some(event) = conn.poll_event() {
                progress = true;
                match event {
                    Event::Message(m) if m.is_data() => {
                        outcome.messages += 1;
                        outcome.largest_message = outcome.largest_message.max(m.as_payload().len());
                    }
                    Event::Message(_) => {}
                    Event::Closed(c) => {
                        outcome.close_code = Some(c.code);
                        outcome.error = c.error;
                    }
                }
            }
            if !progress {
                break;
            }
        }
    }
    outcome
}

#[track_caller]
fn check(name: &str, role: Role, chunks: &[&[u8]], expected: &Outcome) {
    assert!(chunks.iter().all(|c| c.len() <= CHUNK));
    let mut outcome = Outcome::default();
    let growth = peak_growth(|| outcome = run(role, chunks));
    assert!(
        growth <= BOUND,
        "{name} ({role:?}): peak heap growth {growth} bytes > bound {BOUND}"
    );
    assert_eq!(&outcome, expected, "{name} ({role:?})");
}

/// `payload` as one compressed message from the peer of `receiver`, in frames of at most
/// `frame_size` bytes.
fn message(receiver: Role, payload: &[u8], frame_size: usize) -> Vec<u8> {
    let mut input = Vec::new();
    let pieces: Vec<&[u8]> = payload.chunks(frame_size).collect();
    for (i, piece) in pieces.iter().enumerate() {
        let fin = i + 1 == pieces.len();
        let (opcode, rsv) = if i == 0 {
            (OP_BINARY, RSV1)
        } else {
            (OP_CONT, 0)
        };
        input.extend(frame(opcode, fin, rsv, mask_for(receiver), piece));
    }
    input
}

#[test]
fn inflated_size_is_bounded_by_the_message_limit() {
    // The counter itself works: a mebibyte shows up.
    let growth = peak_growth(|| {
        let v = vec![1u8; MIB];
        assert_eq!(v.len(), MIB);
    });
    assert!(growth >= MIB, "allocator not counting: {growth}");

    let too_big = Outcome {
        error: Some(ProtocolError::MessageTooBig { limit: LIMIT }),
        close_code: Some(CloseCode::MESSAGE_TOO_BIG),
        ..Outcome::default()
    };
    // ~100 KB inflating to 100 MiB of zeros (RFC 1951 by hand: 1032 bytes per input byte).
    let bomb = zero_bomb(100 * MIB / 258);
    assert!(bomb.len() < 110_000);
    // A message exactly at the limit, and a compressible (non-bomb) one just over it.
    let at_limit = zero_bomb((LIMIT - 1) / 258);
    let at_limit_len = 1 + 258 * ((LIMIT - 1) / 258);
    let text: Vec<u8> = b"permessage-deflate ".repeat(LIMIT / 19 + 1);
    let over = compress_message(&mut compressor(15), &text[..LIMIT + 1]);

    for role in ROLES {
        let one = message(role, &bomb, usize::MAX);
        check("bomb in one frame", role, &chunked(&one), &too_big);
        let small_frames = message(role, &bomb, 1024);
        check(
            "bomb in 1 KB frames",
            role,
            &chunked(&small_frames),
            &too_big,
        );
        // Many bombs back to back: the first fails the connection, the rest is discarded.
        let mut many = Vec::new();
        for _ in 0..20 {
            many.extend(message(role, &bomb, 64 * 1024));
        }
        check("20 bombs", role, &chunked(&many), &too_big);
        let over = message(role, &over, usize::MAX);
        check("text one byte over", role, &chunked(&over), &too_big);
        // Valid messages at the limit, one after another: each is freed once delivered. No
        // chunk spans two messages (see the module comment).
        let valid = message(role, &at_limit, 4096);
        let chunks: Vec<&[u8]> = (0..5).flat_map(|_| chunked(&valid)).collect();
        check(
            "messages at the limit",
            role,
            &chunks,
            &Outcome {
                largest_message: at_limit_len,
                messages: 5,
                ..Outcome::default()
            },
        );
    }
}

fn chunked(input: &[u8]) -> Vec<&[u8]> {
    input.chunks(CHUNK).collect()
}
