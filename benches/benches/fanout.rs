//! Fan-out of one publisher to N subscribers on one node (N = 1,000 and 10,000): the
//! `sockeye_hub` topic against the naive loop of one `send` per connection, with sockeye's own
//! API in both. Reports deliveries per second and the delivery latency (publish call to the
//! client's receipt of the message) at p50 and p99. A report, not a timed test: no criterion
//! (a run is one long burst, and the latency distribution is the point).
//!
//! Each connection is a pair of `WebSocketStream`s (server and client role) over an in-memory
//! `tokio::io::duplex` pipe of 64 KiB, so the numbers are sockeye's cost (framing, queues, task
//! wake-ups; server frames are not masked), not the kernel's loopback. A
//! client task per connection reads every message and records its latency. The runtime is
//! multi-threaded with one worker per core.
//!
//! - **hub**: the publisher calls `Hub::publish` once per message; a server task per
//!   connection takes messages from its `Subscriber` and writes them (`feed`, then `flush` when
//!   its queue is empty). Queues hold the whole burst (`SlowConsumer::Drop`, nothing dropped:
//!   checked).
//! - **naive**: the publisher owns every server-side stream and, per message, awaits
//!   `send(message.clone())` on each connection in turn.
//!
//! A third run puts one subscriber that never reads in the middle of the list, with 1 KiB
//! messages: the naive loop blocks on it for good (its pipe and 64 KiB write buffer are full),
//! starving every later subscriber; the hub's publisher never waits.
//!
//! ```sh
//! cargo bench -p sockeye-bench --bench fanout
//! SOCKEYE_FANOUT_MESSAGES=100 cargo bench -p sockeye-bench --bench fanout   # a shorter run
//! ```
//!
//! # Results
//!
//! 2 vCPU "Intel Xeon Processor" VM, Linux 6.18, rustc 1.95, commit 373fa6f plus this change,
//! other builds running on the machine at the same time; the range of two full runs (spread up
//! to 2× on the 10,000 paced row). Deliveries/s, then p50 / p99 latency:
//!
//! | subscribers | load | naive `send` loop | hub |
//! |---|---|---|---|
//! | 1,000 | burst of 500 | 1.90–2.01 M/s, 0.28–0.30 / 0.58–1.2 ms | 1.99–2.22 M/s, 8.9–9.7 / 29–31 ms |
//! | 1,000 | paced, 100 | 1.82–1.91 M/s, 0.29 / 0.62–0.66 ms | 1.17–1.18 M/s, 0.46–0.47 / 0.94–1.0 ms |
//! | 10,000 | burst of 100 | 1.26–1.36 M/s, 3.6–4.0 / 8.2–8.4 ms | 1.17–1.24 M/s, 179–194 / 467–510 ms |
//! | 10,000 | paced, 20 | 0.56–1.25 M/s, 3.9–9.8 / 9.4–20 ms | 0.25–0.44 M/s, 10.6–20 / 40–43 ms |
//! | 1,000 + 1 stalled | 200 × 1 KiB | 31.8 % delivered, then blocked for good | 100 % in 0.27–0.40 s |
//! | 10,000 + 1 stalled | 200 × 1 KiB | 31.8 % delivered, then blocked for good | 100 % in 2.0–2.7 s |
//!
//! Reading: with fast readers only, the naive loop is as fast or faster, and its latency is
//! lower. It does every write in the publisher's task, while the hub adds a queue and a task
//! wake-up per delivery (the writer task per connection). Burst latencies of the hub are
//! queueing: the publisher returns at once (publish column) and deliveries follow. The hub's
//! point is the last rows: one subscriber that does not read stops the naive loop for everyone
//! after it, and never affects the hub's other subscribers.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::StreamExt as _;
use sockeye::{Message, Role, WebSocketConfig, WebSocketStream};
use sockeye_hub::{Hub, HubConfig, SlowConsumer};
use tokio::io::DuplexStream;
use tokio::sync::Notify;

/// Payload size: an 8-byte timestamp and padding, a small chat or ticker message.
const PAYLOAD: usize = 64;

/// In-memory pipe capacity per direction.
const PIPE: usize = 64 << 10;

type Ws = WebSocketStream<DuplexStream>;

fn pair() -> (Ws, Ws) {
    let (server, client) = tokio::io::duplex(PIPE);
    (
        WebSocketStream::from_raw(server, Role::Server, WebSocketConfig::default(), &[]),
        WebSocketStream::from_raw(client, Role::Client, WebSocketConfig::default(), &[]),
    )
}

/// A message carrying the nanoseconds since `start` at which it was published.
fn stamped(start: Instant) -> Message {
    let mut payload = vec![b'.'; PAYLOAD];
    let nanos = start.elapsed().as_nanos() as u64;
    payload[..8].copy_from_slice(&nanos.to_be_bytes());
    Message::binary(payload)
}

/// Deliveries so far, and a wake-up for the publisher when a message reached everyone.
#[derive(Default)]
struct Progress {
    received: AtomicUsize,
    complete: Notify,
}

impl Progress {
    /// Waits until `deliveries` messages were received in all.
    async fn wait_for(&self, deliveries: usize) {
        while self.received.load(Ordering::Acquire) < deliveries {
            self.complete.notified().await;
        }
    }
}

/// Reads `messages` data messages; returns each one's latency in microseconds.
fn spawn_client(
    mut ws: Ws,
    messages: usize,
    start: Instant,
    progress: Arc<Progress>,
    subscribers: usize,
) -> tokio::task::JoinHandle<Vec<u32>> {
    tokio::spawn(async move {
        let mut latencies = Vec::with_capacity(messages);
        while latencies.len() < messages {
            match ws.next().await {
                Some(Ok(message)) if message.is_data() => {
                    let sent = u64::from_be_bytes(message.as_payload()[..8].try_into().unwrap());
                    let now = start.elapsed().as_nanos() as u64;
                    latencies.push((now.saturating_sub(sent) / 1_000) as u32);
                    let received = progress.received.fetch_add(1, Ordering::AcqRel) + 1;
                    if received % subscribers == 0 {
                        progress.complete.notify_one();
                    }
                }
                Some(Ok(_)) => {}
                other => panic!("client: {other:?}"),
            }
        }
        latencies
    })
}

#[derive(Debug, Clone, Copy)]
enum Mode {
    Hub,
    Naive,
}

struct Report {
    elapsed: Duration,
    publish_time: Duration,
    latencies: Vec<u32>,
}

/// `paced`: publish the next message only once the previous one reached every subscriber
/// (latency without queueing); otherwise publish the whole burst at once (throughput).
async fn run(mode: Mode, subscribers: usize, messages: usize, paced: bool) -> Report {
    let start = Instant::now();
    let progress = Arc::new(Progress::default());
    let mut clients = Vec::with_capacity(subscribers);
    let mut servers = Vec::with_capacity(subscribers);
    for _ in 0..subscribers {
        let (server, client) = pair();
        servers.push(server);
        clients.push(spawn_client(
            client,
            messages,
            start,
            progress.clone(),
            subscribers,
        ));
    }
    let t0 = Instant::now();
    let mut servers_done = Vec::with_capacity(subscribers);
    let publish_time = match mode {
        Mode::Hub => {
            let hub = Hub::new(
                HubConfig::default()
                    .max_queued_messages(messages)
                    .max_queued_size(usize::MAX)
                    .slow_consumer(SlowConsumer::Drop),
            );
            let mut writers = Vec::with_capacity(subscribers);
            for mut ws in servers {
                let mut subscriber = hub.subscriber();
                subscriber.subscribe("ticker");
                writers.push(tokio::spawn(async move {
                    for _ in 0..messages {
                        let message = subscriber.recv().await.expect("not evicted");
                        ws.feed_prepared(&message).await.expect("feed");
                        if subscriber.queued().0 == 0 {
                            ws.flush().await.expect("flush");
                        }
                    }
                    ws.flush().await.expect("flush");
                    ws
                }));
            }
            let t0 = Instant::now();
            for i in 0..messages {
                let delivered = hub.publish("ticker", stamped(start));
                assert_eq!(delivered, subscribers);
                if paced {
                    progress.wait_for((i + 1) * subscribers).await;
                } else {
                    // Give the writer tasks the cores between messages, as a publisher that
                    // is itself a connection's task would.
                    tokio::task::yield_now().await;
                }
            }
            let publish_time = t0.elapsed();
            for writer in writers {
                // Kept open until every client has read everything.
                servers_done.push(writer.await.expect("writer"));
            }
            assert_eq!(hub.metrics().dropped, 0, "the queues hold the whole burst");
            publish_time
        }
        Mode::Naive => {
            let t0 = Instant::now();
            for i in 0..messages {
                let message = stamped(start);
                for ws in &mut servers {
                    ws.send(message.clone()).await.expect("send");
                }
                if paced {
                    progress.wait_for((i + 1) * subscribers).await;
                }
            }
            let publish_time = t0.elapsed();
            servers_done = servers;
            publish_time
        }
    };
    let mut latencies = Vec::with_capacity(subscribers * messages);
    for client in clients {
        latencies.extend(client.await.expect("client"));
    }
    let elapsed = t0.elapsed();
    drop(servers_done);
    Report {
        elapsed,
        publish_time,
        latencies,
    }
}

/// Size of the messages of the stalled-subscriber run: 1 KiB, so that the burst overflows the
/// stalled connection's pipe and write buffer (64 KiB each).
const STALL_PAYLOAD: usize = 1024;

/// How long the stalled-subscriber run may take.
const STALL_LIMIT: Duration = Duration::from_secs(10);

/// One subscriber in the middle of the list never reads. Returns the share of the
/// deliveries to the others that were made within [`STALL_LIMIT`], and the time taken.
async fn run_stalled(mode: Mode, subscribers: usize, messages: usize) -> (f64, Duration) {
    let start = Instant::now();
    let progress = Arc::new(Progress::default());
    let mut tasks = Vec::new();
    let mut servers = Vec::with_capacity(subscribers + 1);
    let mut stalled_client = None;
    for i in 0..=subscribers {
        let (server, client) = pair();
        servers.push(server);
        if i == subscribers / 2 {
            stalled_client = Some(client);
        } else {
            let client = spawn_client(client, messages, start, progress.clone(), subscribers);
            tasks.push(client.abort_handle());
        }
    }
    let message = || {
        let mut payload = vec![b'.'; STALL_PAYLOAD];
        payload[..8].copy_from_slice(&(start.elapsed().as_nanos() as u64).to_be_bytes());
        Message::binary(payload)
    };
    let t0 = Instant::now();
    let mut _keep = Vec::new();
    let publishing = async {
        match mode {
            Mode::Hub => {
                let hub = Hub::new(
                    HubConfig::default()
                        .max_queued_messages(messages)
                        .max_queued_size(usize::MAX)
                        .slow_consumer(SlowConsumer::Drop),
                );
                for mut ws in servers.drain(..) {
                    let mut subscriber = hub.subscriber();
                    subscriber.subscribe("ticker");
                    let writer = tokio::spawn(async move {
                        while let Some(message) = subscriber.recv().await {
                            ws.feed_prepared(&message).await.expect("feed");
                            if subscriber.queued().0 == 0 {
                                ws.flush().await.expect("flush");
                            }
                        }
                    });
                    tasks.push(writer.abort_handle());
                }
                for _ in 0..messages {
                    hub.publish("ticker", message());
                    tokio::task::yield_now().await;
                }
                _keep.push(hub);
            }
            Mode::Naive => {
                for _ in 0..messages {
                    let message = message();
                    for ws in &mut servers {
                        ws.send(message.clone()).await.expect("send");
                    }
                }
            }
        }
        progress.wait_for(subscribers * messages).await;
    };
    let _ = tokio::time::timeout(STALL_LIMIT, publishing).await;
    let elapsed = t0.elapsed();
    for task in tasks {
        task.abort();
    }
    drop(stalled_client);
    let done = progress.received.load(Ordering::Acquire);
    (done as f64 / (subscribers * messages) as f64, elapsed)
}

fn percentile(sorted: &[u32], p: f64) -> u32 {
    let index = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[index]
}

fn main() {
    // `cargo bench` passes `--bench`; nothing else is accepted.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let override_messages = std::env::var("SOCKEYE_FANOUT_MESSAGES")
        .ok()
        .and_then(|v| v.parse::<usize>().ok());
    println!(
        "fan-out of {PAYLOAD}-byte binary messages, one publisher, {} worker threads",
        std::thread::available_parallelism().map_or(1, |n| n.get())
    );
    println!(
        "{:>7} {:>6} {:>6} {:>9} {:>12} {:>12} {:>10} {:>10} {:>10}",
        "subs", "mode", "load", "messages", "deliveries", "deliv/s", "publish", "p50 µs", "p99 µs"
    );
    // (subscribers, burst messages, paced messages)
    for (subscribers, burst, paced) in [(1_000, 500, 100), (10_000, 100, 20)] {
        for (load, messages) in [("burst", burst), ("paced", paced)] {
            let messages = override_messages.unwrap_or(messages);
            for mode in [Mode::Naive, Mode::Hub] {
                // The publisher is a task on a worker thread, as a connection's task would be.
                let run = run(mode, subscribers, messages, load == "paced");
                let mut report = runtime
                    .block_on(async { tokio::spawn(run).await })
                    .expect("the run panicked");
                report.latencies.sort_unstable();
                let deliveries = report.latencies.len();
                assert_eq!(deliveries, subscribers * messages);
                println!(
                    "{:>7} {:>6} {:>6} {:>9} {:>12} {:>12.0} {:>9.1?} {:>10} {:>10}",
                    subscribers,
                    format!("{mode:?}").to_lowercase(),
                    load,
                    messages,
                    deliveries,
                    deliveries as f64 / report.elapsed.as_secs_f64(),
                    report.publish_time,
                    percentile(&report.latencies, 0.50),
                    percentile(&report.latencies, 0.99),
                );
            }
        }
    }
    println!(
        "\none subscriber never reads ({STALL_PAYLOAD}-byte messages, run limited to {STALL_LIMIT:?}):"
    );
    println!(
        "{:>7} {:>6} {:>9} {:>22} {:>10}",
        "subs", "mode", "messages", "delivered to others", "time"
    );
    for subscribers in [1_000, 10_000] {
        let messages = override_messages.unwrap_or(200);
        for mode in [Mode::Naive, Mode::Hub] {
            let (share, elapsed) = runtime
                .block_on(async { tokio::spawn(run_stalled(mode, subscribers, messages)).await })
                .expect("the run panicked");
            println!(
                "{:>7} {:>6} {:>9} {:>21.1}% {:>9.1?}",
                subscribers,
                format!("{mode:?}").to_lowercase(),
                messages,
                share * 100.0,
                elapsed
            );
        }
    }
}
