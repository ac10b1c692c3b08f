//! The `sockeye` command: a WebSocket server with a chat demo page (`serve`), an interactive and
//! pipe client (`connect`), a load generator (`bench`) and an Autobahn TestSuite client.
//!
//! It parses arguments and calls into the `sockeye` crate; all protocol logic lives there. The
//! pieces the subcommands share (option structs, seconds, CA files, error chains) live here.

mod bench;
mod connect;
mod serve;

use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Context as _};
use clap::{Parser, Subcommand};
use futures_util::StreamExt as _;
use sockeye::{Message, WebSocketConfig};

/// WebSocket toolkit: serve, test and poke WebSocket endpoints.
#[derive(Debug, Parser)]
#[command(name = "sockeye", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run a WebSocket server (echo, or broadcast chat rooms: one per path) that also answers
    /// plain HTTP with a chat demo page or static files. Prints the URLs.
    Serve(serve::ServeArgs),
    /// Run the Autobahn TestSuite client protocol against a fuzzing server (e.g.
    /// `kosoku -m fuzzingserver`): fetch the case count, run every case echoing each message,
    /// then ask the server to write its reports.
    AutobahnClient(AutobahnArgs),
    /// Connect to a WebSocket server: an interactive session on a terminal, a pipe tool
    /// otherwise (one message per line of stdin, one line per message on stdout).
    #[command(after_help = connect::EXIT_HELP)]
    Connect(connect::ConnectArgs),
    /// Load-test an echo server (messages/s, MB/s, round-trip latency percentiles, errors), or
    /// with --fanout a broadcast server (deliveries/s, missed, latency, server CPU).
    #[command(after_help = bench::EXIT_HELP)]
    Bench(bench::BenchArgs),
}

/// The connection settings every subcommand shares (`serve`, `connect`, `bench`,
/// `autobahn-client`): one set of options, one [`Limits::config`].
#[derive(Debug, clap::Args)]
struct Limits {
    /// Largest message accepted after reassembly, in bytes; larger ones close with 1009.
    #[arg(long, default_value_t = sockeye::WebSocketConfig::default().protocol.max_message_size.unwrap_or(usize::MAX), value_name = "BYTES")]
    max_message_size: usize,
    /// Largest frame payload accepted, in bytes; larger ones close with 1009.
    #[arg(long, default_value_t = sockeye::WebSocketConfig::default().protocol.max_frame_size.unwrap_or(usize::MAX), value_name = "BYTES")]
    max_frame_size: usize,
    /// Use permessage-deflate compression (RFC 7692): a server accepts clients' offers, a client
    /// offers it. The message size limit applies to the decompressed size.
    #[arg(long)]
    deflate: bool,
    /// With --deflate: the server resets its compression context after every message (a client
    /// requests it, a server imposes it).
    #[arg(long, requires = "deflate")]
    deflate_server_no_context_takeover: bool,
    /// With --deflate: the client resets its compression context after every message (a client
    /// declares it in its offer, a server requests it).
    #[arg(long, requires = "deflate")]
    deflate_client_no_context_takeover: bool,
    /// With --deflate, a server: keep the server's compression context between messages when
    /// the client allows it (better ratio on streams of similar messages to one client; costs
    /// ~300 KB per connection and one compression per subscriber of a broadcast). Without it
    /// the server answers server_no_context_takeover.
    #[arg(long, requires = "deflate")]
    deflate_server_context_takeover: bool,
    /// With --deflate, a server: let clients keep their compression context between messages
    /// (the server then keeps a decompressor per connection). Without it the server answers
    /// client_no_context_takeover.
    #[arg(long, requires = "deflate")]
    deflate_client_context_takeover: bool,
    /// With --deflate: the server's LZ77 window as a power of two, 8-15 (a client requests it, a
    /// server caps its own window).
    #[arg(long, requires = "deflate", value_name = "BITS", value_parser = clap::value_parser!(u8).range(8..=15))]
    deflate_server_max_window_bits: Option<u8>,
    /// With --deflate: the client's LZ77 window as a power of two, 8-15 (a client limits itself,
    /// a server requests it).
    #[arg(long, requires = "deflate", value_name = "BITS", value_parser = clap::value_parser!(u8).range(8..=15))]
    deflate_client_max_window_bits: Option<u8>,
    /// With --deflate: messages shorter than this are sent uncompressed.
    #[arg(long, requires = "deflate", value_name = "BYTES", default_value_t = 0)]
    deflate_threshold: usize,
    /// Send a ping after this many seconds without incoming data; 0 disables keepalive.
    #[arg(long, visible_alias = "ping-interval", value_name = "SECS", default_value_t = 20.0, value_parser = non_negative)]
    keepalive_interval: f64,
    /// Abort with 1011 when a keepalive ping gets no answer (pong or any data) in this many
    /// seconds.
    #[arg(long, value_name = "SECS", default_value_t = 20.0, value_parser = non_negative)]
    keepalive_timeout: f64,
    /// Close with 1001 after this many seconds without a text or binary message; 0 disables.
    #[arg(long, value_name = "SECS", default_value_t = 0.0, value_parser = non_negative)]
    idle_timeout: f64,
    /// Abort with 1008 a peer that accepts no bytes for this many seconds while output is
    /// queued (a slow consumer); 0 disables.
    #[arg(long, value_name = "SECS", default_value_t = 0.0, value_parser = non_negative)]
    write_timeout: f64,
}

/// `secs` as a duration; `None` for 0 (and for anything not a finite positive number).
fn seconds(secs: f64) -> Option<Duration> {
    (secs.is_finite() && secs > 0.0).then(|| Duration::from_secs_f64(secs))
}

/// A `SECS` (or rate) option: a finite number, 0 or more.
fn non_negative(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(value) if value.is_finite() && value >= 0.0 => Ok(value),
        _ => Err(format!("expected a number, 0 or more, got {s:?}")),
    }
}

/// A `SECS` option that must be over 0.
fn positive(s: &str) -> Result<f64, String> {
    match non_negative(s) {
        Ok(value) if value > 0.0 => Ok(value),
        _ => Err(format!("expected a number over 0, got {s:?}")),
    }
}

/// `e` and its sources, joined with `: `.
fn chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        use std::fmt::Write as _;
        let _ = write!(text, ": {cause}");
        source = cause.source();
    }
    text
}

/// A future that completes on SIGINT (Ctrl-C) or SIGTERM. The handlers are installed when it
/// is created (from then on the signals no longer end the process), not at its first poll.
/// Call it inside the runtime.
fn termination() -> impl std::future::Future<Output = ()> {
    #[cfg(unix)]
    let signals = {
        use tokio::signal::unix::{signal, SignalKind};
        (
            signal(SignalKind::interrupt()).ok(),
            signal(SignalKind::terminate()).ok(),
        )
    };
    async move {
        #[cfg(unix)]
        {
            /// The next delivery of `signal`; never when it could not be installed.
            async fn next(signal: Option<&mut tokio::signal::unix::Signal>) {
                match signal {
                    Some(signal) => {
                        let _ = signal.recv().await;
                    }
                    None => std::future::pending().await,
                }
            }
            let (mut interrupt, mut terminate) = signals;
            tokio::select! {
                () = next(interrupt.as_mut()) => {}
                () = next(terminate.as_mut()) => {}
            }
        }
        #[cfg(not(unix))]
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// The `--ca FILE` option of the client subcommands.
#[derive(Debug, clap::Args)]
struct CaFile {
    /// Also trust the CA certificates in this PEM file for wss:// (besides the bundled Mozilla
    /// roots).
    #[arg(long, value_name = "FILE")]
    ca: Option<std::path::PathBuf>,
}

impl CaFile {
    /// `config` trusting the CA file too, when one was given.
    ///
    /// # Errors
    ///
    /// The file cannot be read or holds no usable certificate; the message names it.
    fn apply(&self, config: WebSocketConfig) -> Result<WebSocketConfig, String> {
        let Some(ca) = &self.ca else {
            return Ok(config);
        };
        let pem = std::fs::read(ca).map_err(|e| format!("cannot read {}: {e}", ca.display()))?;
        let tls = sockeye::tls::client_config(Some(&pem))
            .map_err(|e| format!("cannot use {}: {}", ca.display(), chain(&e)))?;
        Ok(config.tls_client(tls))
    }
}

impl Limits {
    fn config(&self) -> WebSocketConfig {
        let deflate = self.deflate.then(|| {
            let mut deflate = sockeye::DeflateConfig::default();
            deflate.server_no_context_takeover = self.deflate_server_no_context_takeover;
            deflate.client_no_context_takeover = self.deflate_client_no_context_takeover;
            deflate.server_max_window_bits = self.deflate_server_max_window_bits;
            deflate.client_max_window_bits = self.deflate_client_max_window_bits;
            deflate.server_context_takeover = self.deflate_server_context_takeover;
            deflate.client_context_takeover = self.deflate_client_context_takeover;
            deflate.compression_threshold = self.deflate_threshold;
            deflate
        });
        WebSocketConfig::default()
            .max_message_size(Some(self.max_message_size))
            .max_frame_size(Some(self.max_frame_size))
            .deflate(deflate)
            .keepalive(
                seconds(self.keepalive_interval),
                seconds(self.keepalive_timeout).unwrap_or(Duration::from_secs(20)),
            )
            .idle_timeout(seconds(self.idle_timeout))
            .write_timeout(seconds(self.write_timeout))
    }
}

#[derive(Debug, clap::Args)]
struct AutobahnArgs {
    /// Base URL of the fuzzing server.
    #[arg(long, default_value = "ws://127.0.0.1:9001", value_name = "URL")]
    url: String,
    /// Agent name reported to the fuzzing server.
    #[arg(long, default_value = "sockeye")]
    agent: String,
    #[command(flatten)]
    ca: CaFile,
    #[command(flatten)]
    limits: Limits,
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() {
                ExitCode::from(2)
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        // Colours only on a terminal: escape codes would garble a log file or a pipe.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("sockeye: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Serve(args) => serve::serve(args).await,
            Command::AutobahnClient(args) => autobahn_client(args).await,
            Command::Connect(args) => connect::run(args).await,
            Command::Bench(args) => bench::run(args).await,
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            if let Some(exit) = e.downcast_ref::<connect::Exit>() {
                return ExitCode::from(exit.0);
            }
            eprintln!("sockeye: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn autobahn_client(args: AutobahnArgs) -> anyhow::Result<()> {
    let base = args.url.trim_end_matches('/');
    let config = args
        .ca
        .apply(args.limits.config())
        .map_err(anyhow::Error::msg)?;
    let (mut ws, _) = sockeye::connect_with_config(&format!("{base}/getCaseCount"), config.clone())
        .await
        .context("cannot fetch the case count")?;
    let count: u32 = match ws.next().await {
        Some(Ok(Message::Text(text))) => text.trim().parse().context("bad case count")?,
        other => bail!("unexpected answer to getCaseCount: {other:?}"),
    };
    let _ = ws.close(sockeye::CloseCode::NORMAL, "").await;
    println!("sockeye: running {count} cases as agent {:?}", args.agent);
    for case in 1..=count {
        let url = format!("{base}/runCase?case={case}&agent={}", args.agent);
        match sockeye::connect_with_config(&url, config.clone()).await {
            Ok((mut ws, _)) => serve::echo(&mut ws).await,
            Err(e) => eprintln!("sockeye: case {case}: {e:#}"),
        }
    }
    let url = format!("{base}/updateReports?agent={}", args.agent);
    let (mut ws, _) = sockeye::connect_with_config(&url, config)
        .await
        .context("cannot update reports")?;
    while let Some(Ok(_)) = ws.next().await {}
    println!("sockeye: reports updated");
    Ok(())
}
