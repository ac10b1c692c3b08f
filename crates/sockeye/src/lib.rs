//! WebSocket ([RFC 6455](https://www.rfc-editor.org/rfc/rfc6455)) client and server on tokio.
//!
//! The protocol lives in [`sockeye_proto`], a sans-I/O state machine; this crate moves its bytes
//! over a tokio transport, runs its timers and adapts it to [`futures_core::Stream`] and
//! [`futures_sink::Sink`].
//!
//! ```no_run
//! # async fn run() -> Result<(), sockeye::Error> {
//! use futures_util::{SinkExt, StreamExt};
//! use sockeye::{CloseCode, Message};
//!
//! let (mut ws, _) = sockeye::connect("ws://127.0.0.1:9001/").await?;
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
//! # Cancel safety
//!
//! [`WebSocketStream::recv`] (like `StreamExt::next`) is cancel-safe: received messages stay
//! queued. [`WebSocketStream::send`] queues the whole message, never a part of it, once the
//! outgoing buffer is below its high-water mark (at the first poll unless the peer is slow):
//! dropped while waiting for room, nothing is sent; dropped after, the message is still written
//! by the next operation.
//! [`WebSocketStream::close`] queues its close frame at the first poll and may be called again to
//! resume waiting. No function spawns a task except [`Server::serve`], which spawns one per
//! connection by design, and `axum::WebSocketUpgrade::on_upgrade` (feature `axum`), which
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

#[cfg(feature = "axum")]
pub mod axum;
pub mod blocking;
mod client;
mod config;
mod error;
mod mask;
mod proxy;
mod reconnect;
mod server;
mod stream;
#[cfg(feature = "rustls")]
pub mod tls;
mod transport;
#[cfg(feature = "hyper")]
pub mod upgrade;
pub mod websocket;

pub use client::{
    client_handshake, connect, connect_with_config, ClientBuilder, ClientStream, WsUrl,
};
pub use config::WebSocketConfig;
pub use error::{Error, ProxyError, UrlError};
pub use proxy::{connect_via, Proxy, ProxyConfig, DEFAULT_PROXY_PORT};
pub use reconnect::{Backoff, ReconnectEvent, ReconnectingClient};
pub use server::{
    accept, accept_with_config, Accept, HandshakeCallback, HandshakeDecision, HandshakeRequest,
    HttpCallback, OriginCallback, OriginPolicy, Server, ServerStream, DEFAULT_MAX_CONNECTIONS,
};
pub use stream::WebSocketStream;
pub use transport::MaybeTlsStream;
pub use websocket::{
    CloseEvent, Event, ReadyState, WebSocket, WebSocketBuilder, EVENT_QUEUE, MAX_QUEUED_MESSAGES,
};

pub use sockeye_proto::deflate::{DeflateConfig, DeflateParams};
pub use sockeye_proto::handshake::{ClientRequest, HandshakeError};

/// The README's examples, compiled as doc tests.
#[doc = include_str!("../../../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;
pub use sockeye_proto::{
    bytes, http, CloseCode, CloseFrame, Closed, DataKind, Initiator, Message, ProtocolError, Role,
    SendError, State, Utf8Bytes,
};
