//! The closing handshake
//! ([RFC 6455 §5.5.1](https://www.rfc-editor.org/rfc/rfc6455#section-5.5.1),
//! [§7.1](https://www.rfc-editor.org/rfc/rfc6455#section-7.1)): starting it, answering the
//! peer's close frame, failing the connection (§7.1.7) and ending it.
//!
//! One [`Closing`] value says where the handshake stands:
//!
//! - `Open` → `Sent`: the application calls [`Connection::close`].
//! - `Open` or `Sent` → `Received`: a client receives the peer's close frame (from `Open`, it
//!   echoes one first).
//! - any → `Closed`: a server receives the peer's close frame (echoing one from `Open`), a
//!   violation fails the connection, [`Connection::abort`], end of stream, or the close timer.

use super::{Closed, Connection, Event, Initiator, Role, State};
use crate::close_code::{CloseCode, MAX_CLOSE_REASON};
use crate::error::{ProtocolError, SendError};
use crate::frame::CloseFrame;
use crate::message::Message;
use crate::utf8::Utf8Bytes;

/// Where the close handshake stands.
#[derive(Debug)]
pub(super) enum Closing {
    /// No close frame sent or received.
    Open,
    /// This end's application sent a close frame ([`Connection::close`]); the peer's is awaited.
    Sent,
    /// Both close frames were exchanged and, as a client, this end waits for the server to close
    /// TCP (§7.1.1). The peer's code and reason and the initiator are reported at the end.
    Received {
        code: CloseCode,
        reason: String,
        initiator: Initiator,
    },
    /// [`Event::Closed`] was emitted; `shutdown_sent` once [`Transmit::Shutdown`] was returned.
    ///
    /// [`Transmit::Shutdown`]: super::Transmit::Shutdown
    Closed { shutdown_sent: bool },
}

impl Closing {
    pub(super) fn state(&self) -> State {
        match self {
            Self::Open => State::Open,
            Self::Sent | Self::Received { .. } => State::Closing,
            Self::Closed { .. } => State::Closed,
        }
    }

    /// Whether no frame may be sent any more: a close frame went out (§5.5.1), or the connection
    /// is closed.
    pub(super) fn close_sent(&self) -> bool {
        !matches!(self, Self::Open)
    }

    /// Whether a close frame went out and the end is awaited (the caller's close timer runs).
    pub(super) fn close_expected(&self) -> bool {
        matches!(self, Self::Sent | Self::Received { .. })
    }

    pub(super) fn is_closed(&self) -> bool {
        matches!(self, Self::Closed { .. })
    }

    /// True once, when the connection is closed: the transport's write side is shut next.
    pub(super) fn take_shutdown(&mut self) -> bool {
        match self {
            Self::Closed { shutdown_sent } if !*shutdown_sent => {
                *shutdown_sent = true;
                true
            }
            _ => false,
        }
    }
}

/// Input acted on only after the events before it are taken. Held beside [`Closing`] (not in
/// it): a close frame deferred while [`Open`](Closing::Open) is still answered once the
/// application has sent its own close frame ([`Sent`](Closing::Sent)).
#[derive(Debug)]
pub(super) enum Deferred {
    Failure(ProtocolError),
    Close(Option<CloseFrame>),
}

impl Connection {
    /// Starts the closing handshake with `code` and `reason`; no data frame may follow.
    ///
    /// # Errors
    ///
    /// [`SendError::Closed`] when a close frame was already sent,
    /// [`SendError::InvalidCloseCode`] for a code that may not be sent,
    /// [`SendError::CloseReasonTooLong`] for a reason over [`MAX_CLOSE_REASON`] (123) bytes.
    /// Nothing is sent on error.
    pub fn close(&mut self, code: CloseCode, reason: &str) -> Result<(), SendError> {
        self.check_open()?;
        if !code.is_sendable() {
            return Err(SendError::InvalidCloseCode(code.0));
        }
        if reason.len() > MAX_CLOSE_REASON {
            return Err(SendError::CloseReasonTooLong);
        }
        self.out.write_close(Some(code), reason);
        self.closing = Closing::Sent;
        Ok(())
    }

    /// Ends the connection now for a local reason (keepalive timeout, slow consumer, shutdown
    /// deadline): output not yet written (taken by [`poll_transmit`](Self::poll_transmit) or
    /// reported with [`advance_written`](Self::advance_written)) is discarded, a close frame
    /// with `code` is queued unless one was sent or the writes so far stopped inside the queued
    /// output (a frame may be cut: anything after it would be read as its payload), and
    /// [`Event::Closed`] (not clean, initiator [`Initiator::Library`]) follows; the transport's
    /// write side is still shut down. Does nothing once closed.
    pub fn abort(&mut self, code: CloseCode, reason: &str) {
        if self.closing.is_closed() {
            return;
        }
        self.deferred = None;
        self.recv.stashed = Vec::new();
        // A frame cut in the middle by the writes so far would swallow a close frame sent
        // after it (read as the rest of its payload): then nothing more is sent, and the peer
        // sees the transport end instead of a corrupt stream.
        let cut = self.out.partly_written();
        self.out.clear();
        if !cut && !self.closing.close_sent() && code.is_sendable() {
            self.out.write_close(Some(code), reason);
        }
        self.finish(code, reason.to_owned(), Initiator::Library, false, None);
    }

    pub(super) fn check_open(&self) -> Result<(), SendError> {
        if self.closing.close_sent() {
            Err(SendError::Closed)
        } else {
            Ok(())
        }
    }

    pub(super) fn handle_close_frame(&mut self) {
        let frame = match parse_close_payload(&self.recv.control) {
            Ok(frame) => frame,
            Err(err) => return self.fail(err),
        };
        // §5.5.1: "After sending a Close frame, the endpoint MUST NOT send any further data
        // frames"; after receiving one, nothing further is read.
        self.recv.discard();
        if !self.closing.close_sent() && !self.events.is_empty() {
            // Messages that came before the close frame are still unread: answer the close
            // once they are taken, so that replies to them can still be sent.
            self.deferred = Some(Deferred::Close(frame));
            return;
        }
        self.accept_close(frame);
    }

    /// Acts on a deferred violation or close frame.
    pub(super) fn run_deferred(&mut self) {
        match self.deferred.take() {
            Some(Deferred::Failure(err)) => self.fail_now(err),
            Some(Deferred::Close(frame)) => self.accept_close(frame),
            None => {}
        }
    }

    fn accept_close(&mut self, frame: Option<CloseFrame>) {
        self.recv.discard();
        let (code, reason) = match &frame {
            Some(f) => (f.code, f.reason.to_string()),
            None => (CloseCode::NO_STATUS_RCVD, String::new()),
        };
        // Only `close` leads to `Sent`: the application started the handshake.
        let initiator = if self.closing.close_sent() {
            Initiator::Application
        } else {
            // §5.5.1: "If an endpoint receives a Close frame and did not previously send a Close
            // frame, the endpoint MUST send a Close frame in response. ... It SHOULD typically
            // echo the status code it received." The reason is echoed too (already checked as
            // UTF-8 of at most 123 bytes), as Node's `ws`, Python's `websockets` and Bun do: a
            // peer that reads the echo (a browser's `CloseEvent.reason`) sees what it sent.
            let reason = frame.as_ref().map_or("", |f| f.reason.as_str());
            self.out.write_close(frame.as_ref().map(|f| f.code), reason);
            Initiator::Remote
        };
        self.events.push_back(Event::Message(Message::Close(frame)));
        // §7.1.1: "the underlying TCP connection, in most normal cases, SHOULD be closed first by
        // the server". A client waits for the server's end of stream (or its close timer).
        if self.role == Role::Server {
            self.finish(code, reason, initiator, true, None);
        } else {
            self.closing = Closing::Received {
                code,
                reason,
                initiator,
            };
        }
    }

    /// _Fail the WebSocket Connection_ (§7.1.7): send a close frame if none was sent, stop
    /// reading, report [`Event::Closed`] and shut the transport down.
    pub(super) fn fail(&mut self, err: ProtocolError) {
        self.recv.discard();
        if self.closing.is_closed() || self.deferred.is_some() {
            return;
        }
        if !self.events.is_empty() {
            self.deferred = Some(Deferred::Failure(err));
            return;
        }
        self.fail_now(err);
    }

    fn fail_now(&mut self, err: ProtocolError) {
        if self.closing.is_closed() {
            return;
        }
        let code = err.close_code();
        let reason = err.to_string();
        if !self.closing.close_sent() {
            self.out.write_close(Some(code), &reason);
        }
        self.finish(code, reason, Initiator::Library, false, Some(err));
    }

    /// Ends the connection: reading stops for good and [`Event::Closed`] is the last event.
    pub(super) fn finish(
        &mut self,
        code: CloseCode,
        reason: String,
        initiator: Initiator,
        was_clean: bool,
        error: Option<ProtocolError>,
    ) {
        self.closing = Closing::Closed {
            shutdown_sent: false,
        };
        self.recv.stop();
        self.events.push_back(Event::Closed(Closed {
            code,
            reason,
            initiator,
            was_clean,
            error,
        }));
    }
}

/// Parses a close frame body (§5.5.1): empty, or a 2-byte code plus a UTF-8 reason.
fn parse_close_payload(payload: &[u8]) -> Result<Option<CloseFrame>, ProtocolError> {
    match payload {
        [] => Ok(None),
        [_] => Err(ProtocolError::InvalidCloseFrame),
        [hi, lo, reason @ ..] => {
            let code = CloseCode(u16::from_be_bytes([*hi, *lo]));
            if !code.is_valid_on_wire() {
                return Err(ProtocolError::InvalidCloseCode(code.0));
            }
            let reason = Utf8Bytes::try_from_bytes(bytes::Bytes::copy_from_slice(reason))
                .map_err(|_| ProtocolError::InvalidUtf8)?;
            Ok(Some(CloseFrame { code, reason }))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::parse_close_payload;
    use crate::close_code::CloseCode;
    use crate::error::ProtocolError;

    #[test]
    fn close_payload_parsing() {
        assert_eq!(parse_close_payload(&[]), Ok(None));
        assert_eq!(
            parse_close_payload(&[3]),
            Err(ProtocolError::InvalidCloseFrame)
        );
        assert_eq!(
            parse_close_payload(&[0x03, 0xED]),
            Err(ProtocolError::InvalidCloseCode(1005))
        );
        assert_eq!(
            parse_close_payload(&[0x03, 0xE8, 0xFF]),
            Err(ProtocolError::InvalidUtf8)
        );
        let frame = parse_close_payload(&[0x03, 0xE8, b'o', b'k'])
            .unwrap()
            .unwrap();
        assert_eq!(frame.code, CloseCode::NORMAL);
        assert_eq!(frame.reason, "ok");
    }
}
