//! A client in the browser's handler style (`onopen`, `onmessage`, `onerror`, `onclose`) on
//! [`sockeye::WebSocket`]: sends each argument when the connection opens, prints the replies and
//! closes after the last one.
//!
//! ```text
//! cargo run -p sockeye --example client_handlers [URL [MESSAGE...]]
//! ```
//!
//! URL defaults to `ws://127.0.0.1:9001/` (the `echo_server` example), the messages to `hello`.
//! Prints `connected to URL` when open, `< TEXT` (or `< N bytes`) per reply and
//! `closed: CODE` at the end. Gives up after 10 s.

use std::process::ExitCode;
use std::time::Duration;

use sockeye::{Message, WebSocket};

const TIMEOUT: Duration = Duration::from_secs(10);

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
    let expected = messages.len();
    let mut replies = 0;
    let (done_tx, done_rx) = tokio::sync::oneshot::channel();
    let mut done_tx = Some(done_tx);
    let ws = WebSocket::builder(url.as_str())
        .on_open(move |ws| {
            println!("connected to {}", ws.url());
            for text in &messages {
                if let Err(error) = ws.send(text.as_str()) {
                    eprintln!("send failed: {error}");
                }
            }
        })
        .on_message(move |ws, message| {
            match message {
                Message::Text(text) => println!("< {text}"),
                Message::Binary(data) => println!("< {} bytes", data.len()),
                _ => {}
            }
            replies += 1;
            if replies == expected {
                let _ = ws.close(Some(1000), Some("done"));
            }
        })
        .on_error(|_, error| eprintln!("error: {}", describe(&error)))
        .on_close(move |_, close| {
            println!("closed: {}", close.code);
            if let Some(tx) = done_tx.take() {
                let _ = tx.send(close.was_clean);
            }
        })
        .connect();
    let ws = match ws {
        Ok(ws) => ws,
        Err(error) => {
            eprintln!("error: {}", describe(&error));
            return ExitCode::from(2);
        }
    };
    match tokio::time::timeout(TIMEOUT, done_rx).await {
        Ok(Ok(true)) => ExitCode::SUCCESS,
        Ok(_) => ExitCode::FAILURE,
        Err(_) => {
            eprintln!("error: timed out");
            let _ = ws.close(None, None);
            ExitCode::FAILURE
        }
    }
}
