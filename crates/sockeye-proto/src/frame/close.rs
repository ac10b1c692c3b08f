//! Close frame bodies
//! ([RFC 6455 §5.5.1](https://www.rfc-editor.org/rfc/rfc6455#section-5.5.1)); the codes they carry
//! are in [`CloseCode`].

use crate::close_code::CloseCode;
use crate::utf8::Utf8Bytes;

/// The body of a close frame that carried a status code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CloseFrame {
    /// The status code.
    pub code: CloseCode,
    /// The reason, UTF-8, at most [`MAX_CLOSE_REASON`](crate::MAX_CLOSE_REASON) (123) bytes.
    pub reason: Utf8Bytes,
}
