//! What the room channel is served with; one pointer, because every connection holds it.

use std::ops::Deref;
use std::sync::Arc;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::presence::Rooms;
use crate::auth::Keys;
use crate::config::Config;
use crate::connections::Connections;
use crate::events::Broker;
use crate::events::log::EventLog;
use crate::store::Store;

/// The state of `/ws`; cheap to clone.
#[derive(Clone)]
pub struct RoomsState(Arc<Parts>);

pub struct Parts {
    pub keys: Arc<Keys>,
    pub config: Arc<Config>,
    /// Who may connect, and the delivered count.
    pub connections: Connections,
    pub rooms: Rooms,
    /// Who may join an entity room.
    pub store: Store,
    /// Joins with `after` replay from the log.
    pub log: EventLog,
    /// Entity rooms relay their entity's events, every connection its user's notifications.
    pub broker: Broker,
    /// Cancelled at shutdown; every socket loop watches it.
    pub shutdown: CancellationToken,
    pub tracker: TaskTracker,
}

impl RoomsState {
    pub fn new(parts: Parts) -> Self {
        Self(Arc::new(parts))
    }
}

impl Deref for RoomsState {
    type Target = Parts;

    fn deref(&self) -> &Parts {
        &self.0
    }
}
