//! UTF-8 text: [`Utf8Bytes`], the text of messages and close reasons, and [`Utf8Validator`],
//! which checks text arriving in pieces
//! ([RFC 6455 §8.1](https://www.rfc-editor.org/rfc/rfc6455#section-8.1)).

use std::fmt;
use std::ops::Deref;

use bytes::Bytes;

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
