//! Soak: thousands of client connections churning against one echo [`sockeye::Server`] in this
//! process, with numbered messages of random kind and size flowing both ways.
//!
//! Runs for `SOCKEYE_SOAK_SECS` seconds (default 10, so a plain `cargo test` stays quick; CI
//! sets 60–120) after a warm-up, and at most [`CONNECTION_CAP`] connections. It asserts that no
//! message is lost, reordered or corrupted, that no well-behaved connection sees an error (on
//! either end), that every socket is released, and that memory comes back once every
//! connection is closed: the live heap (counted by [`CountingAllocator`]) to within
//! [`HEAP_LEAK_LIMIT`] of where it stood after the warm-up, and RSS to within
//! `max(start + 32 MiB, 1.5 × start)`. Both RSS figures are taken after `malloc_trim`: glibc
//! keeps freed arena memory, so untrimmed RSS stays at its peak whether or not anything leaked
//! (the report shows it too). `SOCKEYE_SOAK_SEED` replays the same messages; `--nocapture`
//! prints the figures.

mod common;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use futures_util::{SinkExt as _, StreamExt as _};
use sockeye::{CloseCode, Message, Server, WebSocketStream};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio::task::JoinSet;

#[global_allocator]
static ALLOCATOR: CountingAllocator = CountingAllocator;

/// Soak length without `SOCKEYE_SOAK_SECS`.
const DEFAULT_SECS: u64 = 10;
/// Most client connections open at once (each also holds a server connection in this
/// process); lowered to fit the descriptor limit.
const MAX_CONCURRENCY: usize = 2_000;
/// Most connections over the whole run, warm-up included.
const CONNECTION_CAP: u64 = 5_000_000;
/// Messages per connection: 1 to this many.
const MAX_MESSAGES: usize = 32;
/// Payload size of a message: 0 to this many bytes (plus an 8-byte sequence header).
const MAX_PAYLOAD: usize = 4 << 10;
/// Bound on one connection's life: connect, echoes, close handshake.
const SESSION_TIMEOUT: Duration = Duration::from_secs(30);
/// How long the first wave of workers takes to start, so that the connects of a cold start do
/// not all land in the listen queue in the same millisecond.
const RAMP: Duration = Duration::from_millis(500);
/// Growth of the live heap allowed over the run: with hundreds of thousands of connections, a
/// leak of a few bytes each would show.
const HEAP_LEAK_LIMIT: u64 = 1 << 20;
/// RSS allowed above the post-warm-up start once every connection is closed (both after
/// `malloc_trim`): what the allocator cannot hand back, such as fragmented arenas.
const RSS_SLACK: u64 = 32 << 20;
const MIB: u64 = 1 << 20;

/// A xorshift64* generator: reproducible from a seed, no dependency.
#[derive(Debug, Clone)]
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Self {
        Self(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform in `0..=max` (the bias is irrelevant here).
    fn up_to(&mut self, max: usize) -> usize {
        (self.next() % (max as u64 + 1)) as usize
    }
}

/// Message `seq` of a connection: text or binary, 0 to [`MAX_PAYLOAD`] bytes after a header
/// that carries the sequence number, with content that differs per connection and message.
fn message(seq: u32, salt: u32, rng: &mut Rng) -> Message {
    let len = rng.up_to(MAX_PAYLOAD);
    let body = pattern(len, salt ^ seq.wrapping_mul(0x9E37_79B9));
    if rng.next() % 2 == 0 {
        let mut bytes = seq.to_be_bytes().to_vec();
        bytes.extend_from_slice(&(len as u32).to_be_bytes());
        bytes.extend(body);
        Message::binary(bytes)
    } else {
        let text: String = body.iter().map(|b| char::from(b'a' + b % 26)).collect();
        Message::text(format!("{seq:08x}{text}"))
    }
}

/// The sequence number a message carries.
fn seq_of(message: &Message) -> Option<u32> {
    match message {
        Message::Binary(bytes) => Some(u32::from_be_bytes(bytes.get(..4)?.try_into().ok()?)),
        Message::Text(text) => u32::from_str_radix(text.get(..8)?, 16).ok(),
        _ => None,
    }
}

/// Totals over many connections.
#[derive(Debug, Default)]
struct Counters {
    /// Connections started.
    connections: AtomicU64,
    /// Connections that exchanged every message and closed cleanly.
    completed: AtomicU64,
    sent: AtomicU64,
    received: AtomicU64,
    /// Messages sent whose echo never came.
    lost: AtomicU64,
    /// Echoes that came after an echo of a later message.
    reordered: AtomicU64,
    /// Echoes that differ from what was sent, or came twice.
    corrupt: AtomicU64,
    /// Connections that failed in any way (connect, send, receive, close, timeout).
    errors: AtomicU64,
    bytes: AtomicU64,
    /// Time from starting a connect to the 101, summed and at most, in microseconds.
    connect_micros: AtomicU64,
    connect_micros_max: AtomicU64,
    /// Time of a whole connection, summed and at most, in microseconds.
    session_micros: AtomicU64,
    session_micros_max: AtomicU64,
    /// The first few failures, for the report.
    first_errors: Mutex<Vec<String>>,
}

impl Counters {
    fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }

    fn time(total: &AtomicU64, max: &AtomicU64, elapsed: Duration) {
        let micros = u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX);
        total.fetch_add(micros, Ordering::Relaxed);
        max.fetch_max(micros, Ordering::Relaxed);
    }

    fn fail(&self, error: String) {
        Self::add(&self.errors, 1);
        let mut first = self.first_errors.lock().unwrap();
        if first.len() < 10 {
            first.push(error);
        }
    }

    fn summary(&self) -> String {
        format!(
            "{} connections ({} completed), {} messages sent, {} echoed ({:.1} MiB), lost {}, \
             reordered {}, corrupt {}, failed connections {}",
            Self::get(&self.connections),
            Self::get(&self.completed),
            Self::get(&self.sent),
            Self::get(&self.received),
            Self::get(&self.bytes) as f64 / MIB as f64,
            Self::get(&self.lost),
            Self::get(&self.reordered),
            Self::get(&self.corrupt),
            Self::get(&self.errors),
        )
    }

    /// Mean and longest connect and connection times.
    fn latency(&self) -> String {
        let n = Self::get(&self.connections).max(1);
        let ms = |micros: u64| Duration::from_micros(micros).as_secs_f64() * 1e3;
        format!(
            "connect {:.1} ms mean, {:.1} ms max; connection {:.1} ms mean, {:.1} ms max",
            ms(Self::get(&self.connect_micros) / n),
            ms(Self::get(&self.connect_micros_max)),
            ms(Self::get(&self.session_micros) / n),
            ms(Self::get(&self.session_micros_max)),
        )
    }

    /// Everything that must be zero, is.
    fn assert_clean(&self, phase: &str) {
        let first = self.first_errors.lock().unwrap();
        assert_eq!(
            (
                Self::get(&self.lost),
                Self::get(&self.reordered),
                Self::get(&self.corrupt),
                Self::get(&self.errors),
            ),
            (0, 0, 0, 0),
            "{phase}: lost, reordered, corrupt, failed; first failures: {first:#?}"
        );
        assert_eq!(
            Self::get(&self.completed),
            Self::get(&self.connections),
            "{phase}: every connection completes"
        );
        assert_eq!(Self::get(&self.sent), Self::get(&self.received), "{phase}");
    }
}

/// One client connection: sends its messages while receiving their echoes, checks them, and
/// closes with 1000.
async fn session(url: &str, salt: u32, rng: &mut Rng, counters: &Counters) -> Result<(), String> {
    let start = Instant::now();
    let (ws, _) = sockeye::connect(url)
        .await
        .map_err(|e| format!("connect: {e:?}"))?;
    Counters::time(
        &counters.connect_micros,
        &counters.connect_micros_max,
        start.elapsed(),
    );
    let count = rng.up_to(MAX_MESSAGES - 1) + 1;
    let messages: Vec<Message> = (0..count as u32)
        .map(|seq| message(seq, salt, rng))
        .collect();
    let (mut sink, mut stream) = ws.split();
    let send = async {
        for message in &messages {
            sink.send(message.clone())
                .await
                .map_err(|e| format!("send: {e:?}"))?;
            Counters::add(&counters.sent, 1);
        }
        Ok::<_, String>(())
    };
    let receive = async {
        let mut seen = vec![false; count];
        let (mut received, mut highest) = (0, None);
        while received < count {
            let echo = match stream.next().await {
                Some(Ok(echo)) if echo.is_data() => echo,
                Some(Ok(_)) => continue,
                Some(Err(e)) => return Err(format!("receive: {e:?}")),
                None => return Err("receive: the stream ended".to_owned()),
            };
            received += 1;
            Counters::add(&counters.received, 1);
            Counters::add(&counters.bytes, echo.as_payload().len() as u64);
            let seq = seq_of(&echo).map(|s| s as usize);
            match seq {
                Some(seq) if seq < count && !seen[seq] && echo == messages[seq] => {
                    seen[seq] = true;
                    if highest.is_some_and(|h| seq < h) {
                        Counters::add(&counters.reordered, 1);
                    }
                    highest = highest.max(Some(seq));
                }
                _ => Counters::add(&counters.corrupt, 1),
            }
        }
        Ok(seen)
    };
    let (sent, seen) = tokio::join!(send, receive);
    let missing = |seen: &[bool]| seen.iter().filter(|&&s| !s).count() as u64;
    let seen = match (sent, seen) {
        (Ok(()), Ok(seen)) => seen,
        (sent, seen) => {
            if let Ok(seen) = &seen {
                Counters::add(&counters.lost, missing(seen));
            }
            return Err(format!("{:?} / {:?}", sent.err(), seen.err()));
        }
    };
    Counters::add(&counters.lost, missing(&seen));
    let mut ws: WebSocketStream<sockeye::Transport<TcpStream>> = sink
        .reunite(stream)
        .map_err(|_| "halves of different streams".to_owned())?;
    ws.close(CloseCode::NORMAL, "")
        .await
        .map_err(|e| format!("close: {e:?}"))?;
    match ws.close_info() {
        Some(info) if info.was_clean && info.code == CloseCode::NORMAL => Ok(()),
        other => Err(format!("unclean close: {other:?}")),
    }
}

/// Runs connections back to back until `deadline` or the connection cap.
async fn worker(
    id: u64,
    url: Arc<str>,
    start_after: Duration,
    deadline: Instant,
    seed: u64,
    counters: Arc<Counters>,
) {
    tokio::time::sleep(start_after).await;
    let mut rng = Rng::new(seed ^ id.wrapping_mul(0xA24B_AED4_963E_E407));
    let mut round = 0u32;
    while Instant::now() < deadline {
        if counters.connections.fetch_add(1, Ordering::Relaxed) >= CONNECTION_CAP {
            counters.connections.fetch_sub(1, Ordering::Relaxed);
            break;
        }
        let salt = ((id as u32) << 16) ^ round;
        round = round.wrapping_add(1);
        let start = Instant::now();
        let result =
            tokio::time::timeout(SESSION_TIMEOUT, session(&url, salt, &mut rng, &counters)).await;
        Counters::time(
            &counters.session_micros,
            &counters.session_micros_max,
            start.elapsed(),
        );
        match result {
            Ok(Ok(())) => Counters::add(&counters.completed, 1),
            Ok(Err(e)) => counters.fail(format!("worker {id}: {e}")),
            Err(_) => counters.fail(format!("worker {id}: not done in {SESSION_TIMEOUT:?}")),
        }
    }
}

/// Runs `concurrency` workers until `length` has passed; returns their totals.
async fn phase(url: &Arc<str>, concurrency: usize, length: Duration, seed: u64) -> Arc<Counters> {
    let counters = Arc::new(Counters::default());
    let deadline = Instant::now() + length;
    let mut workers = JoinSet::new();
    for id in 0..concurrency {
        let start_after = RAMP * id as u32 / concurrency as u32;
        workers.spawn(worker(
            id as u64,
            url.clone(),
            start_after,
            deadline,
            seed,
            counters.clone(),
        ));
    }
    while let Some(joined) = workers.join_next().await {
        joined.expect("worker panicked");
    }
    counters
}

/// The echo server's view: connections served, errors seen, handlers running.
#[derive(Debug, Default)]
struct ServerSide {
    served: AtomicU64,
    errors: AtomicU64,
    first_errors: Mutex<Vec<String>>,
}

async fn echo(mut ws: WebSocketStream<sockeye::Transport<TcpStream>>, side: Arc<ServerSide>) {
    side.served.fetch_add(1, Ordering::Relaxed);
    let fail = |e: sockeye::Error| {
        side.errors.fetch_add(1, Ordering::Relaxed);
        let mut first = side.first_errors.lock().unwrap();
        if first.len() < 10 {
            first.push(format!("{e:?}"));
        }
    };
    while let Some(item) = ws.next().await {
        match item {
            Ok(message) if message.is_data() => {
                if let Err(e) = ws.send(message).await {
                    fail(e);
                }
            }
            Ok(_) => {}
            Err(e) => fail(e),
        }
    }
}

/// Counts a running handler.
struct Live(Arc<watch::Sender<usize>>);

impl Live {
    fn new(live: Arc<watch::Sender<usize>>) -> Self {
        live.send_modify(|n| *n += 1);
        Self(live)
    }
}

impl Drop for Live {
    fn drop(&mut self) {
        self.0.send_modify(|n| *n -= 1);
    }
}

/// Waits until no handler runs and every TCP socket but the listener's is closed.
async fn quiesce(live: &mut watch::Receiver<usize>, sockets_idle: usize) {
    tokio::time::timeout(Duration::from_secs(30), live.wait_for(|n| *n == 0))
        .await
        .expect("handlers still running 30 s after the last client finished")
        .expect("server running");
    // The OS announces no closed descriptor: poll /proc for a bounded time.
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut sockets = open_tcp_sockets();
    while sockets > sockets_idle && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
        sockets = open_tcp_sockets();
    }
    assert!(
        sockets <= sockets_idle,
        "{sockets} TCP sockets still open, {sockets_idle} when idle: leaked connections"
    );
}

fn env_u64(name: &str) -> Option<u64> {
    let value = std::env::var(name).ok()?;
    Some(
        value
            .parse()
            .unwrap_or_else(|_| panic!("{name}={value:?} is not a number")),
    )
}

#[test]
fn soak() {
    let length = Duration::from_secs(env_u64("SOCKEYE_SOAK_SECS").unwrap_or(DEFAULT_SECS));
    let warm_up = (length / 5).clamp(Duration::from_secs(2), Duration::from_secs(15));
    let seed = env_u64("SOCKEYE_SOAK_SEED").unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.as_nanos() as u64)
    });
    let fd_limit = fd_soft_limit();
    // Two descriptors per connection (both ends are in this process), plus headroom.
    let fit = usize::try_from(fd_limit.saturating_sub(512) / 2).unwrap_or(usize::MAX);
    // `SOCKEYE_SOAK_CONCURRENCY` lowers it (a debug build on a busy machine cannot keep 2,000
    // sessions within their timeout).
    let wanted = env_u64("SOCKEYE_SOAK_CONCURRENCY")
        .and_then(|n| usize::try_from(n).ok())
        .unwrap_or(MAX_CONCURRENCY);
    let concurrency = wanted.min(MAX_CONCURRENCY).min(fit);
    assert!(
        concurrency >= 100,
        "fd soft limit {fd_limit} is too low for a soak"
    );
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads)
        .enable_all()
        .build()
        .expect("runtime");
    let budget = length + warm_up + Duration::from_secs(120);
    runtime.block_on(async {
        tokio::time::timeout(
            budget,
            run(length, warm_up, concurrency, seed, fd_limit, threads),
        )
        .await
        .unwrap_or_else(|_| panic!("soak did not finish within {budget:?}"));
    });
}

async fn run(
    length: Duration,
    warm_up: Duration,
    concurrency: usize,
    seed: u64,
    fd_limit: u64,
    threads: usize,
) {
    let rss_cold = rss_bytes();
    let server = Server::bind("127.0.0.1:0").await.expect("bind");
    let url: Arc<str> = format!("ws://{}/soak", server.local_addr().unwrap()).into();
    let side = Arc::new(ServerSide::default());
    let (live_tx, mut live) = watch::channel(0);
    let live_tx = Arc::new(live_tx);
    let serving = tokio::spawn({
        let side = side.clone();
        server.serve(move |ws, _request| {
            let live = Live::new(live_tx.clone());
            let side = side.clone();
            async move {
                echo(ws, side).await;
                drop(live);
            }
        })
    });
    let sockets_idle = open_tcp_sockets();
    println!(
        "soak: {length:?} after a {warm_up:?} warm-up, {concurrency} concurrent connections \
         (fd soft limit {fd_limit}), {threads} runtime threads, seed {seed} \
         (SOCKEYE_SOAK_SEED to replay)"
    );

    // Warm-up at full concurrency: tokio's and the allocator's pools grow to the working set.
    let warm = phase(&url, concurrency, warm_up, seed).await;
    quiesce(&mut live, sockets_idle).await;
    println!("warm-up: {}", warm.summary());
    warm.assert_clean("warm-up");
    trim_allocator();
    let (rss_start, heap_start) = (rss_bytes(), heap_live_bytes());

    // The soak, with memory sampled throughout.
    let stop = Arc::new(AtomicBool::new(false));
    let sampler = tokio::spawn({
        let stop = stop.clone();
        async move {
            let (mut rss_peak, mut heap_peak) = (0, 0);
            while !stop.load(Ordering::Relaxed) {
                rss_peak = rss_peak.max(rss_bytes());
                heap_peak = heap_peak.max(heap_live_bytes());
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            (rss_peak, heap_peak)
        }
    });
    let started = Instant::now();
    let soak = phase(&url, concurrency, length, seed.wrapping_add(1)).await;
    let elapsed = started.elapsed();
    stop.store(true, Ordering::Relaxed);
    let (rss_peak, heap_peak) = sampler.await.expect("sampler");
    quiesce(&mut live, sockets_idle).await;
    let rss_untrimmed = rss_bytes();
    trim_allocator();
    let (rss_after, heap_after) = (rss_bytes(), heap_live_bytes());

    let connections = Counters::get(&soak.connections);
    println!("soak: {} in {elapsed:.1?}", soak.summary());
    println!(
        "soak: {:.0} connections/s, {:.0} messages/s each way",
        connections as f64 / elapsed.as_secs_f64(),
        Counters::get(&soak.received) as f64 / elapsed.as_secs_f64()
    );
    println!("soak: {}", soak.latency());
    println!(
        "server: {} connections served, {} errors",
        side.served.load(Ordering::Relaxed),
        side.errors.load(Ordering::Relaxed)
    );
    println!(
        "RSS: {} cold, {} after warm-up (start), {} peak, {} after all closed ({} before \
         trimming the allocator)",
        mib(rss_cold),
        mib(rss_start),
        mib(rss_peak),
        mib(rss_after),
        mib(rss_untrimmed)
    );
    println!(
        "live heap: {} start, {} peak, {} after ({:+} bytes, {:+.2} bytes per connection)",
        mib(heap_start),
        mib(heap_peak),
        mib(heap_after),
        heap_after as i64 - heap_start as i64,
        (heap_after as f64 - heap_start as f64) / connections.max(1) as f64
    );

    soak.assert_clean("soak");
    assert!(
        connections >= concurrency as u64,
        "only {connections} connections in {elapsed:?}"
    );
    let server_errors = side.errors.load(Ordering::Relaxed);
    assert_eq!(
        server_errors,
        0,
        "the server saw errors on well-behaved connections: {:#?}",
        side.first_errors.lock().unwrap()
    );
    assert_eq!(
        side.served.load(Ordering::Relaxed),
        Counters::get(&warm.connections) + connections,
        "every connection reached the handler"
    );
    assert!(
        heap_after < heap_start + HEAP_LEAK_LIMIT,
        "live heap {} after, {} at start: a leak",
        mib(heap_after),
        mib(heap_start)
    );
    let rss_limit = (rss_start + RSS_SLACK).max(rss_start + rss_start / 2);
    assert!(
        rss_after <= rss_limit,
        "RSS {} after, {} at start (limit {})",
        mib(rss_after),
        mib(rss_start),
        mib(rss_limit)
    );
    serving.abort();
}
