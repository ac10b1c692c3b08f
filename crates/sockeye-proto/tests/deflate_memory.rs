//! Memory per connection under permessage-deflate (issue 17): zlib's state is allocated only
//! while it is used. A server connection that negotiated deflate keeps no more heap than a plain
//! one, idle after the handshake and after a compressed message each way, when the contexts are
//! reset after every message (the default server's answer): it compresses and inflates with
//! state shared by the thread. With context takeover, the state is allocated at the first
//! compressed message, not at the handshake.
//!
//! A counting global allocator keeps the bytes allocated minus those freed by the calling thread
//! (a thread-local counter, so tests running in parallel do not disturb each other).

mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use common::*;
use sockeye_proto::deflate::{DeflateConfig, DeflateParams};
use sockeye_proto::{Config, Connection, DataKind, Event, Role, Transmit};

struct Counting;

thread_local! {
    /// Bytes allocated minus bytes freed by this thread. `const`-initialised without a
    /// destructor, so reading it never allocates.
    static LIVE: Cell<isize> = const { Cell::new(0) };
}

fn add(bytes: isize) {
    // `try_with` fails only while the thread is being torn down; nothing is counted then.
    let _ = LIVE.try_with(|n| n.set(n.get() + bytes));
}

// SAFETY: every method forwards its arguments unchanged to `System`, which implements the
// `GlobalAlloc` contract; the bookkeeping only updates a thread-local counter and never
// allocates.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: the caller upholds `alloc`'s contract for `layout`; we pass it on as is.
        let ptr = unsafe { System.alloc(layout) };
        if !ptr.is_null() {
            add(layout.size() as isize);
        }
        ptr
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: as for `alloc`.
        let ptr = unsafe { System.alloc_zeroed(layout) };
        if !ptr.is_null() {
            add(layout.size() as isize);
        }
        ptr
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` was returned by this allocator, i.e. by `System`, for `layout`.
        unsafe { System.dealloc(ptr, layout) };
        add(-(layout.size() as isize));
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: `ptr` was returned by `System` for `layout`, and the caller upholds
        // `realloc`'s contract for `new_size`.
        let new = unsafe { System.realloc(ptr, layout, new_size) };
        if !new.is_null() {
            add(new_size as isize - layout.size() as isize);
        }
        new
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn live() -> isize {
    LIVE.with(Cell::get)
}

/// Connections measured at once.
const CONNECTIONS: usize = 200;
/// The message each way: 1 KiB of JSON-like text.
fn message() -> Vec<u8> {
    br#"{"type":"tick","symbol":"ACME","price":101.25,"volume":1200,"venue":"X"},"#
        .iter()
        .copied()
        .cycle()
        .take(1024)
        .collect()
}

/// How far a server connection goes before it is kept.
#[derive(Clone, Copy)]
enum Stage {
    /// Right after the handshake.
    Idle,
    /// After one message received and one sent.
    Exchanged,
}

/// The heap a server connection keeps, on average over [`CONNECTIONS`], at `stage`. `deflate`:
/// the parameters it negotiated, or `None` for a plain connection. The client's message is
/// made once beforehand (compressed when deflate is on, as the client would).
fn bytes_per_connection(deflate: Option<DeflateParams>, stage: Stage) -> isize {
    let text = message();
    let make = || {
        let server = connection(Role::Server, Config::default());
        match deflate {
            Some(params) => server.with_deflate(params, &DeflateConfig::default()),
            None => server,
        }
    };
    let wire = {
        let mut client = connection(Role::Client, Config::default());
        if let Some(params) = deflate {
            client = client.with_deflate(params, &DeflateConfig::default());
        }
        client.send(DataKind::Text, &text).unwrap();
        let mut out = Vec::new();
        assert_eq!(client.poll_transmit(&mut out), Transmit::Bytes);
        out
    };
    let mut out = Vec::with_capacity(4096);
    let mut exchange = |server: &mut Connection| {
        server.handle_bytes(&wire);
        match server.poll_event() {
            Some(Event::Message(m)) => assert_eq!(m.as_payload(), &text[..]),
            other => panic!("{other:?}"),
        }
        server.send(DataKind::Text, &text).unwrap();
        out.clear();
        assert_eq!(server.poll_transmit(&mut out), Transmit::Bytes);
        if deflate.is_some() {
            assert_eq!(out[0], 0xC1, "compressed: FIN, RSV1, text");
        }
    };
    // Once before measuring: the thread's shared state and buffers exist from then on.
    exchange(&mut make());
    let mut kept = Vec::with_capacity(CONNECTIONS);
    let before = live();
    for _ in 0..CONNECTIONS {
        let mut server = make();
        if let Stage::Exchanged = stage {
            exchange(&mut server);
        }
        kept.push(server);
    }
    let grown = live() - before;
    drop(kept);
    grown / CONNECTIONS as isize
}

fn params(server_no_context_takeover: bool, client_no_context_takeover: bool) -> DeflateParams {
    let mut params = DeflateParams::new();
    params.server_no_context_takeover = server_no_context_takeover;
    params.client_no_context_takeover = client_no_context_takeover;
    params
}

/// What a deflating connection may keep beyond a plain one: its small, boxed deflate state.
const DEFLATE_OVERHEAD: isize = 512;

#[test]
fn without_context_takeover_a_connection_costs_what_a_plain_one_costs() {
    for stage in [Stage::Idle, Stage::Exchanged] {
        let plain = bytes_per_connection(None, stage);
        let deflating = bytes_per_connection(Some(params(true, true)), stage);
        println!("plain {plain} B, deflate without context takeover {deflating} B");
        assert!(
            deflating <= plain + DEFLATE_OVERHEAD,
            "plain {plain} B, deflate {deflating} B per connection"
        );
    }
}

#[test]
fn with_context_takeover_state_is_allocated_at_the_first_message() {
    let plain = bytes_per_connection(None, Stage::Idle);
    let idle = bytes_per_connection(Some(params(false, false)), Stage::Idle);
    assert!(
        idle <= plain + DEFLATE_OVERHEAD,
        "idle: {idle} B, plain {plain} B"
    );
    // After a message each way: a compressor of its own (about 300 KB with a 32 KiB window) and
    // a decompressor (about 40 KB).
    let both = bytes_per_connection(Some(params(false, false)), Stage::Exchanged);
    let server_only = bytes_per_connection(Some(params(false, true)), Stage::Exchanged);
    let client_only = bytes_per_connection(Some(params(true, false)), Stage::Exchanged);
    println!("takeover both ways {both} B, server's {server_only} B, client's {client_only} B");
    assert!(server_only > plain + 100_000, "{server_only} B");
    assert!(client_only > plain + 10_000, "{client_only} B");
    assert!(
        client_only < server_only,
        "{client_only} B, {server_only} B"
    );
    assert!(both > server_only, "{both} B, {server_only} B");
}
