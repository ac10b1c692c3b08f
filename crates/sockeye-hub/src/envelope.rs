//! The envelope of a message between nodes on a byte-oriented backplane (Redis): its kind,
//! the node that published it, and the payload.

use bytes::Bytes;
use sockeye_proto::{Message, Utf8Bytes};

use crate::backplane::NodeId;

/// Encodes a data message for a backplane: one kind byte (`t` or `b`), the origin node id
/// (8 bytes, big-endian), then the payload.
pub(crate) fn encode_envelope(origin: NodeId, message: &Message) -> Option<Vec<u8>> {
    let kind = match message {
        Message::Text(_) => b't',
        Message::Binary(_) => b'b',
        Message::Ping(_) | Message::Pong(_) | Message::Close(_) => return None,
    };
    let payload = message.as_payload();
    let mut out = Vec::with_capacity(9 + payload.len());
    out.push(kind);
    out.extend_from_slice(&origin.to_be_bytes());
    out.extend_from_slice(payload);
    Some(out)
}

/// Decodes [`encode_envelope`]'s output: the origin and the message; `None` for anything
/// malformed (short, unknown kind, text that is not UTF-8).
pub(crate) fn decode_envelope(data: Bytes) -> Option<(NodeId, Message)> {
    if data.len() < 9 {
        return None;
    }
    let origin = NodeId::from_be_bytes(data[1..9].try_into().ok()?);
    let payload = data.slice(9..);
    let message = match data[0] {
        b't' => Message::Text(Utf8Bytes::try_from_bytes(payload).ok()?),
        b'b' => Message::Binary(payload),
        _ => return None,
    };
    Some((origin, message))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn envelopes_round_trip_and_reject_malformed_input() {
        for message in [
            Message::text("héllo"),
            Message::binary(vec![0, 1, 2]),
            Message::text(""),
        ] {
            let data = encode_envelope(42, &message).unwrap();
            assert_eq!(decode_envelope(Bytes::from(data)), Some((42, message)));
        }
        assert_eq!(encode_envelope(1, &Message::Ping(Bytes::new())), None);
        assert_eq!(decode_envelope(Bytes::from_static(b"t1234567")), None);
        assert_eq!(decode_envelope(Bytes::from_static(b"x12345678")), None);
        assert_eq!(
            decode_envelope(Bytes::from_static(b"t12345678\xff")),
            None,
            "invalid UTF-8"
        );
    }
}
