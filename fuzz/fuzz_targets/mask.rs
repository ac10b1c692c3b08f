//! `apply_mask` (word-at-a-time) equals `apply_mask_bytewise` at every offset 0..8; masking is
//! an involution; unmasking in two pieces equals unmasking at once.
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
});
