//! `FrameHeader::parse`: an accepted header re-encodes byte for byte (§5.2 minimal length);
//! the parse is decided by the header bytes alone and every shorter prefix asks for more.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sockeye_proto::frame::FrameHeader;

fuzz_target!(|data: &[u8]| {
    match FrameHeader::parse(data) {
        Ok(Some((header, used))) => {
            assert!(
                (2..=14).contains(&used) && used <= data.len(),
                "used {used}"
            );
            let mut out = Vec::new();
            header.encode(&mut out);
            assert_eq!(out, data[..used], "accepted header must round-trip");
            assert_eq!(header.encoded_len(), used, "encoded_len");
            assert!(header.payload_len >> 63 == 0, "length high bit");
            // Independent reading of the fields (§5.2).
            assert_eq!(header.fin, data[0] & 0x80 != 0);
            assert_eq!(
                [header.rsv1, header.rsv2, header.rsv3],
                [
                    data[0] & 0x40 != 0,
                    data[0] & 0x20 != 0,
                    data[0] & 0x10 != 0
                ]
            );
            assert_eq!(header.opcode.as_u8(), data[0] & 0x0F);
            assert_eq!(header.mask.is_some(), data[1] & 0x80 != 0);
            assert_eq!(FrameHeader::parse(&data[..used]), Ok(Some((header, used))));
            for k in 0..used {
                assert_eq!(
                    FrameHeader::parse(&data[..k]),
                    Ok(None),
                    "prefix of {k} bytes"
                );
            }
        }
        Ok(None) => {
            // Too short: at most 13 bytes, and no reserved opcode was let through.
            assert!(data.len() < 14, "{} bytes and still incomplete", data.len());
            if let Some(&b0) = data.first() {
                if data.len() >= 2 {
                    assert!(
                        !matches!(b0 & 0x0F, 3..=7 | 11..=15),
                        "reserved opcode accepted as incomplete"
                    );
                }
            }
        }
        Err(_) => {
            // A rejected header stays rejected whatever follows it.
            let mut longer = data.to_vec();
            longer.extend_from_slice(&[0u8; 14]);
            assert!(
                FrameHeader::parse(&longer).is_err(),
                "error depends on later bytes"
            );
        }
    }
});
