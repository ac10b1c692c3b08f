//! `sockeye_hub`: topics, fan-out sharing the payload, the slow-consumer policies with bounded
//! queues, metrics, the in-process backplane between hubs, and a never-reading WebSocket client
//! over loopback TCP. Every wait is bounded by `PATIENCE`.

use std::future::Future;
use std::time::Duration;

use futures_util::StreamExt as _;
use sockeye::{CloseCode, Message, Server};
use sockeye_hub::{Hub, HubConfig, InProcessBackplane, SlowConsumer, Subscriber};

/// Upper bound on anything that should happen promptly: a hang fails the test instead of
/// stalling the suite. Never used to wait for something to happen.
const PATIENCE: Duration = Duration::from_secs(20);

/// Awaits `fut`, failing the test if it takes longer than [`PATIENCE`].
async fn within<F: Future>(what: &str, fut: F) -> F::Output {
    let outcome = tokio::time::timeout(PATIENCE, fut).await;
    outcome.unwrap_or_else(|_| panic!("timed out: {what}"))
}

fn text(s: &str) -> Message {
    Message::text(s)
}

/// Everything queued for `subscriber`, without waiting.
fn drain(subscriber: &mut Subscriber) -> Vec<Message> {
    std::iter::from_fn(|| subscriber.try_recv())
        .map(|m| m.message().clone())
        .collect()
}

#[tokio::test]
async fn publish_reaches_the_subscribers_of_the_topic_only_and_shares_the_payload() {
    let hub = Hub::new(HubConfig::default());
    let mut a = hub.subscriber();
    let mut b = hub.subscriber();
    let mut other = hub.subscriber();
    assert!(a.subscribe("news"));
    assert!(!a.subscribe("news"), "already subscribed");
    assert!(b.subscribe("news"));
    assert!(b.subscribe("sport"));
    assert!(other.subscribe("sport"));
    let payload = Message::binary(vec![7u8; 1000]);
    assert_eq!(hub.publish("news", payload.clone()), 2);
    assert_eq!(hub.publish("nobody", text("lost")), 0);
    let got_a = within("a", a.recv()).await.unwrap().message().clone();
    let got_b = within("b", b.recv()).await.unwrap().message().clone();
    assert_eq!(got_a, payload);
    assert_eq!(
        got_a.as_payload().as_ptr(),
        got_b.as_payload().as_ptr(),
        "recipients share one payload buffer"
    );
    assert!(drain(&mut other).is_empty());
    assert_eq!(hub.publish("sport", text("goal")), 2);
    assert_eq!(drain(&mut b), vec![text("goal")]);
    assert_eq!(drain(&mut other), vec![text("goal")]);
    // Control messages are not published.
    assert_eq!(hub.publish("news", Message::Ping(Default::default())), 0);
    let m = hub.metrics();
    assert_eq!(
        (m.connections, m.subscriptions, m.topics),
        (3, 4, 2),
        "{m:?}"
    );
    assert_eq!(
        (m.messages_in, m.messages_out, m.dropped),
        (3, 4, 0),
        "{m:?}"
    );
}

#[tokio::test]
async fn subscriber_publish_skips_itself_and_order_is_kept() {
    let hub = Hub::new(HubConfig::default());
    let mut a = hub.subscriber();
    let mut b = hub.subscriber();
    a.subscribe("room");
    b.subscribe("room");
    for i in 0..100 {
        assert_eq!(a.publish("room", text(&i.to_string())), 1);
    }
    assert!(
        drain(&mut a).is_empty(),
        "a publisher does not get its own messages"
    );
    let got: Vec<Message> = drain(&mut b);
    let expected: Vec<Message> = (0..100).map(|i| text(&i.to_string())).collect();
    assert_eq!(got, expected);
}

#[tokio::test]
async fn unsubscribe_and_drop_end_subscriptions() {
    let hub = Hub::new(HubConfig::default());
    let mut a = hub.subscriber();
    let mut b = hub.subscriber();
    a.subscribe("t");
    a.subscribe("u");
    b.subscribe("t");
    assert_eq!(hub.subscriber_count("t"), 2);
    assert!(a.unsubscribe("t"));
    assert!(!a.unsubscribe("t"));
    assert_eq!(hub.publish("t", text("x")), 1);
    assert!(drain(&mut a).is_empty());
    drop(b);
    assert_eq!(hub.subscriber_count("t"), 0);
    assert_eq!(hub.publish("t", text("y")), 0);
    let m = hub.metrics();
    assert_eq!(
        (m.connections, m.subscriptions, m.topics),
        (1, 1, 1),
        "{m:?}"
    );
    drop(a);
    let m = hub.metrics();
    assert_eq!(
        (m.connections, m.subscriptions, m.topics),
        (0, 0, 0),
        "{m:?}"
    );
}

#[tokio::test]
async fn drop_policy_bounds_a_never_reading_subscriber_and_counts_what_it_misses() {
    const QUEUE: usize = 16;
    const MESSAGES: usize = 10_000;
    const SIZE: usize = 1024;
    let hub = Hub::new(
        HubConfig::default()
            .max_queued_messages(QUEUE)
            .max_queued_size(1 << 20)
            .slow_consumer(SlowConsumer::Drop)
            .stall_timeout(Duration::ZERO),
    );
    let stalled = {
        let mut s = hub.subscriber();
        s.subscribe("feed");
        s
    };
    let mut reader = hub.subscriber();
    reader.subscribe("feed");
    for i in 0..MESSAGES {
        let mut payload = vec![0u8; SIZE];
        payload[..8].copy_from_slice(&(i as u64).to_be_bytes());
        hub.publish("feed", Message::binary(payload));
        // The reader keeps up; the stalled subscriber never reads.
        let got = reader.try_recv().expect("the reader gets every message");
        let got = got.message();
        assert_eq!(
            u64::from_be_bytes(got.as_payload()[..8].try_into().unwrap()),
            i as u64
        );
        let (messages, bytes) = stalled.queued();
        assert!(
            messages <= QUEUE && bytes <= QUEUE * SIZE,
            "{messages} {bytes}"
        );
    }
    assert_eq!(stalled.queued(), (QUEUE, QUEUE * SIZE));
    assert_eq!(stalled.eviction(), None, "Drop keeps the subscriber");
    let m = hub.metrics();
    assert_eq!(m.dropped, (MESSAGES - QUEUE) as u64);
    assert_eq!(m.evicted, 0);
    assert_eq!(m.messages_out, (MESSAGES + QUEUE) as u64);
    // Once it reads, it gets the first QUEUE messages, then new ones: a visible gap.
    let mut stalled = stalled;
    let kept = drain(&mut stalled);
    assert_eq!(kept.len(), QUEUE);
    assert_eq!(kept[QUEUE - 1].as_payload()[7], (QUEUE - 1) as u8);
    hub.publish("feed", text("after"));
    assert_eq!(drain(&mut stalled), vec![text("after")]);
}

#[tokio::test]
async fn close_policy_evicts_with_its_code_and_the_others_keep_receiving() {
    let hub = Hub::new(
        HubConfig::default()
            .max_queued_messages(100)
            .max_queued_size(10)
            .slow_consumer(SlowConsumer::Close(CloseCode::TRY_AGAIN_LATER))
            .stall_timeout(Duration::ZERO),
    );
    let mut slow = hub.subscriber();
    slow.subscribe("r");
    slow.subscribe("other");
    let mut reader = hub.subscriber();
    reader.subscribe("r");
    // A message larger than the byte limit still fits an empty queue.
    assert_eq!(hub.publish("r", Message::binary(vec![1; 20])), 2);
    assert_eq!(drain(&mut reader).len(), 1);
    assert_eq!(
        hub.publish("r", Message::binary(vec![2; 6])),
        1,
        "slow is full"
    );
    assert_eq!(
        within("evicted", slow.evicted()).await,
        CloseCode::TRY_AGAIN_LATER
    );
    assert_eq!(slow.eviction(), Some(CloseCode::TRY_AGAIN_LATER));
    assert!(
        within("recv", slow.recv()).await.is_none(),
        "an evicted subscriber gets nothing more"
    );
    assert!(
        !slow.subscribe("again"),
        "an evicted subscriber cannot subscribe"
    );
    assert_eq!(drain(&mut reader), vec![Message::binary(vec![2; 6])]);
    for i in 0..50 {
        assert_eq!(hub.publish("r", text(&i.to_string())), 1);
        assert_eq!(drain(&mut reader), vec![text(&i.to_string())]);
    }
    // Its other topic lets it go at the next publish there.
    assert_eq!(hub.publish("other", text("x")), 0);
    let m = hub.metrics();
    assert_eq!((m.dropped, m.evicted), (1, 1), "{m:?}");
    assert_eq!(hub.subscriber_count("other"), 0);
}

#[tokio::test]
async fn in_process_backplane_joins_hubs() {
    let bus = InProcessBackplane::new();
    let one = Hub::with_backplane(HubConfig::default(), bus.clone());
    let two = Hub::with_backplane(HubConfig::default(), bus.clone());
    let alone = Hub::new(HubConfig::default());
    let mut on_one = one.subscriber();
    let mut on_two = two.subscriber();
    let mut on_alone = alone.subscriber();
    let publisher = {
        let mut p = one.subscriber();
        p.subscribe("room");
        p
    };
    on_one.subscribe("room");
    on_two.subscribe("room");
    on_alone.subscribe("room");
    for i in 0..20 {
        assert_eq!(publisher.publish("room", text(&i.to_string())), 1);
    }
    two.publish("room", text("from two"));
    let mut expected: Vec<Message> = (0..20).map(|i| text(&i.to_string())).collect();
    expected.push(text("from two"));
    assert_eq!(drain(&mut on_one), expected);
    assert_eq!(drain(&mut on_two), expected, "each message once, in order");
    assert!(
        drain(&mut on_alone).is_empty(),
        "a separate hub is another bus"
    );
    assert_eq!(two.metrics().backplane_in, 20);
    assert_eq!(one.metrics().backplane_in, 1);
    drop(two);
    assert_eq!(one.publish("room", text("still")), 2);
}

/// A topic per request path over real connections: a client that never reads is evicted with
/// 1008 while the others get every message, and the server's memory for it stays bounded.
#[tokio::test]
async fn a_never_reading_websocket_client_is_evicted_and_the_others_keep_receiving() {
    const MESSAGES: usize = 400;
    const SIZE: usize = 64 << 10;
    let hub = Hub::new(HubConfig::default().max_queued_messages(8));
    let handler_hub = hub.clone();
    let server = Server::bind("127.0.0.1:0").await.unwrap();
    let addr = server.local_addr().unwrap();
    // Stops with the test's runtime.
    tokio::spawn(server.serve(move |mut ws, request| {
        let hub = handler_hub.clone();
        async move {
            let topic = request.uri().path().to_owned();
            let mut me = hub.subscriber();
            me.subscribe(&topic);
            loop {
                tokio::select! {
                    item = ws.next() => match item {
                        Some(Ok(m)) if m.is_data() => { me.publish(&topic, m); }
                        Some(Ok(_)) => {}
                        _ => break,
                    },
                    next = me.recv() => {
                        // `None`: evicted.
                        let Some(m) = next else { break };
                        tokio::select! {
                            fed = ws.feed_prepared(&m) => if fed.is_err() { break },
                            _ = me.evicted() => break,
                        }
                    }
                }
            }
            if let Some(code) = me.eviction() {
                drop(me);
                let closing = ws.close(code, "too slow");
                let _ = tokio::time::timeout(std::time::Duration::from_secs(1), closing).await;
            }
        }
    }));
    let url = format!("ws://{addr}/room");
    let (mut sender, _) = within("connect", sockeye::connect(&url)).await.unwrap();
    let (mut reader, _) = within("connect", sockeye::connect(&url)).await.unwrap();
    let (mut stalled, _) = within("connect", sockeye::connect(&url)).await.unwrap();
    // All three are subscribed once the hub counts three subscriptions.
    within("subscriptions", async {
        while hub.metrics().subscriptions < 3 {
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
    })
    .await;
    for i in 0..MESSAGES {
        let mut payload = vec![0u8; SIZE];
        payload[..8].copy_from_slice(&(i as u64).to_be_bytes());
        within("send", sender.send(Message::binary(payload.clone())))
            .await
            .unwrap();
        let got = within("reader", async {
            loop {
                match reader.next().await {
                    Some(Ok(m)) if m.is_data() => break m,
                    Some(Ok(_)) => {}
                    other => panic!("reader: {other:?}"),
                }
            }
        })
        .await;
        assert_eq!(got, Message::binary(payload), "message {i}");
    }
    let m = hub.metrics();
    assert_eq!(m.evicted, 1, "{m:?}");
    assert!(m.dropped >= 1);
    // The stalled client gets what was buffered for it, then a 1008 close (or a reset).
    let mut received = 0;
    within("the stalled client is disconnected", async {
        loop {
            match stalled.next().await {
                Some(Ok(m)) if m.is_data() => received += 1,
                Some(Ok(_)) => {}
                Some(Err(_)) | None => break,
            }
        }
    })
    .await;
    assert!(received < MESSAGES, "the stalled client got everything");
    if let Some(closed) = stalled.close_info() {
        if closed.was_clean {
            assert_eq!(closed.code, CloseCode::POLICY_VIOLATION);
        }
    }
    within("subscriptions", async {
        while hub.metrics().connections > 2 {
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
    })
    .await;
}

/// A subscriber whose queue grew because it was not scheduled yet (the server is busy) is not
/// slow: past its limits its messages are still queued (and counted as backlogged), up to the
/// backlog allowance, beyond which it is evicted whatever it does.
#[tokio::test]
async fn a_backlog_is_queued_up_to_the_allowance_while_the_subscriber_is_not_stalled() {
    const QUEUE: usize = 4;
    let hub = Hub::new(
        HubConfig::default()
            .max_queued_messages(QUEUE)
            .stall_timeout(Duration::from_secs(3600)),
    );
    let mut busy = hub.subscriber();
    busy.subscribe("t");
    let allowance = QUEUE * sockeye_hub::BACKLOG_FACTOR;
    for i in 0..allowance {
        assert_eq!(hub.publish("t", text(&i.to_string())), 1, "message {i}");
    }
    let m = hub.metrics();
    assert_eq!(
        (m.backlogged, m.dropped, m.evicted),
        ((allowance - QUEUE) as u64, 0, 0)
    );
    // It takes one batch: it is active, and its queue has room again.
    let mut batch = Vec::new();
    assert_eq!(within("recv_many", busy.recv_many(&mut batch, 3)).await, 3);
    let batch_messages: Vec<Message> = batch.iter().map(|m| m.message().clone()).collect();
    assert_eq!(batch_messages, vec![text("0"), text("1"), text("2")]);
    for i in allowance..allowance + 3 {
        assert_eq!(hub.publish("t", text(&i.to_string())), 1, "message {i}");
    }
    // Over the allowance: evicted even though it was taking messages.
    assert_eq!(hub.publish("t", text("over")), 0);
    assert_eq!(busy.eviction(), Some(CloseCode::POLICY_VIOLATION));
    assert_eq!(
        within("recv_many", busy.recv_many(&mut batch, 100)).await,
        0
    );
    let m = hub.metrics();
    assert_eq!((m.dropped, m.evicted), (1, 1), "{m:?}");
}

/// A subscriber over its limits that takes nothing for the stall timeout is slow.
#[tokio::test]
async fn a_subscriber_that_stops_taking_messages_is_slow_after_the_stall_timeout() {
    const STALL: Duration = Duration::from_millis(100);
    let hub = Hub::new(
        HubConfig::default()
            .max_queued_messages(2)
            .slow_consumer(SlowConsumer::Drop)
            .stall_timeout(STALL),
    );
    let mut stalled = hub.subscriber();
    stalled.subscribe("t");
    for i in 0..3 {
        assert_eq!(hub.publish("t", text(&i.to_string())), 1);
    }
    assert_eq!(
        hub.metrics().backlogged,
        1,
        "over the limit, not stalled yet"
    );
    tokio::time::sleep(STALL * 2).await;
    assert_eq!(hub.publish("t", text("3")), 0, "stalled: dropped");
    assert_eq!(hub.metrics().dropped, 1);
    // Taking a message makes it active again; its queue, still over the limit, backlogs.
    assert_eq!(
        stalled.try_recv().map(|m| m.message().clone()),
        Some(text("0"))
    );
    assert_eq!(hub.publish("t", text("4")), 1);
    assert_eq!(
        drain(&mut stalled),
        vec![text("1"), text("2"), text("4")],
        "a visible gap where it was stalled"
    );
}

/// Publishers and subscribers on the threads of a multi-threaded runtime: every subscriber gets
/// every message exactly once, each publisher's in the order it published them, and all
/// subscribers see the messages of the topic in one order.
#[test]
fn across_threads_nothing_is_lost_duplicated_or_reordered() {
    const PUBLISHERS: u64 = 4;
    const SUBSCRIBERS: usize = 6;
    const MESSAGES: u64 = 5_000;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        .enable_all()
        .build()
        .unwrap();
    let total = (PUBLISHERS * MESSAGES) as usize;
    // Room for everything: nobody may miss anything, so nobody may be slow.
    let hub = Hub::new(
        HubConfig::default()
            .max_queued_messages(total)
            .max_queued_size(usize::MAX / 8),
    );
    let orders = runtime.block_on(async {
        let mut readers = Vec::new();
        for _ in 0..SUBSCRIBERS {
            let mut me = hub.subscriber();
            me.subscribe("t");
            readers.push(tokio::spawn(async move {
                let mut got = Vec::with_capacity(total);
                let mut batch = Vec::new();
                while got.len() < total {
                    batch.clear();
                    let n = within("recv_many", me.recv_many(&mut batch, 64)).await;
                    assert!(n > 0, "evicted");
                    got.extend(batch.iter().map(|m| {
                        let p = m.message().as_payload();
                        (p[0] as u64, u64::from_be_bytes(p[1..9].try_into().unwrap()))
                    }));
                }
                assert!(me.try_recv().is_none(), "nothing more than was published");
                got
            }));
        }
        let publishers: Vec<_> = (0..PUBLISHERS)
            .map(|id| {
                let hub = hub.clone();
                tokio::spawn(async move {
                    for seq in 0..MESSAGES {
                        let mut payload = vec![id as u8];
                        payload.extend_from_slice(&seq.to_be_bytes());
                        hub.publish("t", Message::binary(payload));
                        if seq % 256 == 0 {
                            tokio::task::yield_now().await;
                        }
                    }
                })
            })
            .collect();
        for p in publishers {
            p.await.unwrap();
        }
        let mut orders = Vec::new();
        for r in readers {
            orders.push(r.await.unwrap());
        }
        orders
    });
    for got in &orders {
        let mut next = vec![0u64; PUBLISHERS as usize];
        for &(id, seq) in got {
            assert_eq!(
                seq, next[id as usize],
                "publisher {id}: lost, duplicated or reordered"
            );
            next[id as usize] += 1;
        }
        assert!(next.iter().all(|&n| n == MESSAGES));
        assert_eq!(
            got, &orders[0],
            "one order of the topic for every subscriber"
        );
    }
    let m = hub.metrics();
    assert_eq!((m.dropped, m.evicted), (0, 0));
    assert_eq!(m.messages_out, (total * SUBSCRIBERS) as u64);
}
