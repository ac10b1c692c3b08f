//! `sockeye bench URL`: a load generator for any WebSocket echo server.
//!
//! Opens `--connections` connections, keeps up to `--in-flight` messages of `--size` bytes
//! outstanding on each (optionally paced to `--rate` messages per second in total), for
//! `--duration` seconds or until `--messages` messages were sent, and reports throughput, the
//! round-trip latency of every message (from queuing it to receiving its echo) as an HDR
//! histogram, connections opened and failed, and errors by kind.
//!
//! Every echo is checked: its length, its type, and its first byte (which also catches echoes
//! out of order); every [`FULL_CHECK_EVERY`]th echo is compared byte for byte.

use std::cell::Cell;
use std::collections::{BTreeMap, VecDeque};
use std::fmt::Write as _;
use std::io::IsTerminal as _;
use std::path::PathBuf;
use std::time::Duration;

use futures_util::StreamExt as _;
use hdrhistogram::Histogram;
use sockeye::{ClientStream, CloseCode, Message, WebSocketConfig};
use tokio::time::Instant;

use crate::connect::Exit;

/// The exit statuses and the report, shown by `sockeye bench --help`.
pub(crate) const EXIT_HELP: &str = "\
Report: messages/s and MB/s count echoed messages (payload bytes, each way) over the run (the
whole --duration, or until the last echo of --messages); latency is the round trip of every
message, from queuing it to receiving its echo, from an HDR histogram (3 significant digits).

Exit status:
  0  every connection opened and every echo came back intact
  1  a connection failed to open or broke, an echo was wrong or missing
  2  bad usage (an invalid option or URL)";

/// Every this many echoes on a connection, the whole payload is compared (the others: length,
/// type and first byte).
const FULL_CHECK_EVERY: u64 = 64;

/// Largest `--size`: the library's default message size limit.
const MAX_SIZE: usize = 16 << 20;

/// Highest latency the histogram records, in microseconds (larger ones are clamped).
const MAX_LATENCY_US: u64 = 3_600_000_000;

/// Arguments of `sockeye bench`.
#[derive(Debug, clap::Args)]
pub(crate) struct BenchArgs {
    /// The `ws://` or `wss://` URL of an echo server.
    url: String,
    /// Connections opened at once.
    #[arg(long, short = 'c', default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    connections: u32,
    /// Payload size of every message, in bytes (at most 16 MiB).
    #[arg(long, default_value_t = 125, value_parser = parse_size)]
    size: usize,
    /// Messages outstanding (sent, echo not yet received) per connection.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    in_flight: u32,
    /// Send for this many seconds (default 10 unless --messages is given).
    #[arg(long, value_name = "SECS", conflicts_with = "messages")]
    duration: Option<f64>,
    /// Send this many messages in total, then stop.
    #[arg(long, value_name = "N")]
    messages: Option<u64>,
    /// Messages per second in total, spread over the connections; 0 = as fast as echoes come
    /// back.
    #[arg(long, value_name = "MSGS_PER_SEC", default_value_t = 0.0)]
    rate: f64,
    /// Send text messages (ASCII) instead of binary ones.
    #[arg(long)]
    text: bool,
    /// Print the report as one JSON object.
    #[arg(long)]
    json: bool,
    /// Also trust the CA certificates in this PEM file for wss://.
    #[arg(long, value_name = "FILE")]
    ca: Option<PathBuf>,
    /// At the end, how many seconds to wait for the echoes still outstanding.
    #[arg(long, value_name = "SECS", default_value_t = 10.0)]
    drain_timeout: f64,
}

fn parse_size(s: &str) -> Result<usize, String> {
    match s.parse::<usize>() {
        Ok(size) if (1..=MAX_SIZE).contains(&size) => Ok(size),
        _ => Err(format!("expected 1 to {MAX_SIZE} bytes")),
    }
}

/// `secs` as a duration, `None` for 0 or anything not finite and positive.
fn seconds(secs: f64) -> Option<Duration> {
    (secs.is_finite() && secs > 0.0).then(|| Duration::from_secs_f64(secs))
}

/// What every connection does.
#[derive(Debug)]
struct Plan {
    size: usize,
    text: bool,
    in_flight: usize,
    /// Time between two sends on one connection, when paced.
    interval: Option<Duration>,
    deadline: Option<Instant>,
    drain_timeout: Duration,
}

/// State shared by the connections (all run on one thread).
#[derive(Debug, Default)]
struct Shared {
    /// Messages left to send with `--messages`.
    budget: Cell<Option<u64>>,
    /// Echoes received so far, for the progress bar.
    echoed: Cell<u64>,
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
    /// Round trips in microseconds.
    latency: Histogram<u64>,
    errors: BTreeMap<String, u64>,
    /// When the last echo arrived (or the connection gave up).
    finished: Option<Instant>,
}

impl Report {
    fn new() -> Self {
        Self {
            sent: 0,
            echoed: 0,
            latency: Histogram::new_with_bounds(1, MAX_LATENCY_US, 3)
                .expect("constant histogram bounds are valid"),
            errors: BTreeMap::new(),
            finished: None,
        }
    }

    fn error(&mut self, kind: impl Into<String>) {
        *self.errors.entry(kind.into()).or_default() += 1;
    }

    fn merge(&mut self, other: Self) {
        self.sent += other.sent;
        self.echoed += other.echoed;
        // Same bounds on both sides: adding cannot fail.
        let _ = self.latency.add(&other.latency);
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

/// `e` and its sources, joined with `: `.
fn chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        let _ = write!(text, ": {cause}");
        source = cause.source();
    }
    text
}

/// Runs `sockeye bench` and prints its report.
///
/// # Errors
///
/// When the CA file cannot be used or no connection opened; [`Exit`] with status 1 (after the
/// report) when any error was counted.
pub(crate) async fn run(args: BenchArgs) -> anyhow::Result<()> {
    let mut config = WebSocketConfig::default()
        .max_message_size(Some(args.size.max(MAX_SIZE)))
        .max_frame_size(Some(args.size.max(MAX_SIZE)))
        .close_timeout(Duration::from_secs(5));
    if let Some(ca) = &args.ca {
        let pem =
            std::fs::read(ca).map_err(|e| anyhow::anyhow!("cannot read {}: {e}", ca.display()))?;
        config = config.tls_client(sockeye::tls::client_config(Some(&pem))?);
    }
    if let Err(e) = sockeye::WsUrl::parse(&args.url) {
        eprintln!("sockeye: invalid url {:?}: {e}", args.url);
        return Err(Exit(2).into());
    }
    let connections = args.connections as usize;

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
        print_report(&args, &total, opened, Duration::ZERO);
        anyhow::bail!("no connection could be opened");
    }

    let duration = match (args.duration, args.messages) {
        (Some(secs), _) => Some(seconds(secs).unwrap_or_default()),
        (None, None) => Some(Duration::from_secs(10)),
        (None, Some(_)) => None,
    };
    let start = Instant::now();
    let plan = Plan {
        size: args.size,
        text: args.text,
        in_flight: args.in_flight as usize,
        interval: seconds(args.rate).map(|_| Duration::from_secs_f64(opened as f64 / args.rate)),
        deadline: duration.map(|d| start + d),
        drain_timeout: seconds(args.drain_timeout).unwrap_or(Duration::from_secs(10)),
    };
    let shared = Shared::default();
    shared.budget.set(args.messages);

    let progress = std::io::stderr().is_terminal().then(|| {
        let bar = match (duration, args.messages) {
            (Some(d), _) => indicatif::ProgressBar::new(d.as_millis() as u64),
            (None, Some(n)) => indicatif::ProgressBar::new(n),
            (None, None) => indicatif::ProgressBar::no_length(),
        };
        bar.set_style(
            indicatif::ProgressStyle::with_template("{bar:40} {elapsed} {msg}")
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        bar
    });
    let work =
        futures_util::future::join_all(streams.into_iter().map(|ws| drive(ws, &plan, &shared)));
    tokio::pin!(work);
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    let reports = loop {
        tokio::select! {
            reports = &mut work => break reports,
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
    // plus the wait for the last echoes.
    let last_echo = total.finished.map_or(Duration::ZERO, |end| end - start);
    let elapsed = last_echo.max(duration.unwrap_or_default());
    print_report(&args, &total, opened, elapsed);
    if total.errors.is_empty() {
        Ok(())
    } else {
        Err(Exit(1).into())
    }
}

/// Runs one connection until the plan says stop and its echoes are in, then closes it.
async fn drive(mut ws: ClientStream, plan: &Plan, shared: &Shared) -> Report {
    let mut report = Report::new();
    let high_water = ws.config().write_buffer_high_water;
    let mut outstanding: VecDeque<(u64, Instant)> = VecDeque::with_capacity(plan.in_flight);
    let mut next_seq: u64 = 0;
    let mut next_slot = Instant::now();
    let mut stopping = false;
    let mut drain_deadline: Option<Instant> = None;
    let mut connection_over = false;
    loop {
        let now = Instant::now();
        if plan.deadline.is_some_and(|deadline| now >= deadline) {
            stopping = true;
        }
        let mut wait_for_slot = None;
        while !stopping && outstanding.len() < plan.in_flight && ws.buffered_amount() < high_water {
            if let Some(interval) = plan.interval {
                if next_slot > now {
                    wait_for_slot = Some(next_slot);
                    break;
                }
                // Catch up after a stall, but never with a burst of over a second's worth.
                next_slot = (next_slot + interval).max(now - Duration::from_secs(1));
            }
            if !shared.take() {
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
            outstanding.push_back((next_seq, Instant::now()));
            next_seq += 1;
            report.sent += 1;
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
                    let Some((seq, sent_at)) = outstanding.pop_front() else {
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
                    let micros = u64::try_from(sent_at.elapsed().as_micros()).unwrap_or(u64::MAX);
                    report.latency.saturating_record(micros.clamp(1, MAX_LATENCY_US));
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
            () = sleep_until(wait_for_slot) => {}
            () = sleep_until(deadline) => {}
            () = sleep_until(drain_deadline) => {
                report.error("echoes missing after --drain-timeout");
                break;
            }
        }
    }
    if report.finished.is_none() {
        report.finished = Some(Instant::now());
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

fn print_report(args: &BenchArgs, report: &Report, opened: usize, elapsed: Duration) {
    let secs = elapsed.as_secs_f64();
    let rate = if secs > 0.0 {
        report.echoed as f64 / secs
    } else {
        0.0
    };
    let megabytes = rate * args.size as f64 / 1e6;
    let failed = args.connections as usize - opened;
    let quantile = |q: f64| {
        if report.latency.is_empty() {
            0
        } else {
            report.latency.value_at_quantile(q)
        }
    };
    let max = if report.latency.is_empty() {
        0
    } else {
        report.latency.max()
    };
    if args.json {
        let value = serde_json::json!({
            "url": args.url,
            "connections": { "requested": args.connections, "opened": opened, "failed": failed },
            "size": args.size,
            "type": if args.text { "text" } else { "binary" },
            "in_flight": args.in_flight,
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
        args.size,
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
    let errors: u64 = report.errors.values().sum();
    println!("errors:     {errors}");
    for (kind, count) in &report.errors {
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
