//! Typing indicators: set and cleared by a connection in a room, relayed to the room's other
//! connections (on every node), and cleared by the server itself after the typing timeout, so
//! that a typist who goes quiet (or a node that dies mid-sentence) leaves no one typing.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};

use tokio::task::AbortHandle;

use super::presence::{Inner, Membership, NotInRoom, PresenceChange, Rooms, State, Typing, Typist};
use super::protocol::ServerMessage;

impl Rooms {
    /// Called by a typing timer: clears the indicator unless it was set again since.
    pub(super) fn typing_expired(&self, room_id: &str, user_id: &str, generation: u64) {
        let mut state = self.state();
        let State { rooms, conns } = &mut *state;
        let Some(room) = rooms.get_mut(room_id) else { return };
        let Some(member) = room.members.get_mut(user_id) else { return };
        if member.typing.as_ref().is_none_or(|t| t.generation != generation) {
            return;
        }
        let typing = member.typing.take().expect("checked");
        let message =
            ServerMessage::TypingIndicator { room_id, user_id, is_typing: false, field: typing.field.as_deref() };
        match &typing.by {
            Typist::Local(conn) => {
                room.broadcast(conns, &message, Some(*conn));
                drop(state);
                self.replicate(PresenceChange::Typing {
                    room: room_id.to_owned(),
                    user: user_id.to_owned(),
                    is_typing: false,
                    field: typing.field.clone(),
                });
            }
            Typist::Remote(_) => room.broadcast(conns, &message, None),
        }
    }
}

impl Membership {
    /// Sets or clears this user's typing indicator in `room_id` and relays it to the room's other
    /// connections (on every node). A `true` is cleared by the server after the typing timeout
    /// unless renewed.
    pub fn typing(&self, room_id: &str, is_typing: bool, field: Option<&str>) -> Result<(), NotInRoom> {
        let mut state = self.rooms.state();
        let State { rooms, conns } = &mut *state;
        let conn = &conns[&self.id];
        let room = match rooms.get_mut(room_id) {
            Some(room) if conn.rooms.contains(room_id) => room,
            _ => return Err(NotInRoom(room_id.to_owned())),
        };
        let member = room.members.get_mut(&conn.user_id).expect("a connection in a room has a member entry");
        // Dropping the previous indicator aborts its timer.
        member.typing = is_typing.then(|| {
            let generation = self.rooms.inner.next_id.fetch_add(1, Ordering::Relaxed);
            let timer = spawn_typing_timer(&self.rooms, room_id, &conn.user_id, generation);
            Typing { by: Typist::Local(self.id), field: field.map(str::to_owned), generation, timer }
        });
        let message = ServerMessage::TypingIndicator { room_id, user_id: &conn.user_id, is_typing, field };
        room.broadcast(conns, &message, Some(self.id));
        let change = PresenceChange::Typing {
            room: room_id.to_owned(),
            user: conn.user_id.clone(),
            is_typing,
            field: field.map(str::to_owned),
        };
        drop(state);
        self.rooms.replicate(change);
        Ok(())
    }
}

/// Clears an indicator after the typing timeout. The task holds the rooms weakly: a server that
/// is gone has nobody to tell.
pub(super) fn spawn_typing_timer(rooms: &Rooms, room_id: &str, user_id: &str, generation: u64) -> AbortHandle {
    let inner: Weak<Inner> = Arc::downgrade(&rooms.inner);
    let timeout = rooms.inner.settings.typing_timeout;
    let (room_id, user_id) = (room_id.to_owned(), user_id.to_owned());
    tokio::spawn(async move {
        tokio::time::sleep(timeout).await;
        if let Some(inner) = inner.upgrade() {
            Rooms { inner }.typing_expired(&room_id, &user_id, generation);
        }
    })
    .abort_handle()
}
