//! `sockeye serve`: a WebSocket echo or broadcast server that also answers plain HTTP on its
//! port, with a built-in chat demo page or a directory of static files.
//!
//! In broadcast mode every text and binary message goes to every *other* client connected on
//! the same request path: one chat room per path (`/room/lobby`), a topic of a
//! [`sockeye_hub::Hub`]. With `--redis URL` the hub uses Redis pub/sub as its backplane, so a
//! room spans every node started with the same Redis. Each client has a bounded queue of
//! messages waiting to be written to it (`--broadcast-queue` messages and
//! `--broadcast-queue-size` payload bytes, besides the connection's 64 KiB write buffer). A
//! client whose queue is full when a message arrives for it, i.e. one that reads slower than its
//! room talks, is by default disconnected with 1008 (policy violation) and counted, so that it
//! neither slows the room down nor grows the server's memory. Disconnecting rather than silently
//! dropping its messages keeps a chat from having invisible holes: the client learns it lost
//! messages, and the demo page reconnects. `--slow-consumer drop` drops (and counts) the
//! messages instead.
//!
//! `GET /metrics` answers the hub's counters in the Prometheus text format.

use std::fmt;
use std::io::Read as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use clap::ValueEnum;
use futures_util::{SinkExt as _, StreamExt as _};
use sockeye::http::{header, HeaderValue, Request, Response, StatusCode, Uri};
use sockeye::{CloseCode, ServerStream, State, WebSocketStream};
use sockeye_hub::{Hub, HubConfig, HubMetrics, RedisBackplane, SlowConsumer, Subscriber};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_util::sync::CancellationToken;

use crate::{seconds, Limits};

/// What the server does with messages.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub(crate) enum Mode {
    /// Send every text and binary message back unchanged.
    Echo,
    /// Relay every text and binary message to every other client connected on the same path
    /// (a chat room per path).
    Broadcast,
}

impl fmt::Display for Mode {
    /// The mode as it is spelled on the command line (`echo`, `broadcast`).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.to_possible_value() {
            Some(value) => f.write_str(value.get_name()),
            None => Ok(()),
        }
    }
}

/// What broadcast mode does with a client whose queue is full.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub(crate) enum SlowPolicy {
    /// Disconnect it with 1008 (policy violation).
    Close,
    /// Drop the message for it (counted in /metrics); it stays connected and sees a gap.
    Drop,
}

/// Most messages a broadcast connection takes from its queue before it reads again: a bound on
/// how long one connection's writing keeps it from noticing its client's messages.
const MAX_BATCH: usize = 256;

/// How long a client disconnected for being slow gets to take its 1008 close frame before the
/// TCP connection is dropped: it is, after all, not reading.
const SLOW_CLIENT_CLOSE_TIMEOUT: Duration = Duration::from_secs(1);

/// Largest file `--static` serves; larger ones are refused with 403. Responses are built in
/// memory, so this bounds the memory a request costs, and the time it blocks the runtime (see
/// [`read_file`]).
const MAX_STATIC_FILE_SIZE: u64 = 16 << 20;

/// The chat demo page served at `/`.
const DEMO_PAGE: &str = include_str!("demo.html");

#[derive(Debug, clap::Args)]
pub(crate) struct ServeArgs {
    /// Address to listen on (port 0 picks a free port).
    #[arg(long, default_value = "127.0.0.1:9001", value_name = "ADDR")]
    listen: SocketAddr,
    /// What the server does with messages.
    #[arg(long, value_enum, default_value_t = Mode::Broadcast)]
    mode: Mode,
    /// Serve the files of this directory to plain HTTP GET/HEAD requests (`/` is its
    /// index.html, or the demo page when it has none). Without it, `/` is the chat demo page.
    #[arg(long = "static", value_name = "DIR")]
    static_dir: Option<PathBuf>,
    /// Broadcast mode: messages queued for one client at most; a client whose queue is full
    /// (it reads slower than its room talks) is disconnected with 1008.
    #[arg(long, value_name = "N", default_value_t = HubConfig::default().max_queued_messages,
          value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..))]
    broadcast_queue: usize,
    /// Broadcast mode: payload bytes queued for one client at most; a client whose queue would
    /// go over is disconnected with 1008 (one message larger than this is still queued for a
    /// client whose queue is empty).
    #[arg(long, value_name = "BYTES", default_value_t = HubConfig::default().max_queued_size)]
    broadcast_queue_size: usize,
    /// Broadcast mode: what to do with a slow client: one whose queue is full and that has
    /// taken nothing from it for --stall-timeout, or whose queue is 4 times over the limits.
    #[arg(long, value_enum, default_value_t = SlowPolicy::Close)]
    slow_consumer: SlowPolicy,
    /// Broadcast mode: seconds a client whose queue is full may go without taking a message
    /// (its connection stopped taking bytes) before it is slow. Until then, and up to 4 times
    /// the queue limits, its messages are still queued: a server that is behind delivers
    /// later (counted as backlogged in /metrics) rather than disconnecting everybody.
    #[arg(long, value_name = "SECS", default_value_t = 2.0, value_parser = crate::non_negative)]
    stall_timeout: f64,
    /// Broadcast mode: share rooms with every `sockeye serve` using this Redis
    /// (`redis://127.0.0.1:6379/`) through Redis pub/sub. While Redis is unreachable, rooms
    /// keep working on this node; messages for other nodes are dropped and counted.
    #[arg(long, value_name = "URL")]
    redis: Option<String>,
    /// Serve TLS (wss://) with this PEM certificate chain (leaf first); needs --tls-key.
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// The PEM private key (PKCS#8, PKCS#1 or SEC1) for --tls-cert.
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// Also serve WebSockets (and the page) over HTTP/2, RFC 8441: with TLS, ALPN offers h2
    /// next to http/1.1; without, connections opening with the HTTP/2 preface (h2c, prior
    /// knowledge) are served as HTTP/2 and others as HTTP/1.1.
    #[arg(long)]
    http2: bool,
    /// Subprotocols the server supports; it selects the first one the client offers that is
    /// listed here (repeatable).
    #[arg(long = "subprotocol", value_name = "NAME")]
    subprotocols: Vec<String>,
    /// Threads serving connections (0: one per core this process may use). Each thread runs
    /// its own event loop and keeps the connections it accepted; broadcast rooms span all
    /// threads.
    #[arg(long, value_name = "N", default_value_t = 0)]
    threads: usize,
    /// Most connections served at once; more get HTTP 503.
    #[arg(long, value_name = "N", default_value_t = sockeye::DEFAULT_MAX_CONNECTIONS)]
    max_connections: usize,
    /// On SIGINT/SIGTERM, how many seconds to wait for connections to finish their close
    /// handshakes (each is closed with 1001) before dropping them.
    #[arg(long, value_name = "SECS", default_value_t = 10.0, value_parser = crate::non_negative)]
    shutdown_timeout: f64,
    #[command(flatten)]
    limits: Limits,
}

/// Runs `sockeye serve` until SIGINT or SIGTERM.
pub(crate) async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let static_dir = match &args.static_dir {
        Some(dir) => {
            let root = dir
                .canonicalize()
                .with_context(|| format!("cannot serve {}", dir.display()))?;
            anyhow::ensure!(
                root.is_dir(),
                "cannot serve {}: not a directory",
                dir.display()
            );
            Some(root)
        }
        None => None,
    };
    // Checked before listening; connects once the hub exists.
    let backplane = match &args.redis {
        Some(url) => Some(RedisBackplane::new(url).context("invalid --redis URL")?),
        None => None,
    };
    let threads = match args.threads {
        0 => std::thread::available_parallelism().map_or(1, usize::from),
        n => n,
    };
    let mut server = sockeye::Server::bind(args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?
        .config(args.limits.config().protocols(args.subprotocols.clone()))
        .max_connections(args.max_connections)
        .threads(threads)
        .shutdown_timeout(seconds(args.shutdown_timeout).unwrap_or_default())
        .http2(args.http2);
    let (scheme, web) = match (&args.tls_cert, &args.tls_key) {
        (Some(cert), Some(key)) => {
            let tls = sockeye::tls::server_config_from_pem_files(cert, key)
                .with_context(|| format!("cannot load {} / {}", cert.display(), key.display()))?;
            server = server.tls(tls);
            ("wss", "https")
        }
        _ => ("ws", "http"),
    };
    let addr = server.local_addr()?;
    // Installed before the URL is printed: whoever reads it may send SIGTERM at once.
    let terminated = crate::termination();
    // Scripts and tests read the WebSocket URL from the first line.
    say(format_args!(
        "sockeye: listening on {scheme}://{addr}/ (mode {}{}{}, {threads} thread{})",
        args.mode,
        if args.limits.deflate {
            ", permessage-deflate"
        } else {
            ""
        },
        if args.http2 { ", http/2" } else { "" },
        if threads == 1 { "" } else { "s" }
    ));
    match &static_dir {
        Some(dir) => say(format_args!(
            "sockeye: serving {} at {web}://{addr}/",
            dir.display()
        )),
        None => say(format_args!(
            "sockeye: open {web}://{addr}/ in a browser for the chat demo"
        )),
    }
    let slow_consumer = match args.slow_consumer {
        SlowPolicy::Close => SlowConsumer::Close(CloseCode::POLICY_VIOLATION),
        SlowPolicy::Drop => SlowConsumer::Drop,
    };
    let hub_config = HubConfig::default()
        .max_queued_messages(args.broadcast_queue)
        .max_queued_size(args.broadcast_queue_size)
        .slow_consumer(slow_consumer)
        .stall_timeout(seconds(args.stall_timeout).unwrap_or_default());
    let hub = match backplane {
        Some(backplane) => {
            // Not the URL itself: it may hold a password.
            say(format_args!(
                "sockeye: rooms shared through Redis (--redis)"
            ));
            Hub::with_backplane(hub_config, backplane)
        }
        None => Hub::new(hub_config),
    };
    let metrics_hub = hub.clone();
    let echo_connections = Arc::new(AtomicU64::new(0));
    let metrics_echo = echo_connections.clone();
    let server = server.on_http(move |request| {
        if request.uri().path() == "/metrics" {
            let mut metrics = metrics_hub.metrics();
            metrics.connections += metrics_echo.load(Ordering::Relaxed);
            return Some(metrics_response(&metrics));
        }
        Some(http_response(request, static_dir.as_deref()))
    });
    let shutdown = CancellationToken::new();
    let signal = {
        let shutdown = shutdown.clone();
        async move {
            terminated.await;
            note(format_args!(
                "sockeye: shutting down (closing connections with 1001)"
            ));
            shutdown.cancel();
        }
    };
    match args.mode {
        Mode::Echo => {
            server
                .serve_with_shutdown(
                    move |mut ws, request| {
                        let peer = peer_of(&ws);
                        // Counted as a connection in /metrics: an echo connection costs no more.
                        let connection = OpenConnection::new(&echo_connections);
                        // Only the URI, for the log: not the request's headers, for the
                        // connection's whole life.
                        let uri = request.into_parts().0.uri;
                        async move {
                            echo(&mut ws).await;
                            drop(connection);
                            log_closed(&ws, &uri, peer);
                        }
                    },
                    signal,
                )
                .await?;
        }
        Mode::Broadcast => {
            let handler_hub = hub.clone();
            server
                .serve_with_shutdown(
                    move |ws, request| {
                        let peer = peer_of(&ws);
                        let member = handler_hub.subscriber();
                        let uri = request.into_parts().0.uri;
                        broadcast(ws, uri, peer, member, shutdown.clone())
                    },
                    signal,
                )
                .await?;
            let metrics = hub.metrics();
            let slow = metrics.evicted;
            if slow > 0 {
                note(format_args!(
                    "sockeye: {slow} slow client(s) were disconnected with 1008"
                ));
            }
        }
    }
    Ok(())
}

/// Prints `line` on stdout. Write errors are logged at `debug` and otherwise ignored: a
/// server whose stdout reader went away (a closed pipe: EPIPE) keeps serving, where `println!`
/// would panic.
fn say(line: fmt::Arguments<'_>) {
    write_line(&mut std::io::stdout().lock(), line);
}

/// Like [`say`], on stderr.
fn note(line: fmt::Arguments<'_>) {
    write_line(&mut std::io::stderr().lock(), line);
}

fn write_line(out: &mut dyn std::io::Write, line: fmt::Arguments<'_>) {
    if let Err(e) = writeln!(out, "{line}").and_then(|()| out.flush()) {
        tracing::debug!(error = %e, "cannot print {line:?}");
    }
}

/// Echoes every data message until the connection ends. Replies are queued with `feed`; the
/// stream writes them when it has no message ready, so a burst is answered in one write.
pub(crate) async fn echo<S: AsyncRead + AsyncWrite + Unpin>(ws: &mut WebSocketStream<S>) {
    while let Some(item) = ws.next().await {
        match item {
            // Data may still arrive after this end sent its close frame (a shutdown's 1001):
            // it is not answered, and the loop reads on to the end of the close handshake.
            Ok(message) if message.is_data() && ws.state() == State::Open => {
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

/// An open echo connection, counted in /metrics' `connections` while it lives.
struct OpenConnection(Arc<AtomicU64>);

impl OpenConnection {
    fn new(count: &Arc<AtomicU64>) -> Self {
        count.fetch_add(1, Ordering::Relaxed);
        Self(count.clone())
    }
}

impl Drop for OpenConnection {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// The peer's address, read when the connection opens: once it has closed the socket may no
/// longer know it.
fn peer_of(ws: &ServerStream) -> Option<SocketAddr> {
    ws.get_ref().peer_addr().ok()
}

/// The access log line for the end of a WebSocket connection (its opening is logged by
/// `sockeye::Server`); `peer` is [`peer_of`] the connection when it opened.
fn log_closed(ws: &ServerStream, uri: &Uri, peer: Option<SocketAddr>) {
    let peer = peer.map_or_else(|| "-".to_owned(), |a| a.to_string());
    let code = ws
        .close_info()
        .map_or_else(|| "-".to_owned(), |closed| closed.code.to_string());
    tracing::info!(%peer, path = %uri, %code, "connection closed");
}

/// A broadcast connection: relays what it receives to its room (the topic named by its path)
/// and writes what its room sends, until it closes, fails, is evicted for being slow, or the
/// server shuts down.
async fn broadcast(
    mut ws: ServerStream,
    uri: Uri,
    peer: Option<SocketAddr>,
    mut member: Subscriber,
    shutdown: CancellationToken,
) {
    let path = uri.path().to_owned();
    member.subscribe(&path);
    'relay: loop {
        tokio::select! {
            item = ws.next() => match item {
                Some(Ok(message)) if message.is_data() => {
                    member.publish(&path, message);
                }
                Some(Ok(_)) => {}
                Some(Err(e)) => {
                    tracing::debug!(error = %e, "connection ended");
                    break;
                }
                // Closed, by the client or by the server's shutdown (1001).
                None => break,
            },
            next = member.recv() => {
                // `None`: evicted for being slow.
                let Some(first) = next else { break };
                // Everything waiting goes out together: `feed` only queues (it waits while the
                // client's write buffer is over its high-water mark), and the stream writes the
                // batch in one go when next polled.
                let mut message = Some(first);
                let mut fed = 0;
                while let Some(next) = message.take() {
                    tokio::select! {
                        // In this order: while `feed` completes at once, nothing waits on the
                        // rest.
                        biased;
                        result = ws.feed_prepared(&next) => if result.is_err() { break 'relay },
                        _ = member.evicted() => break 'relay,
                        // A client that stopped reading cannot take a close frame either.
                        () = shutdown.cancelled() => break 'relay,
                    }
                    fed += 1;
                    if fed < MAX_BATCH {
                        message = member.try_recv();
                    }
                }
            }
        }
    }
    let evicted = member.eviction();
    // Leave the room before the (bounded) close handshake.
    drop(member);
    if let Some(code) = evicted {
        tracing::info!(path, "queue full: disconnecting a slow client with {code}");
        let closing = ws.close(code, "too slow");
        let _ = tokio::time::timeout(SLOW_CLIENT_CLOSE_TIMEOUT, closing).await;
    }
    log_closed(&ws, &uri, peer);
}

/// `/metrics`: the hub's counters in the Prometheus text format.
fn metrics_response(metrics: &HubMetrics) -> Response<Vec<u8>> {
    let mut response = Response::new(metrics.to_prometheus("sockeye_").into_bytes());
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    response
}

/// The answer to a plain HTTP request: a file of `static_dir`, or the demo page.
fn http_response(request: &Request<()>, static_dir: Option<&Path>) -> Response<Vec<u8>> {
    let path = request.uri().path();
    let demo = path == "/" || path == "/index.html";
    let Some(root) = static_dir else {
        return if demo {
            demo_page()
        } else {
            status_page(StatusCode::NOT_FOUND)
        };
    };
    match resolve(root, path).and_then(|file| read_file(&file).map(|body| (file, body))) {
        Ok((file, body)) => {
            let mut response = Response::new(body);
            let headers = response.headers_mut();
            headers.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static(content_type(&file)),
            );
            headers.insert(
                header::X_CONTENT_TYPE_OPTIONS,
                HeaderValue::from_static("nosniff"),
            );
            headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
            response
        }
        Err(StatusCode::NOT_FOUND) if demo => demo_page(),
        Err(status) => status_page(status),
    }
}

fn demo_page() -> Response<Vec<u8>> {
    let mut response = Response::new(DEMO_PAGE.as_bytes().to_vec());
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    // The page's own inline script and style; it connects back to this server only.
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; \
             connect-src 'self' ws: wss:; img-src 'self' data:; base-uri 'none'; \
             form-action 'none'; frame-ancestors 'none'",
        ),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    response
}

/// A short plain-text page for an error status.
fn status_page(status: StatusCode) -> Response<Vec<u8>> {
    let text = format!(
        "{} {}\n",
        status.as_u16(),
        status.canonical_reason().unwrap_or("")
    );
    let mut response = Response::new(text.into_bytes());
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

/// The file under `root` (canonical) that the URL path `url_path` names, or the status to
/// answer: 400 for a path that does not decode, 403 for `..` or anything that resolves outside
/// `root` (a symbolic link included), 404 for what does not exist. A directory means its
/// `index.html`.
fn resolve(root: &Path, url_path: &str) -> Result<PathBuf, StatusCode> {
    let decoded = sockeye::percent_decode(url_path).ok_or(StatusCode::BAD_REQUEST)?;
    let decoded = String::from_utf8(decoded).map_err(|_| StatusCode::BAD_REQUEST)?;
    if decoded.contains(['\0', '\\']) {
        return Err(StatusCode::BAD_REQUEST);
    }
    let mut file = root.to_path_buf();
    for segment in decoded.split('/') {
        match segment {
            "" | "." => {}
            ".." => return Err(StatusCode::FORBIDDEN),
            name => file.push(name),
        }
    }
    if file.is_dir() {
        file.push("index.html");
    }
    let file = file.canonicalize().map_err(|_| StatusCode::NOT_FOUND)?;
    if !file.starts_with(root) {
        return Err(StatusCode::FORBIDDEN);
    }
    if !file.is_file() {
        return Err(StatusCode::NOT_FOUND);
    }
    Ok(file)
}

/// Reads a whole file of at most [`MAX_STATIC_FILE_SIZE`] bytes (403 for a larger one, refused
/// by its size before reading when the file system tells it).
///
/// This is blocking I/O on the runtime's thread: `Server::on_http` takes a synchronous callback,
/// run on the connection's task, and `sockeye` runs on a current-thread runtime, where
/// `tokio::task::block_in_place` panics and `spawn_blocking` could only be awaited by an async
/// callback. Making the runtime multi-threaded or the callback async would be a larger change
/// than the risk: a read is bounded by the size cap, and reading a local file of at most
/// 16 MiB holds the other connections up for milliseconds (longer on a slow or network file
/// system). `--static` is for the demo and small sites, not for serving large files.
fn read_file(file: &Path) -> Result<Vec<u8>, StatusCode> {
    let opened = std::fs::File::open(file).map_err(|_| StatusCode::NOT_FOUND)?;
    if opened
        .metadata()
        .is_ok_and(|meta| meta.len() > MAX_STATIC_FILE_SIZE)
    {
        return Err(StatusCode::FORBIDDEN);
    }
    let mut body = Vec::new();
    opened
        .take(MAX_STATIC_FILE_SIZE + 1)
        .read_to_end(&mut body)
        .map_err(|_| StatusCode::INTERNAL_SERVER_ERROR)?;
    if body.len() as u64 > MAX_STATIC_FILE_SIZE {
        return Err(StatusCode::FORBIDDEN);
    }
    Ok(body)
}

/// `Content-Type` by file extension.
fn content_type(file: &Path) -> &'static str {
    let extension = file
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase);
    match extension.as_deref() {
        Some("html" | "htm") => "text/html; charset=utf-8",
        Some("js" | "mjs") => "text/javascript; charset=utf-8",
        Some("css") => "text/css; charset=utf-8",
        Some("json") => "application/json",
        Some("png") => "image/png",
        Some("svg") => "image/svg+xml",
        Some("txt") => "text/plain; charset=utf-8",
        _ => "application/octet-stream",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percent_decode_rejects_malformed_escapes() {
        assert_eq!(
            sockeye::percent_decode("/a%2e%2E/b").as_deref(),
            Some(&b"/a../b"[..])
        );
        assert_eq!(sockeye::percent_decode("%"), None);
        assert_eq!(sockeye::percent_decode("%2"), None);
        assert_eq!(sockeye::percent_decode("%zz"), None);
        assert_eq!(sockeye::percent_decode("%+1"), None);
    }

    #[test]
    fn metrics_are_prometheus_text_of_the_hub() {
        let hub = Hub::new(HubConfig::default());
        let mut a = hub.subscriber();
        let mut b = hub.subscriber();
        a.subscribe("/room/x");
        b.subscribe("/room/x");
        a.publish("/room/x", sockeye::Message::text("hi"));
        let response = metrics_response(&hub.metrics());
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(
            response.headers()[header::CONTENT_TYPE],
            "text/plain; version=0.0.4; charset=utf-8"
        );
        let body = String::from_utf8(response.into_body()).unwrap();
        for line in [
            "sockeye_connections 2",
            "sockeye_subscriptions 2",
            "sockeye_messages_in_total 1",
            "sockeye_messages_out_total 1",
            "sockeye_backplane_up 1",
            "# TYPE sockeye_dropped_total counter",
        ] {
            assert!(body.lines().any(|l| l == line), "{line} in {body}");
        }
    }

    #[test]
    fn modes_print_as_spelled_on_the_command_line() {
        assert_eq!(Mode::Echo.to_string(), "echo");
        assert_eq!(Mode::Broadcast.to_string(), "broadcast");
        // And parse back.
        assert!(matches!(Mode::from_str("echo", false), Ok(Mode::Echo)));
        assert!(matches!(
            Mode::from_str("broadcast", false),
            Ok(Mode::Broadcast)
        ));
    }

    #[test]
    fn read_file_refuses_files_over_the_cap() {
        let dir = std::env::temp_dir().join(format!("sockeye-serve-cap-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let at_cap = dir.join("at-cap.bin");
        let over = dir.join("over.bin");
        // Sparse files: no 16 MiB written.
        std::fs::File::create(&at_cap)
            .unwrap()
            .set_len(MAX_STATIC_FILE_SIZE)
            .unwrap();
        std::fs::File::create(&over)
            .unwrap()
            .set_len(MAX_STATIC_FILE_SIZE + 1)
            .unwrap();
        assert_eq!(
            read_file(&at_cap).map(|body| body.len() as u64),
            Ok(MAX_STATIC_FILE_SIZE)
        );
        assert_eq!(read_file(&over), Err(StatusCode::FORBIDDEN));
        assert_eq!(read_file(&dir.join("missing")), Err(StatusCode::NOT_FOUND));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn content_types_by_extension() {
        for (name, expected) in [
            ("a.html", "text/html; charset=utf-8"),
            ("a.JS", "text/javascript; charset=utf-8"),
            ("a.css", "text/css; charset=utf-8"),
            ("a.json", "application/json"),
            ("a.png", "image/png"),
            ("a.svg", "image/svg+xml"),
            ("a.txt", "text/plain; charset=utf-8"),
            ("a", "application/octet-stream"),
        ] {
            assert_eq!(content_type(Path::new(name)), expected, "{name}");
        }
    }

    #[test]
    fn resolve_stays_inside_the_root() {
        let base = std::env::temp_dir().join(format!("sockeye-serve-unit-{}", std::process::id()));
        let root = base.join("root");
        std::fs::create_dir_all(root.join("sub")).unwrap();
        std::fs::write(root.join("sub/a.txt"), "a").unwrap();
        std::fs::write(base.join("secret.txt"), "secret").unwrap();
        let root = root.canonicalize().unwrap();
        assert_eq!(resolve(&root, "/sub/a.txt"), Ok(root.join("sub/a.txt")));
        assert_eq!(resolve(&root, "/./sub//a.txt"), Ok(root.join("sub/a.txt")));
        for escape in [
            "/../secret.txt",
            "/sub/../../secret.txt",
            "/%2e%2e/secret.txt",
        ] {
            assert_eq!(
                resolve(&root, escape),
                Err(StatusCode::FORBIDDEN),
                "{escape}"
            );
        }
        assert_eq!(resolve(&root, "/sub%5ca.txt"), Err(StatusCode::BAD_REQUEST));
        assert_eq!(resolve(&root, "/a%00"), Err(StatusCode::BAD_REQUEST));
        assert_eq!(resolve(&root, "/%ff"), Err(StatusCode::BAD_REQUEST));
        assert_eq!(resolve(&root, "/missing"), Err(StatusCode::NOT_FOUND));
        assert_eq!(resolve(&root, "/sub"), Err(StatusCode::NOT_FOUND));
        #[cfg(unix)]
        {
            let link = root.join("link.txt");
            let _ = std::fs::remove_file(&link);
            std::os::unix::fs::symlink(base.join("secret.txt"), &link).unwrap();
            assert_eq!(resolve(&root, "/link.txt"), Err(StatusCode::FORBIDDEN));
        }
        std::fs::remove_dir_all(&base).unwrap();
    }
}
