//! Rooms and their members.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use crate::model::PresenceUser;

#[derive(Debug, Default)]
struct Room {
    members: Vec<PresenceUser>,
    connections: usize,
}

#[derive(Debug, Clone, Default)]
pub struct Rooms {
    rooms: Arc<Mutex<HashMap<String, Room>>>,
}

impl Rooms {
    /// The room's members, one entry per person.
    pub fn presence(&self, room_id: &str) -> Vec<PresenceUser> {
        self.rooms.lock().expect("rooms lock").get(room_id).map(|r| r.members.clone()).unwrap_or_default()
    }

    /// Every room with its connection count, sorted by id.
    pub fn stats(&self) -> Vec<(String, usize)> {
        let rooms = self.rooms.lock().expect("rooms lock");
        let mut stats: Vec<_> = rooms.iter().map(|(id, r)| (id.clone(), r.connections)).collect();
        stats.sort();
        stats
    }
}
