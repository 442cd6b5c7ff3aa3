//! A node's counters as the console shows them, taken from what the server keeps anyway: the
//! registry's atomics, the broker's count of published events, the slow-consumer counts. The
//! same numbers travel in a cluster node's heartbeat, so that every node's console shows every
//! node.

use serde::{Deserialize, Serialize};

use crate::pubsub::Broker;
use crate::registry::Registry;
use crate::slow_consumer;

/// One node's counters at one moment. Counts of events are totals since the node started (the
/// console takes rates between two of them); connections and subscriptions are current.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeCounters {
    /// Open connections by channel label (`graphql-transport-ws`, `graphql-ws`, `sse`, `rooms`).
    pub connections: Vec<(String, usize)>,
    /// Live subscriptions by field name.
    pub subscriptions: Vec<(String, usize)>,
    pub published: u64,
    pub delivered: u64,
    /// Slow consumers, and the deliveries refused to them (per process: see
    /// [`slow_consumer::lagged_total`]).
    pub lagged: u64,
    pub dropped: u64,
}

impl NodeCounters {
    /// This node's counters now. Atomics only: no lock the delivery path takes.
    pub fn collect(registry: &Registry, broker: &Broker) -> Self {
        Self {
            connections: registry.connections_by_channel().iter().map(|(c, n)| (c.label().to_owned(), *n)).collect(),
            subscriptions: registry.subscriptions_by_field().into_iter().map(|(f, n)| (f.to_owned(), n)).collect(),
            published: broker.published(),
            delivered: registry.delivered(),
            lagged: slow_consumer::lagged_total(),
            dropped: slow_consumer::dropped_total(),
        }
    }

    pub fn connection_total(&self) -> usize {
        self.connections.iter().map(|(_, n)| n).sum()
    }

    pub fn subscription_total(&self) -> usize {
        self.subscriptions.iter().map(|(_, n)| n).sum()
    }
}
