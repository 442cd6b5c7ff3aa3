//! Putting events from every node back into the store's commit order.
//!
//! The event log gives every committed change a gap-free position in commit order. A node learns
//! of changes from two places: its own commits (at once) and other nodes' (through Redis, a little
//! later, and at most once: a message Redis drops is gone). The [`Sequencer`] delivers them to the
//! local broker strictly by position: an event whose predecessors have not all arrived waits; an
//! event at or below what was delivered is a duplicate and is dropped. A hole that does not fill
//! by itself soon is a message Redis lost (or a node that died between its commit and its
//! publish): the caller reads the missing positions from the log ([`Sequencer::gap`]) and offers
//! them like any others. So a subscriber on any node gets every change exactly once, in commit
//! order, whatever Redis does.

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::events::Event;

#[derive(Debug)]
pub struct Sequencer {
    /// Every position up to this one has been delivered (or skipped, see [`Sequencer::skip_to`]).
    delivered_through: u64,
    /// Events that arrived ahead of a hole, by position.
    pending: BTreeMap<u64, Arc<Event>>,
}

impl Sequencer {
    /// Starts after `head`: positions up to it are history, which resuming subscribers read from
    /// the log themselves.
    pub fn new(head: u64) -> Self {
        Self { delivered_through: head, pending: BTreeMap::new() }
    }

    pub fn delivered_through(&self) -> u64 {
        self.delivered_through
    }

    /// Takes an event in; returns the events now deliverable, in position order.
    pub fn offer(&mut self, event: Arc<Event>) -> Vec<Arc<Event>> {
        if event.position <= self.delivered_through {
            return Vec::new(); // a duplicate: delivered already (from this node, or the log)
        }
        self.pending.insert(event.position, event);
        self.drain()
    }

    fn drain(&mut self) -> Vec<Arc<Event>> {
        let mut ready = Vec::new();
        while let Some(entry) = self.pending.first_entry() {
            if *entry.key() != self.delivered_through + 1 {
                break;
            }
            self.delivered_through += 1;
            ready.push(entry.remove());
        }
        ready
    }

    /// The positions missing before the first waiting event, as `(after, before)`: read the log
    /// for `after < position < before`.
    pub fn gap(&self) -> Option<(u64, u64)> {
        self.pending.keys().next().map(|&first| (self.delivered_through, first))
    }

    /// How many events wait behind a hole.
    pub fn waiting(&self) -> usize {
        self.pending.len()
    }

    /// Gives up on positions up to `position` (the log no longer has them: retention removed them
    /// while this node could not catch up); returns what becomes deliverable.
    pub fn skip_to(&mut self, position: u64) -> Vec<Arc<Event>> {
        if position > self.delivered_through {
            self.delivered_through = position;
            self.pending = self.pending.split_off(&(position + 1));
        }
        self.drain()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::EventBody;
    use crate::events::event::{InventoryChangePayload, Stamp};

    fn event(position: u64) -> Arc<Event> {
        let product = crate::commerce::model::Product {
            id: 1,
            sku: "s".into(),
            name: "n".into(),
            price: "1.00".parse().unwrap(),
            quantity: 1,
            updated_at: crate::commerce::model::Timestamp::now(),
        };
        let stamp = Stamp { cursor: String::new(), sequence: position as i64 };
        Arc::new(Event {
            topic: "product:1".into(),
            seq: position,
            position,
            body: EventBody::Inventory(InventoryChangePayload {
                product_id: async_graphql::ID("1".into()),
                new_quantity: 1,
                previous_quantity: None,
                timestamp: product.updated_at,
                product,
                cursor: stamp.cursor,
                sequence: stamp.sequence,
            }),
        })
    }

    fn positions(events: &[Arc<Event>]) -> Vec<u64> {
        events.iter().map(|e| e.position).collect()
    }

    #[test]
    fn in_order_events_pass_straight_through() {
        let mut s = Sequencer::new(10);
        assert_eq!(positions(&s.offer(event(11))), [11]);
        assert_eq!(positions(&s.offer(event(12))), [12]);
        assert_eq!(s.gap(), None);
    }

    #[test]
    fn an_early_event_waits_for_the_hole_then_both_go_in_order() {
        let mut s = Sequencer::new(10);
        assert!(s.offer(event(12)).is_empty());
        assert_eq!(s.gap(), Some((10, 12)));
        assert_eq!(positions(&s.offer(event(11))), [11, 12]);
        assert_eq!(s.gap(), None);
    }

    #[test]
    fn duplicates_and_history_are_dropped() {
        let mut s = Sequencer::new(10);
        assert!(s.offer(event(9)).is_empty());
        assert_eq!(positions(&s.offer(event(11))), [11]);
        assert!(s.offer(event(11)).is_empty());
        assert!(s.offer(event(13)).is_empty());
        assert!(s.offer(event(13)).is_empty());
        assert_eq!(s.waiting(), 1);
    }

    #[test]
    fn a_hole_filled_from_the_log_releases_everything_behind_it() {
        let mut s = Sequencer::new(0);
        for p in [3, 5, 4] {
            assert!(s.offer(event(p)).is_empty());
        }
        assert_eq!(s.gap(), Some((0, 3)));
        assert!(s.offer(event(2)).is_empty());
        assert_eq!(positions(&s.offer(event(1))), [1, 2, 3, 4, 5]);
    }

    #[test]
    fn skipping_past_a_pruned_hole_delivers_what_waits_after_it() {
        let mut s = Sequencer::new(0);
        s.offer(event(3));
        s.offer(event(4));
        s.offer(event(7));
        assert_eq!(positions(&s.skip_to(2)), [3, 4]);
        assert_eq!(s.gap(), Some((4, 7)));
    }
}
