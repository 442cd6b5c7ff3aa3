//! The one rule for every queue between a publisher and a socket: a bounded queue that, when
//! full, stops queueing, tells its owner once, and counts it once.
//!
//! Every consumer of events (a graphql-ws connection, a `/ws` connection, a shared subscription
//! group) owns a [`SlowConsumer`] signal and hands [`Feed`]s tied to it to whatever produces for
//! it: the broker, the shared groups, the rooms. A feed never waits. When one of an owner's
//! queues is full, the item is refused, the owner is marked slow, and every feed of that owner
//! refuses everything from then on — so what the consumer already holds is gap-free, and nothing
//! after a gap ever reaches it. The owner, woken by the signal, ends itself: a socket closes with
//! 1013 (retryable), a group marks its members slow.
//!
//! Skipping past the lost item instead would leave a subscriber with a silent hole (a stock level
//! that never changed, a `user_left_room` that never came); blocking the publisher would let one
//! slow socket stall everyone. Closing is the only honest choice.
//!
//! `switchboard_deliveries_lagged_total` counts slow consumers: one per owner, on the delivery
//! that first found a queue full, however many queues and producers it has;
//! `switchboard_deliveries_dropped_total` counts the items refused (the one that found the queue
//! full and every later one until the owner ended): what the slow consumers will resume past.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::task::{Context, Poll};

use futures::task::AtomicWaker;
use tokio::sync::mpsc;

/// The metric every slow consumer is counted under, once.
pub const METRIC: &str = "switchboard_deliveries_lagged_total";
/// The metric every refused item is counted under.
pub const DROPPED_METRIC: &str = "switchboard_deliveries_dropped_total";

/// The same two counts for the operator console, which reads numbers rather than rendering the
/// Prometheus text. Per process, like the metrics: a consumer has no pointer to the server that
/// owns it (one more per connection for a number the console reads twice a second), and a
/// deployment runs one server per process. Tests that start several servers in one process see
/// their sum, so none asserts an exact value of these.
static LAGGED: AtomicU64 = AtomicU64::new(0);
static DROPPED: AtomicU64 = AtomicU64::new(0);

/// Consumers found too slow in this process so far.
pub fn lagged_total() -> u64 {
    LAGGED.load(Ordering::Relaxed)
}

/// Items refused to slow consumers in this process so far.
pub fn dropped_total() -> u64 {
    DROPPED.load(Ordering::Relaxed)
}

fn count_dropped() {
    DROPPED.fetch_add(1, Ordering::Relaxed);
    metrics::counter!(DROPPED_METRIC).increment(1);
}

/// One consumer's "too slow" signal; clones share it.
///
/// Smaller than a `CancellationToken` (one flag and one waker, no tree of children), because
/// every connection holds one; it has one waiter, the owner, which is all a consumer needs.
#[derive(Debug, Clone, Default)]
pub struct SlowConsumer(Arc<Signal>);

#[derive(Debug, Default)]
struct Signal {
    slow: AtomicBool,
    owner: AtomicWaker,
}

impl SlowConsumer {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn is_slow(&self) -> bool {
        self.0.slow.load(Ordering::Acquire)
    }

    /// Marks the consumer slow and wakes its owner; counts it when it was not slow yet. True for
    /// the call that made it slow.
    pub fn mark_slow(&self) -> bool {
        if self.0.slow.swap(true, Ordering::AcqRel) {
            return false;
        }
        LAGGED.fetch_add(1, Ordering::Relaxed);
        metrics::counter!(METRIC).increment(1);
        self.0.owner.wake();
        true
    }

    /// Ready once the consumer is slow. Only the owner polls this: the last task to poll it is
    /// the one woken.
    pub fn poll_slow(&self, cx: &mut Context<'_>) -> Poll<()> {
        if self.is_slow() {
            return Poll::Ready(());
        }
        self.0.owner.register(cx.waker());
        // Checked again: a `mark_slow` between the first check and the registration woke nobody.
        if self.is_slow() { Poll::Ready(()) } else { Poll::Pending }
    }

    /// Resolves once the consumer is slow (see [`Self::poll_slow`]).
    pub async fn slow(&self) {
        std::future::poll_fn(|cx| self.poll_slow(cx)).await;
    }
}

/// What became of an item offered to a [`Feed`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Offer {
    Queued,
    /// The consumer is (now) slow: the item was not queued, and nothing will be.
    Refused,
    /// The consumer is gone; nobody will read the queue.
    Closed,
}

/// The producer end of a bounded queue whose overflow marks its consumer slow. Clones share the
/// queue (several shared groups deliver into one connection's queue).
#[derive(Debug)]
pub struct Feed<T> {
    tx: mpsc::Sender<T>,
    owner: SlowConsumer,
}

impl<T> Clone for Feed<T> {
    fn clone(&self) -> Self {
        Self { tx: self.tx.clone(), owner: self.owner.clone() }
    }
}

/// A queue of at most `capacity` items (at least one) whose overflow marks `owner` slow.
pub fn queue<T>(capacity: usize, owner: &SlowConsumer) -> (Feed<T>, mpsc::Receiver<T>) {
    let (tx, rx) = mpsc::channel(capacity.max(1));
    (Feed { tx, owner: owner.clone() }, rx)
}

impl<T> Feed<T> {
    /// Queues `item` without waiting, unless the consumer is slow or this finds the queue full.
    pub fn offer(&self, item: T) -> Offer {
        if self.owner.is_slow() {
            count_dropped();
            return Offer::Refused; // a later item would hide the gap
        }
        match self.tx.try_send(item) {
            Ok(()) => Offer::Queued,
            Err(mpsc::error::TrySendError::Full(_)) => {
                self.owner.mark_slow();
                count_dropped();
                Offer::Refused
            }
            Err(mpsc::error::TrySendError::Closed(_)) => Offer::Closed,
        }
    }

    /// The consumer this feed marks slow.
    pub fn owner(&self) -> &SlowConsumer {
        &self.owner
    }

    /// How many items the queue holds at most.
    pub fn capacity(&self) -> usize {
        self.tx.max_capacity()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_queue_refuses_and_marks_the_owner_slow_once() {
        let owner = SlowConsumer::new();
        let (feed, mut rx) = queue(2, &owner);
        let (other_feed, mut other_rx) = queue(8, &owner);
        assert_eq!(feed.offer(1), Offer::Queued);
        assert_eq!(feed.offer(2), Offer::Queued);
        assert!(!owner.is_slow());
        assert_eq!(feed.offer(3), Offer::Refused);
        assert!(owner.is_slow());
        assert!(!owner.mark_slow(), "already slow: not counted again");
        // Nothing after the gap, on any of the owner's queues, even once there is room again.
        assert_eq!(rx.try_recv().ok(), Some(1));
        assert_eq!(feed.offer(4), Offer::Refused);
        assert_eq!(other_feed.offer(5), Offer::Refused);
        assert_eq!(rx.try_recv().ok(), Some(2));
        assert!(rx.try_recv().is_err() && other_rx.try_recv().is_err());
    }

    #[test]
    fn a_gone_consumer_is_not_slow() {
        let owner = SlowConsumer::new();
        let (feed, rx) = queue(1, &owner);
        drop(rx);
        assert_eq!(feed.offer(1), Offer::Closed);
        assert!(!owner.is_slow());
    }

    #[tokio::test]
    async fn the_owner_is_woken_when_marked_slow() {
        let owner = SlowConsumer::new();
        let waiting = tokio::spawn({
            let owner = owner.clone();
            async move { owner.slow().await }
        });
        tokio::task::yield_now().await;
        assert!(!waiting.is_finished());
        owner.mark_slow();
        tokio::time::timeout(std::time::Duration::from_secs(5), waiting).await.expect("woken").unwrap();
    }
}
