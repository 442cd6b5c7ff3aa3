//! `eventTail`: every event the broker publishes, as the operator console's live tail shows it.
//!
//! The tail reads a broker [`Tap`], not a subscription: it is a view for people, not a stream an
//! app keeps state from, so it is thinned rather than closed when it cannot keep up. At most
//! `perSecond` events are sent; the others are counted, and the next event sent says how many
//! were skipped before it. A reader that pauses (over budget, or a slow socket) resumes with
//! what happens next, not with a backlog. So a console costs the publisher one `broadcast` send
//! per event and itself at most `perSecond` serialisations a second, whatever the event rate.
//!
//! The tail shows what its viewer may see and no more: staff may watch every order and every
//! product, but only their own notifications, so a notification to someone else shows its topic
//! as `user:*` unless the viewer is an admin (the kind, sequence and time still show that
//! notifications flow).

use std::time::Duration;

use async_graphql::{Enum, SimpleObject};
use futures::Stream;
use tokio::time::Instant;

use crate::commerce::model::{OrderEventKind, Timestamp};
use crate::events::{Event, EventBody, Tap};

/// The most events a tail sends per second; a person reads far fewer.
pub const MAX_PER_SECOND: u32 = 100;

/// What kind of change an event records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Enum)]
pub enum TailEventKind {
    OrderCreated,
    OrderUpdated,
    OrderDeleted,
    InventoryChanged,
    NotificationCreated,
}

/// One published event, as the live tail shows it.
#[derive(Debug, Clone, SimpleObject)]
pub struct TailEvent {
    /// The entity's stream: `order:42`, `product:7`, `user:u1` (`user:*` for another user's
    /// notification, unless the viewer is an admin).
    pub topic: String,
    /// Its number on that stream.
    pub sequence: i64,
    pub kind: TailEventKind,
    /// Where it is in the event log (what a subscription's `after` takes).
    pub cursor: String,
    /// When the change was stored.
    pub at: Timestamp,
    /// Events published since the previous one sent here that the tail did not send (it keeps
    /// to `perSecond`, and skips what came while its reader was paused).
    pub skipped: i32,
}

/// Whose notification topics a tail shows in full.
#[derive(Debug, Clone)]
pub enum Reveal {
    /// Every topic (admins).
    All,
    /// Only this user's own (staff).
    Own(String),
}

/// The topic of another user's notification, as a non-admin sees it.
pub const HIDDEN_USER_TOPIC: &str = "user:*";

impl Reveal {
    fn topic(&self, event: &Event) -> String {
        match (&event.body, self) {
            (EventBody::Notification(n), Reveal::Own(me)) if n.user_id.as_str() != me => HIDDEN_USER_TOPIC.to_owned(),
            _ => event.topic.clone(),
        }
    }
}

impl TailEvent {
    fn new(event: &Event, skipped: u64, reveal: &Reveal) -> Self {
        let (kind, cursor, at) = match &event.body {
            EventBody::Order(e) => {
                let kind = match e.kind {
                    OrderEventKind::Created => TailEventKind::OrderCreated,
                    OrderEventKind::Updated => TailEventKind::OrderUpdated,
                    OrderEventKind::Deleted => TailEventKind::OrderDeleted,
                };
                (kind, &e.cursor, e.at)
            }
            EventBody::Inventory(c) => (TailEventKind::InventoryChanged, &c.cursor, c.timestamp),
            EventBody::Notification(n) => (TailEventKind::NotificationCreated, &n.cursor, n.created_at),
        };
        Self {
            topic: reveal.topic(event),
            sequence: i64::try_from(event.seq).unwrap_or(i64::MAX),
            kind,
            cursor: cursor.clone(),
            at,
            skipped: i32::try_from(skipped).unwrap_or(i32::MAX),
        }
    }
}

/// A token bucket: `per_second` events a second, in bursts of as many.
struct Budget {
    per_second: f64,
    tokens: f64,
    refilled: Instant,
}

impl Budget {
    fn new(per_second: u32) -> Self {
        let per_second = f64::from(per_second.max(1));
        Self { per_second, tokens: per_second, refilled: Instant::now() }
    }

    fn refill(&mut self) {
        let now = Instant::now();
        let earned = now.saturating_duration_since(self.refilled).as_secs_f64() * self.per_second;
        self.tokens = (self.tokens + earned).min(self.per_second);
        self.refilled = now;
    }

    /// How long until one event may be sent (zero when it may now).
    fn wait(&mut self) -> Duration {
        self.refill();
        if self.tokens >= 1.0 { Duration::ZERO } else { Duration::from_secs_f64((1.0 - self.tokens) / self.per_second) }
    }
}

struct State {
    tap: Tap,
    reveal: Reveal,
    budget: Budget,
    skipped: u64,
}

/// The tail of `tap`, at most `per_second` events a second, as `reveal` allows.
pub fn tail(tap: Tap, per_second: u32, reveal: Reveal) -> impl Stream<Item = TailEvent> + Send + 'static {
    let state = State { tap, reveal, budget: Budget::new(per_second), skipped: 0 };
    futures::stream::unfold(state, |mut state| async move {
        loop {
            let wait = state.budget.wait();
            if !wait.is_zero() {
                tokio::time::sleep(wait).await;
                state.skipped += state.tap.skip_waiting();
                continue;
            }
            match state.tap.recv().await? {
                Err(missed) => state.skipped += missed,
                Ok(event) => {
                    state.budget.tokens -= 1.0;
                    let item = TailEvent::new(&event, std::mem::take(&mut state.skipped), &state.reveal);
                    return Some((item, state));
                }
            }
        }
    })
}
