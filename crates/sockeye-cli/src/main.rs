//! The `sockeye` command: a WebSocket echo server and an Autobahn TestSuite client.
//!
//! It parses arguments and calls into the `sockeye` crate; all protocol logic lives there.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Context as _};
use clap::{Parser, Subcommand, ValueEnum};
use futures_util::{SinkExt as _, StreamExt as _};
use sockeye::{Message, WebSocketConfig, WebSocketStream};
use tokio::io::{AsyncRead, AsyncWrite};

/// WebSocket toolkit: serve, test and poke WebSocket endpoints.
#[derive(Debug, Parser)]
#[command(name = "sockeye", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run a WebSocket server. Prints the URL it listens on.
    Serve(ServeArgs),
    /// Run the Autobahn TestSuite client protocol against a fuzzing server (e.g.
    /// `kosoku -m fuzzingserver`): fetch the case count, run every case echoing each message,
    /// then ask the server to write its reports.
    AutobahnClient(AutobahnArgs),
}

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
    #[arg(long, value_name = "SECS", default_value_t = 20.0)]
    keepalive_interval: f64,
    /// Abort with 1011 when a keepalive ping gets no answer (pong or any data) in this many
    /// seconds.
    #[arg(long, value_name = "SECS", default_value_t = 20.0)]
    keepalive_timeout: f64,
    /// Close with 1001 after this many seconds without a text or binary message; 0 disables.
    #[arg(long, value_name = "SECS", default_value_t = 0.0)]
    idle_timeout: f64,
    /// Abort with 1008 a peer that accepts no bytes for this many seconds while output is
    /// queued (a slow consumer); 0 disables.
    #[arg(long, value_name = "SECS", default_value_t = 0.0)]
    write_timeout: f64,
}

/// `secs` as a duration; `None` for 0 (and for anything not a finite positive number).
fn seconds(secs: f64) -> Option<Duration> {
    (secs.is_finite() && secs > 0.0).then(|| Duration::from_secs_f64(secs))
}

impl Limits {
    fn config(&self) -> WebSocketConfig {
        let deflate = self.deflate.then(|| {
            let mut deflate = sockeye::DeflateConfig::default();
            deflate.server_no_context_takeover = self.deflate_server_no_context_takeover;
            deflate.client_no_context_takeover = self.deflate_client_no_context_takeover;
            deflate.server_max_window_bits = self.deflate_server_max_window_bits;
            deflate.client_max_window_bits = self.deflate_client_max_window_bits;
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

#[derive(Debug, Clone, Copy, ValueEnum)]
enum Mode {
    /// Send every text and binary message back unchanged.
    Echo,
}

#[derive(Debug, clap::Args)]
struct ServeArgs {
    /// Address to listen on (port 0 picks a free port).
    #[arg(long, default_value = "127.0.0.1:9001", value_name = "ADDR")]
    listen: SocketAddr,
    /// What the server does with messages.
    #[arg(long, value_enum, default_value_t = Mode::Echo)]
    mode: Mode,
    /// Serve TLS (wss://) with this PEM certificate chain (leaf first); needs --tls-key.
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    tls_cert: Option<std::path::PathBuf>,
    /// The PEM private key (PKCS#8, PKCS#1 or SEC1) for --tls-cert.
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    tls_key: Option<std::path::PathBuf>,
    /// Subprotocols the server supports; it selects the first one the client offers that is
    /// listed here (repeatable).
    #[arg(long = "subprotocol", value_name = "NAME")]
    subprotocols: Vec<String>,
    /// Most connections served at once; more get HTTP 503.
    #[arg(long, value_name = "N", default_value_t = sockeye::DEFAULT_MAX_CONNECTIONS)]
    max_connections: usize,
    /// On SIGINT/SIGTERM, how many seconds to wait for connections to finish their close
    /// handshakes (each is closed with 1001) before dropping them.
    #[arg(long, value_name = "SECS", default_value_t = 10.0)]
    shutdown_timeout: f64,
    #[command(flatten)]
    limits: Limits,
}

#[derive(Debug, clap::Args)]
struct AutobahnArgs {
    /// Base URL of the fuzzing server.
    #[arg(long, default_value = "ws://127.0.0.1:9001", value_name = "URL")]
    url: String,
    /// Agent name reported to the fuzzing server.
    #[arg(long, default_value = "sockeye")]
    agent: String,
    /// Also trust the CA certificates in this PEM file for wss:// (besides the bundled Mozilla
    /// roots).
    #[arg(long, value_name = "FILE")]
    ca: Option<std::path::PathBuf>,
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
            Command::Serve(args) => serve(args).await,
            Command::AutobahnClient(args) => autobahn_client(args).await,
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("sockeye: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let mut server = sockeye::Server::bind(args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?
        .config(args.limits.config().protocols(args.subprotocols.clone()))
        .max_connections(args.max_connections)
        .shutdown_timeout(seconds(args.shutdown_timeout).unwrap_or_default());
    let scheme = match (&args.tls_cert, &args.tls_key) {
        (Some(cert), Some(key)) => {
            let tls = sockeye::tls::server_config_from_pem_files(cert, key)
                .with_context(|| format!("cannot load {} / {}", cert.display(), key.display()))?;
            server = server.tls(tls);
            "wss"
        }
        _ => "ws",
    };
    let addr = server.local_addr()?;
    println!(
        "sockeye: listening on {scheme}://{addr}/ (mode {:?}{})",
        args.mode,
        if args.limits.deflate {
            ", permessage-deflate"
        } else {
            ""
        }
    );
    match args.mode {
        Mode::Echo => {
            server
                .serve_with_shutdown(|ws, _request| echo(ws), shutdown_signal())
                .await?;
        }
    }
    Ok(())
}

/// Completes on SIGINT (Ctrl-C) or SIGTERM.
async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let mut term = match signal(SignalKind::terminate()) {
            Ok(term) => term,
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
                return;
            }
        };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = tokio::signal::ctrl_c().await;
    eprintln!("sockeye: shutting down (closing connections with 1001)");
}

/// Echoes every data message until the connection ends. Replies are queued with `feed`; the
/// stream writes them when it has no message ready, so a burst is answered in one write.
async fn echo<S: AsyncRead + AsyncWrite + Unpin>(mut ws: WebSocketStream<S>) {
    while let Some(item) = ws.next().await {
        match item {
            Ok(message) if message.is_data() => {
                if ws.feed(message).await.is_err() {
                    break;
                }
            }
            Ok(_) => {}
            Err(e) => {
                tracing::debug!(error = %e, "connection ended");
                break;
            }
        }
    }
}

async fn autobahn_client(args: AutobahnArgs) -> anyhow::Result<()> {
    let base = args.url.trim_end_matches('/');
    let mut config = args.limits.config();
    if let Some(ca) = &args.ca {
        let pem = std::fs::read(ca).with_context(|| format!("cannot read {}", ca.display()))?;
        config = config.tls_client(sockeye::tls::client_config(Some(&pem))?);
    }
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
            Ok((ws, _)) => echo(ws).await,
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
