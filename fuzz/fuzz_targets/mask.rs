//! `apply_mask` (word-at-a-time) equals `apply_mask_bytewise` at every offset 0..8; masking is
//! an involution; unmasking in two pieces equals unmasking at once; a payload that starts at any
//! alignment inside its buffer and is tiled past the 4 KiB fast-path threshold (libFuzzer's
//! inputs stay under 4 KiB by default) masks as the byte-wise reference does.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sockeye_proto::frame::{apply_mask, apply_mask_bytewise};

fuzz_target!(|data: &[u8]| {
    if data.len() < 5 {
        return;
    }
    let key = [data[0], data[1], data[2], data[3]];
    let split_hint = usize::from(data[4]);
    let payload = &data[5..];
    for offset in 0..8 {
        let mut fast = payload.to_vec();
        let mut slow = payload.to_vec();
        apply_mask(&mut fast, key, offset);
        apply_mask_bytewise(&mut slow, key, offset);
        assert_eq!(fast, slow, "offset {offset}");
        // Independent definition (§5.3): j-th byte XOR key[(offset + j) mod 4].
        for (j, (&m, &o)) in fast.iter().zip(payload).enumerate() {
            assert_eq!(m, o ^ key[(offset + j) % 4], "offset {offset} byte {j}");
        }
        apply_mask(&mut fast, key, offset);
        assert_eq!(
            fast, payload,
            "masking twice is the identity (offset {offset})"
        );
    }
    let split = split_hint.min(payload.len());
    let mut whole = payload.to_vec();
    apply_mask(&mut whole, key, 0);
    let mut parts = payload.to_vec();
    let (a, b) = parts.split_at_mut(split);
    apply_mask(a, key, 0);
    apply_mask(b, key, split);
    assert_eq!(parts, whole, "split at {split}");
    // Misaligned start and large sizes: the fast path aligns payloads of 4 KiB and more.
    if !payload.is_empty() {
        let start = split_hint % 16;
        let repeat = 1 + (split_hint >> 4) * 512 / payload.len().max(1);
        let tiled: Vec<u8> = payload
            .iter()
            .copied()
            .cycle()
            .take(payload.len() * repeat)
            .collect();
        let mut fast = vec![0xA5; start];
        fast.extend_from_slice(&tiled);
        let mut slow = fast.clone();
        apply_mask(&mut fast[start..], key, split_hint);
        apply_mask_bytewise(&mut slow[start..], key, split_hint);
        assert_eq!(fast, slow, "start {start}, {} bytes", tiled.len());
    }
});
