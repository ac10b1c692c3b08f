//! [`Backplane`]: how the hubs of several nodes exchange messages, the [`BackplaneLink`] through
//! which a backplane reaches its hub, and the default [`InProcessBackplane`].

use std::fmt;
use std::sync::{Arc, Mutex, PoisonError, Weak};

use sockeye_proto::Message;

/// Identifies a hub (a node) on a backplane; random per hub.
pub type NodeId = u64;

/// Carries messages between the hubs of several nodes, so that a publish on one reaches the
/// subscribers of all.
///
/// A hub calls [`Backplane::attach`] once, when it is created, then [`Backplane::publish`]
/// after delivering each message locally. The backplane hands messages from other nodes to
/// [`BackplaneLink::deliver`].
///
/// Implementations must not block in any method: `publish` is called on the publisher's task.
/// A message that cannot be sent is dropped and counted with
/// [`BackplaneLink::record_dropped`] (or buffered within a documented bound).
pub trait Backplane: Send + Sync + fmt::Debug + 'static {
    /// Connects the backplane to the hub `link` points to.
    fn attach(&self, link: BackplaneLink);
    /// Sends a data message published on node `origin` to the other nodes.
    fn publish(&self, origin: NodeId, topic: &str, message: &Message);
    /// The hub was dropped: stop whatever [`Backplane::attach`] started.
    fn detach(&self) {}
    /// Whether messages currently flow to and from the other nodes (always, in process).
    fn is_connected(&self) -> bool {
        true
    }
}

/// What a [`BackplaneLink`] needs of its hub. The hub implements it; the link names only this
/// trait, so that this file does not depend on the hub's internals (which depend on it).
pub(crate) trait LinkedHub: Send + Sync + fmt::Debug {
    /// Queues a data message from another node for the local subscribers of `topic`, counting
    /// it; returns how many it was queued for.
    fn deliver_remote(&self, topic: &str, message: &Message) -> usize;
    /// Counts one backplane failure.
    fn record_error(&self);
    /// Counts `n` publishes not sent to other nodes.
    fn record_dropped(&self, n: u64);
    /// The topics with local subscribers.
    fn topics(&self) -> Vec<String>;
}

/// A backplane's handle on its hub: delivers messages from other nodes and records failures.
/// Holds the hub weakly: it does not keep the hub alive.
#[derive(Debug, Clone)]
pub struct BackplaneLink {
    hub: Weak<dyn LinkedHub>,
    node: NodeId,
}

impl BackplaneLink {
    /// A link to `hub`, whose node id is `node`.
    pub(crate) fn new(hub: Weak<dyn LinkedHub>, node: NodeId) -> Self {
        Self { hub, node }
    }

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
        hub.deliver_remote(topic, &message)
    }

    /// Counts one backplane failure.
    pub fn record_error(&self) {
        if let Some(hub) = self.hub.upgrade() {
            hub.record_error();
        }
    }

    /// Counts `n` publishes not sent to other nodes.
    pub fn record_dropped(&self, n: u64) {
        if let Some(hub) = self.hub.upgrade() {
            hub.record_dropped(n);
        }
    }

    /// The topics with local subscribers (to resubscribe after a reconnect).
    pub fn topics(&self) -> Vec<String> {
        self.hub
            .upgrade()
            .map(|hub| hub.topics())
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
