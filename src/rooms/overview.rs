//! The rooms as the operator console shows them: how many rooms and members there are (on every
//! node), and the busiest rooms with their first members.

use super::presence::{Member, Room, Rooms};
use crate::commerce::model::PresenceUser;

/// The rooms as the operator console shows them (see [`Rooms::overview`]).
/// The rooms as the operator console shows them (see [`Rooms::overview`]).
#[derive(Debug, Clone, PartialEq)]
pub struct RoomsOverview {
    /// Rooms with at least one member, on any node.
    pub rooms: usize,
    /// Members (one per user and room).
    pub members: usize,
    pub busiest: Vec<RoomView>,
}

/// One room in [`RoomsOverview`].
#[derive(Debug, Clone, PartialEq)]
pub struct RoomView {
    pub room_id: String,
    /// Connections (tabs) in the room, on every node.
    pub connections: usize,
    pub member_count: usize,
    /// The first members to arrive, with their tab counts and typing.
    pub members: Vec<PresenceUser>,
}

impl Rooms {
    /// The operator console's view: how many rooms and members there are (on every node), and
    /// the `limit` busiest rooms (most connections first, then by id) with at most `members` of
    /// their members each. One pass under the lock, copying only what is shown, so that a
    /// console polling twice a second holds it for microseconds even with thousands of rooms.
    pub fn overview(&self, limit: usize, members: usize) -> RoomsOverview {
        let state = self.state();
        let mut member_total = 0;
        let mut busiest: Vec<(usize, &String, &Room)> = state
            .rooms
            .iter()
            .map(|(id, room)| {
                member_total += room.members.len();
                (room.members.values().map(Member::connections).sum::<usize>(), id, room)
            })
            .collect();
        let order = |a: &(usize, &String, &Room), b: &(usize, &String, &Room)| b.0.cmp(&a.0).then_with(|| a.1.cmp(b.1));
        if busiest.len() > limit && limit > 0 {
            busiest.select_nth_unstable_by(limit - 1, order);
        }
        busiest.truncate(limit);
        busiest.sort_unstable_by(order);
        RoomsOverview {
            rooms: state.rooms.len(),
            members: member_total,
            busiest: busiest
                .into_iter()
                .map(|(connections, id, room)| RoomView {
                    room_id: id.clone(),
                    connections,
                    member_count: room.members.len(),
                    members: room.presence_first(members),
                })
                .collect(),
        }
    }
}
