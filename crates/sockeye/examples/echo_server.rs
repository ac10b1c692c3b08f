//! An echo server in the async Stream/Sink style: every text or binary message is sent back.
//!
//! ```text
//! cargo run -p sockeye --example echo_server [ADDR]     # default 127.0.0.1:9001
//! ```
//!
//! Prints `listening on ws://ADDR/` once it accepts connections (with the real port when ADDR
//! ends in `:0`).

use futures_util::StreamExt as _;
use sockeye::{Server, ServerStream};

/// Echoes data messages until the client closes; pings are answered by the stream itself.
async fn echo(mut ws: ServerStream, request: sockeye::http::Request<()>) {
    let path = request.uri().to_string();
    while let Some(item) = ws.next().await {
        match item {
            Ok(message) if message.is_data() => {
                if let Err(error) = ws.send(message).await {
                    eprintln!("{path}: send failed: {error}");
                    return;
                }
            }
            Ok(_) => {}
            Err(error) => {
                eprintln!("{path}: connection failed: {error}");
                return;
            }
        }
    }
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:9001".to_owned());
    let server = Server::bind(addr.as_str()).await?;
    println!("listening on ws://{}/", server.local_addr()?);
    server.serve(echo).await
}
