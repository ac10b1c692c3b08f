//! Compression and decompression of message payloads
//! ([RFC 7692 §7.2](https://www.rfc-editor.org/rfc/rfc7692#section-7.2)), over flate2 with the
//! zlib-rs backend (raw DEFLATE with a configurable window).

use bytes::BytesMut;
use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress, Status};

/// The four bytes a sync flush ends with; removed before sending, restored before inflating
/// (§7.2.1, §7.2.2).
pub const SYNC_TRAILER: [u8; 4] = [0x00, 0x00, 0xFF, 0xFF];

/// Output produced per step of inflation; what bounds a step's memory beyond the limit.
const INFLATE_STEP: usize = 32 << 10;

/// zlib's `memLevel`: the size of the hash table and of the buffer of symbols per block
/// (zlib's default, as Node's `zlib` and Python's `zlib` use).
pub(crate) const MEM_LEVEL: u8 = 8;

/// What decides the bytes of a message compressed from an empty context: two compressors with
/// equal parameters and no context takeover produce the same bytes for the same message, so a
/// message prepared for many connections is compressed once per distinct `CompressParams`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct CompressParams {
    /// zlib level, 0..=9.
    pub(crate) level: u8,
    /// LZ77 window, 9..=15.
    pub(crate) window_bits: u8,
    /// zlib `memLevel`.
    pub(crate) mem_level: u8,
}

impl CompressParams {
    fn new_compress(self) -> Compress {
        Compress::new_with_window_bits(
            Compression::new(u32::from(self.level)),
            false,
            self.window_bits,
        )
    }
}

/// Compresses `input` as one whole message from an empty context, appending to `out`: the bytes
/// a deflater with `params` and no context takeover produces for it.
pub(crate) fn compress_message(params: CompressParams, input: &[u8], out: &mut Vec<u8>) {
    let mut deflater = Deflater {
        params: Some(params),
        compress: Some(params.new_compress()),
        no_context_takeover: true,
    };
    deflater.compress(input, true, out);
}

/// Compresses messages for one direction of a connection.
pub(crate) struct Deflater {
    /// `None` when messages cannot be compressed (an 8-bit window).
    params: Option<CompressParams>,
    compress: Option<Compress>,
    no_context_takeover: bool,
}

impl std::fmt::Debug for Deflater {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Deflater")
            .field("enabled", &self.compress.is_some())
            .field("no_context_takeover", &self.no_context_takeover)
            .finish()
    }
}

impl Deflater {
    /// A compressor with a `window_bits` LZ77 window. zlib cannot compress with a 256-byte
    /// window (8 bits), so with 8 every message is sent uncompressed, which RFC 7692 allows
    /// (the RSV1 bit is per message).
    pub(crate) fn new(window_bits: u8, no_context_takeover: bool, level: u32) -> Self {
        let params = (window_bits >= 9).then(|| CompressParams {
            level: level.min(9) as u8,
            window_bits: window_bits.min(15),
            mem_level: MEM_LEVEL,
        });
        Self {
            params,
            compress: params.map(CompressParams::new_compress),
            no_context_takeover,
        }
    }

    /// The parameters of a deflater that compresses every message from an empty context (no
    /// context takeover): its output for a message depends on these and the message only.
    pub(crate) fn shared_params(&self) -> Option<CompressParams> {
        self.params.filter(|_| self.no_context_takeover)
    }

    /// Whether messages can be compressed at all.
    pub(crate) fn is_enabled(&self) -> bool {
        self.compress.is_some()
    }

    /// Appends the compressed form of `input` to `out`. With `fin`, the message ends: the sync
    /// trailer is removed and, without context takeover, the context is reset.
    pub(crate) fn compress(&mut self, input: &[u8], fin: bool, out: &mut Vec<u8>) {
        let Some(compress) = self.compress.as_mut() else {
            out.extend_from_slice(input);
            return;
        };
        let start = out.len();
        let mut consumed = 0;
        loop {
            out.reserve((input.len() - consumed) / 2 + 64);
            let before = compress.total_in();
            // Compression of in-memory data cannot fail; the status is always Ok.
            let _ = compress.compress_vec(&input[consumed..], out, FlushCompress::Sync);
            consumed += (compress.total_in() - before) as usize;
            // A sync flush is complete when it left output space unused.
            if consumed == input.len() && out.len() < out.capacity() {
                break;
            }
        }
        if fin {
            if out[start..].ends_with(&SYNC_TRAILER) {
                out.truncate(out.len() - SYNC_TRAILER.len());
            }
            if out.len() == start {
                // §7.2.3.6: an empty message may be a single 0x00 byte.
                out.push(0x00);
            }
            if self.no_context_takeover {
                compress.reset();
            }
        }
    }
}

/// Why inflation stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum InflateError {
    /// The output would exceed the limit.
    TooBig,
    /// The input is not valid DEFLATE data.
    Invalid,
}

/// Decompresses messages from the peer.
pub(crate) struct Inflater {
    decompress: Decompress,
    no_context_takeover: bool,
    /// A block with BFINAL was seen; only the padding octet may follow.
    ended: bool,
    /// The octet that follows a final block (§7.2.3.4) was seen.
    padding_seen: bool,
}

impl std::fmt::Debug for Inflater {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Inflater")
            .field("no_context_takeover", &self.no_context_takeover)
            .finish()
    }
}

impl Inflater {
    /// A decompressor for a peer using at most a `window_bits` window.
    pub(crate) fn new(window_bits: u8, no_context_takeover: bool) -> Self {
        Self {
            // zlib-rs takes 9..=15; a 9-bit window decodes data made with an 8-bit one.
            decompress: Decompress::new_with_window_bits(false, window_bits.clamp(9, 15)),
            no_context_takeover,
            ended: false,
            padding_seen: false,
        }
    }

    /// Inflates `input`, appending to `out`, never letting `out` grow past `limit` bytes.
    pub(crate) fn inflate(
        &mut self,
        mut input: &[u8],
        out: &mut BytesMut,
        limit: usize,
    ) -> Result<(), InflateError> {
        while !input.is_empty() {
            if self.ended {
                // §7.2.3.4: after a block with BFINAL set comes one octet 0x00, "the header bits
                // with BFINAL set to 0 and BTYPE set to 00, and 5 padding bits of 0" (the empty
                // block of §7.2.1 without its last 4 octets); nothing else may.
                if self.padding_seen || input[0] != 0x00 {
                    return Err(InflateError::Invalid);
                }
                self.padding_seen = true;
                input = &input[1..];
                continue;
            }
            // One byte of room past the limit tells "exactly at the limit" from "over it".
            let room = INFLATE_STEP.min(limit.saturating_add(1).saturating_sub(out.len()));
            if room == 0 {
                return Err(InflateError::TooBig);
            }
            let start = out.len();
            out.resize(start + room, 0);
            let (in_before, out_before) = (self.decompress.total_in(), self.decompress.total_out());
            let status =
                self.decompress
                    .decompress(input, &mut out[start..], FlushDecompress::None);
            let consumed = (self.decompress.total_in() - in_before) as usize;
            let produced = (self.decompress.total_out() - out_before) as usize;
            out.truncate(start + produced);
            input = &input[consumed..];
            if out.len() > limit {
                return Err(InflateError::TooBig);
            }
            match status {
                Ok(Status::StreamEnd) => self.ended = true,
                Ok(Status::Ok) => {}
                // No progress possible: with output room left, the input needs more data
                // (the trailer arrives later); anything else is corrupt.
                Ok(Status::BufError) if consumed == 0 && produced == 0 => {
                    if input.is_empty() || produced < room {
                        return Ok(());
                    }
                    return Err(InflateError::Invalid);
                }
                Ok(Status::BufError) => {}
                Err(_) => return Err(InflateError::Invalid),
            }
            if consumed == 0 && produced == 0 {
                return Err(InflateError::Invalid);
            }
        }
        Ok(())
    }

    /// Ends a message: inflates the sync trailer and resets the context when the peer does not
    /// take it over.
    pub(crate) fn finish_message(
        &mut self,
        out: &mut BytesMut,
        limit: usize,
    ) -> Result<(), InflateError> {
        let result = if self.ended {
            Ok(())
        } else {
            self.inflate(&SYNC_TRAILER, out, limit)
        };
        if self.no_context_takeover || self.ended {
            self.decompress.reset(false);
            self.ended = false;
            self.padding_seen = false;
        }
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip(deflater: &mut Deflater, inflater: &mut Inflater, message: &[u8]) {
        let mut wire = Vec::new();
        deflater.compress(message, true, &mut wire);
        if !deflater.is_enabled() {
            assert_eq!(wire, message, "a disabled deflater passes messages through");
            return;
        }
        let mut out = BytesMut::new();
        inflater.inflate(&wire, &mut out, usize::MAX).unwrap();
        inflater.finish_message(&mut out, usize::MAX).unwrap();
        assert_eq!(&out[..], message);
    }

    #[test]
    fn rfc_7692_hello_example() {
        // §7.2.3.1: "Hello" compressed is c2 48 cd c9 c9 07 00 in one frame.
        let mut inflater = Inflater::new(15, false);
        let mut out = BytesMut::new();
        inflater
            .inflate(&[0xf2, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00], &mut out, 100)
            .unwrap();
        inflater.finish_message(&mut out, 100).unwrap();
        assert_eq!(&out[..], b"Hello");
        // §7.2.3.2: the second "Hello" with context takeover is f2 00 11 00 00.
        let mut deflater = Deflater::new(15, false, 6);
        let mut first = Vec::new();
        deflater.compress(b"Hello", true, &mut first);
        assert_eq!(first, [0xf2, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00]);
        let mut second = Vec::new();
        deflater.compress(b"Hello", true, &mut second);
        assert!(
            second.len() < first.len(),
            "context takeover shortens the repeat"
        );
    }

    #[test]
    fn round_trips_with_every_window_and_takeover() {
        let text = br#"{"type":"chat","room":"lobby","text":"hello hello hello"}"#.repeat(40);
        for bits in 8..=15 {
            for no_takeover in [false, true] {
                let mut deflater = Deflater::new(bits, no_takeover, 6);
                let mut inflater = Inflater::new(bits, no_takeover);
                for _ in 0..3 {
                    round_trip(&mut deflater, &mut inflater, &text);
                    round_trip(&mut deflater, &mut inflater, b"");
                }
            }
        }
    }

    #[test]
    fn fragments_compress_separately_and_inflate_as_one() {
        let mut deflater = Deflater::new(15, false, 6);
        let mut wire = Vec::new();
        deflater.compress(b"first part, ", false, &mut wire);
        deflater.compress(b"second part", true, &mut wire);
        let mut inflater = Inflater::new(15, false);
        let mut out = BytesMut::new();
        for byte in wire.chunks(1) {
            inflater.inflate(byte, &mut out, 1000).unwrap();
        }
        inflater.finish_message(&mut out, 1000).unwrap();
        assert_eq!(&out[..], b"first part, second part");
    }

    #[test]
    fn bomb_stops_at_the_limit() {
        let zeros = vec![0u8; 10 << 20];
        let mut deflater = Deflater::new(15, false, 9);
        let mut wire = Vec::new();
        deflater.compress(&zeros, true, &mut wire);
        assert!(wire.len() < 20 << 10, "{}", wire.len());
        let mut inflater = Inflater::new(15, false);
        let mut out = BytesMut::new();
        assert_eq!(
            inflater.inflate(&wire, &mut out, 1 << 20),
            Err(InflateError::TooBig)
        );
        assert!(out.len() <= (1 << 20) + 1);
        // The buffer grows by doubling: at most twice the limit is ever reserved.
        assert!(out.capacity() <= 2 << 20, "{}", out.capacity());
    }

    #[test]
    fn exactly_at_the_limit_is_accepted() {
        let data = vec![7u8; 5000];
        let mut deflater = Deflater::new(15, false, 6);
        let mut wire = Vec::new();
        deflater.compress(&data, true, &mut wire);
        let mut inflater = Inflater::new(15, false);
        let mut out = BytesMut::new();
        inflater.inflate(&wire, &mut out, 5000).unwrap();
        inflater.finish_message(&mut out, 5000).unwrap();
        assert_eq!(out.len(), 5000);
    }

    #[test]
    fn garbage_is_invalid() {
        let mut inflater = Inflater::new(15, false);
        let mut out = BytesMut::new();
        let result = inflater
            .inflate(&[0xff; 64], &mut out, 1 << 20)
            .and_then(|()| inflater.finish_message(&mut out, 1 << 20));
        assert_eq!(result, Err(InflateError::Invalid));
    }
}
