//! What the other nodes of a cluster report about their part of the presence (fed by
//! `crate::cluster::presence`), merged into this node's rooms: a person is a member while any
//! node has a connection of theirs in the room, and `user_joined_room` / `user_left_room` mark the
//! cluster-wide first and last connection. This node's own part goes the other way, through
//! [`Rooms::replicate_to`].

use std::collections::HashMap;
use std::sync::atomic::Ordering;

use super::presence::{LocalEntry, Member, Room, Rooms, State, Typing, Typist, broadcast};
use super::protocol::ServerMessage;
use super::typing::spawn_typing_timer;
use crate::commerce::model::Timestamp;

impl Rooms {
    /// This node's part of the presence: what the other nodes should know.
    pub fn local_entries(&self) -> Vec<LocalEntry> {
        let state = self.state();
        let mut entries = Vec::new();
        for (room_id, room) in &state.rooms {
            for (user, member) in &room.members {
                if member.local > 0 {
                    entries.push(LocalEntry {
                        room: room_id.clone(),
                        user: user.clone(),
                        name: member.name.clone(),
                        joined_at: member.joined_at,
                        count: member.local,
                    });
                }
            }
        }
        entries
    }

    /// Another node reports `count` connections of `user` in `room`.
    pub fn apply_count(&self, node: &str, entry: LocalEntry) {
        let mut state = self.state();
        apply_remote_count(&mut state, node, &entry);
    }

    /// Makes another node's part exactly `entries` (what it stored in Redis): counts it no longer
    /// has go to zero. Used when a node's messages may have been missed.
    pub fn reconcile(&self, node: &str, entries: &[LocalEntry]) {
        let mut state = self.state();
        let known: Vec<(String, String)> = state
            .rooms
            .iter()
            .flat_map(|(room_id, room)| {
                room.members
                    .iter()
                    .filter(|(_, m)| m.remote.contains_key(node))
                    .map(move |(user, _)| (room_id.clone(), user.clone()))
            })
            .collect();
        for (room, user) in known {
            if !entries.iter().any(|e| e.room == room && e.user == user) {
                let gone = LocalEntry { room, user, name: None, joined_at: Timestamp::now(), count: 0 };
                apply_remote_count(&mut state, node, &gone);
            }
        }
        for entry in entries {
            apply_remote_count(&mut state, node, entry);
        }
    }

    /// Removes every connection another node had (it died or shut down).
    pub fn forget_node(&self, node: &str) {
        self.reconcile(node, &[]);
    }

    /// A typist on another node started or stopped. A started indicator also stops by itself
    /// here after the typing timeout, so that a node that dies mid-sentence leaves no one typing.
    pub fn apply_typing(&self, node: &str, room_id: &str, user_id: &str, is_typing: bool, field: Option<&str>) {
        let mut state = self.state();
        let State { rooms, conns } = &mut *state;
        let Some(room) = rooms.get_mut(room_id) else { return };
        let Some(member) = room.members.get_mut(user_id) else { return };
        if !member.remote.contains_key(node) {
            return; // not (or no longer) there according to that node's counts
        }
        if !is_typing && member.typing.as_ref().is_none_or(|t| t.by != Typist::Remote(node.to_owned())) {
            return;
        }
        member.typing = is_typing.then(|| {
            let generation = self.inner.next_id.fetch_add(1, Ordering::Relaxed);
            let timer = spawn_typing_timer(self, room_id, user_id, generation);
            Typing { by: Typist::Remote(node.to_owned()), field: field.map(str::to_owned), generation, timer }
        });
        let message = ServerMessage::TypingIndicator { room_id, user_id, is_typing, field };
        room.broadcast(conns, &message, None);
    }
}

/// Sets another node's count for one member, announcing a cluster-wide first or last connection
/// to this node's connections in the room.
fn apply_remote_count(state: &mut State, node: &str, entry: &LocalEntry) {
    let State { rooms, conns } = state;
    let room_id = entry.room.as_str();
    if entry.count == 0 && !rooms.contains_key(room_id) {
        return;
    }
    let room = rooms.entry(entry.room.clone()).or_insert_with(|| {
        metrics::gauge!("switchboard_rooms").increment(1.0);
        Room::default()
    });
    let seq = room.next_seq;
    let Room { conns: here, members, next_seq } = room;
    let member = match members.get_mut(&entry.user) {
        Some(member) => member,
        None if entry.count == 0 => return,
        None => {
            *next_seq += 1;
            metrics::gauge!("switchboard_presence_members").increment(1.0);
            members.entry(entry.user.clone()).or_insert(Member {
                name: entry.name.clone(),
                local: 0,
                remote: HashMap::new(),
                joined_at: entry.joined_at,
                seq,
                typing: None,
            })
        }
    };
    let before = member.connections();
    if entry.count == 0 {
        member.remote.remove(node);
    } else {
        member.remote.insert(node.to_owned(), entry.count);
        member.joined_at = member.joined_at.min(entry.joined_at);
        if member.name.is_none() {
            member.name.clone_from(&entry.name);
        }
    }
    let user_id = entry.user.as_str();
    if entry.count == 0 && member.typing.as_ref().is_some_and(|t| t.by == Typist::Remote(node.to_owned())) {
        let typing = member.typing.take().expect("checked");
        let message =
            ServerMessage::TypingIndicator { room_id, user_id, is_typing: false, field: typing.field.as_deref() };
        broadcast(here, conns, &message, None);
    }
    let after = member.connections();
    if before == 0 && after > 0 {
        let message = ServerMessage::UserJoinedRoom { room_id, user_id, name: entry.name.as_deref() };
        broadcast(here, conns, &message, None);
    } else if before > 0 && after == 0 {
        members.remove(user_id);
        metrics::gauge!("switchboard_presence_members").decrement(1.0);
        broadcast(here, conns, &ServerMessage::UserLeftRoom { room_id, user_id }, None);
    }
    if here.is_empty() && members.is_empty() {
        rooms.remove(room_id);
        metrics::gauge!("switchboard_rooms").decrement(1.0);
    }
}
