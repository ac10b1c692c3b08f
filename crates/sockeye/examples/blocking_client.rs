//! A blocking WebSocket client (no async runtime): connects to the URL given as the first
//! argument, sends each following argument as a text message, prints what comes back (one
//! line per message) and closes with 1000.
//!
//! ```text
//! cargo run -p sockeye --example blocking_client -- ws://127.0.0.1:9001/ hello world
//! ```
//!
//! Exits 0 after a clean close, 1 on failure (the error and its causes on stderr), 2 for bad
//! usage.

use std::process::ExitCode;

use sockeye::{blocking, CloseCode, Message};

fn main() -> ExitCode {
    let mut args = std::env::args().skip(1);
    let Some(url) = args.next() else {
        eprintln!("usage: blocking_client URL [MESSAGE]...");
        return ExitCode::from(2);
    };
    match run(&url, args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprint!("error: {err}");
            let mut source = std::error::Error::source(&err);
            while let Some(cause) = source {
                eprint!(": {cause}");
                source = cause.source();
            }
            eprintln!();
            ExitCode::FAILURE
        }
    }
}

fn run(url: &str, messages: impl Iterator<Item = String>) -> Result<(), sockeye::Error> {
    let (mut ws, _response) = blocking::connect(url)?;
    for text in messages {
        ws.send(text)?;
        match ws.read()? {
            Some(Message::Text(reply)) => println!("{reply}"),
            Some(Message::Binary(data)) => println!("<{} bytes of binary data>", data.len()),
            // `read` returns data messages only.
            Some(Message::Ping(_) | Message::Pong(_) | Message::Close(_)) => {}
            // The server closed the connection.
            None => return Ok(()),
        }
    }
    ws.close(CloseCode::NORMAL, "")
}
