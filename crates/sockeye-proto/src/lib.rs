//! Sans-I/O WebSocket protocol core ([RFC 6455](https://www.rfc-editor.org/rfc/rfc6455)).
//!
//! `sockeye-proto` turns bytes into events and commands into bytes. It never touches a socket, a
//! clock, a runtime or a hidden random number generator: the caller feeds what it read, writes
//! what it is given, runs the close timer and supplies the randomness (masking keys, handshake
//! nonces). The `sockeye` crate drives it over tokio; any other transport can do the same.
//!
//! - [`frame`]: frame headers, opcodes, masking, close frames (§5); [`CloseCode`] and
//!   [`MAX_CLOSE_REASON`] (§5.5.1, §7.4).
//! - [`Connection`]: the state machine after the handshake: fragmentation, control frames,
//!   incremental UTF-8 validation, the close handshake, limits (§5–§7).
//! - [`handshake`]: the opening handshake for both roles (§4).
#![forbid(unsafe_code)]

mod close_code;
mod config;
mod connection;
pub mod deflate;
mod error;
pub mod frame;
pub mod handshake;
mod message;
mod utf8;

pub use close_code::{CloseCode, MAX_CLOSE_REASON};
pub use config::{Config, DEFAULT_MAX_MESSAGE_SIZE};
pub use connection::{
    Closed, Connection, Event, Initiator, MaskSource, PreparedMessage, Role, State, Transmit,
    MAX_PENDING_PONGS, SHARE_THRESHOLD,
};
pub use error::{ProtocolError, SendError};
pub use frame::CloseFrame;
pub use message::{DataKind, Message};
pub use utf8::{Utf8Bytes, Utf8State, Utf8Validator};

/// Re-exported for the payload types of [`Message`].
pub use bytes;
/// Re-exported for the handshake's request and response types.
pub use http;
