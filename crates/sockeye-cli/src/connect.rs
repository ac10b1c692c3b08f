//! `sockeye connect URL`: a WebSocket client for people and for scripts.
//!
//! - stdin is a terminal: an interactive session (rustyline line editing and history). Typed
//!   lines are sent as text; `/ping`, `/close`, `/binary`, `/quit` and `/help` are commands.
//!   Incoming messages are printed above the prompt (rustyline's `ExternalPrinter`), marked `<`
//!   (outgoing control messages are marked `>`); state changes are marked `*`.
//! - stdin is not a terminal: a pipe tool. Every line (or NUL-terminated record with `--null`,
//!   or the whole input as one binary message with `--binary`) is a message; every received
//!   message is one line on stdout. At the end of stdin it waits for `--wait-replies` messages
//!   (none by default), sends a ping and waits for its pong (so that a server that stops
//!   answering once it reads a close frame has answered the last lines), then closes with 1000
//!   and keeps printing what arrives until the server's close frame (each wait bounded by
//!   `--close-timeout`): the replies to the last lines are not lost (as with websocat).
//!
//! Exit status ([`EXIT_HELP`]): 0 clean close, 1 connection failed after opening (abnormal
//! closure, protocol error, timeout, I/O error), 2 bad usage, 3 handshake failed (connect, TLS,
//! HTTP refusal, invalid upgrade), 4 the server closed cleanly with an error code (anything
//! but 1000, 1001 or none).

use std::collections::VecDeque;
use std::fmt::Write as _;
use std::io::{BufRead as _, IsTerminal as _, Read as _, Write as _};
use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures_util::{SinkExt as _, StreamExt as _};
use sockeye::{
    bytes::Bytes, ClientBuilder, ClientStream, CloseCode, CloseFrame, Closed, Initiator, Message,
};
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::{chain, seconds};

/// Exit status: the close handshake completed (see [`EXIT_HELP`]).
pub(crate) const EXIT_OK: u8 = 0;
/// Exit status: the connection failed after it opened.
pub(crate) const EXIT_CONNECTION: u8 = 1;
/// Exit status: bad usage (clap uses it too).
pub(crate) const EXIT_USAGE: u8 = 2;
/// Exit status: the opening handshake failed.
pub(crate) const EXIT_HANDSHAKE: u8 = 3;
/// Exit status: the server closed with an error code.
pub(crate) const EXIT_PEER_ERROR: u8 = 4;

/// The exit statuses, shown by `sockeye connect --help`.
pub(crate) const EXIT_HELP: &str = "\
Exit status:
  0  the connection closed cleanly (close handshake done; the server's code was 1000, 1001 or
     none, or this end chose the code)
  1  the connection failed after opening: closed without a close handshake (1006), protocol
     violation, keepalive or close timeout, I/O error, or --wait-replies timed out
  2  bad usage: invalid option, URL, header, close code
  3  the opening handshake failed: DNS, TCP connect (e.g. nothing listening), TLS, proxy, an
     HTTP answer other than 101 (e.g. 403, 404), an invalid upgrade, timeout
  4  the server closed cleanly with an error code (not 1000, 1001 or none)

On SIGINT (Ctrl-C in pipe mode) or SIGTERM the client stops sending, closes with 1001 and
exits as above (0 once the close handshake completes).

Interactive commands (stdin is a terminal):
  /ping [data]            send a ping
  /close [code [reason]]  start the close handshake (default 1000)
  /binary HEX             send a binary message (spaces allowed)
  /quit                   close with 1000 and exit (also Ctrl-D, Ctrl-C)
  /help                   list the commands
  //text                  send \"/text\" as text

Pipe mode (stdin is not a terminal): each line is sent as a text message (a line that is not
UTF-8 as binary); each received message is printed as one line (binary as hex, or base64; text
as it is, so a text message with newlines spans several lines: use --null or --json to keep
records apart; on a terminal, control characters but tab and newline are escaped; with
--null every record on stdout ends with NUL, with --json the open and close events too). A
record over --max-message-size ends the input with an error. At the end of input the client
sends a ping and, once its pong is back (a round trip in which the server answers the last
lines), closes with 1000 and keeps printing the messages that arrive until the server's close
frame (each wait at most --close-timeout seconds), so an echo server's replies to the last
lines are shown. --wait-replies N first waits until N messages have arrived (\"all\": as many
as were sent) before that, for a server that takes longer to answer.";

/// A request to exit with a status, after the command printed why.
#[derive(Debug)]
pub(crate) struct Exit(pub(crate) u8);

impl std::fmt::Display for Exit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "exit status {}", self.0)
    }
}

impl std::error::Error for Exit {}

/// How many replies the pipe mode awaits at the end of input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum WaitReplies {
    /// This many messages received in total.
    Count(u64),
    /// As many messages as were sent.
    All,
}

fn parse_wait_replies(s: &str) -> Result<WaitReplies, String> {
    if s == "all" {
        return Ok(WaitReplies::All);
    }
    s.parse()
        .map(WaitReplies::Count)
        .map_err(|_| format!("expected a count or \"all\", got {s:?}"))
}

/// Arguments of `sockeye connect`.
#[derive(Debug, clap::Args)]
pub(crate) struct ConnectArgs {
    /// The `ws://` or `wss://` URL.
    url: String,
    /// Extra request header, `NAME:VALUE` (repeatable).
    #[arg(long = "header", short = 'H', value_name = "NAME:VALUE")]
    headers: Vec<String>,
    /// Offer this subprotocol, most preferred first (repeatable).
    #[arg(long = "subprotocol", value_name = "NAME")]
    subprotocols: Vec<String>,
    /// The `Origin` header, as a browser sends it.
    #[arg(long, value_name = "ORIGIN")]
    origin: Option<String>,
    #[command(flatten)]
    ca: crate::CaFile,
    /// Print one JSON object per event (open, message, ping, pong, close_frame, close, error)
    /// instead of text.
    #[arg(long)]
    json: bool,
    /// Prefix every printed event with the UTC time (a `time` field in Unix seconds with
    /// --json).
    #[arg(long)]
    timestamps: bool,
    /// Show binary payloads as base64 instead of hex.
    #[arg(long)]
    base64: bool,
    /// Connect through this proxy: `http://host:port`, `socks5://…`, `socks5h://…`, or `env`
    /// for the proxy the environment names (`HTTPS_PROXY`, `ALL_PROXY`, `NO_PROXY`…).
    #[arg(long, value_name = "URL")]
    proxy: Option<String>,
    /// Open the WebSocket over HTTP/2 (RFC 8441 extended CONNECT): ALPN h2 for wss://, prior
    /// knowledge (h2c) for ws://. Fails when the server does not offer it.
    #[arg(long)]
    http2: bool,
    /// Message limits, compression and timeouts, as for `sockeye serve` (--max-message-size
    /// also bounds a record read from stdin; --keepalive-interval is also --ping-interval).
    #[command(flatten)]
    limits: crate::Limits,
    /// Seconds to wait for the peer's close frame (and the end of TCP) after sending ours.
    #[arg(long, value_name = "SECS", default_value_t = 10.0, value_parser = crate::non_negative)]
    close_timeout: f64,
    /// Pipe mode: records are separated by NUL bytes (input and output, every --json record
    /// too) instead of newlines.
    #[arg(long, conflicts_with = "binary")]
    null: bool,
    /// Pipe mode: send the whole of stdin as one binary message.
    #[arg(long)]
    binary: bool,
    /// Pipe mode: at the end of input, wait until this many messages have arrived before
    /// closing; `all` waits for as many as were sent (an echo server's replies). Without it,
    /// messages arriving after the close are still printed, until the server's close frame.
    #[arg(long, value_name = "N|all", default_value = "0", value_parser = parse_wait_replies)]
    wait_replies: WaitReplies,
    /// Pipe mode: give up waiting for replies after this many seconds without a message
    /// (then close with 1000 and exit with status 1).
    #[arg(long, value_name = "SECS", default_value_t = 10.0, value_parser = crate::non_negative)]
    reply_timeout: f64,
    /// Interactive mode: load and save the line history in this file.
    #[arg(long, value_name = "FILE")]
    history: Option<PathBuf>,
}

/// Runs `sockeye connect`. Every outcome but a clean close is an [`Exit`] error carrying the
/// status, after the reason was printed.
///
/// # Errors
///
/// [`Exit`] with the documented status.
pub(crate) async fn run(args: ConnectArgs) -> anyhow::Result<()> {
    let interactive = std::io::stdin().is_terminal();
    let format = Format {
        json: args.json,
        timestamps: args.timestamps,
        base64: args.base64,
        terminal: std::io::stdout().is_terminal(),
        null: args.null && !interactive,
    };
    let builder = match builder(&args) {
        Ok(builder) => builder,
        Err(message) => {
            eprintln!("sockeye: {message}");
            return Err(Exit(EXIT_USAGE).into());
        }
    };
    let mut out = Output::Stdout(std::io::BufWriter::new(std::io::stdout()));
    let (ws, response) = match builder.connect().await {
        Ok(connected) => connected,
        Err(e) => {
            let status = match e {
                sockeye::Error::Url(_) => EXIT_USAGE,
                _ => EXIT_HANDSHAKE,
            };
            let mut message = format!("cannot connect to {}: {}", args.url, chain(&e));
            if let sockeye::Error::Http(response) = &e {
                let body = String::from_utf8_lossy(response.body());
                let body = body.trim();
                if !body.is_empty() {
                    // The server's words, on a terminal: no control characters.
                    let _ = write!(message, ": {}", escape_controls(truncate(body, 200)));
                }
            }
            out.event(&format, &Event::Error("handshake", &message));
            out.flush();
            return Err(Exit(status).into());
        }
    };
    let open = Event::Open {
        url: &args.url,
        status: response.status().as_u16(),
        protocol: ws.protocol(),
        extensions: &ws.extensions(),
        show: interactive || args.json,
    };
    match format.render(&open) {
        // Before the prompt appears: stdout as it is.
        Some(line) if interactive => println!("{line}"),
        _ => {
            out.event(&format, &open);
            out.flush();
        }
    }
    let status = if interactive {
        interactive_session(ws, &args, format).await
    } else {
        pipe(ws, &args, format, out).await
    };
    match status {
        EXIT_OK => Ok(()),
        status => Err(Exit(status).into()),
    }
}

fn builder(args: &ConnectArgs) -> Result<ClientBuilder, String> {
    sockeye::WsUrl::parse(&args.url).map_err(|e| format!("invalid url {:?}: {e}", args.url))?;
    let mut config = args
        .limits
        .config()
        .close_timeout(seconds(args.close_timeout).unwrap_or(Duration::from_secs(10)))
        .protocols(args.subprotocols.iter().cloned());
    config = args.ca.apply(config)?;
    if let Some(proxy) = &args.proxy {
        config = if proxy == "env" {
            config.proxy(sockeye::ProxyConfig::FromEnv)
        } else {
            let parsed = sockeye::Proxy::parse(proxy)
                .map_err(|e| format!("invalid proxy {proxy:?}: {e}"))?;
            config.proxy(parsed)
        };
    }
    let mut builder = ClientBuilder::new(args.url.clone())
        .config(config)
        .http2(args.http2);
    for header in &args.headers {
        let Some((name, value)) = header.split_once(':') else {
            return Err(format!("invalid header {header:?}: expected NAME:VALUE"));
        };
        let (name, value) = (name.trim(), value.trim());
        if http_header_invalid(name, value) {
            return Err(format!("invalid header {header:?}"));
        }
        builder = builder.header(name, value);
    }
    if let Some(origin) = &args.origin {
        if http_header_invalid("origin", origin) {
            return Err(format!("invalid origin {origin:?}"));
        }
        builder = builder.origin(origin);
    }
    Ok(builder)
}

fn http_header_invalid(name: &str, value: &str) -> bool {
    sockeye::http::HeaderName::from_bytes(name.as_bytes()).is_err()
        || sockeye::http::HeaderValue::from_str(value).is_err()
}

fn truncate(s: &str, max: usize) -> &str {
    match s.char_indices().nth(max) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

/// The exit status for how the connection ended: `closed` (the library's account) and the
/// error the stream yielded, if any.
fn exit_status(closed: Option<&Closed>, error: Option<&sockeye::Error>) -> u8 {
    match (closed, error) {
        (_, Some(_)) | (None, None) => EXIT_CONNECTION,
        (Some(closed), None) if !closed.was_clean => EXIT_CONNECTION,
        (Some(closed), None) => match closed.initiator {
            Initiator::Application => EXIT_OK,
            Initiator::Library => EXIT_CONNECTION,
            Initiator::Remote => match closed.code {
                CloseCode::NORMAL | CloseCode::GOING_AWAY | CloseCode::NO_STATUS_RCVD => EXIT_OK,
                _ => EXIT_PEER_ERROR,
            },
        },
    }
}

/// How events are printed.
#[derive(Debug, Clone, Copy)]
struct Format {
    json: bool,
    timestamps: bool,
    base64: bool,
    /// Stdout is a terminal: pipe mode escapes control characters in text too (but newlines
    /// and tabs), so that a peer cannot drive the terminal of `echo hi | sockeye connect URL`.
    terminal: bool,
    /// Pipe mode with --null: records on stdout end with NUL instead of a newline.
    null: bool,
}

/// Something worth printing.
#[derive(Debug)]
enum Event<'a> {
    Open {
        url: &'a str,
        status: u16,
        protocol: Option<&'a str>,
        extensions: &'a str,
        /// Pipe mode prints only received messages (unless --json).
        show: bool,
    },
    /// A message; `incoming` false for one this end sent.
    Message {
        incoming: bool,
        message: &'a Message,
        /// Pipe mode: the bare payload, no marker.
        bare: bool,
    },
    Closed(&'a Closed),
    Error(&'a str, &'a str),
    /// Interactive information (command errors, help).
    Info(&'a str),
}

impl Format {
    fn binary(&self, data: &[u8]) -> String {
        if self.base64 {
            use base64::Engine as _;
            base64::engine::general_purpose::STANDARD.encode(data)
        } else {
            hex(data)
        }
    }

    /// The printed form of `event`, without the final newline (or NUL), `None` when this mode
    /// does not print it.
    fn render(&self, event: &Event<'_>) -> Option<String> {
        if self.json {
            return self.render_json(event).map(|v| v.to_string());
        }
        let body = match event {
            Event::Open { show: false, .. } => return None,
            Event::Open {
                url,
                status,
                protocol,
                extensions,
                ..
            } => {
                let mut text = format!("* connected to {url} (http {status}");
                if let Some(protocol) = protocol {
                    let _ = write!(text, ", subprotocol {protocol}");
                }
                if !extensions.is_empty() {
                    let _ = write!(text, ", extensions {extensions}");
                }
                text.push_str("); /help lists the commands");
                text
            }
            Event::Message {
                message,
                bare: true,
                ..
            } => match message {
                Message::Text(text) if self.terminal => escape_controls_but(text.as_str(), "\t\n"),
                Message::Text(text) => text.as_str().to_owned(),
                Message::Binary(data) => self.binary(data),
                _ => return None,
            },
            Event::Message {
                incoming, message, ..
            } => {
                let marker = if *incoming { '<' } else { '>' };
                match message {
                    Message::Text(text) => format!("{marker} {}", escape_controls(text.as_str())),
                    Message::Binary(data) => {
                        format!("{marker} [binary {} B] {}", data.len(), self.binary(data))
                    }
                    Message::Ping(data) => format!("{marker} [ping] {}", printable(data)),
                    Message::Pong(data) => format!("{marker} [pong] {}", printable(data)),
                    Message::Close(Some(frame)) => {
                        format!(
                            "{marker} [close] {} {}",
                            frame.code,
                            escape_controls(frame.reason.as_str())
                        )
                    }
                    Message::Close(None) => format!("{marker} [close]"),
                }
            }
            Event::Closed(closed) => format!(
                "* closed: code {} {:?} ({}, {})",
                closed.code,
                closed.reason,
                if closed.was_clean {
                    "clean"
                } else {
                    "not clean"
                },
                match closed.initiator {
                    Initiator::Application => "closed by this end",
                    Initiator::Library => "failed by this end",
                    Initiator::Remote => "closed by the server",
                }
            ),
            Event::Error(kind, message) => format!("* error ({kind}): {message}"),
            Event::Info(message) => format!("* {message}"),
        };
        Some(if self.timestamps {
            format!("{} {body}", utc_time())
        } else {
            body
        })
    }

    fn render_json(&self, event: &Event<'_>) -> Option<serde_json::Value> {
        use serde_json::json;
        let mut value = match event {
            Event::Open {
                url,
                status,
                protocol,
                extensions,
                ..
            } => json!({
                "event": "open", "url": url, "status": status,
                "protocol": protocol, "extensions": extensions,
            }),
            Event::Message {
                incoming, message, ..
            } => {
                let direction = if *incoming { "in" } else { "out" };
                match message {
                    Message::Text(text) => json!({
                        "event": "message", "direction": direction, "type": "text",
                        "data": text.as_str(),
                    }),
                    Message::Binary(data) => json!({
                        "event": "message", "direction": direction, "type": "binary",
                        "encoding": if self.base64 { "base64" } else { "hex" },
                        "data": self.binary(data),
                    }),
                    Message::Ping(data) | Message::Pong(data) => json!({
                        "event": if matches!(message, Message::Ping(_)) { "ping" } else { "pong" },
                        "direction": direction,
                        "data": String::from_utf8_lossy(data),
                    }),
                    Message::Close(frame) => json!({
                        "event": "close_frame", "direction": direction,
                        "code": frame.as_ref().map(|f| f.code.0),
                        "reason": frame.as_ref().map(|f| f.reason.as_str()),
                    }),
                }
            }
            Event::Closed(closed) => json!({
                "event": "close", "code": closed.code.0, "reason": closed.reason,
                "clean": closed.was_clean,
                "initiator": match closed.initiator {
                    Initiator::Application => "local",
                    Initiator::Library => "library",
                    Initiator::Remote => "remote",
                },
            }),
            Event::Error(kind, message) => {
                json!({ "event": "error", "kind": kind, "message": message })
            }
            Event::Info(message) => json!({ "event": "info", "message": message }),
        };
        if self.timestamps {
            let now = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap_or_default();
            value["time"] = json!(now.as_secs_f64());
        }
        Some(value)
    }
}

/// Lowercase hex, two digits per byte.
fn hex(data: &[u8]) -> String {
    let mut text = String::with_capacity(data.len() * 2);
    for byte in data {
        let _ = write!(text, "{byte:02x}");
    }
    text
}

/// Parses hex digits, ignoring whitespace; `None` for anything else or an odd count.
fn parse_hex(text: &str) -> Option<Vec<u8>> {
    let digits: Vec<u8> = text.bytes().filter(|b| !b.is_ascii_whitespace()).collect();
    if digits.len() % 2 != 0 {
        return None;
    }
    digits
        .chunks_exact(2)
        .map(|pair| {
            let pair = std::str::from_utf8(pair).ok()?;
            u8::from_str_radix(pair, 16).ok()
        })
        .collect()
}

/// `text` with control characters (but tabs) escaped, so that a peer cannot move the cursor,
/// clear the screen or retitle the terminal of an interactive session.
fn escape_controls(text: &str) -> String {
    escape_controls_but(text, "\t")
}

/// `text` with control characters escaped, but those in `keep`.
fn escape_controls_but(text: &str, keep: &str) -> String {
    text.chars()
        .fold(String::with_capacity(text.len()), |mut out, c| {
            if c.is_control() && !keep.contains(c) {
                out.extend(c.escape_default());
            } else {
                out.push(c);
            }
            out
        })
}

/// A control payload as text when it is UTF-8, else as hex.
fn printable(data: &[u8]) -> String {
    match std::str::from_utf8(data) {
        Ok(text) => escape_controls(text),
        Err(_) => format!("0x{}", hex(data)),
    }
}

/// `HH:MM:SS.mmm` UTC.
fn utc_time() -> String {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let secs = now.as_secs() % 86_400;
    format!(
        "{:02}:{:02}:{:02}.{:03}",
        secs / 3600,
        secs / 60 % 60,
        secs % 60,
        now.subsec_millis()
    )
}

/// Where events go: stdout, or above the interactive prompt.
enum Output {
    Stdout(std::io::BufWriter<std::io::Stdout>),
    Printer(Box<dyn rustyline::ExternalPrinter + Send>),
}

impl Output {
    /// Prints `event`; false when stdout is gone (a closed pipe).
    fn event(&mut self, format: &Format, event: &Event<'_>) -> bool {
        let Some(mut line) = format.render(event) else {
            return true;
        };
        match self {
            // Pipe mode keeps stdout for messages: the rest goes to stderr unless --json.
            Self::Stdout(_) if !format.json && !matches!(event, Event::Message { .. }) => {
                eprintln!("sockeye: {}", line.trim_start_matches("* "));
                true
            }
            Self::Stdout(out) => {
                // Every record on stdout (with --json, the open and close events too) ends
                // with the same separator, so that a consumer can split on it alone.
                line.push(if format.null { '\0' } else { '\n' });
                out.write_all(line.as_bytes()).is_ok()
            }
            Self::Printer(printer) => {
                line.push('\n');
                printer.print(line).is_ok()
            }
        }
    }

    fn flush(&mut self) -> bool {
        match self {
            Self::Stdout(out) => out.flush().is_ok(),
            Self::Printer(_) => true,
        }
    }
}

/// Input records handed from the stdin thread at a time, at most this many bytes (or one
/// record) per batch.
const BATCH_BYTES: usize = 64 << 10;
/// Batches in flight between the stdin thread and the connection: with [`BATCH_BYTES`], what
/// bounds the memory spent on input besides one record.
const BATCHES: usize = 4;

/// Reads stdin on its own thread, as batches of messages: lines (or NUL-terminated records),
/// or all of it as one binary message. A record over `limit` bytes ends the input with an
/// error.
fn read_stdin(delimiter: Option<u8>, limit: usize) -> mpsc::Receiver<Result<Vec<Message>, String>> {
    let (tx, rx) = mpsc::channel(BATCHES);
    std::thread::spawn(move || {
        let mut stdin = std::io::BufReader::with_capacity(BATCH_BYTES, std::io::stdin());
        let Some(delimiter) = delimiter else {
            let mut data = Vec::new();
            let result = match (&mut stdin).take(limit as u64 + 1).read_to_end(&mut data) {
                Ok(_) if data.len() > limit => Err(format!("stdin is over {limit} bytes")),
                Ok(_) => Ok(vec![Message::binary(data)]),
                Err(e) => Err(format!("cannot read stdin: {e}")),
            };
            let _ = tx.blocking_send(result);
            return;
        };
        let mut batch = Vec::new();
        let mut batch_bytes = 0;
        loop {
            let mut record = Vec::new();
            // The delimiter (and, for lines, a CR before it) may follow the largest record.
            let max = limit as u64 + 2;
            let read = (&mut stdin).take(max).read_until(delimiter, &mut record);
            let end = match read {
                Ok(0) => true,
                Ok(_) => {
                    let terminated = record.last() == Some(&delimiter);
                    if terminated {
                        record.pop();
                        if delimiter == b'\n' && record.last() == Some(&b'\r') {
                            record.pop();
                        }
                    }
                    if record.len() > limit {
                        let _ = tx.blocking_send(Err(format!(
                            "an input record is over {limit} bytes (--max-message-size)"
                        )));
                        return;
                    }
                    batch_bytes += record.len();
                    batch.push(match String::from_utf8(record) {
                        Ok(text) => Message::text(text),
                        Err(e) => Message::binary(e.into_bytes()),
                    });
                    false
                }
                Err(e) => {
                    let _ = tx.blocking_send(Err(format!("cannot read stdin: {e}")));
                    return;
                }
            };
            // Hand over a full batch, or whatever is read before stdin would block.
            if !batch.is_empty() && (end || batch_bytes >= BATCH_BYTES || stdin.buffer().is_empty())
            {
                batch_bytes = 0;
                if tx.blocking_send(Ok(std::mem::take(&mut batch))).is_err() {
                    return;
                }
            }
            if end {
                return;
            }
        }
    });
    rx
}

/// The pipe mode; returns the exit status.
async fn pipe(mut ws: ClientStream, args: &ConnectArgs, format: Format, mut out: Output) -> u8 {
    let delimiter = match (args.binary, args.null) {
        (true, _) => None,
        (false, true) => Some(b'\0'),
        (false, false) => Some(b'\n'),
    };
    let mut input = read_stdin(delimiter, args.limits.max_message_size);
    let high_water = ws.config().write_buffer_high_water;
    let reply_timeout = seconds(args.reply_timeout).unwrap_or(Duration::from_secs(10));
    let mut pending: VecDeque<Message> = VecDeque::new();
    let mut input_open = true;
    let mut sent: u64 = 0;
    let mut received: u64 = 0;
    let mut reply_deadline = Instant::now() + reply_timeout;
    let mut failure: Option<u8> = None;
    let mut stream_error: Option<sockeye::Error> = None;
    let mut close_code = CloseCode::NORMAL;
    let mut ending = Ending::Input;
    let close_timeout = ws.config().close_timeout;
    let interrupted = crate::termination();
    tokio::pin!(interrupted);
    let ended = loop {
        // Queue what fits below the high-water mark; the rest waits for the socket.
        while let Some(message) = pending.pop_front() {
            if ws.buffered_amount() >= high_water {
                pending.push_front(message);
                break;
            }
            match ws.try_send(message) {
                Ok(()) => sent += 1,
                Err(_) if ws.state() != sockeye::State::Open => {
                    // The server started closing: the rest of the input is not sent, and how
                    // the close ends decides the exit status.
                    let unsent = pending.len() + 1;
                    let note = format!("the server is closing: {unsent} message(s) not sent");
                    out.event(&format, &Event::Error("send", &note));
                    pending.clear();
                    input_open = false;
                    break;
                }
                Err(e) => {
                    out.event(&format, &Event::Error("send", &chain(&e)));
                    failure = Some(EXIT_CONNECTION);
                    break;
                }
            }
        }
        if failure.is_some() {
            break false;
        }
        let input_done = !input_open && pending.is_empty();
        if input_done && ending == Ending::Input {
            let target = match args.wait_replies {
                WaitReplies::Count(n) => n,
                WaitReplies::All => sent,
            };
            if received >= target {
                // A ping first, and the close once its pong is back: a server that stops
                // answering when it reads the close frame (Python's websockets answers the
                // close at once, and its handler's replies then fail) has by then had a round
                // trip to answer the last lines.
                ending = Ending::Pong(Instant::now() + close_timeout);
                let ping = Message::Ping(Bytes::from_static(END_OF_INPUT_PING));
                if ws.state() != sockeye::State::Open || ws.start_send_unpin(ping).is_err() {
                    ending = Ending::Closing;
                }
            }
        }
        if ending == Ending::Closing && ws.state() == sockeye::State::Open {
            // Close, then print what still arrives until the server's close frame (RFC 6455
            // §1.4: only data after the peer's close is discarded): the replies to the last
            // lines may be on their way. The stream's close timer bounds the wait.
            let close = Message::Close(Some(CloseFrame {
                code: CloseCode::NORMAL,
                reason: "".into(),
            }));
            if let Err(e) = ws.start_send_unpin(close) {
                stream_error = Some(e);
                break false;
            }
        }
        let pong_deadline = match ending {
            Ending::Pong(deadline) => Some(deadline),
            Ending::Input | Ending::Closing => None,
        };
        let want_input = input_open && pending.is_empty();
        let want_room = !pending.is_empty();
        tokio::select! {
            event = next_or_room(&mut ws, want_room) => match event {
                // The send buffer fell below its high-water mark: queue more of `pending`.
                Ready::Room(Ok(())) => {}
                // The server started closing: the next try_send reports what is left unsent.
                Ready::Room(Err(_)) if ws.state() != sockeye::State::Open => {}
                Ready::Room(Err(e)) => {
                    stream_error = Some(e);
                    break true;
                }
                Ready::Item(Some(Ok(Message::Pong(payload))))
                    if pong_deadline.is_some() && payload == END_OF_INPUT_PING =>
                {
                    // The end-of-input ping's own pong: not news, time to close.
                    ending = Ending::Closing;
                }
                Ready::Item(Some(Ok(message))) => {
                    if message.is_data() {
                        received += 1;
                        reply_deadline = Instant::now() + reply_timeout;
                    }
                    let shown = out.event(&format, &Event::Message {
                        incoming: true,
                        message: &message,
                        bare: true,
                    });
                    if !shown {
                        failure = Some(EXIT_CONNECTION);
                        break false;
                    }
                }
                Ready::Item(Some(Err(e))) => {
                    stream_error = Some(e);
                    break true;
                }
                Ready::Item(None) => break true,
            },
            batch = input.recv(), if want_input => match batch {
                Some(Ok(messages)) => pending.extend(messages),
                Some(Err(message)) => {
                    out.event(&format, &Event::Error("input", &message));
                    failure = Some(EXIT_CONNECTION);
                    break false;
                }
                None => {
                    input_open = false;
                    reply_deadline = Instant::now() + reply_timeout;
                }
            },
            () = &mut interrupted => {
                out.event(&format, &Event::Error("signal", "interrupted: closing with 1001"));
                close_code = CloseCode::GOING_AWAY;
                break false;
            }
            // A server that does not answer pings is closed after the close timeout anyway.
            () = sleep_until_some(pong_deadline), if pong_deadline.is_some() => {
                ending = Ending::Closing;
            }
            () = tokio::time::sleep_until(reply_deadline), if input_done && ending == Ending::Input => {
                out.event(&format, &Event::Error(
                    "timeout",
                    &format!("no reply for {reply_timeout:?}; received {received} messages"),
                ));
                failure = Some(EXIT_CONNECTION);
                break false;
            }
        }
        if !out.flush() {
            failure = Some(EXIT_CONNECTION);
            break false;
        }
    };
    if !ended {
        // RFC 6455 §7.1.2: "the endpoint MUST send a Close control frame"; close() then waits
        // for the peer's (bounded by the close timeout).
        if let Err(e) = ws.close(close_code, "").await {
            stream_error = Some(e);
        }
    }
    finish(&ws, stream_error.as_ref(), failure, &format, &mut out)
}

/// The payload of the ping the pipe mode sends at the end of its input.
const END_OF_INPUT_PING: &[u8] = b"sockeye connect: end of input";

/// Where the pipe mode is in ending the connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ending {
    /// Sending the input, or waiting for `--wait-replies` messages after it.
    Input,
    /// The end-of-input ping is sent; its pong is awaited until then.
    Pong(Instant),
    /// Closing: the close frame is queued (or the server's close is under way); what arrives
    /// is printed until the end.
    Closing,
}

/// Sleeps until `deadline`, or forever without one.
async fn sleep_until_some(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

/// What [`next_or_room`] saw first.
enum Ready {
    /// The stream's next item.
    Item(Option<Result<Message, sockeye::Error>>),
    /// Room in the send buffer (or the error that ended the wait for it).
    Room(Result<(), sockeye::Error>),
}

/// The next incoming item or, when `want_room`, room below the send buffer's high-water mark,
/// whichever comes first. Waiting for a message alone would stall a sender whose peer never
/// answers: draining the buffer wakes nobody who waits to queue more.
async fn next_or_room(ws: &mut ClientStream, want_room: bool) -> Ready {
    std::future::poll_fn(|cx| {
        if let std::task::Poll::Ready(item) = ws.poll_next_unpin(cx) {
            return std::task::Poll::Ready(Ready::Item(item));
        }
        if want_room {
            if let std::task::Poll::Ready(room) = ws.poll_ready_unpin(cx) {
                return std::task::Poll::Ready(Ready::Room(room));
            }
        }
        std::task::Poll::Pending
    })
    .await
}

/// Prints how the connection ended and returns the exit status.
fn finish(
    ws: &ClientStream,
    error: Option<&sockeye::Error>,
    failure: Option<u8>,
    format: &Format,
    out: &mut Output,
) -> u8 {
    if let Some(e) = error {
        out.event(format, &Event::Error("connection", &chain(e)));
    }
    if let Some(closed) = ws.close_info() {
        // A pipe's own clean close is not news (it goes to stderr unless --json).
        let routine = closed.initiator == Initiator::Application && closed.was_clean;
        if !routine || format.json || matches!(out, Output::Printer(_)) {
            out.event(format, &Event::Closed(closed));
        }
    }
    out.flush();
    failure.unwrap_or_else(|| exit_status(ws.close_info(), error))
}

/// What the line-editor thread hands over.
#[derive(Debug)]
enum Input {
    Line(String),
    /// Ctrl-D, Ctrl-C or a terminal error.
    Quit,
}

/// A typed line's meaning.
#[derive(Debug, PartialEq)]
enum Command {
    Send(Message),
    Quit,
    Help,
    /// A usage error, to print.
    Invalid(String),
}

/// Parses a typed line: a command, or text to send.
fn parse_command(line: &str) -> Command {
    if let Some(text) = line.strip_prefix("//") {
        return Command::Send(Message::text(format!("/{text}")));
    }
    let Some(command) = line.strip_prefix('/') else {
        return Command::Send(Message::text(line.to_owned()));
    };
    let (name, rest) = command.split_once(' ').unwrap_or((command, ""));
    match name {
        "ping" => Command::Send(Message::Ping(Bytes::from(rest.as_bytes().to_vec()))),
        "binary" => match parse_hex(rest) {
            Some(data) => Command::Send(Message::binary(data)),
            None => Command::Invalid(format!("/binary wants hex digits, got {rest:?}")),
        },
        "close" => {
            let rest = rest.trim_start();
            let (code, reason) = rest.split_once(' ').unwrap_or((rest, ""));
            let code = if code.is_empty() {
                CloseCode::NORMAL
            } else {
                match code.parse::<u16>().map(CloseCode) {
                    Ok(code) if code.is_sendable() => code,
                    _ => {
                        return Command::Invalid(format!(
                            "/close wants a code in 1000-1003, 1007-1014 or 3000-4999, got {code:?}"
                        ))
                    }
                }
            };
            if reason.len() > sockeye::MAX_CLOSE_REASON {
                return Command::Invalid(format!(
                    "a close reason is at most {} bytes",
                    sockeye::MAX_CLOSE_REASON
                ));
            }
            Command::Send(Message::Close(Some(CloseFrame {
                code,
                reason: reason.to_owned().into(),
            })))
        }
        "quit" | "exit" => Command::Quit,
        "help" => Command::Help,
        _ => Command::Invalid(format!("unknown command /{name}; /help lists them")),
    }
}

/// Restores the terminal's settings when dropped: the line editor's thread may still be in raw
/// mode, waiting for a key, when the connection ends and the process exits.
struct TerminalGuard {
    #[cfg(unix)]
    saved: Option<nix::sys::termios::Termios>,
}

impl TerminalGuard {
    fn save() -> Self {
        Self {
            #[cfg(unix)]
            saved: nix::sys::termios::tcgetattr(std::io::stdin()).ok(),
        }
    }
}

impl Drop for TerminalGuard {
    fn drop(&mut self) {
        #[cfg(unix)]
        if let Some(saved) = &self.saved {
            let _ = nix::sys::termios::tcsetattr(
                std::io::stdin(),
                nix::sys::termios::SetArg::TCSANOW,
                saved,
            );
        }
    }
}

/// Runs the line editor on its own thread (it blocks on the terminal), returning its printer
/// and the typed lines.
fn line_editor(
    history: Option<PathBuf>,
) -> rustyline::Result<(
    Box<dyn rustyline::ExternalPrinter + Send>,
    mpsc::Receiver<Input>,
)> {
    let mut editor = rustyline::DefaultEditor::new()?;
    if let Some(path) = &history {
        let _ = editor.load_history(path);
    }
    let printer = Box::new(editor.create_external_printer()?);
    let (tx, rx) = mpsc::channel(16);
    std::thread::spawn(move || loop {
        match editor.readline("> ") {
            Ok(line) => {
                if !line.trim().is_empty() {
                    let _ = editor.add_history_entry(line.as_str());
                    if let Some(path) = &history {
                        let _ = editor.save_history(path);
                    }
                }
                if tx.blocking_send(Input::Line(line)).is_err() {
                    return;
                }
            }
            Err(_) => {
                let _ = tx.blocking_send(Input::Quit);
                return;
            }
        }
    });
    Ok((printer, rx))
}

/// The interactive session; returns the exit status.
async fn interactive_session(mut ws: ClientStream, args: &ConnectArgs, format: Format) -> u8 {
    let _terminal = TerminalGuard::save();
    // Ctrl-C is a key to the line editor (it quits); SIGTERM (or SIGINT from elsewhere) closes
    // with 1001, and the terminal is restored on the way out. Installed before the prompt shows.
    let interrupted = crate::termination();
    let (mut out, mut lines) = match line_editor(args.history.clone()) {
        Ok((printer, lines)) => (Output::Printer(printer), lines),
        Err(e) => {
            eprintln!("sockeye: cannot start the line editor: {e}");
            let _ = ws.close(CloseCode::GOING_AWAY, "").await;
            return EXIT_CONNECTION;
        }
    };
    // Pongs are shown only in answer to /ping (keepalive pongs would be noise), always with
    // --json.
    let mut pings_sent: usize = 0;
    let mut stream_error = None;
    let mut input_open = true;
    tokio::pin!(interrupted);
    loop {
        tokio::select! {
            () = &mut interrupted => {
                if let Err(e) = ws.close(CloseCode::GOING_AWAY, "").await {
                    stream_error = Some(e);
                }
                break;
            }
            item = ws.next() => match item {
                Some(Ok(message)) => {
                    let show = match message {
                        Message::Pong(_) if pings_sent > 0 => {
                            pings_sent -= 1;
                            true
                        }
                        Message::Pong(_) => format.json,
                        _ => true,
                    };
                    if show {
                        out.event(&format, &Event::Message {
                            incoming: true, message: &message, bare: false,
                        });
                    }
                }
                Some(Err(e)) => {
                    stream_error = Some(e);
                    break;
                }
                None => break,
            },
            input = lines.recv(), if input_open => {
                let command = match input {
                    Some(Input::Line(line)) => parse_command(&line),
                    Some(Input::Quit) | None => {
                        input_open = false;
                        Command::Quit
                    }
                };
                match command {
                    Command::Send(message) => {
                        let echo = !matches!(message, Message::Text(_));
                        if matches!(message, Message::Ping(_)) {
                            pings_sent += 1;
                        }
                        if echo {
                            out.event(&format, &Event::Message {
                                incoming: false, message: &message, bare: false,
                            });
                        }
                        if let Err(e) = ws.try_send(message) {
                            out.event(&format, &Event::Error("send", &chain(&e)));
                        }
                    }
                    Command::Quit => {
                        if let Err(e) = ws.close(CloseCode::NORMAL, "").await {
                            stream_error = Some(e);
                        }
                        break;
                    }
                    Command::Help => {
                        out.event(&format, &Event::Info(EXIT_HELP));
                    }
                    Command::Invalid(message) => {
                        out.event(&format, &Event::Info(&message));
                    }
                }
            }
        }
    }
    let status = finish(&ws, stream_error.as_ref(), None, &format, &mut out);
    // Let the printer's thread draw the last lines before the terminal is restored.
    tokio::time::sleep(Duration::from_millis(50)).await;
    status
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_parse() {
        assert_eq!(parse_command("hi"), Command::Send(Message::text("hi")));
        assert_eq!(parse_command("//x"), Command::Send(Message::text("/x")));
        assert_eq!(
            parse_command("/binary 01 ff"),
            Command::Send(Message::binary(vec![1, 0xff]))
        );
        assert!(matches!(parse_command("/binary 0"), Command::Invalid(_)));
        assert!(matches!(parse_command("/binary zz"), Command::Invalid(_)));
        assert_eq!(
            parse_command("/close 4000 bye now"),
            Command::Send(Message::Close(Some(CloseFrame {
                code: CloseCode(4000),
                reason: "bye now".into()
            })))
        );
        assert!(matches!(parse_command("/close 1006"), Command::Invalid(_)));
        assert!(matches!(parse_command("/close x"), Command::Invalid(_)));
        // The longest reason a close frame carries, and one byte more.
        let longest = "r".repeat(sockeye::MAX_CLOSE_REASON);
        assert!(matches!(
            parse_command(&format!("/close 1000 {longest}")),
            Command::Send(Message::Close(Some(_)))
        ));
        assert!(matches!(
            parse_command(&format!("/close 1000 {longest}r")),
            Command::Invalid(_)
        ));
        assert_eq!(
            parse_command("/ping abc"),
            Command::Send(Message::Ping(Bytes::from_static(b"abc")))
        );
        assert_eq!(parse_command("/quit"), Command::Quit);
        assert_eq!(parse_command("/help"), Command::Help);
        assert!(matches!(parse_command("/nope"), Command::Invalid(_)));
    }

    #[test]
    fn exit_statuses() {
        let closed = |code: u16, initiator, was_clean| Closed {
            code: CloseCode(code),
            reason: String::new(),
            initiator,
            was_clean,
            error: None,
        };
        let ok = closed(1000, Initiator::Remote, true);
        assert_eq!(exit_status(Some(&ok), None), EXIT_OK);
        let mine = closed(4000, Initiator::Application, true);
        assert_eq!(exit_status(Some(&mine), None), EXIT_OK);
        let theirs = closed(1011, Initiator::Remote, true);
        assert_eq!(exit_status(Some(&theirs), None), EXIT_PEER_ERROR);
        let dropped = closed(1006, Initiator::Remote, false);
        assert_eq!(exit_status(Some(&dropped), None), EXIT_CONNECTION);
        assert_eq!(
            exit_status(Some(&ok), Some(&sockeye::Error::AbnormalClosure)),
            EXIT_CONNECTION
        );
    }

    #[test]
    fn interactive_display_escapes_control_characters() {
        let message = Message::text("red \u{1b}[31m\ttab\r\nend");
        let show = |terminal: bool, bare: bool| {
            let format = Format {
                json: false,
                timestamps: false,
                base64: false,
                terminal,
                null: false,
            };
            let event = Event::Message {
                incoming: true,
                message: &message,
                bare,
            };
            format.render(&event).expect("rendered")
        };
        assert_eq!(show(false, false), "< red \\u{1b}[31m\ttab\\r\\nend");
        // Pipe mode passes text through unchanged…
        assert_eq!(show(false, true), "red \u{1b}[31m\ttab\r\nend");
        // … unless stdout is a terminal: then only tabs and newlines pass.
        assert_eq!(show(true, true), "red \\u{1b}[31m\ttab\\r\nend");
    }

    #[test]
    fn hex_round_trips() {
        assert_eq!(hex(&[0, 0xab, 0x10]), "00ab10");
        assert_eq!(parse_hex("00ab10"), Some(vec![0, 0xab, 0x10]));
        assert_eq!(parse_hex(""), Some(vec![]));
    }
}
