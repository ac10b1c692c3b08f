//! The permessage-deflate extension ([RFC 7692](https://www.rfc-editor.org/rfc/rfc7692)):
//! negotiation in the opening handshake and per-message compression.

mod codec;
mod negotiate;

pub use codec::SYNC_TRAILER;
pub(crate) use codec::{compress_message, CompressParams, Deflater, InflateError, Inflater};
pub use negotiate::{DeflateConfig, DeflateParams, ExtensionError, PERMESSAGE_DEFLATE};
