//! [`HubMetrics`]: a snapshot of a hub's gauges and counters, and its Prometheus text; the
//! atomic counters the hub keeps behind it.

use std::sync::atomic::{AtomicU64, Ordering};

/// A snapshot of a hub's counters on this node. Gauges are current values; counters count
/// since the hub was created.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct HubMetrics {
    /// Gauge: live [`Subscriber`](crate::Subscriber)s (connections using the hub).
    pub connections: u64,
    /// Gauge: (subscriber, topic) pairs.
    pub subscriptions: u64,
    /// Gauge: topics with at least one subscriber on this node.
    pub topics: u64,
    /// Counter: messages published on this node ([`Hub::publish`](crate::Hub::publish), [`Subscriber::publish`](crate::Subscriber::publish)).
    pub messages_in: u64,
    /// Counter: messages received from other nodes through the backplane.
    pub backplane_in: u64,
    /// Counter: messages queued for a subscriber (one per recipient).
    pub messages_out: u64,
    /// Counter: messages queued past a subscriber's limits while it still took messages
    /// (within [`BACKLOG_FACTOR`](crate::BACKLOG_FACTOR) times them): the server is behind;
    /// deliveries wait longer.
    pub backlogged: u64,
    /// Counter: messages a slow subscriber missed (its queue was full and it had stopped
    /// taking messages, or it was over the backlog allowance).
    pub dropped: u64,
    /// Counter: subscribers evicted for being slow ([`SlowConsumer::Close`](crate::SlowConsumer::Close)).
    pub evicted: u64,
    /// Gauge: whether the backplane is connected ([`Backplane::is_connected`](crate::Backplane::is_connected)).
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
        let rows: [(&str, &str, &str, u64); 12] = [
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
                "backlogged_total",
                "counter",
                "Messages queued past a subscriber's limits while it kept up: the server is behind.",
                self.backlogged,
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
pub(crate) struct Counters {
    pub(crate) connections: AtomicU64,
    pub(crate) subscriptions: AtomicU64,
    pub(crate) messages_in: AtomicU64,
    pub(crate) backplane_in: AtomicU64,
    pub(crate) messages_out: AtomicU64,
    pub(crate) backlogged: AtomicU64,
    pub(crate) dropped: AtomicU64,
    pub(crate) evicted: AtomicU64,
    pub(crate) backplane_errors: AtomicU64,
    pub(crate) backplane_dropped: AtomicU64,
}

impl Counters {
    /// A snapshot of the counters, with the two gauges they do not hold: the topics with local
    /// subscribers and whether the backplane is connected.
    pub(crate) fn snapshot(&self, topics: u64, backplane_up: bool) -> HubMetrics {
        let load = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        HubMetrics {
            connections: load(&self.connections),
            subscriptions: load(&self.subscriptions),
            topics,
            messages_in: load(&self.messages_in),
            backplane_in: load(&self.backplane_in),
            messages_out: load(&self.messages_out),
            backlogged: load(&self.backlogged),
            dropped: load(&self.dropped),
            evicted: load(&self.evicted),
            backplane_up,
            backplane_errors: load(&self.backplane_errors),
            backplane_dropped: load(&self.backplane_dropped),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
        assert_eq!(text.lines().count(), 36);
    }
}
