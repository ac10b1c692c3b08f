//! `sockeye bench URL`: a load generator for any WebSocket echo server; `sockeye bench --fanout
//! URL` one for broadcast servers (in [`fanout`]).
//!
//! Opens `--connections` connections, keeps up to `--in-flight` messages of `--size` bytes
//! outstanding on each (optionally paced to `--rate` messages per second in total), for
//! `--duration` seconds or until `--messages` messages were sent (after an unmeasured
//! `--warmup`), and reports throughput, the round-trip latency of every message (from queuing
//! it, or with `--rate` from when the schedule meant to send it, to receiving its echo) in one
//! HDR histogram for all connections, connections opened and failed, and errors by kind.
//!
//! Every echo is checked: its length, its type, and its first byte (which also catches echoes
//! out of order); every [`FULL_CHECK_EVERY`]th echo is compared byte for byte.

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, VecDeque};
use std::io::IsTerminal as _;
use std::time::Duration;

use futures_util::StreamExt as _;
use hdrhistogram::Histogram;
use sockeye::{ClientStream, CloseCode, Message};
use tokio::time::Instant;

use crate::connect::Exit;
use crate::{chain, seconds};

mod fanout;

/// The exit statuses and the report, shown by `sockeye bench --help`.
pub(crate) const EXIT_HELP: &str = "\
Echo mode (the default) measures round trips; --fanout measures a broadcast server instead.

Report: messages/s and MB/s count echoed messages (payload bytes, each way) over the run: the
whole --duration, or until the last echo of --messages, both after --warmup (whose echoes are
checked but not counted). Latency is the round trip of every message, from queuing it to
receiving its echo, from an HDR histogram (1 us to 1 h, 3 significant digits). With --rate, a
round trip starts when the schedule meant to send the message, not when it could be sent: the
messages held up behind a stalled server count that wait (no coordinated omission).

SIGINT (Ctrl-C) or SIGTERM stops the run early: the echoes outstanding are awaited, and the
report covers the run until then (marked interrupted). A second one quits at once (status 130).

Fan-out (--fanout): --subscribers connections open to URL, a server that relays every message
a client sends to every other client on the same path (`sockeye serve --mode broadcast`, Bun's
ws.subscribe + ws.publish, a Node ws broadcast loop). Once all are open (and 0.5 s later),
--publishers sockeye clients send --size-byte binary messages (default 100, at least 20) at
--rate messages/s in total, on a fixed schedule, for --warmup + --duration seconds. Each payload
carries its publisher, sequence number and scheduled send time. Subscribers read raw frames
(cheap enough for about a million deliveries a second on one core), answer pings, record close
frames, and stop once they have every message sent, or --drain-timeout seconds after the end.
  offered    --rate × subscribers opened (deliveries/s)
  achieved   deliveries of messages sent after --warmup, per second of --duration (or until
             the last of them arrived, if later)
  missed     messages sent (warm-up included) that a subscriber never received, summed over
             subscribers (a disconnected subscriber misses all it did not get)
  duplicates, out of order   messages received twice, or after a later one of their publisher
  disconnected               subscribers the server closed (by close code; 1006: no close frame)
  latency    scheduled send to the read that brought the message (HDR histogram, as above)
  messages per read          frames parsed per socket read of a subscriber (server batching)
  server CPU with --pid PID: the server's CPU seconds (/proc/PID/stat) from the end of the
             warm-up until the subscribers are done, and the deliveries received in that window
             per server CPU-second; client CPU: this process's, over the same window
ws:// and wss:// (with --ca) both work. --connections, --in-flight, --messages, --text and
--deflate do not apply; the limit and keepalive options apply to the publishers. SIGINT quits a
fan-out run at once, without a report. Every run ends by itself: at most --warmup + --duration
+ --drain-timeout + 10 s after the subscribers are open.

Exit status:
  0  every connection opened and every echo came back intact (--fanout: every subscriber got
     every message once, in order, and stayed connected)
  1  a connection failed to open or broke, an echo was wrong or missing (--fanout: a message
     was missed, duplicated, out of order or malformed, or a subscriber was disconnected)
  2  bad usage (an invalid option or URL, an unusable --ca file)";

/// Every this many echoes on a connection, the whole payload is compared (the others: length,
/// type and first byte).
const FULL_CHECK_EVERY: u64 = 64;

/// Largest `--size`: the library's default message size limit.
const MAX_SIZE: usize = 16 << 20;

/// The default `--size` of the echo mode.
const ECHO_SIZE: usize = 125;

/// The default `--size` with `--fanout`.
const FANOUT_SIZE: usize = 100;

/// Highest latency the histogram records, in microseconds (larger ones are clamped).
const MAX_LATENCY_US: u64 = 3_600_000_000;

/// Arguments of `sockeye bench`.
#[derive(Debug, clap::Args)]
pub(crate) struct BenchArgs {
    /// The `ws://` or `wss://` URL of an echo server (with --fanout: of a broadcast server).
    url: String,
    /// Measure a broadcast server's fan-out instead of echoes (see below).
    #[arg(long)]
    fanout: bool,
    /// With --fanout: subscriber connections, which only receive.
    #[arg(long, requires = "fanout", default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    subscribers: u32,
    /// With --fanout: publisher connections, which send --rate messages/s between them.
    #[arg(long, requires = "fanout", default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=1000))]
    publishers: u32,
    /// With --fanout: the server's process id, to report its CPU time (Linux).
    #[arg(long, requires = "fanout", value_name = "PID")]
    pid: Option<u32>,
    /// Connections opened at once.
    #[arg(long, short = 'c', default_value_t = 10, conflicts_with = "fanout", value_parser = clap::value_parser!(u32).range(1..=100_000))]
    connections: u32,
    /// Payload size of every message, in bytes (at most 16 MiB; default 125, with --fanout 100,
    /// 20 to 65536).
    #[arg(long, value_parser = parse_size)]
    size: Option<usize>,
    /// Messages outstanding (sent, echo not yet received) per connection.
    #[arg(long, default_value_t = 1, conflicts_with = "fanout", value_parser = clap::value_parser!(u32).range(1..=100_000))]
    in_flight: u32,
    /// Send for this many seconds (default 10 unless --messages is given).
    #[arg(long, value_name = "SECS", conflicts_with = "messages", value_parser = crate::positive)]
    duration: Option<f64>,
    /// Send this many messages in total, then stop.
    #[arg(long, value_name = "N", conflicts_with = "fanout", value_parser = clap::value_parser!(u64).range(1..))]
    messages: Option<u64>,
    /// Messages per second in total, spread over the connections; 0 = as fast as echoes come
    /// back. With --fanout (required): sent by the publishers together.
    #[arg(long, value_name = "MSGS_PER_SEC", default_value_t = 0.0, value_parser = crate::non_negative)]
    rate: f64,
    /// Send text messages (ASCII) instead of binary ones.
    #[arg(long, conflicts_with = "fanout")]
    text: bool,
    /// Print the report as one JSON object.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    ca: crate::CaFile,
    /// Message limits, compression (--deflate) and timeouts, as for `sockeye serve`.
    #[command(flatten)]
    limits: crate::Limits,
    /// Send for this many seconds first without measuring (connection buffers, the server's
    /// caches and the CPU's clock settle); --duration and --messages count after it.
    #[arg(long, value_name = "SECS", default_value_t = 0.0, value_parser = crate::non_negative)]
    warmup: f64,
    /// At the end, how many seconds to wait for the echoes (with --fanout: deliveries) still
    /// outstanding.
    #[arg(long, value_name = "SECS", default_value_t = 10.0, value_parser = crate::non_negative)]
    drain_timeout: f64,
}

fn parse_size(s: &str) -> Result<usize, String> {
    match s.parse::<usize>() {
        Ok(size) if (1..=MAX_SIZE).contains(&size) => Ok(size),
        _ => Err(format!("expected 1 to {MAX_SIZE} bytes")),
    }
}

/// What every connection does.
#[derive(Debug)]
struct Plan {
    size: usize,
    text: bool,
    in_flight: usize,
    /// Time between two sends on one connection, when paced.
    interval: Option<Duration>,
    /// The end of the warm-up: messages whose round trip starts earlier are not measured.
    measure_from: Instant,
    deadline: Option<Instant>,
    drain_timeout: Duration,
}

/// State shared by the connections (all run on one thread).
#[derive(Debug)]
struct Shared {
    /// Messages left to send with `--messages`.
    budget: Cell<Option<u64>>,
    /// Echoes received so far, for the progress bar.
    echoed: Cell<u64>,
    /// Set by SIGINT or SIGTERM: stop sending, collect the echoes outstanding, report.
    stop: tokio_util::sync::CancellationToken,
    /// Round trips in microseconds, of every connection: one histogram (about 180 KB), not one
    /// a connection, so that memory does not grow with `--connections`.
    latency: RefCell<Histogram<u64>>,
}

impl Default for Shared {
    fn default() -> Self {
        Self {
            budget: Cell::new(None),
            echoed: Cell::new(0),
            stop: tokio_util::sync::CancellationToken::new(),
            latency: RefCell::new(latency_histogram()),
        }
    }
}

/// An empty latency histogram: 1 us to [`MAX_LATENCY_US`], 3 significant digits.
fn latency_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, MAX_LATENCY_US, 3).expect("constant histogram bounds are valid")
}

impl Shared {
    /// Takes one message from the budget; false when it is spent.
    fn take(&self) -> bool {
        match self.budget.get() {
            None => true,
            Some(0) => false,
            Some(n) => {
                self.budget.set(Some(n - 1));
                true
            }
        }
    }
}

/// What one connection (or all of them, merged) measured.
#[derive(Debug)]
struct Report {
    sent: u64,
    echoed: u64,
    errors: BTreeMap<String, u64>,
    /// When the last measured echo arrived.
    finished: Option<Instant>,
    /// A signal stopped the run early.
    interrupted: bool,
}

impl Report {
    fn new() -> Self {
        Self {
            sent: 0,
            echoed: 0,
            errors: BTreeMap::new(),
            finished: None,
            interrupted: false,
        }
    }

    fn error(&mut self, kind: impl Into<String>) {
        *self.errors.entry(kind.into()).or_default() += 1;
    }

    fn merge(&mut self, other: Self) {
        self.sent += other.sent;
        self.echoed += other.echoed;
        for (kind, count) in other.errors {
            *self.errors.entry(kind).or_default() += count;
        }
        self.finished = self.finished.max(other.finished);
    }
}

/// The payload of message `seq`: ASCII letters starting at `a + seq % 26`, so that an echo out
/// of order (or of another message) differs in its first byte.
fn payload(seq: u64, size: usize) -> Vec<u8> {
    let start = (seq % 26) as usize;
    (0..size).map(|i| b'a' + ((start + i) % 26) as u8).collect()
}

/// Runs `sockeye bench` and prints its report.
///
/// # Errors
///
/// When the CA file cannot be used or no connection opened; [`Exit`] with status 1 (after the
/// report) when any error was counted.
pub(crate) async fn run(args: BenchArgs) -> anyhow::Result<()> {
    let config = args.limits.config().close_timeout(Duration::from_secs(5));
    let config = match args.ca.apply(config) {
        Ok(config) => config,
        Err(message) => {
            eprintln!("sockeye: {message}");
            return Err(Exit(2).into());
        }
    };
    if args.fanout {
        return fanout::run(&args, config).await;
    }
    if let Err(e) = sockeye::WsUrl::parse(&args.url) {
        eprintln!("sockeye: invalid url {:?}: {e}", args.url);
        return Err(Exit(2).into());
    }
    let connections = args.connections as usize;
    // Installed now: a signal while connecting or running stops the run, which still reports.
    let interrupted = crate::termination();

    // Open every connection first; the clock starts once they are all settled.
    let attempts = futures_util::future::join_all((0..connections).map(|_| {
        sockeye::ClientBuilder::new(args.url.clone())
            .config(config.clone())
            .connect()
    }))
    .await;
    let mut total = Report::new();
    let mut streams = Vec::with_capacity(connections);
    for attempt in attempts {
        match attempt {
            Ok((ws, _)) => streams.push(ws),
            Err(e) => total.error(format!("connect: {}", chain(&e))),
        }
    }
    let opened = streams.len();
    if opened == 0 {
        print_report(&args, &total, &latency_histogram(), opened, Duration::ZERO);
        anyhow::bail!("no connection could be opened");
    }

    let duration = match (args.duration, args.messages) {
        (Some(secs), _) => Some(seconds(secs).unwrap_or_default()),
        (None, None) => Some(Duration::from_secs(10)),
        (None, Some(_)) => None,
    };
    let start = Instant::now();
    let warmup = seconds(args.warmup).unwrap_or_default();
    let measure_from = start + warmup;
    let plan = Plan {
        size: args.size.unwrap_or(ECHO_SIZE),
        text: args.text,
        in_flight: args.in_flight as usize,
        interval: seconds(args.rate).map(|_| Duration::from_secs_f64(opened as f64 / args.rate)),
        measure_from,
        deadline: duration.map(|d| measure_from + d),
        drain_timeout: seconds(args.drain_timeout).unwrap_or(Duration::from_secs(10)),
    };
    let shared = Shared::default();
    shared.budget.set(args.messages);

    let progress = std::io::stderr().is_terminal().then(|| {
        let bar = match (duration, args.messages) {
            (Some(d), _) => indicatif::ProgressBar::new((warmup + d).as_millis() as u64),
            (None, Some(n)) => indicatif::ProgressBar::new(n),
            (None, None) => indicatif::ProgressBar::no_length(),
        };
        bar.set_style(
            indicatif::ProgressStyle::with_template("{bar:40} {elapsed} {msg}")
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        bar
    });
    eprintln!(
        "sockeye bench: {opened} connection(s) open, running{}",
        match (duration, args.messages) {
            (Some(d), _) => format!(" for {:.1} s", d.as_secs_f64()),
            (None, Some(n)) => format!(" until {n} messages are echoed"),
            (None, None) => String::new(),
        }
    );
    tokio::pin!(interrupted);
    let mut was_interrupted = false;
    let work = futures_util::future::join_all(
        streams
            .into_iter()
            .enumerate()
            .map(|(index, ws)| drive(ws, &plan, &shared, start + stagger(&plan, index, opened))),
    );
    tokio::pin!(work);
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    let reports = loop {
        tokio::select! {
            reports = &mut work => break reports,
            () = &mut interrupted, if !was_interrupted => {
                was_interrupted = true;
                shared.stop.cancel();
                eprintln!("sockeye bench: interrupted: collecting the echoes outstanding (again to quit)");
                let again = crate::termination();
                tokio::spawn(async move {
                    again.await;
                    std::process::exit(130);
                });
            }
            _ = tick.tick() => {
                if let Some(bar) = &progress {
                    let elapsed = start.elapsed();
                    let echoed = shared.echoed.get();
                    bar.set_position(match duration {
                        Some(_) => elapsed.as_millis() as u64,
                        None => echoed,
                    });
                    bar.set_message(format!(
                        "{echoed} echoed, {:.0} msg/s",
                        echoed as f64 / elapsed.as_secs_f64().max(1e-3)
                    ));
                }
            }
        }
    };
    if let Some(bar) = progress {
        bar.finish_and_clear();
    }
    for report in reports {
        total.merge(report);
    }
    // The run lasts the whole --duration (a paced run's last echo may come before its end),
    // plus the wait for the last echoes; an interrupted run, until its last echo.
    let last_echo = total.finished.map_or(Duration::ZERO, |end| {
        end.saturating_duration_since(measure_from)
    });
    let elapsed = match duration {
        Some(duration) if !was_interrupted => last_echo.max(duration),
        _ => last_echo,
    };
    total.interrupted = was_interrupted;
    print_report(&args, &total, &shared.latency.borrow(), opened, elapsed);
    if total.errors.is_empty() {
        Ok(())
    } else {
        Err(Exit(1).into())
    }
}

/// When connection `index` of `opened` sends its first paced message, after the start: the
/// connections take turns, so that the total rate is even rather than `opened` messages at
/// once every interval.
fn stagger(plan: &Plan, index: usize, opened: usize) -> Duration {
    plan.interval.map_or(Duration::ZERO, |interval| {
        interval.mul_f64(index as f64 / opened.max(1) as f64)
    })
}

/// Runs one connection until the plan says stop and its echoes are in, then closes it. With
/// pacing, its first message is due at `first_slot`.
async fn drive(mut ws: ClientStream, plan: &Plan, shared: &Shared, first_slot: Instant) -> Report {
    let mut report = Report::new();
    let high_water = ws.config().write_buffer_high_water;
    // Sequence number, the time its round trip starts, whether it is measured (not warm-up).
    let mut outstanding: VecDeque<(u64, Instant, bool)> = VecDeque::with_capacity(plan.in_flight);
    let mut next_seq: u64 = 0;
    let mut next_slot = first_slot;
    let mut stopping = false;
    let mut drain_deadline: Option<Instant> = None;
    let mut connection_over = false;
    loop {
        let now = Instant::now();
        if plan.deadline.is_some_and(|deadline| now >= deadline) || shared.stop.is_cancelled() {
            stopping = true;
        }
        let mut wait_for_slot = None;
        while !stopping && outstanding.len() < plan.in_flight && ws.buffered_amount() < high_water {
            // Unpaced, a round trip starts when the message is queued; paced, when the schedule
            // meant to send it: after a stall the messages due meanwhile go out as fast as
            // --in-flight allows, and the time they waited for their turn counts as latency
            // (no coordinated omission). No slot is skipped, so the offered load is --rate.
            let mut due = None;
            if let Some(interval) = plan.interval {
                if next_slot > now {
                    wait_for_slot = Some(next_slot);
                    break;
                }
                due = Some(next_slot);
                next_slot += interval;
            }
            let round_trip_start = due.unwrap_or_else(Instant::now);
            let measured = round_trip_start >= plan.measure_from;
            if measured && !shared.take() {
                stopping = true;
                break;
            }
            let data = payload(next_seq, plan.size);
            let message = if plan.text {
                // ASCII letters only.
                Message::text(String::from_utf8(data).unwrap_or_default())
            } else {
                Message::binary(data)
            };
            if let Err(e) = ws.try_send(message) {
                report.error(format!("send: {}", chain(&e)));
                connection_over = true;
                break;
            }
            outstanding.push_back((next_seq, round_trip_start, measured));
            next_seq += 1;
            if measured {
                report.sent += 1;
            }
        }
        if connection_over {
            break;
        }
        if stopping {
            if outstanding.is_empty() {
                break;
            }
            drain_deadline.get_or_insert(now + plan.drain_timeout);
        }
        let deadline = plan.deadline.filter(|_| !stopping);
        tokio::select! {
            item = ws.next() => match item {
                Some(Ok(message @ (Message::Text(_) | Message::Binary(_)))) => {
                    let Some((seq, sent_at, measured)) = outstanding.pop_front() else {
                        report.error("unexpected message (nothing outstanding)");
                        continue;
                    };
                    let received = message.as_payload();
                    let expected_kind = plan.text == matches!(message, Message::Text(_));
                    let ok = expected_kind
                        && received.len() == plan.size
                        && received.first() == payload(seq, 1).first()
                        && (seq % FULL_CHECK_EVERY != 0 || received == payload(seq, plan.size));
                    if !ok {
                        report.error("echo differs from the message sent");
                    }
                    if !measured {
                        continue;
                    }
                    let micros = u64::try_from(sent_at.elapsed().as_micros()).unwrap_or(u64::MAX);
                    shared
                        .latency
                        .borrow_mut()
                        .saturating_record(micros.clamp(1, MAX_LATENCY_US));
                    report.echoed += 1;
                    report.finished = Some(Instant::now());
                    shared.echoed.set(shared.echoed.get() + 1);
                }
                Some(Ok(_)) => {}
                Some(Err(e)) => {
                    report.error(format!("connection: {}", chain(&e)));
                    connection_over = true;
                    break;
                }
                None => {
                    let code = ws.close_info().map_or(1006, |closed| closed.code.0);
                    report.error(format!("connection: closed by the server with {code}"));
                    connection_over = true;
                    break;
                }
            },
            () = shared.stop.cancelled(), if !stopping => {}
            () = sleep_until(wait_for_slot) => {}
            () = sleep_until(deadline) => {}
            () = sleep_until(drain_deadline) => {
                report.error("echoes missing after --drain-timeout");
                break;
            }
        }
    }
    if !connection_over {
        // Bounded by the close timeout.
        if let Err(e) = ws.close(CloseCode::NORMAL, "").await {
            report.error(format!("close: {}", chain(&e)));
        }
    }
    report
}

/// Sleeps until `at`; forever when `None`.
async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

fn print_report(
    args: &BenchArgs,
    report: &Report,
    latency: &Histogram<u64>,
    opened: usize,
    elapsed: Duration,
) {
    let secs = elapsed.as_secs_f64();
    let rate = if secs > 0.0 {
        report.echoed as f64 / secs
    } else {
        0.0
    };
    let size = args.size.unwrap_or(ECHO_SIZE);
    let megabytes = rate * size as f64 / 1e6;
    let failed = args.connections as usize - opened;
    let quantile = |q: f64| {
        if latency.is_empty() {
            0
        } else {
            latency.value_at_quantile(q)
        }
    };
    let max = if latency.is_empty() { 0 } else { latency.max() };
    if args.json {
        let value = serde_json::json!({
            "url": args.url,
            "connections": { "requested": args.connections, "opened": opened, "failed": failed },
            "size": size,
            "type": if args.text { "text" } else { "binary" },
            "in_flight": args.in_flight,
            "interrupted": report.interrupted,
            "messages_sent": report.sent,
            "messages_echoed": report.echoed,
            "elapsed_secs": secs,
            "messages_per_sec": rate,
            "megabytes_per_sec_each_way": megabytes,
            "latency_us": {
                "p50": quantile(0.5), "p90": quantile(0.9), "p99": quantile(0.99),
                "p99_9": quantile(0.999), "max": max,
            },
            "errors": report.errors,
        });
        println!("{value}");
        return;
    }
    let ms = |micros: u64| micros as f64 / 1000.0;
    println!(
        "sockeye bench {}: {} connections ({opened} opened, {failed} failed), {} B {} messages, \
         {} in flight per connection",
        args.url,
        args.connections,
        size,
        if args.text { "text" } else { "binary" },
        args.in_flight
    );
    println!(
        "messages:   {} sent, {} echoed in {secs:.2} s: {rate:.0} msg/s",
        report.sent, report.echoed
    );
    println!("throughput: {megabytes:.2} MB/s each way (payload bytes, 1 MB = 10^6 B)");
    println!(
        "latency:    p50 {:.3} ms, p90 {:.3} ms, p99 {:.3} ms, p99.9 {:.3} ms, max {:.3} ms",
        ms(quantile(0.5)),
        ms(quantile(0.9)),
        ms(quantile(0.99)),
        ms(quantile(0.999)),
        ms(max)
    );
    if report.interrupted {
        println!("interrupted: the run was stopped early by a signal");
    }
    print_errors(&report.errors);
}

/// The report's error lines: the total, then each kind with its count.
fn print_errors(errors: &BTreeMap<String, u64>) {
    let total: u64 = errors.values().sum();
    println!("errors:     {total}");
    for (kind, count) in errors {
        println!("  {count} × {kind}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payloads_differ_in_their_first_byte() {
        assert_eq!(payload(0, 3), b"abc");
        assert_eq!(payload(27, 3), b"bcd");
        assert_ne!(payload(1, 1), payload(2, 1));
    }

    #[test]
    fn budget_is_spent_once() {
        let shared = Shared::default();
        shared.budget.set(Some(2));
        assert!(shared.take() && shared.take());
        assert!(!shared.take());
        shared.budget.set(None);
        assert!(shared.take());
    }
}
