//! A server `Connection` fed a client's bytes in fuzz-chosen chunks, with application calls in
//! between (see `sockeye_fuzz::run_connection` for the input layout). Oracles: no panic; all
//! output parses as unmasked frames a client accepts (control payloads ≤ 125, sendable close
//! codes, nothing after the close frame) carrying exactly what the application sent; no event
//! after `Event::Closed`; text is UTF-8; no message over the limit. When the script only chunks
//! the input, the same bytes fed at once give the same events and frames (pongs aside).
#![no_main]

use libfuzzer_sys::fuzz_target;
use sockeye_proto::Role;

fuzz_target!(|data: &[u8]| sockeye_fuzz::run_connection(Role::Server, false, data));
