//! Frame headers ([RFC 6455 §5.2](https://www.rfc-editor.org/rfc/rfc6455#section-5.2)).

mod close;
mod mask;
mod opcode;

/// Close codes live at the crate root; re-exported here so that existing paths keep working.
pub use crate::close_code::{CloseCode, MAX_CLOSE_REASON};
pub use close::CloseFrame;
pub use mask::{apply_mask, apply_mask_bytewise};
pub use opcode::OpCode;

use crate::error::ProtocolError;

/// Largest payload of a control frame (§5.5: "All control frames MUST have a payload length of
/// 125 bytes or less").
pub const MAX_CONTROL_PAYLOAD: usize = 125;

/// Longest possible frame header: 2 bytes, 8 bytes of extended length, 4 bytes of mask.
pub const MAX_HEADER_SIZE: usize = 14;

/// A decoded frame header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameHeader {
    /// Final fragment of a message.
    pub fin: bool,
    /// Reserved bit 1 (permessage-deflate's "compressed" bit).
    pub rsv1: bool,
    /// Reserved bit 2.
    pub rsv2: bool,
    /// Reserved bit 3.
    pub rsv3: bool,
    /// The opcode.
    pub opcode: OpCode,
    /// The masking key, present on every client-to-server frame.
    pub mask: Option<[u8; 4]>,
    /// Payload length in bytes.
    pub payload_len: u64,
}

impl FrameHeader {
    /// A header with FIN set, no reserved bits, no mask.
    pub const fn new(opcode: OpCode, payload_len: u64) -> Self {
        Self {
            fin: true,
            rsv1: false,
            rsv2: false,
            rsv3: false,
            opcode,
            mask: None,
            payload_len,
        }
    }

    /// Parses a header from the start of `data`.
    ///
    /// Returns `Ok(None)` when `data` is too short to hold the whole header, and
    /// `Ok(Some((header, used)))` with the number of header bytes otherwise.
    ///
    /// # Errors
    ///
    /// [`ProtocolError::ReservedOpCode`] for opcodes 3–7 and 11–15,
    /// [`ProtocolError::LengthHighBit`] for a 64-bit length with the most significant bit set, and
    /// [`ProtocolError::NonMinimalLength`] for a length not encoded in the fewest bytes
    /// (§5.2: "the minimal number of bytes MUST be used to encode the length").
    pub fn parse(data: &[u8]) -> Result<Option<(Self, usize)>, ProtocolError> {
        let [b0, b1, ..] = *data else {
            return Ok(None);
        };
        let opcode = OpCode::from_u8(b0 & 0x0F).ok_or(ProtocolError::ReservedOpCode(b0 & 0x0F))?;
        let masked = b1 & 0x80 != 0;
        let (payload_len, mut used) = match b1 & 0x7F {
            126 => {
                let Some(bytes) = data.get(2..4) else {
                    return Ok(None);
                };
                let len = u16::from_be_bytes([bytes[0], bytes[1]]);
                if len < 126 {
                    return Err(ProtocolError::NonMinimalLength);
                }
                (u64::from(len), 4)
            }
            127 => {
                let Some(bytes) = data.get(2..10) else {
                    return Ok(None);
                };
                let mut be = [0u8; 8];
                be.copy_from_slice(bytes);
                let len = u64::from_be_bytes(be);
                if len >> 63 != 0 {
                    return Err(ProtocolError::LengthHighBit);
                }
                if len <= u64::from(u16::MAX) {
                    return Err(ProtocolError::NonMinimalLength);
                }
                (len, 10)
            }
            len => (u64::from(len), 2),
        };
        let mask = if masked {
            let Some(bytes) = data.get(used..used + 4) else {
                return Ok(None);
            };
            used += 4;
            Some([bytes[0], bytes[1], bytes[2], bytes[3]])
        } else {
            None
        };
        Ok(Some((
            Self {
                fin: b0 & 0x80 != 0,
                rsv1: b0 & 0x40 != 0,
                rsv2: b0 & 0x20 != 0,
                rsv3: b0 & 0x10 != 0,
                opcode,
                mask,
                payload_len,
            },
            used,
        )))
    }

    /// Number of bytes [`encode`](Self::encode) writes.
    pub const fn encoded_len(&self) -> usize {
        let len = if self.payload_len < 126 {
            2
        } else if self.payload_len <= u16::MAX as u64 {
            4
        } else {
            10
        };
        if self.mask.is_some() {
            len + 4
        } else {
            len
        }
    }

    /// Appends the header to `out`, with the length in its minimal form.
    ///
    /// # Panics
    ///
    /// If `payload_len` has its most significant bit set, which no frame may have.
    pub fn encode(&self, out: &mut Vec<u8>) {
        assert!(self.payload_len >> 63 == 0, "payload length over 2^63 - 1");
        let mut b0 = self.opcode.as_u8();
        if self.fin {
            b0 |= 0x80;
        }
        if self.rsv1 {
            b0 |= 0x40;
        }
        if self.rsv2 {
            b0 |= 0x20;
        }
        if self.rsv3 {
            b0 |= 0x10;
        }
        let mask_bit = if self.mask.is_some() { 0x80 } else { 0 };
        if self.payload_len < 126 {
            out.extend_from_slice(&[b0, mask_bit | self.payload_len as u8]);
        } else if let Ok(len) = u16::try_from(self.payload_len) {
            out.extend_from_slice(&[b0, mask_bit | 126]);
            out.extend_from_slice(&len.to_be_bytes());
        } else {
            out.extend_from_slice(&[b0, mask_bit | 127]);
            out.extend_from_slice(&self.payload_len.to_be_bytes());
        }
        if let Some(key) = self.mask {
            out.extend_from_slice(&key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_all(data: &[u8]) -> FrameHeader {
        let (header, used) = FrameHeader::parse(data).unwrap().unwrap();
        assert_eq!(used, data.len());
        header
    }

    #[test]
    fn rfc_5_7_examples() {
        // Single-frame unmasked text "Hello".
        let h = parse_all(&[0x81, 0x05]);
        assert_eq!(h, FrameHeader::new(OpCode::Text, 5));
        // Single-frame masked text.
        let h = parse_all(&[0x81, 0x85, 0x37, 0xfa, 0x21, 0x3d]);
        assert_eq!(h.mask, Some([0x37, 0xfa, 0x21, 0x3d]));
        // Fragmented: first frame has FIN clear.
        let h = parse_all(&[0x01, 0x03]);
        assert!(!h.fin);
        // 256 bytes binary, 16-bit length.
        let h = parse_all(&[0x82, 0x7E, 0x01, 0x00]);
        assert_eq!(h.payload_len, 256);
        // 64 KiB binary, 64-bit length.
        let h = parse_all(&[0x82, 0x7F, 0, 0, 0, 0, 0, 1, 0, 0]);
        assert_eq!(h.payload_len, 65536);
    }

    #[test]
    fn incomplete_headers_ask_for_more() {
        let full = [0x82, 0xFF, 0, 0, 0, 0, 0, 1, 0, 0, 1, 2, 3, 4];
        for len in 0..full.len() {
            assert_eq!(FrameHeader::parse(&full[..len]), Ok(None), "len {len}");
        }
        assert!(FrameHeader::parse(&full).unwrap().is_some());
    }

    #[test]
    fn rejects_high_bit_reserved_opcode_and_non_minimal_lengths() {
        assert_eq!(
            FrameHeader::parse(&[0x82, 0x7F, 0x80, 0, 0, 0, 0, 0, 0, 0]),
            Err(ProtocolError::LengthHighBit)
        );
        assert_eq!(
            FrameHeader::parse(&[0x83, 0]),
            Err(ProtocolError::ReservedOpCode(3))
        );
        assert_eq!(
            FrameHeader::parse(&[0x8B, 0]),
            Err(ProtocolError::ReservedOpCode(11))
        );
        assert_eq!(
            FrameHeader::parse(&[0x82, 0x7E, 0, 125]),
            Err(ProtocolError::NonMinimalLength)
        );
        assert_eq!(
            FrameHeader::parse(&[0x82, 0x7F, 0, 0, 0, 0, 0, 0, 0xFF, 0xFF]),
            Err(ProtocolError::NonMinimalLength)
        );
    }

    #[test]
    fn encode_uses_each_length_form_at_its_boundary() {
        for (len, size) in [
            (0u64, 2),
            (125, 2),
            (126, 4),
            (65535, 4),
            (65536, 10),
            (1 << 40, 10),
        ] {
            let header = FrameHeader::new(OpCode::Binary, len);
            let mut out = Vec::new();
            header.encode(&mut out);
            assert_eq!(out.len(), size, "len {len}");
            assert_eq!(header.encoded_len(), size);
            assert_eq!(parse_all(&out), header);
        }
    }
}
