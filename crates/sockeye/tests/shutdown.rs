//! Graceful shutdown of `Server::serve_with_shutdown`: what was queued is delivered, every
//! connection is closed with 1001, peers that do not cooperate are dropped after the shutdown
//! timeout, and no connection is accepted once the signal fired.

mod common;

use std::io::ErrorKind;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::*;
use futures_util::{SinkExt as _, StreamExt as _};
use sockeye::{CloseCode, Message, Server, WebSocketConfig};
use tokio::net::TcpStream;

/// Scheduling slack for real-time measurements.
const MARGIN: Duration = Duration::from_millis(300);

/// Sets its flag when dropped: tells whether a handler's future was dropped.
struct DropFlag(Arc<AtomicBool>);

impl Drop for DropFlag {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

#[track_caller]
fn assert_refused(result: std::io::Result<TcpStream>) {
    match result {
        Err(e) => assert_eq!(e.kind(), ErrorKind::ConnectionRefused, "{e}"),
        Ok(tcp) => panic!("connection accepted after shutdown: {tcp:?}"),
    }
}

/// A client pipelines N messages and keeps reading; the signal fires once the handler has
/// received the last one. The client gets every echo in order, then 1001 "server shutting
/// down", then the end; an idle second client gets the same close; `serve_with_shutdown`
/// returns without needing its timeout, and the port is closed.
#[tokio::test]
async fn shutdown_delivers_every_echo_then_closes_with_1001() {
    const N: u32 = 1000;
    within("test", async {
        let shutdown_timeout = Duration::from_secs(5);
        let server = Server::bind("127.0.0.1:0")
            .await
            .unwrap()
            .shutdown_timeout(shutdown_timeout);
        let (got_all, mut got_all_rx) = tokio::sync::mpsc::unbounded_channel();
        let mut serving = serve_in_background(server, move |mut ws, _| {
            let got_all = got_all.clone();
            async move {
                let mut received = 0;
                while let Some(Ok(message)) = ws.next().await {
                    if message.is_data() {
                        received += 1;
                        if received == N {
                            let _ = got_all.send(());
                        }
                        if ws.send(message).await.is_err() {
                            break;
                        }
                    }
                }
            }
        });
        let url = format!("ws://{}/", serving.addr);
        let (idle, _) = sockeye::connect(&url).await.unwrap();
        let idle = spawn_drain(idle);
        let (client, _) = sockeye::connect(&url).await.unwrap();
        let (mut sink, mut stream) = client.split();
        let reader = tokio::spawn(async move {
            let mut messages = Vec::new();
            while let Some(item) = stream.next().await {
                messages.push(item.expect("no error"));
            }
            (messages, stream)
        });
        for n in 0..N {
            sink.feed(numbered(n, 100)).await.unwrap();
        }
        sink.flush().await.unwrap();
        got_all_rx
            .recv()
            .await
            .expect("the handler got every message");

        let start = std::time::Instant::now();
        serving.signal();
        let (messages, stream) = reader.await.unwrap();
        let served = serving.task.await.unwrap();
        let took = start.elapsed();
        served.unwrap();

        assert_eq!(
            messages.len(),
            N as usize + 1,
            "echoes, then the close frame"
        );
        for (n, message) in messages[..N as usize].iter().enumerate() {
            assert_eq!(check_numbered(message), n as u32, "echoes in order");
        }
        match &messages[N as usize] {
            Message::Close(Some(frame)) => {
                assert_eq!(frame.code, CloseCode::GOING_AWAY);
                assert_eq!(frame.reason, "server shutting down");
            }
            other => panic!("expected the 1001 close frame, got {other:?}"),
        }
        let client = stream.reunite(sink).expect("halves of one stream");
        let info = client.close_info().expect("closed");
        assert!(info.was_clean);
        assert_eq!(info.code, CloseCode::GOING_AWAY);
        assert!(
            took < shutdown_timeout,
            "serve_with_shutdown took {took:?}: the close handshakes did not finish"
        );

        let idle = idle.await.unwrap();
        assert!(matches!(
            idle.messages().as_slice(),
            [Message::Close(Some(f))] if f.code == CloseCode::GOING_AWAY
        ));
        let info = idle.ws.close_info().unwrap();
        assert!(info.was_clean);
        assert_eq!(info.code, CloseCode::GOING_AWAY);

        assert_refused(TcpStream::connect(serving.addr).await);
    })
    .await;
}

/// A client that never reads and never closes, with the server blocked writing echoes to it:
/// `serve_with_shutdown` stops accepting at once, gives up after the shutdown timeout, and
/// drops the handler.
#[tokio::test]
async fn shutdown_drops_a_peer_that_never_reads_after_the_shutdown_timeout() {
    within("test", async {
        let shutdown_timeout = Duration::from_millis(300);
        let server = Server::bind("127.0.0.1:0")
            .await
            .unwrap()
            .shutdown_timeout(shutdown_timeout)
            .config(WebSocketConfig::default().close_timeout(Duration::from_secs(30)));
        let dropped = Arc::new(AtomicBool::new(false));
        let echoed = Arc::new(AtomicUsize::new(0));
        let (flag, count) = (dropped.clone(), echoed.clone());
        let mut serving = serve_in_background(server, move |mut ws, _| {
            let guard = DropFlag(flag.clone());
            let count = count.clone();
            async move {
                let _guard = guard;
                while let Some(Ok(message)) = ws.next().await {
                    if message.is_data() {
                        if ws.send(message).await.is_err() {
                            break;
                        }
                        count.fetch_add(1, Ordering::SeqCst);
                    }
                }
            }
        });
        let mut peer = raw_client(serving.addr).await;
        // Send far more than the socket buffers hold, reading nothing.
        let writer = tokio::spawn(async move {
            let message = frame(true, BINARY, &vec![0u8; 64 << 10], Some(RAW_MASK));
            for _ in 0..1000 {
                if tokio::io::AsyncWriteExt::write_all(&mut peer.io, &message)
                    .await
                    .is_err()
                {
                    break;
                }
            }
            peer
        });
        // Wait until the echoes stall (the server is blocked writing).
        let mut last = usize::MAX;
        loop {
            tokio::time::sleep(Duration::from_millis(20)).await;
            let now = echoed.load(Ordering::SeqCst);
            if now == last && now > 0 {
                break;
            }
            last = now;
        }

        let start = std::time::Instant::now();
        serving.signal();
        // Stops accepting at once, while still draining.
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert_refused(TcpStream::connect(serving.addr).await);
        assert!(!serving.task.is_finished(), "waits for the connection");
        assert!(!dropped.load(Ordering::SeqCst));

        serving.task.await.unwrap().unwrap();
        let took = start.elapsed();
        assert!(
            took >= shutdown_timeout && took <= shutdown_timeout + MARGIN,
            "serve_with_shutdown returned after {took:?} (shutdown timeout {shutdown_timeout:?})"
        );
        assert!(dropped.load(Ordering::SeqCst), "the handler was dropped");
        // The connection is gone: the stuck writer fails and ends.
        within("writer", writer).await.unwrap();
        assert_refused(TcpStream::connect(serving.addr).await);
    })
    .await;
}

/// A connection still in its opening handshake does not hold up the shutdown (the handshake
/// timeout is 10 s by default, the shutdown timeout 5 s here).
#[tokio::test]
async fn shutdown_does_not_wait_for_handshakes_in_progress() {
    within("test", async {
        let server = Server::bind("127.0.0.1:0")
            .await
            .unwrap()
            .shutdown_timeout(Duration::from_secs(5));
        let mut serving = serve_in_background(server, |_, _| async {
            panic!("no handshake completes in this test")
        });
        let tcp = TcpStream::connect(serving.addr).await.unwrap();
        let mut peer = RawPeer::new(tcp, Some(RAW_MASK));
        // Half a request: the server is waiting for the rest.
        peer.write(b"GET / HTTP/1.1\r\nHost: x\r\n").await;
        tokio::time::sleep(Duration::from_millis(20)).await;
        let start = std::time::Instant::now();
        serving.signal();
        serving.task.await.unwrap().unwrap();
        assert!(start.elapsed() < MARGIN, "took {:?}", start.elapsed());
        assert!(
            peer.read_to_end().await.is_empty(),
            "dropped without an answer"
        );
    })
    .await;
}

/// The documented default shutdown timeout is 10 s (paused clock once connected; the stream's
/// own close timeout is raised so that it cannot end the connection first).
#[tokio::test]
async fn default_shutdown_timeout_is_10s() {
    within_for(Duration::from_secs(60), "test", async {
        let server = Server::bind("127.0.0.1:0")
            .await
            .unwrap()
            .config(WebSocketConfig::default().close_timeout(Duration::from_secs(60)));
        let mut serving = serve_in_background(server, |mut ws, _| async move {
            while let Some(Ok(_)) = ws.next().await {}
        });
        let _peer = raw_client(serving.addr).await;
        tokio::time::sleep(Duration::from_millis(20)).await;
        tokio::time::pause();
        let start = tokio::time::Instant::now();
        serving.signal();
        serving.task.await.unwrap().unwrap();
        let took = start.elapsed();
        assert!(
            took >= Duration::from_secs(10) && took <= Duration::from_millis(10_005),
            "{took:?}"
        );
    })
    .await;
}

/// `Server::threads(2)`: while the thread serving one connection is blocked, the other thread
/// accepts and serves the next; every connection echoes; the shutdown closes the connections
/// of both threads with 1001 and `serve_with_shutdown` returns once both are done. The server
/// runs on threads of its own, so that blocking one never blocks the clients.
#[test]
fn two_threads_accept_serve_and_shut_down_together() {
    let new_runtime = || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
    };
    let runtime = new_runtime();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let addr = listener.local_addr().unwrap();
    new_runtime().block_on(within("test", async move {
        let (opened, mut opened_rx) = tokio::sync::mpsc::unbounded_channel();
        let (release, released) = std::sync::mpsc::channel::<()>();
        let released = Arc::new(std::sync::Mutex::new(released));
        let first = Arc::new(AtomicBool::new(true));
        let handler = move |mut ws: sockeye::ServerStream, _| {
            let opened = opened.clone();
            let block = first.swap(false, Ordering::SeqCst);
            let released = released.clone();
            async move {
                let _ = opened.send(std::thread::current().id());
                if block {
                    // Blocks this thread's runtime: only the other thread can accept now.
                    let _ = released.lock().unwrap().recv_timeout(PATIENCE);
                }
                while let Some(Ok(message)) = ws.next().await {
                    if message.is_data() && ws.send(message).await.is_err() {
                        break;
                    }
                }
            }
        };
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let serving = std::thread::spawn(move || {
            runtime.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener)?;
                Server::from_listener(listener)
                    .threads(2)
                    .shutdown_timeout(Duration::from_secs(5))
                    .serve_with_shutdown(handler, async {
                        let _ = stopped.await;
                    })
                    .await
            })
        });
        let url = format!("ws://{addr}/");
        let (mut one, _) = sockeye::connect(&url).await.unwrap();
        let first_thread = opened_rx.recv().await.unwrap();
        let (mut two, _) = sockeye::connect(&url).await.unwrap();
        let second_thread = opened_rx.recv().await.unwrap();
        assert_ne!(first_thread, second_thread, "served by two threads");
        release.send(()).unwrap();
        for (i, ws) in [&mut one, &mut two].into_iter().enumerate() {
            ws.send(numbered(i as u32, 64)).await.unwrap();
            let echo = ws.next().await.unwrap().unwrap();
            assert_eq!(check_numbered(&echo), i as u32);
        }
        stop.send(()).unwrap();
        for ws in [&mut one, &mut two] {
            match ws.next().await {
                Some(Ok(Message::Close(Some(frame)))) => {
                    assert_eq!(frame.code, CloseCode::GOING_AWAY)
                }
                other => panic!("expected 1001, got {other:?}"),
            }
            assert!(ws.next().await.is_none());
        }
        let served = tokio::task::spawn_blocking(move || serving.join())
            .await
            .unwrap();
        served.expect("no panic").expect("served");
        assert_refused(TcpStream::connect(addr).await);
    }));
}
