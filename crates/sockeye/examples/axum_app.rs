//! One axum application serving HTTP and WebSocket on one port: `GET /` (a page that opens the
//! WebSocket), `GET /health` (`ok`) and `GET /ws` (an echo WebSocket, upgraded by
//! [`sockeye::integrations::axum::WebSocketUpgrade`]).
//!
//! ```text
//! cargo run -p sockeye --features axum --example axum_app -- 127.0.0.1:3000
//! ```
//!
//! The first argument is the address to listen on (default `127.0.0.1:3000`; port 0 picks a
//! free port). Once bound it prints `listening on http://ADDR/` with the address bound.

use std::io::Write as _;

use axum::response::{Html, Response};
use axum::routing::get;
use axum::Router;
use futures_util::StreamExt as _;
use sockeye::integrations::axum::{AxumWebSocket, WebSocketUpgrade};

/// The page served at `/`: it echoes a message through `/ws` when opened in a browser.
const PAGE: &str = r#"<!doctype html>
<html>
<head><meta charset="utf-8"><title>sockeye axum example</title></head>
<body>
<h1>sockeye axum example</h1>
<p>WebSocket echo at <code>/ws</code>, health check at <code>/health</code>.</p>
<pre id="log"></pre>
<script>
const log = (line) => { document.getElementById("log").textContent += line + "\n"; };
const ws = new WebSocket(`ws://${location.host}/ws`);
ws.onopen = () => { log("open"); ws.send("hello from the browser"); };
ws.onmessage = (event) => log(`echo: ${event.data}`);
ws.onclose = (event) => log(`closed: ${event.code}`);
</script>
</body>
</html>
"#;

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:3000".to_owned());
    let app = Router::new()
        .route("/", get(|| async { Html(PAGE) }))
        .route("/health", get(|| async { "ok" }))
        .route("/ws", get(ws_handler));
    let listener = tokio::net::TcpListener::bind(&addr).await?;
    println!("listening on http://{}/", listener.local_addr()?);
    std::io::stdout().flush()?;
    axum::serve(listener, app).await
}

/// Upgrades `/ws` requests; an invalid upgrade is rejected by the extractor (400, 426...).
async fn ws_handler(upgrade: WebSocketUpgrade) -> Response {
    upgrade.on_upgrade(echo)
}

/// Sends every text and binary message back until the client closes.
async fn echo(mut ws: AxumWebSocket) {
    while let Some(Ok(message)) = ws.next().await {
        if message.is_data() && ws.send(message).await.is_err() {
            break;
        }
    }
}
