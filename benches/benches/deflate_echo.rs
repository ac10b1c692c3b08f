//! Echo throughput over loopback TCP of 1 KiB JSON text messages: sockeye with and without
//! permessage-deflate, next to tokio-tungstenite and fastwebsockets (neither of which supports
//! permessage-deflate in its crates.io release, so they run uncompressed, as context).
//!
//! One process, one current-thread tokio runtime: the echo server and the client are tasks on
//! the same thread, so a result is the CPU cost of both ends plus the kernel's loopback path,
//! without cross-core wake-ups. Every connection lives for the whole benchmark, so the deflate
//! contexts are taken over from message to message as in a long-lived application connection.
//! TCP_NODELAY is set on every socket. `SOCKEYE_BENCH_CLOCK=cpu` reports the thread's CPU time
//! instead of wall time (see `sockeye_bench::Clock`).
//!
//! - `echo_ping_pong_1KiB`: the client sends a message and awaits its echo, 1,000 times.
//! - `echo_pipelined_1KiB`: the client sends 100 messages, then reads 100 echoes, 10 times.
//!
//! Each iteration is 1,000 messages; throughput is reported in messages (elements) per second.
//!
//! Two more sockeye runs give context and are not part of the comparison:
//! `sockeye-deflate-level1` (zlib level 1 instead of the default 6 on both ends) and, pipelined
//! only, `sockeye-plain-forward` (the server forwards its read half into its write half, which
//! flushes only when no further message is ready, as tokio-tungstenite's example server does,
//! instead of `send`ing and so flushing each echo as sockeye's documented server does).
//! `scripts/bench-deflate.sh` runs it and summarises the ratios.

use std::future::Future;
use std::net::SocketAddr;

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, BenchmarkGroup, Criterion, SamplingMode};
use criterion::{measurement::WallTime, Throughput};
use futures_util::{SinkExt as _, StreamExt as _};
use sockeye_bench::Timer;
use tokio::net::{TcpListener, TcpStream};
use tokio::runtime::Runtime;

/// Messages per iteration.
const MESSAGES: usize = 1_000;
/// Messages sent before reading their echoes in the pipelined variant.
const BATCH: usize = 100;
/// Size of each message.
const SIZE: usize = 1024;
const SEED: u64 = 0x50C4_E7E5;

/// A connected client of one library, with its own copy of the messages in its own type.
trait EchoClient {
    /// Sends every message and awaits each echo before sending the next.
    fn ping_pong(&mut self) -> impl Future<Output = ()>;
    /// Sends `BATCH` messages, then reads their `BATCH` echoes, until every message is sent.
    fn pipelined(&mut self) -> impl Future<Output = ()>;
    /// Closes the connection cleanly.
    fn close(self) -> impl Future<Output = ()>;
}

fn runtime() -> Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime")
}

fn messages() -> Vec<String> {
    sockeye_bench::json_messages(MESSAGES, SIZE, SEED)
}

async fn listener() -> (TcpListener, SocketAddr) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("local address");
    (listener, addr)
}

fn check_echo(sent: &str, received: &[u8]) {
    assert_eq!(received.len(), sent.len(), "echo of the wrong length");
}

mod sockeye_impl {
    use super::*;
    use futures_util::{future, TryStreamExt as _};
    use sockeye::{CloseCode, DeflateConfig, Message, Server, WebSocketConfig, WebSocketStream};

    /// How a sockeye pair is set up.
    #[derive(Clone, Copy)]
    pub(super) struct Variant {
        /// permessage-deflate at this zlib level on both ends; `None`: off.
        pub(super) deflate_level: Option<u32>,
        /// The server forwards its read half into its write half (flushing only when no
        /// message is ready, like tokio-tungstenite's example) instead of `send`ing each echo.
        pub(super) forward_server: bool,
    }

    fn config(variant: Variant) -> WebSocketConfig {
        let deflate = variant.deflate_level.map(|level| {
            let mut deflate = DeflateConfig::default();
            deflate.level = level;
            deflate
        });
        WebSocketConfig::default().deflate(deflate)
    }

    async fn serve(variant: Variant) -> SocketAddr {
        let (listener, addr) = listener().await;
        let server = Server::from_listener(listener).config(config(variant));
        if variant.forward_server {
            tokio::spawn(server.serve(|ws, _request| async move {
                let (sink, stream) = ws.split();
                let _ = stream
                    .try_filter(|message| future::ready(message.is_data()))
                    .forward(sink)
                    .await;
            }));
        } else {
            // The echo server of `Server`'s documentation.
            tokio::spawn(server.serve(|mut ws, _request| async move {
                while let Some(Ok(message)) = ws.next().await {
                    if message.is_data() && ws.send(message).await.is_err() {
                        break;
                    }
                }
            }));
        }
        addr
    }

    pub(super) struct Client {
        ws: WebSocketStream<sockeye::Transport<TcpStream>>,
        messages: Vec<Message>,
    }

    pub(super) async fn connect(variant: Variant, messages: &[String]) -> Client {
        let addr = serve(variant).await;
        let (ws, _) = sockeye::connect_with_config(&format!("ws://{addr}/"), config(variant))
            .await
            .expect("sockeye connect");
        assert_eq!(
            ws.extensions().contains("permessage-deflate"),
            variant.deflate_level.is_some(),
            "negotiated: {:?}",
            ws.extensions()
        );
        let mut client = Client {
            ws,
            messages: messages.iter().map(|m| Message::text(m.clone())).collect(),
        };
        // Check the echo once, in full.
        client.ws.send(client.messages[0].clone()).await.unwrap();
        let echo = client.ws.next().await.unwrap().unwrap();
        assert_eq!(echo, client.messages[0]);
        client
    }

    impl EchoClient for Client {
        async fn ping_pong(&mut self) {
            for message in &self.messages {
                self.ws.send(message.clone()).await.expect("send");
                let echo = self.ws.next().await.expect("open").expect("echo");
                check_echo_message(message, &echo);
            }
        }

        async fn pipelined(&mut self) {
            for batch in self.messages.chunks(BATCH) {
                for message in batch {
                    self.ws.feed(message.clone()).await.expect("feed");
                }
                WebSocketStream::flush(&mut self.ws).await.expect("flush");
                for message in batch {
                    let echo = self.ws.next().await.expect("open").expect("echo");
                    check_echo_message(message, &echo);
                }
            }
        }

        async fn close(mut self) {
            self.ws.close(CloseCode::NORMAL, "").await.expect("close");
        }
    }

    fn check_echo_message(sent: &Message, received: &Message) {
        assert_eq!(received.as_payload().len(), sent.as_payload().len());
    }
}

mod tungstenite_impl {
    use super::*;
    use futures_util::{future, TryStreamExt as _};
    use tokio_tungstenite::tungstenite::{Message, Utf8Bytes};
    use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

    /// The echo server of tokio-tungstenite's `examples/echo-server.rs`.
    pub(super) async fn serve() -> SocketAddr {
        let (listener, addr) = listener().await;
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                stream.set_nodelay(true).expect("nodelay");
                tokio::spawn(accept_connection(stream));
            }
        });
        addr
    }

    async fn accept_connection(stream: TcpStream) {
        let Ok(ws_stream) = tokio_tungstenite::accept_async(stream).await else {
            return;
        };
        let (write, read) = ws_stream.split();
        // We should not forward messages other than text or binary.
        let _ = read
            .try_filter(|msg| future::ready(msg.is_text() || msg.is_binary()))
            .forward(write)
            .await;
    }

    pub(super) struct Client {
        ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
        messages: Vec<Utf8Bytes>,
    }

    pub(super) async fn connect(messages: &[String]) -> Client {
        let addr = serve().await;
        let (ws, _) = tokio_tungstenite::connect_async_with_config(
            format!("ws://{addr}/"),
            None,
            true, // disable Nagle, as sockeye does
        )
        .await
        .expect("tokio-tungstenite connect");
        let mut client = Client {
            ws,
            messages: messages.iter().map(|m| m.clone().into()).collect(),
        };
        let first = Message::Text(client.messages[0].clone());
        client.ws.send(first.clone()).await.unwrap();
        assert_eq!(client.ws.next().await.unwrap().unwrap(), first);
        client
    }

    impl EchoClient for Client {
        async fn ping_pong(&mut self) {
            for text in &self.messages {
                self.ws
                    .send(Message::Text(text.clone()))
                    .await
                    .expect("send");
                let echo = self.ws.next().await.expect("open").expect("echo");
                check_echo(text, &echo.into_data());
            }
        }

        async fn pipelined(&mut self) {
            for batch in self.messages.chunks(BATCH) {
                for text in batch {
                    self.ws
                        .feed(Message::Text(text.clone()))
                        .await
                        .expect("feed");
                }
                self.ws.flush().await.expect("flush");
                for text in batch {
                    let echo = self.ws.next().await.expect("open").expect("echo");
                    check_echo(text, &echo.into_data());
                }
            }
        }

        async fn close(mut self) {
            self.ws.close(None).await.expect("close");
        }
    }
}

mod fastwebsockets_impl {
    use super::*;
    use fastwebsockets::{FragmentCollector, Frame, OpCode, Payload, WebSocket, WebSocketError};
    use http_body_util::Empty;
    use hyper::body::Incoming;
    use hyper::header::{CONNECTION, UPGRADE};
    use hyper::server::conn::http1;
    use hyper::service::service_fn;
    use hyper::upgrade::Upgraded;
    use hyper::{Request, Response};
    use hyper_util::rt::TokioIo;

    /// The echo server of fastwebsockets' `examples/echo_server.rs` (hyper upgrade).
    pub(super) async fn serve() -> SocketAddr {
        let (listener, addr) = listener().await;
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                stream.set_nodelay(true).expect("nodelay");
                tokio::spawn(async move {
                    let io = TokioIo::new(stream);
                    let _ = http1::Builder::new()
                        .serve_connection(io, service_fn(server_upgrade))
                        .with_upgrades()
                        .await;
                });
            }
        });
        addr
    }

    async fn handle_client(fut: fastwebsockets::upgrade::UpgradeFut) -> Result<(), WebSocketError> {
        let mut ws = FragmentCollector::new(fut.await?);
        loop {
            let frame = ws.read_frame().await?;
            match frame.opcode {
                OpCode::Close => break,
                OpCode::Text | OpCode::Binary => {
                    ws.write_frame(frame).await?;
                }
                _ => {}
            }
        }
        Ok(())
    }

    async fn server_upgrade(
        mut req: Request<Incoming>,
    ) -> Result<Response<Empty<Bytes>>, WebSocketError> {
        let (response, fut) = fastwebsockets::upgrade::upgrade(&mut req)?;
        tokio::task::spawn(async move {
            let _ = tokio::task::unconstrained(handle_client(fut)).await;
        });
        Ok(response)
    }

    /// Ties hyper's executor to tokio, as in fastwebsockets' README.
    struct SpawnExecutor;

    impl<Fut> hyper::rt::Executor<Fut> for SpawnExecutor
    where
        Fut: Future + Send + 'static,
        Fut::Output: Send + 'static,
    {
        fn execute(&self, fut: Fut) {
            tokio::task::spawn(fut);
        }
    }

    pub(super) struct Client {
        ws: FragmentCollector<TokioIo<Upgraded>>,
        messages: Vec<String>,
    }

    pub(super) async fn connect(messages: &[String]) -> Client {
        let addr = serve().await;
        let stream = TcpStream::connect(addr).await.expect("connect");
        stream.set_nodelay(true).expect("nodelay");
        let req = Request::builder()
            .method("GET")
            .uri(format!("http://{addr}/"))
            .header("Host", addr.to_string())
            .header(UPGRADE, "websocket")
            .header(CONNECTION, "upgrade")
            .header(
                "Sec-WebSocket-Key",
                fastwebsockets::handshake::generate_key(),
            )
            .header("Sec-WebSocket-Version", "13")
            .body(Empty::<Bytes>::new())
            .expect("request");
        let (ws, _): (WebSocket<TokioIo<Upgraded>>, _) =
            fastwebsockets::handshake::client(&SpawnExecutor, req, stream)
                .await
                .expect("fastwebsockets connect");
        let mut client = Client {
            ws: FragmentCollector::new(ws),
            messages: messages.to_vec(),
        };
        let first = client.messages[0].as_bytes();
        client
            .ws
            .write_frame(Frame::text(Payload::Borrowed(first)))
            .await
            .unwrap();
        let echo = client.ws.read_frame().await.unwrap();
        assert_eq!(echo.opcode, OpCode::Text);
        assert_eq!(&echo.payload[..], first);
        client
    }

    impl EchoClient for Client {
        async fn ping_pong(&mut self) {
            for text in &self.messages {
                let frame = Frame::text(Payload::Borrowed(text.as_bytes()));
                self.ws.write_frame(frame).await.expect("write");
                let echo = self.ws.read_frame().await.expect("echo");
                check_echo(text, &echo.payload);
            }
        }

        async fn pipelined(&mut self) {
            for batch in self.messages.chunks(BATCH) {
                for text in batch {
                    let frame = Frame::text(Payload::Borrowed(text.as_bytes()));
                    self.ws.write_frame(frame).await.expect("write");
                }
                for text in batch {
                    let echo = self.ws.read_frame().await.expect("echo");
                    check_echo(text, &echo.payload);
                }
            }
        }

        async fn close(mut self) {
            let _ = self.ws.write_frame(Frame::close(1000, &[])).await;
        }
    }
}

#[derive(Clone, Copy)]
enum Mode {
    PingPong,
    Pipelined,
}

/// Runs `iters` rounds of 1,000 messages on an already connected client.
fn run<C: EchoClient>(rt: &Runtime, client: &mut C, mode: Mode, iters: u64) {
    rt.block_on(async {
        for _ in 0..iters {
            match mode {
                Mode::PingPong => client.ping_pong().await,
                Mode::Pipelined => client.pipelined().await,
            }
        }
    });
}

fn bench_one<C: EchoClient>(
    group: &mut BenchmarkGroup<'_, WallTime>,
    name: &str,
    mode: Mode,
    connect: impl AsyncFnOnce(&[String]) -> C,
) {
    let rt = runtime();
    let messages = messages();
    let mut client = rt.block_on(connect(&messages));
    let mut timer = Timer::from_env();
    group.bench_function(name, |b| {
        b.iter_custom(|iters| timer.time(|| run(&rt, &mut client, mode, iters)));
    });
    timer.report(name);
    rt.block_on(client.close());
}

fn echo(c: &mut Criterion) {
    for (group_name, mode) in [
        ("echo_ping_pong_1KiB", Mode::PingPong),
        ("echo_pipelined_1KiB", Mode::Pipelined),
    ] {
        let mut group = c.benchmark_group(group_name);
        group.throughput(Throughput::Elements(MESSAGES as u64));
        group.sampling_mode(SamplingMode::Flat);
        group.sample_size(20);
        let sockeye = |deflate_level, forward_server| {
            let variant = sockeye_impl::Variant {
                deflate_level,
                forward_server,
            };
            async move |m: &[String]| sockeye_impl::connect(variant, m).await
        };
        bench_one(&mut group, "sockeye-deflate", mode, sockeye(Some(6), false));
        bench_one(&mut group, "sockeye-plain", mode, sockeye(None, false));
        bench_one(&mut group, "tokio-tungstenite-plain", mode, async |m| {
            tungstenite_impl::connect(m).await
        });
        bench_one(&mut group, "fastwebsockets-plain", mode, async |m| {
            fastwebsockets_impl::connect(m).await
        });
        // Context, outside the comparison: what the default level 6 costs, and what the
        // documented server's flush per echo costs when the client pipelines.
        bench_one(
            &mut group,
            "sockeye-deflate-level1",
            mode,
            sockeye(Some(1), false),
        );
        if let Mode::Pipelined = mode {
            bench_one(
                &mut group,
                "sockeye-plain-forward",
                mode,
                sockeye(None, true),
            );
        }
        group.finish();
    }
}

criterion_group!(benches, echo);
criterion_main!(benches);
