//! Topics: a publish/subscribe hub for fan-out to many WebSocket connections, optionally spanning
//! several server processes ("nodes") through a [`Backplane`].
//!
//! An application on top of WebSockets rather than part of them: it speaks in the protocol's
//! [`Message`]s and [`CloseCode`]s (from `sockeye-proto`, re-exported by `sockeye`) and leaves
//! the connections to the caller, typically `sockeye`'s server, as in the example below.
//!
//! A connection's task takes a [`Subscriber`] from the [`Hub`], subscribes it to any number of
//! topics, and writes to its WebSocket what [`Subscriber::recv`] yields; dropping the
//! `Subscriber` (the connection ended) ends all its subscriptions. [`Hub::publish`] queues the
//! message for every subscriber of the topic and returns at once: it never waits for a
//! subscriber. A publish is prepared once for all its recipients: subscribers receive a
//! [`PreparedMessage`], which shares the payload (reference-counted
//! [`Bytes`](sockeye_proto::bytes::Bytes)), its frame header, and its compressed form for every
//! connection that compresses without context takeover
//! (`sockeye::WebSocketStream::feed_prepared`), so fan-out to N subscribers clones a pointer N
//! times and frames and compresses the message once, not N times.
//!
//! # Slow consumers
//!
//! Each subscriber has a bounded queue: [`HubConfig::max_queued_messages`] messages and
//! [`HubConfig::max_queued_size`] payload bytes. A subscriber is judged slow by whether it keeps
//! taking messages, not by the length of its queue alone: a queue may grow because the server
//! itself is busy (every connection's task waits for a core), and evicting every subscriber then
//! would turn a busy moment into a mass disconnection. So a message that does not fit within the
//! limits is still queued while the subscriber has taken messages from its queue within the last
//! [`HubConfig::stall_timeout`] (counted in [`HubMetrics::backlogged`]: the server is behind, and
//! says so), up to [`BACKLOG_FACTOR`] times the limits. A subscriber whose connection stopped
//! taking bytes stops taking messages (its writes wait), so after `stall_timeout` it is slow; so
//! is one over the backlog allowance. A message for a slow subscriber is handled by
//! [`HubConfig::slow_consumer`]:
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
//! # Writing a subscriber's messages
//!
//! A connection writes best in batches: take every message waiting ([`Subscriber::recv`], then
//! [`Subscriber::try_recv`] until it has none, or [`Subscriber::recv_many`]), queue each on the
//! WebSocket without flushing (`feed`), and let the stream write them together — one system
//! call for many messages, as `sockeye serve --mode broadcast` does.
//!
//! # Threads
//!
//! A `Hub` is `Send + Sync`: subscribers and publishers may live on any thread or runtime (for
//! instance the threads of `sockeye::Server::threads`). A publish queues the message for every
//! subscriber of the topic under one lock, so every subscriber sees the messages of a topic in
//! one order, and the messages of one publisher in the order it published them.
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
//! use sockeye::Message;
//! use sockeye_hub::{Hub, HubConfig};
//!
//! let hub = Hub::new(HubConfig::default());
//! let mut alice = hub.subscriber();
//! alice.subscribe("news");
//! assert_eq!(hub.publish("news", Message::text("hello")), 1);
//! let received = alice.recv().await.expect("subscribed");
//! assert_eq!(received.message(), &Message::text("hello"));
//! # }
//! ```
//!
//! A server giving each connection a subscriber to the topic named by its request path:
//!
//! ```no_run
//! # async fn run() -> std::io::Result<()> {
//! use futures_util::{SinkExt as _, StreamExt as _};
//! use sockeye_hub::{Hub, HubConfig};
//!
//! let hub = Hub::new(HubConfig::default());
//! let server = sockeye::Server::bind("127.0.0.1:9001").await?;
//! server
//!     .serve(move |mut ws, request| {
//!         let mut me = hub.subscriber();
//!         let topic = request.uri().path().to_owned();
//!         me.subscribe(&topic);
//!         async move {
//!             loop {
//!                 tokio::select! {
//!                     incoming = ws.next() => match incoming {
//!                         Some(Ok(message)) if message.is_data() => {
//!                             me.publish(&topic, message);
//!                         }
//!                         Some(Ok(_)) => {}
//!                         _ => break,
//!                     },
//!                     outgoing = me.recv() => match outgoing {
//!                         Some(message) => {
//!                             if ws.send_prepared(&message).await.is_err() {
//!                                 break;
//!                             }
//!                         }
//!                         // Evicted for being slow.
//!                         None => {
//!                             let code = me.evicted().await;
//!                             let _ = ws.close(code, "too slow").await;
//!                             break;
//!                         }
//!                     },
//!                 }
//!             }
//!         }
//!     })
//!     .await
//! # }
//! ```
//!
//! # Cancel safety
//!
//! [`Subscriber::recv`] and [`Subscriber::evicted`] are cancel-safe. No function spawns a task
//! except [`Hub::with_backplane`] with a `RedisBackplane` (feature `redis`), which spawns its
//! publishing and subscribing tasks.

#![forbid(unsafe_code)]

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};
use std::time::{Duration, Instant};

use sockeye_proto::{CloseCode, Message, PreparedMessage};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

mod backplane;
#[cfg(feature = "redis")]
mod envelope;
mod metrics;
#[cfg(feature = "redis")]
pub mod redis;

use self::backplane::LinkedHub;
pub use self::backplane::{Backplane, BackplaneLink, InProcessBackplane, NodeId};
use self::metrics::Counters;
pub use self::metrics::HubMetrics;
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
    /// How long a subscriber over its queue limits may go without taking a message before it
    /// is slow (see [Slow consumers](crate#slow-consumers)). Zero: slow as soon as a message
    /// does not fit.
    ///
    /// Default: 2 s.
    pub stall_timeout: Duration,
}

/// How far past [`HubConfig::max_queued_messages`] and [`HubConfig::max_queued_size`] the queue
/// of a subscriber that still takes messages may grow while the server is behind: 4 times.
pub const BACKLOG_FACTOR: usize = 4;

impl Default for HubConfig {
    fn default() -> Self {
        Self {
            max_queued_messages: 256,
            max_queued_size: 4 << 20,
            slow_consumer: SlowConsumer::Close(CloseCode::POLICY_VIOLATION),
            stall_timeout: Duration::from_secs(2),
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

    /// Sets [`HubConfig::stall_timeout`].
    pub fn stall_timeout(mut self, timeout: Duration) -> Self {
        self.stall_timeout = timeout;
        self
    }
}

/// A publish/subscribe hub; cheap to clone (clones share the hub). See the [crate
/// docs](crate).
#[derive(Debug, Clone)]
pub struct Hub {
    inner: Arc<Inner>,
}

/// A subscriber's slot in the topics it holds.
#[derive(Debug)]
struct Member {
    queue: mpsc::Sender<PreparedMessage>,
    /// Payload bytes in `queue`: added before a message is queued, taken off by
    /// [`Subscriber::recv`].
    queued_size: AtomicUsize,
    /// The hub's clock ([`Inner::now`]) when the subscriber last took a message, or when a
    /// message went into its empty queue: how long it has been stalled, if it is.
    active_at: AtomicU64,
    evicted: CancellationToken,
    /// The close code of an eviction, set before `evicted` is cancelled.
    close_code: Mutex<Option<CloseCode>>,
}

type Topics = HashMap<String, HashMap<u64, Arc<Member>>>;

struct Inner {
    topics: Mutex<Topics>,
    config: HubConfig,
    /// Zero of the clock in `Member::active_at`.
    epoch: Instant,
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
    /// Queued past the limits, for a subscriber that still takes messages.
    Backlogged,
    Full,
    Gone,
}

impl Inner {
    fn lock(&self) -> MutexGuard<'_, Topics> {
        // No invariant spans entries: the map stays usable whatever a panicking holder did.
        self.topics.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The hub's clock: milliseconds since it was created.
    fn now(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    /// Offers `message` (of `size` payload bytes) to `member` at `now`, never waiting.
    fn offer(&self, member: &Member, message: &PreparedMessage, size: usize, now: u64) -> Offer {
        let config = &self.config;
        let before = member.queued_size.fetch_add(size, Ordering::Relaxed);
        let messages = member.queue.max_capacity() - member.queue.capacity();
        let over = |factor: usize| {
            messages >= config.max_queued_messages.saturating_mul(factor)
                || (before > 0
                    && before.saturating_add(size) > config.max_queued_size.saturating_mul(factor))
        };
        let mut offer = Offer::Queued;
        if over(1) {
            let stalled = now.saturating_sub(member.active_at.load(Ordering::Relaxed))
                >= config.stall_timeout.as_millis() as u64;
            offer = if stalled || over(BACKLOG_FACTOR) {
                Offer::Full
            } else {
                Offer::Backlogged
            };
        }
        if !matches!(offer, Offer::Full) {
            if messages == 0 && before == 0 {
                member.active_at.store(now, Ordering::Relaxed);
            }
            match member.queue.try_send(message.clone()) {
                Ok(()) => {}
                Err(mpsc::error::TrySendError::Full(_)) => offer = Offer::Full,
                Err(mpsc::error::TrySendError::Closed(_)) => offer = Offer::Gone,
            }
        }
        if matches!(offer, Offer::Full | Offer::Gone) {
            member.queued_size.fetch_sub(size, Ordering::Relaxed);
        }
        offer
    }

    /// Queues `message` for every local subscriber of `topic` but `except`, never waiting;
    /// applies the slow-consumer policy. Returns how many it was queued for.
    fn deliver_local(&self, topic: &str, message: &PreparedMessage, except: Option<u64>) -> usize {
        let size = message.message().as_payload().len();
        let (mut queued, mut backlogged, mut dropped, mut evicted) = (0u64, 0u64, 0u64, 0u64);
        let now = self.now();
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
            match self.offer(member, message, size, now) {
                Offer::Queued => {
                    queued += 1;
                    true
                }
                Offer::Backlogged => {
                    queued += 1;
                    backlogged += 1;
                    true
                }
                Offer::Gone => false,
                Offer::Full => {
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
        if members.is_empty() {
            topics.remove(topic);
        }
        drop(topics);
        // Evicted members left this topic here; their other topics are cleaned up by the next
        // publish there or when their `Subscriber` is dropped. `subscriptions` counts what the
        // subscribers hold, so it is settled by `Subscriber` itself.
        let c = &self.counters;
        c.messages_out.fetch_add(queued, Ordering::Relaxed);
        if backlogged > 0 {
            c.backlogged.fetch_add(backlogged, Ordering::Relaxed);
        }
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
        let queued = self.deliver_local(topic, &PreparedMessage::new(message.clone()), except);
        self.backplane.publish(self.node, topic, &message);
        queued
    }
}

impl LinkedHub for Inner {
    fn deliver_remote(&self, topic: &str, message: &Message) -> usize {
        self.counters.backplane_in.fetch_add(1, Ordering::Relaxed);
        self.deliver_local(topic, &PreparedMessage::new(message.clone()), None)
    }

    fn record_error(&self) {
        self.counters
            .backplane_errors
            .fetch_add(1, Ordering::Relaxed);
    }

    fn record_dropped(&self, n: u64) {
        self.counters
            .backplane_dropped
            .fetch_add(n, Ordering::Relaxed);
    }

    fn topics(&self) -> Vec<String> {
        self.lock().keys().cloned().collect()
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
            epoch: Instant::now(),
            counters: Counters::default(),
            next_id: AtomicU64::new(0),
            node,
            backplane: Box::new(backplane),
        });
        let hub: Weak<Inner> = Arc::downgrade(&inner);
        inner.backplane.attach(BackplaneLink::new(hub, node));
        Self { inner }
    }

    /// A new subscriber (for one connection), subscribed to nothing yet.
    pub fn subscriber(&self) -> Subscriber {
        let config = &self.inner.config;
        let capacity = config.max_queued_messages.saturating_mul(BACKLOG_FACTOR);
        let (queue, receiver) = mpsc::channel(capacity.min(tokio::sync::Semaphore::MAX_PERMITS));
        let member = Arc::new(Member {
            queue,
            queued_size: AtomicUsize::new(0),
            active_at: AtomicU64::new(0),
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
        let topics = self.inner.lock().len() as u64;
        self.inner
            .counters
            .snapshot(topics, self.inner.backplane.is_connected())
    }
}

/// One connection's subscriptions and its queue of messages to write. Dropping it ends every
/// subscription.
#[derive(Debug)]
pub struct Subscriber {
    id: u64,
    hub: Arc<Inner>,
    member: Arc<Member>,
    receiver: mpsc::Receiver<PreparedMessage>,
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
        self.hub
            .lock()
            .entry(topic.to_owned())
            .or_default()
            .insert(self.id, self.member.clone());
        self.topics.insert(topic.to_owned());
        self.hub
            .counters
            .subscriptions
            .fetch_add(1, Ordering::Relaxed);
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
        let mut topics = self.hub.lock();
        // Absent: emptied by a publish that evicted this subscriber.
        if let Some(members) = topics.get_mut(topic) {
            members.remove(&self.id);
            if members.is_empty() {
                topics.remove(topic);
            }
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
    pub async fn recv(&mut self) -> Option<PreparedMessage> {
        if self.member.evicted.is_cancelled() {
            return None;
        }
        // No need to also wait for the eviction: it happens only when this queue is not empty
        // (full, or holding bytes), and a message in the queue wakes this wait.
        let message = self.receiver.recv().await?;
        self.took(message.message().as_payload().len())?;
        Some(message)
    }

    /// Waits for queued messages and moves up to `limit` of them to the end of `buffer`;
    /// returns how many, 0 once the subscriber was evicted (or `limit` is 0). Waits while
    /// subscribed to nothing.
    ///
    /// # Cancel safety
    ///
    /// Cancel-safe: messages are taken from the queue only when this returns them.
    pub async fn recv_many(&mut self, buffer: &mut Vec<PreparedMessage>, limit: usize) -> usize {
        if self.member.evicted.is_cancelled() {
            return 0;
        }
        let start = buffer.len();
        let n = self.receiver.recv_many(buffer, limit).await;
        let size = buffer[start..]
            .iter()
            .map(|m| m.message().as_payload().len())
            .sum();
        if self.took(size).is_none() {
            buffer.truncate(start);
            return 0;
        }
        n
    }

    /// A queued message without waiting, if there is one and the subscriber was not evicted.
    pub fn try_recv(&mut self) -> Option<PreparedMessage> {
        if self.member.evicted.is_cancelled() {
            return None;
        }
        let message = self.receiver.try_recv().ok()?;
        self.took(message.message().as_payload().len())?;
        Some(message)
    }

    /// Accounts for messages of `size` payload bytes taken from the queue; `None` if the
    /// subscriber was evicted meanwhile.
    fn took(&self, size: usize) -> Option<()> {
        if self.member.evicted.is_cancelled() {
            return None;
        }
        self.member.queued_size.fetch_sub(size, Ordering::AcqRel);
        self.member
            .active_at
            .store(self.hub.now(), Ordering::Relaxed);
        Some(())
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
