//! Helpers shared by the CLI's integration tests: the `sockeye` binary as a child process with
//! bounded waits, a `sockeye serve --mode echo` child on a loopback port, and an in-test
//! sockeye server for one connection that replies as a test says.
#![allow(dead_code, unreachable_pub)]

use std::io::{BufRead as _, BufReader, Write as _};
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Upper bound on anything that should happen promptly: a hang fails the test instead of
/// stalling the suite.
pub const PATIENCE: Duration = Duration::from_secs(30);

/// The `sockeye` binary under test.
pub fn sockeye() -> Command {
    Command::new(env!("CARGO_BIN_EXE_sockeye"))
}

/// A child whose stdout and stderr are collected by threads, killed when dropped.
pub struct Running {
    pub child: Child,
    pub stdin: Option<ChildStdin>,
    stdout: Arc<Mutex<Vec<u8>>>,
    stderr: Arc<Mutex<Vec<u8>>>,
    readers: Vec<std::thread::JoinHandle<()>>,
}

/// What a finished child left.
#[derive(Debug)]
pub struct Finished {
    pub status: ExitStatus,
    pub stdout: Vec<u8>,
    pub stderr: String,
}

impl Finished {
    /// The exit code (a test failure if a signal ended the child).
    pub fn code(&self) -> i32 {
        self.status
            .code()
            .unwrap_or_else(|| panic!("killed by a signal: {self:?}"))
    }

    pub fn stdout_text(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }
}

/// Waits (at most [`PATIENCE`]) until `text()` contains `needle`.
fn wait_for(needle: &str, text: impl Fn() -> String) {
    let deadline = Instant::now() + PATIENCE;
    while !text().contains(needle) {
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {needle:?} in {:?}",
            text()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn collect(
    mut from: impl std::io::Read + Send + 'static,
    into: Arc<Mutex<Vec<u8>>>,
) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let mut buf = [0u8; 16 << 10];
        loop {
            match from.read(&mut buf) {
                Ok(0) | Err(_) => return,
                Ok(n) => into
                    .lock()
                    .expect("output lock")
                    .extend_from_slice(&buf[..n]),
            }
        }
    })
}

impl Running {
    /// Starts `command` with piped stdin, stdout and stderr.
    pub fn start(mut command: Command) -> Self {
        let mut child = command
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn");
        let stdin = child.stdin.take();
        let stdout = Arc::new(Mutex::new(Vec::new()));
        let stderr = Arc::new(Mutex::new(Vec::new()));
        let readers = vec![
            collect(child.stdout.take().expect("stdout"), stdout.clone()),
            collect(child.stderr.take().expect("stderr"), stderr.clone()),
        ];
        Self {
            child,
            stdin,
            stdout,
            stderr,
            readers,
        }
    }

    /// Stdout so far, lossily as text.
    pub fn stdout_so_far(&self) -> String {
        String::from_utf8_lossy(&self.stdout.lock().expect("output lock")).into_owned()
    }

    /// Stderr so far, lossily as text.
    pub fn stderr_so_far(&self) -> String {
        String::from_utf8_lossy(&self.stderr.lock().expect("output lock")).into_owned()
    }

    /// Waits (at most [`PATIENCE`]) until stderr contains `needle`.
    pub fn wait_for_stderr(&self, needle: &str) {
        wait_for(needle, || self.stderr_so_far());
    }

    /// Waits (at most [`PATIENCE`]) until stdout contains `needle`.
    pub fn wait_for_output(&self, needle: &str) {
        wait_for(needle, || self.stdout_so_far());
    }

    /// Writes `data` to the child's stdin.
    pub fn write(&mut self, data: &[u8]) {
        let stdin = self.stdin.as_mut().expect("stdin open");
        stdin.write_all(data).expect("write stdin");
        stdin.flush().expect("flush stdin");
    }

    /// Waits (at most [`PATIENCE`]) for the child to exit, stdin still open.
    pub fn wait_exit(&mut self) {
        let deadline = Instant::now() + PATIENCE;
        while self.child.try_wait().expect("try_wait").is_none() {
            assert!(
                Instant::now() < deadline,
                "child did not exit; stdout {:?}",
                self.stdout_so_far()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Closes stdin, waits (at most [`PATIENCE`]) for the child to exit and returns its output.
    pub fn finish(mut self) -> Finished {
        self.stdin = None;
        let deadline = Instant::now() + PATIENCE;
        let status = loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                break status;
            }
            if Instant::now() >= deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                panic!(
                    "child did not exit in {PATIENCE:?}; stdout {:?}, stderr {:?}",
                    self.stdout_so_far(),
                    String::from_utf8_lossy(&self.stderr.lock().expect("lock"))
                );
            }
            std::thread::sleep(Duration::from_millis(10));
        };
        for reader in self.readers.drain(..) {
            let _ = reader.join();
        }
        let stdout = std::mem::take(&mut *self.stdout.lock().expect("lock"));
        let stderr = String::from_utf8_lossy(&self.stderr.lock().expect("lock")).into_owned();
        Finished {
            status,
            stdout,
            stderr,
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Runs `sockeye ARGS` with `input` on stdin and waits (bounded) for it to exit.
pub fn run(args: &[&str], input: &[u8]) -> Finished {
    let mut command = sockeye();
    command.args(args);
    let mut running = Running::start(command);
    let mut stdin = running.stdin.take().expect("stdin");
    let input = input.to_vec();
    // A separate thread: the child may stop reading (and the pipe fill) before it exits.
    let writer = std::thread::spawn(move || {
        let _ = stdin.write_all(&input);
    });
    let finished = running.finish();
    let _ = writer.join();
    finished
}

/// A `sockeye serve --mode echo` (or another mode) child on a loopback port, killed when
/// dropped.
pub struct EchoServer {
    child: Child,
    /// The `ws://127.0.0.1:PORT/` URL it printed.
    pub url: String,
}

impl EchoServer {
    /// Starts the server and reads the URL from its first line mentioning `ws://`.
    pub fn start() -> Self {
        Self::start_with(&[])
    }

    /// Like [`start`](Self::start), with more `sockeye serve` arguments.
    pub fn start_with(extra: &[&str]) -> Self {
        Self::start_mode("echo", extra)
    }

    /// A `sockeye serve --mode MODE` child (`echo` or `broadcast`), with more arguments.
    pub fn start_mode(mode: &str, extra: &[&str]) -> Self {
        let mut child = sockeye()
            .args(["serve", "--listen", "127.0.0.1:0", "--mode", mode])
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn sockeye serve");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut lines = BufReader::new(stdout).lines();
            let url = lines.by_ref().map_while(Result::ok).find_map(|line| {
                line.split_whitespace()
                    .find(|word| word.starts_with("ws://"))
                    .map(str::to_owned)
            });
            let _ = tx.send(url);
            // Keep draining so that the server never blocks on a full pipe.
            for _ in lines {}
        });
        let url = match rx.recv_timeout(PATIENCE) {
            Ok(Some(url)) => url,
            other => {
                let _ = child.kill();
                panic!("sockeye serve printed no ws:// URL: {other:?}");
            }
        };
        Self { child, url }
    }
}

impl Drop for EchoServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What an in-test server does with a message it received.
#[derive(Debug)]
pub enum Reply {
    /// Send this back after this delay.
    Send(sockeye::Message, Duration),
    /// Close with this code and reason, then stop.
    Close(sockeye::CloseCode, &'static str),
    /// Drop TCP without a close frame.
    Drop,
}

/// A sockeye server for one connection on its own thread and runtime: `on_accept` runs once the
/// connection is open, `on_message` picks the replies to every message received (the close
/// frame included), done in order. Every wait is bounded by [`PATIENCE`]. Returns its `ws://`
/// URL.
pub fn one_connection_server(
    on_accept: impl FnOnce() + Send + 'static,
    mut on_message: impl FnMut(&sockeye::Message) -> Vec<Reply> + Send + 'static,
) -> String {
    use futures_util::StreamExt as _;
    let (url_tx, url_rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        runtime.block_on(async move {
            let server = sockeye::Server::bind("127.0.0.1:0").await.expect("bind");
            let addr = server.local_addr().expect("addr");
            url_tx.send(format!("ws://{addr}/")).expect("url");
            let Ok(Ok((mut ws, _, _))) = tokio::time::timeout(PATIENCE, server.accept()).await
            else {
                return;
            };
            on_accept();
            while let Ok(Some(Ok(message))) = tokio::time::timeout(PATIENCE, ws.next()).await {
                for reply in on_message(&message) {
                    match reply {
                        Reply::Send(reply, delay) => {
                            tokio::time::sleep(delay).await;
                            if ws.send(reply).await.is_err() {
                                return;
                            }
                        }
                        Reply::Close(code, reason) => {
                            let _ = tokio::time::timeout(PATIENCE, ws.close(code, reason)).await;
                            return;
                        }
                        Reply::Drop => return,
                    }
                }
            }
        });
    });
    url_rx.recv_timeout(PATIENCE).expect("server url")
}
