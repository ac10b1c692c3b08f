//! `sockeye serve`: a WebSocket echo or broadcast server that also answers plain HTTP on its
//! port, with a built-in chat demo page or a directory of static files.
//!
//! In broadcast mode every text and binary message goes to every *other* client connected on
//! the same request path: one chat room per path (`/room/lobby`). Each client has a bounded
//! queue of messages waiting to be written to it (`--broadcast-queue` messages and
//! `--broadcast-queue-size` payload bytes, besides the connection's 64 KiB write buffer). A
//! client whose queue is full when a message arrives for it, i.e. one that reads slower than its
//! room talks, is disconnected with 1008 (policy violation) and counted, so that it neither slows
//! the room down nor grows the server's memory. Disconnecting rather than silently dropping its
//! messages keeps a chat from having invisible holes: the client learns it lost messages, and
//! the demo page reconnects.

use std::collections::HashMap;
use std::io::Read as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use anyhow::Context as _;
use clap::ValueEnum;
use futures_util::{SinkExt as _, StreamExt as _};
use sockeye::http::{header, HeaderValue, Request, Response, StatusCode};
use sockeye::{CloseCode, Message, ServerStream, WebSocketStream};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::mpsc;
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

/// Default for `--broadcast-queue`.
const DEFAULT_BROADCAST_QUEUE: usize = 256;

/// Default for `--broadcast-queue-size`: 4 MiB.
const DEFAULT_BROADCAST_QUEUE_SIZE: usize = 4 << 20;

/// How long a client disconnected for being slow gets to take its 1008 close frame before the
/// TCP connection is dropped: it is, after all, not reading.
const SLOW_CLIENT_CLOSE_TIMEOUT: Duration = Duration::from_secs(1);

/// Largest file `--static` serves; larger ones are refused with 403. Responses are built in
/// memory, so this bounds the memory a request costs.
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
    #[arg(long, value_name = "N", default_value_t = DEFAULT_BROADCAST_QUEUE,
          value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..))]
    broadcast_queue: usize,
    /// Broadcast mode: payload bytes queued for one client at most; a client whose queue would
    /// go over is disconnected with 1008 (one message larger than this is still queued for a
    /// client whose queue is empty).
    #[arg(long, value_name = "BYTES", default_value_t = DEFAULT_BROADCAST_QUEUE_SIZE)]
    broadcast_queue_size: usize,
    /// Serve TLS (wss://) with this PEM certificate chain (leaf first); needs --tls-key.
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// The PEM private key (PKCS#8, PKCS#1 or SEC1) for --tls-cert.
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
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
    let mut server = sockeye::Server::bind(args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?
        .config(args.limits.config().protocols(args.subprotocols.clone()))
        .max_connections(args.max_connections)
        .shutdown_timeout(seconds(args.shutdown_timeout).unwrap_or_default());
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
    // Scripts and tests read the WebSocket URL from the first line.
    println!(
        "sockeye: listening on {scheme}://{addr}/ (mode {:?}{})",
        args.mode,
        if args.limits.deflate {
            ", permessage-deflate"
        } else {
            ""
        }
    );
    match &static_dir {
        Some(dir) => println!("sockeye: serving {} at {web}://{addr}/", dir.display()),
        None => println!("sockeye: open {web}://{addr}/ in a browser for the chat demo"),
    }
    let server = server.on_http(move |request| Some(http_response(request, static_dir.as_deref())));
    let shutdown = CancellationToken::new();
    let signal = {
        let shutdown = shutdown.clone();
        async move {
            shutdown_signal().await;
            shutdown.cancel();
        }
    };
    match args.mode {
        Mode::Echo => {
            server
                .serve_with_shutdown(
                    |mut ws, request| async move {
                        echo(&mut ws).await;
                        log_closed(&ws, &request);
                    },
                    signal,
                )
                .await?;
        }
        Mode::Broadcast => {
            let rooms = Arc::new(Rooms::new(args.broadcast_queue, args.broadcast_queue_size));
            let handler_rooms = rooms.clone();
            server
                .serve_with_shutdown(
                    move |ws, request| {
                        broadcast(ws, request, handler_rooms.clone(), shutdown.clone())
                    },
                    signal,
                )
                .await?;
            let slow = rooms.slow_disconnects.load(Ordering::Relaxed);
            if slow > 0 {
                eprintln!("sockeye: {slow} slow client(s) were disconnected with 1008");
            }
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
pub(crate) async fn echo<S: AsyncRead + AsyncWrite + Unpin>(ws: &mut WebSocketStream<S>) {
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

/// The access log line for the end of a WebSocket connection (its opening is logged by
/// `sockeye::Server`).
fn log_closed(ws: &ServerStream, request: &Request<()>) {
    let peer = ws
        .get_ref()
        .get_ref()
        .peer_addr()
        .map_or_else(|_| "-".to_owned(), |a| a.to_string());
    let code = ws
        .close_info()
        .map_or_else(|| "-".to_owned(), |closed| closed.code.to_string());
    tracing::info!(%peer, path = %request.uri(), %code, "connection closed");
}

/// A client in a room: where its messages go, and how to tell it that it was too slow.
#[derive(Debug)]
struct Member {
    queue: mpsc::Sender<Message>,
    /// Payload bytes in `queue`: added before a message is queued, taken off by the client's
    /// task when it takes the message out.
    queued_size: Arc<AtomicUsize>,
    kick: CancellationToken,
}

/// Where a member's task takes its messages from.
#[derive(Debug)]
struct Inbox {
    queue: mpsc::Receiver<Message>,
    queued_size: Arc<AtomicUsize>,
}

impl Inbox {
    /// The next queued message; `None` once the member was removed from its room.
    async fn recv(&mut self) -> Option<Message> {
        let message = self.queue.recv().await?;
        self.queued_size
            .fetch_sub(message.as_payload().len(), Ordering::Relaxed);
        Some(message)
    }
}

/// What became of a message published to one member.
#[derive(Debug, PartialEq, Eq)]
enum Delivery {
    Queued,
    /// The member's queue is full: it is disconnected.
    Full,
    /// The member's task has ended.
    Gone,
}

/// The broadcast rooms: the members of each request path.
#[derive(Debug)]
struct Rooms {
    rooms: Mutex<HashMap<String, HashMap<u64, Member>>>,
    next_id: AtomicU64,
    /// Most messages queued per member.
    queue: usize,
    /// Most payload bytes queued per member.
    queue_size: usize,
    slow_disconnects: AtomicU64,
}

impl Rooms {
    fn new(queue: usize, queue_size: usize) -> Self {
        Self {
            rooms: Mutex::new(HashMap::new()),
            next_id: AtomicU64::new(0),
            queue,
            queue_size,
            slow_disconnects: AtomicU64::new(0),
        }
    }

    /// Adds a member to the room `path`: its id, its queue and the token cancelled when it is
    /// disconnected for being slow.
    fn join(&self, path: &str) -> (u64, Inbox, CancellationToken) {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (queue, receiver) = mpsc::channel(self.queue);
        let queued_size = Arc::new(AtomicUsize::new(0));
        let kick = CancellationToken::new();
        let member = Member {
            queue,
            queued_size: queued_size.clone(),
            kick: kick.clone(),
        };
        let inbox = Inbox {
            queue: receiver,
            queued_size,
        };
        self.lock()
            .entry(path.to_owned())
            .or_default()
            .insert(id, member);
        (id, inbox, kick)
    }

    fn leave(&self, path: &str, id: u64) {
        let mut rooms = self.lock();
        if let Some(room) = rooms.get_mut(path) {
            room.remove(&id);
            if room.is_empty() {
                rooms.remove(path);
            }
        }
    }

    /// Queues `message` for every member of `path` but `from`, never waiting: a member whose
    /// queue is full (in messages or bytes) is removed and told to leave with 1008.
    fn publish(&self, path: &str, from: u64, message: &Message) {
        let size = message.as_payload().len();
        let mut slow = 0;
        let mut rooms = self.lock();
        let Some(room) = rooms.get_mut(path) else {
            return;
        };
        room.retain(|id, member| {
            if *id == from {
                return true;
            }
            // Counted before queueing, so that the member's task never takes off more than
            // was added.
            let queued = member.queued_size.fetch_add(size, Ordering::Relaxed);
            let delivery = if queued > 0 && queued.saturating_add(size) > self.queue_size {
                Delivery::Full
            } else {
                match member.queue.try_send(message.clone()) {
                    Ok(()) => Delivery::Queued,
                    Err(mpsc::error::TrySendError::Full(_)) => Delivery::Full,
                    Err(mpsc::error::TrySendError::Closed(_)) => Delivery::Gone,
                }
            };
            if delivery != Delivery::Queued {
                member.queued_size.fetch_sub(size, Ordering::Relaxed);
            }
            match delivery {
                Delivery::Queued => true,
                Delivery::Full => {
                    member.kick.cancel();
                    slow += 1;
                    false
                }
                Delivery::Gone => false,
            }
        });
        drop(rooms);
        if slow > 0 {
            self.slow_disconnects.fetch_add(slow, Ordering::Relaxed);
            tracing::info!(
                path,
                clients = slow,
                "queue full: disconnecting slow client(s) with 1008"
            );
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, HashMap<u64, Member>>> {
        // The map stays consistent whatever a panicking holder did: no invariant spans entries.
        self.rooms.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// A broadcast connection: relays what it receives to its room and writes what its room sends,
/// until it closes, fails, is disconnected for being slow, or the server shuts down.
async fn broadcast(
    mut ws: ServerStream,
    request: Request<()>,
    rooms: Arc<Rooms>,
    shutdown: CancellationToken,
) {
    let path = request.uri().path().to_owned();
    let (id, mut queue, kick) = rooms.join(&path);
    let mut slow = false;
    loop {
        tokio::select! {
            item = ws.next() => match item {
                Some(Ok(message)) if message.is_data() => rooms.publish(&path, id, &message),
                Some(Ok(_)) => {}
                Some(Err(e)) => {
                    tracing::debug!(error = %e, "connection ended");
                    break;
                }
                // Closed, by the client or by the server's shutdown (1001).
                None => break,
            },
            Some(message) = queue.recv() => {
                // `feed` waits while the client's write buffer is over its high-water mark; the
                // stream writes the message when next polled.
                tokio::select! {
                    fed = ws.feed(message) => if fed.is_err() { break },
                    () = kick.cancelled() => { slow = true; break }
                    // A client that stopped reading cannot take a close frame either.
                    () = shutdown.cancelled() => break,
                }
            }
            () = kick.cancelled() => { slow = true; break }
        }
    }
    rooms.leave(&path, id);
    if slow {
        let closing = ws.close(CloseCode::POLICY_VIOLATION, "too slow");
        let _ = tokio::time::timeout(SLOW_CLIENT_CLOSE_TIMEOUT, closing).await;
    }
    log_closed(&ws, &request);
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
    let decoded = percent_decode(url_path).ok_or(StatusCode::BAD_REQUEST)?;
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

/// Reads a whole file of at most [`MAX_STATIC_FILE_SIZE`] bytes.
fn read_file(file: &Path) -> Result<Vec<u8>, StatusCode> {
    let opened = std::fs::File::open(file).map_err(|_| StatusCode::NOT_FOUND)?;
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

/// Decodes `%XX` escapes; `None` for a malformed escape.
fn percent_decode(s: &str) -> Option<Vec<u8>> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&byte) = bytes.get(i) {
        if byte == b'%' {
            let hex = bytes.get(i + 1..i + 3)?;
            // Two hex digits exactly: `from_str_radix` alone would also take a sign ("%+1").
            if !hex.iter().all(u8::is_ascii_hexdigit) {
                return None;
            }
            out.push(u8::from_str_radix(std::str::from_utf8(hex).ok()?, 16).ok()?);
            i += 3;
        } else {
            out.push(byte);
            i += 1;
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percent_decode_rejects_malformed_escapes() {
        assert_eq!(
            percent_decode("/a%2e%2E/b").as_deref(),
            Some(&b"/a../b"[..])
        );
        assert_eq!(percent_decode("%"), None);
        assert_eq!(percent_decode("%2"), None);
        assert_eq!(percent_decode("%zz"), None);
        assert_eq!(percent_decode("%+1"), None);
    }

    /// Every message in `inbox` without waiting.
    fn drain(inbox: &mut Inbox) -> Vec<Message> {
        let mut messages = Vec::new();
        while let Ok(message) = inbox.queue.try_recv() {
            inbox
                .queued_size
                .fetch_sub(message.as_payload().len(), Ordering::Relaxed);
            messages.push(message);
        }
        messages
    }

    #[test]
    fn rooms_deliver_to_the_others_on_the_same_path() {
        let rooms = Rooms::new(8, 1 << 20);
        let (a1, mut a1_inbox, _) = rooms.join("/a");
        let (_, mut a2_inbox, _) = rooms.join("/a");
        let (b, mut b_inbox, _) = rooms.join("/b");
        rooms.publish("/a", a1, &Message::text("hi"));
        assert!(drain(&mut a1_inbox).is_empty());
        assert_eq!(drain(&mut a2_inbox), vec![Message::text("hi")]);
        assert!(drain(&mut b_inbox).is_empty());
        rooms.leave("/a", a1);
        rooms.leave("/b", b);
        assert_eq!(rooms.lock().len(), 1, "an empty room is removed");
    }

    #[tokio::test]
    async fn rooms_disconnect_a_member_whose_queue_is_full() {
        // By count: a queue of 2 messages.
        let rooms = Rooms::new(2, 1 << 20);
        let (from, _from_inbox, _) = rooms.join("/r");
        let (_, mut slow_inbox, slow_kick) = rooms.join("/r");
        for _ in 0..2 {
            rooms.publish("/r", from, &Message::text("x"));
        }
        assert!(!slow_kick.is_cancelled());
        rooms.publish("/r", from, &Message::text("x"));
        assert!(slow_kick.is_cancelled());
        assert_eq!(rooms.slow_disconnects.load(Ordering::Relaxed), 1);
        assert_eq!(rooms.lock()["/r"].len(), 1, "the slow member left the room");
        // What was queued before is still delivered, then the queue ends.
        assert_eq!(slow_inbox.recv().await, Some(Message::text("x")));
        assert_eq!(slow_inbox.recv().await, Some(Message::text("x")));
        assert_eq!(slow_inbox.recv().await, None);

        // By size: 10 bytes, though one larger message fits an empty queue.
        let rooms = Rooms::new(100, 10);
        let (from, _from_inbox, _) = rooms.join("/r");
        let (_, mut inbox, kick) = rooms.join("/r");
        rooms.publish("/r", from, &Message::binary(vec![0; 20]));
        assert_eq!(inbox.queued_size.load(Ordering::Relaxed), 20);
        assert_eq!(inbox.recv().await, Some(Message::binary(vec![0; 20])));
        assert_eq!(inbox.queued_size.load(Ordering::Relaxed), 0);
        rooms.publish("/r", from, &Message::binary(vec![0; 6]));
        assert!(!kick.is_cancelled());
        rooms.publish("/r", from, &Message::binary(vec![0; 6]));
        assert!(kick.is_cancelled());
        assert_eq!(drain(&mut inbox), vec![Message::binary(vec![0; 6])]);
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
