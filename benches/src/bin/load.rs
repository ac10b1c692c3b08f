//! The load client of `scripts/bench.sh`, and the summary of its results.
//!
//! ```text
//! load echo ADDR --conns N --inflight K --size BYTES [--text] [--raw] [--secs S] [--warmup S] [--pid P] [--messages M]
//! load handshakes ADDR [--concurrency C] [--secs S] [--pid P]
//! load idle ADDR --pid P [--conns N]
//! load summarize RESULTS.tsv
//! ```
//!
//! It speaks WebSocket itself, on one thread, to cost the servers as little as possible: frames
//! are encoded and masked once before the run, each connection writes its whole in-flight batch
//! with one write and reads the echoes through a parser that only walks frame headers. Every
//! connection first checks one echo byte for byte. A run prints one line of `key=value` pairs:
//! `rate` (messages or handshakes per second, or bytes per idle connection), `client_cpu` (this
//! process's CPU time over wall time, from `getrusage`) and `server_cpu` (the same for `--pid`,
//! from `/proc/PID/stat`): a client below 1.0 while the server is at about 1.0 is not the
//! bottleneck.
//!
//! `--messages M` makes an echo run a fixed workload instead of a timed one, for instruction
//! counts (`valgrind --tool=callgrind` on the server) that do not depend on the machine's speed:
//! no warm-up, each connection sends `ceil(M / (conns × inflight))` batches and the run ends
//! when all their echoes are back (or after `--secs`, then reported as `incomplete`).

use std::cell::Cell;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;
use tokio::sync::Notify;

/// The `Sec-WebSocket-Key` of RFC 6455 §1.3 and its accept value.
const KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";
const ACCEPT: &str = "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=";

/// Options of every mode, from `--name value` pairs.
#[derive(Debug, Clone)]
struct Options {
    addr: SocketAddr,
    conns: usize,
    inflight: usize,
    size: usize,
    text: bool,
    raw: bool,
    secs: f64,
    warmup: f64,
    pid: Option<u32>,
    concurrency: usize,
    /// Echo mode: a fixed number of messages instead of a timed run (0: timed).
    messages: u64,
}

fn parse_options(mut args: impl Iterator<Item = String>) -> Options {
    let addr = args
        .next()
        .and_then(|a| a.parse().ok())
        .unwrap_or_else(|| usage("ADDR (ip:port) expected"));
    let mut options = Options {
        addr,
        conns: 1,
        inflight: 1,
        size: 20,
        text: false,
        raw: false,
        secs: 3.0,
        warmup: 0.5,
        pid: None,
        concurrency: 32,
        messages: 0,
    };
    while let Some(flag) = args.next() {
        match flag.as_str() {
            "--text" => options.text = true,
            "--raw" => options.raw = true,
            _ => {
                let value = args.next().unwrap_or_else(|| usage("flag without value"));
                let number = || -> f64 { value.parse().unwrap_or_else(|_| usage("bad number")) };
                match flag.as_str() {
                    "--conns" => options.conns = number() as usize,
                    "--inflight" => options.inflight = number() as usize,
                    "--size" => options.size = number() as usize,
                    "--secs" => options.secs = number(),
                    "--warmup" => options.warmup = number(),
                    "--pid" => options.pid = Some(number() as u32),
                    "--concurrency" => options.concurrency = number() as usize,
                    "--messages" => options.messages = number() as u64,
                    _ => usage("unknown flag"),
                }
            }
        }
    }
    options
}

fn usage(why: &str) -> ! {
    eprintln!("load: {why}\nusage: load <echo|handshakes|idle> ADDR [flags] | load summarize FILE");
    std::process::exit(2);
}

fn main() {
    let mut args = std::env::args().skip(1);
    let mode = args.next().unwrap_or_default();
    if mode == "summarize" {
        let path = args.next().unwrap_or_else(|| usage("FILE expected"));
        let text = std::fs::read_to_string(&path).expect("read results");
        print!("{}", summarize(&text));
        return;
    }
    let options = parse_options(args);
    raise_fd_limit();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let local = tokio::task::LocalSet::new();
    let line = local.block_on(&runtime, async move {
        match mode.as_str() {
            "echo" => echo(options).await,
            "handshakes" => handshakes(options).await,
            "idle" => idle(options).await,
            _ => usage("unknown mode"),
        }
    });
    println!("{line}");
    // Connections still open are dropped with the process; the servers see them end.
    std::process::exit(0);
}

fn raise_fd_limit() {
    // SAFETY: getrlimit/setrlimit only read and write the struct passed to them.
    unsafe {
        let mut limit: libc::rlimit = std::mem::zeroed();
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) == 0 {
            limit.rlim_cur = limit.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &limit);
        }
    }
}

/// CPU seconds this process has used.
fn own_cpu() -> f64 {
    // SAFETY: getrusage fills the zeroed struct it is given.
    let usage = unsafe {
        let mut usage: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_SELF, &mut usage);
        usage
    };
    let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    secs(usage.ru_utime) + secs(usage.ru_stime)
}

/// CPU seconds process `pid` has used, from `/proc/PID/stat` (Linux); 0 elsewhere.
fn process_cpu(pid: Option<u32>) -> f64 {
    let Some(pid) = pid else { return 0.0 };
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return 0.0;
    };
    // Fields after the command name, which is in parentheses and may hold spaces.
    let rest = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the whole line, 12 and 13 after the name.
    let ticks: f64 = fields.get(11..13).map_or(0.0, |f| {
        f.iter().filter_map(|v| v.parse::<f64>().ok()).sum()
    });
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    ticks / hz.max(1.0)
}

/// Resident set of process `pid` in bytes, from `/proc/PID/status`.
fn process_rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("server status");
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .expect("VmRSS")
        * 1024
}

/// CPU use of this process and the server over a stretch of wall time.
struct CpuMeter {
    wall: Instant,
    own: f64,
    server: f64,
    pid: Option<u32>,
}

impl CpuMeter {
    fn start(pid: Option<u32>) -> Self {
        Self {
            wall: Instant::now(),
            own: own_cpu(),
            server: process_cpu(pid),
            pid,
        }
    }

    /// Elapsed seconds, client CPU share, server CPU share.
    fn stop(&self) -> (f64, f64, f64) {
        let wall = self.wall.elapsed().as_secs_f64();
        let own = (own_cpu() - self.own) / wall;
        let server = (process_cpu(self.pid) - self.server) / wall;
        (wall, own, server)
    }
}

/// The payload of every message: ASCII text with a two-byte and a three-byte character every 40
/// bytes or so (valid UTF-8 of exactly `size` bytes) for text, pseudo-random bytes for binary.
fn payload(size: usize, text: bool) -> Vec<u8> {
    if text {
        let pattern = "{\"user\":\"ana\",\"msg\":\"caf\u{e9} \u{2713} ok\"},";
        let mut out = String::with_capacity(size);
        while out.len() < size {
            for c in pattern.chars() {
                if out.len() + c.len_utf8() > size {
                    break;
                }
                out.push(c);
            }
            if out.len() + 4 > size {
                while out.len() < size {
                    out.push(' ');
                }
            }
        }
        out.into_bytes()
    } else {
        let mut state = 0x9e37_79b9_7f4a_7c15_u64;
        (0..size)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                state as u8
            })
            .collect()
    }
}

/// One masked client frame (RFC 6455 §5.2), FIN set.
fn encode_frame(opcode: u8, payload: &[u8], mask: [u8; 4]) -> Vec<u8> {
    let mut out = Vec::with_capacity(payload.len() + 14);
    out.push(0x80 | opcode);
    match payload.len() {
        n if n < 126 => out.push(0x80 | n as u8),
        n if n <= 0xffff => {
            out.push(0x80 | 126);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            out.push(0x80 | 127);
            out.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    out.extend_from_slice(&mask);
    out.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    out
}

/// Counts complete data messages in a stream of frames without looking at payloads.
#[derive(Debug, Default)]
struct FrameCounter {
    header: [u8; 14],
    header_len: usize,
    /// Payload bytes of the current frame still to skip.
    skip: u64,
    /// The current frame ends a data message.
    ends_message: bool,
}

impl FrameCounter {
    /// Feeds bytes; returns the number of messages completed, or an error on a close frame.
    fn feed(&mut self, mut data: &[u8]) -> Result<u64, &'static str> {
        let mut done = 0;
        loop {
            if self.skip > 0 {
                let n = (data.len() as u64).min(self.skip);
                self.skip -= n;
                data = &data[n as usize..];
                if self.skip > 0 {
                    return Ok(done);
                }
                done += u64::from(self.ends_message);
            }
            if data.is_empty() {
                return Ok(done);
            }
            // Header: take what is needed to know its length, then the rest.
            let mut need = 2;
            loop {
                if self.header_len >= 2 {
                    let len7 = self.header[1] & 0x7f;
                    need =
                        2 + match len7 {
                            126 => 2,
                            127 => 8,
                            _ => 0,
                        } + if self.header[1] & 0x80 != 0 { 4 } else { 0 };
                }
                if self.header_len >= need {
                    break;
                }
                let Some((&byte, rest)) = data.split_first() else {
                    return Ok(done);
                };
                self.header[self.header_len] = byte;
                self.header_len += 1;
                data = rest;
            }
            let h = &self.header;
            let opcode = h[0] & 0x0f;
            if opcode == 8 {
                return Err("server sent a close frame");
            }
            let len = match h[1] & 0x7f {
                126 => u64::from(u16::from_be_bytes([h[2], h[3]])),
                127 => u64::from_be_bytes(h[2..10].try_into().expect("8 bytes")),
                n => u64::from(n),
            };
            self.ends_message = h[0] & 0x80 != 0 && opcode < 3;
            self.header_len = 0;
            if len == 0 {
                done += u64::from(self.ends_message);
            } else {
                self.skip = len;
            }
        }
    }
}

async fn ws_connect(addr: SocketAddr, raw: bool) -> std::io::Result<(TcpStream, Vec<u8>)> {
    let mut stream = TcpStream::connect(addr).await?;
    stream.set_nodelay(true)?;
    if raw {
        return Ok((stream, Vec::new()));
    }
    let request = format!(
        "GET / HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: {KEY}\r\nSec-WebSocket-Version: 13\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).await?;
    let mut head = Vec::with_capacity(256);
    let mut buf = [0u8; 1024];
    loop {
        let n = stream.read(&mut buf).await?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        head.extend_from_slice(&buf[..n]);
        if let Some(end) = head.windows(4).position(|w| w == b"\r\n\r\n") {
            let text = String::from_utf8_lossy(&head[..end]);
            if !text.starts_with("HTTP/1.1 101") || !text.contains(ACCEPT) {
                return Err(std::io::Error::other(format!("bad handshake: {text}")));
            }
            let leftover = head[end + 4..].to_vec();
            return Ok((stream, leftover));
        }
        if head.len() > 16 << 10 {
            return Err(std::io::Error::other("handshake response too long"));
        }
    }
}

/// Sends one message and checks that the echo carries the same opcode and payload.
async fn check_echo(
    stream: &mut TcpStream,
    leftover: Vec<u8>,
    opcode: u8,
    data: &[u8],
) -> std::io::Result<()> {
    let frame = encode_frame(opcode, data, [0x12, 0x34, 0x56, 0x78]);
    let (mut reader, mut writer) = stream.split();
    // Read while writing: a raw TCP echo sends a large frame back before it is all written.
    let (written, read) = tokio::join!(
        writer.write_all(&frame),
        read_echo(&mut reader, leftover, opcode, data)
    );
    written.and(read)
}

async fn read_echo(
    reader: &mut tokio::net::tcp::ReadHalf<'_>,
    leftover: Vec<u8>,
    opcode: u8,
    data: &[u8],
) -> std::io::Result<()> {
    let mut received = leftover;
    let mut buf = vec![0u8; 64 << 10];
    loop {
        if received.len() >= 2 {
            let masked = received[1] & 0x80 != 0;
            let (len, at) = match received[1] & 0x7f {
                126 if received.len() >= 4 => {
                    (u16::from_be_bytes([received[2], received[3]]) as usize, 4)
                }
                127 if received.len() >= 10 => (
                    u64::from_be_bytes(received[2..10].try_into().expect("8 bytes")) as usize,
                    10,
                ),
                126 | 127 => (usize::MAX, 0),
                n => (n as usize, 2),
            };
            let start = at + if masked { 4 } else { 0 };
            if len != usize::MAX && received.len() >= start + len {
                let mut body = received[start..start + len].to_vec();
                if masked {
                    let mask = &received[at..at + 4];
                    body.iter_mut()
                        .enumerate()
                        .for_each(|(i, b)| *b ^= mask[i % 4]);
                }
                if received[0] != 0x80 | opcode || body != data {
                    return Err(std::io::Error::other("echo differs from the message sent"));
                }
                if received.len() != start + len {
                    return Err(std::io::Error::other("unexpected bytes after the echo"));
                }
                return Ok(());
            }
        }
        let n = reader.read(&mut buf).await?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        received.extend_from_slice(&buf[..n]);
    }
}

/// Throughput: `conns` connections each keep `inflight` messages in flight.
async fn echo(options: Options) -> String {
    let opcode = if options.text { 1 } else { 2 };
    let data = payload(options.size, options.text);
    let mut batch = Vec::new();
    for i in 0..options.inflight {
        let mask = (0x5eed_1234_u32.wrapping_mul(i as u32 + 1)).to_be_bytes();
        batch.extend_from_slice(&encode_frame(opcode, &data, mask));
    }
    let batch: Rc<[u8]> = batch.into();
    let completed = Rc::new(Cell::new(0u64));
    let mut streams = Vec::with_capacity(options.conns);
    for _ in 0..options.conns {
        let (mut stream, leftover) = ws_connect(options.addr, options.raw)
            .await
            .unwrap_or_else(|e| fail(&format!("connect: {e}")));
        check_echo(&mut stream, leftover, opcode, &data)
            .await
            .unwrap_or_else(|e| fail(&format!("first echo: {e}")));
        streams.push(stream);
    }
    let inflight = options.inflight as u64;
    // A fixed workload: this many batches per connection, then the run ends once all echoes
    // are back (`all_back`).
    let rounds = (options.messages > 0).then(|| {
        options
            .messages
            .div_ceil(inflight.max(1) * options.conns.max(1) as u64)
    });
    let target = rounds.map_or(u64::MAX, |r| r * inflight * options.conns as u64);
    let all_back = Rc::new(Notify::new());
    for stream in streams {
        let batch = batch.clone();
        let completed = completed.clone();
        let all_back = all_back.clone();
        tokio::task::spawn_local(async move {
            let run = Run {
                batch: &batch,
                inflight,
                rounds,
                completed: &completed,
                target,
                all_back: &all_back,
            };
            if let Err(e) = drive(stream, run).await {
                eprintln!("load: connection ended: {e}");
            }
        });
    }
    if rounds.is_some() {
        let meter = CpuMeter::start(options.pid);
        let limit = Duration::from_secs_f64(options.secs);
        let complete = tokio::time::timeout(limit, all_back.notified())
            .await
            .is_ok();
        let (wall, client_cpu, server_cpu) = meter.stop();
        let done = completed.get();
        return format!(
            "rate={:.1} messages={done} secs={wall:.3} client_cpu={client_cpu:.2} server_cpu={server_cpu:.2}{}",
            done as f64 / wall,
            if complete { "" } else { " incomplete" }
        );
    }
    tokio::time::sleep(Duration::from_secs_f64(options.warmup)).await;
    let before = completed.get();
    let meter = CpuMeter::start(options.pid);
    tokio::time::sleep(Duration::from_secs_f64(options.secs)).await;
    let after = completed.get();
    let (wall, client_cpu, server_cpu) = meter.stop();
    format!(
        "rate={:.1} messages={} secs={wall:.3} client_cpu={client_cpu:.2} server_cpu={server_cpu:.2}",
        (after - before) as f64 / wall,
        after - before
    )
}

fn fail(why: &str) -> ! {
    eprintln!("load: {why}");
    std::process::exit(1);
}

/// What one connection of an echo run sends and where it counts the echoes.
struct Run<'a> {
    /// The in-flight batch, written with one write.
    batch: &'a [u8],
    /// Messages in the batch.
    inflight: u64,
    /// Batches to send, or `None` to send until the process ends.
    rounds: Option<u64>,
    /// Echoes received over all connections.
    completed: &'a Cell<u64>,
    /// `all_back` is notified once `completed` reaches this.
    target: u64,
    all_back: &'a Notify,
}

/// Writes a batch, waits for all its echoes while reading continuously (a 16 MiB batch to a raw
/// echo comes back while it is still being written), repeats.
async fn drive(mut stream: TcpStream, run: Run<'_>) -> Result<(), String> {
    let (mut reader, mut writer) = stream.split();
    let round_done = Notify::new();
    let write = async {
        let mut sent = 0u64;
        loop {
            if run.rounds.is_some_and(|rounds| sent == rounds) {
                // Done sending; the read side keeps counting the last echoes.
                std::future::pending::<()>().await;
            }
            writer
                .write_all(run.batch)
                .await
                .map_err(|e| e.to_string())?;
            sent += 1;
            round_done.notified().await;
        }
    };
    let read = async {
        let mut counter = FrameCounter::default();
        let mut buf = vec![0u8; 256 << 10];
        let mut received = 0;
        loop {
            let n = reader.read(&mut buf).await.map_err(|e| e.to_string())?;
            if n == 0 {
                return Err("server closed the connection".to_owned());
            }
            received += counter.feed(&buf[..n])?;
            while received >= run.inflight {
                received -= run.inflight;
                run.completed.set(run.completed.get() + run.inflight);
                if run.completed.get() >= run.target {
                    run.all_back.notify_one();
                }
                round_done.notify_one();
            }
        }
    };
    tokio::select! {
        r = write => r,
        r = read => r,
    }
}

/// One connection's life: TCP connect, opening handshake, close handshake, TCP close.
async fn one_handshake(addr: SocketAddr, close_frame: &[u8]) -> std::io::Result<()> {
    let (mut stream, leftover) = ws_connect(addr, false).await?;
    stream.write_all(close_frame).await?;
    let mut counter = FrameCounter::default();
    let mut closed = counter.feed(&leftover).is_err();
    let mut buf = [0u8; 512];
    loop {
        let n = stream.read(&mut buf).await?;
        if n == 0 {
            break;
        }
        closed |= counter.feed(&buf[..n]).is_err();
    }
    if !closed {
        return Err(std::io::Error::other("no close frame before EOF"));
    }
    // The server closed first (RFC 6455 §7.1.1); reset rather than linger in TIME_WAIT.
    let _ = socket2::SockRef::from(&stream).set_linger(Some(Duration::ZERO));
    Ok(())
}

/// Handshakes per second: `concurrency` loops of connect, handshake, close.
async fn handshakes(options: Options) -> String {
    let close_frame: Rc<[u8]> = encode_frame(8, &1000u16.to_be_bytes(), [1, 2, 3, 4]).into();
    one_handshake(options.addr, &close_frame)
        .await
        .unwrap_or_else(|e| fail(&format!("handshake: {e}")));
    let completed = Rc::new(Cell::new(0u64));
    let failed = Rc::new(Cell::new(0u64));
    for _ in 0..options.concurrency {
        let completed = completed.clone();
        let failed = failed.clone();
        let close_frame = close_frame.clone();
        let addr = options.addr;
        tokio::task::spawn_local(async move {
            loop {
                match one_handshake(addr, &close_frame).await {
                    Ok(()) => completed.set(completed.get() + 1),
                    Err(_) => failed.set(failed.get() + 1),
                }
            }
        });
    }
    tokio::time::sleep(Duration::from_secs_f64(options.warmup)).await;
    let (before, failed_before) = (completed.get(), failed.get());
    let meter = CpuMeter::start(options.pid);
    tokio::time::sleep(Duration::from_secs_f64(options.secs)).await;
    let after = completed.get();
    let (wall, client_cpu, server_cpu) = meter.stop();
    format!(
        "rate={:.1} handshakes={} failed={} secs={wall:.3} client_cpu={client_cpu:.2} server_cpu={server_cpu:.2}",
        (after - before) as f64 / wall,
        after - before,
        failed.get() - failed_before
    )
}

/// Server memory per idle connection: RSS growth over `conns` connections that each did one
/// 20-byte echo and then stay open doing nothing.
async fn idle(options: Options) -> String {
    let pid = options.pid.unwrap_or_else(|| usage("idle needs --pid"));
    let data = payload(20, false);
    let mut open = Vec::new();
    let settle = Duration::from_millis(300);
    // Warm the server (allocator arenas, shared buffers) before the baseline.
    for _ in 0..10 {
        let (mut stream, leftover) = ws_connect(options.addr, false)
            .await
            .unwrap_or_else(|e| fail(&format!("connect: {e}")));
        check_echo(&mut stream, leftover, 2, &data)
            .await
            .unwrap_or_else(|e| fail(&format!("echo: {e}")));
        open.push(stream);
    }
    tokio::time::sleep(settle).await;
    let before = process_rss(pid);
    for _ in 0..options.conns {
        let (mut stream, leftover) = ws_connect(options.addr, false)
            .await
            .unwrap_or_else(|e| fail(&format!("connect: {e}")));
        check_echo(&mut stream, leftover, 2, &data)
            .await
            .unwrap_or_else(|e| fail(&format!("echo: {e}")));
        open.push(stream);
    }
    tokio::time::sleep(settle).await;
    let after = process_rss(pid);
    format!(
        "rate={:.1} conns={} rss_before={before} rss_after={after} client_cpu=0 server_cpu=0",
        after.saturating_sub(before) as f64 / options.conns as f64,
        options.conns
    )
}

/// Per repetition: rate, client CPU share, server CPU share.
type Repetitions = BTreeMap<u32, (f64, f64, f64)>;

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    let n = values.len();
    if n == 0 {
        f64::NAN
    } else if n % 2 == 1 {
        values[n / 2]
    } else {
        (values[n / 2 - 1] + values[n / 2]) / 2.0
    }
}

fn human(value: f64) -> String {
    if !value.is_finite() {
        "—".to_owned()
    } else if value >= 100_000.0 {
        format!("{:.0}k", value / 1000.0)
    } else if value >= 10_000.0 {
        format!("{:.1}k", value / 1000.0)
    } else if value >= 100.0 {
        format!("{value:.0}")
    } else {
        format!("{value:.1}")
    }
}

/// The markdown summary of a results file: lines of `rep scenario server rate client_cpu
/// server_cpu`, tab-separated. Per scenario and server the median and min–max; per other server
/// the ratio sockeye/other taken within each repetition, median and min–max.
fn summarize(results: &str) -> String {
    let mut table: BTreeMap<String, BTreeMap<String, Repetitions>> = BTreeMap::new();
    let mut order: Vec<String> = Vec::new();
    for line in results.lines().filter(|l| !l.trim().is_empty()) {
        let f: Vec<&str> = line.split('\t').collect();
        if f.len() < 6 {
            continue;
        }
        let num = |s: &str| s.parse::<f64>().unwrap_or(f64::NAN);
        let rep = f[0].parse().unwrap_or(0);
        if !order.iter().any(|s| s == f[1]) {
            order.push(f[1].to_owned());
        }
        table
            .entry(f[1].to_owned())
            .or_default()
            .entry(f[2].to_owned())
            .or_default()
            .insert(rep, (num(f[3]), num(f[4]), num(f[5])));
    }
    let servers = servers_in(&table);
    let servers: Vec<&str> = servers.iter().map(String::as_str).collect();
    let mut out = String::new();
    let _ = writeln!(
        out,
        "| scenario |{}{} client CPU | server CPU |",
        header(&servers),
        ratio_header(&servers)
    );
    let _ = writeln!(out, "|---|{}---|---|", "---|".repeat(2 * servers.len() - 1));
    for scenario in &order {
        let by_server = &table[scenario];
        let _ = write!(out, "| {scenario} |");
        for server in &servers {
            match by_server.get(*server) {
                Some(reps) => {
                    let mut rates: Vec<f64> = reps.values().map(|v| v.0).collect();
                    let min = rates.iter().copied().fold(f64::INFINITY, f64::min);
                    let max = rates.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                    let _ = write!(
                        out,
                        " {} ({}–{}) |",
                        human(median(&mut rates)),
                        human(min),
                        human(max)
                    );
                }
                None => out.push_str(" — |"),
            }
        }
        for other in &servers[1..] {
            let (Some(ours), Some(theirs)) = (by_server.get("sockeye"), by_server.get(*other))
            else {
                out.push_str(" — |");
                continue;
            };
            // A failed run (rate nan) has no ratio.
            let mut ratios: Vec<f64> = ours
                .iter()
                .filter_map(|(rep, v)| theirs.get(rep).map(|w| v.0 / w.0))
                .filter(|ratio| ratio.is_finite())
                .collect();
            if ratios.is_empty() {
                out.push_str(" — |");
                continue;
            }
            let min = ratios.iter().copied().fold(f64::INFINITY, f64::min);
            let max = ratios.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            let _ = write!(
                out,
                " **{:.2}** ({:.2}–{:.2}) |",
                median(&mut ratios),
                min,
                max
            );
        }
        let mut client: Vec<f64> = by_server
            .values()
            .flat_map(|reps| reps.values().map(|v| v.1))
            .collect();
        let mut server: Vec<f64> = by_server
            .get("sockeye")
            .map(|reps| reps.values().map(|v| v.2).collect())
            .unwrap_or_default();
        let _ = writeln!(
            out,
            " {:.2} (max {:.2}) | {:.2} |",
            median(&mut client),
            client.iter().copied().fold(0.0, f64::max),
            median(&mut server)
        );
    }
    out.push_str(&per_server_cpu(&table, &order, &servers));
    out
}

/// Every server in the results: the known ones in their order (sockeye first: the ratios are
/// sockeye/other), then any other.
fn servers_in(table: &BTreeMap<String, BTreeMap<String, Repetitions>>) -> Vec<String> {
    const KNOWN: [&str; 6] = [
        "sockeye",
        "tungstenite",
        "fastwebsockets",
        "tokio-websockets",
        "bun",
        "raw",
    ];
    let mut present: Vec<String> = Vec::new();
    for server in table.values().flat_map(BTreeMap::keys) {
        if !present.contains(server) {
            present.push(server.clone());
        }
    }
    let mut servers: Vec<String> = KNOWN
        .iter()
        .filter(|known| present.iter().any(|s| s == *known))
        .map(|s| (*s).to_owned())
        .collect();
    if !servers.iter().any(|s| s == "sockeye") {
        servers.insert(0, "sockeye".to_owned());
    }
    present.sort();
    servers.extend(present.into_iter().filter(|s| !KNOWN.contains(&s.as_str())));
    servers
}

/// How a server is named in the tables.
fn display_name(server: &str) -> &str {
    match server {
        "tungstenite" => "tokio-tungstenite",
        "bun" => "Bun",
        "raw" => "raw TCP",
        other => other,
    }
}

/// The server columns of a table header: ` name |` each.
fn header(servers: &[&str]) -> String {
    servers
        .iter()
        .map(|s| format!(" {} |", display_name(s)))
        .collect()
}

/// The ratio columns of a table header: ` sockeye/other |` for every server after sockeye.
fn ratio_header(servers: &[&str]) -> String {
    servers[1..]
        .iter()
        .map(|s| format!(" sockeye/{s} |"))
        .collect()
}

/// The second table: the same runs counted per CPU-second of the server, which does not depend
/// on whether the server got a whole core (a busy machine) or the client kept it busy (a load
/// client near 1.0 CPU, as in `handshakes` on an idle machine).
fn per_server_cpu(
    table: &BTreeMap<String, BTreeMap<String, Repetitions>>,
    order: &[String],
    servers: &[&str],
) -> String {
    let mut out = String::from(
        "\nPer CPU-second of the server (rate / server CPU share), median; ratios paired per repetition:\n\n",
    );
    let _ = writeln!(
        out,
        "| scenario |{}{}",
        header(servers),
        ratio_header(servers)
    );
    let _ = writeln!(out, "|---|{}", "---|".repeat(2 * servers.len() - 1));
    let efficiency = |reps: &Repetitions| -> BTreeMap<u32, f64> {
        reps.iter()
            .filter(|(_, v)| v.2 > 0.0)
            .map(|(rep, v)| (*rep, v.0 / v.2))
            .collect()
    };
    for scenario in order {
        let by_server = &table[scenario];
        let per_cpu: BTreeMap<&str, BTreeMap<u32, f64>> = servers
            .iter()
            .filter_map(|s| by_server.get(*s).map(|reps| (*s, efficiency(reps))))
            .filter(|(_, e)| !e.is_empty())
            .collect();
        if per_cpu.is_empty() {
            continue;
        }
        let _ = write!(out, "| {scenario} |");
        for server in servers {
            let mut values: Vec<f64> = per_cpu
                .get(server)
                .map(|e| e.values().copied().collect())
                .unwrap_or_default();
            let _ = write!(out, " {} |", human(median(&mut values)));
        }
        for other in &servers[1..] {
            let mut ratios: Vec<f64> = match (per_cpu.get("sockeye"), per_cpu.get(other)) {
                (Some(ours), Some(theirs)) => ours
                    .iter()
                    .filter_map(|(rep, v)| theirs.get(rep).map(|w| v / w))
                    .collect(),
                _ => Vec::new(),
            };
            if ratios.is_empty() {
                out.push_str(" — |");
            } else {
                let _ = write!(out, " {:.2} |", median(&mut ratios));
            }
        }
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counter_counts_messages_split_anywhere() {
        let mut stream = Vec::new();
        // Server frames (unmasked): 20 B binary, 300 B text, an empty binary, a 70 KiB one.
        for (opcode, len) in [(2u8, 20usize), (1, 300), (2, 0), (2, 70_000)] {
            let mut frame = encode_frame(opcode, &vec![b'a'; len], [0; 4]);
            frame[1] &= 0x7f;
            let header_len = frame.len() - len - 4;
            frame.drain(header_len..header_len + 4);
            stream.extend_from_slice(&frame);
        }
        // And a masked one, as a raw TCP echo returns it.
        stream.extend_from_slice(&encode_frame(2, b"masked", [9, 9, 9, 9]));
        for chunk in [1, 2, 3, 7, 1000, stream.len()] {
            let mut counter = FrameCounter::default();
            let total: u64 = stream
                .chunks(chunk)
                .map(|c| counter.feed(c).expect("no close"))
                .sum();
            assert_eq!(total, 5, "chunk size {chunk}");
        }
        let mut counter = FrameCounter::default();
        assert!(counter.feed(&[0x88, 0x02, 0x03, 0xe8]).is_err());
    }

    #[test]
    fn text_payload_is_exact_utf8() {
        for size in [0, 1, 20, 1024, 4099] {
            let text = payload(size, true);
            assert_eq!(text.len(), size);
            assert!(std::str::from_utf8(&text).is_ok());
            assert!(size < 40 || text.iter().any(|b| *b >= 0x80));
        }
    }

    #[test]
    fn summary_pairs_ratios_per_repetition() {
        let results = "1\te\tsockeye\t200\t0.5\t1\n1\te\tfastwebsockets\t100\t0.4\t1\n\
                       2\te\tsockeye\t300\t0.5\t1\n2\te\tfastwebsockets\t100\t0.4\t1\n";
        let summary = summarize(results);
        assert!(summary.contains("**2.50** (2.00–3.00)"), "{summary}");
        assert!(summary.contains(" 250 (200–300) |"), "{summary}");
        // Per server CPU-second: 200/1 and 300/1 against 100/1: the same ratios.
        assert!(summary.contains("| e | 250 | 100 | 2.50 |"), "{summary}");
        // Only the servers in the results have columns, sockeye first.
        assert!(
            summary.contains("| scenario | sockeye | fastwebsockets | sockeye/fastwebsockets |"),
            "{summary}"
        );
    }

    #[test]
    fn summary_has_a_column_per_server_in_the_results() {
        let results = "1\te\traw\t400\t0.5\t1\n1\te\tbun\t300\t0.5\t1\n\
                       1\te\tsockeye\t200\t0.5\t1\n1\te\ttokio-websockets\t100\t0.4\t1\n";
        let summary = summarize(results);
        assert!(
            summary.contains(
                "| scenario | sockeye | tokio-websockets | Bun | raw TCP | sockeye/tokio-websockets \
                 | sockeye/bun | sockeye/raw | client CPU | server CPU |"
            ),
            "{summary}"
        );
        assert!(
            summary.contains("**2.00** (2.00–2.00) | **0.67** (0.67–0.67) | **0.50**"),
            "{summary}"
        );
    }
}
