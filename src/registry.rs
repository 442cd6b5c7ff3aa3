//! Who is connected right now, on every WebSocket channel: the numbers behind `isUserOnline`,
//! `stats` and the connection gauges in `/metrics`.
//!
//! A connection registers itself and holds the returned guard; dropping the guard (however the
//! connection ends) unregisters it, so the counts cannot drift from the sockets.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

/// The WebSocket channels, as labelled in metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Channel {
    GraphqlTransportWs,
    GraphqlWs,
    Rooms,
}

impl Channel {
    pub fn label(self) -> &'static str {
        match self {
            Channel::GraphqlTransportWs => "graphql-transport-ws",
            Channel::GraphqlWs => "graphql-ws",
            Channel::Rooms => "rooms",
        }
    }
}

#[derive(Debug, Default)]
struct Inner {
    connections: AtomicUsize,
    subscriptions: AtomicUsize,
    /// Signed-in user id → live connections of theirs, on any channel.
    online: Mutex<HashMap<String, usize>>,
}

#[derive(Debug, Clone, Default)]
pub struct Registry {
    inner: Arc<Inner>,
}

impl Registry {
    pub fn new() -> Self {
        Self::default()
    }

    /// Registers a connection; anonymous ones count as connections but put nobody online.
    pub fn connect(&self, channel: Channel) -> ConnectionGuard {
        self.inner.connections.fetch_add(1, Ordering::Relaxed);
        metrics::gauge!("switchboard_ws_connections", "channel" => channel.label()).increment(1.0);
        ConnectionGuard { registry: self.clone(), channel, user: None }
    }

    pub fn is_online(&self, user_id: &str) -> bool {
        crate::lock::lock(&self.inner.online).contains_key(user_id)
    }

    pub fn user_count(&self) -> usize {
        crate::lock::lock(&self.inner.online).len()
    }

    pub fn connection_count(&self) -> usize {
        self.inner.connections.load(Ordering::Relaxed)
    }

    pub fn subscription_count(&self) -> usize {
        self.inner.subscriptions.load(Ordering::Relaxed)
    }

    /// Counts a live GraphQL subscription for as long as the returned guard lives.
    pub fn subscription(&self, field: &'static str) -> SubscriptionGuard {
        self.inner.subscriptions.fetch_add(1, Ordering::Relaxed);
        metrics::gauge!("switchboard_subscriptions", "field" => field).increment(1.0);
        SubscriptionGuard { registry: self.clone(), field }
    }
}

/// One live connection; unregisters on drop.
#[derive(Debug)]
pub struct ConnectionGuard {
    registry: Registry,
    channel: Channel,
    user: Option<String>,
}

impl ConnectionGuard {
    /// Marks the connection as belonging to `user_id` (once it has authenticated).
    pub fn sign_in(&mut self, user_id: &str) {
        if self.user.is_some() {
            return;
        }
        *crate::lock::lock(&self.registry.inner.online).entry(user_id.to_owned()).or_default() += 1;
        self.user = Some(user_id.to_owned());
    }
}

impl Drop for ConnectionGuard {
    fn drop(&mut self) {
        let inner = &self.registry.inner;
        inner.connections.fetch_sub(1, Ordering::Relaxed);
        metrics::gauge!("switchboard_ws_connections", "channel" => self.channel.label()).decrement(1.0);
        if let Some(user) = self.user.take() {
            let mut online = crate::lock::lock(&inner.online);
            if let Some(n) = online.get_mut(&user) {
                *n -= 1;
                if *n == 0 {
                    online.remove(&user);
                }
            }
        }
    }
}

/// One live subscription; uncounts on drop.
#[derive(Debug)]
pub struct SubscriptionGuard {
    registry: Registry,
    field: &'static str,
}

impl Drop for SubscriptionGuard {
    fn drop(&mut self) {
        self.registry.inner.subscriptions.fetch_sub(1, Ordering::Relaxed);
        metrics::gauge!("switchboard_subscriptions", "field" => self.field).decrement(1.0);
    }
}
