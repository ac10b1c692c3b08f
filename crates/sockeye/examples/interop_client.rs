//! Interoperability client: connects to an echo server (sockeye, Python `websockets`, Node `ws`),
//! optionally with permessage-deflate, sends a fixed set of messages and checks every echo, a
//! ping/pong and a clean close with 4321 and a UTF-8 reason, both echoed by the server.
//! `scripts/interop.sh` runs it against each peer.
//!
//! ```text
//! interop_client URL [--deflate] [--deflate-server-no-context-takeover]
//!                    [--deflate-client-no-context-takeover]
//!                    [--deflate-server-max-window-bits N] [--deflate-client-max-window-bits N]
//!                    [--expect-extensions STRING|none] [--ca FILE]
//! ```
//!
//! The deflate flags mean what they mean for `sockeye serve`'s client side: the two
//! `no_context_takeover` flags request (server) or declare (client) a context reset after every
//! message, `--deflate-server-max-window-bits` requests a server window and
//! `--deflate-client-max-window-bits` limits the client's own. `--expect-extensions` checks
//! [`WebSocketStream::extensions`] exactly (`none`: no extension agreed). `--ca` trusts the PEM
//! certificates in FILE besides the bundled roots (`sockeye::tls::client_config`) for a
//! `wss://` URL, and the client checks that the connection is encrypted.
//!
//! The message set is the one `interop/python/peer.py` and `interop/node/peer.mjs` send (see
//! `interop/README.md`). Exits 0 when everything round-tripped, 1 with a message naming the
//! first mismatch otherwise, 2 for bad arguments.

use std::fmt::Write as _;
use std::process::ExitCode;
use std::time::Duration;

use futures_util::StreamExt as _;
use sockeye::{CloseCode, DataKind, DeflateConfig, Message, WebSocketConfig, WebSocketStream};
use tokio::net::TcpStream;

/// Longest wait for any single reply before the run counts as failed.
const REPLY_TIMEOUT: Duration = Duration::from_secs(20);
/// Number of small messages sent back to back before their echoes are read.
const BURST: usize = 50;
/// Payload of the ping whose pong is awaited.
const PING_PAYLOAD: &[u8] = b"interop-ping";
/// Payload of the ping sent between the first two fragments of each fragmented message.
const MID_PING_PAYLOAD: &[u8] = b"interop-ping between fragments";
/// Code of the closing handshake; the server must echo it and the reason.
const CLOSE_CODE: CloseCode = CloseCode(4321);
/// Reason sent with [`CLOSE_CODE`]: multi-byte UTF-8.
const CLOSE_REASON: &str = "ciao ✓ — 再见 👋";

/// Command-line options.
#[derive(Debug, Default)]
struct Options {
    url: String,
    deflate: Option<DeflateConfig>,
    /// `Some("")` for `--expect-extensions none`.
    expect_extensions: Option<String>,
    /// PEM file of extra trusted roots (`--ca`).
    ca: Option<std::path::PathBuf>,
}

const USAGE: &str = "usage: interop_client URL [--deflate] \
[--deflate-server-no-context-takeover] [--deflate-client-no-context-takeover] \
[--deflate-server-max-window-bits 8-15] [--deflate-client-max-window-bits 8-15] \
[--expect-extensions STRING|none] [--ca FILE]";

impl Options {
    fn parse(mut args: impl Iterator<Item = String>) -> Result<Self, String> {
        let mut url = None;
        let mut deflate_on = false;
        let mut deflate = DeflateConfig::default();
        let mut deflate_params = false;
        let mut expect_extensions = None;
        let mut ca = None;
        while let Some(arg) = args.next() {
            match arg.as_str() {
                "--deflate" => deflate_on = true,
                "--deflate-server-no-context-takeover" => {
                    deflate.server_no_context_takeover = true;
                    deflate_params = true;
                }
                "--deflate-client-no-context-takeover" => {
                    deflate.client_no_context_takeover = true;
                    deflate_params = true;
                }
                "--deflate-server-max-window-bits" => {
                    deflate.server_max_window_bits = Some(window_bits(&arg, args.next())?);
                    deflate_params = true;
                }
                "--deflate-client-max-window-bits" => {
                    deflate.client_max_window_bits = Some(window_bits(&arg, args.next())?);
                    deflate_params = true;
                }
                "--expect-extensions" => {
                    let value = args.next().ok_or("--expect-extensions needs a value")?;
                    expect_extensions = Some(if value == "none" {
                        String::new()
                    } else {
                        value
                    });
                }
                "--ca" => ca = Some(args.next().ok_or("--ca needs a file")?.into()),
                "-h" | "--help" => return Err(USAGE.to_owned()),
                flag if flag.starts_with('-') => return Err(format!("unknown option {flag}")),
                _ if url.is_none() => url = Some(arg),
                _ => return Err(format!("unexpected argument {arg}")),
            }
        }
        if deflate_params && !deflate_on {
            return Err("the --deflate-* parameters need --deflate".to_owned());
        }
        Ok(Self {
            url: url.ok_or("missing URL")?,
            deflate: deflate_on.then_some(deflate),
            expect_extensions,
            ca,
        })
    }
}

fn window_bits(flag: &str, value: Option<String>) -> Result<u8, String> {
    value
        .as_deref()
        .and_then(|v| v.parse().ok())
        .filter(|bits| (8..=15).contains(bits))
        .ok_or_else(|| format!("{flag} needs a number from 8 to 15"))
}

/// One message of the set and how it is sent.
#[derive(Debug)]
struct Case {
    name: String,
    kind: DataKind,
    payload: Vec<u8>,
    /// Byte offsets at which the message is split into fragments; empty: one frame.
    splits: Vec<usize>,
}

impl Case {
    fn text(name: &str, text: impl Into<String>) -> Self {
        Self {
            name: name.to_owned(),
            kind: DataKind::Text,
            payload: text.into().into_bytes(),
            splits: Vec::new(),
        }
    }

    fn binary(name: &str, payload: Vec<u8>) -> Self {
        Self {
            name: name.to_owned(),
            kind: DataKind::Binary,
            payload,
            splits: Vec::new(),
        }
    }

    fn fragmented(mut self, splits: &[usize]) -> Self {
        self.splits = splits.to_vec();
        self
    }

    fn message(&self) -> Message {
        match self.kind {
            DataKind::Text => Message::text(
                String::from_utf8(self.payload.clone()).expect("text cases are valid UTF-8"),
            ),
            DataKind::Binary => Message::binary(self.payload.clone()),
        }
    }
}

/// `len` bytes from Marsaglia's xorshift32 (13, 17, 5) seeded with `seed`, each state written
/// little-endian: incompressible-looking, yet the same in every peer's implementation.
fn xorshift_bytes(seed: u32, len: usize) -> Vec<u8> {
    let mut state = seed;
    let mut out = Vec::with_capacity(len + 4);
    while out.len() < len {
        state ^= state << 13;
        state ^= state >> 17;
        state ^= state << 5;
        out.extend_from_slice(&state.to_le_bytes());
    }
    out.truncate(len);
    out
}

/// JSON-like, repetitive text of exactly `len` bytes (ASCII).
fn json_text(len: usize) -> String {
    let mut text = String::from("[");
    let mut seq = 0;
    while text.len() < len {
        let _ = write!(
            text,
            r#"{{"seq":{seq},"kind":"update","value":"lorem ipsum dolor"}},"#
        );
        seq += 1;
    }
    text.truncate(len);
    text
}

/// Multi-byte UTF-8: two-, three- and four-byte characters.
const UTF8_LINE: &str = "héllo wörld — κόσμε — 日本語のテキスト — emoji 🦀🐍🟩 — ";

/// The message set, in sending order (`interop/README.md` describes it for all peers).
fn cases() -> Vec<Case> {
    let utf8_fragments = "fragmented κόσμε 日本語 🦀 end";
    vec![
        Case::text("empty text", ""),
        Case::binary("empty binary", Vec::new()),
        Case::text("1-byte text", "x"),
        Case::binary("1-byte binary", vec![0x2a]),
        Case::text(
            "125-byte text",
            (0..125u8)
                .map(|i| char::from(b'a' + i % 26))
                .collect::<String>(),
        ),
        Case::binary("126-byte binary", (0..126u8).collect()),
        Case::text("1000-byte JSON-like text", json_text(1000)),
        Case::binary(
            "65536-byte binary",
            (0..65536usize)
                .map(|i| ((i * 7 + (i >> 8)) & 0xff) as u8)
                .collect(),
        ),
        Case::text("65536-byte JSON-like text", json_text(65536)),
        Case::binary(
            "1 MiB xorshift binary",
            xorshift_bytes(0x2545_f491, 1 << 20),
        ),
        // Offsets 12 and 20 fall inside "κ" and "ε": the peer must reassemble before it
        // validates UTF-8.
        Case::text("fragmented text", utf8_fragments).fragmented(&[12, 20]),
        Case::binary("fragmented binary", xorshift_bytes(7, 3000)).fragmented(&[1000, 1000]),
        Case::text("multi-byte UTF-8 text", UTF8_LINE.repeat(20)),
    ]
}

/// The burst's `i`-th message.
fn burst_message(i: usize) -> String {
    format!(r#"burst {i}: {{"seq":{i},"kind":"burst"}}"#)
}

type Ws = WebSocketStream<sockeye::Transport<TcpStream>>;

/// Why the run failed.
type Failure = String;

/// Formats an error with its chain of sources.
fn describe(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        let _ = write!(text, ": {cause}");
        source = cause.source();
    }
    text
}

/// The next data or pong message, skipping pings (answered automatically).
async fn next_message(ws: &mut Ws, waiting_for: &str) -> Result<Message, Failure> {
    loop {
        let item = tokio::time::timeout(REPLY_TIMEOUT, ws.next())
            .await
            .map_err(|_| format!("{waiting_for}: no reply within {REPLY_TIMEOUT:?}"))?;
        match item {
            Some(Ok(Message::Ping(_))) => {}
            Some(Ok(Message::Close(frame))) => {
                return Err(format!(
                    "{waiting_for}: the peer closed the connection ({frame:?})"
                ))
            }
            Some(Ok(message)) => return Ok(message),
            Some(Err(e)) => return Err(format!("{waiting_for}: {}", describe(&e))),
            None => return Err(format!("{waiting_for}: the connection ended")),
        }
    }
}

/// Compares an echo with what was sent.
fn check_echo(name: &str, kind: DataKind, sent: &[u8], echo: &Message) -> Result<(), Failure> {
    let (got_kind, got) = match echo {
        Message::Text(text) => (DataKind::Text, text.as_bytes()),
        Message::Binary(data) => (DataKind::Binary, &data[..]),
        other => return Err(format!("{name}: expected an echo, got {other:?}")),
    };
    if got_kind != kind {
        return Err(format!("{name}: sent {kind:?}, echo is {got_kind:?}"));
    }
    if got != sent {
        let first_difference = got
            .iter()
            .zip(sent)
            .position(|(a, b)| a != b)
            .unwrap_or(got.len().min(sent.len()));
        return Err(format!(
            "{name}: echo differs: sent {} bytes, got {} bytes, first difference at byte {first_difference}",
            sent.len(),
            got.len()
        ));
    }
    Ok(())
}

/// Waits for the pong that answers a ping with `payload`; anything else first is a failure.
async fn expect_pong(ws: &mut Ws, payload: &[u8], name: &str) -> Result<(), Failure> {
    match next_message(ws, &format!("{name}: pong")).await? {
        Message::Pong(got) if got == payload => Ok(()),
        other => Err(format!(
            "{name}: expected the pong to our ping, got {other:?}"
        )),
    }
}

async fn send(ws: &mut Ws, message: Message, name: &str) -> Result<(), Failure> {
    ws.send(message)
        .await
        .map_err(|e| format!("{name}: send failed: {}", describe(&e)))
}

async fn run(options: &Options) -> Result<(), Failure> {
    let mut config = WebSocketConfig::default().deflate(options.deflate.clone());
    if let Some(ca) = &options.ca {
        let pem = std::fs::read(ca).map_err(|e| format!("cannot read {}: {e}", ca.display()))?;
        let tls = sockeye::tls::client_config(Some(&pem))
            .map_err(|e| format!("{}: {}", ca.display(), describe(&e)))?;
        config = config.tls_client(tls);
    }
    let (mut ws, _response) = sockeye::connect_with_config(&options.url, config)
        .await
        .map_err(|e| format!("connect to {}: {}", options.url, describe(&e)))?;
    if options.ca.is_some() {
        if !ws.get_ref().is_tls() {
            return Err("--ca given, but the connection is not encrypted".to_owned());
        }
        let alpn = ws.get_ref().alpn_protocol().map(String::from_utf8_lossy);
        println!("interop_client: tls, alpn {alpn:?}");
    }
    let extensions = ws.extensions();
    if let Some(expected) = &options.expect_extensions {
        if &extensions != expected {
            return Err(format!(
                "negotiated extensions {extensions:?}, expected {expected:?}"
            ));
        }
    }
    println!("interop_client: connected, extensions {extensions:?}");

    for case in cases() {
        if case.splits.is_empty() {
            send(&mut ws, case.message(), &case.name).await?;
        } else {
            // A ping goes between the first two fragments: the peer must answer it while it
            // reassembles (and inflates) the message.
            let mut start = 0;
            for (index, end) in case
                .splits
                .iter()
                .copied()
                .chain([case.payload.len()])
                .enumerate()
            {
                let fin = end == case.payload.len();
                ws.send_fragment(case.kind, &case.payload[start..end], fin)
                    .map_err(|e| format!("{}: send_fragment: {}", case.name, describe(&e)))?;
                if index == 0 {
                    send(&mut ws, Message::Ping(MID_PING_PAYLOAD.into()), &case.name).await?;
                }
                start = end;
            }
            ws.flush()
                .await
                .map_err(|e| format!("{}: flush: {}", case.name, describe(&e)))?;
            expect_pong(&mut ws, MID_PING_PAYLOAD, &case.name).await?;
        }
        let echo = next_message(&mut ws, &case.name).await?;
        check_echo(&case.name, case.kind, &case.payload, &echo)?;
    }

    for i in 0..BURST {
        send(&mut ws, Message::text(burst_message(i)), "burst").await?;
    }
    for i in 0..BURST {
        let name = format!("burst message {i}");
        let echo = next_message(&mut ws, &name).await?;
        check_echo(&name, DataKind::Text, burst_message(i).as_bytes(), &echo)?;
    }

    send(&mut ws, Message::Ping(PING_PAYLOAD.into()), "ping").await?;
    expect_pong(&mut ws, PING_PAYLOAD, "ping").await?;

    tokio::time::timeout(REPLY_TIMEOUT, ws.close(CLOSE_CODE, CLOSE_REASON))
        .await
        .map_err(|_| "close: the close handshake did not finish".to_owned())?
        .map_err(|e| format!("close: {}", describe(&e)))?;
    // `close_info` holds the code and reason of the server's answering close frame.
    match ws.close_info() {
        Some(closed)
            if closed.was_clean && closed.code == CLOSE_CODE && closed.reason == CLOSE_REASON =>
        {
            Ok(())
        }
        other => Err(format!(
            "close: expected the echo {CLOSE_CODE} {CLOSE_REASON:?}: {other:?}"
        )),
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let options = match Options::parse(std::env::args().skip(1)) {
        Ok(options) => options,
        Err(message) => {
            eprintln!("interop_client: {message}");
            return ExitCode::from(2);
        }
    };
    match run(&options).await {
        Ok(()) => {
            println!(
                "interop_client: ok ({} messages, {BURST} burst messages, ping, clean close)",
                cases().len()
            );
            ExitCode::SUCCESS
        }
        Err(failure) => {
            eprintln!("interop_client: FAILED: {failure}");
            ExitCode::FAILURE
        }
    }
}
