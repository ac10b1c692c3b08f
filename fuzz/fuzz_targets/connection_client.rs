//! A client `Connection` fed a server's bytes; as `connection_server`, with the output masked.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sockeye_proto::Role;

fuzz_target!(|data: &[u8]| sockeye_fuzz::run_connection(Role::Client, false, data));
