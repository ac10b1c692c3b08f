//! Masking keys and handshake nonces from the operating system's CSPRNG.

use sockeye_proto::MaskSource;

/// Draws masking keys from `getrandom` (the OS CSPRNG), 64 keys per system call.
#[derive(Debug)]
pub(crate) struct OsMaskSource {
    buf: [u8; 256],
    pos: usize,
}

impl OsMaskSource {
    pub(crate) fn new() -> Self {
        Self {
            buf: [0; 256],
            pos: 256,
        }
    }
}

impl MaskSource for OsMaskSource {
    fn next_mask(&mut self) -> [u8; 4] {
        if self.pos == self.buf.len() {
            // getrandom fails only where the OS has no entropy source at all; sending a frame
            // with a predictable mask would break RFC 6455 §5.3, so that is a fatal condition.
            getrandom::fill(&mut self.buf).expect("the OS random number generator failed");
            self.pos = 0;
        }
        let key = [
            self.buf[self.pos],
            self.buf[self.pos + 1],
            self.buf[self.pos + 2],
            self.buf[self.pos + 3],
        ];
        self.pos += 4;
        key
    }
}

/// A 16-byte `Sec-WebSocket-Key` nonce.
pub(crate) fn nonce() -> std::io::Result<[u8; 16]> {
    let mut nonce = [0u8; 16];
    getrandom::fill(&mut nonce).map_err(std::io::Error::other)?;
    Ok(nonce)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_differ() {
        let mut masks = OsMaskSource::new();
        let keys: Vec<[u8; 4]> = (0..200).map(|_| masks.next_mask()).collect();
        let distinct: std::collections::HashSet<_> = keys.iter().collect();
        assert!(distinct.len() > 190, "masks repeat: {}", distinct.len());
    }
}
