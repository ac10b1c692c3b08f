//! A server `Connection` with permessage-deflate negotiated (parameters from the input's second
//! byte), fed a client's bytes: compressed frames exercise the inflater. Oracles as
//! `connection_server`, plus: every delivered message is within `max_message_size` (inflation
//! stops at the limit), and every compressed message the server sends inflates (with flate2,
//! not the crate's inflater) to exactly what the application sent.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sockeye_proto::Role;

fuzz_target!(|data: &[u8]| sockeye_fuzz::run_connection(Role::Server, true, data));
