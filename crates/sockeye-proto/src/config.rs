//! Limits of the protocol core. Every default is safe for a server on the open internet.

/// Default for [`Config::max_frame_size`] and [`Config::max_message_size`]: 16 MiB.
pub const DEFAULT_MAX_MESSAGE_SIZE: usize = 16 << 20;

/// Settings of a [`Connection`](crate::Connection).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Config {
    /// Largest frame payload accepted, in bytes. A larger frame fails the connection with 1009
    /// (RFC 6455 §7.4.1) as soon as its header is read; nothing is allocated for it. `None`
    /// removes the limit: trusted peers only.
    ///
    /// Default: 16 MiB.
    pub max_frame_size: Option<usize>,
    /// Largest reassembled message, in bytes. A larger message fails the connection with 1009;
    /// the buffer grows with the bytes that actually arrive, never to a declared length. `None`
    /// removes the limit: trusted peers only.
    ///
    /// Default: 16 MiB.
    pub max_message_size: Option<usize>,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            max_frame_size: Some(DEFAULT_MAX_MESSAGE_SIZE),
            max_message_size: Some(DEFAULT_MAX_MESSAGE_SIZE),
        }
    }
}

impl Config {
    /// Sets [`max_frame_size`](Self::max_frame_size).
    #[must_use]
    pub fn max_frame_size(mut self, limit: Option<usize>) -> Self {
        self.max_frame_size = limit;
        self
    }

    /// Sets [`max_message_size`](Self::max_message_size).
    #[must_use]
    pub fn max_message_size(mut self, limit: Option<usize>) -> Self {
        self.max_message_size = limit;
        self
    }
}
