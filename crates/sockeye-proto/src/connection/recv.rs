//! Receiving: frame headers split across reads
//! ([RFC 6455 §5.2](https://www.rfc-editor.org/rfc/rfc6455#section-5.2)), unmasking
//! ([§5.3](https://www.rfc-editor.org/rfc/rfc6455#section-5.3)), reassembly of fragmented
//! messages ([§5.4](https://www.rfc-editor.org/rfc/rfc6455#section-5.4)), control frames
//! ([§5.5](https://www.rfc-editor.org/rfc/rfc6455#section-5.5)), incremental UTF-8 checking
//! ([§8.1](https://www.rfc-editor.org/rfc/rfc6455#section-8.1)), inflating
//! ([RFC 7692 §7.2.2](https://www.rfc-editor.org/rfc/rfc7692#section-7.2.2)) and the input
//! budget ([§10.4](https://www.rfc-editor.org/rfc/rfc6455#section-10.4)).

use bytes::{Bytes, BytesMut};

use super::{with_scratch, Connection, Event, Role, SCRATCH_KEEP};
use crate::deflate::InflateError;
use crate::error::ProtocolError;
use crate::frame::{apply_mask, FrameHeader, OpCode, MAX_CONTROL_PAYLOAD, MAX_HEADER_SIZE};
use crate::message::{DataKind, Message};
use crate::utf8::{Utf8Bytes, Utf8State, Utf8Validator};

/// Largest block reserved at once for the small messages of one read: they share one
/// allocation, split off it in turn (an application that keeps one of them keeps the block).
const MESSAGE_BLOCK: usize = 4 << 10;

#[derive(Debug, Clone, Copy)]
pub(super) enum ReadState {
    Header,
    Payload {
        header: FrameHeader,
        remaining: u64,
        offset: usize,
    },
    /// After a close frame or a failure: input is ignored (§5.5.1, §7.1.7).
    Discard,
}

/// The receiving half of a connection: where the parser is, the message being reassembled, and
/// the input kept back while queued messages are over budget.
pub(super) struct Receiver {
    pub(super) read: ReadState,
    /// The start of a header split across reads.
    header_buf: [u8; MAX_HEADER_SIZE],
    /// Bytes in `header_buf`, at most `MAX_HEADER_SIZE`: a `u8` packs it with the other small
    /// fields (a connection lives inline in the stream).
    header_len: u8,
    /// Kind of the data message being received, if any.
    receiving: Option<DataKind>,
    /// Whether the data message being received is compressed (RSV1 on its first frame).
    compressed: bool,
    message: BytesMut,
    utf8: Utf8Validator,
    utf8_state: Utf8State,
    /// Payload of the control frame being received.
    pub(super) control: Vec<u8>,
    /// Input kept unparsed while queued data messages are over budget.
    pub(super) stashed: Vec<u8>,
    /// End of stream seen while input was stashed.
    pub(super) eof_after_stash: bool,
    /// Payload bytes of the data messages in `events`.
    pub(super) queued_bytes: usize,
}

impl Receiver {
    pub(super) fn new() -> Self {
        Self {
            read: ReadState::Header,
            header_buf: [0; MAX_HEADER_SIZE],
            header_len: 0,
            receiving: None,
            compressed: false,
            message: BytesMut::new(),
            utf8: Utf8Validator::new(),
            utf8_state: Utf8State::Complete,
            control: Vec::new(),
            stashed: Vec::new(),
            eof_after_stash: false,
            queued_bytes: 0,
        }
    }

    pub(super) fn is_discarding(&self) -> bool {
        matches!(self.read, ReadState::Discard)
    }

    /// Ignores all further input (§5.5.1, §7.1.7).
    pub(super) fn discard(&mut self) {
        self.read = ReadState::Discard;
    }

    /// Stops for good: ignores further input and frees the message buffers.
    pub(super) fn stop(&mut self) {
        self.read = ReadState::Discard;
        self.receiving = None;
        self.message = BytesMut::new();
        self.control = Vec::new();
    }

    fn over_budget(&self, max_message_size: Option<usize>) -> bool {
        self.queued_bytes > 0 && max_message_size.is_some_and(|limit| self.queued_bytes >= limit)
    }
}

impl Connection {
    /// Parses stashed input while under budget.
    pub(super) fn resume_stashed(&mut self) {
        if self.recv.stashed.is_empty() || self.recv.over_budget(self.config.max_message_size) {
            return;
        }
        let mut stashed = std::mem::take(&mut self.recv.stashed);
        let consumed = stashed.len() - self.process(&stashed).len();
        stashed.drain(..consumed);
        self.recv.stashed = stashed;
        if self.recv.stashed.is_empty() && std::mem::take(&mut self.recv.eof_after_stash) {
            self.handle_eof();
        }
    }

    /// Parses `data`; returns the part left unparsed because queued messages reached the budget.
    pub(super) fn process<'a>(&mut self, mut data: &'a [u8]) -> &'a [u8] {
        while !data.is_empty() {
            if self.recv.is_discarding() {
                return &[];
            }
            if self.recv.over_budget(self.config.max_message_size) {
                return data;
            }
            match self.recv.read {
                ReadState::Discard => return &[],
                ReadState::Header if self.recv.header_len == 0 => {
                    // The usual case: the whole header is in this read; parse it in place.
                    match FrameHeader::parse(data) {
                        Ok(None) => {
                            // Shorter than the header, so shorter than MAX_HEADER_SIZE; were it
                            // not, the rest would go through the general path below.
                            let keep = data.len().min(MAX_HEADER_SIZE);
                            self.recv.header_buf[..keep].copy_from_slice(&data[..keep]);
                            self.recv.header_len = keep as u8;
                            data = &data[keep..];
                        }
                        Ok(Some((header, used))) => {
                            data = &data[used..];
                            self.start_frame(header);
                        }
                        Err(err) => {
                            self.fail(err);
                            return &[];
                        }
                    }
                }
                ReadState::Header => {
                    let had = usize::from(self.recv.header_len);
                    let take = (MAX_HEADER_SIZE - had).min(data.len());
                    self.recv.header_buf[had..had + take].copy_from_slice(&data[..take]);
                    match FrameHeader::parse(&self.recv.header_buf[..had + take]) {
                        Ok(None) => {
                            self.recv.header_len = (had + take) as u8;
                            data = &data[take..];
                        }
                        Ok(Some((header, used))) => {
                            self.recv.header_len = 0;
                            data = &data[used - had..];
                            self.start_frame(header);
                        }
                        Err(err) => {
                            self.fail(err);
                            return &[];
                        }
                    }
                }
                ReadState::Payload {
                    header,
                    remaining,
                    offset,
                } => {
                    let take = usize::try_from(remaining).map_or(data.len(), |r| r.min(data.len()));
                    let (chunk, rest) = data.split_at(take);
                    data = rest;
                    let remaining = remaining - take as u64;
                    self.recv.read = ReadState::Payload {
                        header,
                        remaining,
                        offset: offset + take,
                    };
                    self.handle_payload(&header, chunk, offset, data.len());
                    if remaining == 0 && matches!(self.recv.read, ReadState::Payload { .. }) {
                        self.finish_frame(&header);
                    }
                }
            }
        }
        &[]
    }

    fn start_frame(&mut self, header: FrameHeader) {
        if let Err(err) = self.check_header(&header) {
            return self.fail(err);
        }
        let recv = &mut self.recv;
        if let Some(kind) = data_kind(header.opcode) {
            recv.receiving = Some(kind);
            recv.compressed = header.rsv1;
            recv.message.clear();
            recv.utf8.reset();
            recv.utf8_state = Utf8State::Complete;
        }
        if header.opcode.is_control() {
            recv.control.clear();
        }
        recv.read = ReadState::Payload {
            header,
            remaining: header.payload_len,
            offset: 0,
        };
        if header.payload_len == 0 {
            self.finish_frame(&header);
        }
    }

    fn check_header(&self, header: &FrameHeader) -> Result<(), ProtocolError> {
        match (self.role, header.mask.is_some()) {
            (Role::Server, false) => return Err(ProtocolError::UnmaskedFrame),
            (Role::Client, true) => return Err(ProtocolError::MaskedFrame),
            _ => {}
        }
        // §5.2: "MUST be 0 unless an extension is negotiated that defines meanings for non-zero
        // values. If a nonzero value is received ... the receiving endpoint MUST _Fail the
        // WebSocket Connection_."
        if header.rsv2 || header.rsv3 {
            return Err(ProtocolError::ReservedBits);
        }
        // RFC 7692 §6.1: RSV1 marks the first frame of a compressed message; on a control or
        // continuation frame, or without the extension, it is a violation.
        if header.rsv1
            && (self.deflate.is_none() || !matches!(header.opcode, OpCode::Text | OpCode::Binary))
        {
            return Err(ProtocolError::ReservedBits);
        }
        if header.opcode.is_control() {
            // §5.5: "All control frames MUST have a payload length of 125 bytes or less and MUST
            // NOT be fragmented."
            if header.payload_len > MAX_CONTROL_PAYLOAD as u64 {
                return Err(ProtocolError::ControlFrameTooBig);
            }
            if !header.fin {
                return Err(ProtocolError::FragmentedControlFrame);
            }
            return Ok(());
        }
        match (header.opcode, self.recv.receiving) {
            (OpCode::Continuation, None) => return Err(ProtocolError::UnexpectedContinuation),
            (OpCode::Text | OpCode::Binary, Some(_)) => {
                return Err(ProtocolError::ExpectedContinuation)
            }
            _ => {}
        }
        if let Some(limit) = self.config.max_frame_size {
            if header.payload_len > limit as u64 {
                return Err(ProtocolError::FrameTooBig { limit });
            }
        }
        let compressed = if header.opcode == OpCode::Continuation {
            self.recv.compressed
        } else {
            header.rsv1
        };
        // A compressed message's size is known only while inflating; it is checked there.
        if let (Some(limit), false) = (self.config.max_message_size, compressed) {
            let so_far = if header.opcode == OpCode::Continuation {
                self.recv.message.len() as u64
            } else {
                0
            };
            if so_far + header.payload_len > limit as u64 {
                return Err(ProtocolError::MessageTooBig { limit });
            }
        }
        Ok(())
    }

    /// Takes the payload bytes `chunk` of the current frame, `offset` bytes into it; `following`
    /// bytes of input come after it in this read.
    fn handle_payload(
        &mut self,
        header: &FrameHeader,
        chunk: &[u8],
        offset: usize,
        following: usize,
    ) {
        let recv = &mut self.recv;
        if header.opcode.is_control() {
            let start = recv.control.len();
            recv.control.extend_from_slice(chunk);
            if let Some(key) = header.mask {
                apply_mask(&mut recv.control[start..], key, offset);
            }
            return;
        }
        if recv.compressed {
            if let Err(err) = self.inflate_chunk(header, chunk, offset) {
                // What was inflated before the error is checked first, so that the violation
                // reported (1007 or 1009) does not depend on how the input was split.
                self.check_text();
                return self.fail(err);
            }
        } else {
            let frame_len = usize::try_from(header.payload_len).unwrap_or(usize::MAX);
            if recv.message.is_empty()
                && offset == 0
                && frame_len > MESSAGE_BLOCK
                && self.config.max_message_size.is_some()
                && recv.message.capacity() < frame_len
            {
                // A large frame gets its whole announced length at once (only under a
                // `max_message_size`, which `check_header` held it to): growing by doubling
                // would copy it again on every step and, with the common allocators, map fresh
                // pages for each message instead of reusing freed ones. The peer's header alone
                // asks for it (untouched, so not resident), so it is asked for fallibly: should
                // the allocator refuse, the message grows with the bytes that actually arrive
                // instead of aborting the process.
                // A buffer the application has given back is reused in place.
                if !recv.message.try_reclaim(frame_len) {
                    let mut block = Vec::new();
                    if block.try_reserve_exact(frame_len).is_ok() {
                        // Unique and empty: the conversion keeps the allocation and capacity.
                        recv.message = BytesMut::from(Bytes::from(block));
                    }
                }
            } else if recv.message.is_empty() && recv.message.capacity() < chunk.len() {
                // The messages that follow in the same read are carved one after another out of
                // one block of up to MESSAGE_BLOCK bytes (`finish_message` splits each off), so
                // one allocation serves a burst of small messages, while a lone message gets no
                // more than its size (nothing idle is kept). A block the application has given
                // back is reused in place.
                let burst = (chunk.len() + following).min(MESSAGE_BLOCK);
                recv.message.reserve(chunk.len().max(burst));
            }
            let start = recv.message.len();
            recv.message.extend_from_slice(chunk);
            if let Some(key) = header.mask {
                apply_mask(&mut recv.message[start..], key, offset);
            }
        }
        self.check_text();
    }

    fn inflate_chunk(
        &mut self,
        header: &FrameHeader,
        chunk: &[u8],
        offset: usize,
    ) -> Result<(), ProtocolError> {
        let limit = self.config.max_message_size;
        let Some(deflate) = self.deflate.as_deref_mut() else {
            return Err(ProtocolError::ReservedBits);
        };
        let message = &mut self.recv.message;
        let result = match header.mask {
            Some(key) => with_scratch(|scratch| {
                scratch.extend_from_slice(chunk);
                apply_mask(scratch, key, offset);
                deflate
                    .inflater
                    .inflate(scratch, message, limit.unwrap_or(usize::MAX))
            }),
            None => deflate
                .inflater
                .inflate(chunk, message, limit.unwrap_or(usize::MAX)),
        };
        result.map_err(|err| inflate_error(err, limit))
    }

    fn check_text(&mut self) {
        let recv = &mut self.recv;
        if recv.receiving == Some(DataKind::Text) {
            // RFC 6455 §8.1: "When an endpoint is to interpret a byte stream as UTF-8 but finds
            // that the byte stream is not, in fact, a valid UTF-8 stream, that endpoint MUST
            // _Fail the WebSocket Connection_." Checked per chunk, so it fails fast.
            recv.utf8_state = recv.utf8.feed(&recv.message);
            if recv.utf8_state == Utf8State::Invalid {
                self.fail(ProtocolError::InvalidUtf8);
            }
        }
    }

    fn finish_frame(&mut self, header: &FrameHeader) {
        self.recv.read = ReadState::Header;
        match header.opcode {
            OpCode::Ping => {
                let payload = Bytes::copy_from_slice(&self.recv.control);
                // §5.5.2: "Upon receipt of a Ping frame, an endpoint MUST send a Pong frame in
                // response, unless it already received a Close frame."
                // §5.5.3: "If an endpoint receives a Ping frame and has not yet sent Pong
                // frame(s) in response to previous Ping frame(s), the endpoint MAY elect to send
                // a Pong frame for only the most recently processed Ping frame." Pongs wait in a
                // short queue until the next poll_transmit; a flood drops the oldest.
                if !self.closing.close_sent() {
                    self.out.owe_pong(payload.clone());
                }
                self.events
                    .push_back(Event::Message(Message::Ping(payload)));
            }
            OpCode::Pong => {
                let payload = Bytes::copy_from_slice(&self.recv.control);
                self.events
                    .push_back(Event::Message(Message::Pong(payload)));
            }
            OpCode::Close => self.handle_close_frame(),
            OpCode::Continuation | OpCode::Text | OpCode::Binary => {
                if header.fin {
                    self.finish_message();
                }
            }
        }
    }

    fn finish_message(&mut self) {
        if self.recv.compressed {
            self.recv.compressed = false;
            let limit = self.config.max_message_size;
            let result = match self.deflate.as_deref_mut() {
                Some(deflate) => deflate
                    .inflater
                    .finish_message(&mut self.recv.message, limit.unwrap_or(usize::MAX))
                    .map_err(|err| inflate_error(err, limit)),
                None => Err(ProtocolError::ReservedBits),
            };
            // As in `handle_payload`: the inflated text is checked before an inflate error.
            self.check_text();
            if let Err(err) = result {
                return self.fail(err);
            }
            if self.closing.is_closed() || self.deferred.is_some() {
                return;
            }
        }
        let recv = &mut self.recv;
        let kind = recv.receiving.take();
        let payload = recv.message.split().freeze();
        if recv.message.capacity() > SCRATCH_KEEP {
            // Spare room shares the delivered message's allocation: let it go with it.
            recv.message = BytesMut::new();
        }
        let message = match kind {
            Some(DataKind::Text) => {
                if recv.utf8_state != Utf8State::Complete {
                    return self.fail(ProtocolError::InvalidUtf8);
                }
                Message::Text(Utf8Bytes::from_validated(payload))
            }
            Some(DataKind::Binary) => Message::Binary(payload),
            None => return,
        };
        // RFC 6455 §1.4: "after receiving a control frame indicating the connection should be
        // closed, a peer discards any further data received"; data that arrives after this end
        // sent its close frame, until the peer's, is delivered (the peer may have sent it
        // before it saw ours). The browser-shaped `WebSocket` drops it, as WHATWG's does.
        self.recv.queued_bytes += message.as_payload().len();
        self.events.push_back(Event::Message(message));
    }
}

fn inflate_error(err: InflateError, limit: Option<usize>) -> ProtocolError {
    match err {
        InflateError::TooBig => ProtocolError::MessageTooBig {
            limit: limit.unwrap_or(usize::MAX),
        },
        InflateError::Invalid => ProtocolError::InvalidCompressedData,
    }
}

fn data_kind(opcode: OpCode) -> Option<DataKind> {
    match opcode {
        OpCode::Text => Some(DataKind::Text),
        OpCode::Binary => Some(DataKind::Binary),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use crate::close_code::CloseCode;
    use crate::config::Config;
    use crate::deflate::{DeflateConfig, DeflateParams, Deflater};
    use crate::frame::{FrameHeader, OpCode};
    use crate::{Connection, Event, Role};

    /// Found by the `connection_deflate` fuzz target: a compressed text message that is both
    /// invalid UTF-8 and over the limit was failed with 1009 when it arrived in one read and
    /// with 1007 when it arrived byte by byte.
    #[test]
    fn compressed_violation_does_not_depend_on_chunking() {
        let mut text = vec![0xFF];
        text.extend_from_slice(&[b'a'; 1000]);
        let mut payload = Vec::new();
        Deflater::new(15, false, 6).compress(&text, true, &mut payload);
        let mut frame = FrameHeader::new(OpCode::Text, payload.len() as u64);
        frame.rsv1 = true;
        frame.mask = Some([0; 4]);
        let mut wire = Vec::new();
        frame.encode(&mut wire);
        wire.extend_from_slice(&payload);
        let closed = |chunk: usize| {
            let config = Config::default().max_message_size(Some(126));
            let mut conn = Connection::new(Role::Server, config, Box::new(|| [0u8; 4]))
                .with_deflate(DeflateParams::new(), &DeflateConfig::default());
            for piece in wire.chunks(chunk) {
                conn.handle_bytes(piece);
            }
            match conn.poll_event() {
                Some(Event::Closed(closed)) => closed.code,
                other => panic!("{other:?}"),
            }
        };
        assert_eq!(closed(wire.len()), CloseCode::INVALID_PAYLOAD);
        assert_eq!(closed(1), CloseCode::INVALID_PAYLOAD);
    }
}
