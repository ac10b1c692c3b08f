//! Compression and decompression of message payloads
//! ([RFC 7692 §7.2](https://www.rfc-editor.org/rfc/rfc7692#section-7.2)), over flate2 with the
//! zlib-rs backend (raw DEFLATE with a configurable window).

use std::cell::RefCell;

use bytes::BytesMut;
use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress, Status};

/// The four bytes a sync flush ends with; removed before sending, restored before inflating
/// (§7.2.1, §7.2.2).
pub const SYNC_TRAILER: [u8; 4] = [0x00, 0x00, 0xFF, 0xFF];

/// Output produced per step of inflation; what bounds a step's memory beyond the limit.
const INFLATE_STEP: usize = 32 << 10;

/// Spare capacity of the message buffer worth inflating into without growing it first.
const MIN_INFLATE_ROOM: usize = 64;

/// Room of a message's first inflation step at least.
const FIRST_INFLATE_ROOM: usize = 1 << 10;

/// zlib's `memLevel`: the size of the hash table and of the buffer of symbols per block
/// (zlib's default, as Node's `zlib` and Python's `zlib` use).
pub(crate) const MEM_LEVEL: u8 = 8;

/// Idle compressors (and, separately, decompressors) kept per thread for the connections that
/// reset their context after every message. Each holds zlib's state (about 300 KB for a
/// compressor with a 32 KiB window, 40 KB for a decompressor), so a thread keeps at most this
/// many: one per parameter set in use, plus those of fragmented messages that ended.
pub(crate) const POOL_PER_THREAD: usize = 4;

/// The window every shared decompressor uses: it inflates any smaller window too (zlib-rs
/// does not enforce a smaller window when inflating), and resets without reallocating.
const SHARED_INFLATE_BITS: u8 = 15;

thread_local! {
    /// Compressors in their initial state, by parameters, for deflaters without context
    /// takeover; taken for one message, reset and given back at its end.
    static COMPRESSORS: RefCell<Vec<(CompressParams, Box<Compress>)>> =
        const { RefCell::new(Vec::new()) };
    /// Decompressors in their initial state for inflaters without context takeover. Boxed as
    /// the inflaters hold them, so that taking one and giving it back moves a pointer.
    #[allow(clippy::vec_box)]
    static DECOMPRESSORS: RefCell<Vec<Box<Decompress>>> = const { RefCell::new(Vec::new()) };
}

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
    fn new_compress(self) -> Box<Compress> {
        Box::new(Compress::new_with_window_bits(
            Compression::new(zlib_rs_level(self.level)),
            false,
            self.window_bits,
        ))
    }
}

/// The zlib-rs level that compresses at least as well as zlib at `level` (see
/// [`DeflateConfig::level`](crate::deflate::DeflateConfig::level)).
///
/// zlib-rs takes its levels from zlib-ng: level 1 is "quick" (static Huffman codes, no lazy
/// matching) and levels 3 to 6 are "medium", where zlib uses its lazy-matching `deflate_slow`
/// from level 4 on. On repetitive text the medium strategy finds much less: 1.2 MB of a
/// repeated JSON object compresses to 7,891 bytes at zlib-rs level 6 and to 3,675 at zlib's
/// (Python's and Node's zlib), up to 12 times more on HTML with a 1 KiB window. zlib-rs's level
/// 2 is zlib's level 1 (`deflate_fast`, same parameters) and its levels 7 to 9 are zlib's
/// (`deflate_slow`, same parameters); zlib's levels 2 to 6 are matched or beaten by level 7,
/// at about zlib's level-6 speed.
pub(crate) fn zlib_rs_level(level: u8) -> u32 {
    match level {
        0 => 0,
        1 => 2,
        2..=7 => 7,
        other => u32::from(other.min(9)),
    }
}

/// A compressor in its initial state for `params`: one of this thread's idle ones, or a new one.
fn take_compressor(params: CompressParams) -> Box<Compress> {
    COMPRESSORS
        .try_with(|pool| {
            let mut pool = pool.borrow_mut();
            let i = pool.iter().rposition(|(p, _)| *p == params)?;
            Some(pool.swap_remove(i).1)
        })
        .ok()
        .flatten()
        .unwrap_or_else(|| params.new_compress())
}

/// Resets `compress` and keeps it for this thread's next message with `params`, unless the
/// thread already keeps [`POOL_PER_THREAD`] (then it is freed).
fn give_back_compressor(params: CompressParams, mut compress: Box<Compress>) {
    compress.reset();
    let _ = COMPRESSORS.try_with(|pool| {
        let mut pool = pool.borrow_mut();
        if pool.len() == POOL_PER_THREAD {
            // The oldest goes: parameter sets in use come back often.
            pool.remove(0);
        }
        pool.push((params, compress));
    });
}

/// A decompressor in its initial state with a [`SHARED_INFLATE_BITS`] window.
fn take_decompressor() -> Box<Decompress> {
    DECOMPRESSORS
        .try_with(|pool| pool.borrow_mut().pop())
        .ok()
        .flatten()
        .unwrap_or_else(|| Box::new(Decompress::new_with_window_bits(false, SHARED_INFLATE_BITS)))
}

fn give_back_decompressor(mut decompress: Box<Decompress>) {
    decompress.reset(false);
    let _ = DECOMPRESSORS.try_with(|pool| {
        let mut pool = pool.borrow_mut();
        if pool.len() < POOL_PER_THREAD {
            pool.push(decompress);
        }
    });
}

/// Compresses `input` as one whole message from an empty context, appending to `out`: the bytes
/// a deflater with `params` and no context takeover produces for it.
pub(crate) fn compress_message(params: CompressParams, input: &[u8], out: &mut Vec<u8>) {
    let mut compress = take_compressor(params);
    run_compress(&mut compress, params, input, true, out);
    give_back_compressor(params, compress);
}

/// Appends the compressed form of `input` to `out`, ending in a sync flush; with `fin` the sync
/// trailer is removed (§7.2.1) and an empty result becomes the single octet 0x00 (§7.2.3.6).
fn run_compress(
    compress: &mut Compress,
    params: CompressParams,
    input: &[u8],
    fin: bool,
    out: &mut Vec<u8>,
) {
    let start = out.len();
    if params.level == 0 {
        // Stored blocks are cut where the output space ends: room for all of them at once
        // (a 5-byte header per 64 KiB block) keeps them as large as zlib makes them.
        out.reserve(input.len() + 5 * (input.len() / 0xFFFF + 1) + 64);
    }
    // The input without flushing, then one sync flush: the blocks are those of one call with
    // room for everything. (A sync flush per call when the output space ran out would end a
    // block there, and with stored blocks add an empty one per call.)
    let mut consumed = 0;
    while consumed < input.len() {
        out.reserve((input.len() - consumed) / 2 + 64);
        let before = compress.total_in();
        // Compression of in-memory data cannot fail; the status is always Ok.
        let _ = compress.compress_vec(&input[consumed..], out, FlushCompress::None);
        consumed += (compress.total_in() - before) as usize;
    }
    loop {
        // Room for what zlib still holds (up to a block's worth of symbols) and the flush.
        out.reserve(if out.len() == start {
            256
        } else {
            out.len() - start + 64
        });
        let _ = compress.compress_vec(&[], out, FlushCompress::Sync);
        // A sync flush is complete when it left output space unused.
        if out.len() < out.capacity() {
            break;
        }
    }
    if fin {
        if out[start..].ends_with(&SYNC_TRAILER) {
            out.truncate(out.len() - SYNC_TRAILER.len());
        }
        if out.len() == start {
            out.push(0x00);
        }
    }
}

/// Compresses messages for one direction of a connection.
///
/// zlib's state is allocated only while it is needed. Without context takeover, a message is
/// compressed with a compressor shared by the thread (reset after each message); a fragmented
/// message keeps one for itself from its first fragment to its last, since other connections
/// on the thread compress in between. With context takeover, the connection's own compressor
/// is allocated at its first compressed message and kept.
pub(crate) struct Deflater {
    /// `None` when messages cannot be compressed (an 8-bit window).
    params: Option<CompressParams>,
    no_context_takeover: bool,
    /// The connection's compressor: with context takeover, from the first compressed message
    /// on; without, during a fragmented message only.
    own: Option<Box<Compress>>,
}

impl std::fmt::Debug for Deflater {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Deflater")
            .field("params", &self.params)
            .field("no_context_takeover", &self.no_context_takeover)
            .field("allocated", &self.own.is_some())
            .finish()
    }
}

impl Deflater {
    /// A compressor with a `window_bits` LZ77 window. zlib cannot compress with a 256-byte
    /// window (8 bits), so with 8 every message is sent uncompressed, which RFC 7692 allows
    /// (the RSV1 bit is per message). Allocates nothing.
    pub(crate) fn new(window_bits: u8, no_context_takeover: bool, level: u32) -> Self {
        let params = (window_bits >= 9).then(|| CompressParams {
            level: level.min(9) as u8,
            window_bits: window_bits.min(15),
            mem_level: MEM_LEVEL,
        });
        Self {
            params,
            no_context_takeover,
            own: None,
        }
    }

    /// The parameters of a deflater that compresses every message from an empty context (no
    /// context takeover): its output for a message depends on these and the message only.
    pub(crate) fn shared_params(&self) -> Option<CompressParams> {
        self.params.filter(|_| self.no_context_takeover)
    }

    /// Whether messages can be compressed at all.
    pub(crate) fn is_enabled(&self) -> bool {
        self.params.is_some()
    }

    /// Whether this deflater holds zlib state of its own.
    #[cfg(test)]
    pub(crate) fn is_allocated(&self) -> bool {
        self.own.is_some()
    }

    /// Appends the compressed form of `input` to `out`. With `fin`, the message ends: the sync
    /// trailer is removed and, without context takeover, the context is reset.
    pub(crate) fn compress(&mut self, input: &[u8], fin: bool, out: &mut Vec<u8>) {
        let Some(params) = self.params else {
            out.extend_from_slice(input);
            return;
        };
        let mut compress = match self.own.take() {
            Some(own) => own,
            None if self.no_context_takeover => take_compressor(params),
            None => params.new_compress(),
        };
        run_compress(&mut compress, params, input, fin, out);
        if fin && self.no_context_takeover {
            give_back_compressor(params, compress);
        } else {
            self.own = Some(compress);
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
///
/// Like [`Deflater`], it holds zlib's state only while it is needed: without the peer's
/// context takeover, a decompressor shared by the thread is taken at a message's first
/// compressed bytes and given back (reset) at its end, so a message whose frames or bytes
/// arrive over several reads, while other connections on the thread inflate theirs, keeps its
/// own until it is complete; with context takeover, the connection's own decompressor is
/// allocated at the first compressed message and kept.
pub(crate) struct Inflater {
    window_bits: u8,
    no_context_takeover: bool,
    /// The connection's decompressor: with context takeover, from the first compressed message
    /// on; without, from the first compressed bytes of a message to its end.
    own: Option<Box<Decompress>>,
    /// A block with BFINAL was seen; only the padding octet may follow.
    ended: bool,
    /// The octet that follows a final block (§7.2.3.4) was seen.
    padding_seen: bool,
}

impl std::fmt::Debug for Inflater {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Inflater")
            .field("no_context_takeover", &self.no_context_takeover)
            .field("allocated", &self.own.is_some())
            .finish()
    }
}

impl Inflater {
    /// A decompressor for a peer using at most a `window_bits` window. Allocates nothing.
    pub(crate) fn new(window_bits: u8, no_context_takeover: bool) -> Self {
        Self {
            // zlib-rs takes 9..=15; a 9-bit window decodes data made with an 8-bit one.
            window_bits: window_bits.clamp(9, 15),
            no_context_takeover,
            own: None,
            ended: false,
            padding_seen: false,
        }
    }

    /// Whether this inflater holds zlib state of its own.
    #[cfg(test)]
    pub(crate) fn is_allocated(&self) -> bool {
        self.own.is_some()
    }

    /// Inflates `input`, appending to `out`, never letting `out` grow past `limit` bytes.
    pub(crate) fn inflate(
        &mut self,
        input: &[u8],
        out: &mut BytesMut,
        limit: usize,
    ) -> Result<(), InflateError> {
        let mut decompress = match self.own.take() {
            Some(own) => own,
            None if self.no_context_takeover => take_decompressor(),
            None => Box::new(Decompress::new_with_window_bits(false, self.window_bits)),
        };
        let result = self.inflate_with(&mut decompress, input, out, limit);
        // Kept until the message ends (`finish_message`), or with the connection once it fails.
        self.own = Some(decompress);
        result
    }

    fn inflate_with(
        &mut self,
        decompress: &mut Decompress,
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
            // Room for this step: the spare capacity when there is some, else a guess from
            // the input that grows the buffer geometrically (a lone small message keeps a
            // buffer of about its size, not a whole step); one byte of room past the limit
            // tells "exactly at the limit" from "over it".
            let spare = out.capacity() - out.len();
            let wanted = if spare >= MIN_INFLATE_ROOM {
                spare
            } else {
                out.len()
                    .max(input.len().saturating_mul(4))
                    .max(FIRST_INFLATE_ROOM)
            };
            let room = wanted
                .min(INFLATE_STEP)
                .min(limit.saturating_add(1).saturating_sub(out.len()));
            if room == 0 {
                return Err(InflateError::TooBig);
            }
            let start = out.len();
            out.resize(start + room, 0);
            let (in_before, out_before) = (decompress.total_in(), decompress.total_out());
            let status = decompress.decompress(input, &mut out[start..], FlushDecompress::None);
            let consumed = (decompress.total_in() - in_before) as usize;
            let produced = (decompress.total_out() - out_before) as usize;
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
    /// take it over (giving a shared decompressor back to the thread).
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
        if self.no_context_takeover {
            // A decompressor that failed is dropped, not shared: its state is the stream's.
            if let Some(own) = self.own.take() {
                if result.is_ok() {
                    give_back_decompressor(own);
                }
            }
        } else if self.ended {
            if let Some(own) = self.own.as_mut() {
                own.reset(false);
            }
        }
        if self.no_context_takeover || self.ended {
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

    fn inflate_all(inflater: &mut Inflater, pieces: &[&[u8]]) -> Vec<u8> {
        let mut out = BytesMut::new();
        for piece in pieces {
            inflater.inflate(piece, &mut out, usize::MAX).unwrap();
        }
        inflater.finish_message(&mut out, usize::MAX).unwrap();
        out.to_vec()
    }

    #[test]
    fn state_is_allocated_only_while_used() {
        let text = b"allocated only while used, ".repeat(50);
        for no_takeover in [false, true] {
            let mut deflater = Deflater::new(15, no_takeover, 6);
            let mut inflater = Inflater::new(15, no_takeover);
            assert!(!deflater.is_allocated() && !inflater.is_allocated());
            let mut wire = Vec::new();
            deflater.compress(&text, true, &mut wire);
            // With context takeover the state is kept from the first message on.
            assert_eq!(deflater.is_allocated(), !no_takeover);
            let mut first = Vec::new();
            deflater.compress(&text[..100], false, &mut first);
            assert!(deflater.is_allocated(), "held during a fragmented message");
            deflater.compress(&text[100..], true, &mut first);
            assert_eq!(deflater.is_allocated(), !no_takeover);

            let mut out = BytesMut::new();
            inflater.inflate(&wire[..5], &mut out, usize::MAX).unwrap();
            assert!(
                inflater.is_allocated(),
                "held while a message is incomplete"
            );
            inflater.inflate(&wire[5..], &mut out, usize::MAX).unwrap();
            inflater.finish_message(&mut out, usize::MAX).unwrap();
            assert_eq!(&out[..], &text[..]);
            assert_eq!(inflater.is_allocated(), !no_takeover);
            assert_eq!(inflate_all(&mut inflater, &[&first]), text);
        }
    }

    #[test]
    fn interleaved_messages_on_one_thread_keep_their_own_state() {
        // Connections without context takeover share the thread's zlib state between messages;
        // a message still in progress keeps its own while others compress and inflate theirs.
        let a_text = b"connection a sends this in two fragments; ".repeat(40);
        let b_text = b"connection b sends whole messages meanwhile. ".repeat(40);
        let (mut a, mut b) = (Deflater::new(15, true, 6), Deflater::new(15, true, 6));
        let mut a_wire = Vec::new();
        a.compress(&a_text[..700], false, &mut a_wire);
        let mut b_wires = Vec::new();
        for _ in 0..3 {
            let mut wire = Vec::new();
            b.compress(&b_text, true, &mut wire);
            b_wires.push(wire);
        }
        a.compress(&a_text[700..], true, &mut a_wire);
        // The same bytes as a deflater that had the thread to itself.
        let mut alone = Vec::new();
        let mut solo = Deflater {
            params: a.params,
            no_context_takeover: true,
            own: a.params.map(CompressParams::new_compress),
        };
        solo.compress(&a_text[..700], false, &mut alone);
        solo.compress(&a_text[700..], true, &mut alone);
        assert_eq!(a_wire, alone);
        assert!(b_wires.windows(2).all(|w| w[0] == w[1]));

        let (mut a_in, mut b_in) = (Inflater::new(15, true), Inflater::new(15, true));
        let mut a_out = BytesMut::new();
        let half = a_wire.len() / 2;
        a_in.inflate(&a_wire[..half], &mut a_out, usize::MAX)
            .unwrap();
        for wire in &b_wires {
            assert_eq!(inflate_all(&mut b_in, &[&wire[..3], &wire[3..]]), b_text);
        }
        a_in.inflate(&a_wire[half..], &mut a_out, usize::MAX)
            .unwrap();
        a_in.finish_message(&mut a_out, usize::MAX).unwrap();
        assert_eq!(&a_out[..], &a_text[..]);
    }

    #[test]
    fn each_thread_keeps_a_bounded_pool() {
        for level in 0..=9 {
            for bits in [9, 12, 15] {
                let mut deflater = Deflater::new(bits, true, level);
                deflater.compress(b"pooled", true, &mut Vec::new());
            }
        }
        let mut inflaters: Vec<Inflater> = (0..10).map(|_| Inflater::new(15, true)).collect();
        let mut wire = Vec::new();
        Deflater::new(15, true, 6).compress(b"pooled", true, &mut wire);
        // All in progress at once, then all finished: the pool keeps a few of them.
        let mut outs: Vec<BytesMut> = inflaters.iter().map(|_| BytesMut::new()).collect();
        for (inflater, out) in inflaters.iter_mut().zip(&mut outs) {
            inflater.inflate(&wire, out, 100).unwrap();
        }
        for (inflater, out) in inflaters.iter_mut().zip(&mut outs) {
            inflater.finish_message(out, 100).unwrap();
            assert_eq!(&out[..], b"pooled");
        }
        assert!(COMPRESSORS.with(|p| p.borrow().len()) <= POOL_PER_THREAD);
        assert!(DECOMPRESSORS.with(|p| p.borrow().len()) <= POOL_PER_THREAD);
    }

    #[test]
    fn a_failed_message_does_not_return_its_state() {
        let mut inflater = Inflater::new(15, true);
        let mut out = BytesMut::new();
        let result = inflater
            .inflate(&[0xff; 64], &mut out, 1 << 20)
            .and_then(|()| inflater.finish_message(&mut out, 1 << 20));
        assert_eq!(result, Err(InflateError::Invalid));
        // The next message on this thread inflates from a clean state.
        let mut wire = Vec::new();
        Deflater::new(15, true, 6).compress(b"clean", true, &mut wire);
        assert_eq!(
            inflate_all(&mut Inflater::new(15, true), &[&wire]),
            b"clean"
        );
    }

    /// Inputs of the kinds messages carry, from very repetitive to incompressible.
    fn corpus() -> Vec<(&'static str, Vec<u8>)> {
        let mut rng = 0x2545_f491_4f6c_dd1d_u64;
        let mut next = move || {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            rng
        };
        let words = ["hello", "world", "ok", "see", "you", "soon", "lol", "fine"];
        let chat: String = (0..1000)
            .map(|i| {
                let text: Vec<&str> = (0..2 + next() % 8)
                    .map(|_| words[(next() % 8) as usize])
                    .collect();
                format!(
                    r#"{{"type":"chat","user":"user{}","seq":{i},"text":"{}"}}"#,
                    next() % 5,
                    text.join(" ")
                )
            })
            .collect();
        let ticker: String = (0..2000)
            .map(|i| format!(r#"{{"symbol":"ACME","price":{},"seq":{i}}}"#, 100 + i % 37))
            .collect();
        vec![
            (
                "repetitive json",
                br#"{"type":"chat","room":"lobby","text":"hello hello hello"}"#.repeat(2000),
            ),
            (
                "repetitive words",
                b"the quick brown fox jumps over the lazy dog ".repeat(2000),
            ),
            (
                "repetitive html",
                b"<div class=\"row\"><span class=\"cell\">value</span></div>\n".repeat(2000),
            ),
            ("repetitive byte", vec![b'a'; 100_000]),
            ("chat", chat.into_bytes()),
            ("ticker", ticker.into_bytes()),
            (
                "1 KiB text",
                b"Lorem ipsum dolor sit amet, consectetur adipiscing elit. ".repeat(18)[..1024]
                    .to_vec(),
            ),
            (
                "small json",
                br#"{"type":"chat","room":"lobby","text":"hi"}"#.to_vec(),
            ),
            ("noise", (0..20_000).map(|_| next() as u8).collect()),
        ]
    }

    /// flate2 with the zlib-rs backend straight, as any crate would use it: `level`, a
    /// `window_bits` window, memLevel 8 (flate2's), one sync flush, the trailer removed.
    fn flate2_len(level: u32, window_bits: u8, input: &[u8]) -> usize {
        let mut compress =
            Compress::new_with_window_bits(Compression::new(level), false, window_bits);
        let mut out = Vec::with_capacity(input.len() + input.len() / 10 + 1024);
        compress
            .compress_vec(input, &mut out, FlushCompress::Sync)
            .unwrap();
        assert!(out.ends_with(&SYNC_TRAILER));
        out.len() - SYNC_TRAILER.len()
    }

    #[test]
    fn output_is_no_larger_than_zlibs_at_the_same_level_and_window() {
        for (name, input) in corpus() {
            for bits in [9, 10, 15] {
                let best = flate2_len(9, bits, &input);
                for level in 0..=9u32 {
                    let mut deflater = Deflater::new(bits, true, level);
                    let mut wire = Vec::new();
                    deflater.compress(&input, true, &mut wire);
                    let what = format!("{name}, level {level}, window {bits}");
                    // Exactly flate2/zlib-rs at the level documented for `level`: nothing
                    // added by how messages are flushed and framed.
                    let mapped = flate2_len(zlib_rs_level(level as u8), bits, &input);
                    assert_eq!(wire.len(), mapped.max(1), "{what}");
                    // Never worse than flate2/zlib-rs at the same level number (a byte or a
                    // hundredth either way on tiny or noisy inputs)...
                    let same = flate2_len(level, bits, &input);
                    assert!(
                        wire.len() <= same + same / 100 + 2,
                        "{what}: {} bytes, zlib-rs {same}",
                        wire.len()
                    );
                    // ...and from level 2 on, where zlib matches lazily or repeats long
                    // matches, within 2% of the best zlib-rs does, as zlib at level 6 is on
                    // repetitive text (zlib-rs's own levels 3-6 were up to twice as large here,
                    // and up to 12 times with a 1 KiB window).
                    if level >= 2 && name.starts_with("repetitive") {
                        assert!(
                            wire.len() <= best + best / 50 + 2,
                            "{what}: {} bytes, zlib-rs level 9: {best}",
                            wire.len()
                        );
                    }
                }
            }
        }
    }
}
