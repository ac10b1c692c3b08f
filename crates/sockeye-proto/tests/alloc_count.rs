//! Heap allocations per small message on the hot paths (issue 7): a server receiving masked
//! text messages (`handle_bytes` → `poll_event`) and a client sending them (`send` →
//! `poll_transmit`), in the steady state a transport driver reaches after its first messages.
//!
//! A counting global allocator counts the allocations made by the calling thread (a
//! thread-local counter, so tests running in parallel do not disturb each other). Before issue 7
//! every message received cost two allocations; now the small messages of one read share a
//! block, a message the application gave back lends its buffer to the next, and sending
//! allocates nothing once the buffers have grown. A change that adds an allocation per message
//! fails here.

mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use common::*;
use sockeye_proto::{Config, Connection, DataKind, Event, Message, Role, Transmit};

struct Counting;

thread_local! {
    /// Allocations (including reallocations) by this thread. `const`-initialised without a
    /// destructor, so reading it never allocates.
    static ALLOCATIONS: Cell<usize> = const { Cell::new(0) };
}

fn count() {
    // `try_with` fails only while the thread is being torn down; nothing is counted then.
    let _ = ALLOCATIONS.try_with(|n| n.set(n.get() + 1));
}

// SAFETY: every method forwards its arguments unchanged to `System`, which implements the
// `GlobalAlloc` contract; the bookkeeping only touches a thread-local `Cell` and never allocates.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count();
        // SAFETY: the caller upholds `alloc`'s contract for `layout`; we pass it on as is.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        count();
        // SAFETY: as for `alloc`.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` was returned by this allocator, i.e. by `System`, for `layout`.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count();
        // SAFETY: `ptr` was returned by `System` for `layout`, and the caller upholds
        // `realloc`'s contract for `new_size`.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// Allocations made by `f` on this thread.
fn allocations(f: impl FnOnce()) -> usize {
    let before = ALLOCATIONS.with(Cell::get);
    f();
    ALLOCATIONS.with(Cell::get) - before
}

/// Messages per measured batch.
const MESSAGES: usize = 100;

/// `MESSAGES` masked text messages of `size` bytes, one frame each.
fn batch(size: usize) -> (Vec<u8>, Vec<u8>) {
    let text: Vec<u8> = (0..size).map(|i| b'a' + (i % 26) as u8).collect();
    let mut wire = Vec::new();
    for _ in 0..MESSAGES {
        wire.extend_from_slice(&masked(0x1, true, &text));
    }
    (wire, text)
}

/// Feeds `wire` in reads of at most 64 KiB and takes every event, as `WebSocketStream` does;
/// `keep` decides whether the application holds on to the messages (until the batch ends) or
/// drops each one at once.
fn receive(server: &mut Connection, wire: &[u8], text: &[u8], keep: bool) -> Vec<Message> {
    let mut kept = Vec::with_capacity(if keep { MESSAGES } else { 0 });
    let mut received = 0;
    for read in wire.chunks(64 << 10) {
        server.handle_bytes(read);
        while let Some(event) = server.poll_event() {
            match event {
                Event::Message(message @ Message::Text(_)) => {
                    assert_eq!(message.as_payload(), text);
                    received += 1;
                    if keep {
                        kept.push(message);
                    }
                }
                other => panic!("unexpected {other:?}"),
            }
        }
    }
    assert_eq!(received, MESSAGES);
    kept
}

/// Allocations per message received in the steady state (after a warm-up batch).
fn receive_allocations(size: usize, keep: bool) -> f64 {
    let (wire, text) = batch(size);
    let mut server = connection(Role::Server, Config::default());
    drop(receive(&mut server, &wire, &text, keep));
    let mut kept = Vec::new();
    let n = allocations(|| kept = receive(&mut server, &wire, &text, keep));
    drop(kept);
    n as f64 / MESSAGES as f64
}

/// Size of the block received messages are carved from (`MESSAGE_BLOCK` in connection/recv.rs).
const MESSAGE_BLOCK: usize = 4 << 10;

#[test]
fn receiving_small_messages_shares_allocations() {
    for size in [0, 1, 20, 125, 1024] {
        // Each block of MESSAGE_BLOCK bytes costs two or three allocations (the buffer, the
        // shared header `bytes` adds when the first message is split off, and at the start of
        // a batch the block of the previous one) and holds this many frames.
        let per_block = MESSAGE_BLOCK as f64 / (size + 6) as f64;
        let bound = 3.0 / per_block + 0.02;
        let kept = receive_allocations(size, true);
        let dropped = receive_allocations(size, false);
        println!(
            "{size:>5} B: {kept:.2} allocations per message kept, {dropped:.2} dropped (bound {bound:.3})"
        );
        assert!(
            kept <= bound,
            "{size} B, messages kept: {kept} allocations per message"
        );
        assert!(
            dropped <= bound,
            "{size} B, messages dropped: {dropped} allocations per message"
        );
    }
}

/// Ping-pong: one message per read. Returns the allocations per message.
fn one_per_read(size: usize, keep: bool) -> f64 {
    let text: Vec<u8> = (0..size).map(|i| b'a' + (i % 26) as u8).collect();
    let frame = masked(0x1, true, &text);
    let mut server = connection(Role::Server, Config::default());
    let mut kept = Vec::new();
    let exchange = |server: &mut Connection, kept: &mut Vec<Message>| {
        for _ in 0..MESSAGES {
            server.handle_bytes(&frame);
            match server.poll_event() {
                Some(Event::Message(message)) => {
                    assert_eq!(message.as_payload(), &text[..]);
                    if keep {
                        kept.push(message);
                    }
                }
                other => panic!("unexpected {other:?}"),
            }
            assert_eq!(server.poll_event(), None);
        }
    };
    exchange(&mut server, &mut kept);
    kept.clear();
    kept.reserve(MESSAGES);
    let n = allocations(|| exchange(&mut server, &mut kept));
    n as f64 / MESSAGES as f64
}

#[test]
fn a_lone_message_costs_at_most_its_own_buffer() {
    for size in [1, 20, 125, 1024, 16 << 10] {
        let kept = one_per_read(size, true);
        let dropped = one_per_read(size, false);
        println!("{size:>5} B, one per read: {kept:.2} allocations per message kept, {dropped:.2} dropped");
        // Kept: the message's buffer, plus the shared header `bytes` adds when it is split off.
        // A frame longer than a block has its announced length reserved fallibly (a `Vec`
        // turned into the buffer), which costs one more small header, freed at once.
        let bound = if size > MESSAGE_BLOCK { 3.0 } else { 2.0 };
        assert!(kept <= bound, "{size} B kept: {kept}");
        // Given back: its buffer is reused for the next one.
        assert!(dropped <= 0.0, "{size} B dropped: {dropped}");
    }
}

#[test]
fn sending_small_messages_does_not_allocate() {
    for size in [0, 20, 125, 1024, 16 << 10] {
        let payload = vec![b'x'; size];
        let mut client = connection(Role::Client, Config::default());
        let mut out = Vec::new();
        let send_batch = |client: &mut Connection, out: &mut Vec<u8>| {
            for _ in 0..MESSAGES {
                client.send(DataKind::Text, &payload).unwrap();
                while client.poll_transmit(out) != Transmit::Idle {
                    // The transport wrote it all.
                    out.clear();
                }
            }
        };
        send_batch(&mut client, &mut out);
        let n = allocations(|| send_batch(&mut client, &mut out));
        println!("{size:>5} B: {n} allocations for {MESSAGES} messages sent");
        assert_eq!(n, 0, "{size} B");
    }
}
