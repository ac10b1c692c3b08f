//! Payload masking ([RFC 6455 §5.3](https://www.rfc-editor.org/rfc/rfc6455#section-5.3)).
//!
//! The same XOR masks and unmasks. The fast path XORs 64-bit words over `chunks_exact_mut`,
//! which the compiler vectorises (SSE2 on any x86-64), without `unsafe`; at most seven single
//! bytes finish the tail. From [`ALIGN_FROM`] bytes on, it first masks the few
//! bytes before the next 16-byte boundary one by one, so that the vector loop never loads across
//! a cache line: misaligned payloads are then masked as fast as aligned ones (about 40% faster
//! than without the step, see `benches/README.md`). [`apply_mask_bytewise`] is the reference
//! the tests and the `mask` fuzz target compare the fast path with.

/// Length from which [`apply_mask`] aligns the start of its vector loop. Below it the few bytes
/// masked one by one cost more than the misaligned loads they avoid.
const ALIGN_FROM: usize = 4096;

/// Alignment the vector loop starts at: the width of an SSE2 register.
const VECTOR_ALIGN: usize = 16;

/// XORs `data` with the 4-byte `key`, as if `data` started `offset` bytes into the payload.
///
/// `offset` lets a payload that arrives in several reads be unmasked piece by piece.
pub fn apply_mask(data: &mut [u8], key: [u8; 4], offset: usize) {
    let key = rotate_key(key, offset);
    if data.len() >= ALIGN_FROM {
        return xor_aligned(data, key);
    }
    xor_words(data, key);
}

/// [`xor_words`] from the first 16-byte boundary on, after masking the bytes before it one by
/// one. Kept out of line: inlined, it changed how the small sizes' loop was compiled and made
/// it slower.
#[inline(never)]
fn xor_aligned(data: &mut [u8], key: [u8; 4]) {
    // `align_offset` may answer `usize::MAX` ("cannot align"): then everything is prefix.
    let head = data.as_ptr().align_offset(VECTOR_ALIGN).min(data.len());
    let (prefix, rest) = data.split_at_mut(head);
    apply_mask_bytewise(prefix, key, 0);
    xor_words(rest, rotate_key(key, head));
}

/// The key as seen from `offset` bytes into the payload: `key` rotated left by `offset % 4`
/// bytes. A `u32` rotation, which `[u8; 4]::rotate_left` (a call into the generic slice
/// rotation) was not compiled to.
#[inline(always)]
fn rotate_key(key: [u8; 4], offset: usize) -> [u8; 4] {
    // Byte i of the little-endian form is key[i]: shifting bytes towards index 0 is a right
    // rotation of the number.
    u32::from_le_bytes(key)
        .rotate_right(8 * (offset % 4) as u32)
        .to_le_bytes()
}

/// The word loop of [`apply_mask`], for data that starts at key phase 0.
#[inline(always)]
fn xor_words(data: &mut [u8], key: [u8; 4]) {
    let word = u64::from_ne_bytes([
        key[0], key[1], key[2], key[3], key[0], key[1], key[2], key[3],
    ]);
    let mut chunks = data.chunks_exact_mut(8);
    for chunk in &mut chunks {
        let mut bytes = [0u8; 8];
        bytes.copy_from_slice(chunk);
        chunk.copy_from_slice(&(u64::from_ne_bytes(bytes) ^ word).to_ne_bytes());
    }
    // Whole 8-byte chunks keep the key phase, so the tail starts at key[0]. (Masking a 4-byte
    // word of the tail at once measured slower at 1 KiB: it changes the loop's vectorisation.)
    for (i, byte) in chunks.into_remainder().iter_mut().enumerate() {
        *byte ^= key[i % 4];
    }
}

/// Byte-at-a-time reference implementation, used by tests as the oracle for [`apply_mask`].
pub fn apply_mask_bytewise(data: &mut [u8], key: [u8; 4], offset: usize) {
    for (i, byte) in data.iter_mut().enumerate() {
        *byte ^= key[(offset + i) % 4];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A small deterministic generator (xorshift64*), so failures reproduce.
    struct Rng(u64);

    impl Rng {
        fn next_u64(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
        }

        fn bytes(&mut self, len: usize) -> Vec<u8> {
            (0..len).map(|_| self.next_u64() as u8).collect()
        }

        fn key(&mut self) -> [u8; 4] {
            (self.next_u64() as u32).to_ne_bytes()
        }
    }

    /// Masks `data[start..]` both ways and compares; `start` shifts the slice's address so that
    /// every alignment relative to 8 and 16 bytes is covered.
    fn check(data: &[u8], start: usize, key: [u8; 4], offset: usize) {
        let mut fast = data.to_vec();
        let mut slow = data.to_vec();
        apply_mask(&mut fast[start..], key, offset);
        apply_mask_bytewise(&mut slow[start..], key, offset);
        assert_eq!(
            fast,
            slow,
            "len {} start {start} offset {offset} key {key:?}",
            data.len() - start
        );
    }

    #[test]
    fn rfc_example_hello() {
        // RFC 6455 §5.7: masked "Hello" with key 37 fa 21 3d.
        let mut data = *b"Hello";
        apply_mask(&mut data, [0x37, 0xfa, 0x21, 0x3d], 0);
        assert_eq!(data, [0x7f, 0x9f, 0x4d, 0x51, 0x58]);
    }

    #[test]
    fn fast_path_equals_bytewise_at_every_alignment_offset_and_length() {
        let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
        for len in 0..=300 {
            let data = rng.bytes(len + 16);
            for start in 0..16 {
                let key = rng.key();
                for offset in 0..8 {
                    check(&data[..start + len], start, key, offset);
                }
            }
        }
    }

    #[test]
    fn fast_path_equals_bytewise_on_large_buffers() {
        let mut rng = Rng(42);
        // Around the length where the alignment step starts, at every start address.
        for len in ALIGN_FROM - 17..ALIGN_FROM + 17 {
            let data = rng.bytes(len + 16);
            for start in 0..16 {
                check(&data[..start + len], start, rng.key(), start % 5);
            }
        }
        for len in [65_535, 65_536, 65_537, 1 << 20, (1 << 20) + 13] {
            let data = rng.bytes(len + 7);
            for (start, offset) in [(0, 0), (1, 3), (3, 1), (7, 2), (4, 4)] {
                check(&data[..start + len], start, rng.key(), offset);
            }
        }
    }

    #[test]
    fn key_rotation_matches_the_payload_offset() {
        let key = [1, 2, 3, 4];
        assert_eq!(rotate_key(key, 0), [1, 2, 3, 4]);
        assert_eq!(rotate_key(key, 1), [2, 3, 4, 1]);
        assert_eq!(rotate_key(key, 2), [3, 4, 1, 2]);
        assert_eq!(rotate_key(key, 7), [4, 1, 2, 3]);
    }

    #[test]
    fn masking_twice_restores_the_data() {
        let mut rng = Rng(7);
        let original = rng.bytes(1000);
        let key = rng.key();
        let mut data = original.clone();
        apply_mask(&mut data, key, 5);
        assert_ne!(data, original);
        apply_mask(&mut data, key, 5);
        assert_eq!(data, original);
    }

    #[test]
    fn split_unmasking_equals_whole() {
        let key = [9, 8, 7, 6];
        let original: Vec<u8> = (0..=255u8).cycle().take(300).collect();
        let mut whole = original.clone();
        apply_mask(&mut whole, key, 0);
        for split in 0..original.len() {
            let mut parts = original.clone();
            let (a, b) = parts.split_at_mut(split);
            apply_mask(a, key, 0);
            apply_mask(b, key, split);
            assert_eq!(parts, whole, "split at {split}");
        }
    }
}
