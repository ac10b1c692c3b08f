//! Echo servers for `scripts/bench.sh`: sockeye, tokio-tungstenite, fastwebsockets,
//! tokio-websockets, each written the way its own documentation shows, and a raw TCP echo as the
//! ceiling. (Bun's echo server, also in the matrix, is `benches/fanout/bun-echo.js`.)
//!
//! `echo_server <sockeye|tungstenite|fastwebsockets|tokio-websockets|raw> [ADDR]` listens on `ADDR` (default
//! `127.0.0.1:0`), prints `listening on ADDR` on stdout and echoes every text and binary message
//! until killed. Every server runs on one thread (a current-thread tokio runtime) with
//! `TCP_NODELAY` on every connection and message limits of 64 MiB, so that the 16 MiB scenario
//! fits all of them.

use std::io::Write as _;
use std::net::SocketAddr;

use tokio::net::{TcpListener, TcpStream};

/// Largest message and frame every server accepts.
const MAX_MESSAGE: usize = 64 << 20;

fn main() {
    let mut args = std::env::args().skip(1);
    let kind = args.next().unwrap_or_default();
    let addr: SocketAddr = args
        .next()
        .unwrap_or_else(|| "127.0.0.1:0".to_owned())
        .parse()
        .expect("ADDR: ip:port");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    runtime.block_on(async move {
        let listener = TcpListener::bind(addr).await.expect("bind");
        let local = listener.local_addr().expect("local address");
        match kind.as_str() {
            "sockeye" => {
                let server = sockeye::Server::from_listener(listener);
                announce(local);
                sockeye_server::serve(server).await;
            }
            "tungstenite" => {
                announce(local);
                tungstenite_server::serve(listener).await;
            }
            "fastwebsockets" => {
                announce(local);
                fastwebsockets_server::serve(listener).await;
            }
            "tokio-websockets" => {
                announce(local);
                tokio_websockets_server::serve(listener).await;
            }
            "raw" => {
                announce(local);
                raw_server::serve(listener).await;
            }
            other => {
                eprintln!("usage: echo_server <sockeye|tungstenite|fastwebsockets|tokio-websockets|raw> [ADDR] (got {other:?})");
                std::process::exit(2);
            }
        }
    });
}

fn announce(addr: SocketAddr) {
    let mut out = std::io::stdout().lock();
    writeln!(out, "listening on {addr}").expect("stdout");
    out.flush().expect("stdout");
}

async fn accept_loop<F, Fut>(listener: TcpListener, handle: F)
where
    F: Fn(TcpStream) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                let _ = stream.set_nodelay(true);
                tokio::spawn(handle(stream));
            }
            Err(e) => {
                eprintln!("accept: {e}");
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
            }
        }
    }
}

mod sockeye_server {
    use futures_util::StreamExt as _;
    use sockeye::{Server, WebSocketConfig};

    /// sockeye's documented echo loop: `Server::serve` and `send_batched` per message (one write per burst).
    pub(super) async fn serve(server: Server) {
        let config = WebSocketConfig::default()
            .max_message_size(Some(super::MAX_MESSAGE))
            .max_frame_size(Some(super::MAX_MESSAGE));
        let _ = server
            .config(config)
            .serve(|mut ws, _request| async move {
                while let Some(Ok(message)) = ws.next().await {
                    if message.is_data() && ws.send_batched(message).await.is_err() {
                        break;
                    }
                }
            })
            .await;
    }
}

mod tungstenite_server {
    use futures_util::{future, StreamExt as _, TryStreamExt as _};
    use tokio::net::{TcpListener, TcpStream};
    use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

    /// The echo server of tokio-tungstenite's `examples/echo-server.rs`: split, then forward the
    /// text and binary messages of the read half into the write half.
    pub(super) async fn serve(listener: TcpListener) {
        super::accept_loop(listener, accept_connection).await;
    }

    async fn accept_connection(stream: TcpStream) {
        let config = WebSocketConfig::default()
            .max_message_size(Some(super::MAX_MESSAGE))
            .max_frame_size(Some(super::MAX_MESSAGE));
        let Ok(ws_stream) = tokio_tungstenite::accept_async_with_config(stream, Some(config)).await
        else {
            return;
        };
        let (write, read) = ws_stream.split();
        let _ = read
            .try_filter(|msg| future::ready(msg.is_text() || msg.is_binary()))
            .forward(write)
            .await;
    }
}

mod fastwebsockets_server {
    use bytes::Bytes;
    use fastwebsockets::{FragmentCollector, OpCode, WebSocketError};
    use http_body_util::Empty;
    use hyper::body::Incoming;
    use hyper::server::conn::http1;
    use hyper::service::service_fn;
    use hyper::{Request, Response};
    use hyper_util::rt::TokioIo;
    use tokio::net::{TcpListener, TcpStream};

    /// The echo server of fastwebsockets' `examples/echo_server.rs`: hyper's HTTP/1 server with
    /// upgrades, `upgrade::upgrade`, a `FragmentCollector`, `tokio::task::unconstrained`.
    pub(super) async fn serve(listener: TcpListener) {
        super::accept_loop(listener, serve_connection).await;
    }

    async fn serve_connection(stream: TcpStream) {
        let io = TokioIo::new(stream);
        let _ = http1::Builder::new()
            .serve_connection(io, service_fn(server_upgrade))
            .with_upgrades()
            .await;
    }

    async fn handle_client(fut: fastwebsockets::upgrade::UpgradeFut) -> Result<(), WebSocketError> {
        let mut ws = fut.await?;
        ws.set_max_message_size(super::MAX_MESSAGE);
        let mut ws = FragmentCollector::new(ws);
        loop {
            let frame = ws.read_frame().await?;
            match frame.opcode {
                OpCode::Close => break,
                OpCode::Text | OpCode::Binary => ws.write_frame(frame).await?,
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
}

mod tokio_websockets_server {
    use futures_util::{SinkExt as _, StreamExt as _};
    use tokio::net::{TcpListener, TcpStream};
    use tokio_websockets::{Config, Limits, ServerBuilder};

    /// The echo server of tokio-websockets' README: `ServerBuilder::accept`, then send back every
    /// text and binary message (the handshake in the connection's task rather than the accept
    /// loop, as for the other servers). Its outgoing frames are raised from 4 MiB to the message
    /// limit, so that a 16 MiB echo is one frame, as the load client's first check expects.
    pub(super) async fn serve(listener: TcpListener) {
        super::accept_loop(listener, serve_connection).await;
    }

    async fn serve_connection(stream: TcpStream) {
        let limits = Limits::default().max_payload_len(Some(super::MAX_MESSAGE));
        let config = Config::default().frame_size(super::MAX_MESSAGE);
        let Ok((_request, mut ws)) = ServerBuilder::new()
            .config(config)
            .limits(limits)
            .accept(stream)
            .await
        else {
            return;
        };
        while let Some(Ok(message)) = ws.next().await {
            if (message.is_text() || message.is_binary()) && ws.send(message).await.is_err() {
                break;
            }
        }
    }
}

mod raw_server {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    use tokio::net::{TcpListener, TcpStream};

    /// Echoes bytes as they come: the most a WebSocket echo over this loopback can do.
    pub(super) async fn serve(listener: TcpListener) {
        super::accept_loop(listener, echo).await;
    }

    async fn echo(mut stream: TcpStream) {
        let mut buf = vec![0u8; 64 << 10];
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => {
                    if stream.write_all(&buf[..n]).await.is_err() {
                        return;
                    }
                }
            }
        }
    }
}
