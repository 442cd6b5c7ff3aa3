//! Who is connected right now, and who may connect: the numbers behind `isUserOnline`, `stats`,
//! the connection gauges in `/metrics`, and the connection limits.
//!
//! Every connection (a WebSocket on any channel; an event stream later) is admitted by
//! [`Connections::admit`] *before* its upgrade and holds the returned [`Permit`] for its whole life,
//! close handshake included: past `MAX_CONNECTIONS` there is no permit (`503`). Once the
//! connection knows its user, [`Permit::sign_in`] counts it against that user's share
//! (`MAX_CONNECTIONS_PER_USER`, across channels) and puts the user online.
//!
//! A connection without a signed-in user counts against its client address's share
//! (`ANONYMOUS_CONNECTIONS_PER_ADDRESS`) and against what anonymous connections may take together
//! (`ANONYMOUS_CONNECTION_SHARE` of `MAX_CONNECTIONS`), so that strangers, however many, leave
//! room for signed-in users. A graphql-ws connection learns who it is for only from its
//! `connection_init`: when the anonymous share is full, it is admitted on probation from the room
//! kept for signed-in users, and must sign in there ([`Permit::stay_anonymous`] refuses it
//! otherwise); the init timeout bounds how long a probation lasts. A connection that
//! starts closing goes offline at once ([`Permit::go_offline`]), before a close handshake that may
//! wait on a peer that never answers; its place is given back when the permit drops, however the
//! connection ended, so the counts cannot drift from the sockets.

pub mod budget;

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::config::Config;
use crate::connections::budget::{AddressSlot, PerAddress};
use crate::events::Broker;
use crate::events::slow_consumer;
use crate::lock;

/// The channels (WebSocket subprotocols, and GraphQL over SSE), as labelled in metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Channel {
    GraphqlTransportWs,
    GraphqlWs,
    Rooms,
    /// An event stream at `/graphql/stream` (distinct connections), or a single-connection
    /// reservation there.
    Sse,
}

impl Channel {
    /// Every channel, in the order the console lists them.
    pub const ALL: [Channel; 4] = [Channel::GraphqlTransportWs, Channel::GraphqlWs, Channel::Sse, Channel::Rooms];

    fn index(self) -> usize {
        match self {
            Channel::GraphqlTransportWs => 0,
            Channel::GraphqlWs => 1,
            Channel::Sse => 2,
            Channel::Rooms => 3,
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            Channel::GraphqlTransportWs => "graphql-transport-ws",
            Channel::GraphqlWs => "graphql-ws",
            Channel::Rooms => "rooms",
            Channel::Sse => "sse",
        }
    }
}

/// How many connections one node admits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// In all.
    pub max_connections: usize,
    /// Per signed-in user, across channels.
    pub max_per_user: usize,
    /// Without a signed-in user, per client address.
    pub anonymous_per_address: usize,
    /// Without a signed-in user, in all.
    pub max_anonymous: usize,
    /// GraphQL requests over HTTP without a token in flight, per client address.
    pub anonymous_requests_per_address: usize,
}

impl Limits {
    pub fn from_config(config: &Config) -> Self {
        Self {
            max_connections: config.max_connections,
            max_per_user: config.max_connections_per_user,
            anonymous_per_address: config.anonymous_connections_per_address,
            max_anonymous: config.max_connections * usize::from(config.anonymous_connection_share) / 100,
            anonymous_requests_per_address: config.anonymous_requests_per_address,
        }
    }
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_connections: 50_000,
            max_per_user: 100,
            anonymous_per_address: 100,
            max_anonymous: 37_500,
            anonymous_requests_per_address: 32,
        }
    }
}

/// Who a connection is for, as far as is known when it is admitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Identity<'a> {
    /// A signed-in user.
    User(&'a str),
    /// Nobody: it stays anonymous.
    Anonymous,
    /// Not known yet (a graphql-ws connection, until its `connection_init`).
    Unknown,
}

/// Why a connection was not admitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    #[error("the server is at its connection limit ({0}); try again later")]
    Full(usize),
    #[error("too many connections for this user (at most {0})")]
    TooManyForUser(usize),
    #[error("too many connections without a token from this address (at most {0}); sign in or close some")]
    TooManyFromAddress(usize),
    #[error("the server has no room for more connections without a token; sign in or try again later")]
    AnonymousFull,
}

/// The subscription fields counted by name for the console (`subscriptionsByField`); a field
/// not listed here is counted as [`OTHER_FIELD`]. A fixed table of atomics rather than a map
/// behind a lock: subscribing and leaving stay lock-free, and a console snapshot reads a few
/// numbers. A test in `tests/console.rs` checks that every `Subscription` field is listed.
pub const SUBSCRIPTION_FIELDS: [&str; 6] =
    ["orderUpdated", "inventoryChanged", "notificationCreated", "orderEvents", "serverStats", "eventTail"];
pub const OTHER_FIELD: &str = "other";

fn field_slot(field: &str) -> usize {
    SUBSCRIPTION_FIELDS.iter().position(|f| *f == field).unwrap_or(SUBSCRIPTION_FIELDS.len())
}

#[derive(Debug, Default)]
struct Inner {
    limits: Limits,
    /// Permits alive: what the node's limit counts.
    admitted: AtomicUsize,
    /// Permits without a user, not on probation: what `max_anonymous` counts.
    anonymous: AtomicUsize,
    /// Permits without a user, by client address.
    addresses: OnceLock<PerAddress>,
    /// Anonymous HTTP requests in flight, by client address.
    requests: OnceLock<PerAddress>,
    /// Connections not closing yet: what `stats` and the gauges show.
    connections: AtomicUsize,
    subscriptions: AtomicUsize,
    /// `connections` by channel ([`Channel::index`]), and `subscriptions` by field
    /// ([`field_slot`]): this app's own numbers for the console (the gauges of the same names
    /// are per process).
    by_channel: [AtomicUsize; 4],
    by_field: [AtomicUsize; SUBSCRIPTION_FIELDS.len() + 1],
    /// Events handed to subscribers' transports (GraphQL results and relayed entity events; see
    /// [`Connections::count_delivered`]).
    delivered: AtomicU64,
    /// `switchboard_events_delivered_total` by channel, looked up once: counting is per
    /// delivery, and a lookup by name and label costs a hash of both each time.
    delivered_metric: OnceLock<[(&'static str, metrics::Counter); 3]>,
    /// This node's name, as in metrics and the cluster.
    node: OnceLock<String>,
    users: Mutex<Users>,
    /// What the other nodes of a cluster reported, by node.
    remote: Mutex<HashMap<String, RemoteNode>>,
    /// Where a user's coming online or going offline on this node is sent, once in a cluster.
    replica: OnceLock<mpsc::UnboundedSender<OnlineChange>>,
}

/// Another node's part of the numbers.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct RemoteNode {
    pub connections: usize,
    pub subscriptions: usize,
    pub online: HashSet<String>,
    /// Its console counters from its last two heartbeats (newest first), when it sends them:
    /// two, so that its rates can be taken between them.
    pub counters: Option<(Reported, Option<Reported>)>,
}

/// Another node as a console snapshot shows it.
#[derive(Debug, Clone)]
pub struct RemoteView {
    pub node: String,
    pub connections: usize,
    pub subscriptions: usize,
    pub counters: Option<(Reported, Option<Reported>)>,
}

/// A node's counters as one heartbeat carried them, and when it arrived.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reported {
    pub counters: NodeCounters,
    pub at: Instant,
}

/// A user came online on this node (their first connection here) or went offline (their last).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OnlineChange {
    pub user: String,
    pub online: bool,
}

#[derive(Debug, Default)]
struct Users {
    by_id: HashMap<String, UserCount>,
    /// Users with at least one connection that is not closing.
    online: usize,
}

#[derive(Debug, Default)]
struct UserCount {
    /// Permits signed in for this user: what the user's limit counts.
    admitted: usize,
    /// Those not closing yet.
    online: usize,
}

#[derive(Debug, Clone, Default)]
pub struct Connections {
    inner: Arc<Inner>,
}

impl Connections {
    pub fn new(limits: Limits) -> Self {
        Self { inner: Arc::new(Inner { limits, ..Inner::default() }) }
    }

    fn addresses(&self) -> &PerAddress {
        self.inner.addresses.get_or_init(|| PerAddress::new(self.inner.limits.anonymous_per_address))
    }

    /// Admits one more connection on `channel` from `client`, for `identity`: refused past the
    /// node's limit, the user's, or (without a user) the address's and the anonymous share (see
    /// the module docs).
    pub fn admit(&self, channel: Channel, client: IpAddr, identity: Identity<'_>) -> Result<Permit, Refused> {
        let max = self.inner.limits.max_connections;
        self.inner
            .admitted
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| (n < max).then_some(n + 1))
            .map_err(|_| Refused::Full(max))?;
        self.inner.connections.fetch_add(1, Ordering::Relaxed);
        self.inner.by_channel[channel.index()].fetch_add(1, Ordering::Relaxed);
        metrics::gauge!("switchboard_ws_connections", "channel" => channel.label()).increment(1.0);
        // From here on, a refusal drops the permit, which gives back whatever it took.
        let mut permit = Permit { connections: self.clone(), channel, user: None, live: true, anonymous: None };
        match identity {
            Identity::User(user) => permit.sign_in(user)?,
            Identity::Anonymous | Identity::Unknown => {
                let slot =
                    self.addresses().take(client).ok_or(Refused::TooManyFromAddress(self.addresses().limit()))?;
                let counted = self.count_anonymous();
                permit.anonymous = Some(Box::new(Anonymous { _slot: slot, counted }));
                if !counted && identity == Identity::Anonymous {
                    return Err(Refused::AnonymousFull);
                }
            }
        }
        Ok(permit)
    }

    /// A place for one anonymous GraphQL request over HTTP from `client`, held while it runs;
    /// `None` past `ANONYMOUS_REQUESTS_PER_ADDRESS`.
    pub fn admit_request(&self, client: IpAddr) -> Option<AddressSlot> {
        self.inner
            .requests
            .get_or_init(|| PerAddress::new(self.inner.limits.anonymous_requests_per_address))
            .take(client)
    }

    /// Takes a place in the anonymous share, if there is one.
    fn count_anonymous(&self) -> bool {
        let max = self.inner.limits.max_anonymous;
        self.inner.anonymous.fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| (n < max).then_some(n + 1)).is_ok()
    }

    /// Connections without a signed-in user (on probation included), and the addresses they
    /// come from.
    pub fn anonymous_count(&self) -> (usize, usize) {
        let addresses = self.addresses();
        (self.inner.anonymous.load(Ordering::Relaxed), addresses.addresses())
    }

    /// What `client` holds of its anonymous connections now.
    pub fn anonymous_from(&self, client: IpAddr) -> usize {
        self.addresses().held(client)
    }

    /// From now on, users coming online and going offline on this node are sent to `replica`.
    pub fn replicate_to(&self, replica: mpsc::UnboundedSender<OnlineChange>) {
        let _ = self.inner.replica.set(replica);
    }

    fn replicate(&self, user: &str, online: bool) {
        if let Some(replica) = self.inner.replica.get() {
            let _ = replica.send(OnlineChange { user: user.to_owned(), online });
        }
    }

    /// Online on this node or, in a cluster, on any other.
    pub fn is_online(&self, user_id: &str) -> bool {
        lock::lock(&self.inner.users).by_id.get(user_id).is_some_and(|count| count.online > 0)
            || lock::lock(&self.inner.remote).values().any(|node| node.online.contains(user_id))
    }

    /// Distinct users online on any node.
    pub fn user_count(&self) -> usize {
        let remote = lock::lock(&self.inner.remote);
        if remote.is_empty() {
            return lock::lock(&self.inner.users).online;
        }
        let mut users: HashSet<&str> = remote.values().flat_map(|n| n.online.iter().map(String::as_str)).collect();
        let local = lock::lock(&self.inner.users);
        users.extend(local.by_id.iter().filter(|(_, c)| c.online > 0).map(|(u, _)| u.as_str()));
        users.len()
    }

    /// Users online on this node.
    pub fn local_online_users(&self) -> Vec<String> {
        lock::lock(&self.inner.users).by_id.iter().filter(|(_, c)| c.online > 0).map(|(u, _)| u.clone()).collect()
    }

    /// Connections open on every node (this one's, and what the others last reported).
    pub fn cluster_connection_count(&self) -> usize {
        self.connection_count() + lock::lock(&self.inner.remote).values().map(|n| n.connections).sum::<usize>()
    }

    /// Subscriptions live on every node.
    pub fn cluster_subscription_count(&self) -> usize {
        self.subscription_count() + lock::lock(&self.inner.remote).values().map(|n| n.subscriptions).sum::<usize>()
    }

    /// Another node's totals (from its heartbeat).
    pub fn apply_totals(&self, node: &str, connections: usize, subscriptions: usize) {
        let mut remote = lock::lock(&self.inner.remote);
        let entry = remote.entry(node.to_owned()).or_default();
        entry.connections = connections;
        entry.subscriptions = subscriptions;
    }

    /// Another node says `user` came online or went offline there.
    pub fn apply_online(&self, node: &str, user: &str, online: bool) {
        let mut remote = lock::lock(&self.inner.remote);
        let entry = remote.entry(node.to_owned()).or_default();
        if online {
            entry.online.insert(user.to_owned());
        } else {
            entry.online.remove(user);
        }
    }

    /// Makes another node's online users exactly `users` (what it stored in Redis).
    pub fn reconcile_online(&self, node: &str, users: HashSet<String>) {
        lock::lock(&self.inner.remote).entry(node.to_owned()).or_default().online = users;
    }

    /// Another node's console counters (from its heartbeat); the previous ones are kept for its
    /// rates.
    pub fn apply_counters(&self, node: &str, counters: NodeCounters) {
        let mut remote = lock::lock(&self.inner.remote);
        let entry = remote.entry(node.to_owned()).or_default();
        let reported = Reported { counters, at: Instant::now() };
        entry.counters = Some((reported, entry.counters.take().map(|(last, _)| last)));
    }

    /// The other nodes of the cluster, sorted by name, as their heartbeats last told (without
    /// their online users, which a snapshot does not need to copy).
    pub fn remote_nodes(&self) -> Vec<RemoteView> {
        let remote = lock::lock(&self.inner.remote);
        let mut nodes: Vec<_> = remote
            .iter()
            .map(|(node, r)| RemoteView {
                node: node.clone(),
                connections: r.connections,
                subscriptions: r.subscriptions,
                counters: r.counters.clone(),
            })
            .collect();
        drop(remote);
        nodes.sort_by(|a, b| a.node.cmp(&b.node));
        nodes
    }

    /// This node's name (set once at start).
    pub fn set_node(&self, node: &str) {
        let _ = self.inner.node.set(node.to_owned());
    }

    pub fn node(&self) -> &str {
        self.inner.node.get().map_or("node", String::as_str)
    }

    /// Open connections on this node by channel, in [`Channel::ALL`] order.
    pub fn connections_by_channel(&self) -> [(Channel, usize); 4] {
        Channel::ALL.map(|c| (c, self.inner.by_channel[c.index()].load(Ordering::Relaxed)))
    }

    /// Live subscriptions on this node by field, in [`SUBSCRIPTION_FIELDS`] order, then
    /// [`OTHER_FIELD`].
    pub fn subscriptions_by_field(&self) -> Vec<(&'static str, usize)> {
        SUBSCRIPTION_FIELDS
            .iter()
            .copied()
            .chain(std::iter::once(OTHER_FIELD))
            .zip(&self.inner.by_field)
            .map(|(field, n)| (field, n.load(Ordering::Relaxed)))
            .collect()
    }

    /// Counts `n` events handed to a transport on `channel` (`graphql`, `sse`, `rooms`): the one
    /// place deliveries are counted, for `/metrics` and for the console. Called where a
    /// connection hands an event's result or relay to its transport, never when it is queued.
    pub fn count_delivered(&self, channel: &'static str, n: u64) {
        let counters = self.inner.delivered_metric.get_or_init(|| {
            ["graphql", "sse", "rooms"]
                .map(|label| (label, metrics::counter!("switchboard_events_delivered_total", "channel" => label)))
        });
        match counters.iter().find(|(label, _)| *label == channel) {
            Some((_, counter)) => counter.increment(n),
            None => metrics::counter!("switchboard_events_delivered_total", "channel" => channel).increment(n),
        }
        self.inner.delivered.fetch_add(n, Ordering::Relaxed);
    }

    /// Events handed to subscribers on this node since it started.
    pub fn delivered(&self) -> u64 {
        self.inner.delivered.load(Ordering::Relaxed)
    }

    /// Forgets a node that died or shut down.
    pub fn forget_node(&self, node: &str) {
        lock::lock(&self.inner.remote).remove(node);
    }

    /// Connections open and not closing.
    pub fn connection_count(&self) -> usize {
        self.inner.connections.load(Ordering::Relaxed)
    }

    pub fn subscription_count(&self) -> usize {
        self.inner.subscriptions.load(Ordering::Relaxed)
    }

    /// Counts a live GraphQL subscription of root field `name` (a field not in
    /// [`SUBSCRIPTION_FIELDS`] counts as [`OTHER_FIELD`]) for as long as the guard lives.
    pub fn subscription_of(&self, name: &str) -> SubscriptionGuard {
        let field = SUBSCRIPTION_FIELDS.iter().find(|f| **f == name).copied().unwrap_or(OTHER_FIELD);
        self.subscription(field)
    }

    /// Counts a live GraphQL subscription for as long as the returned guard lives.
    pub fn subscription(&self, field: &'static str) -> SubscriptionGuard {
        self.inner.subscriptions.fetch_add(1, Ordering::Relaxed);
        self.inner.by_field[field_slot(field)].fetch_add(1, Ordering::Relaxed);
        metrics::gauge!("switchboard_subscriptions", "field" => field).increment(1.0);
        SubscriptionGuard { connections: self.clone(), field }
    }
}

/// A node's counters as the console shows them, taken from what the server keeps anyway: this
/// the connection counts' atomics, the broker's count of published events, the slow-consumer counts. The
/// same numbers travel in a cluster node's heartbeat, so that every node's console shows every
/// node.
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
    /// This node's counters now, from `connections` and `broker`. Atomics only: no lock the
    /// delivery path takes.
    pub fn collect(connections: &Connections, broker: &Broker) -> Self {
        Self {
            connections: connections.connections_by_channel().iter().map(|(c, n)| (c.label().to_owned(), *n)).collect(),
            subscriptions: connections.subscriptions_by_field().into_iter().map(|(f, n)| (f.to_owned(), n)).collect(),
            published: broker.published(),
            delivered: connections.delivered(),
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

/// One admitted connection: counted until dropped, online from `sign_in` to `go_offline`.
#[derive(Debug)]
pub struct Permit {
    connections: Connections,
    channel: Channel,
    user: Option<Box<str>>,
    /// Not closing yet.
    live: bool,
    /// Its place among anonymous connections, while it has no user (boxed: most connections
    /// sign in, and every connection holds a permit).
    anonymous: Option<Box<Anonymous>>,
}

/// An anonymous permit's places: its address's, and one in the anonymous share unless it is on
/// probation.
#[derive(Debug)]
struct Anonymous {
    _slot: AddressSlot,
    counted: bool,
}

impl Permit {
    /// Counts this connection against `user_id`'s share and puts the user online; refused when
    /// the user already holds the most connections allowed. A permit signs in once (later calls
    /// change nothing); signing in gives back its anonymous places.
    pub fn sign_in(&mut self, user_id: &str) -> Result<(), Refused> {
        if self.user.is_some() {
            return Ok(());
        }
        self.leave_anonymous();
        let max = self.connections.inner.limits.max_per_user;
        let mut users = lock::lock(&self.connections.inner.users);
        let users = &mut *users;
        if users.by_id.get(user_id).map_or(0, |count| count.admitted) >= max {
            return Err(Refused::TooManyForUser(max));
        }
        if !users.by_id.contains_key(user_id) {
            users.by_id.insert(user_id.to_owned(), UserCount::default());
        }
        let count = users.by_id.get_mut(user_id).expect("present");
        count.admitted += 1;
        let mut came_online = false;
        if self.live {
            count.online += 1;
            if count.online == 1 {
                users.online += 1;
                came_online = true;
            }
        }
        self.user = Some(user_id.into());
        if came_online {
            self.connections.replicate(user_id, true);
        }
        Ok(())
    }

    /// A connection admitted as [`Identity::Unknown`] turns out to have no user: it keeps its
    /// address's place, and needs one in the anonymous share if it was admitted on probation.
    pub fn stay_anonymous(&mut self) -> Result<(), Refused> {
        let connections = self.connections.clone();
        match &mut self.anonymous {
            Some(anonymous) if !anonymous.counted => {
                anonymous.counted = connections.count_anonymous();
                if anonymous.counted { Ok(()) } else { Err(Refused::AnonymousFull) }
            }
            _ => Ok(()),
        }
    }

    fn leave_anonymous(&mut self) {
        if let Some(anonymous) = self.anonymous.take()
            && anonymous.counted
        {
            self.connections.inner.anonymous.fetch_sub(1, Ordering::AcqRel);
        }
    }

    /// The connection is closing: it no longer counts as open or puts its user online, but keeps
    /// its place against the limits until the permit drops.
    pub fn go_offline(&mut self) {
        if !std::mem::replace(&mut self.live, false) {
            return;
        }
        let inner = &self.connections.inner;
        inner.connections.fetch_sub(1, Ordering::Relaxed);
        inner.by_channel[self.channel.index()].fetch_sub(1, Ordering::Relaxed);
        metrics::gauge!("switchboard_ws_connections", "channel" => self.channel.label()).decrement(1.0);
        if let Some(user) = &self.user {
            let mut users = lock::lock(&inner.users);
            let users = &mut *users;
            let mut went_offline = false;
            if let Some(count) = users.by_id.get_mut(&**user) {
                count.online -= 1;
                if count.online == 0 {
                    users.online -= 1;
                    went_offline = true;
                }
            }
            if went_offline {
                self.connections.replicate(user, false);
            }
        }
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        self.go_offline();
        self.leave_anonymous();
        let inner = &self.connections.inner;
        inner.admitted.fetch_sub(1, Ordering::AcqRel);
        if let Some(user) = self.user.take() {
            let mut users = lock::lock(&inner.users);
            if let Some(count) = users.by_id.get_mut(&*user) {
                count.admitted -= 1;
                if count.admitted == 0 {
                    users.by_id.remove(&*user);
                }
            }
        }
    }
}

/// One live subscription; uncounts on drop.
#[derive(Debug)]
pub struct SubscriptionGuard {
    connections: Connections,
    field: &'static str,
}

impl Drop for SubscriptionGuard {
    fn drop(&mut self) {
        self.connections.inner.subscriptions.fetch_sub(1, Ordering::Relaxed);
        // The slot is found again rather than kept: a guard lives in every shared membership,
        // whose size a connection's operation table pays for, and six comparisons are nothing.
        self.connections.inner.by_field[field_slot(self.field)].fetch_sub(1, Ordering::Relaxed);
        metrics::gauge!("switchboard_subscriptions", "field" => self.field).decrement(1.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOME: IpAddr = IpAddr::V4(std::net::Ipv4Addr::LOCALHOST);

    fn limits(max_connections: usize, max_per_user: usize) -> Limits {
        Limits {
            max_connections,
            max_per_user,
            anonymous_per_address: max_connections,
            max_anonymous: max_connections,
            anonymous_requests_per_address: 1,
        }
    }

    fn admit(connections: &Connections, channel: Channel) -> Result<Permit, Refused> {
        connections.admit(channel, HOME, Identity::Unknown)
    }

    #[test]
    fn the_node_and_each_user_have_a_limit_and_a_dropped_permit_frees_its_place() {
        let connections = Connections::new(limits(3, 2));
        let mut a1 = admit(&connections, Channel::Rooms).unwrap();
        let mut a2 = admit(&connections, Channel::GraphqlWs).unwrap();
        let mut a3 = admit(&connections, Channel::Rooms).unwrap();
        assert_eq!(admit(&connections, Channel::Rooms).unwrap_err(), Refused::Full(3));
        a1.sign_in("a").unwrap();
        a2.sign_in("a").unwrap();
        assert_eq!(a3.sign_in("a"), Err(Refused::TooManyForUser(2)));
        a3.sign_in("b").unwrap();
        assert_eq!((connections.user_count(), connections.connection_count()), (2, 3));
        drop(a1);
        let mut again = admit(&connections, Channel::Rooms).expect("a place came back");
        again.sign_in("a").expect("and a's share with it");
    }

    #[test]
    fn a_closing_connection_is_offline_but_keeps_its_place() {
        let connections = Connections::new(limits(1, 1));
        let mut permit = admit(&connections, Channel::Rooms).unwrap();
        permit.sign_in("a").unwrap();
        assert!(connections.is_online("a"));
        permit.go_offline();
        assert!(!connections.is_online("a"));
        assert_eq!((connections.user_count(), connections.connection_count()), (0, 0));
        assert!(admit(&connections, Channel::Rooms).is_err(), "still counted until dropped");
        drop(permit);
        assert!(admit(&connections, Channel::Rooms).is_ok());
    }

    #[test]
    fn the_console_counts_follow_channels_fields_and_guards() {
        let connections = Connections::new(limits(10, 10));
        let count = |channel| connections.connections_by_channel().iter().find(|(c, _)| *c == channel).unwrap().1;
        let field = |name| connections.subscriptions_by_field().iter().find(|(f, _)| *f == name).unwrap().1;
        let mut sse = admit(&connections, Channel::Sse).unwrap();
        let _rooms = admit(&connections, Channel::Rooms).unwrap();
        assert_eq!((count(Channel::Sse), count(Channel::Rooms), count(Channel::GraphqlWs)), (1, 1, 0));
        sse.go_offline();
        assert_eq!(count(Channel::Sse), 0, "a closing connection no longer counts");
        drop(sse);
        assert_eq!(count(Channel::Sse), 0, "nor twice");
        let order = connections.subscription("orderUpdated");
        let unknown = connections.subscription("somethingNew");
        assert_eq!((field("orderUpdated"), field(OTHER_FIELD), field("orderEvents")), (1, 1, 0));
        drop((order, unknown));
        assert_eq!((field("orderUpdated"), field(OTHER_FIELD)), (0, 0));
        connections.count_delivered("sse", 3);
        connections.count_delivered("rooms", 2);
        assert_eq!(connections.delivered(), 5);
    }

    #[test]
    fn strangers_have_a_share_per_address_and_together_and_signed_in_users_the_rest() {
        let limits = Limits { anonymous_per_address: 2, max_anonymous: 3, ..limits(6, 10) };
        let connections = Connections::new(limits);
        let (a, b, c): (IpAddr, IpAddr, IpAddr) =
            ("192.0.2.1".parse().unwrap(), "192.0.2.2".parse().unwrap(), "192.0.2.3".parse().unwrap());
        let a1 = connections.admit(Channel::Sse, a, Identity::Anonymous).unwrap();
        let _a2 = connections.admit(Channel::Sse, a, Identity::Anonymous).unwrap();
        assert_eq!(
            connections.admit(Channel::Sse, a, Identity::Anonymous).unwrap_err(),
            Refused::TooManyFromAddress(2)
        );
        assert_eq!(connections.admit(Channel::Sse, a, Identity::Unknown).unwrap_err(), Refused::TooManyFromAddress(2));
        let _b1 = connections.admit(Channel::Sse, b, Identity::Anonymous).unwrap();
        assert_eq!(connections.anonymous_count(), (3, 2));
        // The anonymous share is spent: another stranger is refused...
        assert_eq!(connections.admit(Channel::Sse, c, Identity::Anonymous).unwrap_err(), Refused::AnonymousFull);
        // ...a signed-in user is not, even from a full address...
        let _user = connections.admit(Channel::Rooms, a, Identity::User("u1")).unwrap();
        // ...and a connection that does not know yet is admitted on probation: it may sign in,
        // or stay anonymous once there is room again.
        let mut maybe = connections.admit(Channel::GraphqlTransportWs, c, Identity::Unknown).unwrap();
        let mut stranger = connections.admit(Channel::GraphqlTransportWs, c, Identity::Unknown).unwrap();
        assert_eq!(stranger.stay_anonymous(), Err(Refused::AnonymousFull));
        maybe.sign_in("u2").unwrap();
        assert_eq!(connections.anonymous_from(c), 1, "signing in gave the address's place back");
        drop(a1);
        assert_eq!(stranger.stay_anonymous(), Ok(()), "a place in the share came back");
        assert_eq!(connections.anonymous_count(), (3, 3));
        assert_eq!(connections.admit(Channel::Sse, c, Identity::Anonymous).unwrap_err(), Refused::AnonymousFull);
        let _u3 = connections.admit(Channel::Rooms, b, Identity::User("u3")).unwrap();
        assert_eq!(connections.admit(Channel::Rooms, b, Identity::User("u4")).unwrap_err(), Refused::Full(6));
        drop(stranger);
        assert_eq!(connections.anonymous_from(c), 0);
    }
}
