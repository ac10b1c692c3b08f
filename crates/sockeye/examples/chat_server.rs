//! A chat server built on the browser-shaped [`sockeye::WebSocket`] handle: the request path is
//! the room, and each message is broadcast to every other client in the same room.
//!
//! ```text
//! cargo run -p sockeye --example chat_server [ADDR]     # default 127.0.0.1:9002
//! ```
//!
//! Prints `listening on ws://ADDR/` once it accepts connections. Connect to
//! `ws://ADDR/lobby`, `ws://ADDR/games`… A client that does not keep up (its queue is over
//! the high-water mark) misses messages rather than growing the server's memory.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use sockeye::{Error, Event, Server, WebSocket};

/// Members of each room, by connection number.
type Rooms = Arc<Mutex<HashMap<String, HashMap<u64, WebSocket>>>>;

/// Sends `message` to every member of `room` but `from`.
fn broadcast(rooms: &Rooms, room: &str, from: u64, message: &sockeye::Message) {
    // Clone the handles (cheap) so that no lock is held while sending.
    let members: Vec<(u64, WebSocket)> = match rooms.lock().unwrap().get(room) {
        Some(members) => members
            .iter()
            .filter(|(id, _)| **id != from)
            .map(|(id, ws)| (*id, ws.clone()))
            .collect(),
        None => return,
    };
    for (id, ws) in members {
        match ws.send(message.clone()) {
            Ok(()) => {}
            Err(Error::QueueFull) => eprintln!("{room}: client {id} is too slow, message dropped"),
            // Closing: it is about to leave the room.
            Err(_) => {}
        }
    }
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:9002".to_owned());
    let server = Server::bind(addr.as_str()).await?;
    println!("listening on ws://{}/", server.local_addr()?);
    let rooms = Rooms::default();
    let next_id = Arc::new(AtomicU64::new(0));
    server
        .on_connection(move |ws, request| {
            let rooms = rooms.clone();
            let id = next_id.fetch_add(1, Ordering::Relaxed);
            let room = request.uri().path().to_owned();
            async move {
                rooms
                    .lock()
                    .unwrap()
                    .entry(room.clone())
                    .or_default()
                    .insert(id, ws.clone());
                while let Some(event) = ws.next_event().await {
                    match event {
                        Event::Message(message) => broadcast(&rooms, &room, id, &message),
                        Event::Error(error) => eprintln!("{room}: client {id} failed: {error}"),
                        Event::Open | Event::Close(_) => {}
                        _ => {}
                    }
                }
                let mut rooms = rooms.lock().unwrap();
                if let Some(members) = rooms.get_mut(&room) {
                    members.remove(&id);
                    if members.is_empty() {
                        rooms.remove(&room);
                    }
                }
            }
        })
        .await
}
