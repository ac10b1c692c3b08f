//! Outgoing frames: encoding, client masking
//! ([RFC 6455 §5.1](https://www.rfc-editor.org/rfc/rfc6455#section-5.1),
//! [§5.3](https://www.rfc-editor.org/rfc/rfc6455#section-5.3)), fragmentation
//! ([§5.4](https://www.rfc-editor.org/rfc/rfc6455#section-5.4)), control frames and owed pongs
//! ([§5.5](https://www.rfc-editor.org/rfc/rfc6455#section-5.5)), compression
//! ([RFC 7692 §7.2.1](https://www.rfc-editor.org/rfc/rfc7692#section-7.2.1)) and shared payloads
//! handed out without a copy.

use std::collections::VecDeque;

use bytes::Bytes;

use super::{Connection, Deflate, Role, SCRATCH_KEEP};
use crate::close_code::{CloseCode, MAX_CLOSE_REASON};
use crate::error::SendError;
use crate::frame::{apply_mask, FrameHeader, OpCode, MAX_CONTROL_PAYLOAD};
use crate::message::DataKind;

/// Supplies client masking keys. RFC 6455 §5.3: "The masking key MUST be derived from a strong
/// source of entropy"; production callers use a CSPRNG, tests a fixed key.
pub trait MaskSource: Send {
    /// A fresh 4-byte masking key.
    fn next_mask(&mut self) -> [u8; 4];
}

impl<F: FnMut() -> [u8; 4] + Send> MaskSource for F {
    fn next_mask(&mut self) -> [u8; 4] {
        self()
    }
}

/// Pongs owed at once; beyond this a ping flood drops the oldest (RFC 6455 §5.5.3 allows
/// answering only the most recent ping).
pub const MAX_PENDING_PONGS: usize = 16;

/// Payloads from this size on are queued by [`Connection::send_shared`] without a copy (when
/// they need no masking or compression): below it, copying the payload next to its header costs
/// less than a second segment in the write.
pub const SHARE_THRESHOLD: usize = 16 << 10;

/// The bytes waiting for [`Connection::poll_transmit`], and what is needed to encode more.
pub(super) struct Outgoing {
    /// Client masking keys; `None` for a server, whose frames are never masked (§5.1).
    masks: Option<Box<dyn MaskSource>>,
    /// Encoded frames.
    pub(super) buf: Vec<u8>,
    /// Payloads queued by [`send_shared`](Connection::send_shared) without a copy, in order:
    /// each goes on the wire between `buf[..position]` and `buf[position..]`.
    /// Boxed and created on first use: a connection lives inline in the stream, idle or not.
    #[expect(clippy::box_collection, reason = "8 bytes inline instead of 32")]
    shared: Option<Box<VecDeque<(usize, Bytes)>>>,
    /// Pongs owed, written at the next `poll_transmit` (at most [`MAX_PENDING_PONGS`]). Empty
    /// once a close frame is written: that writes them first, and none are owed after it.
    pongs: VecDeque<Bytes>,
    /// Kind of the fragmented message being sent, if any.
    sending: Option<DataKind>,
    /// Whether the fragmented message being sent is compressed.
    sending_compressed: bool,
}

impl Outgoing {
    pub(super) fn new(role: Role, masks: Box<dyn MaskSource>) -> Self {
        Self {
            masks: match role {
                Role::Client => Some(masks),
                Role::Server => None,
            },
            buf: Vec::new(),
            shared: None,
            pongs: VecDeque::new(),
            sending: None,
            sending_compressed: false,
        }
    }

    pub(super) fn buffered_amount(&self) -> usize {
        self.buf.len()
            + self
                .shared
                .iter()
                .flat_map(|queue| queue.iter())
                .map(|(_, p)| p.len())
                .sum::<usize>()
            + self.pongs.iter().map(|p| p.len() + 2).sum::<usize>()
    }

    /// Owes a pong for a ping just received (§5.5.2, §5.5.3).
    pub(super) fn owe_pong(&mut self, payload: Bytes) {
        if self.pongs.len() == MAX_PENDING_PONGS {
            self.pongs.pop_front();
        }
        self.pongs.push_back(payload);
    }

    /// Drops everything not yet taken (an abort).
    pub(super) fn clear(&mut self) {
        self.buf.clear();
        self.shared = None;
        self.pongs.clear();
    }

    /// Appends everything queued to `out`, shared payloads copied in place; false when nothing
    /// was queued.
    pub(super) fn transmit(&mut self, out: &mut Vec<u8>) -> bool {
        self.write_pongs();
        if let Some(shared) = self.shared.take() {
            // Shared payloads are copied in place here; `transmit_segments` avoids that.
            out.reserve(self.buffered_amount());
            let mut written = 0;
            for (position, payload) in *shared {
                out.extend_from_slice(&self.buf[written..position]);
                out.extend_from_slice(&payload);
                written = position;
            }
            out.extend_from_slice(&self.buf[written..]);
            self.buf.clear();
            return true;
        }
        if self.buf.is_empty() {
            return false;
        }
        self.append_buf(out);
        true
    }

    /// Appends the encoded frames to `out` and the shared payloads to `shared`, positioned in
    /// `out` (see [`Connection::poll_transmit_segments`]); false, with nothing taken but the
    /// pongs written, when no shared payload is queued.
    pub(super) fn transmit_segments(
        &mut self,
        out: &mut Vec<u8>,
        shared: &mut impl Extend<(usize, Bytes)>,
    ) -> bool {
        self.write_pongs();
        let Some(queue) = self.shared.take() else {
            return false;
        };
        let base = out.len();
        shared.extend(
            queue
                .into_iter()
                .map(|(position, payload)| (base + position, payload)),
        );
        self.append_buf(out);
        true
    }

    fn append_buf(&mut self, out: &mut Vec<u8>) {
        if out.is_empty() {
            std::mem::swap(out, &mut self.buf);
        } else {
            out.append(&mut self.buf);
        }
    }

    fn write_pongs(&mut self) {
        while let Some(payload) = self.pongs.pop_front() {
            self.write_frame(OpCode::Pong, true, &payload);
        }
    }

    /// Writes a close frame (§5.5.1): `code` and `reason`, cut to [`MAX_CLOSE_REASON`] bytes on
    /// a character boundary, or an empty body. The caller records that it was sent.
    pub(super) fn write_close(&mut self, code: Option<CloseCode>, reason: &str) {
        // Pongs owed for pings received before this close go out first.
        self.write_pongs();
        let mut payload = [0u8; MAX_CONTROL_PAYLOAD];
        let len = match code {
            Some(code) => {
                payload[..2].copy_from_slice(&code.0.to_be_bytes());
                let reason = truncate_utf8(reason, MAX_CLOSE_REASON);
                payload[2..2 + reason.len()].copy_from_slice(reason.as_bytes());
                2 + reason.len()
            }
            None => 0,
        };
        self.write_frame(OpCode::Close, true, &payload[..len]);
    }

    /// Writes a data frame, compressing its payload when `compress` (RSV1 goes on the first
    /// frame of the message only, §6.1 of RFC 7692).
    fn write_data(
        &mut self,
        deflate: Option<&mut Deflate>,
        opcode: OpCode,
        fin: bool,
        compress: bool,
        payload: &[u8],
    ) {
        match deflate {
            Some(deflate) if compress => {
                let mut scratch = std::mem::take(&mut deflate.scratch);
                scratch.clear();
                deflate.deflater.compress(payload, fin, &mut scratch);
                let rsv1 = opcode != OpCode::Continuation;
                self.write_frame_with(opcode, fin, rsv1, &scratch);
                if scratch.capacity() <= SCRATCH_KEEP {
                    deflate.scratch = scratch;
                }
            }
            _ => self.write_frame(opcode, fin, payload),
        }
    }

    fn write_frame(&mut self, opcode: OpCode, fin: bool, payload: &[u8]) {
        self.write_frame_with(opcode, fin, false, payload);
    }

    fn write_frame_with(&mut self, opcode: OpCode, fin: bool, rsv1: bool, payload: &[u8]) {
        let mut header = FrameHeader::new(opcode, payload.len() as u64);
        header.fin = fin;
        header.rsv1 = rsv1;
        if let Some(masks) = &mut self.masks {
            header.mask = Some(masks.next_mask());
        }
        self.buf.reserve(header.encoded_len() + payload.len());
        header.encode(&mut self.buf);
        let start = self.buf.len();
        self.buf.extend_from_slice(payload);
        if let Some(key) = header.mask {
            apply_mask(&mut self.buf[start..], key, 0);
        }
    }
}

impl Connection {
    /// Queues a whole message as one frame, like [`send`](Self::send), taking the payload as
    /// shared [`Bytes`]. When the frame needs neither masking (a server's) nor compression and
    /// the payload has at least [`SHARE_THRESHOLD`] bytes, only the header is encoded and the
    /// queue keeps the payload itself, which
    /// [`poll_transmit_segments`](Self::poll_transmit_segments) hands out without a copy;
    /// otherwise this is [`send`](Self::send).
    ///
    /// # Errors
    ///
    /// As [`send`](Self::send).
    pub fn send_shared(&mut self, kind: DataKind, payload: Bytes) -> Result<(), SendError> {
        if payload.len() < SHARE_THRESHOLD
            || self.out.masks.is_some()
            || self.should_compress(payload.len())
        {
            return self.send(kind, &payload);
        }
        self.check_open()?;
        if self.out.sending.is_some() {
            return Err(SendError::FragmentInProgress);
        }
        FrameHeader::new(opcode_of(kind), payload.len() as u64).encode(&mut self.out.buf);
        let position = self.out.buf.len();
        self.out
            .shared
            .get_or_insert_with(Box::default)
            .push_back((position, payload));
        Ok(())
    }

    /// Queues a whole message as one frame.
    ///
    /// # Errors
    ///
    /// [`SendError::Closed`] after a close frame was sent, [`SendError::FragmentInProgress`] while
    /// a message started with [`send_fragment`](Self::send_fragment) is unfinished.
    pub fn send(&mut self, kind: DataKind, payload: &[u8]) -> Result<(), SendError> {
        self.check_open()?;
        if self.out.sending.is_some() {
            return Err(SendError::FragmentInProgress);
        }
        let compress = self.should_compress(payload.len());
        self.out.write_data(
            self.deflate.as_deref_mut(),
            opcode_of(kind),
            true,
            compress,
            payload,
        );
        Ok(())
    }

    fn should_compress(&self, len: usize) -> bool {
        self.deflate.as_deref().is_some_and(|d| d.compresses(len))
    }

    /// Queues one fragment of a message (§5.4). The first call's `kind` sets the message's type;
    /// later calls must pass the same `kind`; `fin` ends the message. Control frames may be sent
    /// between fragments.
    ///
    /// # Errors
    ///
    /// [`SendError::Closed`] after a close frame was sent, [`SendError::FragmentInProgress`] when
    /// `kind` differs from the message in progress.
    pub fn send_fragment(
        &mut self,
        kind: DataKind,
        payload: &[u8],
        fin: bool,
    ) -> Result<(), SendError> {
        self.check_open()?;
        let opcode = match self.out.sending {
            None => {
                self.out.sending_compressed = self.should_compress(payload.len());
                opcode_of(kind)
            }
            Some(current) if current == kind => OpCode::Continuation,
            Some(_) => return Err(SendError::FragmentInProgress),
        };
        self.out.sending = if fin { None } else { Some(kind) };
        let compress = self.out.sending_compressed;
        self.out
            .write_data(self.deflate.as_deref_mut(), opcode, fin, compress, payload);
        Ok(())
    }

    /// Queues a ping.
    ///
    /// # Errors
    ///
    /// [`SendError::Closed`] after a close frame was sent, [`SendError::ControlFrameTooBig`] for a
    /// payload over 125 bytes.
    pub fn ping(&mut self, payload: &[u8]) -> Result<(), SendError> {
        self.send_control(OpCode::Ping, payload)
    }

    /// Queues an unsolicited pong (a unidirectional heartbeat, §5.5.3).
    ///
    /// # Errors
    ///
    /// As [`ping`](Self::ping).
    pub fn pong(&mut self, payload: &[u8]) -> Result<(), SendError> {
        self.send_control(OpCode::Pong, payload)
    }

    fn send_control(&mut self, opcode: OpCode, payload: &[u8]) -> Result<(), SendError> {
        self.check_open()?;
        if payload.len() > MAX_CONTROL_PAYLOAD {
            return Err(SendError::ControlFrameTooBig);
        }
        self.out.write_frame(opcode, true, payload);
        Ok(())
    }
}

fn opcode_of(kind: DataKind) -> OpCode {
    match kind {
        DataKind::Text => OpCode::Text,
        DataKind::Binary => OpCode::Binary,
    }
}

/// The longest prefix of `s` of at most `max` bytes that ends on a character boundary.
fn truncate_utf8(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::{truncate_utf8, SHARE_THRESHOLD};
    use crate::close_code::CloseCode;
    use crate::config::Config;
    use crate::deflate::{DeflateConfig, DeflateParams};
    use crate::error::SendError;
    use crate::message::DataKind;
    use crate::{Connection, Role, Transmit};

    fn server() -> Connection {
        Connection::new(Role::Server, Config::default(), Box::new(|| [0u8; 4]))
    }

    /// The wire bytes of `out` with each shared payload put in at its position.
    fn splice(out: &[u8], shared: &[(usize, Bytes)]) -> Vec<u8> {
        let mut wire = Vec::new();
        let mut written = 0;
        for (position, payload) in shared {
            assert!(*position >= written && *position <= out.len(), "{position}");
            wire.extend_from_slice(&out[written..*position]);
            wire.extend_from_slice(payload);
            written = *position;
        }
        wire.extend_from_slice(&out[written..]);
        wire
    }

    /// A mix of small and large messages and control frames, sent through `send_shared` on one
    /// connection and through `send` on another.
    fn send_mix(conn: &mut Connection, shared: bool, payloads: &[Bytes]) {
        for (i, payload) in payloads.iter().enumerate() {
            let kind = if i % 2 == 0 {
                DataKind::Binary
            } else {
                DataKind::Text
            };
            if shared {
                conn.send_shared(kind, payload.clone()).unwrap();
            } else {
                conn.send(kind, payload).unwrap();
            }
            conn.ping(&[i as u8]).unwrap();
        }
        conn.close(CloseCode::NORMAL, "bye").unwrap();
    }

    fn mix() -> Vec<Bytes> {
        [
            10,
            SHARE_THRESHOLD,
            200,
            SHARE_THRESHOLD - 1,
            70_000,
            3 << 20,
            0,
        ]
        .iter()
        .enumerate()
        .map(|(i, &len)| Bytes::from(vec![b'a' + i as u8; len]))
        .collect()
    }

    #[test]
    fn shared_payloads_go_out_uncopied_and_in_order() {
        let payloads = mix();
        let mut expected = Vec::new();
        let mut plain = server();
        send_mix(&mut plain, false, &payloads);
        assert_eq!(plain.poll_transmit(&mut expected), Transmit::Bytes);

        let mut conn = server();
        send_mix(&mut conn, true, &payloads);
        assert_eq!(conn.buffered_amount(), expected.len());
        // Something already in the caller's buffer: positions count from its start.
        let mut out = b"xyz".to_vec();
        let mut shared = Vec::new();
        assert_eq!(
            conn.poll_transmit_segments(&mut out, &mut shared),
            Transmit::Bytes
        );
        assert_eq!(conn.buffered_amount(), 0);
        // The three payloads of at least SHARE_THRESHOLD bytes, the very allocations given.
        let large: Vec<&Bytes> = payloads
            .iter()
            .filter(|p| p.len() >= SHARE_THRESHOLD)
            .collect();
        assert_eq!(shared.len(), large.len());
        for ((_, got), given) in shared.iter().zip(&large) {
            assert_eq!(got.as_ptr(), given.as_ptr());
            assert_eq!(got.len(), given.len());
        }
        let wire = splice(&out, &shared);
        assert_eq!(&wire[..3], b"xyz");
        assert_eq!(wire[3..], expected[..]);
        assert_eq!(
            conn.poll_transmit_segments(&mut out, &mut shared),
            Transmit::Idle
        );
    }

    #[test]
    fn plain_poll_transmit_copies_shared_payloads_in_place() {
        let payloads = mix();
        let mut expected = Vec::new();
        let mut plain = server();
        send_mix(&mut plain, false, &payloads);
        let _ = plain.poll_transmit(&mut expected);
        let mut conn = server();
        send_mix(&mut conn, true, &payloads);
        let mut out = b"xyz".to_vec();
        assert_eq!(conn.poll_transmit(&mut out), Transmit::Bytes);
        assert_eq!(out[3..], expected[..]);
        assert_eq!(conn.buffered_amount(), 0);
    }

    #[test]
    fn shared_payloads_survive_transmits_in_between() {
        // A pong owed (written at the next transmit) and frames queued after a first transmit.
        let big = Bytes::from(vec![9u8; SHARE_THRESHOLD * 2]);
        let mut conn = server();
        conn.handle_bytes(&[0x89, 0x81, 0, 0, 0, 0, b'q']);
        conn.send_shared(DataKind::Binary, big.clone()).unwrap();
        let (mut out, mut shared) = (Vec::new(), Vec::new());
        let _ = conn.poll_transmit_segments(&mut out, &mut shared);
        let mut wire = splice(&out, &shared);
        out.clear();
        shared.clear();
        conn.send(DataKind::Text, b"t").unwrap();
        conn.send_shared(DataKind::Binary, big.clone()).unwrap();
        let _ = conn.poll_transmit_segments(&mut out, &mut shared);
        wire.extend(splice(&out, &shared));

        let mut plain = server();
        plain.handle_bytes(&[0x89, 0x81, 0, 0, 0, 0, b'q']);
        plain.send(DataKind::Binary, &big).unwrap();
        let mut expected = Vec::new();
        let _ = plain.poll_transmit(&mut expected);
        plain.send(DataKind::Text, b"t").unwrap();
        plain.send(DataKind::Binary, &big).unwrap();
        let _ = plain.poll_transmit(&mut expected);
        // The pong, owed before the first transmit, follows the first message.
        let pong = 4 + big.len();
        assert_eq!(expected[pong..pong + 3], [0x8A, 1, b'q']);
        assert!(wire == expected, "wire bytes differ");
    }

    #[test]
    fn masked_compressed_or_small_payloads_are_copied() {
        let big = Bytes::from(vec![5u8; SHARE_THRESHOLD * 4]);
        let mut client =
            Connection::new(Role::Client, Config::default(), Box::new(|| [1, 2, 3, 4]));
        let mut deflating = server().with_deflate(DeflateParams::new(), &DeflateConfig::default());
        let mut small = server();
        for (conn, payload) in [
            (&mut client, big.clone()),
            (&mut deflating, big.clone()),
            (&mut small, big.slice(..SHARE_THRESHOLD - 1)),
        ] {
            conn.send_shared(DataKind::Binary, payload).unwrap();
            let (mut out, mut shared) = (Vec::new(), Vec::new());
            assert_eq!(
                conn.poll_transmit_segments(&mut out, &mut shared),
                Transmit::Bytes
            );
            assert!(shared.is_empty());
            assert!(!out.is_empty());
        }
        // The client's frame is masked with its key, as `send` would.
        let mut expected = Vec::new();
        let mut plain = Connection::new(Role::Client, Config::default(), Box::new(|| [1, 2, 3, 4]));
        plain.send(DataKind::Binary, &big).unwrap();
        let _ = plain.poll_transmit(&mut expected);
        client.send_shared(DataKind::Binary, big.clone()).unwrap();
        let mut out = Vec::new();
        let _ = client.poll_transmit(&mut out);
        assert_eq!(out, expected);
    }

    #[test]
    fn send_shared_checks_like_send() {
        let big = Bytes::from(vec![1u8; SHARE_THRESHOLD]);
        let mut conn = server();
        conn.send_fragment(DataKind::Text, b"a", false).unwrap();
        assert_eq!(
            conn.send_shared(DataKind::Binary, big.clone()),
            Err(SendError::FragmentInProgress)
        );
        conn.send_fragment(DataKind::Text, b"b", true).unwrap();
        conn.send_shared(DataKind::Binary, big.clone()).unwrap();
        conn.close(CloseCode::NORMAL, "").unwrap();
        assert_eq!(
            conn.send_shared(DataKind::Binary, big.clone()),
            Err(SendError::Closed)
        );
        // An abort drops queued payloads with the rest of the output.
        let mut conn = server();
        conn.send_shared(DataKind::Binary, big.clone()).unwrap();
        conn.abort(CloseCode::POLICY_VIOLATION, "slow");
        let (mut out, mut shared) = (Vec::new(), Vec::new());
        let _ = conn.poll_transmit_segments(&mut out, &mut shared);
        assert!(shared.is_empty());
        assert_eq!(out[0], 0x88, "only the close frame is left");
    }

    #[test]
    fn truncate_respects_char_boundaries() {
        assert_eq!(truncate_utf8("héllo", 2), "h");
        assert_eq!(truncate_utf8("héllo", 3), "hé");
        assert_eq!(truncate_utf8("abc", 10), "abc");
    }
}
