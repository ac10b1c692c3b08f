//! Topics: a publish/subscribe hub for fan-out to many WebSocket connections, optionally spanning
//! several server processes ("nodes") through a [`Backplane`].
//!
//! A connection's task takes a [`Subscriber`] from the [`Hub`], subscribes it to any number of
//! topics, and writes to its WebSocket what [`Subscriber::recv`] yields; dropping the
//! `Subscriber` (the connection ended) ends all its subscriptions. [`Hub::publish`] queues the
//! message for every subscriber of the topic and returns at once: it never waits for a
//! subscriber. Recipients share the payload: a [`Message`] holds reference-counted [`Bytes`],
//! so fan-out to N subscribers clones a pointer N times, never the payload.
//!
//! # Slow consumers
//!
//! Each subscriber has a bounded queue: [`HubConfig::max_queued_messages`] messages and
//! [`HubConfig::max_queued_size`] payload bytes. A message that does not fit a subscriber's
//! queue is handled by [`HubConfig::slow_consumer`]:
//!
//! - [`SlowConsumer::Drop`]: that subscriber misses the message; it is counted in
//!   [`HubMetrics::dropped`]. The subscriber stays subscribed and gets later messages once its
//!   queue has room, so it sees a gap.
//! - [`SlowConsumer::Close`] (the default, with 1008): the subscriber is evicted from every
//!   topic, [`Subscriber::recv`] returns `None` and [`Subscriber::evicted`] yields the close
//!   code for the connection to close with (1008 policy violation, or 1013 try again later).
//!   Counted in [`HubMetrics::dropped`] and [`HubMetrics::evicted`].
//!
//! Either way memory per subscriber is bounded by its queue, and one slow subscriber delays no
//! one else.
//!
//! # Backplanes
//!
//! [`Hub::new`] uses an [`InProcessBackplane`] of its own: a single node, nothing to install.
//! Hubs created with [`Hub::with_backplane`] and clones of one [`InProcessBackplane`] reach
//! each other's subscribers within a process; with the `redis` feature, `RedisBackplane` uses
//! Redis pub/sub so that a publish on one node reaches subscribers on every node.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")] async fn main() {
//! use sockeye::hub::{Hub, HubConfig};
//! use sockeye::Message;
//!
//! let hub = Hub::new(HubConfig::default());
//! let mut alice = hub.subscriber();
//! alice.subscribe("news");
//! assert_eq!(hub.publish("news", Message::text("hello")), 1);
//! assert_eq!(alice.recv().await, Some(Message::text("hello")));
//! # }
//! ```

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};

use bytes::Bytes;
use sockeye_proto::{CloseCode, Message};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

#[cfg(feature = "redis")]
pub mod redis;
#[cfg(feature = "redis")]
pub use self::redis::RedisBackplane;

/// What happens to a message that does not fit a subscriber's queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum SlowConsumer {
    /// The subscriber misses this message (counted); it stays subscribed.
    Drop,
    /// The subscriber is evicted from all its topics; the connection should close with this
    /// code (1008 policy violation or 1013 try again later, see [`Subscriber::evicted`]).
    Close(CloseCode),
}

/// Limits of a [`Hub`].
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct HubConfig {
    /// Most messages queued for one subscriber. Raising it lets a subscriber fall further
    /// behind before [`HubConfig::slow_consumer`] applies, at the cost of memory.
    ///
    /// Default: 256. At least 1.
    pub max_queued_messages: usize,
    /// Most payload bytes queued for one subscriber; one message larger than this is still
    /// queued for a subscriber whose queue is empty, so that a large message is not lost for
    /// everybody. Memory held for one subscriber is at most about this plus one message.
    ///
    /// Default: 4 MiB.
    pub max_queued_size: usize,
    /// What to do when a message does not fit a subscriber's queue.
    ///
    /// Default: `SlowConsumer::Close(CloseCode::POLICY_VIOLATION)` (1008): a chat without
    /// invisible holes; the client learns it lost messages.
    pub slow_consumer: SlowConsumer,
}

impl Default for HubConfig {
    fn default() -> Self {
        Self {
            max_queued_messages: 256,
            max_queued_size: 4 << 20,
            slow_consumer: SlowConsumer::Close(CloseCode::POLICY_VIOLATION),
        }
    }
}

impl HubConfig {
    /// Sets [`HubConfig::max_queued_messages`] (0 is taken as 1).
    pub fn max_queued_messages(mut self, messages: usize) -> Self {
        self.max_queued_messages = messages.max(1);
        self
    }

    /// Sets [`HubConfig::max_queued_size`].
    pub fn max_queued_size(mut self, bytes: usize) -> Self {
        self.max_queued_size = bytes;
        self
    }

    /// Sets [`HubConfig::slow_consumer`].
    pub fn slow_consumer(mut self, policy: SlowConsumer) -> Self {
        self.slow_consumer = policy;
        self
    }
}

/// A snapshot of a hub's counters on this node. Gauges are current values; counters count
/// since the hub was created.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct HubMetrics {
    /// Gauge: live [`Subscriber`]s (connections using the hub).
    pub connections: u64,
    /// Gauge: (subscriber, topic) pairs.
    pub subscriptions: u64,
    /// Gauge: topics with at least one subscriber on this node.
    pub topics: u64,
    /// Counter: messages published on this node ([`Hub::publish`], [`Subscriber::publish`]).
    pub messages_in: u64,
    /// Counter: messages received from other nodes through the backplane.
    pub backplane_in: u64,
    /// Counter: messages queued for a subscriber (one per recipient).
    pub messages_out: u64,
    /// Counter: messages a subscriber missed because its queue was full.
    pub dropped: u64,
    /// Counter: subscribers evicted for being slow ([`SlowConsumer::Close`]).
    pub evicted: u64,
    /// Gauge: whether the backplane is connected ([`Backplane::is_connected`]).
    pub backplane_up: bool,
    /// Counter: backplane failures (connection lost or refused, a command failed).
    pub backplane_errors: u64,
    /// Counter: publishes not sent to other nodes because the backplane was down or its
    /// outgoing queue full.
    pub backplane_dropped: u64,
}

impl HubMetrics {
    /// The metrics in the Prometheus text exposition format (version 0.0.4), each name
    /// prefixed with `prefix` (e.g. `sockeye_hub_`).
    pub fn to_prometheus(&self, prefix: &str) -> String {
        let rows: [(&str, &str, &str, u64); 11] = [
            (
                "connections",
                "gauge",
                "Live subscribers (connections using the hub).",
                self.connections,
            ),
            (
                "subscriptions",
                "gauge",
                "Subscriptions (subscriber, topic pairs).",
                self.subscriptions,
            ),
            (
                "topics",
                "gauge",
                "Topics with local subscribers.",
                self.topics,
            ),
            (
                "messages_in_total",
                "counter",
                "Messages published on this node.",
                self.messages_in,
            ),
            (
                "backplane_in_total",
                "counter",
                "Messages received from other nodes.",
                self.backplane_in,
            ),
            (
                "messages_out_total",
                "counter",
                "Messages queued for subscribers.",
                self.messages_out,
            ),
            (
                "dropped_total",
                "counter",
                "Messages missed by a subscriber with a full queue.",
                self.dropped,
            ),
            (
                "evicted_total",
                "counter",
                "Subscribers evicted for being slow.",
                self.evicted,
            ),
            (
                "backplane_up",
                "gauge",
                "1 if the backplane to other nodes is connected.",
                u64::from(self.backplane_up),
            ),
            (
                "backplane_errors_total",
                "counter",
                "Backplane failures.",
                self.backplane_errors,
            ),
            (
                "backplane_dropped_total",
                "counter",
                "Publishes not sent to other nodes.",
                self.backplane_dropped,
            ),
        ];
        let mut out = String::new();
        for (name, kind, help, value) in rows {
            out.push_str(&format!(
                "# HELP {prefix}{name} {help}\n# TYPE {prefix}{name} {kind}\n{prefix}{name} {value}\n"
            ));
        }
        out
    }
}

/// Atomic counters behind [`HubMetrics`].
#[derive(Debug, Default)]
struct Counters {
    connections: AtomicU64,
    subscriptions: AtomicU64,
    messages_in: AtomicU64,
    backplane_in: AtomicU64,
    messages_out: AtomicU64,
    dropped: AtomicU64,
    evicted: AtomicU64,
    backplane_errors: AtomicU64,
    backplane_dropped: AtomicU64,
}

/// Identifies a hub (a node) on a backplane; random per hub.
pub type NodeId = u64;

/// Carries messages between the hubs of several nodes, so that a publish on one reaches the
/// subscribers of all.
///
/// A hub calls [`Backplane::attach`] once, when it is created, then [`Backplane::publish`]
/// after delivering each message locally, and [`Backplane::subscribe`] /
/// [`Backplane::unsubscribe`] when a topic gets its first local subscriber or loses its last.
/// The backplane hands messages from other nodes to [`BackplaneLink::deliver`].
///
/// Implementations must not block in any method: `publish` is called on the publisher's task.
/// A message that cannot be sent is dropped and counted with
/// [`BackplaneLink::record_dropped`] (or buffered within a documented bound).
pub trait Backplane: Send + Sync + fmt::Debug + 'static {
    /// Connects the backplane to the hub `link` points to.
    fn attach(&self, link: BackplaneLink);
    /// Sends a data message published on node `origin` to the other nodes.
    fn publish(&self, origin: NodeId, topic: &str, message: &Message);
    /// Topic `topic` got its first local subscriber.
    fn subscribe(&self, _topic: &str) {}
    /// Topic `topic` lost its last local subscriber.
    fn unsubscribe(&self, _topic: &str) {}
    /// The hub was dropped: stop whatever [`Backplane::attach`] started.
    fn detach(&self) {}
    /// Whether messages currently flow to and from the other nodes (always, in process).
    fn is_connected(&self) -> bool {
        true
    }
}

/// A backplane's handle on its hub: delivers messages from other nodes and records failures.
/// Holds the hub weakly: it does not keep the hub alive.
#[derive(Debug, Clone)]
pub struct BackplaneLink {
    hub: Weak<Inner>,
    node: NodeId,
}

impl BackplaneLink {
    /// The node id of the hub.
    pub fn node(&self) -> NodeId {
        self.node
    }

    /// Whether the hub still exists.
    pub fn is_alive(&self) -> bool {
        self.hub.strong_count() > 0
    }

    /// Delivers a message from another node to the local subscribers of `topic`; returns how
    /// many it was queued for (0 once the hub is gone; control messages are ignored).
    pub fn deliver(&self, topic: &str, message: Message) -> usize {
        let Some(hub) = self.hub.upgrade() else {
            return 0;
        };
        if !message.is_data() {
            return 0;
        }
        hub.counters.backplane_in.fetch_add(1, Ordering::Relaxed);
        hub.deliver_local(topic, &message, None)
    }

    /// Counts one backplane failure.
    pub fn record_error(&self) {
        if let Some(hub) = self.hub.upgrade() {
            hub.counters
                .backplane_errors
                .fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Counts `n` publishes not sent to other nodes.
    pub fn record_dropped(&self, n: u64) {
        if let Some(hub) = self.hub.upgrade() {
            hub.counters
                .backplane_dropped
                .fetch_add(n, Ordering::Relaxed);
        }
    }

    /// The topics with local subscribers (to resubscribe after a reconnect).
    pub fn topics(&self) -> Vec<String> {
        self.hub
            .upgrade()
            .map(|hub| hub.lock().keys().cloned().collect())
            .unwrap_or_default()
    }
}

/// The default backplane: hubs attached to clones of one `InProcessBackplane` exchange
/// messages directly, synchronously, within one process. A hub alone on it is a single node.
#[derive(Debug, Clone, Default)]
pub struct InProcessBackplane {
    links: Arc<Mutex<Vec<BackplaneLink>>>,
}

impl InProcessBackplane {
    /// A new, empty bus.
    pub fn new() -> Self {
        Self::default()
    }
}

impl Backplane for InProcessBackplane {
    fn attach(&self, link: BackplaneLink) {
        let mut links = self.links.lock().unwrap_or_else(PoisonError::into_inner);
        links.retain(BackplaneLink::is_alive);
        links.push(link);
    }

    fn publish(&self, origin: NodeId, topic: &str, message: &Message) {
        // Delivered outside the bus lock: a hub's delivery may not call back into the bus.
        let links: Vec<BackplaneLink> = self
            .links
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .filter(|link| link.node != origin)
            .cloned()
            .collect();
        for link in links {
            link.deliver(topic, message.clone());
        }
    }
}

/// A publish/subscribe hub; cheap to clone (clones share the hub). See the [module
/// docs](self).
#[derive(Debug, Clone)]
pub struct Hub {
    inner: Arc<Inner>,
}

/// A subscriber's slot in the topics it holds.
#[derive(Debug)]
struct Member {
    queue: mpsc::Sender<Message>,
    /// Payload bytes in `queue`: added before a message is queued, taken off by
    /// [`Subscriber::recv`].
    queued_size: AtomicUsize,
    evicted: CancellationToken,
    /// The close code of an eviction, set before `evicted` is cancelled.
    close_code: Mutex<Option<CloseCode>>,
}

type Topics = HashMap<String, HashMap<u64, Arc<Member>>>;

struct Inner {
    topics: Mutex<Topics>,
    config: HubConfig,
    counters: Counters,
    next_id: AtomicU64,
    node: NodeId,
    backplane: Box<dyn Backplane>,
}

impl fmt::Debug for Inner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Hub")
            .field("node", &self.node)
            .field("config", &self.config)
            .field("backplane", &self.backplane)
            .finish_non_exhaustive()
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.backplane.detach();
    }
}

/// What became of a message offered to one member.
enum Offer {
    Queued,
    Full,
    Gone,
}

impl Inner {
    fn lock(&self) -> MutexGuard<'_, Topics> {
        // No invariant spans entries: the map stays usable whatever a panicking holder did.
        self.topics.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Queues `message` for every local subscriber of `topic` but `except`, never waiting;
    /// applies the slow-consumer policy. Returns how many it was queued for.
    fn deliver_local(&self, topic: &str, message: &Message, except: Option<u64>) -> usize {
        let size = message.as_payload().len();
        let (mut queued, mut dropped, mut evicted) = (0u64, 0u64, 0u64);
        let mut topics = self.lock();
        let Some(members) = topics.get_mut(topic) else {
            return 0;
        };
        members.retain(|id, member| {
            if Some(*id) == except {
                return true;
            }
            if member.evicted.is_cancelled() {
                return false;
            }
            let before = member.queued_size.fetch_add(size, Ordering::Relaxed);
            let offer = if before > 0 && before.saturating_add(size) > self.config.max_queued_size {
                Offer::Full
            } else {
                match member.queue.try_send(message.clone()) {
                    Ok(()) => Offer::Queued,
                    Err(mpsc::error::TrySendError::Full(_)) => Offer::Full,
                    Err(mpsc::error::TrySendError::Closed(_)) => Offer::Gone,
                }
            };
            match offer {
                Offer::Queued => {
                    queued += 1;
                    true
                }
                Offer::Gone => {
                    member.queued_size.fetch_sub(size, Ordering::Relaxed);
                    false
                }
                Offer::Full => {
                    member.queued_size.fetch_sub(size, Ordering::Relaxed);
                    dropped += 1;
                    match self.config.slow_consumer {
                        SlowConsumer::Drop => true,
                        SlowConsumer::Close(code) => {
                            *member
                                .close_code
                                .lock()
                                .unwrap_or_else(PoisonError::into_inner) = Some(code);
                            member.evicted.cancel();
                            evicted += 1;
                            false
                        }
                    }
                }
            }
        });
        let emptied = members.is_empty();
        if emptied {
            topics.remove(topic);
        }
        drop(topics);
        // Evicted members left this topic here; their other topics are cleaned up by the next
        // publish there or when their `Subscriber` is dropped. `subscriptions` counts what the
        // subscribers hold, so it is settled by `Subscriber` itself.
        if emptied {
            self.backplane.unsubscribe(topic);
        }
        let c = &self.counters;
        c.messages_out.fetch_add(queued, Ordering::Relaxed);
        if dropped > 0 {
            c.dropped.fetch_add(dropped, Ordering::Relaxed);
        }
        if evicted > 0 {
            c.evicted.fetch_add(evicted, Ordering::Relaxed);
            tracing::debug!(
                topic,
                subscribers = evicted,
                "queue full: evicting slow subscribers"
            );
        }
        queued as usize
    }

    fn publish(&self, topic: &str, message: Message, except: Option<u64>) -> usize {
        if !message.is_data() {
            return 0;
        }
        self.counters.messages_in.fetch_add(1, Ordering::Relaxed);
        let queued = self.deliver_local(topic, &message, except);
        self.backplane.publish(self.node, topic, &message);
        queued
    }
}

impl Hub {
    /// A single-node hub (its own [`InProcessBackplane`]).
    pub fn new(config: HubConfig) -> Self {
        Self::with_backplane(config, InProcessBackplane::new())
    }

    /// A hub whose publishes also go to the other nodes of `backplane`.
    ///
    /// # Panics
    ///
    /// Whatever `backplane.attach` panics with: `RedisBackplane` spawns its tasks there and
    /// must be called within a tokio runtime.
    pub fn with_backplane(config: HubConfig, backplane: impl Backplane) -> Self {
        let mut node = [0u8; 8];
        // A failing RNG leaves a fixed id; nodes then only need distinct ones on one backplane,
        // which the counter below still gives within a process.
        let _ = getrandom::fill(&mut node);
        static LOCAL: AtomicU64 = AtomicU64::new(1);
        let node = u64::from_le_bytes(node) ^ LOCAL.fetch_add(1, Ordering::Relaxed);
        let config = HubConfig {
            max_queued_messages: config.max_queued_messages.max(1),
            ..config
        };
        let inner = Arc::new(Inner {
            topics: Mutex::new(HashMap::new()),
            config,
            counters: Counters::default(),
            next_id: AtomicU64::new(0),
            node,
            backplane: Box::new(backplane),
        });
        inner.backplane.attach(BackplaneLink {
            hub: Arc::downgrade(&inner),
            node,
        });
        Self { inner }
    }

    /// A new subscriber (for one connection), subscribed to nothing yet.
    pub fn subscriber(&self) -> Subscriber {
        let (queue, receiver) = mpsc::channel(self.inner.config.max_queued_messages);
        let member = Arc::new(Member {
            queue,
            queued_size: AtomicUsize::new(0),
            evicted: CancellationToken::new(),
            close_code: Mutex::new(None),
        });
        self.inner
            .counters
            .connections
            .fetch_add(1, Ordering::Relaxed);
        Subscriber {
            id: self.inner.next_id.fetch_add(1, Ordering::Relaxed),
            hub: self.inner.clone(),
            member,
            receiver,
            topics: HashSet::new(),
        }
    }

    /// Queues `message` for every subscriber of `topic` on this node and sends it to the other
    /// nodes, without waiting for anyone; returns how many local subscribers it was queued for.
    /// Control messages (ping, pong, close) are not published: 0.
    pub fn publish(&self, topic: &str, message: impl Into<Message>) -> usize {
        self.inner.publish(topic, message.into(), None)
    }

    /// Local subscribers of `topic`.
    pub fn subscriber_count(&self, topic: &str) -> usize {
        self.inner.lock().get(topic).map_or(0, HashMap::len)
    }

    /// This hub's id on its backplane.
    pub fn node(&self) -> NodeId {
        self.inner.node
    }

    /// The hub's configuration.
    pub fn config(&self) -> &HubConfig {
        &self.inner.config
    }

    /// A snapshot of the hub's counters.
    pub fn metrics(&self) -> HubMetrics {
        let c = &self.inner.counters;
        let load = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        HubMetrics {
            connections: load(&c.connections),
            subscriptions: load(&c.subscriptions),
            topics: self.inner.lock().len() as u64,
            messages_in: load(&c.messages_in),
            backplane_in: load(&c.backplane_in),
            messages_out: load(&c.messages_out),
            dropped: load(&c.dropped),
            evicted: load(&c.evicted),
            backplane_up: self.inner.backplane.is_connected(),
            backplane_errors: load(&c.backplane_errors),
            backplane_dropped: load(&c.backplane_dropped),
        }
    }
}

/// One connection's subscriptions and its queue of messages to write. Dropping it ends every
/// subscription.
#[derive(Debug)]
pub struct Subscriber {
    id: u64,
    hub: Arc<Inner>,
    member: Arc<Member>,
    receiver: mpsc::Receiver<Message>,
    topics: HashSet<String>,
}

impl Subscriber {
    /// This subscriber's id within its hub.
    pub fn id(&self) -> u64 {
        self.id
    }

    /// The topics this subscriber holds.
    pub fn topics(&self) -> impl Iterator<Item = &str> {
        self.topics.iter().map(String::as_str)
    }

    /// Subscribes to `topic`; `false` if already subscribed or evicted.
    pub fn subscribe(&mut self, topic: &str) -> bool {
        if self.member.evicted.is_cancelled() || self.topics.contains(topic) {
            return false;
        }
        let first = {
            let mut topics = self.hub.lock();
            let members = topics.entry(topic.to_owned()).or_default();
            members.insert(self.id, self.member.clone());
            members.len() == 1
        };
        self.topics.insert(topic.to_owned());
        self.hub
            .counters
            .subscriptions
            .fetch_add(1, Ordering::Relaxed);
        if first {
            self.hub.backplane.subscribe(topic);
        }
        true
    }

    /// Unsubscribes from `topic`; `false` if not subscribed. Messages already queued stay.
    pub fn unsubscribe(&mut self, topic: &str) -> bool {
        if !self.topics.remove(topic) {
            return false;
        }
        self.leave(topic);
        true
    }

    fn leave(&self, topic: &str) {
        self.hub
            .counters
            .subscriptions
            .fetch_sub(1, Ordering::Relaxed);
        let emptied = {
            let mut topics = self.hub.lock();
            match topics.get_mut(topic) {
                Some(members) => {
                    members.remove(&self.id);
                    let emptied = members.is_empty();
                    if emptied {
                        topics.remove(topic);
                    }
                    emptied
                }
                // Emptied by a publish that evicted this subscriber.
                None => false,
            }
        };
        if emptied {
            self.hub.backplane.unsubscribe(topic);
        }
    }

    /// Publishes to every subscriber of `topic` but this one (on every node), like
    /// [`Hub::publish`].
    pub fn publish(&self, topic: &str, message: impl Into<Message>) -> usize {
        self.hub.publish(topic, message.into(), Some(self.id))
    }

    /// The next queued message; `None` once the subscriber was evicted ([`SlowConsumer::Close`]),
    /// even if messages were still queued. Waits while subscribed to nothing.
    ///
    /// # Cancel safety
    ///
    /// Cancel-safe: a message is taken from the queue only when this returns it.
    pub async fn recv(&mut self) -> Option<Message> {
        if self.member.evicted.is_cancelled() {
            return None;
        }
        // No need to also wait for the eviction: it happens only when this queue is not empty
        // (full, or holding bytes), and a message in the queue wakes this wait.
        let message = self.receiver.recv().await?;
        if self.member.evicted.is_cancelled() {
            return None;
        }
        self.member
            .queued_size
            .fetch_sub(message.as_payload().len(), Ordering::AcqRel);
        Some(message)
    }

    /// A queued message without waiting, if there is one and the subscriber was not evicted.
    pub fn try_recv(&mut self) -> Option<Message> {
        if self.member.evicted.is_cancelled() {
            return None;
        }
        let message = self.receiver.try_recv().ok()?;
        self.member
            .queued_size
            .fetch_sub(message.as_payload().len(), Ordering::Relaxed);
        Some(message)
    }

    /// Completes when the hub evicts this subscriber for being slow, with the close code the
    /// connection should close with; never completes under [`SlowConsumer::Drop`].
    ///
    /// # Cancel safety
    ///
    /// Cancel-safe.
    pub async fn evicted(&self) -> CloseCode {
        if !self.member.evicted.is_cancelled() {
            self.member.evicted.cancelled().await;
        }
        self.eviction().unwrap_or(CloseCode::POLICY_VIOLATION)
    }

    /// The close code if this subscriber was evicted.
    pub fn eviction(&self) -> Option<CloseCode> {
        if !self.member.evicted.is_cancelled() {
            return None;
        }
        *self
            .member
            .close_code
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Messages and payload bytes waiting in this subscriber's queue.
    pub fn queued(&self) -> (usize, usize) {
        (
            self.receiver.len(),
            self.member.queued_size.load(Ordering::Relaxed),
        )
    }
}

impl Drop for Subscriber {
    fn drop(&mut self) {
        for topic in std::mem::take(&mut self.topics) {
            self.leave(&topic);
        }
        self.hub
            .counters
            .connections
            .fetch_sub(1, Ordering::Relaxed);
    }
}

/// Encodes a data message for a backplane: one kind byte (`t` or `b`), the origin node id
/// (8 bytes, big-endian), then the payload.
#[cfg_attr(
    not(any(feature = "redis", test)),
    expect(dead_code, reason = "used by the redis backplane")
)]
fn encode_envelope(origin: NodeId, message: &Message) -> Option<Vec<u8>> {
    let kind = match message {
        Message::Text(_) => b't',
        Message::Binary(_) => b'b',
        Message::Ping(_) | Message::Pong(_) | Message::Close(_) => return None,
    };
    let payload = message.as_payload();
    let mut out = Vec::with_capacity(9 + payload.len());
    out.push(kind);
    out.extend_from_slice(&origin.to_be_bytes());
    out.extend_from_slice(payload);
    Some(out)
}

/// Decodes [`encode_envelope`]'s output: the origin and the message; `None` for anything
/// malformed (short, unknown kind, text that is not UTF-8).
#[cfg_attr(
    not(any(feature = "redis", test)),
    expect(dead_code, reason = "used by the redis backplane")
)]
fn decode_envelope(data: Bytes) -> Option<(NodeId, Message)> {
    if data.len() < 9 {
        return None;
    }
    let origin = NodeId::from_be_bytes(data[1..9].try_into().ok()?);
    let payload = data.slice(9..);
    let message = match data[0] {
        b't' => Message::Text(sockeye_proto::Utf8Bytes::try_from_bytes(payload).ok()?),
        b'b' => Message::Binary(payload),
        _ => return None,
    };
    Some((origin, message))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn envelopes_round_trip_and_reject_malformed_input() {
        for message in [
            Message::text("héllo"),
            Message::binary(vec![0, 1, 2]),
            Message::text(""),
        ] {
            let data = encode_envelope(42, &message).unwrap();
            assert_eq!(decode_envelope(Bytes::from(data)), Some((42, message)));
        }
        assert_eq!(encode_envelope(1, &Message::Ping(Bytes::new())), None);
        assert_eq!(decode_envelope(Bytes::from_static(b"t1234567")), None);
        assert_eq!(decode_envelope(Bytes::from_static(b"x12345678")), None);
        assert_eq!(
            decode_envelope(Bytes::from_static(b"t12345678\xff")),
            None,
            "invalid UTF-8"
        );
    }

    #[test]
    fn prometheus_text_has_help_type_and_value() {
        let metrics = HubMetrics {
            dropped: 7,
            ..HubMetrics::default()
        };
        let text = metrics.to_prometheus("x_");
        assert!(
            text.contains("# TYPE x_dropped_total counter\nx_dropped_total 7\n"),
            "{text}"
        );
        assert!(
            text.contains("# TYPE x_connections gauge\nx_connections 0\n"),
            "{text}"
        );
        assert_eq!(text.lines().count(), 33);
    }
}
