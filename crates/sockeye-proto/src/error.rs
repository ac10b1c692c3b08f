//! Error types of the protocol core.

use std::fmt;

use crate::close_code::CloseCode;

/// The peer violated RFC 6455; the connection is failed
/// ([§7.1.7](https://www.rfc-editor.org/rfc/rfc6455#section-7.1.7)).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ProtocolError {
    /// A client frame without a mask (§5.1: "a server MUST close the connection upon receiving a
    /// frame that is not masked").
    UnmaskedFrame,
    /// A server frame with a mask (§5.1: "A client MUST close a connection if it detects a masked
    /// frame").
    MaskedFrame,
    /// An RSV bit set without an extension that defines it (§5.2).
    ReservedBits,
    /// A reserved opcode (§5.2).
    ReservedOpCode(u8),
    /// A 64-bit payload length with the most significant bit set (§5.2).
    LengthHighBit,
    /// A payload length not encoded in the fewest bytes (§5.2).
    NonMinimalLength,
    /// A control frame with more than 125 bytes of payload (§5.5).
    ControlFrameTooBig,
    /// A control frame without FIN (§5.5: "Control frames MUST NOT be fragmented").
    FragmentedControlFrame,
    /// A continuation frame with no message in progress (§5.4).
    UnexpectedContinuation,
    /// A text or binary frame while a fragmented message is in progress (§5.4).
    ExpectedContinuation,
    /// A text message or close reason that is not UTF-8 (§8.1).
    InvalidUtf8,
    /// A close frame with a one-byte payload (§5.5.1).
    InvalidCloseFrame,
    /// A close frame with a code that may not appear on the wire (§7.4).
    InvalidCloseCode(u16),
    /// A frame payload larger than `Config::max_frame_size` (§10.4).
    FrameTooBig {
        /// The configured limit in bytes.
        limit: usize,
    },
    /// A message larger than `Config::max_message_size` (§10.4); for a compressed message, its
    /// size after decompression.
    MessageTooBig {
        /// The configured limit in bytes.
        limit: usize,
    },
    /// A compressed message that is not valid DEFLATE data (RFC 7692 §8: "the receiving
    /// endpoint MUST _Fail the WebSocket Connection_"). sockeye closes with 1007: the payload is
    /// inconsistent with the message's type.
    InvalidCompressedData,
}

impl ProtocolError {
    /// Close code sent when failing the connection (§7.4.1).
    pub const fn close_code(&self) -> CloseCode {
        match self {
            Self::UnmaskedFrame
            | Self::MaskedFrame
            | Self::ReservedBits
            | Self::ReservedOpCode(_)
            | Self::LengthHighBit
            | Self::NonMinimalLength
            | Self::ControlFrameTooBig
            | Self::FragmentedControlFrame
            | Self::UnexpectedContinuation
            | Self::ExpectedContinuation
            | Self::InvalidCloseFrame
            | Self::InvalidCloseCode(_) => CloseCode::PROTOCOL_ERROR,
            Self::InvalidUtf8 | Self::InvalidCompressedData => CloseCode::INVALID_PAYLOAD,
            Self::FrameTooBig { .. } | Self::MessageTooBig { .. } => CloseCode::MESSAGE_TOO_BIG,
        }
    }
}

impl fmt::Display for ProtocolError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::UnmaskedFrame => f.write_str("client frame is not masked"),
            Self::MaskedFrame => f.write_str("server frame is masked"),
            Self::ReservedBits => f.write_str("reserved bits set without an extension"),
            Self::ReservedOpCode(op) => write!(f, "reserved opcode {op:#x}"),
            Self::LengthHighBit => f.write_str("64-bit payload length has its high bit set"),
            Self::NonMinimalLength => f.write_str("payload length not minimally encoded"),
            Self::ControlFrameTooBig => f.write_str("control frame payload over 125 bytes"),
            Self::FragmentedControlFrame => f.write_str("fragmented control frame"),
            Self::UnexpectedContinuation => f.write_str("continuation frame without a message"),
            Self::ExpectedContinuation => f.write_str("new message inside a fragmented message"),
            Self::InvalidUtf8 => f.write_str("invalid utf-8"),
            Self::InvalidCloseFrame => f.write_str("close frame with a one-byte payload"),
            Self::InvalidCloseCode(code) => write!(f, "invalid close code {code}"),
            Self::FrameTooBig { limit } => write!(f, "frame larger than {limit} bytes"),
            Self::MessageTooBig { limit } => write!(f, "message larger than {limit} bytes"),
            Self::InvalidCompressedData => f.write_str("invalid compressed data"),
        }
    }
}

impl std::error::Error for ProtocolError {}

/// The caller asked for something the connection cannot do; the connection stays as it was.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum SendError {
    /// A close frame was already sent: no frame may follow it (§5.5.1).
    Closed,
    /// A control frame payload over 125 bytes.
    ControlFrameTooBig,
    /// A close code that may not be sent (see [`CloseCode::is_sendable`]).
    InvalidCloseCode(u16),
    /// A close reason over [`MAX_CLOSE_REASON`](crate::MAX_CLOSE_REASON) (123) bytes.
    CloseReasonTooLong,
    /// A whole message or a new fragmented message while a fragmented one is unfinished.
    FragmentInProgress,
    /// A continuation with no fragmented message started, or of the other kind.
    NoFragmentInProgress,
}

impl fmt::Display for SendError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Closed => f.write_str("connection is closing or closed"),
            Self::ControlFrameTooBig => f.write_str("control frame payload over 125 bytes"),
            Self::InvalidCloseCode(code) => write!(f, "close code {code} may not be sent"),
            Self::CloseReasonTooLong => f.write_str("close reason over 123 bytes"),
            Self::FragmentInProgress => f.write_str("a fragmented message is in progress"),
            Self::NoFragmentInProgress => f.write_str("no fragmented message is in progress"),
        }
    }
}

impl std::error::Error for SendError {}
