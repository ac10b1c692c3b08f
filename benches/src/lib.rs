//! Inputs shared by sockeye's comparative benchmarks (`benches/deflate_echo.rs`,
//! `benches/deflate_backends.rs`): deterministic JSON messages of an exact size that look like
//! the traffic of a chat or document-sync application.
//!
//! Every message is valid JSON made of ASCII only. Field names and room names repeat from one
//! message to the next (which permessage-deflate's context takeover exploits, as it would in a
//! real application), while ids, checksums, timestamps and the free text vary, so the messages
//! are neither trivially compressible nor random: zlib level 6 with context takeover brings a
//! 1 KiB message to about a third of its size (`deflate_backends` prints the exact figure).
//!
//! It also holds the [`Timer`] the benches report with: wall time, or on a shared machine the
//! benchmark thread's CPU time.

use std::fmt::Write as _;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// Which clock a benchmark reports, chosen with the environment variable
/// `SOCKEYE_BENCH_CLOCK`: `wall` (the default, criterion's usual clock) or `cpu`, the CPU time
/// of the benchmark's thread (`CLOCK_THREAD_CPUTIME_ID`, Unix only).
///
/// Every benchmark here runs on one thread (client and echo server share a current-thread
/// tokio runtime, and loopback TCP is processed within the sending system call), so on an idle
/// machine both clocks agree; on a shared machine the CPU time leaves out the time the thread
/// waited for a core. [`Timer::report`] prints how far the two differed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Clock {
    /// Elapsed real time.
    Wall,
    /// CPU time of the calling thread.
    ThreadCpu,
}

impl Clock {
    /// The clock named by `SOCKEYE_BENCH_CLOCK`.
    ///
    /// # Panics
    ///
    /// On a value other than `wall` or `cpu`, or `cpu` where the thread CPU clock is missing.
    pub fn from_env() -> Self {
        match std::env::var("SOCKEYE_BENCH_CLOCK").as_deref() {
            Err(_) | Ok("" | "wall") => Self::Wall,
            Ok("cpu") => {
                assert!(thread_cpu_time().is_some(), "no thread CPU clock here");
                Self::ThreadCpu
            }
            Ok(other) => panic!("SOCKEYE_BENCH_CLOCK={other}: expected wall or cpu"),
        }
    }
}

/// CPU time consumed by the calling thread so far; `None` where the clock is missing.
#[cfg(unix)]
pub fn thread_cpu_time() -> Option<Duration> {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable `timespec` that outlives the call, as clock_gettime
    // requires; the clock id is a constant of the platform's libc.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    (rc == 0).then(|| Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32))
}

/// CPU time consumed by the calling thread so far; `None` where the clock is missing.
#[cfg(not(unix))]
pub fn thread_cpu_time() -> Option<Duration> {
    None
}

/// Times closures with the [`Clock`] chosen, and keeps the totals of both clocks to report
/// the share of real time the thread was on a CPU.
#[derive(Debug)]
pub struct Timer {
    clock: Clock,
    wall: Duration,
    cpu: Duration,
}

impl Timer {
    /// A timer on the clock named by `SOCKEYE_BENCH_CLOCK`.
    pub fn from_env() -> Self {
        Self {
            clock: Clock::from_env(),
            wall: Duration::ZERO,
            cpu: Duration::ZERO,
        }
    }

    /// The clock reported.
    pub fn clock(&self) -> Clock {
        self.clock
    }

    /// Runs `f` and returns how long it took on the chosen clock: the value for criterion's
    /// `Bencher::iter_custom`.
    pub fn time(&mut self, f: impl FnOnce()) -> Duration {
        let (wall0, cpu0) = (Instant::now(), thread_cpu_time());
        f();
        let wall = wall0.elapsed();
        let cpu = match (cpu0, thread_cpu_time()) {
            (Some(start), Some(end)) => end.saturating_sub(start),
            _ => wall,
        };
        self.wall += wall;
        self.cpu += cpu;
        match self.clock {
            Clock::Wall => wall,
            Clock::ThreadCpu => cpu,
        }
    }

    /// Prints on stderr a line `clock: <name>: ...` with the clock reported and the share of
    /// real time spent on a CPU since the last report (near 100% on an idle machine), then
    /// starts the totals again.
    pub fn report(&mut self, name: &str) {
        let share = if self.wall.is_zero() {
            0.0
        } else {
            100.0 * self.cpu.as_secs_f64() / self.wall.as_secs_f64()
        };
        let clock = match self.clock {
            Clock::Wall => "wall",
            Clock::ThreadCpu => "cpu",
        };
        eprintln!("clock: {name}: reported {clock} time; on a CPU {share:.0}% of the real time");
        self.wall = Duration::ZERO;
        self.cpu = Duration::ZERO;
    }
}

/// A small deterministic generator (SplitMix64); the same seed gives the same messages on
/// every machine.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// A generator started from `seed`.
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A number in `0..n` (`n > 0`).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }

    /// An index in `0..n` skewed towards 0, as word frequencies are in natural text.
    fn skewed(&mut self, n: usize) -> usize {
        let a = self.below(n);
        let b = self.below(n);
        a.min(b)
    }

    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[self.below(items.len())]
    }

    fn hex(&mut self, out: &mut String, digits: usize) {
        for _ in 0..digits {
            let nibble = self.below(16);
            out.push(char::from_digit(nibble as u32, 16).unwrap_or('0'));
        }
    }

    fn uuid(&mut self, out: &mut String) {
        for (i, len) in [8, 4, 4, 4, 12].into_iter().enumerate() {
            if i > 0 {
                out.push('-');
            }
            self.hex(out, len);
        }
    }
}

/// The vocabulary of the free text, most frequent first.
const WORDS: &str = "\
    the to and a of I it is we you that in for on this be with can so just have not will do \
    but are if me at ok now think yes build merge review deploy branch fix test release \
    tomorrow today meeting doc draft please thanks looks good agree maybe should could \
    would need update check issue ticket sprint design client server latency cache query \
    index schema migration rollback staging production customer feedback roadmap estimate \
    budget invoice contract timeline blocker priority weekend lunch coffee call slides \
    numbers report dashboard metrics alert incident postmortem runbook on-call handover \
    backlog scope question answer idea plan note summary agenda minutes follow-up Monday \
    Tuesday Wednesday Thursday Friday morning afternoon evening quickly probably actually \
    really already still again later soon about after before around between without because \
    since until everyone team Alice Bob Carol Dave Erin Frank Grace Heidi version 2.4.1 3.0 \
    v17 42 9am noon 5pm EU US APAC Q3\
";

fn words() -> &'static [&'static str] {
    static WORDS_LIST: OnceLock<Vec<&str>> = OnceLock::new();
    WORDS_LIST.get_or_init(|| WORDS.split_whitespace().collect())
}

const PUNCTUATION: &[&str] = &[" ", " ", " ", " ", " ", " ", ", ", ". ", "? ", "! ", " - "];

const ROOMS: &[&str] = &[
    "general",
    "random",
    "eng-backend",
    "eng-frontend",
    "design-review",
    "release-train",
    "incident-2291",
    "sales-emea",
    "support-tier2",
    "offsite-planning",
];

const NAMES: &[&str] = &[
    "Alice Moreau",
    "Bob Okafor",
    "Carol Lindqvist",
    "Dave Ramanathan",
    "Erin O'Neill",
    "Frank Castellano",
    "Grace Nakamura",
    "Heidi Albrecht",
    "Ivan Petrov",
    "Judy Mensah",
    "Mallory Quinn",
    "Niaj Haddad",
];

const STATES: &[&str] = &["active", "idle", "away", "dnd", "offline"];
const DEVICES: &[&str] = &["web", "ios", "android", "desktop-mac", "desktop-win"];
const REACTIONS: &[&str] = &[
    "+1",
    "heart",
    "eyes",
    "tada",
    "rocket",
    "thinking",
    "white_check_mark",
];
const OPS: &[&str] = &["insert", "delete", "replace", "move", "format"];

/// Appends about `len` bytes of chat-like text (letters, digits, spaces and `,.?!-'` only).
fn push_text(rng: &mut Rng, out: &mut String, len: usize) {
    let words = words();
    let end = out.len() + len;
    let mut sentence_start = true;
    while out.len() < end {
        let word = words[rng.skewed(words.len())];
        if sentence_start {
            let mut chars = word.chars();
            if let Some(first) = chars.next() {
                out.push(first.to_ascii_uppercase());
                out.push_str(chars.as_str());
            }
        } else {
            out.push_str(word);
        }
        let sep = rng.pick(PUNCTUATION);
        sentence_start = matches!(sep, ". " | "? " | "! ");
        out.push_str(sep);
    }
    out.truncate(end);
}

/// The common envelope: type, id, sequence number and timestamp.
fn push_envelope(rng: &mut Rng, out: &mut String, kind: &str, seq: u64) {
    let ts = 1_732_531_200_000 + seq * 1_500 + rng.below(1_500) as u64;
    let _ = write!(out, r#"{{"type":"{kind}","id":""#);
    rng.uuid(out);
    let _ = write!(out, r#"","seq":{seq},"ts":{ts},"#);
}

fn push_user(rng: &mut Rng, out: &mut String) {
    let name = rng.pick(NAMES);
    out.push_str(r#"{"id":"u_"#);
    rng.hex(out, 8);
    let _ = write!(
        out,
        r#"","name":"{name}","avatar":"https://cdn.example.com/a/"#
    );
    rng.hex(out, 16);
    let _ = write!(out, r#".png","status":"{}"}}"#, rng.pick(STATES));
}

fn chat_message(rng: &mut Rng, out: &mut String, seq: u64) {
    push_envelope(rng, out, "chat.message", seq);
    let _ = write!(out, r#""room":{{"id":"r_"#);
    rng.hex(out, 6);
    let _ = write!(out, r#"","name":"{}"}},"author":"#, rng.pick(ROOMS));
    push_user(rng, out);
    out.push_str(r#","mentions":["#);
    for i in 0..rng.below(3) {
        if i > 0 {
            out.push(',');
        }
        out.push_str(r#""u_"#);
        rng.hex(out, 8);
        out.push('"');
    }
    out.push_str(r#"],"reactions":{"#);
    let n = rng.below(4);
    for i in 0..n {
        if i > 0 {
            out.push(',');
        }
        let _ = write!(out, r#""{}{i}":{}"#, rng.pick(REACTIONS), 1 + rng.below(12));
    }
    out.push_str(r#"},"thread":"#);
    if rng.below(3) == 0 {
        out.push('"');
        rng.uuid(out);
        out.push('"');
    } else {
        out.push_str("null");
    }
    let _ = write!(out, r#","edited":{},"#, rng.below(5) == 0);
}

fn sync_patch(rng: &mut Rng, out: &mut String, seq: u64) {
    push_envelope(rng, out, "doc.patch", seq);
    let rev = 10_000 + seq * 3 + rng.below(3) as u64;
    out.push_str(r#""doc":"d_"#);
    rng.hex(out, 10);
    let _ = write!(out, r#"","rev":{rev},"base":{},"client":"c_"#, rev - 1);
    rng.hex(out, 8);
    out.push_str(r#"","ops":["#);
    for i in 0..1 + rng.below(3) {
        if i > 0 {
            out.push(',');
        }
        let op = rng.pick(OPS);
        let _ = write!(
            out,
            r#"{{"op":"{op}","path":"/blocks/{}/text","pos":{},"len":{},"text":""#,
            rng.below(200),
            rng.below(4000),
            rng.below(40),
        );
        let words = 8 + rng.below(25);
        push_text(rng, out, words);
        out.push_str(r#""}"#);
    }
    let _ = write!(
        out,
        r#"],"cursor":{{"line":{},"col":{}}},"checksum":""#,
        rng.below(900),
        rng.below(120)
    );
    rng.hex(out, 32);
    out.push_str(r#"","#);
}

fn presence(rng: &mut Rng, out: &mut String, seq: u64) {
    push_envelope(rng, out, "presence.batch", seq);
    let _ = write!(out, r#""room":"{}","users":["#, rng.pick(ROOMS));
    for i in 0..2 + rng.below(3) {
        if i > 0 {
            out.push(',');
        }
        out.push_str(r#"{"id":"u_"#);
        rng.hex(out, 8);
        let _ = write!(
            out,
            r#"","state":"{}","device":"{}","lastSeen":{},"typing":{}}}"#,
            rng.pick(STATES),
            rng.pick(DEVICES),
            1_732_531_200_000 + seq * 1_500 - rng.below(600_000) as u64,
            rng.below(4) == 0,
        );
    }
    out.push_str("],");
}

/// One JSON object of exactly `size` bytes (`size >= 1024` is safe; smaller sizes may come out
/// longer). Its last field, `"text"`, is free text that fills the object to `size`.
pub fn json_message(rng: &mut Rng, seq: u64, size: usize) -> String {
    let mut out = String::with_capacity(size);
    match rng.below(10) {
        0..=5 => chat_message(rng, &mut out, seq),
        6..=8 => sync_patch(rng, &mut out, seq),
        _ => presence(rng, &mut out, seq),
    }
    out.push_str(r#""text":""#);
    let fill = size.saturating_sub(out.len() + 2);
    push_text(rng, &mut out, fill);
    out.push_str(r#""}"#);
    out
}

/// `count` messages of exactly `size` bytes each, the same for the same `seed`.
pub fn json_messages(count: usize, size: usize, seed: u64) -> Vec<String> {
    let mut rng = Rng::new(seed);
    (0..count as u64)
        .map(|seq| json_message(&mut rng, seq, size))
        .collect()
}

/// A large message of exactly `size` bytes: a sync batch whose `"items"` are messages of 600 to
/// 1,400 bytes, as a client receives on reconnecting, padded with a `"note"` field.
pub fn json_batch(rng: &mut Rng, seq: u64, size: usize) -> String {
    let mut out = String::with_capacity(size);
    push_envelope(rng, &mut out, "sync.batch", seq);
    out.push_str(r#""items":["#);
    let mut item = 0;
    // Room for the closing part and the padding field's name.
    while out.len() + 1_400 + 64 < size {
        if item > 0 {
            out.push(',');
        }
        let len = 600 + rng.below(800);
        out.push_str(&json_message(rng, seq * 1_000 + item, len));
        item += 1;
    }
    out.push_str(r#"],"note":""#);
    let fill = size.saturating_sub(out.len() + 2);
    push_text(rng, &mut out, fill);
    out.push_str(r#""}"#);
    out
}

/// `count` batches of exactly `size` bytes each, the same for the same `seed`.
pub fn json_batches(count: usize, size: usize, seed: u64) -> Vec<String> {
    let mut rng = Rng::new(seed);
    (0..count as u64)
        .map(|seq| json_batch(&mut rng, seq, size))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_are_json_of_the_exact_size() {
        for message in json_messages(2_000, 1024, 7) {
            assert_eq!(message.len(), 1024, "{message}");
            serde_json::from_str::<serde_json::Value>(&message).expect(&message);
        }
        for batch in json_batches(8, 64 << 10, 7) {
            assert_eq!(batch.len(), 64 << 10);
            let value: serde_json::Value = serde_json::from_str(&batch).unwrap();
            assert!(value["items"].as_array().unwrap().len() > 40);
        }
    }

    #[test]
    fn messages_are_deterministic_and_varied() {
        let a = json_messages(100, 1024, 1);
        assert_eq!(a, json_messages(100, 1024, 1));
        assert_ne!(a, json_messages(100, 1024, 2));
        let distinct: std::collections::HashSet<_> = a.iter().collect();
        assert_eq!(distinct.len(), 100);
        for kind in ["chat.message", "doc.patch", "presence.batch"] {
            assert!(a.iter().any(|m| m.contains(kind)), "{kind}");
        }
    }
}
