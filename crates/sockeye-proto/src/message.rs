//! Messages and incremental UTF-8 validation
//! ([RFC 6455 §5.6](https://www.rfc-editor.org/rfc/rfc6455#section-5.6),
//! [§8.1](https://www.rfc-editor.org/rfc/rfc6455#section-8.1)).

use std::fmt;
use std::ops::Deref;

use bytes::Bytes;

use crate::frame::CloseFrame;

/// An immutable, cheaply clonable UTF-8 string backed by [`Bytes`].
#[derive(Clone, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Utf8Bytes(Bytes);

impl Utf8Bytes {
    /// An empty string.
    pub const fn new() -> Self {
        Self(Bytes::new())
    }

    /// A string from a `'static` literal, without copying.
    pub const fn from_static(s: &'static str) -> Self {
        Self(Bytes::from_static(s.as_bytes()))
    }

    /// Checks that `bytes` is UTF-8 and wraps it without copying.
    ///
    /// # Errors
    ///
    /// Returns the bytes back when they are not valid UTF-8.
    pub fn try_from_bytes(bytes: Bytes) -> Result<Self, Bytes> {
        if simdutf8::basic::from_utf8(&bytes).is_ok() {
            Ok(Self(bytes))
        } else {
            Err(bytes)
        }
    }

    /// Wraps bytes already validated by the caller.
    pub(crate) fn from_validated(bytes: Bytes) -> Self {
        debug_assert!(std::str::from_utf8(&bytes).is_ok());
        Self(bytes)
    }

    /// The string.
    pub fn as_str(&self) -> &str {
        // The invariant of this type: the bytes were validated on construction. Re-checking keeps
        // the crate free of `unsafe`; simdutf8 makes it cheap.
        match simdutf8::basic::from_utf8(&self.0) {
            Ok(s) => s,
            Err(_) => unreachable!("Utf8Bytes holds validated UTF-8"),
        }
    }

    /// The underlying bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// Converts into the underlying [`Bytes`].
    pub fn into_bytes(self) -> Bytes {
        self.0
    }
}

impl Deref for Utf8Bytes {
    type Target = str;
    fn deref(&self) -> &str {
        self.as_str()
    }
}

impl AsRef<str> for Utf8Bytes {
    fn as_ref(&self) -> &str {
        self.as_str()
    }
}

impl AsRef<[u8]> for Utf8Bytes {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

impl fmt::Debug for Utf8Bytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

impl fmt::Display for Utf8Bytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self.as_str(), f)
    }
}

impl From<String> for Utf8Bytes {
    fn from(s: String) -> Self {
        Self(Bytes::from(s))
    }
}

impl From<&str> for Utf8Bytes {
    fn from(s: &str) -> Self {
        Self(Bytes::copy_from_slice(s.as_bytes()))
    }
}

impl PartialEq<str> for Utf8Bytes {
    fn eq(&self, other: &str) -> bool {
        self.as_str() == other
    }
}

impl PartialEq<&str> for Utf8Bytes {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

/// The two kinds of data message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DataKind {
    /// UTF-8 text (opcode 0x1).
    Text,
    /// Arbitrary bytes (opcode 0x2).
    Binary,
}

/// A message received from, or to be sent to, the peer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    /// A complete text message; always valid UTF-8.
    Text(Utf8Bytes),
    /// A complete binary message.
    Binary(Bytes),
    /// A ping (at most 125 bytes). Received pings are answered automatically.
    Ping(Bytes),
    /// A pong (at most 125 bytes).
    Pong(Bytes),
    /// A close frame; `None` when it carried no status code.
    Close(Option<CloseFrame>),
}

impl Message {
    /// A text message.
    pub fn text(s: impl Into<Utf8Bytes>) -> Self {
        Self::Text(s.into())
    }

    /// A binary message.
    pub fn binary(b: impl Into<Bytes>) -> Self {
        Self::Binary(b.into())
    }

    /// Whether this is a text or binary message.
    pub const fn is_data(&self) -> bool {
        matches!(self, Self::Text(_) | Self::Binary(_))
    }

    /// The payload bytes (the reason for a close frame).
    pub fn as_payload(&self) -> &[u8] {
        match self {
            Self::Text(t) => t.as_bytes(),
            Self::Binary(b) | Self::Ping(b) | Self::Pong(b) => b,
            Self::Close(Some(frame)) => frame.reason.as_bytes(),
            Self::Close(None) => &[],
        }
    }
}

impl From<String> for Message {
    fn from(s: String) -> Self {
        Self::Text(s.into())
    }
}

impl From<&str> for Message {
    fn from(s: &str) -> Self {
        Self::Text(s.into())
    }
}

impl From<Vec<u8>> for Message {
    fn from(b: Vec<u8>) -> Self {
        Self::Binary(b.into())
    }
}

impl From<&[u8]> for Message {
    fn from(b: &[u8]) -> Self {
        Self::Binary(Bytes::copy_from_slice(b))
    }
}

impl From<Bytes> for Message {
    fn from(b: Bytes) -> Self {
        Self::Binary(b)
    }
}

/// Validates UTF-8 that arrives in pieces, failing as soon as an invalid sequence is seen rather
/// than when the message ends (RFC 6455 §8.1; Autobahn's "fail fast" cases 6.4.x).
///
/// It keeps only the offset up to which the caller's buffer is known valid: the caller appends
/// bytes to its buffer and calls [`feed`](Self::feed) with the whole buffer.
#[derive(Debug, Clone, Default)]
pub struct Utf8Validator {
    valid_up_to: usize,
}

/// Result of [`Utf8Validator::feed`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Utf8State {
    /// Everything seen is valid and complete.
    Complete,
    /// Valid so far, but ends inside a multi-byte sequence.
    Incomplete,
    /// An invalid sequence was seen.
    Invalid,
}

impl Utf8Validator {
    /// A validator at the start of a message.
    pub const fn new() -> Self {
        Self { valid_up_to: 0 }
    }

    /// Forgets progress, for the next message.
    pub fn reset(&mut self) {
        self.valid_up_to = 0;
    }

    /// Validates the bytes of `buf` not yet checked. `buf` must extend the buffer of earlier calls.
    pub fn feed(&mut self, buf: &[u8]) -> Utf8State {
        let rest = &buf[self.valid_up_to..];
        match simdutf8::compat::from_utf8(rest) {
            Ok(_) => {
                self.valid_up_to = buf.len();
                Utf8State::Complete
            }
            Err(e) => {
                self.valid_up_to += e.valid_up_to();
                if e.error_len().is_some() {
                    Utf8State::Invalid
                } else {
                    Utf8State::Incomplete
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validator_fails_fast_inside_a_message() {
        // "κόσμε" then an invalid code point > U+10FFFF (F4 90 80 80).
        let mut buf = "κόσμε".as_bytes().to_vec();
        let mut v = Utf8Validator::new();
        assert_eq!(v.feed(&buf), Utf8State::Complete);
        buf.push(0xF4);
        assert_eq!(v.feed(&buf), Utf8State::Incomplete);
        buf.push(0x90);
        assert_eq!(
            v.feed(&buf),
            Utf8State::Invalid,
            "second byte already rules it out"
        );
    }

    #[test]
    fn validator_accepts_sequence_split_at_every_byte() {
        let text = "a€𝄞ü".as_bytes();
        let mut v = Utf8Validator::new();
        for end in 1..=text.len() {
            let state = v.feed(&text[..end]);
            assert_ne!(state, Utf8State::Invalid);
        }
        assert_eq!(v.feed(text), Utf8State::Complete);
    }

    #[test]
    fn utf8_bytes_rejects_invalid() {
        assert!(Utf8Bytes::try_from_bytes(Bytes::from_static(b"\xff")).is_err());
        assert_eq!(
            Utf8Bytes::try_from_bytes(Bytes::from_static(b"ok")).unwrap(),
            "ok"
        );
    }
}
