//! The in-process broker: events routed by key to bounded per-subscriber queues.
//!
//! Why not one `tokio::sync::broadcast` per key: a broadcast channel allocates its whole ring up
//! front, so 10k subscribers on 10k distinct orders would hold 10k rings. Here each subscriber
//! holds one bounded `mpsc` queue (allocated in small blocks as it fills) and a publish walks only
//! the subscribers of the event's keys.
//!
//! A subscriber whose queue is full is *slow* (the rule of [`crate::events::slow_consumer`]): the event is
//! not queued, its owner is marked slow and nothing more is queued for it, so it never sees a
//! stream with a silent hole in it. The transport owning it closes the socket with a retryable code
//! (see the README).
//!
//! Publishing is synchronous and never waits on a subscriber, so a slow one cannot slow the
//! publisher or the others. [`crate::commerce`] publishes in commit order, which with FIFO queues
//! gives every subscriber the events of one entity in the order they were stored.
//!
//! Beside the keys, the broker has *taps* ([`Broker::tap`]): every published event, for the
//! operator console's live tail. A tap is not a subscriber: it is a view for people, so it may
//! miss events (it is told how many) rather than be closed as slow, and it costs the publisher one
//! atomic load while no tap is open, and one `broadcast` send (a short lock and a slot write, the
//! same whatever the number of taps) while one is.

pub mod event;
pub mod log;
pub mod slow_consumer;

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, RwLock, Weak};
use std::task::{Context, Poll};

use futures::Stream;
use slab::Slab;
use tokio::sync::{broadcast, mpsc};

pub use event::{Event, EventBody, InventoryChangePayload, NotificationPayload, OrderEvent, OrderUpdatePayload};

use crate::lock;
use slow_consumer::{Feed, SlowConsumer};

/// Where an event is routed: one entity, or one audience.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Key {
    /// One order: `orderUpdated(orderId)`, room `order:<id>`.
    Order(i64),
    /// Every order event: `orderEvents` for staff.
    AllOrders,
    /// One customer's order events: `orderEvents` for that customer.
    CustomerOrders(String),
    /// One product: `inventoryChanged(productId)`, room `product:<id>`.
    Product(i64),
    /// Every product: `inventoryChanged` without an id.
    AllProducts,
    /// One user's notifications.
    User(String),
}

impl Key {
    /// A short label for metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            Key::Order(_) => "order",
            Key::AllOrders => "all_orders",
            Key::CustomerOrders(_) => "customer_orders",
            Key::Product(_) => "product",
            Key::AllProducts => "all_products",
            Key::User(_) => "user",
        }
    }
}

#[derive(Default)]
struct Topics {
    by_key: HashMap<Key, Slab<Feed<Arc<Event>>>>,
}

/// A cheap handle to the broker; clones share it.
#[derive(Clone, Default)]
pub struct Broker {
    topics: Arc<RwLock<Topics>>,
    watch: Arc<Watch>,
}

/// How many events a tap may fall behind before it misses some: a few seconds of a console's
/// reading at its usual pace; 64 `Arc`s allocated once per broker.
const TAP_BACKLOG: usize = 64;

/// What the console watches: the count of published events, and the taps; and the log position
/// delivered so far.
struct Watch {
    published: AtomicU64,
    /// The log position of the last event handed to subscribers (see [`Broker::delivered_through`]).
    delivered: AtomicU64,
    /// Taps open: the publisher sends to `taps` only when there is one.
    open_taps: AtomicUsize,
    taps: broadcast::Sender<Arc<Event>>,
}

impl Default for Watch {
    fn default() -> Self {
        Self {
            published: AtomicU64::new(0),
            delivered: AtomicU64::new(0),
            open_taps: AtomicUsize::new(0),
            taps: broadcast::channel(TAP_BACKLOG).0,
        }
    }
}

/// Every event published from now on, until dropped; see [`Broker::tap`].
pub struct Tap {
    events: broadcast::Receiver<Arc<Event>>,
    watch: Arc<Watch>,
}

impl Tap {
    /// The next event, or how many were missed since the last one (the tap fell more than
    /// [`TAP_BACKLOG`] behind); `None` once the broker is gone.
    pub async fn recv(&mut self) -> Option<Result<Arc<Event>, u64>> {
        match self.events.recv().await {
            Ok(event) => Some(Ok(event)),
            Err(broadcast::error::RecvError::Lagged(missed)) => Some(Err(missed)),
            Err(broadcast::error::RecvError::Closed) => None,
        }
    }

    /// Skips every event waiting for this tap, returning how many: a reader that paused shows
    /// what happens next rather than what happened while it paused.
    pub fn skip_waiting(&mut self) -> u64 {
        let mut skipped = 0;
        // Drained rather than resubscribed, so that an event sent meanwhile is counted too; the
        // bound keeps a publisher faster than this loop from holding it.
        for _ in 0..2 * TAP_BACKLOG {
            match self.events.try_recv() {
                Ok(_) => skipped += 1,
                Err(broadcast::error::TryRecvError::Lagged(missed)) => skipped += missed,
                Err(_) => return skipped,
            }
        }
        let rest = self.events.len() as u64;
        self.events = self.events.resubscribe();
        skipped + rest
    }
}

impl Drop for Tap {
    fn drop(&mut self) {
        self.watch.open_taps.fetch_sub(1, Ordering::Relaxed);
    }
}

impl std::fmt::Debug for Broker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Broker").field("keys", &self.key_count()).finish()
    }
}

impl Broker {
    pub fn new() -> Self {
        Self::default()
    }

    /// Subscribes to `key` with room for `capacity` undelivered events. When the queue overflows,
    /// `owner` is marked slow and the subscription receives nothing more.
    pub fn subscribe(&self, key: Key, capacity: usize, owner: &SlowConsumer) -> Subscription {
        let (feed, rx) = slow_consumer::queue(capacity, owner);
        let slot = lock::write(&self.topics).by_key.entry(key.clone()).or_default().insert(feed);
        Subscription { rx, key, slot, topics: Arc::downgrade(&self.topics) }
    }

    /// Hands `event` to every subscriber of its keys. Never waits.
    pub fn publish(&self, event: Event) {
        self.publish_shared(Arc::new(event));
    }

    /// [`Broker::publish`] for an event already shared (the cluster's sequencer hands these on).
    pub fn publish_shared(&self, event: Arc<Event>) {
        let keys = event.keys();
        metrics::counter!("switchboard_events_published_total", "topic" => keys[0].kind()).increment(1);
        self.watch.published.fetch_add(1, Ordering::Relaxed);
        self.watch.delivered.fetch_max(event.position, Ordering::Relaxed);
        if self.watch.open_taps.load(Ordering::Relaxed) > 0 {
            let _ = self.watch.taps.send(Arc::clone(&event)); // Err: the last tap just closed
        }
        let topics = lock::read(&self.topics);
        for key in &keys {
            let Some(feeds) = topics.by_key.get(key) else { continue };
            for (_, feed) in feeds {
                // Refused: the subscriber is slow (and told so); closed: its `Drop` removes it.
                feed.offer(Arc::clone(&event));
            }
        }
    }

    /// Every event published from now on (the console's live tail).
    pub fn tap(&self) -> Tap {
        let events = self.watch.taps.subscribe();
        self.watch.open_taps.fetch_add(1, Ordering::Relaxed);
        Tap { events, watch: self.watch.clone() }
    }

    /// The log position up to which this broker has handed events to its subscribers: the log's
    /// head when it was started ([`Broker::start_after`]), then each event's as it is published.
    /// Events reach a broker in log order (one node's commits are published in commit order; a
    /// cluster's sequencer hands on every node's by position), so a live subscription made now
    /// receives exactly the matching events after this position: it is where a subscription
    /// starts, read without a store round trip (the graphql-ws `connection_ack` carries it). On
    /// one node it is the log's head; in a cluster it trails the head by the time an event takes
    /// to reach this node, never leads it.
    pub fn delivered_through(&self) -> u64 {
        self.watch.delivered.load(Ordering::Relaxed)
    }

    /// Starts [`Broker::delivered_through`] at the log's head when the node starts: what came
    /// before is history, which resuming subscribers read from the log.
    pub fn start_after(&self, position: u64) {
        self.watch.delivered.fetch_max(position, Ordering::Relaxed);
    }

    /// Events published by this broker since it started (this node's, and in a cluster the
    /// other nodes' it handed on).
    pub fn published(&self) -> u64 {
        self.watch.published.load(Ordering::Relaxed)
    }

    /// Number of keys with at least one subscriber.
    pub fn key_count(&self) -> usize {
        lock::read(&self.topics).by_key.len()
    }
}

/// A live subscription: a stream of events that unsubscribes when dropped.
pub struct Subscription {
    rx: mpsc::Receiver<Arc<Event>>,
    key: Key,
    slot: usize,
    topics: Weak<RwLock<Topics>>,
}

impl Subscription {
    pub async fn recv(&mut self) -> Option<Arc<Event>> {
        self.rx.recv().await
    }
}

impl Stream for Subscription {
    type Item = Arc<Event>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.rx.poll_recv(cx)
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        let Some(topics) = self.topics.upgrade() else { return };
        let mut topics = lock::write(&topics);
        if let Some(feeds) = topics.by_key.get_mut(&self.key) {
            feeds.try_remove(self.slot);
            if feeds.is_empty() {
                topics.by_key.remove(&self.key);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::commerce::model::{Notification, Timestamp};

    fn notification(user: &str, seq: u64) -> Event {
        let n = Notification {
            id: seq as i64,
            user_id: user.into(),
            kind: "info".into(),
            title: "t".into(),
            message: "m".into(),
            read: false,
            created_at: Timestamp::now(),
        };
        let stamp = event::Stamp { cursor: String::new(), sequence: seq as i64 };
        Event {
            topic: Event::user_topic(user),
            seq,
            position: seq,
            body: EventBody::Notification(NotificationPayload::new(&n, stamp)),
        }
    }

    #[tokio::test]
    async fn routes_by_key_only() {
        let broker = Broker::new();
        let mut a = broker.subscribe(Key::User("a".into()), 8, &SlowConsumer::new());
        let mut b = broker.subscribe(Key::User("b".into()), 8, &SlowConsumer::new());
        broker.publish(notification("a", 1));
        assert_eq!(a.recv().await.unwrap().seq, 1);
        assert!(b.rx.try_recv().is_err());
    }

    #[tokio::test]
    async fn overflow_cancels_and_stops_queueing() {
        let broker = Broker::new();
        let owner = SlowConsumer::new();
        let mut sub = broker.subscribe(Key::User("a".into()), 2, &owner);
        for seq in 1..=4 {
            broker.publish(notification("a", seq));
        }
        assert!(owner.is_slow());
        assert_eq!(sub.recv().await.unwrap().seq, 1);
        assert_eq!(sub.recv().await.unwrap().seq, 2);
        broker.publish(notification("a", 5));
        assert!(sub.rx.try_recv().is_err(), "nothing after the gap");
    }

    #[tokio::test]
    async fn a_tap_sees_every_event_and_is_told_what_it_missed() {
        let broker = Broker::new();
        broker.publish(notification("a", 1)); // before the tap: not seen
        let mut tap = broker.tap();
        broker.publish(notification("a", 2));
        broker.publish(notification("b", 3));
        assert_eq!(tap.recv().await.unwrap().unwrap().seq, 2);
        assert_eq!(tap.recv().await.unwrap().unwrap().seq, 3);
        for seq in 4..(4 + TAP_BACKLOG as u64 + 10) {
            broker.publish(notification("a", seq));
        }
        assert!(matches!(tap.recv().await, Some(Err(10))), "the oldest ten were overwritten");
        assert_eq!(tap.skip_waiting(), TAP_BACKLOG as u64);
        broker.publish(notification("a", 1000));
        assert_eq!(tap.recv().await.unwrap().unwrap().seq, 1000, "it goes on with what comes next");
        assert_eq!(broker.published(), 4 + TAP_BACKLOG as u64 + 10);
        drop(tap);
        assert_eq!(broker.watch.open_taps.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn delivered_through_starts_at_the_head_and_follows_what_is_published() {
        let broker = Broker::new();
        broker.start_after(7);
        assert_eq!(broker.delivered_through(), 7);
        broker.publish(notification("a", 8));
        assert_eq!(broker.delivered_through(), 8);
        broker.start_after(3);
        assert_eq!(broker.delivered_through(), 8, "it never goes back");
    }

    #[tokio::test]
    async fn dropping_the_last_subscriber_removes_the_key() {
        let broker = Broker::new();
        let sub = broker.subscribe(Key::Product(1), 8, &SlowConsumer::new());
        assert_eq!(broker.key_count(), 1);
        drop(sub);
        assert_eq!(broker.key_count(), 0);
    }
}
