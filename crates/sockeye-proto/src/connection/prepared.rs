//! A message framed once for many connections: the frame header of an unmasked frame and,
//! for connections that compress without context takeover
//! ([RFC 7692 §7.1.1](https://www.rfc-editor.org/rfc/rfc7692#section-7.1.1)), the compressed
//! payload, computed on first use and shared by every later connection.

use std::fmt;
use std::sync::{Arc, Mutex, OnceLock, PoisonError};

use bytes::Bytes;

use super::send::opcode_of;
use super::{Connection, Role};
use crate::close_code::CloseCode;
use crate::deflate::{compress_message, CompressParams};
use crate::error::SendError;
use crate::frame::{FrameHeader, OpCode};
use crate::message::{DataKind, Message};

/// Longest header of an unmasked frame: 2 bytes, then a 64-bit length.
const MAX_HEADER: usize = 10;

/// An encoded frame header, kept inline.
#[derive(Clone, Copy)]
pub(super) struct EncodedHeader {
    bytes: [u8; MAX_HEADER],
    len: u8,
}

impl EncodedHeader {
    /// The header of a whole unmasked message frame (FIN set).
    fn new(opcode: OpCode, rsv1: bool, payload_len: usize) -> Self {
        let mut header = FrameHeader::new(opcode, payload_len as u64);
        header.rsv1 = rsv1;
        let mut encoded = Vec::with_capacity(MAX_HEADER);
        header.encode(&mut encoded);
        let mut bytes = [0; MAX_HEADER];
        bytes[..encoded.len()].copy_from_slice(&encoded);
        Self {
            bytes,
            len: encoded.len() as u8,
        }
    }

    pub(super) fn as_slice(&self) -> &[u8] {
        &self.bytes[..usize::from(self.len)]
    }
}

/// A message compressed once for the connections that share its [`CompressParams`].
struct Compressed {
    header: EncodedHeader,
    payload: Bytes,
}

/// Most distinct compression parameter sets cached per message (levels × windows × memLevels
/// in use by one server are few); beyond it, a connection compresses for itself.
const MAX_CACHED_ENCODINGS: usize = 16;

/// A data message, framed once to be sent on many connections with
/// [`Connection::send_prepared`]: a broadcast.
///
/// Cloning is cheap (one reference count). What is shared between the connections:
///
/// - On a server connection without compression (or a message sent uncompressed, see
///   [`compression_threshold`](crate::deflate::DeflateConfig::compression_threshold)), the frame
///   header is encoded once and the payload [`Bytes`] is the caller's, queued without a copy
///   from [`SHARE_THRESHOLD`](crate::SHARE_THRESHOLD) bytes on, as by
///   [`send_shared`](Connection::send_shared).
/// - On a server connection that compresses without context takeover
///   (`server_no_context_takeover` agreed, which a server answers by default: see
///   [`DeflateConfig::server_context_takeover`](crate::deflate::DeflateConfig::server_context_takeover)),
///   the message is compressed the first time it is sent on a connection with a given level
///   and window, and that compressed frame is reused by every later connection with the same
///   parameters. Connections on several threads may send
///   the same prepared message at once; the message is compressed once for each parameter set.
/// - With context takeover each connection's output depends on what it sent before, and a
///   client masks every frame with its own key: those connections frame and compress the message
///   themselves, exactly as [`send_shared`](Connection::send_shared) does.
///
/// The bytes on the wire are the same as those `send_shared` would produce on each connection.
///
/// Control messages (ping, pong, close) may be prepared too; they are sent as by
/// [`ping`](Connection::ping), [`pong`](Connection::pong) and [`close`](Connection::close).
///
/// ```
/// use sockeye_proto::{Config, Connection, Message, PreparedMessage, Role, Transmit};
///
/// let prepared = PreparedMessage::new(Message::text("tick"));
/// for _ in 0..3 {
///     let mut server = Connection::new(Role::Server, Config::default(), Box::new(|| [0u8; 4]));
///     server.send_prepared(&prepared).unwrap();
///     let mut out = Vec::new();
///     assert_eq!(server.poll_transmit(&mut out), Transmit::Bytes);
///     assert_eq!(out, b"\x81\x04tick");
/// }
/// assert_eq!(prepared.message(), &Message::text("tick"));
/// ```
#[derive(Clone)]
pub struct PreparedMessage {
    inner: Arc<Inner>,
}

struct Inner {
    message: Message,
    /// Sent compressed where the connection compresses (false: never, see
    /// [`PreparedMessage::uncompressed`]).
    compress: bool,
    /// The kind and payload of a data message; `None` for a control message.
    data: Option<(DataKind, Bytes)>,
    /// The header of the message as one unmasked, uncompressed frame.
    header: EncodedHeader,
    /// Compressed forms, one per parameter set seen so far; each is computed once (the lock is
    /// held only to find or add the slot, not while compressing).
    compressed: Mutex<Vec<(CompressParams, Arc<OnceLock<Compressed>>)>>,
    /// How many times the message was compressed for the cache.
    #[cfg(test)]
    compressions: std::sync::atomic::AtomicUsize,
}

impl PreparedMessage {
    /// Prepares `message` for sending on many connections.
    pub fn new(message: Message) -> Self {
        Self::build(message, true)
    }

    /// Prepares `message` to be sent uncompressed (RSV1 clear) on every connection, whatever
    /// was negotiated, as [`Connection::send_uncompressed`] sends it: the header and payload
    /// are shared by every server connection, deflate or not, and nothing is compressed. For
    /// payloads that do not shrink (images, already-compressed data) or must not be compressed
    /// with attacker-controlled text.
    pub fn uncompressed(message: Message) -> Self {
        Self::build(message, false)
    }

    /// Whether connections that compress send this message compressed (false for
    /// [`uncompressed`](Self::uncompressed) ones).
    pub fn is_compressible(&self) -> bool {
        self.inner.compress
    }

    fn build(message: Message, compress: bool) -> Self {
        let data = match &message {
            Message::Text(text) => Some((DataKind::Text, text.clone().into_bytes())),
            Message::Binary(data) => Some((DataKind::Binary, data.clone())),
            Message::Ping(_) | Message::Pong(_) | Message::Close(_) => None,
        };
        let header = match &data {
            Some((kind, payload)) => EncodedHeader::new(opcode_of(*kind), false, payload.len()),
            None => EncodedHeader::new(OpCode::Continuation, false, 0),
        };
        Self {
            inner: Arc::new(Inner {
                message,
                compress,
                data,
                header,
                compressed: Mutex::new(Vec::new()),
                #[cfg(test)]
                compressions: std::sync::atomic::AtomicUsize::new(0),
            }),
        }
    }

    /// The message.
    pub fn message(&self) -> &Message {
        &self.inner.message
    }

    /// The compressed payload and its frame header for `params`, compressed now if no
    /// connection with these parameters sent the message before; `None` when the cache is full.
    fn compressed(&self, params: CompressParams, payload: &[u8]) -> Option<(EncodedHeader, Bytes)> {
        let slot = {
            // A panic while the lock was held cannot leave the list inconsistent (a push is
            // the only change); go on with it.
            let mut list = self
                .inner
                .compressed
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            match list.iter().find(|(p, _)| *p == params) {
                Some((_, slot)) => Arc::clone(slot),
                None if list.len() == MAX_CACHED_ENCODINGS => return None,
                None => {
                    let slot = Arc::new(OnceLock::new());
                    list.push((params, Arc::clone(&slot)));
                    slot
                }
            }
        };
        let compressed = slot.get_or_init(|| {
            #[cfg(test)]
            self.inner
                .compressions
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let mut out = Vec::new();
            compress_message(params, payload, &mut out);
            let kind = self.inner.data.as_ref().map_or(DataKind::Binary, |d| d.0);
            Compressed {
                header: EncodedHeader::new(opcode_of(kind), true, out.len()),
                payload: Bytes::from(out),
            }
        });
        Some((compressed.header, compressed.payload.clone()))
    }

    /// How many times the message was compressed for the cache.
    #[cfg(test)]
    pub(crate) fn compressions(&self) -> usize {
        self.inner
            .compressions
            .load(std::sync::atomic::Ordering::Relaxed)
    }
}

impl From<Message> for PreparedMessage {
    fn from(message: Message) -> Self {
        Self::new(message)
    }
}

impl fmt::Debug for PreparedMessage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let cached = self.inner.compressed.lock().map_or(0, |list| {
            list.iter().filter(|(_, c)| c.get().is_some()).count()
        });
        f.debug_struct("PreparedMessage")
            .field("message", &self.inner.message)
            .field("compressed_forms", &cached)
            .finish()
    }
}

impl Connection {
    /// Queues a message prepared for many connections (see [`PreparedMessage`]): the same
    /// frame as [`send_shared`](Self::send_shared) produces, with the framing and, where the
    /// connection compresses without context takeover, the compression done once for all
    /// connections that send the message.
    ///
    /// # Errors
    ///
    /// As [`send`](Self::send) for a data message, as [`ping`](Self::ping),
    /// [`pong`](Self::pong) or [`close`](Self::close) for a control message.
    pub fn send_prepared(&mut self, prepared: &PreparedMessage) -> Result<(), SendError> {
        let (kind, payload) = match (&prepared.inner.data, prepared.message()) {
            (Some((kind, payload)), _) => (*kind, payload),
            (None, Message::Ping(data)) => return self.ping(data),
            (None, Message::Pong(data)) => return self.pong(data),
            (None, Message::Close(Some(frame))) => return self.close(frame.code, &frame.reason),
            // `data` is `None` for control messages only.
            (None, Message::Close(None) | Message::Text(_) | Message::Binary(_)) => {
                return self.close(CloseCode::NORMAL, "")
            }
        };
        let compress = prepared.inner.compress && self.should_compress(payload.len());
        if self.role == Role::Client {
            // Every client frame is masked with a fresh key: nothing to share.
            return if compress {
                self.send_shared(kind, payload.clone())
            } else {
                self.send_uncompressed(kind, payload.clone())
            };
        }
        self.check_open()?;
        if self.out.sending.is_some() {
            return Err(SendError::FragmentInProgress);
        }
        if !compress {
            self.out
                .push_encoded(prepared.inner.header.as_slice(), payload);
            return Ok(());
        }
        let shared = self
            .deflate
            .as_deref()
            .and_then(|deflate| deflate.deflater.shared_params())
            .and_then(|params| prepared.compressed(params, payload));
        match shared {
            Some((header, compressed)) => {
                self.out.push_encoded(header.as_slice(), &compressed);
                Ok(())
            }
            // Context takeover: this connection's compressor continues from its own history.
            None => self.send(kind, payload),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::deflate::{DeflateConfig, DeflateParams};

    fn server(params: DeflateParams, config: &DeflateConfig) -> Connection {
        Connection::new(Role::Server, Config::default(), Box::new(|| [0u8; 4]))
            .with_deflate(params, config)
    }

    fn no_takeover(bits: u8) -> DeflateParams {
        let mut params = DeflateParams::new();
        params.server_no_context_takeover = true;
        params.server_max_window_bits = bits;
        params
    }

    fn wire(conn: &mut Connection) -> Vec<u8> {
        let mut out = Vec::new();
        let _ = conn.poll_transmit(&mut out);
        out
    }

    #[test]
    fn prepared_messages_move_between_threads() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<PreparedMessage>();
    }

    #[test]
    fn many_connections_compress_once_per_parameter_set() {
        let prepared = PreparedMessage::new(Message::text("fan-out ".repeat(100)));
        let config = DeflateConfig::default();
        let level_1 = DeflateConfig {
            level: 1,
            ..DeflateConfig::default()
        };
        let mut outputs = Vec::new();
        for _ in 0..50 {
            let mut conn = server(no_takeover(15), &config);
            conn.send_prepared(&prepared).unwrap();
            outputs.push(wire(&mut conn));
        }
        assert_eq!(prepared.compressions(), 1);
        assert!(outputs.windows(2).all(|w| w[0] == w[1]));
        // Another window, another level: one more compression each, reused after.
        for _ in 0..10 {
            server(no_takeover(10), &config)
                .send_prepared(&prepared)
                .unwrap();
            server(no_takeover(15), &level_1)
                .send_prepared(&prepared)
                .unwrap();
        }
        assert_eq!(prepared.compressions(), 3);
        // Context takeover, or an uncompressed connection: nothing cached.
        server(DeflateParams::new(), &config)
            .send_prepared(&prepared)
            .unwrap();
        Connection::new(Role::Server, Config::default(), Box::new(|| [0u8; 4]))
            .send_prepared(&prepared)
            .unwrap();
        assert_eq!(prepared.compressions(), 3);
    }

    #[test]
    fn connections_on_many_threads_compress_once() {
        let prepared = PreparedMessage::new(Message::binary(vec![42u8; 100_000]));
        let outputs: Vec<Vec<u8>> = std::thread::scope(|scope| {
            let handles: Vec<_> = (0..8)
                .map(|_| {
                    let prepared = prepared.clone();
                    scope.spawn(move || {
                        let mut conn = server(no_takeover(15), &DeflateConfig::default());
                        conn.send_prepared(&prepared).unwrap();
                        wire(&mut conn)
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        assert_eq!(prepared.compressions(), 1);
        assert!(outputs.windows(2).all(|w| w[0] == w[1]));
        assert_eq!(outputs[0][0], 0xC2, "FIN, RSV1, binary");
    }

    #[test]
    fn the_cache_is_bounded() {
        let prepared = PreparedMessage::new(Message::text("bounded ".repeat(10)));
        let mut expected = Vec::new();
        let mut got = Vec::new();
        for level in 0..=9u32 {
            for bits in [9, 15] {
                let config = DeflateConfig {
                    level,
                    ..DeflateConfig::default()
                };
                let mut conn = server(no_takeover(bits), &config);
                conn.send_prepared(&prepared).unwrap();
                got.push(wire(&mut conn));
                let mut twin = server(no_takeover(bits), &config);
                twin.send(DataKind::Text, prepared.message().as_payload())
                    .unwrap();
                expected.push(wire(&mut twin));
            }
        }
        assert_eq!(prepared.compressions(), MAX_CACHED_ENCODINGS);
        assert_eq!(
            got, expected,
            "past the cache, connections compress for themselves"
        );
    }
}
