//! `serverStats`: snapshots of the server for the operator console, taken from the numbers the
//! server keeps anyway (see [`crate::connections::NodeCounters`] and [`crate::rooms::Rooms::overview`]), never from
//! the Prometheus text, and never by taking a lock the delivery path holds.
//!
//! Counts of events are totals; the rates are taken between two readings: for this node between
//! two snapshots of the same subscription, for another node between its last two heartbeats.

use std::time::Duration;

use async_graphql::SimpleObject;
use futures::Stream;
use tokio::time::{Instant, MissedTickBehavior};

use crate::commerce::model::{PresenceUser, Timestamp};
use crate::connections::{Connections, NodeCounters, RemoteView};
use crate::events::Broker;
use crate::rooms::Rooms;

/// The shortest interval between snapshots: faster is not readable, and each costs a pass over
/// the rooms.
pub const MIN_EVERY: Duration = Duration::from_millis(500);
pub const MAX_EVERY: Duration = Duration::from_secs(60);
/// The most rooms, and members per room, one snapshot lists.
pub const MAX_ROOMS: usize = 100;
pub const MEMBERS_SHOWN: usize = 50;

/// The server at one moment, as the operator console shows it.
#[derive(Debug, Clone, SimpleObject)]
pub struct ServerSnapshot {
    /// When it was taken.
    pub at: Timestamp,
    /// The node that took it (the one this subscription is connected to).
    pub node: String,
    /// Every node: this one first, then the others of a cluster, as their last heartbeat (at
    /// most a second old) told.
    pub nodes: Vec<NodeSnapshot>,
    /// Rooms with at least one member, on every node.
    pub room_count: i32,
    /// Room members, one per user and room, on every node.
    pub presence_members: i32,
    /// The busiest rooms, most connections first, at most the `rooms` asked for, each with its
    /// first 50 members.
    pub rooms: Vec<RoomSnapshot>,
}

/// One node's figures. Event counts are `Float`s because GraphQL's `Int` has 32 bits and a busy
/// node delivers more than that in a few hours; they are exact below 2^53.
#[derive(Debug, Clone, SimpleObject)]
pub struct NodeSnapshot {
    pub node: String,
    /// True for the node that took the snapshot.
    pub local: bool,
    /// How old these figures are, in milliseconds: 0 for this node, the heartbeat's age for
    /// another.
    pub age_ms: i32,
    /// Open connections (WebSockets and event streams).
    pub connections: i32,
    /// By channel: `graphql-transport-ws`, `graphql-ws`, `sse`, `rooms` (empty for a node that
    /// does not report them).
    pub connections_by_channel: Vec<NamedCount>,
    /// Live GraphQL subscriptions.
    pub subscriptions: i32,
    /// By field (empty for a node that does not report them).
    pub subscriptions_by_field: Vec<NamedCount>,
    /// Events handed to the node's broker since it started (null for a node that does not
    /// report them). With a backplane every node is handed every event of the cluster, so this
    /// is about the same on every node: the cluster's count, not a share to be summed.
    pub events_published: Option<f64>,
    /// Events handed to subscribers: GraphQL results and entity updates relayed to `/ws` rooms
    /// (presence and typing messages are not events and are not counted here).
    pub events_delivered: Option<f64>,
    /// Per second, over the last interval; null until there are two readings.
    pub published_per_second: Option<f64>,
    pub delivered_per_second: Option<f64>,
    /// Consumers found too slow (each closed with 1013, to resume by cursor), and the
    /// deliveries refused to them, since the process started.
    pub lagged_consumers: Option<f64>,
    pub dropped_deliveries: Option<f64>,
}

#[derive(Debug, Clone, SimpleObject)]
pub struct NamedCount {
    pub name: String,
    pub count: i32,
}

/// A room, its connections and its first members.
#[derive(Debug, Clone, SimpleObject)]
pub struct RoomSnapshot {
    pub room_id: String,
    /// Connections (tabs) in the room, on every node.
    pub connections: i32,
    pub member_count: i32,
    /// The first members to arrive (at most 50), with their tab counts and whether they type.
    pub members: Vec<PresenceUser>,
}

fn int(n: usize) -> i32 {
    i32::try_from(n).unwrap_or(i32::MAX)
}

fn counts<'a>(pairs: impl IntoIterator<Item = (&'a str, usize)>) -> Vec<NamedCount> {
    pairs.into_iter().map(|(name, n)| NamedCount { name: name.to_owned(), count: int(n) }).collect()
}

/// Events per second between two readings.
fn rate(now: u64, then: u64, elapsed: Duration) -> Option<f64> {
    let seconds = elapsed.as_secs_f64();
    (seconds > 0.0).then(|| now.saturating_sub(then) as f64 / seconds)
}

/// What a snapshot is taken from; one per subscription.
pub struct Source {
    pub connections: Connections,
    pub rooms: Rooms,
    pub broker: Broker,
    /// How many rooms to list.
    pub rooms_shown: usize,
}

impl Source {
    fn node_snapshot(counters: &NodeCounters, node: &str, local: bool, age: Duration) -> NodeSnapshot {
        NodeSnapshot {
            node: node.to_owned(),
            local,
            age_ms: i32::try_from(age.as_millis()).unwrap_or(i32::MAX),
            connections: int(counters.connection_total()),
            connections_by_channel: counts(counters.connections.iter().map(|(c, n)| (c.as_str(), *n))),
            subscriptions: int(counters.subscription_total()),
            subscriptions_by_field: counts(counters.subscriptions.iter().map(|(f, n)| (f.as_str(), *n))),
            events_published: Some(counters.published as f64),
            events_delivered: Some(counters.delivered as f64),
            published_per_second: None,
            delivered_per_second: None,
            lagged_consumers: Some(counters.lagged as f64),
            dropped_deliveries: Some(counters.dropped as f64),
        }
    }

    fn remote_snapshot(remote: &RemoteView) -> NodeSnapshot {
        let Some((last, previous)) = &remote.counters else {
            // A node that sends totals only.
            return NodeSnapshot {
                node: remote.node.clone(),
                local: false,
                age_ms: 0,
                connections: int(remote.connections),
                connections_by_channel: Vec::new(),
                subscriptions: int(remote.subscriptions),
                subscriptions_by_field: Vec::new(),
                events_published: None,
                events_delivered: None,
                published_per_second: None,
                delivered_per_second: None,
                lagged_consumers: None,
                dropped_deliveries: None,
            };
        };
        let mut node = Self::node_snapshot(&last.counters, &remote.node, false, last.at.elapsed());
        if let Some(previous) = previous {
            let elapsed = last.at.saturating_duration_since(previous.at);
            node.published_per_second = rate(last.counters.published, previous.counters.published, elapsed);
            node.delivered_per_second = rate(last.counters.delivered, previous.counters.delivered, elapsed);
        }
        node
    }

    /// A snapshot now; `previous` is this node's last reading (for its rates), updated.
    fn take(&self, previous: &mut Option<(NodeCounters, Instant)>) -> ServerSnapshot {
        let counters = NodeCounters::collect(&self.connections, &self.broker);
        let now = Instant::now();
        let node = self.connections.node().to_owned();
        let mut local = Self::node_snapshot(&counters, &node, true, Duration::ZERO);
        if let Some((then, at)) = previous.as_ref() {
            let elapsed = now.saturating_duration_since(*at);
            local.published_per_second = rate(counters.published, then.published, elapsed);
            local.delivered_per_second = rate(counters.delivered, then.delivered, elapsed);
        }
        *previous = Some((counters, now));
        let mut nodes = vec![local];
        nodes.extend(self.connections.remote_nodes().iter().map(Self::remote_snapshot));
        let overview = self.rooms.overview(self.rooms_shown, MEMBERS_SHOWN);
        ServerSnapshot {
            at: Timestamp::now(),
            node,
            nodes,
            room_count: int(overview.rooms),
            presence_members: int(overview.members),
            rooms: overview
                .busiest
                .into_iter()
                .map(|room| RoomSnapshot {
                    room_id: room.room_id,
                    connections: int(room.connections),
                    member_count: int(room.member_count),
                    members: room.members,
                })
                .collect(),
        }
    }

    /// A snapshot at once, then one every `every`, until the subscriber leaves. A reader that
    /// cannot keep up is sent fewer snapshots, never a backlog: the next tick is taken only once
    /// the previous snapshot was taken from the stream.
    pub fn snapshots(self, every: Duration) -> impl Stream<Item = ServerSnapshot> + Send + 'static {
        let mut ticks = tokio::time::interval(every);
        ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
        futures::stream::unfold((self, ticks, None), |(source, mut ticks, mut previous)| async move {
            ticks.tick().await;
            let snapshot = source.take(&mut previous);
            Some((snapshot, (source, ticks, previous)))
        })
    }
}
