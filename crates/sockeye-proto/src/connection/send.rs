//! Outgoing frames: encoding, client masking
//! ([RFC 6455 §5.1](https://www.rfc-editor.org/rfc/rfc6455#section-5.1),
//! [§5.3](https://www.rfc-editor.org/rfc/rfc6455#section-5.3)), fragmentation
//! ([§5.4](https://www.rfc-editor.org/rfc/rfc6455#section-5.4)), control frames and owed pongs
//! ([§5.5](https://www.rfc-editor.org/rfc/rfc6455#section-5.5)), compression
//! ([RFC 7692 §7.2.1](https://www.rfc-editor.org/rfc/rfc7692#section-7.2.1)) and shared payloads
//! handed out without a copy.

use std::collections::VecDeque;
use std::io::IoSlice;

use bytes::Bytes;

use super::{with_scratch, Connection, Deflate, Role};
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

/// Write buffers larger than this are freed once written: a large message passed through, and
/// an idle connection does not keep its buffer.
pub(super) const KEEP_WRITE_BUFFER: usize = 64 << 10;

/// The one queue of outgoing bytes, in wire order, and what is needed to encode more. The
/// transport writes straight from it ([`Connection::poll_write_slices`], then
/// [`Connection::advance_written`]); [`Connection::poll_transmit`] copies it out.
pub(super) struct Outgoing {
    /// Client masking keys; `None` for a server, whose frames are never masked (§5.1).
    masks: Option<Box<dyn MaskSource>>,
    /// Encoded frames; `buf[..pos]` is already written.
    pub(super) buf: Vec<u8>,
    /// Bytes of `buf` already written.
    pos: usize,
    /// Payloads queued by [`send_shared`](Connection::send_shared) without a copy, while any
    /// are. Boxed and created on first use: a connection lives inline in the stream, idle or
    /// not.
    shared: Option<Box<SharedQueue>>,
    /// Some of the queue was written but not all of it: a frame may be cut in the middle, so
    /// nothing else (not even a close frame) may follow it on the wire after an abort.
    partly_written: bool,
    /// Pongs owed, written at the next transmit (at most [`MAX_PENDING_PONGS`]). Empty once a
    /// close frame is written: that writes them first, and none are owed after it.
    pongs: VecDeque<Bytes>,
    /// Kind of the fragmented message being sent, if any.
    pub(super) sending: Option<DataKind>,
    /// Whether the fragmented message being sent is compressed.
    sending_compressed: bool,
}

/// Shared payloads in wire order: each goes on the wire between `buf[..position]` and
/// `buf[position..]`.
#[derive(Default)]
struct SharedQueue {
    segments: VecDeque<(usize, Bytes)>,
    /// Bytes of the first payload already written (its position is then `pos`).
    written: usize,
}

impl Outgoing {
    pub(super) fn new(role: Role, masks: Box<dyn MaskSource>) -> Self {
        Self {
            masks: match role {
                Role::Client => Some(masks),
                Role::Server => None,
            },
            buf: Vec::new(),
            pos: 0,
            shared: None,
            partly_written: false,
            pongs: VecDeque::new(),
            sending: None,
            sending_compressed: false,
        }
    }

    pub(super) fn buffered_amount(&self) -> usize {
        self.buf.len() - self.pos
            + self.shared.as_deref().map_or(0, |queue| {
                queue.segments.iter().map(|(_, p)| p.len()).sum::<usize>() - queue.written
            })
            + self.pongs.iter().map(|p| p.len() + 2).sum::<usize>()
    }

    /// Whether nothing is left to write (pongs owed count as queued).
    pub(super) fn is_empty(&self) -> bool {
        self.pos == self.buf.len() && self.shared.is_none() && self.pongs.is_empty()
    }

    /// Whether a frame may have been cut in the middle by the writes so far.
    pub(super) fn partly_written(&self) -> bool {
        self.partly_written
    }

    /// Owes a pong for a ping just received (§5.5.2, §5.5.3).
    pub(super) fn owe_pong(&mut self, payload: Bytes) {
        if self.pongs.len() == MAX_PENDING_PONGS {
            self.pongs.pop_front();
        }
        self.pongs.push_back(payload);
    }

    /// Drops everything not yet written (an abort).
    pub(super) fn clear(&mut self) {
        self.buf = Vec::new();
        self.pos = 0;
        self.shared = None;
        self.partly_written = false;
        self.pongs.clear();
    }

    /// Fills `dst` with the queued bytes in wire order (buffer ranges and shared payloads), as
    /// many slices as fit; returns how many were filled, 0 when nothing is queued. Pongs owed
    /// are encoded first.
    pub(super) fn slices<'a>(&'a mut self, dst: &mut [IoSlice<'a>]) -> usize {
        self.write_pongs();
        let this: &'a Self = self;
        let mut count = 0;
        let mut pos = this.pos;
        if let Some(queue) = this.shared.as_deref() {
            let mut skip = queue.written;
            for (position, payload) in &queue.segments {
                if *position > pos {
                    let Some(slot) = dst.get_mut(count) else {
                        return count;
                    };
                    *slot = IoSlice::new(&this.buf[pos..*position]);
                    count += 1;
                    pos = *position;
                }
                let Some(slot) = dst.get_mut(count) else {
                    return count;
                };
                *slot = IoSlice::new(&payload[skip..]);
                count += 1;
                skip = 0;
            }
        }
        // Every payload got a slice: the rest of the buffer follows them.
        if pos < this.buf.len() {
            if let Some(slot) = dst.get_mut(count) {
                *slot = IoSlice::new(&this.buf[pos..]);
                count += 1;
            }
        }
        count
    }

    /// Records that the transport took the next `n` bytes of the queue; a transport that
    /// reports more than it was given advances to the end only.
    pub(super) fn advance(&mut self, mut n: usize) {
        while n > 0 {
            let front = self.shared.as_deref().and_then(|queue| {
                queue
                    .segments
                    .front()
                    .map(|(p, b)| (*p, b.len(), queue.written))
            });
            match front {
                Some((position, len, written)) if position == self.pos => {
                    let Some(queue) = self.shared.as_deref_mut() else {
                        break;
                    };
                    if n < len - written {
                        queue.written += n;
                        break;
                    }
                    n -= len - written;
                    queue.written = 0;
                    queue.segments.pop_front();
                    if queue.segments.is_empty() {
                        self.shared = None;
                    }
                }
                next => {
                    let end = next.map_or(self.buf.len(), |(position, _, _)| position);
                    let take = n.min(end - self.pos);
                    self.pos += take;
                    n -= take;
                    if take == 0 {
                        break;
                    }
                }
            }
        }
        self.reclaim();
    }

    /// Empties the buffer once everything is written (freeing it when a large message passed
    /// through), and notes whether the writes so far stopped inside the queue.
    fn reclaim(&mut self) {
        if self.pos == self.buf.len() && self.shared.is_none() {
            self.partly_written = false;
            self.pos = 0;
            if self.buf.capacity() > KEEP_WRITE_BUFFER {
                self.buf = Vec::new();
            } else {
                self.buf.clear();
            }
            return;
        }
        self.partly_written = self.partly_written
            || self.pos != 0
            || self
                .shared
                .as_deref()
                .is_some_and(|queue| queue.written != 0);
    }

    /// Makes room for `additional` more bytes. The written front is moved out first when it is
    /// at least as long as the rest: each byte moved is paid for by a byte written, and a writer
    /// that never catches up does not grow the buffer without bound. (Only here, not after each
    /// write: a large frame drained in many writes is not moved at all.)
    fn reserve(&mut self, additional: usize) {
        let pos = self.pos;
        if pos != 0 && pos >= self.buf.len() - pos {
            self.buf.drain(..pos);
            self.pos = 0;
            if let Some(queue) = self.shared.as_deref_mut() {
                for (position, _) in &mut queue.segments {
                    *position -= pos;
                }
            }
        }
        self.buf.reserve(additional);
    }

    /// Appends everything queued to `out`, shared payloads copied in place; false when nothing
    /// was queued.
    pub(super) fn transmit(&mut self, out: &mut Vec<u8>) -> bool {
        self.write_pongs();
        if self.is_empty() {
            return false;
        }
        if out.is_empty() && self.pos == 0 && self.shared.is_none() {
            // Everything is one buffer: hand it over instead of copying it.
            std::mem::swap(out, &mut self.buf);
            self.reclaim();
            return true;
        }
        out.reserve(self.buffered_amount());
        loop {
            let mut slices = [IoSlice::new(&[]); 16];
            let count = self.slices(&mut slices);
            if count == 0 {
                return true;
            }
            let mut taken = 0;
            for slice in &slices[..count] {
                out.extend_from_slice(slice);
                taken += slice.len();
            }
            self.advance(taken);
        }
    }

    /// Queues `payload` itself after the bytes in the buffer.
    fn push_shared(&mut self, payload: Bytes) {
        let position = self.buf.len();
        self.shared
            .get_or_insert_with(Box::default)
            .segments
            .push_back((position, payload));
    }

    /// Queues a frame encoded beforehand: its `header` is copied, its `payload` queued without
    /// a copy from [`SHARE_THRESHOLD`] bytes on (shorter ones are copied next to the header,
    /// which costs less than a second slice in the write).
    pub(super) fn push_encoded(&mut self, header: &[u8], payload: &Bytes) {
        if payload.len() >= SHARE_THRESHOLD {
            self.reserve(header.len());
            self.buf.extend_from_slice(header);
            self.push_shared(payload.clone());
        } else {
            self.reserve(header.len() + payload.len());
            self.buf.extend_from_slice(header);
            self.buf.extend_from_slice(payload);
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
            Some(deflate) if compress => with_scratch(|scratch| {
                deflate.deflater.compress(payload, fin, scratch);
                let rsv1 = opcode != OpCode::Continuation;
                self.write_frame_with(opcode, fin, rsv1, scratch);
            }),
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
        self.reserve(header.encoded_len() + payload.len());
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
    /// [`poll_write_slices`](Self::poll_write_slices) hands out without a copy;
    /// otherwise this is [`send`](Self::send).
    ///
    /// # Errors
    ///
    /// As [`send`](Self::send).
    pub fn send_shared(&mut self, kind: DataKind, payload: Bytes) -> Result<(), SendError> {
        let compress = self.should_compress(payload.len());
        self.send_whole(kind, payload, compress)
    }

    /// Queues a whole message as one frame that is never compressed (RSV1 clear), even when
    /// permessage-deflate is in force: what Node `ws`'s `send(data, { compress: false })` does.
    /// RFC 7692 lets every message choose (§6: the RSV1 bit is per message). For payloads that
    /// do not shrink (images, already-compressed data) or that should not be compressed
    /// together with text an attacker controls (the CRIME/BREACH side channel, §8.1 of RFC 7692
    /// on security). Otherwise as [`send_shared`](Self::send_shared); without deflate the two
    /// are the same. To broadcast one, see [`PreparedMessage::uncompressed`].
    ///
    /// [`PreparedMessage::uncompressed`]: crate::PreparedMessage::uncompressed
    ///
    /// # Errors
    ///
    /// As [`send`](Self::send).
    pub fn send_uncompressed(&mut self, kind: DataKind, payload: Bytes) -> Result<(), SendError> {
        self.send_whole(kind, payload, false)
    }

    fn send_whole(
        &mut self,
        kind: DataKind,
        payload: Bytes,
        compress: bool,
    ) -> Result<(), SendError> {
        self.check_open()?;
        if self.out.sending.is_some() {
            return Err(SendError::FragmentInProgress);
        }
        if payload.len() < SHARE_THRESHOLD || self.out.masks.is_some() || compress {
            self.out.write_data(
                self.deflate.as_deref_mut(),
                opcode_of(kind),
                true,
                compress,
                &payload,
            );
            return Ok(());
        }
        let header = FrameHeader::new(opcode_of(kind), payload.len() as u64);
        self.out.reserve(header.encoded_len());
        header.encode(&mut self.out.buf);
        self.out.push_shared(payload);
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

    pub(super) fn should_compress(&self, len: usize) -> bool {
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

pub(super) fn opcode_of(kind: DataKind) -> OpCode {
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
    use std::io::IoSlice;

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

    /// Writes everything queued through `poll_write_slices` with at most `max_slices` slices
    /// a write and writes that take at most `step` bytes: the wire bytes, and every slice
    /// handed out (address and length).
    fn drain(
        conn: &mut Connection,
        max_slices: usize,
        step: usize,
    ) -> (Vec<u8>, Vec<(usize, usize)>) {
        let mut wire = Vec::new();
        let mut given = Vec::new();
        loop {
            let mut slices = [IoSlice::new(&[]); 64];
            let count = conn.poll_write_slices(&mut slices[..max_slices]);
            if count == 0 {
                return (wire, given);
            }
            let mut taken = 0;
            for slice in &slices[..count] {
                given.push((slice.as_ptr() as usize, slice.len()));
                let take = slice.len().min(step - taken);
                wire.extend_from_slice(&slice[..take]);
                taken += take;
                if taken == step {
                    break;
                }
            }
            conn.advance_written(taken);
        }
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
        let (wire, given) = drain(&mut conn, 64, usize::MAX);
        assert_eq!(conn.buffered_amount(), 0);
        // The three payloads of at least SHARE_THRESHOLD bytes, the very allocations given.
        let large: Vec<&Bytes> = payloads
            .iter()
            .filter(|p| p.len() >= SHARE_THRESHOLD)
            .collect();
        let shared: Vec<(usize, usize)> = given
            .iter()
            .copied()
            .filter(|&(ptr, len)| {
                large
                    .iter()
                    .any(|p| p.as_ptr() as usize == ptr && p.len() == len)
            })
            .collect();
        assert_eq!(shared.len(), large.len());
        for (got, given) in shared.iter().zip(&large) {
            assert_eq!(got.0, given.as_ptr() as usize);
            assert_eq!(got.1, given.len());
        }
        assert_eq!(wire, expected);
        assert_eq!(peek(&mut conn).0, 0);
        assert!(
            !conn.take_shutdown(),
            "the peer's close frame is still awaited"
        );
    }

    #[test]
    fn partial_writes_and_few_slices_keep_wire_order() {
        let payloads = mix();
        let mut expected = Vec::new();
        let mut plain = server();
        send_mix(&mut plain, false, &payloads);
        let _ = plain.poll_transmit(&mut expected);
        for (max_slices, step) in [(1, usize::MAX), (2, 7), (3, 1000), (1, 4096), (64, 65_537)] {
            let mut conn = server();
            send_mix(&mut conn, true, &payloads);
            let (wire, _) = drain(&mut conn, max_slices, step);
            assert!(
                wire == expected,
                "{max_slices} slices, {step} bytes a write"
            );
            assert_eq!(conn.buffered_amount(), 0);
        }
    }

    #[test]
    fn frames_queued_between_partial_writes_follow() {
        // The writer never catches up: frames are queued after every partial write.
        let big = Bytes::from(vec![3u8; SHARE_THRESHOLD]);
        let (mut conn, mut plain) = (server(), server());
        let (mut wire, mut expected) = (Vec::new(), Vec::new());
        for i in 0..200u32 {
            let text = i.to_string().repeat(40);
            conn.send(DataKind::Text, text.as_bytes()).unwrap();
            plain.send(DataKind::Text, text.as_bytes()).unwrap();
            if i % 7 == 0 {
                conn.send_shared(DataKind::Binary, big.clone()).unwrap();
                plain.send(DataKind::Binary, &big).unwrap();
            }
            let mut slices = [IoSlice::new(&[]); 4];
            let count = conn.poll_write_slices(&mut slices);
            let mut taken = 0;
            for slice in &slices[..count] {
                let take = slice.len().min(100 - taken);
                wire.extend_from_slice(&slice[..take]);
                taken += take;
            }
            conn.advance_written(taken);
        }
        assert!(conn.buffered_amount() > 0);
        wire.extend(drain(&mut conn, 64, usize::MAX).0);
        let _ = plain.poll_transmit(&mut expected);
        assert!(wire == expected, "wire bytes differ");
    }

    #[test]
    fn a_writer_that_lags_behind_keeps_a_bounded_buffer() {
        let mut conn = server();
        conn.send(DataKind::Binary, &[1; 1000]).unwrap();
        for _ in 0..10_000 {
            conn.send(DataKind::Binary, &[2; 100]).unwrap();
            let mut slices = [IoSlice::new(&[]); 4];
            let count = conn.poll_write_slices(&mut slices);
            assert_eq!(count, 1);
            conn.advance_written(102);
            assert!(conn.out.buf.len() <= 4096, "{} bytes", conn.out.buf.len());
        }
        assert_eq!(conn.buffered_amount(), 1004);
    }

    /// How many slices `conn` hands out, and the first byte of the first.
    fn peek(conn: &mut Connection) -> (usize, Option<u8>) {
        let mut slices = [IoSlice::new(&[]); 4];
        let count = conn.poll_write_slices(&mut slices);
        (count, slices[0].first().copied())
    }

    #[test]
    fn abort_after_a_partial_write_sends_nothing_more() {
        let big = Bytes::from(vec![4u8; SHARE_THRESHOLD]);
        let mut conn = server();
        conn.send_shared(DataKind::Binary, big).unwrap();
        assert_eq!(peek(&mut conn), (2, Some(0x82)));
        conn.advance_written(10);
        conn.abort(CloseCode::POLICY_VIOLATION, "slow");
        assert_eq!(
            conn.buffered_amount(),
            0,
            "no close frame after a cut frame"
        );
        assert_eq!(peek(&mut conn).0, 0);
        assert!(conn.take_shutdown(), "the write side is still shut down");
        // Written up to the end of the queue: the close frame still goes out.
        let mut conn = server();
        conn.send(DataKind::Text, b"hi").unwrap();
        assert_eq!(peek(&mut conn), (1, Some(0x81)));
        conn.advance_written(4);
        conn.abort(CloseCode::POLICY_VIOLATION, "slow");
        assert_eq!(peek(&mut conn), (1, Some(0x88)));
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
        let (mut wire, _) = drain(&mut conn, 64, usize::MAX);
        conn.send(DataKind::Text, b"t").unwrap();
        conn.send_shared(DataKind::Binary, big.clone()).unwrap();
        wire.extend(drain(&mut conn, 64, usize::MAX).0);

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
            // One slice: the encoded frame, payload copied in (or compressed).
            let mut slices = [IoSlice::new(&[]); 4];
            assert_eq!(conn.poll_write_slices(&mut slices), 1);
            let len = slices[0].len();
            assert!(len > 0);
            conn.advance_written(len);
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
        assert_eq!(
            peek(&mut conn),
            (1, Some(0x88)),
            "only the close frame is left"
        );
    }

    #[test]
    fn truncate_respects_char_boundaries() {
        assert_eq!(truncate_utf8("héllo", 2), "h");
        assert_eq!(truncate_utf8("héllo", 3), "hé");
        assert_eq!(truncate_utf8("abc", 10), "abc");
    }
}
