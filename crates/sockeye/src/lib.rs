//! WebSocket ([RFC 6455](https://www.rfc-editor.org/rfc/rfc6455)) client and server on tokio.
//!
//! The protocol lives in [`sockeye_proto`], a sans-I/O state machine; this crate moves its bytes
//! over a tokio transport, runs its timers and adapts it to [`futures_core::Stream`] and
//! [`futures_sink::Sink`].
//!
//! # Quick start
//!
//! One connection type, three styles, plus an existing axum server. Every style takes the
//! same [`WebSocketConfig`] (limits, timeouts, compression, queue sizes) and speaks in
//! [`Message`]s.
//!
//! | style | client | server |
//! |---|---|---|
//! | async `Stream` + `Sink` | [`connect`], [`ClientBuilder`] → [`WebSocketStream`] | [`Server::serve`], [`accept`] |
//! | handlers / events, browser-shaped | [`WebSocket::new`], [`WebSocket::builder`] | [`Server::on_connection`] |
//! | blocking, no runtime | [`blocking::connect`] | [`blocking::accept`] |
//! | hyper / axum (features `hyper`, `axum`) | | `integrations::hyper::upgrade`, `integrations::axum::WebSocketUpgrade` |
//! | over HTTP/2, RFC 8441 (feature `http2`) | `ClientBuilder::http2`, `http2::H2Connection` | `Server::http2` |
//!
//! [`WebSocket`] follows the browser's `WebSocket` member by member: see the
//! [browser-parity table](browser#the-browser-interface-member-by-member).
//!
//! ## Async stream
//!
//! A client that sends one message and prints the replies:
//!
//! ```no_run
//! # async fn run() -> Result<(), sockeye::Error> {
//! use futures_util::{SinkExt, StreamExt};
//! use sockeye::{CloseCode, Message};
//!
//! let (mut ws, _response) = sockeye::connect("ws://127.0.0.1:9001/").await?;
//! ws.send(Message::text("hello")).await?;
//! while let Some(message) = ws.next().await {
//!     match message? {
//!         Message::Text(text) => println!("{text}"),
//!         Message::Binary(data) => println!("{} bytes", data.len()),
//!         _ => {}
//!     }
//! #   break;
//! }
//! ws.close(CloseCode::NORMAL, "done").await?;
//! # Ok(()) }
//! ```
//!
//! An echo server, one task per connection ([`WebSocketStream::split`] gives owned halves for
//! two tasks):
//!
//! ```no_run
//! # async fn run() -> std::io::Result<()> {
//! use futures_util::{SinkExt, StreamExt};
//!
//! let server = sockeye::Server::bind("127.0.0.1:9001").await?;
//! server
//!     .serve(|mut ws, _request| async move {
//!         while let Some(Ok(message)) = ws.next().await {
//!             if message.is_data() && ws.send(message).await.is_err() {
//!                 break;
//!             }
//!         }
//!     })
//!     .await
//! # }
//! ```
//!
//! ## Handlers and events
//!
//! The browser's model: the handle returns at once, the connection runs in its own task and
//! reports [`Event`]s, to `on_*` handlers or to [`WebSocket::next_event`]. This example runs:
//! a server on a free loopback port echoes through [`Server::on_connection`], a client with
//! handlers talks to it.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use sockeye::{Event, Message, Server, WebSocket};
//!
//! let server = Server::bind("127.0.0.1:0").await?;
//! let url = format!("ws://{}/chat", server.local_addr()?);
//! tokio::spawn(server.on_connection(|ws, _request| async move {
//!     while let Some(event) = ws.next_event().await {
//!         if let Event::Message(message) = event {
//!             let _ = ws.send_async(message).await; // waits while the queue is full
//!         }
//!     }
//! }));
//!
//! let (done_tx, done_rx) = tokio::sync::oneshot::channel();
//! let mut done_tx = Some(done_tx);
//! let ws = WebSocket::builder(&url)
//!     .on_open(|ws| ws.send("hello").expect("open, queue not full"))
//!     .on_message(|ws, message| {
//!         assert_eq!(message, Message::text("hello"));
//!         ws.close(Some(1000), Some("done")).expect("valid code and reason");
//!     })
//!     .on_close(move |_, close| {
//!         if let Some(tx) = done_tx.take() {
//!             let _ = tx.send((close.code, close.was_clean));
//!         }
//!     })
//!     .connect()?;
//! let outcome = tokio::time::timeout(std::time::Duration::from_secs(10), done_rx).await??;
//! assert_eq!(outcome, (1000, true));
//! assert_eq!(ws.ready_state(), sockeye::ReadyState::Closed);
//! # Ok(()) }
//! ```
//!
//! ## Blocking
//!
//! No runtime: each call blocks its thread ([`blocking`]).
//!
//! ```no_run
//! # fn run() -> Result<(), sockeye::Error> {
//! use std::net::TcpListener;
//! use sockeye::{blocking, CloseCode, Message};
//!
//! // Client.
//! let (mut ws, _response) = blocking::connect("ws://127.0.0.1:9001/")?;
//! ws.send("hello")?;
//! if let Some(Message::Text(reply)) = ws.read()? {
//!     println!("{reply}");
//! }
//! ws.close(CloseCode::NORMAL, "bye")?;
//!
//! // Server: one thread per connection.
//! let listener = TcpListener::bind("127.0.0.1:9002")?;
//! for tcp in listener.incoming() {
//!     std::thread::spawn(move || -> Result<(), sockeye::Error> {
//!         let mut ws = blocking::accept(tcp?)?;
//!         while let Some(message) = ws.read()? {
//!             ws.send(message)?;
//!         }
//!         Ok(())
//!     });
//! }
//! # Ok(()) }
//! ```
//!
//! ## axum
//!
//! With the `axum` feature, a WebSocket route beside ordinary routes, on one port:
//!
//! ```no_run
//! # #[cfg(feature = "axum")]
//! # async fn run() -> std::io::Result<()> {
//! use axum::response::Response;
//! use axum::routing::get;
//! use futures_util::{SinkExt, StreamExt};
//! use sockeye::integrations::axum::WebSocketUpgrade;
//!
//! async fn ws_route(upgrade: WebSocketUpgrade) -> Response {
//!     upgrade.on_upgrade(|mut ws| async move {
//!         while let Some(Ok(message)) = ws.next().await {
//!             if message.is_data() && ws.send(message).await.is_err() {
//!                 break;
//!             }
//!         }
//!     })
//! }
//!
//! let app = axum::Router::new()
//!     .route("/", get(|| async { "hello over http\n" }))
//!     .route("/ws", get(ws_route));
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:3000").await?;
//! axum::serve(listener, app).await
//! # }
//! ```
//!
//! # Cancel safety
//!
//! [`WebSocketStream::recv`] (like `StreamExt::next`) is cancel-safe: received messages stay
//! queued. [`WebSocketStream::send`] queues the whole message, never a part of it, once the
//! outgoing buffer is below its high-water mark (at the first poll unless the peer is slow):
//! dropped while waiting for room, nothing is sent; dropped after, the message is still written
//! by the next operation.
//! [`WebSocketStream::close`] queues its close frame at the first poll and may be called again to
//! resume waiting. No function spawns a task except [`Server::serve`], which spawns one per
//! connection by design, and `integrations::axum::WebSocketUpgrade::on_upgrade` (feature `axum`), which
//! spawns the task that receives the upgraded connection, and the [`WebSocket`] constructors,
//! which spawn the task that drives the connection, as a browser does. [`WebSocket::next_event`]
//! is cancel-safe. [`ReconnectingClient::next_event`] is
//! cancel-safe: the connect in progress, the backoff wait and undelivered events stay in the
//! client.
//!
//! # Defaults
//!
//! | setting | default |
//! |---|---|
//! | max frame / message size | 16 MiB / 16 MiB |
//! | handshake head / header count | 16 KiB / 128 |
//! | handshake timeout / close timeout | 10 s / 10 s |
//! | write buffer high-water mark | 64 KiB |
//! | client proxy | none; [`ProxyConfig::FromEnv`] reads `HTTPS_PROXY`… as curl (opt-in) |
//! | [`ReconnectingClient`] backoff | 0.5 s, ×2, up to 30 s, ± 20 %, unlimited attempts |
#![forbid(unsafe_code)]
#![deny(missing_docs)]

// The folders, bottom to top: `error`, `config`, `rng` and `transport/` (plain, TLS, an HTTP/2
// stream) are the ground; `stream/` is the WebSocket over a transport; `client/` and `server/`
// open connections; `http2/` is a feature-gated layer on top of them; `browser/`, `blocking/`,
// `reconnect` and `integrations/` are API styles; the hub (an application of WebSockets) is the
// `sockeye-hub` crate.
pub mod blocking;
pub mod browser;
mod client;
mod config;
mod error;
#[cfg(feature = "http2")]
pub mod http2;
pub mod integrations;
mod reconnect;
mod rng;
mod server;
mod stream;
mod transport;

#[cfg(feature = "rustls")]
pub use transport::tls;

// The module paths before the folders (see CHANGELOG.md), kept so that code written against
// them compiles.
#[cfg(feature = "http2")]
#[doc(hidden)]
pub use self::http2 as h2;
#[doc(hidden)]
pub use browser as websocket;
#[cfg(feature = "axum")]
#[doc(hidden)]
pub use integrations::axum;
#[cfg(feature = "hyper")]
#[doc(hidden)]
pub use integrations::hyper as upgrade;
/// The name [`Transport`] had before: it is no longer only "maybe TLS" (it may be an HTTP/2
/// stream).
#[doc(hidden)]
pub type MaybeTlsStream<S> = Transport<S>;

pub use browser::{
    CloseEvent, Event, ReadyState, WebSocket, WebSocketBuilder, EVENT_QUEUE, MAX_QUEUED_MESSAGES,
};
pub use client::proxy::{connect_via, Proxy, ProxyConfig, DEFAULT_PROXY_PORT};
pub use client::{
    client_handshake, connect, connect_with_config, percent_decode, ClientBuilder, WsUrl,
};
pub use config::WebSocketConfig;
pub use error::{Error, ProxyError, UrlError};
pub use reconnect::{Backoff, ReconnectEvent, ReconnectingClient};
pub use server::{
    accept, accept_with_config, Accept, HandshakeCallback, HandshakeDecision, HandshakeRequest,
    HttpCallback, OriginCallback, OriginPolicy, Server, DEFAULT_MAX_CONNECTIONS,
};
pub use stream::{ClientStream, ServerStream, WebSocketStream};
pub use transport::Transport;

pub use sockeye_proto::deflate::{DeflateConfig, DeflateParams};
pub use sockeye_proto::handshake::{ClientRequest, HandshakeError, Negotiated};

/// The README's examples, compiled as doc tests.
#[doc = include_str!("../../../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;
pub use sockeye_proto::{
    bytes, http, CloseCode, CloseFrame, Closed, DataKind, Initiator, Message, PreparedMessage,
    ProtocolError, Role, SendError, State, Utf8Bytes, MAX_CLOSE_REASON,
};
