//! Rooms, their members and who is typing: the one source of truth behind the `/ws` channel's
//! presence messages and the `roomPresence` / `stats` queries, so that the two always agree.
//! Joining and leaving are here; typing indicators are in [`super::typing`], what the other nodes
//! of a cluster report in [`super::replica`], the console's view in [`super::overview`].
//!
//! Everything lives under one `std::sync::Mutex`: every operation is a few map updates plus
//! `try_send`s that never wait, and none is held across an `.await`. A membership change and the
//! messages announcing it happen under the same lock, so every connection sees a room's events in
//! one order, and a newcomer's `room_joined` list is exactly the state the following
//! `user_joined_room` / `user_left_room` messages start from.
//!
//! Each connection has an outbox, a bounded queue its socket loop drains. A connection whose outbox
//! is full is too slow to follow the room: rather than skip messages (a missed `user_left_room`
//! leaves a ghost in its member list for good), it is marked slow (see [`crate::events::slow_consumer`])
//! and its socket is closed with 1013, which clients retry; on reconnecting they get fresh member
//! lists.
//!
//! A connection is registered by [`Rooms::connect`] and unregistered when the returned
//! [`Membership`] is dropped, however the connection ended: leaving every room is in `Drop`, so
//! there are no ghosts.
//!
//! With several nodes, a member's connections are counted per node: this node's own, and what
//! the other nodes reported (`Rooms::apply_count`, fed by `crate::cluster::presence`). A person
//! is a member while any node has a connection of theirs in the room; `user_joined_room` and
//! `user_left_room` mark the cluster-wide first and last connection, wherever they were. Every
//! change to this node's counts and typing is handed to the replicator ([`Rooms::replicate_to`]).

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::Duration;

use async_graphql::ID;
use axum::extract::ws::Utf8Bytes;
use tokio::sync::mpsc;
use tokio::task::AbortHandle;

use super::protocol::ServerMessage;
use crate::commerce::model::{PresenceUser, Timestamp};
use crate::config::Config;
use crate::events::slow_consumer::{self, Feed, SlowConsumer};
use crate::lock;

/// The limits and timings the rooms apply.
#[derive(Debug, Clone)]
pub struct RoomSettings {
    /// After the last `isTyping: true`, the server stops the indicator itself.
    pub typing_timeout: Duration,
    /// Distinct users per room.
    pub max_members: usize,
    /// Rooms per connection.
    pub max_rooms: usize,
    /// Messages queued for one connection before it counts as too slow.
    pub queue: usize,
}

impl RoomSettings {
    pub fn from_config(config: &Config) -> Self {
        Self {
            typing_timeout: config.typing_timeout(),
            max_members: config.ws_room_max_members,
            max_rooms: config.ws_max_rooms,
            queue: config.subscriber_queue,
        }
    }
}

impl Default for RoomSettings {
    fn default() -> Self {
        Self { typing_timeout: Duration::from_secs(3), max_members: 1_000, max_rooms: 50, queue: 256 }
    }
}

/// Why a join was refused by a limit.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JoinRefused {
    #[error("a connection may be in at most {0} rooms; leave one first")]
    TooManyRooms(usize),
    #[error("room is full: at most {0} members")]
    RoomFull(usize),
}

/// A typing indicator for a room the connection has not joined.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("join room {0} first")]
pub struct NotInRoom(pub String);

/// A change to this node's part of the presence, for the other nodes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PresenceChange {
    /// This node now has `count` connections of `user` in `room` (0: none left).
    Count { room: String, user: String, name: Option<String>, joined_at: Timestamp, count: usize },
    /// A typist on this node started or stopped.
    Typing { room: String, user: String, is_typing: bool, field: Option<String> },
}

/// One entry of this node's presence, as the other nodes keep it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalEntry {
    pub room: String,
    pub user: String,
    pub name: Option<String>,
    pub joined_at: Timestamp,
    pub count: usize,
}

pub(super) type ConnId = u64;

/// The rooms of one server; clones share them.
#[derive(Debug, Clone, Default)]
pub struct Rooms {
    pub(super) inner: Arc<Inner>,
}

#[derive(Debug, Default)]
pub(super) struct Inner {
    pub(super) settings: RoomSettings,
    state: Mutex<State>,
    pub(super) next_id: AtomicU64,
    /// Where changes to this node's counts and typing go, once a cluster is joined.
    replica: OnceLock<mpsc::UnboundedSender<PresenceChange>>,
}

#[derive(Debug, Default)]
pub(super) struct State {
    pub(super) rooms: HashMap<String, Room>,
    pub(super) conns: HashMap<ConnId, Conn>,
}

#[derive(Debug)]
pub(super) struct Conn {
    pub(super) user_id: String,
    pub(super) name: Option<String>,
    outbox: Feed<Utf8Bytes>,
    pub(super) rooms: HashSet<String>,
}

#[derive(Debug, Default)]
pub(super) struct Room {
    /// This node's connections in the room.
    pub(super) conns: HashSet<ConnId>,
    /// User id → member: one per person, however many tabs on however many nodes.
    pub(super) members: HashMap<String, Member>,
    /// Orders the member list by arrival.
    pub(super) next_seq: u64,
}

#[derive(Debug)]
pub(super) struct Member {
    pub(super) name: Option<String>,
    /// Connections on this node.
    pub(super) local: usize,
    /// Connections on other nodes, by node.
    pub(super) remote: HashMap<String, usize>,
    pub(super) joined_at: Timestamp,
    pub(super) seq: u64,
    pub(super) typing: Option<Typing>,
}

impl Member {
    pub(super) fn connections(&self) -> usize {
        self.local + self.remote.values().sum::<usize>()
    }
}

/// A live typing indicator: who set it, and the timer that will clear it.
#[derive(Debug)]
pub(super) struct Typing {
    /// The typist's connection on this node, or the node a remote typist is on.
    pub(super) by: Typist,
    pub(super) field: Option<String>,
    pub(super) generation: u64,
    pub(super) timer: AbortHandle,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Typist {
    Local(ConnId),
    Remote(String),
}

impl Drop for Typing {
    fn drop(&mut self) {
        self.timer.abort();
    }
}

impl Rooms {
    pub fn new(settings: RoomSettings) -> Self {
        Self { inner: Arc::new(Inner { settings, ..Inner::default() }) }
    }

    /// From now on, every change to this node's counts and typing is sent to `replica`.
    pub fn replicate_to(&self, replica: mpsc::UnboundedSender<PresenceChange>) {
        let _ = self.inner.replica.set(replica);
    }

    /// The state, even after a panic elsewhere poisoned the lock (the policy of [`crate::lock`]).
    pub(super) fn state(&self) -> MutexGuard<'_, State> {
        lock::lock(&self.inner.state)
    }

    pub(super) fn replicate(&self, change: PresenceChange) {
        if let Some(replica) = self.inner.replica.get() {
            let _ = replica.send(change);
        }
    }

    /// Registers a connection of `user_id`, whose outbox marks `consumer` slow when it overflows;
    /// the connection leaves every room when the result is dropped.
    pub fn connect(&self, user_id: &str, name: Option<String>, consumer: &SlowConsumer) -> Membership {
        let id = self.inner.next_id.fetch_add(1, Ordering::Relaxed);
        let (outbox, rx) = slow_consumer::queue(self.inner.settings.queue, consumer);
        let conn = Conn { user_id: user_id.to_owned(), name, outbox, rooms: HashSet::new() };
        self.state().conns.insert(id, conn);
        Membership { rooms: self.clone(), id, outbox: rx }
    }

    /// The room's members, one entry per person, in the order they arrived.
    pub fn presence(&self, room_id: &str) -> Vec<PresenceUser> {
        self.state().rooms.get(room_id).map(Room::presence).unwrap_or_default()
    }

    /// Every room with its connection count (on every node), sorted by id.
    pub fn stats(&self) -> Vec<(String, usize)> {
        let state = self.state();
        let mut stats: Vec<_> =
            state.rooms.iter().map(|(id, r)| (id.clone(), r.members.values().map(Member::connections).sum())).collect();
        stats.sort();
        stats
    }
}

impl Room {
    pub(super) fn presence(&self) -> Vec<PresenceUser> {
        self.presence_first(usize::MAX)
    }

    /// The first `limit` members, in the order they arrived.
    pub(super) fn presence_first(&self, limit: usize) -> Vec<PresenceUser> {
        let mut members: Vec<_> = self.members.iter().collect();
        members.sort_by_key(|(_, m)| m.seq);
        members
            .into_iter()
            .take(limit)
            .map(|(user_id, m)| PresenceUser {
                user_id: ID(user_id.clone()),
                name: m.name.clone(),
                connections: i32::try_from(m.connections()).unwrap_or(i32::MAX),
                joined_at: m.joined_at,
                is_typing: m.typing.is_some(),
                typing_field: m.typing.as_ref().and_then(|t| t.field.clone()),
            })
            .collect()
    }

    /// Queues `message` for every connection in the room but `except`.
    pub(super) fn broadcast(&self, conns: &HashMap<ConnId, Conn>, message: &ServerMessage<'_>, except: Option<ConnId>) {
        broadcast(&self.conns, conns, message, except);
    }
}

/// Queues `message` for every connection of `room` (a room's `conns`, borrowed apart from its
/// members) but `except`.
pub(super) fn broadcast(
    room: &HashSet<ConnId>,
    conns: &HashMap<ConnId, Conn>,
    message: &ServerMessage<'_>,
    except: Option<ConnId>,
) {
    let text = message.to_text();
    for id in room {
        if Some(*id) != except
            && let Some(conn) = conns.get(id)
        {
            enqueue(conn, text.clone());
        }
    }
}

/// Queues a message for one connection without waiting; a full queue marks it too slow.
/// Presence and typing messages are not events: they are not counted as delivered.
fn enqueue(conn: &Conn, text: Utf8Bytes) {
    conn.outbox.offer(text);
}

/// One connection's place in the rooms. Dropping it leaves every room the connection is in.
#[derive(Debug)]
pub struct Membership {
    pub(super) rooms: Rooms,
    pub(super) id: ConnId,
    outbox: mpsc::Receiver<Utf8Bytes>,
}

impl Membership {
    /// The next message queued for this connection, when one is.
    pub fn poll_recv(&mut self, cx: &mut std::task::Context<'_>) -> std::task::Poll<Option<Utf8Bytes>> {
        self.outbox.poll_recv(cx)
    }

    /// The next message queued for this connection.
    pub async fn recv(&mut self) -> Option<Utf8Bytes> {
        self.outbox.recv().await
    }

    /// A queued message, if one is waiting.
    pub fn try_recv(&mut self) -> Option<Utf8Bytes> {
        self.outbox.try_recv().ok()
    }

    /// Joins `room_id` (already authorised): queues `room_joined` with the member list for this
    /// connection and, if this is the user's first connection there (on any node),
    /// `user_joined_room` for the others. Joining again just repeats `room_joined`.
    pub fn join(&self, room_id: &str) -> Result<(), JoinRefused> {
        let settings = &self.rooms.inner.settings;
        let mut state = self.rooms.state();
        let State { rooms, conns } = &mut *state;
        let conn = conns.get_mut(&self.id).expect("a live membership is registered");
        if conn.rooms.contains(room_id) {
            let members = rooms.get(room_id).map(Room::presence).unwrap_or_default();
            enqueue(conn, ServerMessage::RoomJoined { room_id, members }.to_text());
            return Ok(());
        }
        if conn.rooms.len() >= settings.max_rooms {
            return Err(JoinRefused::TooManyRooms(settings.max_rooms));
        }
        let room = rooms.get(room_id);
        let first = room.is_none_or(|r| !r.members.contains_key(&conn.user_id));
        if first && room.is_some_and(|r| r.members.len() >= settings.max_members) {
            return Err(JoinRefused::RoomFull(settings.max_members));
        }
        let room = rooms.entry(room_id.to_owned()).or_insert_with(|| {
            metrics::gauge!("switchboard_rooms").increment(1.0);
            Room::default()
        });
        conn.rooms.insert(room_id.to_owned());
        room.conns.insert(self.id);
        let seq = room.next_seq;
        let member = room.members.entry(conn.user_id.clone()).or_insert_with(|| {
            metrics::gauge!("switchboard_presence_members").increment(1.0);
            Member {
                name: conn.name.clone(),
                local: 0,
                remote: HashMap::new(),
                joined_at: Timestamp::now(),
                seq,
                typing: None,
            }
        });
        member.local += 1;
        let change = PresenceChange::Count {
            room: room_id.to_owned(),
            user: conn.user_id.clone(),
            name: member.name.clone(),
            joined_at: member.joined_at,
            count: member.local,
        };
        if first {
            room.next_seq += 1;
        }
        let conn = &conns[&self.id];
        enqueue(conn, ServerMessage::RoomJoined { room_id, members: room.presence() }.to_text());
        if first {
            let message = ServerMessage::UserJoinedRoom { room_id, user_id: &conn.user_id, name: conn.name.as_deref() };
            room.broadcast(conns, &message, Some(self.id));
        }
        drop(state);
        self.rooms.replicate(change);
        Ok(())
    }

    /// Leaves `room_id` and queues `room_left` (also when the connection was not in it: leaving
    /// is idempotent).
    pub fn leave(&self, room_id: &str) {
        let mut state = self.rooms.state();
        let changes = remove_from_room(&mut state, self.id, room_id);
        if let Some(conn) = state.conns.get(&self.id) {
            enqueue(conn, ServerMessage::RoomLeft { room_id }.to_text());
        }
        drop(state);
        changes.into_iter().for_each(|c| self.rooms.replicate(c));
    }
}

impl Drop for Membership {
    fn drop(&mut self) {
        let mut state = self.rooms.state();
        let joined: Vec<String> =
            state.conns.get(&self.id).map(|c| c.rooms.iter().cloned().collect()).unwrap_or_default();
        let mut changes = Vec::new();
        for room_id in joined {
            changes.extend(remove_from_room(&mut state, self.id, &room_id));
        }
        state.conns.remove(&self.id);
        drop(state);
        changes.into_iter().for_each(|c| self.rooms.replicate(c));
    }
}

/// Takes connection `id` out of `room_id`: its typing indicator stops, the user's member entry
/// goes with their last connection on any node (announced by `user_left_room`), the room with its
/// last member. Returns what the other nodes must hear.
fn remove_from_room(state: &mut State, id: ConnId, room_id: &str) -> Vec<PresenceChange> {
    let State { rooms, conns } = state;
    let mut changes = Vec::new();
    let Some(conn) = conns.get_mut(&id) else { return changes };
    if !conn.rooms.remove(room_id) {
        return changes;
    }
    let Some(room) = rooms.get_mut(room_id) else { return changes };
    room.conns.remove(&id);
    let user_id = conn.user_id.clone();
    let user_id = user_id.as_str();
    let Room { conns: here, members, .. } = room;
    if let Some(member) = members.get_mut(user_id) {
        member.local -= 1;
        let last_here = member.local == 0;
        if member
            .typing
            .as_ref()
            .is_some_and(|t| t.by == Typist::Local(id) || (last_here && matches!(t.by, Typist::Local(_))))
        {
            let typing = member.typing.take().expect("checked");
            let message =
                ServerMessage::TypingIndicator { room_id, user_id, is_typing: false, field: typing.field.as_deref() };
            broadcast(here, conns, &message, None);
            changes.push(PresenceChange::Typing {
                room: room_id.to_owned(),
                user: user_id.to_owned(),
                is_typing: false,
                field: typing.field.clone(),
            });
        }
        changes.push(PresenceChange::Count {
            room: room_id.to_owned(),
            user: user_id.to_owned(),
            name: member.name.clone(),
            joined_at: member.joined_at,
            count: member.local,
        });
        if member.connections() == 0 {
            members.remove(user_id);
            metrics::gauge!("switchboard_presence_members").decrement(1.0);
            broadcast(here, conns, &ServerMessage::UserLeftRoom { room_id, user_id }, None);
        }
    }
    if here.is_empty() && members.is_empty() {
        rooms.remove(room_id);
        metrics::gauge!("switchboard_rooms").decrement(1.0);
    }
    changes
}

#[cfg(test)]
mod tests {
    use serde_json::Value;

    use super::*;

    fn rooms() -> Rooms {
        Rooms::new(RoomSettings { typing_timeout: Duration::from_millis(50), max_members: 2, max_rooms: 2, queue: 16 })
    }

    fn drain(m: &mut Membership) -> Vec<Value> {
        std::iter::from_fn(|| m.try_recv()).map(|t| serde_json::from_str(t.as_str()).unwrap()).collect()
    }

    fn types(messages: &[Value]) -> Vec<&str> {
        messages.iter().map(|m| m["type"].as_str().unwrap()).collect()
    }

    #[tokio::test]
    async fn tabs_are_one_member_and_leave_with_the_last() {
        let rooms = rooms();
        let mut watcher = rooms.connect("w", None, &SlowConsumer::new());
        watcher.join("r").unwrap();
        let tab1 = rooms.connect("u", Some("U".into()), &SlowConsumer::new());
        let tab2 = rooms.connect("u", Some("U".into()), &SlowConsumer::new());
        tab1.join("r").unwrap();
        tab2.join("r").unwrap();
        let presence = rooms.presence("r");
        assert_eq!(presence.len(), 2);
        assert_eq!((presence[1].user_id.as_str(), presence[1].connections), ("u", 2));
        assert_eq!(rooms.stats(), vec![("r".to_owned(), 3)]);
        drop(tab1);
        assert_eq!(rooms.presence("r")[1].connections, 1);
        drop(tab2);
        assert_eq!(rooms.presence("r").len(), 1);
        let seen = drain(&mut watcher);
        assert_eq!(types(&seen), ["room_joined", "user_joined_room", "user_left_room"]);
        drop(watcher);
        assert!(rooms.stats().is_empty() && rooms.presence("r").is_empty());
    }

    #[tokio::test]
    async fn the_overview_lists_the_busiest_rooms_with_their_first_members() {
        let rooms = Rooms::new(RoomSettings { max_rooms: 5, ..RoomSettings::default() });
        let a = rooms.connect("a", Some("A".into()), &SlowConsumer::new());
        let a2 = rooms.connect("a", Some("A".into()), &SlowConsumer::new());
        let b = rooms.connect("b", None, &SlowConsumer::new());
        for room in ["quiet", "busy", "middle"] {
            a.join(room).unwrap();
        }
        a2.join("busy").unwrap();
        b.join("busy").unwrap();
        b.join("middle").unwrap();
        b.typing("busy", true, Some("note")).unwrap();
        let overview = rooms.overview(2, 1);
        assert_eq!((overview.rooms, overview.members), (3, 5));
        let shown: Vec<_> =
            overview.busiest.iter().map(|r| (r.room_id.as_str(), r.connections, r.member_count)).collect();
        assert_eq!(shown, [("busy", 3, 2), ("middle", 2, 2)]);
        let first = &overview.busiest[0].members;
        assert_eq!(first.len(), 1, "members are capped");
        assert_eq!((first[0].user_id.as_str(), first[0].connections), ("a", 2));
        assert!(rooms.overview(5, 5).busiest[0].members[1].is_typing);
        assert!(rooms.overview(0, 5).busiest.is_empty());
    }

    #[tokio::test]
    async fn limits_refuse_joins() {
        let rooms = rooms();
        let a = rooms.connect("a", None, &SlowConsumer::new());
        a.join("r1").unwrap();
        a.join("r2").unwrap();
        assert_eq!(a.join("r3"), Err(JoinRefused::TooManyRooms(2)));
        a.join("r1").unwrap(); // re-joining is not a new room
        let b = rooms.connect("b", None, &SlowConsumer::new());
        b.join("r1").unwrap();
        let c = rooms.connect("c", None, &SlowConsumer::new());
        assert_eq!(c.join("r1"), Err(JoinRefused::RoomFull(2)));
        let b2 = rooms.connect("b", None, &SlowConsumer::new());
        b2.join("r1").expect("a member's second tab fits a full room");
    }

    #[tokio::test]
    async fn typing_times_out_and_stops_when_the_typist_leaves() {
        let rooms = rooms();
        let mut watcher = rooms.connect("w", None, &SlowConsumer::new());
        watcher.join("r").unwrap();
        let typist = rooms.connect("t", None, &SlowConsumer::new());
        typist.join("r").unwrap();
        drain(&mut watcher);
        typist.typing("r", true, Some("body")).unwrap();
        assert!(rooms.presence("r")[1].is_typing);
        tokio::time::sleep(Duration::from_millis(150)).await;
        let seen = drain(&mut watcher);
        assert_eq!(seen.iter().map(|m| m["payload"]["isTyping"].as_bool().unwrap()).collect::<Vec<_>>(), [true, false]);
        assert!(!rooms.presence("r")[1].is_typing);

        typist.typing("r", true, None).unwrap();
        typist.leave("r");
        let seen = drain(&mut watcher);
        assert_eq!(types(&seen), ["typing_indicator", "typing_indicator", "user_left_room"]);
        assert_eq!(seen[1]["payload"]["isTyping"], false);
        tokio::time::sleep(Duration::from_millis(150)).await;
        assert!(drain(&mut watcher).is_empty(), "the aborted timer sends nothing");
        assert_eq!(typist.typing("r", true, None), Err(NotInRoom("r".into())));
    }

    #[tokio::test]
    async fn a_full_outbox_marks_the_connection_too_slow() {
        let rooms = rooms();
        let (slow_consumer, chatty_consumer) = (SlowConsumer::new(), SlowConsumer::new());
        let slow = rooms.connect("slow", None, &slow_consumer);
        slow.join("r").unwrap();
        let chatty = rooms.connect("chatty", None, &chatty_consumer);
        chatty.join("r").unwrap();
        for _ in 0..20 {
            chatty.typing("r", true, None).unwrap();
        }
        assert!(slow_consumer.is_slow());
        assert!(!chatty_consumer.is_slow());
    }
}
