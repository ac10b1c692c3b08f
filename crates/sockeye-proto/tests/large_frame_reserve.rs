//! A large frame's announced length is reserved when its first payload bytes arrive (issue 7),
//! so a peer's header alone asks for up to `max_message_size` bytes. That request must neither
//! abort the process when the allocator refuses it nor make the memory resident.
//!
//! A global allocator forwards to `System`, refusing (on the thread that asks for it) any
//! single allocation from a given size on, and counting the bytes handed out.

mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::atomic::{AtomicUsize, Ordering};

use common::*;
use sockeye_proto::{CloseCode, Config, Event, Message, Role};

struct Refusing;

thread_local! {
    /// Allocations of at least this many bytes fail on this thread. `const`-initialised
    /// without a destructor, so reading it never allocates.
    static REFUSE_FROM: Cell<usize> = const { Cell::new(usize::MAX) };
}

/// Bytes ever handed out (never decreased): shows that a reservation was made.
static ALLOCATED: AtomicUsize = AtomicUsize::new(0);

fn refused(size: usize) -> bool {
    REFUSE_FROM
        .try_with(|limit| size >= limit.get())
        .unwrap_or(false)
}

// SAFETY: every method either returns null (a refusal, which `GlobalAlloc` allows) or forwards
// its arguments unchanged to `System`, which implements the contract; the bookkeeping touches a
// thread-local `Cell` and an atomic and never allocates.
unsafe impl GlobalAlloc for Refusing {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if refused(layout.size()) {
            return std::ptr::null_mut();
        }
        ALLOCATED.fetch_add(layout.size(), Ordering::Relaxed);
        // SAFETY: the caller upholds `alloc`'s contract for `layout`; we pass it on as is.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if refused(layout.size()) {
            return std::ptr::null_mut();
        }
        ALLOCATED.fetch_add(layout.size(), Ordering::Relaxed);
        // SAFETY: as for `alloc`.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` was returned by this allocator, i.e. by `System`, for `layout`.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if refused(new_size) {
            return std::ptr::null_mut();
        }
        ALLOCATED.fetch_add(new_size, Ordering::Relaxed);
        // SAFETY: `ptr` was returned by `System` for `layout`, and the caller upholds
        // `realloc`'s contract for `new_size`.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Refusing = Refusing;

const MIB: usize = 1 << 20;

/// A masked binary frame header announcing `len` bytes (64-bit length form).
fn header(len: usize) -> Vec<u8> {
    raw_header(0x82, Some(KEY), Len::Long(len as u64))
}

/// An allocator that will not give the announced length in one piece: the connection goes on
/// with what arrives instead of aborting the process (before, `reserve` called
/// `handle_alloc_error`, which aborts).
#[test]
fn refused_reservation_does_not_abort() {
    REFUSE_FROM.with(|limit| limit.set(4 * MIB));
    // Announces 6 MiB (under the default 16 MiB limit), sends 1 MiB of it, then ends.
    let mut server = server();
    server.handle_bytes(&header(6 * MIB));
    for _ in 0..16 {
        server.handle_bytes(&[0u8; 64 << 10]);
    }
    server.handle_eof();
    let mut closed = None;
    while let Some(event) = server.poll_event() {
        match event {
            Event::Closed(c) => closed = Some(c.code),
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(closed, Some(CloseCode::ABNORMAL));

    // A whole 3 MiB message still arrives intact, its length reserved at once.
    let payload: Vec<u8> = (0..3 * MIB).map(|i| (i % 251) as u8).collect();
    let wire = masked(OP_BINARY, true, &payload);
    let mut server = common::server();
    for read in wire.chunks(64 << 10) {
        server.handle_bytes(read);
    }
    match server.poll_event() {
        Some(Event::Message(Message::Binary(got))) => assert!(got[..] == payload[..]),
        other => panic!("unexpected {other:?}"),
    }
    REFUSE_FROM.with(|limit| limit.set(usize::MAX));
}

/// Resident set size of this process in bytes (Linux: `/proc/self/statm`, in pages).
#[cfg(target_os = "linux")]
fn resident() -> usize {
    let statm = std::fs::read_to_string("/proc/self/statm").expect("statm");
    let pages: usize = statm
        .split_whitespace()
        .nth(1)
        .and_then(|field| field.parse().ok())
        .expect("resident pages");
    pages * 4096
}

/// Many connections whose peers sent only a header announcing the full 16 MiB and one payload
/// byte: each holds a 16 MiB reservation, but it is address space, not resident memory.
#[cfg(target_os = "linux")]
#[test]
fn announced_lengths_are_not_resident() {
    const CONNECTIONS: usize = 64;
    let announced = 16 * MIB;
    let mut input = header(announced);
    input.push(0);
    let before_rss = resident();
    let before_allocated = ALLOCATED.load(Ordering::Relaxed);
    let mut connections = Vec::with_capacity(CONNECTIONS);
    for _ in 0..CONNECTIONS {
        let mut server = connection(Role::Server, Config::default());
        server.handle_bytes(&input);
        assert!(server.poll_event().is_none());
        connections.push(server);
    }
    let allocated = ALLOCATED.load(Ordering::Relaxed) - before_allocated;
    let grown = resident().saturating_sub(before_rss);
    // The reservations were made (so the test measures something)...
    assert!(
        allocated >= CONNECTIONS * announced,
        "{allocated} bytes allocated"
    );
    // ...and about a page each became resident (1 GiB was reserved), not the reservation.
    assert!(
        grown < 64 * MIB,
        "resident set grew by {grown} bytes for {CONNECTIONS} connections"
    );
    drop(connections);
}
