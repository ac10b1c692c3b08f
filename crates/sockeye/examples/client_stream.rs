//! A client in the async Stream/Sink style: sends each argument as a text message and prints
//! the replies, then closes.
//!
//! ```text
//! cargo run -p sockeye --example client_stream [URL [MESSAGE...]]
//! ```
//!
//! URL defaults to `ws://127.0.0.1:9001/` (the `echo_server` example), the messages to `hello`.
//! Prints `connected to URL` once the handshake is done, then `< TEXT` (or `< N bytes`) per
//! reply. Waits at most 10 s for each reply.

use std::process::ExitCode;
use std::time::Duration;

use futures_util::{SinkExt as _, StreamExt as _};
use sockeye::Message;

const REPLY_TIMEOUT: Duration = Duration::from_secs(10);

async fn run(url: &str, messages: Vec<String>) -> Result<(), Box<dyn std::error::Error>> {
    let (ws, _response) = sockeye::connect(url).await?;
    println!("connected to {url}");
    // The connection as a Sink of messages to send and a Stream of messages received.
    let (mut sink, mut stream) = ws.split();
    for text in messages {
        sink.send(Message::text(text)).await?;
        // Skip pings and pongs: the stream answers pings itself.
        loop {
            let reply = tokio::time::timeout(REPLY_TIMEOUT, stream.next())
                .await
                .map_err(|_| "no reply in time")?
                .ok_or("connection closed")??;
            match reply {
                Message::Text(text) => println!("< {text}"),
                Message::Binary(data) => println!("< {} bytes", data.len()),
                _ => continue,
            }
            break;
        }
    }
    // `Sink::close` performs the closing handshake with code 1000.
    tokio::time::timeout(REPLY_TIMEOUT, sink.close())
        .await
        .map_err(|_| "close timed out")??;
    Ok(())
}

/// `error: cause: cause…`: the error and its chain of sources.
fn describe(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

#[tokio::main]
async fn main() -> ExitCode {
    let mut args = std::env::args().skip(1);
    let url = args
        .next()
        .unwrap_or_else(|| "ws://127.0.0.1:9001/".to_owned());
    let mut messages: Vec<String> = args.collect();
    if messages.is_empty() {
        messages.push("hello".to_owned());
    }
    match run(&url, messages).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {}", describe(error.as_ref()));
            ExitCode::FAILURE
        }
    }
}
