//! Close status codes and the close-reason limit
//! ([RFC 6455 §5.5.1](https://www.rfc-editor.org/rfc/rfc6455#section-5.5.1),
//! [§7.4](https://www.rfc-editor.org/rfc/rfc6455#section-7.4)).
//!
//! At the crate root, apart from [`frame`](crate::frame), so that [`ProtocolError`]
//! (which maps each violation to a code) and the frame parser (which reports violations) do not
//! import each other.
//!
//! [`ProtocolError`]: crate::ProtocolError

use std::fmt;

/// A close status code. Any `u16` can be held; [`is_valid_on_wire`](Self::is_valid_on_wire)
/// and [`is_sendable`](Self::is_sendable) say what may appear in a close frame.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CloseCode(pub u16);

impl CloseCode {
    /// 1000: the purpose of the connection has been fulfilled.
    pub const NORMAL: Self = Self(1000);
    /// 1001: the endpoint is going away (server shutdown, page navigation).
    pub const GOING_AWAY: Self = Self(1001);
    /// 1002: the peer violated the protocol.
    pub const PROTOCOL_ERROR: Self = Self(1002);
    /// 1003: a data type the endpoint cannot accept.
    pub const UNSUPPORTED_DATA: Self = Self(1003);
    /// 1005: no status code was present. Reported locally, never sent.
    pub const NO_STATUS_RCVD: Self = Self(1005);
    /// 1006: closed without a close frame. Reported locally, never sent.
    pub const ABNORMAL: Self = Self(1006);
    /// 1007: message data inconsistent with its type (e.g. text that is not UTF-8).
    pub const INVALID_PAYLOAD: Self = Self(1007);
    /// 1008: a message violates the endpoint's policy.
    pub const POLICY_VIOLATION: Self = Self(1008);
    /// 1009: a message is too big to process.
    pub const MESSAGE_TOO_BIG: Self = Self(1009);
    /// 1010: the client expected an extension the server did not negotiate.
    pub const MANDATORY_EXTENSION: Self = Self(1010);
    /// 1011: the server met an unexpected condition.
    pub const INTERNAL_ERROR: Self = Self(1011);
    /// 1012: the service is restarting.
    pub const SERVICE_RESTART: Self = Self(1012);
    /// 1013: try again later.
    pub const TRY_AGAIN_LATER: Self = Self(1013);
    /// 1014: a gateway received an invalid response from upstream.
    pub const BAD_GATEWAY: Self = Self(1014);
    /// 1015: TLS handshake failure. Reported locally, never sent.
    pub const TLS_HANDSHAKE: Self = Self(1015);

    /// The numeric code.
    pub const fn as_u16(self) -> u16 {
        self.0
    }

    /// Whether a close frame may carry this code: 1000–1003, 1007–1014 and 3000–4999
    /// (RFC 6455 §7.4.1–§7.4.2 and the IANA registry). 1004–1006, 1015, codes below 1000, the
    /// unassigned 1016–2999 and 5000 and above are not.
    pub const fn is_valid_on_wire(self) -> bool {
        matches!(self.0, 1000..=1003 | 1007..=1014 | 3000..=4999)
    }

    /// Whether an application may send this code: the wire-valid codes.
    pub const fn is_sendable(self) -> bool {
        self.is_valid_on_wire()
    }
}

impl fmt::Debug for CloseCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CloseCode({})", self.0)
    }
}

impl fmt::Display for CloseCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl From<u16> for CloseCode {
    fn from(value: u16) -> Self {
        Self(value)
    }
}

impl From<CloseCode> for u16 {
    fn from(value: CloseCode) -> Self {
        value.0
    }
}

/// Longest close reason that fits a control frame: 125 bytes minus the 2-byte code.
pub const MAX_CLOSE_REASON: usize = 123;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_validity_matches_rfc_ranges() {
        let valid = |c: u16| CloseCode(c).is_valid_on_wire();
        for c in [
            1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012, 1013, 1014, 3000, 4999,
        ] {
            assert!(valid(c), "{c}");
        }
        for c in [0, 999, 1004, 1005, 1006, 1015, 1016, 2999, 5000, 65535] {
            assert!(!valid(c), "{c}");
        }
    }
}
