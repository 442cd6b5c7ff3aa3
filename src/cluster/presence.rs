//! Presence for the whole cluster: room members, typing and who is online, replicated through
//! Redis so that every node's `/ws` channel and `roomPresence` / `isUserOnline` / `stats` agree.
//!
//! Each node owns its part and keeps it in Redis, under the store's log epoch:
//! - `switchboard:<epoch>:presence:<node>`, a hash: one field per (room, user) with the node's
//!   connection count, and one per user online on the node;
//! - `switchboard:<epoch>:node:<node>`, its heartbeat, with its connection and subscription totals
//!   and its console counters, rewritten every [`HEARTBEAT`] with a time to live of [`NODE_TTL`];
//! - `switchboard:<epoch>:nodes`, the set of node names.
//!
//! Every change is also published on `switchboard:<epoch>:presence`, which the other nodes apply at
//! once ([`crate::rooms::Rooms::apply_count`], [`crate::connections::Connections::apply_online`]).
//! Pub/sub may lose a message, so each node also re-reads every other node's hash every
//! [`RESYNC`] (and whenever its subscription comes back) and reconciles: the hash is the truth.
//!
//! A node that dies stops renewing its heartbeat: within [`NODE_TTL`] plus one heartbeat the
//! others notice, drop its members (sending `user_left_room` where it held a user's last
//! connection) and clear its keys. A node that shuts down says so first (a `gone` message), so
//! that its members leave everywhere at once. A typing indicator from another node also stops by
//! itself on every node after the typing timeout, so a node dying mid-sentence leaves no one typing.
//!
//! Redis may lose everything it holds (a restart without persistence, `FLUSHALL`): the other
//! nodes' hashes, heartbeats and the node set are then gone although every node lives. Absence is
//! evidence of death only while Redis remembers, so each node watches `switchboard:<epoch>:generation`,
//! a value the first node to find it missing sets anew: when it changes, or when this node could
//! not reach Redis for a while, no node is declared dead for a [`GRACE`], long enough for every
//! live node to write its part back. A node writes its part back in the same transaction that
//! puts it into the node set, so a node listed there never shows an empty hash.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use redis::AsyncCommands;
use redis::aio::ConnectionManager;
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::commerce::model::Timestamp;
use crate::connections::NodeCounters;
use crate::connections::{Connections, OnlineChange};
use crate::events::Broker;
use crate::rooms::{LocalEntry, PresenceChange, Rooms};

/// How often a node renews its heartbeat and looks for dead nodes.
pub const HEARTBEAT: Duration = Duration::from_secs(1);
/// How long a heartbeat lives: a node silent this long is dead.
pub const NODE_TTL: Duration = Duration::from_secs(5);
/// How often every other node's stored presence is re-read.
pub const RESYNC: Duration = Duration::from_secs(5);
/// After Redis lost its memory, or after this node could not reach it: how long no other node is
/// declared dead, so that every live node has beaten (and written its part back) in the meantime.
pub const GRACE: Duration = Duration::from_secs(NODE_TTL.as_secs() + 2 * HEARTBEAT.as_secs());

/// What travels on the presence channel.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "t", rename_all = "snake_case")]
pub(super) enum Message {
    Count { node: String, room: String, user: String, name: Option<String>, joined_at: Timestamp, count: usize },
    Typing { node: String, room: String, user: String, is_typing: bool, field: Option<String> },
    Online { node: String, user: String, online: bool },
    Gone { node: String },
}

/// What reaches the presence task from the subscription.
#[derive(Debug)]
pub(super) enum Heard {
    Message(Message),
    /// The subscription was (re)made: messages may have been missed.
    Resubscribed,
}

/// The stored value of a (room, user) field.
#[derive(Debug, Serialize, Deserialize)]
struct Stored {
    name: Option<String>,
    joined_at: Timestamp,
    count: usize,
}

/// A node's heartbeat.
#[derive(Debug, Serialize, Deserialize)]
struct Beat {
    connections: usize,
    subscriptions: usize,
    /// What the operator console shows for the node (a few hundred bytes a second); absent from
    /// the beats of a node that predates the console.
    #[serde(default)]
    counters: Option<NodeCounters>,
}

const SEP: char = '\u{1f}';

fn room_field(room: &str, user: &str) -> String {
    format!("r{SEP}{room}{SEP}{user}")
}

fn user_field(user: &str) -> String {
    format!("u{SEP}{user}")
}

pub(super) struct Keys {
    pub channel: String,
    prefix: String,
}

impl Keys {
    pub fn new(epoch: &str) -> Self {
        Self { channel: format!("switchboard:{epoch}:presence"), prefix: format!("switchboard:{epoch}") }
    }

    fn hash(&self, node: &str) -> String {
        format!("{}:presence:{node}", self.prefix)
    }

    fn beat(&self, node: &str) -> String {
        format!("{}:node:{node}", self.prefix)
    }

    fn nodes(&self) -> String {
        format!("{}:nodes", self.prefix)
    }

    fn generation(&self) -> String {
        format!("{}:generation", self.prefix)
    }
}

/// Keeps this node's presence in Redis and the other nodes' in `rooms` and `connections`.
#[allow(clippy::too_many_arguments)]
pub(super) async fn run(
    mut redis: ConnectionManager,
    keys: Keys,
    node: String,
    rooms: Rooms,
    connections: Connections,
    broker: Broker,
    mut heard: mpsc::UnboundedReceiver<Heard>,
    shutdown: CancellationToken,
) {
    let (room_tx, mut room_changes) = mpsc::unbounded_channel();
    let (online_tx, mut online_changes) = mpsc::unbounded_channel();
    rooms.replicate_to(room_tx);
    connections.replicate_to(online_tx);
    let mut replica = Replica {
        keys,
        node,
        rooms,
        connections,
        broker,
        known: HashSet::new(),
        dirty: true,
        generation: None,
        verdicts_from: Instant::now(),
    };
    // A previous life of this node (same NODE_ID) left its members behind: take them back.
    replica.goodbye(&mut redis).await;
    let mut heartbeat = tokio::time::interval(HEARTBEAT);
    heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut beats = 0u64;
    loop {
        tokio::select! {
            () = shutdown.cancelled() => {
                let _ = tokio::time::timeout(Duration::from_secs(1), replica.goodbye(&mut redis)).await;
                return;
            }
            Some(change) = room_changes.recv() => replica.local_room_change(&mut redis, change).await,
            Some(change) = online_changes.recv() => replica.local_online_change(&mut redis, change).await,
            Some(heard) = heard.recv() => match heard {
                Heard::Message(message) => replica.apply(message),
                Heard::Resubscribed => replica.resync(&mut redis).await,
            },
            _ = heartbeat.tick() => {
                beats += 1;
                replica.beat(&mut redis).await;
                if beats.is_multiple_of((RESYNC.as_secs() / HEARTBEAT.as_secs()).max(1)) {
                    replica.resync(&mut redis).await;
                }
            }
        }
    }
}

struct Replica {
    keys: Keys,
    node: String,
    rooms: Rooms,
    connections: Connections,
    /// Read for the counters the heartbeat carries.
    broker: Broker,
    /// The other nodes this one has seen alive.
    known: HashSet<String>,
    /// This node's stored presence may be out of date (a write failed, Redis forgot it): rewrite
    /// it whole.
    dirty: bool,
    /// The value of the generation key when this node last read it.
    generation: Option<String>,
    /// No node is declared dead from missing keys before this instant (see [`GRACE`]).
    verdicts_from: Instant,
}

impl Replica {
    async fn local_room_change(&mut self, redis: &mut ConnectionManager, change: PresenceChange) {
        let (field, value, message) = match change {
            PresenceChange::Count { room, user, name, joined_at, count } => {
                let field = room_field(&room, &user);
                let value = (count > 0).then(|| {
                    serde_json::to_string(&Stored { name: name.clone(), joined_at, count }).expect("serialises")
                });
                (Some(field), value, Message::Count { node: self.node.clone(), room, user, name, joined_at, count })
            }
            PresenceChange::Typing { room, user, is_typing, field } => {
                (None, None, Message::Typing { node: self.node.clone(), room, user, is_typing, field })
            }
        };
        self.write(redis, field, value, message).await;
    }

    async fn local_online_change(&mut self, redis: &mut ConnectionManager, change: OnlineChange) {
        let field = user_field(&change.user);
        let value = change.online.then(|| "1".to_owned());
        let message = Message::Online { node: self.node.clone(), user: change.user, online: change.online };
        self.write(redis, Some(field), value, message).await;
    }

    /// Stores one field of this node's hash (or removes it) and publishes the change, in one
    /// round trip. When Redis is away the stored state goes stale: it is rewritten whole later.
    async fn write(
        &mut self,
        redis: &mut ConnectionManager,
        field: Option<String>,
        value: Option<String>,
        message: Message,
    ) {
        let mut pipe = redis::pipe();
        let hash = self.keys.hash(&self.node);
        match (&field, &value) {
            (Some(field), Some(value)) => {
                pipe.hset(&hash, field, value).ignore();
            }
            (Some(field), None) => {
                pipe.hdel(&hash, field).ignore();
            }
            _ => {}
        }
        pipe.publish(&self.keys.channel, serde_json::to_string(&message).expect("serialises")).ignore();
        if pipe.query_async::<()>(redis).await.is_err() {
            self.dirty = true;
        }
    }

    /// Renews this node's heartbeat, rewrites its stored presence if it may be stale, and drops
    /// the nodes whose heartbeat is gone.
    async fn beat(&mut self, redis: &mut ConnectionManager) {
        if !self.check_generation(redis).await {
            return; // Redis is away: nothing to learn about the others either
        }
        let beat = Beat {
            connections: self.connections.connection_count(),
            subscriptions: self.connections.subscription_count(),
            counters: Some(NodeCounters::collect(&self.connections, &self.broker)),
        };
        let mut pipe = redis::pipe();
        let rewrite = self.dirty;
        if rewrite {
            // In one transaction with joining the node set: a node that is listed has its part.
            pipe.atomic();
            self.add_rewrite(&mut pipe);
        }
        pipe.pset_ex(
            self.keys.beat(&self.node),
            serde_json::to_string(&beat).expect("serialises"),
            NODE_TTL.as_millis() as u64,
        )
        .ignore()
        .sadd(self.keys.nodes(), &self.node)
        .ignore();
        if pipe.query_async::<()>(redis).await.is_err() {
            self.unreachable();
            return;
        }
        if rewrite {
            self.dirty = false;
        }
        if Instant::now() < self.verdicts_from {
            return; // the others may not have written their part back yet
        }
        let Ok(nodes) = redis.smembers::<_, Vec<String>>(self.keys.nodes()).await else { return };
        let others: Vec<String> = nodes.into_iter().filter(|n| *n != self.node).collect();
        // A node another one already found dead (and removed from the set) is dead here too.
        let vanished: Vec<String> = self.known.iter().filter(|n| !others.contains(n)).cloned().collect();
        for node in vanished {
            tracing::warn!(node = %node, "cluster: node gone; removing its members");
            self.forget(&node);
        }
        if others.is_empty() {
            return;
        }
        let beat_keys: Vec<String> = others.iter().map(|n| self.keys.beat(n)).collect();
        let Ok(beats) = redis.mget::<_, Vec<Option<String>>>(&beat_keys).await else { return };
        for (other, beat) in others.iter().zip(beats) {
            match beat.and_then(|b| serde_json::from_str::<Beat>(&b).ok()) {
                Some(beat) => {
                    self.known.insert(other.clone());
                    self.connections.apply_totals(other, beat.connections, beat.subscriptions);
                    if let Some(counters) = beat.counters {
                        self.connections.apply_counters(other, counters);
                    }
                }
                None => {
                    tracing::warn!(node = %other, "cluster: node gone silent; removing its members");
                    self.forget(other);
                    let _: Result<(), _> = redis::pipe()
                        .del(self.keys.hash(other))
                        .ignore()
                        .srem(self.keys.nodes(), other)
                        .ignore()
                        .query_async(redis)
                        .await;
                }
            }
        }
    }

    /// Reads the generation key, setting it when it is missing. Returns whether Redis answered.
    /// A generation other than the last one seen means Redis lost what it held: this node's part
    /// must be written back, and absent keys say nothing about the others for a while.
    async fn check_generation(&mut self, redis: &mut ConnectionManager) -> bool {
        let key = self.keys.generation();
        // Fresh at every beat, so that a generation this node sets is never one it saw before.
        let proposal = uuid::Uuid::new_v4().to_string();
        let answer: redis::RedisResult<(Option<String>,)> =
            redis::pipe().set_nx(&key, &proposal).ignore().get(&key).query_async(redis).await;
        let Ok((Some(generation),)) = answer else {
            self.unreachable();
            return false;
        };
        match &self.generation {
            Some(known) if *known != generation => {
                tracing::warn!("cluster: Redis lost its presence data; writing this node's part back");
                self.dirty = true;
                self.verdicts_from = Instant::now() + GRACE;
            }
            _ => {}
        }
        self.generation = Some(generation);
        true
    }

    /// Redis did not answer: this node's stored part may be stale, and what it will find missing
    /// on its return may be missing only because nobody could write it.
    fn unreachable(&mut self) {
        self.dirty = true;
        self.verdicts_from = Instant::now() + GRACE;
    }

    /// Adds to `pipe` the commands that replace this node's stored part with what it holds now.
    fn add_rewrite(&self, pipe: &mut redis::Pipeline) {
        let hash = self.keys.hash(&self.node);
        pipe.del(&hash).ignore();
        for entry in self.rooms.local_entries() {
            let stored = Stored { name: entry.name, joined_at: entry.joined_at, count: entry.count };
            pipe.hset(&hash, room_field(&entry.room, &entry.user), serde_json::to_string(&stored).expect("serialises"))
                .ignore();
        }
        for user in self.connections.local_online_users() {
            pipe.hset(&hash, user_field(&user), "1").ignore();
        }
    }

    /// Re-reads every other live node's stored presence and makes the local copy match it.
    async fn resync(&mut self, redis: &mut ConnectionManager) {
        let Ok(nodes) = redis.smembers::<_, Vec<String>>(self.keys.nodes()).await else { return };
        for other in nodes.into_iter().filter(|n| *n != self.node) {
            let alive: bool = redis.exists(self.keys.beat(&other)).await.unwrap_or(true);
            if !alive {
                continue; // the heartbeat check removes it
            }
            let Ok(stored) = redis.hgetall::<_, HashMap<String, String>>(self.keys.hash(&other)).await else { return };
            let mut entries = Vec::new();
            let mut online = HashSet::new();
            for (field, value) in stored {
                let mut parts = field.split(SEP);
                match (parts.next(), parts.next(), parts.next()) {
                    (Some("r"), Some(room), Some(user)) => {
                        if let Ok(s) = serde_json::from_str::<Stored>(&value) {
                            entries.push(LocalEntry {
                                room: room.to_owned(),
                                user: user.to_owned(),
                                name: s.name,
                                joined_at: s.joined_at,
                                count: s.count,
                            });
                        }
                    }
                    (Some("u"), Some(user), None) => {
                        online.insert(user.to_owned());
                    }
                    _ => {}
                }
            }
            self.known.insert(other.clone());
            self.rooms.reconcile(&other, &entries);
            self.connections.reconcile_online(&other, online);
        }
    }

    fn apply(&mut self, message: Message) {
        match message {
            Message::Count { node, .. } | Message::Typing { node, .. } | Message::Online { node, .. }
                if node == self.node => {}
            Message::Count { node, room, user, name, joined_at, count } => {
                self.known.insert(node.clone());
                self.rooms.apply_count(&node, LocalEntry { room, user, name, joined_at, count });
            }
            Message::Typing { node, room, user, is_typing, field } => {
                self.rooms.apply_typing(&node, &room, &user, is_typing, field.as_deref());
            }
            Message::Online { node, user, online } => {
                self.known.insert(node.clone());
                self.connections.apply_online(&node, &user, online);
            }
            Message::Gone { node } if node == self.node => {}
            Message::Gone { node } => {
                tracing::info!(node = %node, "cluster: node left");
                self.forget(&node);
            }
        }
    }

    fn forget(&mut self, node: &str) {
        self.known.remove(node);
        self.rooms.forget_node(node);
        self.connections.forget_node(node);
    }

    /// Removes this node's stored presence and tells the others at once.
    async fn goodbye(&mut self, redis: &mut ConnectionManager) {
        let gone = serde_json::to_string(&Message::Gone { node: self.node.clone() }).expect("serialises");
        let result: redis::RedisResult<()> = redis::pipe()
            .del(self.keys.hash(&self.node))
            .ignore()
            .del(self.keys.beat(&self.node))
            .ignore()
            .srem(self.keys.nodes(), &self.node)
            .ignore()
            .publish(&self.keys.channel, gone)
            .ignore()
            .query_async(redis)
            .await;
        self.dirty = result.is_err() || !self.rooms.local_entries().is_empty();
    }
}
