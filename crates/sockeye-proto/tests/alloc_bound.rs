//! Memory bound (RFC 6455 §10.4): whatever a peer sends, a server connection's heap use stays
//! proportional to its `max_message_size`, never to declared lengths or to the amount of input.
//!
//! A counting global allocator tracks the bytes currently allocated and their peak. This file
//! holds a single `#[test]` so that no other test allocates concurrently.

mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

use common::*;
use sockeye_proto::{CloseCode, Config, Connection, Event, Message, Role, Transmit};

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

const LIMIT: usize = 64 * 1024;
/// Allowed growth: buffers that double may reach twice the limit, plus the reassembled message
/// handed out, plus small bookkeeping.
const BOUND: usize = 4 * LIMIT + 16 * 1024;
/// Largest read handed to the connection in one call, as a transport's read buffer would be.
const MAX_CHUNK: usize = 8 * 1024;

/// Peak growth of the heap while `f` runs, in bytes.
fn peak_growth(f: impl FnOnce()) -> usize {
    let base = CURRENT.load(Ordering::SeqCst);
    PEAK.store(base, Ordering::SeqCst);
    f();
    PEAK.load(Ordering::SeqCst).saturating_sub(base)
}

/// xorshift64*: deterministic noise without a dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn bytes(&mut self, len: usize) -> Vec<u8> {
        (0..len).map(|_| self.next() as u8).collect()
    }
}

/// What the connection reported, kept small: the counts of data messages and the close code.
#[derive(Debug, Default, PartialEq, Eq)]
struct Outcome {
    data_messages: usize,
    largest_message: usize,
    pings: usize,
    closed: Option<CloseCode>,
}

/// Feeds `input` to a fresh server in chunks of sizes from `chunks` (cycled), draining output
/// and events after every chunk as a transport driver does, and dropping what it gets.
fn run(input: &[u8], chunks: &[usize]) -> Outcome {
    let mut conn = Connection::new(
        Role::Server,
        Config::default()
            .max_message_size(Some(LIMIT))
            .max_frame_size(Some(LIMIT)),
        fixed_mask(),
    );
    let mut outcome = Outcome::default();
    let mut out = Vec::with_capacity(256);
    let mut pos = 0;
    let mut i = 0;
    while pos < input.len() {
        let end = (pos + chunks[i % chunks.len()]).min(input.len());
        i += 1;
        conn.handle_bytes(&input[pos..end]);
        pos = end;
        loop {
            let mut progress = false;
            while conn.poll_transmit(&mut out) != Transmit::Idle {
                out.clear();
                progress = true;
            }
            while let Some(event) = conn.poll_event() {
                progress = true;
                match event {
                    Event::Message(Message::Ping(_)) => outcome.pings += 1,
                    Event::Message(m) if m.is_data() => {
                        outcome.data_messages += 1;
                        outcome.largest_message = outcome.largest_message.max(m.as_payload().len());
                    }
                    Event::Message(_) => {}
                    Event::Closed(c) => outcome.closed = Some(c.code),
                }
            }
            if !progress {
                break;
            }
        }
    }
    outcome
}

/// Runs one scenario under the allocation counter and checks the bound and the outcome.
#[track_caller]
fn check(name: &str, input: &[u8], chunks: &[usize], expect: impl Fn(&Outcome) -> bool) {
    assert!(chunks.iter().all(|&c| c > 0 && c <= MAX_CHUNK));
    let mut outcome = Outcome::default();
    let growth = peak_growth(|| outcome = run(input, chunks));
    assert!(
        growth <= BOUND,
        "{name}: peak heap growth {growth} bytes > bound {BOUND} (input {} bytes)",
        input.len()
    );
    assert!(expect(&outcome), "{name}: unexpected outcome {outcome:?}");
}

fn masked_header(b0: u8, len: u64) -> Vec<u8> {
    let form = if len < 126 {
        Len::Short(len as u8)
    } else if len <= 0xFFFF {
        Len::Medium(len as u16)
    } else {
        Len::Long(len)
    };
    raw_header(b0, Some(KEY), form)
}

#[test]
fn server_heap_stays_bounded_by_the_message_limit() {
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let too_big = Some(CloseCode::MESSAGE_TOO_BIG);

    // The counter itself works: a megabyte shows up.
    let growth = peak_growth(|| {
        let v = vec![1u8; 1 << 20];
        assert_eq!(v.len(), 1 << 20);
    });
    assert!(growth >= 1 << 20, "allocator not counting: {growth}");

    // Headers declaring huge lengths, followed by lots of data: refused from the header.
    for len in [
        1u64 << 62,
        (1 << 63) - 1,
        u64::from(u32::MAX),
        LIMIT as u64 + 1,
    ] {
        for b0 in [0x82u8, 0x81, 0x02] {
            let mut input = masked_header(b0, len);
            input.extend(rng.bytes(256 * 1024));
            check("huge declared length", &input, &[MAX_CHUNK], |o| {
                o.closed == too_big && o.data_messages == 0
            });
        }
    }

    // A message exactly at the limit, in odd chunk sizes, then one that is one byte over.
    for (len, ok) in [(LIMIT, true), (LIMIT + 1, false)] {
        let payload = rng.bytes(len);
        let input = masked(OP_BINARY, true, &payload);
        check("message at the limit", &input, &[1, 7, 4093, 8192], |o| {
            if ok {
                o.data_messages == 1 && o.largest_message == LIMIT && o.closed.is_none()
            } else {
                o.closed == too_big
            }
        });
    }

    // A text message at the limit, multi-byte characters, in small fragments.
    let text = "κόσμε€𝄞".repeat(LIMIT / "κόσμε€𝄞".len());
    let mut input = Vec::new();
    for (i, piece) in text.as_bytes().chunks(1000).enumerate() {
        let op = if i == 0 { OP_TEXT } else { OP_CONT };
        input.extend(masked(op, false, piece));
    }
    input.extend(masked(OP_CONT, true, b""));
    check("fragmented text", &input, &[MAX_CHUNK, 3], |o| {
        o.data_messages == 1 && o.largest_message == text.len()
    });

    // Many tiny fragments: the message grows past the limit and is refused.
    let mut input = masked(OP_BINARY, false, b"");
    for _ in 0..20_000 {
        input.extend(masked(OP_CONT, false, b"1234567"));
    }
    check("many fragments", &input, &[MAX_CHUNK], |o| {
        o.closed == too_big
    });

    // A message just under the limit, then a continuation declaring 2^62 bytes.
    let mut input = masked(OP_BINARY, false, &rng.bytes(LIMIT - 1));
    input.extend(masked_header(0x80, 1 << 62));
    input.extend(rng.bytes(64 * 1024));
    check("huge continuation", &input, &[MAX_CHUNK], |o| {
        o.closed == too_big
    });

    // Many whole messages and pings: each is freed once delivered.
    let mut input = Vec::new();
    for i in 0..5_000 {
        let len = rng.below(2000);
        input.extend(masked(OP_BINARY, true, &rng.bytes(len)));
        if i % 3 == 0 {
            input.extend(masked(OP_PING, true, &rng.bytes(125)));
        }
    }
    check("many messages", &input, &[MAX_CHUNK, 1000], |o| {
        o.data_messages == 5_000 && o.pings == 1_667 && o.closed.is_none()
    });

    // Messages at the limit back to back.
    let mut input = Vec::new();
    for _ in 0..20 {
        input.extend(masked(OP_BINARY, true, &rng.bytes(LIMIT)));
    }
    check("limit-sized messages", &input, &[MAX_CHUNK], |o| {
        o.data_messages == 20
    });

    // Long random byte streams, alone or behind a valid header that makes them a payload.
    for round in 0..40 {
        let mut input = Vec::new();
        if round % 2 == 0 {
            input.extend(masked_header(0x82, LIMIT as u64));
        }
        input.extend(rng.bytes(512 * 1024));
        let chunks: Vec<usize> = (0..16).map(|_| 1 + rng.below(MAX_CHUNK)).collect();
        check("random stream", &input, &chunks, |_| true);
    }
}
