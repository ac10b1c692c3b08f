//! A [`Backplane`] over Redis pub/sub (feature `redis`, the `redis` crate with tokio): every
//! node publishes to and pattern-subscribes to Redis channels named `<prefix><topic>`.
//!
//! # Failure behaviour
//!
//! Publishes go through a bounded queue ([`OUTGOING_QUEUE`] messages, [`MAX_OUTGOING_SIZE`]
//! bytes) to one task that owns a
//! Redis connection. While Redis is unreachable, publishes for other nodes are **dropped and
//! counted** ([`HubMetrics::backplane_dropped`](crate::HubMetrics::backplane_dropped)), as is a
//! publish that finds the queue full; local delivery is not affected. Each failure (connection
//! refused or lost, a command failing or timing out) counts in
//! [`HubMetrics::backplane_errors`](crate::HubMetrics::backplane_errors). Both tasks reconnect
//! with exponential backoff ([`Backoff`] from 50 ms up to 5 s) and the subscriber task
//! subscribes again. Memory is bounded by the queue; messages published while Redis was down
//! are not replayed.
//!
//! Each node receives the messages of every topic under the prefix (one `PSUBSCRIBE`), and
//! delivers those whose topic has local subscribers: simple and robust to reconnects, at the
//! cost of traffic to nodes that have no subscriber for a topic.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt as _;
use sockeye::Backoff;
use sockeye_proto::Message;
use tokio::sync::{mpsc, Notify};
use tokio_util::sync::CancellationToken;

use crate::backplane::{Backplane, BackplaneLink, NodeId};
use crate::envelope::{decode_envelope, encode_envelope};

/// Publishes waiting for the Redis connection at most; more are dropped and counted.
pub const OUTGOING_QUEUE: usize = 4096;

/// Payload bytes of the publishes waiting for the Redis connection at most (64 MiB); more are
/// dropped and counted.
pub const MAX_OUTGOING_SIZE: usize = 64 << 20;

/// Bound on connecting to Redis and on one command.
const REDIS_TIMEOUT: Duration = Duration::from_secs(2);

/// Channel prefix used unless [`RedisBackplane::channel_prefix`] sets another.
const DEFAULT_PREFIX: &str = "sockeye:";

/// Redis pub/sub as the [`Backplane`] of a [`Hub`](crate::Hub): see the [module docs](self).
///
/// ```no_run
/// # #[tokio::main] async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use sockeye_hub::{Hub, HubConfig, RedisBackplane};
///
/// let hub = Hub::with_backplane(
///     HubConfig::default(),
///     RedisBackplane::new("redis://127.0.0.1:6379/")?,
/// );
/// hub.publish("news", "hello, every node");
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct RedisBackplane {
    client: redis::Client,
    prefix: String,
    backoff: Backoff,
    shared: Arc<Shared>,
    outgoing: mpsc::Sender<(String, Bytes)>,
    receiver: Mutex<Option<mpsc::Receiver<(String, Bytes)>>>,
}

#[derive(Debug)]
struct Shared {
    /// Whether the publishing connection is up: publishes while down are dropped at once.
    connected: AtomicBool,
    /// Whether the subscribing connection is up and subscribed.
    subscribed: AtomicBool,
    /// Bytes in the outgoing queue.
    outgoing_size: AtomicUsize,
    /// Signalled when the subscribing connection is lost: the publishing one, to the same
    /// Redis, is most likely dead too (it would only find out at its next publish, losing it).
    lost: Notify,
    stop: CancellationToken,
    link: Mutex<Option<BackplaneLink>>,
}

impl Shared {
    fn link(&self) -> Option<BackplaneLink> {
        self.link
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

impl RedisBackplane {
    /// A backplane for the Redis at `url` (`redis://host:port/`); connects when attached to a
    /// hub, and keeps reconnecting.
    ///
    /// # Errors
    ///
    /// The URL is not a valid Redis URL.
    pub fn new(url: &str) -> Result<Self, redis::RedisError> {
        let client = redis::Client::open(url)?;
        let (outgoing, receiver) = mpsc::channel(OUTGOING_QUEUE);
        Ok(Self {
            client,
            prefix: DEFAULT_PREFIX.to_owned(),
            backoff: Backoff::default()
                .initial(Duration::from_millis(50))
                .max(Duration::from_secs(5)),
            shared: Arc::new(Shared {
                connected: AtomicBool::new(false),
                subscribed: AtomicBool::new(false),
                outgoing_size: AtomicUsize::new(0),
                lost: Notify::new(),
                stop: CancellationToken::new(),
                link: Mutex::new(None),
            }),
            outgoing,
            receiver: Mutex::new(Some(receiver)),
        })
    }

    /// Uses Redis channels `<prefix><topic>` (default `sockeye:`): nodes share topics only with
    /// nodes using the same prefix. Glob characters (`*?[\`) in the prefix are escaped.
    pub fn channel_prefix(mut self, prefix: &str) -> Self {
        self.prefix = prefix.to_owned();
        self
    }

    /// Sets the reconnect backoff (default 50 ms, ×2, up to 5 s, ± 20 %; attempts are never
    /// limited).
    pub fn backoff(mut self, backoff: Backoff) -> Self {
        self.backoff = backoff;
        self
    }
}

/// `prefix` with Redis glob characters escaped, then `*`.
fn pattern(prefix: &str) -> String {
    let mut out = String::with_capacity(prefix.len() + 1);
    for c in prefix.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('*');
    out
}

impl Backplane for RedisBackplane {
    /// Spawns the publishing and the subscribing task.
    ///
    /// # Panics
    ///
    /// Outside a tokio runtime.
    fn attach(&self, link: BackplaneLink) {
        *self
            .shared
            .link
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some(link.clone());
        let Some(receiver) = self
            .receiver
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
        else {
            // Attached twice: the tasks already run.
            return;
        };
        tokio::spawn(publisher(
            self.client.clone(),
            self.backoff,
            self.shared.clone(),
            receiver,
        ));
        tokio::spawn(subscriber(
            self.client.clone(),
            self.backoff,
            self.shared.clone(),
            self.prefix.clone(),
            link,
        ));
    }

    fn publish(&self, origin: NodeId, topic: &str, message: &Message) {
        let Some(data) = encode_envelope(origin, message) else {
            return;
        };
        let size = data.len();
        let shared = &self.shared;
        let sent = shared.connected.load(Ordering::Relaxed) && {
            let before = shared.outgoing_size.fetch_add(size, Ordering::AcqRel);
            let queued = before.saturating_add(size) <= MAX_OUTGOING_SIZE
                && self
                    .outgoing
                    .try_send((format!("{}{topic}", self.prefix), Bytes::from(data)))
                    .is_ok();
            if !queued {
                shared.outgoing_size.fetch_sub(size, Ordering::AcqRel);
            }
            queued
        };
        if !sent {
            if let Some(link) = self.shared.link() {
                link.record_dropped(1);
            }
        }
    }

    fn detach(&self) {
        self.shared.stop.cancel();
    }

    /// Whether both connections to Redis are up (the subscribing one subscribed).
    fn is_connected(&self) -> bool {
        self.shared.connected.load(Ordering::Relaxed)
            && self.shared.subscribed.load(Ordering::Relaxed)
    }
}

/// Records one backplane failure.
fn failed(shared: &Shared, what: &str, error: &dyn std::fmt::Display) {
    tracing::debug!(%error, "redis backplane: {what}");
    if let Some(link) = shared.link() {
        link.record_error();
    }
}

/// Waits for the `attempt`th backoff delay; `false` if the hub is gone meanwhile.
async fn pause(backoff: &Backoff, attempt: u32, shared: &Shared) -> bool {
    tokio::select! {
        () = tokio::time::sleep(backoff.delay(attempt)) => true,
        () = shared.stop.cancelled() => false,
    }
}

/// Owns the publishing connection: sends queued publishes, reconnects on failure.
async fn publisher(
    client: redis::Client,
    backoff: Backoff,
    shared: Arc<Shared>,
    mut queue: mpsc::Receiver<(String, Bytes)>,
) {
    let config = redis::AsyncConnectionConfig::new()
        .set_connection_timeout(Some(REDIS_TIMEOUT))
        .set_response_timeout(Some(REDIS_TIMEOUT));
    let mut attempt = 0u32;
    loop {
        let connecting = client.get_multiplexed_async_connection_with_config(&config);
        let mut connection = tokio::select! {
            connected = connecting => match connected {
                Ok(connection) => connection,
                Err(e) => {
                    failed(&shared, "cannot connect", &e);
                    attempt = attempt.saturating_add(1);
                    if !pause(&backoff, attempt, &shared).await {
                        return;
                    }
                    continue;
                }
            },
            () = shared.stop.cancelled() => return,
        };
        tracing::debug!("redis backplane: publisher connected");
        attempt = 0;
        shared.connected.store(true, Ordering::Relaxed);
        loop {
            let (channel, data) = tokio::select! {
                next = queue.recv() => match next {
                    Some(next) => {
                        shared.outgoing_size.fetch_sub(next.1.len(), Ordering::AcqRel);
                        next
                    }
                    None => return,
                },
                () = shared.lost.notified() => {
                    shared.connected.store(false, Ordering::Relaxed);
                    break;
                }
                () = shared.stop.cancelled() => return,
            };
            let published: redis::RedisResult<i64> = redis::cmd("PUBLISH")
                .arg(&channel)
                .arg(&data[..])
                .query_async(&mut connection)
                .await;
            if let Err(e) = published {
                shared.connected.store(false, Ordering::Relaxed);
                failed(&shared, "publish failed", &e);
                // This message and those queued behind it: not sent.
                let mut lost = 1;
                while let Ok((_, data)) = queue.try_recv() {
                    shared.outgoing_size.fetch_sub(data.len(), Ordering::AcqRel);
                    lost += 1;
                }
                if let Some(link) = shared.link() {
                    link.record_dropped(lost);
                }
                break;
            }
        }
    }
}

/// Owns the subscribing connection: delivers other nodes' messages to the hub, reconnects and
/// subscribes again on failure.
async fn subscriber(
    client: redis::Client,
    backoff: Backoff,
    shared: Arc<Shared>,
    prefix: String,
    link: BackplaneLink,
) {
    let pattern = pattern(&prefix);
    let mut attempt = 0u32;
    loop {
        let subscribing = async {
            let mut pubsub = client.get_async_pubsub().await?;
            pubsub.psubscribe(&pattern).await?;
            Ok::<_, redis::RedisError>(pubsub)
        };
        let subscribed = tokio::select! {
            subscribed = tokio::time::timeout(REDIS_TIMEOUT, subscribing) => subscribed,
            () = shared.stop.cancelled() => return,
        };
        let pubsub = match subscribed {
            Ok(Ok(pubsub)) => pubsub,
            Ok(Err(e)) => {
                failed(&shared, "cannot subscribe", &e);
                attempt = attempt.saturating_add(1);
                if !pause(&backoff, attempt, &shared).await {
                    return;
                }
                continue;
            }
            Err(e) => {
                failed(&shared, "cannot subscribe", &e);
                attempt = attempt.saturating_add(1);
                if !pause(&backoff, attempt, &shared).await {
                    return;
                }
                continue;
            }
        };
        tracing::debug!(pattern, "redis backplane: subscribed");
        attempt = 0;
        shared.subscribed.store(true, Ordering::Relaxed);
        let mut messages = pubsub.into_on_message();
        loop {
            let message = tokio::select! {
                message = messages.next() => message,
                () = shared.stop.cancelled() => return,
            };
            let Some(message) = message else {
                shared.subscribed.store(false, Ordering::Relaxed);
                shared.lost.notify_waiters();
                failed(&shared, "subscription lost", &"connection closed");
                break;
            };
            if !link.is_alive() {
                return;
            }
            let Some(topic) = message.get_channel_name().strip_prefix(prefix.as_str()) else {
                continue;
            };
            match decode_envelope(Bytes::copy_from_slice(message.get_payload_bytes())) {
                Some((origin, _)) if origin == link.node() => {}
                Some((_, message)) => {
                    link.deliver(topic, message);
                }
                None => tracing::debug!(topic, "redis backplane: malformed message ignored"),
            }
        }
        attempt = attempt.saturating_add(1);
        if !pause(&backoff, attempt, &shared).await {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pattern_escapes_glob_characters() {
        assert_eq!(pattern("sockeye:"), "sockeye:*");
        assert_eq!(pattern("a*b?[c]\\"), "a\\*b\\?\\[c\\]\\\\*");
    }
}
