//! `ReconnectingClient` against a loopback server whose behaviour each test scripts per
//! connection: abrupt drops before and after the handshake, close codes, refusals, a server
//! that is down at start. Delays are short real delays; the events, their order, their delays
//! (within jitter) and what the server saw are checked.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::StreamExt as _;
use sockeye::{
    Backoff, ClientBuilder, CloseCode, Closed, Error, Message, ReconnectEvent, ReconnectingClient,
    SendError,
};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::time::Instant;

const PATIENCE: Duration = Duration::from_secs(20);

async fn within<F: std::future::Future>(what: &str, fut: F) -> F::Output {
    tokio::time::timeout(PATIENCE, fut)
        .await
        .unwrap_or_else(|_| panic!("timed out: {what}"))
}

/// What the server does with one connection.
#[derive(Debug, Clone, Copy)]
enum Plan {
    /// Close TCP right after accepting, before the handshake.
    Drop,
    /// Answer the upgrade with 403.
    Refuse,
    /// Handshake, then echo until the client leaves.
    Echo,
    /// Handshake, echo one message, then drop TCP without a close frame.
    EchoOnceThenDrop,
    /// Handshake, then close with this code.
    CloseWith(u16),
}

struct ScriptedServer {
    addr: SocketAddr,
    /// One item per accepted TCP connection: its index.
    accepted: mpsc::UnboundedReceiver<usize>,
    /// Connections taken from `accepted` so far.
    counted: usize,
    /// How each WebSocket connection the server ran ended, as the server saw it.
    ends: Arc<Mutex<Vec<Option<Closed>>>>,
}

impl ScriptedServer {
    async fn start(plan: impl Fn(usize) -> Plan + Send + 'static) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        Self::serve(listener, plan)
    }

    fn serve(listener: TcpListener, plan: impl Fn(usize) -> Plan + Send + 'static) -> Self {
        let addr = listener.local_addr().unwrap();
        let (tx, accepted) = mpsc::unbounded_channel();
        let ends = Arc::new(Mutex::new(Vec::new()));
        let recorded = ends.clone();
        tokio::spawn(async move {
            let mut index = 0;
            while let Ok((tcp, _)) = listener.accept().await {
                let _ = tx.send(index);
                tokio::spawn(run(tcp, plan(index), recorded.clone()));
                index += 1;
            }
        });
        Self {
            addr,
            accepted,
            counted: 0,
            ends,
        }
    }

    fn url(&self) -> String {
        format!("ws://{}/", self.addr)
    }

    /// Asserts that no further connection arrives within `quiet`.
    async fn assert_no_connection_for(&mut self, quiet: Duration) {
        self.accepted_so_far();
        if let Ok(Some(index)) = tokio::time::timeout(quiet, self.accepted.recv()).await {
            panic!("unexpected connection #{index}");
        }
    }

    /// Connections accepted so far.
    fn accepted_so_far(&mut self) -> usize {
        while self.accepted.try_recv().is_ok() {
            self.counted += 1;
        }
        self.counted
    }
}

async fn run(mut tcp: TcpStream, plan: Plan, ends: Arc<Mutex<Vec<Option<Closed>>>>) {
    match plan {
        Plan::Drop => drop(tcp),
        Plan::Refuse => {
            let mut head = Vec::new();
            let mut byte = [0u8; 1];
            while !head.ends_with(b"\r\n\r\n") {
                if tcp.read(&mut byte).await.unwrap_or(0) == 0 {
                    return;
                }
                head.push(byte[0]);
            }
            let _ = tcp
                .write_all(b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n")
                .await;
        }
        Plan::Echo | Plan::EchoOnceThenDrop | Plan::CloseWith(_) => {
            let Ok(mut ws) = sockeye::accept(tcp).await else {
                return;
            };
            if let Plan::CloseWith(code) = plan {
                let _ = ws.close(CloseCode(code), "scripted").await;
                ends.lock().unwrap().push(ws.close_info().cloned());
                return;
            }
            while let Some(Ok(message)) = ws.next().await {
                if message.is_data() {
                    let _ = ws.send(message).await;
                    if matches!(plan, Plan::EchoOnceThenDrop) {
                        // Abrupt: no close frame, just the end of TCP.
                        return;
                    }
                }
            }
            ends.lock().unwrap().push(ws.close_info().cloned());
        }
    }
}

fn fast_backoff() -> Backoff {
    Backoff::default()
        .initial(Duration::from_millis(40))
        .max(Duration::from_millis(400))
        .multiplier(2.0)
        .jitter(0.2)
}

async fn next(client: &mut ReconnectingClient) -> ReconnectEvent {
    within("next event", client.next_event())
        .await
        .expect("an event, not the end")
}

/// Asserts a delay is the backoff's for `attempt` within jitter.
fn assert_delay(backoff: &Backoff, attempt: u32, delay: Duration) {
    let base = backoff.base_delay(attempt).as_secs_f64();
    let low = base * (1.0 - backoff.jitter) - 1e-6;
    let high = (base * (1.0 + backoff.jitter)).min(backoff.max.as_secs_f64()) + 1e-6;
    let got = delay.as_secs_f64();
    assert!(
        (low..=high).contains(&got),
        "attempt {attempt}: {got} s outside [{low}, {high}]"
    );
}

/// Sends `text` and expects it echoed as the next event.
async fn echo(client: &mut ReconnectingClient, text: &str) {
    within("send", client.send(Message::text(text)))
        .await
        .expect("send while connected");
    match next(client).await {
        ReconnectEvent::Message(message) => assert_eq!(message, Message::text(text)),
        other => panic!("expected the echo, got {other:?}"),
    }
}

#[tokio::test]
async fn failed_connects_are_retried_with_growing_delays() {
    let mut server = ScriptedServer::start(|i| if i < 3 { Plan::Drop } else { Plan::Echo }).await;
    let backoff = fast_backoff();
    let mut client = ReconnectingClient::new(ClientBuilder::new(server.url()), backoff);
    assert!(!client.is_connected());
    // (when, summary, delay announced)
    let mut log: Vec<(Instant, String, Option<Duration>)> = Vec::new();
    loop {
        let event = next(&mut client).await;
        let at = Instant::now();
        match event {
            ReconnectEvent::ConnectFailed { attempt, error } => {
                assert!(matches!(error, Error::Io(_)), "{error:?}");
                log.push((at, format!("failed {attempt}"), None));
            }
            ReconnectEvent::Reconnecting { attempt, delay } => {
                assert_delay(&backoff, attempt, delay);
                // Nothing can be sent while waiting.
                let e = client.send(Message::text("too early")).await.unwrap_err();
                assert!(matches!(e, Error::Send(SendError::Closed)), "{e:?}");
                log.push((at, format!("reconnecting {attempt}"), Some(delay)));
            }
            ReconnectEvent::Connected { attempt, response } => {
                assert_eq!(response.status(), 101);
                log.push((at, format!("connected {attempt}"), None));
                break;
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    let summary: Vec<&str> = log.iter().map(|(_, s, _)| s.as_str()).collect();
    assert_eq!(
        summary,
        [
            "failed 0",
            "reconnecting 1",
            "failed 1",
            "reconnecting 2",
            "failed 2",
            "reconnecting 3",
            "connected 3"
        ]
    );
    // Each attempt waited for its delay (whose timer started just before the announcement).
    for pair in log.windows(2) {
        if let (Some(delay), next_at) = (pair[0].2, pair[1].0) {
            let waited = next_at - pair[0].0;
            assert!(
                waited + Duration::from_millis(2) >= delay,
                "{}: waited {waited:?} for {delay:?}",
                pair[0].1
            );
        }
    }
    assert!(client.is_connected());
    echo(&mut client, "after reconnecting").await;
    assert_eq!(server.accepted_so_far(), 4);
}

#[tokio::test]
async fn exact_delays_without_jitter() {
    let mut server = ScriptedServer::start(|i| if i < 4 { Plan::Drop } else { Plan::Echo }).await;
    let backoff = fast_backoff()
        .jitter(0.0)
        .initial(Duration::from_millis(20));
    let mut client = ReconnectingClient::new(ClientBuilder::new(server.url()), backoff);
    let mut delays = Vec::new();
    loop {
        match next(&mut client).await {
            ReconnectEvent::Reconnecting { delay, .. } => delays.push(delay),
            ReconnectEvent::ConnectFailed { .. } => {}
            ReconnectEvent::Connected { attempt, .. } => {
                assert_eq!(attempt, 4);
                break;
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    let ms = |n| Duration::from_millis(n);
    assert_eq!(delays, [ms(20), ms(40), ms(80), ms(160)]);
    echo(&mut client, "hello").await;
    assert_eq!(server.accepted_so_far(), 5);
}

#[tokio::test]
async fn abnormal_close_reconnects_and_messages_flow() {
    let mut server = ScriptedServer::start(|i| {
        if i < 2 {
            Plan::EchoOnceThenDrop
        } else {
            Plan::Echo
        }
    })
    .await;
    let backoff = fast_backoff();
    let mut client = ReconnectingClient::new(ClientBuilder::new(server.url()), backoff);
    for round in 0..2u32 {
        match next(&mut client).await {
            ReconnectEvent::Connected { attempt, .. } => assert_eq!(attempt, round),
            other => panic!("expected Connected, got {other:?}"),
        }
        echo(&mut client, &format!("round {round}")).await;
        match next(&mut client).await {
            ReconnectEvent::Disconnected { close, error } => {
                assert!(matches!(error, Some(Error::AbnormalClosure)), "{error:?}");
                let close = close.expect("close info");
                assert!(!close.was_clean);
                assert_eq!(close.code, CloseCode::ABNORMAL);
            }
            other => panic!("expected Disconnected, got {other:?}"),
        }
        // Connections shorter than reset_after count as failures: the delays keep growing.
        match next(&mut client).await {
            ReconnectEvent::Reconnecting { attempt, delay } => {
                assert_eq!(attempt, round + 1);
                assert_delay(&backoff, attempt, delay);
            }
            other => panic!("expected Reconnecting, got {other:?}"),
        }
    }
    match next(&mut client).await {
        ReconnectEvent::Connected { attempt, .. } => assert_eq!(attempt, 2),
        other => panic!("expected Connected, got {other:?}"),
    }
    echo(&mut client, "third connection").await;
    echo(&mut client, "still there").await;
    assert_eq!(server.accepted_so_far(), 3);
}

#[tokio::test]
async fn stable_connection_resets_the_backoff() {
    let server = ScriptedServer::start(|i| {
        if i < 2 {
            Plan::EchoOnceThenDrop
        } else {
            Plan::Echo
        }
    })
    .await;
    let backoff = fast_backoff().reset_after(Duration::ZERO);
    let mut client = ReconnectingClient::new(ClientBuilder::new(server.url()), backoff);
    for round in 0..2 {
        assert!(matches!(
            next(&mut client).await,
            ReconnectEvent::Connected { .. }
        ));
        echo(&mut client, &format!("round {round}")).await;
        assert!(matches!(
            next(&mut client).await,
            ReconnectEvent::Disconnected { .. }
        ));
        // Every connection counts as stable: each loss is failure number 1 again.
        match next(&mut client).await {
            ReconnectEvent::Reconnecting { attempt, delay } => {
                assert_eq!(attempt, 1);
                assert_delay(&backoff, 1, delay);
            }
            other => panic!("expected Reconnecting, got {other:?}"),
        }
    }
}

#[tokio::test]
async fn max_attempts_then_gives_up() {
    let mut server = ScriptedServer::start(|_| Plan::Drop).await;
    let backoff = fast_backoff().max_attempts(Some(2));
    let mut client = ReconnectingClient::new(ClientBuilder::new(server.url()), backoff);
    let mut events = Vec::new();
    while let Some(event) = within("events", client.next_event()).await {
        events.push(event);
    }
    let summary: Vec<String> = events
        .iter()
        .map(|event| match event {
            ReconnectEvent::ConnectFailed { attempt, .. } => format!("failed {attempt}"),
            ReconnectEvent::Reconnecting { attempt, .. } => format!("reconnecting {attempt}"),
            ReconnectEvent::GaveUp { failures } => format!("gave up after {failures}"),
            other => panic!("unexpected {other:?}"),
        })
        .collect();
    assert_eq!(
        summary,
        [
            "failed 0",
            "reconnecting 1",
            "failed 1",
            "reconnecting 2",
            "failed 2",
            "gave up after 3"
        ]
    );
    // Ended for good: the stream is fused and the server sees no more attempts.
    assert!(client.next_event().await.is_none());
    assert!(futures_util::stream::FusedStream::is_terminated(&client));
    assert_eq!(server.accepted_so_far(), 3);
    server
        .assert_no_connection_for(Duration::from_millis(200))
        .await;
}

#[tokio::test]
async fn zero_attempts_never_reconnects() {
    let mut server = ScriptedServer::start(|_| Plan::EchoOnceThenDrop).await;
    let backoff = fast_backoff().max_attempts(Some(0));
    let mut client = ReconnectingClient::new(ClientBuilder::new(server.url()), backoff);
    assert!(matches!(
        next(&mut client).await,
        ReconnectEvent::Connected { attempt: 0, .. }
    ));
    echo(&mut client, "once").await;
    assert!(matches!(
        next(&mut client).await,
        ReconnectEvent::Disconnected {
            error: Some(Error::AbnormalClosure),
            ..
        }
    ));
    assert!(matches!(
        next(&mut client).await,
        ReconnectEvent::GaveUp { failures: 1 }
    ));
    assert!(client.next_event().await.is_none());
    assert_eq!(server.accepted_so_far(), 1);
    server
        .assert_no_connection_for(Duration::from_millis(200))
        .await;
}

#[tokio::test]
async fn user_close_never_reconnects() {
    let mut server = ScriptedServer::start(|_| Plan::Echo).await;
    let mut client = ReconnectingClient::new(ClientBuilder::new(server.url()), fast_backoff());
    assert!(matches!(
        next(&mut client).await,
        ReconnectEvent::Connected { attempt: 0, .. }
    ));
    echo(&mut client, "hi").await;
    // An invalid code is refused without closing anything.
    let e = client.close(CloseCode(1005), "").await.unwrap_err();
    assert!(
        matches!(e, Error::Send(SendError::InvalidCloseCode(1005))),
        "{e:?}"
    );
    assert!(client.is_connected());
    within("close", client.close(CloseCode::NORMAL, "bye"))
        .await
        .unwrap();
    assert!(!client.is_connected());
    assert!(within("end", client.next_event()).await.is_none());
    let e = client.send(Message::text("after close")).await.unwrap_err();
    assert!(matches!(e, Error::Send(SendError::Closed)), "{e:?}");
    // Longer than the first backoff delays: no reconnect.
    server
        .assert_no_connection_for(Duration::from_millis(300))
        .await;
    assert_eq!(server.accepted_so_far(), 1);
    let ends = server.ends.lock().unwrap().clone();
    assert_eq!(ends.len(), 1, "exactly one connection ended: {ends:?}");
    let end = ends[0].clone().expect("close info");
    assert!(end.was_clean);
    assert_eq!((end.code, end.reason.as_str()), (CloseCode::NORMAL, "bye"));
}

#[tokio::test]
async fn close_while_waiting_stops_reconnecting() {
    let mut server = ScriptedServer::start(|_| Plan::Drop).await;
    let backoff = fast_backoff().initial(Duration::from_millis(100));
    let mut client = ReconnectingClient::new(ClientBuilder::new(server.url()), backoff);
    assert!(matches!(
        next(&mut client).await,
        ReconnectEvent::ConnectFailed { .. }
    ));
    assert!(matches!(
        next(&mut client).await,
        ReconnectEvent::Reconnecting { .. }
    ));
    client.close(CloseCode::NORMAL, "").await.unwrap();
    assert!(client.next_event().await.is_none());
    server
        .assert_no_connection_for(Duration::from_millis(300))
        .await;
    assert_eq!(server.accepted_so_far(), 1);
}

#[tokio::test]
async fn server_close_codes() {
    // 1012 service restart: reconnect. 1000 normal: the session is over.
    let mut server = ScriptedServer::start(|i| match i {
        0 => Plan::CloseWith(1012),
        _ => Plan::CloseWith(1000),
    })
    .await;
    let mut client = ReconnectingClient::new(ClientBuilder::new(server.url()), fast_backoff());
    assert!(matches!(
        next(&mut client).await,
        ReconnectEvent::Connected { attempt: 0, .. }
    ));
    let mut saw_close_frame = false;
    loop {
        match next(&mut client).await {
            ReconnectEvent::Message(Message::Close(Some(frame))) => {
                assert_eq!(frame.code, CloseCode::SERVICE_RESTART);
                saw_close_frame = true;
            }
            ReconnectEvent::Disconnected { close, error } => {
                assert!(error.is_none(), "{error:?}");
                let close = close.unwrap();
                assert!(close.was_clean);
                assert_eq!(close.code, CloseCode::SERVICE_RESTART);
                break;
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    assert!(saw_close_frame);
    assert!(matches!(
        next(&mut client).await,
        ReconnectEvent::Reconnecting { attempt: 1, .. }
    ));
    assert!(matches!(
        next(&mut client).await,
        ReconnectEvent::Connected { attempt: 1, .. }
    ));
    loop {
        match next(&mut client).await {
            ReconnectEvent::Message(Message::Close(_)) => {}
            ReconnectEvent::Disconnected { close, error } => {
                assert!(error.is_none(), "{error:?}");
                assert_eq!(close.unwrap().code, CloseCode::NORMAL);
                break;
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    assert!(within("end", client.next_event()).await.is_none());
    server
        .assert_no_connection_for(Duration::from_millis(200))
        .await;
    assert_eq!(server.accepted_so_far(), 2);
}

#[tokio::test]
async fn custom_close_policy() {
    let mut server = ScriptedServer::start(|i| match i {
        0 => Plan::CloseWith(4000),
        _ => Plan::Echo,
    })
    .await;
    let mut client = ReconnectingClient::new(ClientBuilder::new(server.url()), fast_backoff())
        .reconnect_on_close(|close| close.code.0 == 4000);
    assert!(matches!(
        next(&mut client).await,
        ReconnectEvent::Connected { attempt: 0, .. }
    ));
    loop {
        if let ReconnectEvent::Reconnecting { attempt, .. } = next(&mut client).await {
            assert_eq!(attempt, 1);
            break;
        }
    }
    assert!(matches!(
        next(&mut client).await,
        ReconnectEvent::Connected { attempt: 1, .. }
    ));
    echo(&mut client, "back").await;
    assert_eq!(server.accepted_so_far(), 2);
}

#[tokio::test]
async fn permanent_failure_gives_up_at_once() {
    let mut server = ScriptedServer::start(|_| Plan::Refuse).await;
    let mut client = ReconnectingClient::new(ClientBuilder::new(server.url()), fast_backoff());
    match next(&mut client).await {
        ReconnectEvent::ConnectFailed { attempt: 0, error } => {
            let Error::Http(response) = error else {
                panic!("expected an http refusal, got {error:?}");
            };
            assert_eq!(response.status(), 403);
        }
        other => panic!("expected ConnectFailed, got {other:?}"),
    }
    assert!(matches!(
        next(&mut client).await,
        ReconnectEvent::GaveUp { failures: 1 }
    ));
    assert!(client.next_event().await.is_none());
    server
        .assert_no_connection_for(Duration::from_millis(200))
        .await;
    assert_eq!(server.accepted_so_far(), 1);
}

#[tokio::test]
async fn server_down_at_start_retries_until_it_comes_up() {
    // A bound socket that does not listen yet: connects are refused, and the port stays ours.
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    socket
        .bind(&SocketAddr::from(([127, 0, 0, 1], 0)).into())
        .unwrap();
    let addr = socket.local_addr().unwrap().as_socket().unwrap();
    let backoff = fast_backoff();
    let mut client = ReconnectingClient::new(ClientBuilder::new(format!("ws://{addr}/")), backoff);
    for attempt in 0..2 {
        match next(&mut client).await {
            ReconnectEvent::ConnectFailed { attempt: a, error } => {
                assert_eq!(a, attempt);
                assert!(
                    matches!(&error, Error::Io(e) if e.kind() == std::io::ErrorKind::ConnectionRefused),
                    "{error:?}"
                );
            }
            other => panic!("expected ConnectFailed, got {other:?}"),
        }
        match next(&mut client).await {
            ReconnectEvent::Reconnecting { attempt: a, delay } => {
                assert_eq!(a, attempt + 1);
                assert_delay(&backoff, a, delay);
            }
            other => panic!("expected Reconnecting, got {other:?}"),
        }
    }
    // The server comes up during the second wait.
    socket.listen(128).unwrap();
    socket.set_nonblocking(true).unwrap();
    let listener = TcpListener::from_std(socket.into()).unwrap();
    let mut server = ScriptedServer::serve(listener, |_| Plan::Echo);
    match next(&mut client).await {
        ReconnectEvent::Connected { attempt, .. } => assert_eq!(attempt, 2),
        other => panic!("expected Connected, got {other:?}"),
    }
    echo(&mut client, "finally").await;
    assert_eq!(server.accepted_so_far(), 1);
}

#[tokio::test]
async fn next_event_is_cancel_safe() {
    // Poll with a deadline far shorter than every step: no event is lost or repeated.
    let server = ScriptedServer::start(|i| if i < 2 { Plan::Drop } else { Plan::Echo }).await;
    let backoff = fast_backoff()
        .jitter(0.0)
        .initial(Duration::from_millis(20));
    let mut client = ReconnectingClient::new(ClientBuilder::new(server.url()), backoff);
    let mut summary = Vec::new();
    let deadline = Instant::now() + PATIENCE;
    while Instant::now() < deadline {
        let Ok(event) = tokio::time::timeout(Duration::from_micros(300), client.next_event()).await
        else {
            continue;
        };
        match event.expect("not the end") {
            ReconnectEvent::ConnectFailed { attempt, .. } => summary.push(format!("f{attempt}")),
            ReconnectEvent::Reconnecting { attempt, .. } => summary.push(format!("r{attempt}")),
            ReconnectEvent::Connected { attempt, .. } => {
                summary.push(format!("c{attempt}"));
                break;
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(summary, ["f0", "r1", "f1", "r2", "c2"]);
    echo(&mut client, "whole").await;
}
