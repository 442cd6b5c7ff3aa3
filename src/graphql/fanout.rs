//! Shared subscriptions: subscribers that ask for the same operation with the same variables and
//! the same audience share one execution and one serialisation per event.
//!
//! Without this, 10k clients watching one product would each run async-graphql's resolver and
//! serialiser for every stock change: 10k executions of identical work. Here the first subscriber
//! of a given *(query, operation name, variables, broker key)* starts a [`Group`] task that runs the
//! operation once and hands the serialised payload (an `Arc<str>`) to every member's connection,
//! which only wraps it in a `next` frame with its own id.
//!
//! The broker key is the audience: it is what the subscription resolver chose after checking the
//! viewer (`Key::User(id)` for notifications, `Key::CustomerOrders(id)` for a customer's
//! `orderEvents`, `Key::AllOrders` for staff, `Key::Order(id)` for anyone allowed to see that
//! order). Sharing across viewers is sound because no payload type resolves differently for
//! different viewers once the key is fixed; a field that did would have to join the key.
//!
//! How a subscriber finds its key without executing twice per event: the connection first runs
//! the operation in *probe* mode ([`Probe`] in the request data). The resolver checks the viewer
//! as always, subscribes to the broker, and deposits the key and that live subscription in the
//! probe instead of returning it. Either a group for the key exists (the probe's subscription is
//! dropped and the subscriber joins), or a new group starts and the probe's subscription is
//! handed over ([`Handover`]) so that no event published in between is lost.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use async_graphql::Response;
use futures::StreamExt;
use slab::Slab;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::AppSchema;
use super::error::add_codes;
use crate::lock;
use crate::pubsub::{Key, Subscription};
use crate::registry::SubscriptionGuard;
use crate::slow_consumer::{Feed, Offer, SlowConsumer};

/// What a connection receives from the groups it belongs to. Sixteen bytes, because every
/// connection's queue allocates its first block of these up front.
#[derive(Debug)]
pub struct Delivery {
    /// Which membership it is for (ids can be reused after `complete`; memberships cannot).
    pub membership: u64,
    /// A serialised execution result (`{"data": ...}`) shared by every member, or `None` when
    /// the source ended.
    pub payload: Option<Payload>,
}

/// A thin pointer (an `Arc<str>` would be two words).
pub type Payload = Arc<String>;

/// A broker subscription found by a probe, with the consumer its overflow marks slow.
pub struct Source {
    pub field: &'static str,
    pub key: Key,
    pub subscription: Subscription,
    pub consumer: SlowConsumer,
}

/// Set in the request data of a probe run; the subscription resolver fills it. Clones share it,
/// so the caller keeps one to read after the run.
#[derive(Clone, Default)]
pub struct Probe {
    found: Arc<Mutex<Vec<Source>>>,
}

impl Probe {
    pub fn found(&self, source: Source) {
        lock::lock(&self.found).push(source);
    }

    /// The single source the operation listens to, if it listens to exactly one.
    pub fn take_single(&self) -> Option<Source> {
        let mut found = std::mem::take(&mut *lock::lock(&self.found));
        if found.len() == 1 { found.pop() } else { None }
    }
}

/// Set in the request data of a group's own run: the probe's broker subscription, to be used
/// instead of a new one.
#[derive(Default)]
pub struct Handover(Mutex<Option<Subscription>>);

impl Handover {
    pub fn new(subscription: Subscription) -> Self {
        Self(Mutex::new(Some(subscription)))
    }

    pub fn take(&self) -> Option<Subscription> {
        lock::lock(&self.0).take()
    }
}

/// What makes two subscriptions the same: the full texts (not hashes: a collision would send one
/// query's results to another) and the audience.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct GroupKey {
    pub query: Arc<str>,
    pub operation_name: Option<Arc<str>>,
    /// The variables as JSON text.
    pub variables: Arc<str>,
    pub audience: Key,
}

struct Member {
    membership: u64,
    /// The member's connection queue (shared by all its memberships), which marks the connection
    /// slow when full.
    deliveries: Feed<Delivery>,
}

struct Group {
    members: Mutex<Slab<Member>>,
    /// Cancelled when the last member leaves.
    stop: CancellationToken,
}

/// The registry of groups; one per server, cheap to clone.
#[derive(Clone)]
pub struct Fanout {
    groups: Arc<Mutex<HashMap<GroupKey, Arc<Group>>>>,
    next_membership: Arc<AtomicU64>,
    /// Executions by this server's groups: the proof that they share the work, per app (the
    /// metric of the same name is per process, shared by every server a test process starts).
    executions: Arc<AtomicU64>,
    tracker: TaskTracker,
    shutdown: CancellationToken,
}

/// A connection's place in a group; leaving the group is dropping it.
pub struct Membership {
    pub id: u64,
    key: GroupKey,
    slot: usize,
    group: Arc<Group>,
    fanout: Fanout,
    _counted: SubscriptionGuard,
}

impl Fanout {
    pub fn new(tracker: TaskTracker, shutdown: CancellationToken) -> Self {
        Self {
            groups: Default::default(),
            next_membership: Arc::new(AtomicU64::new(1)),
            executions: Default::default(),
            tracker,
            shutdown,
        }
    }

    /// Joins the group for `key`, starting it when there is none. `source` is the probe's broker
    /// subscription: dropped when joining, handed to the new group's run otherwise (its consumer
    /// becomes the group's). `request` is only executed for a new group. Results go to
    /// `deliveries`, the joining connection's queue.
    pub fn join(
        &self,
        schema: &AppSchema,
        key: GroupKey,
        request: async_graphql::Request,
        source: Source,
        deliveries: Feed<Delivery>,
        counted: SubscriptionGuard,
    ) -> Membership {
        let id = self.next_membership.fetch_add(1, Ordering::Relaxed);
        let member = Member { membership: id, deliveries };
        let mut groups = lock::lock(&self.groups);
        if let Some(group) = groups.get(&key) {
            let slot = lock::lock(&group.members).insert(member);
            drop(source); // the group's own subscription already carries these events
            return Membership { id, key, slot, group: group.clone(), fanout: self.clone(), _counted: counted };
        }
        let mut members = Slab::new();
        let slot = members.insert(member);
        let group = Arc::new(Group { members: Mutex::new(members), stop: CancellationToken::new() });
        groups.insert(key.clone(), group.clone());
        drop(groups);
        metrics::gauge!("switchboard_shared_subscriptions").increment(1.0);
        let request = request.data(Handover::new(source.subscription));
        let run = run_group(self.clone(), key.clone(), group.clone(), schema.clone(), request, source.consumer);
        self.tracker.spawn(run);
        Membership { id, key, slot, group, fanout: self.clone(), _counted: counted }
    }

    /// Number of groups (distinct shared subscriptions) running.
    pub fn group_count(&self) -> usize {
        lock::lock(&self.groups).len()
    }

    /// Executions of shared subscriptions by this server so far (one per event per group).
    pub fn executions(&self) -> u64 {
        self.executions.load(Ordering::Relaxed)
    }

    fn forget(&self, key: &GroupKey, group: &Arc<Group>) {
        let mut groups = lock::lock(&self.groups);
        if groups.get(key).is_some_and(|g| Arc::ptr_eq(g, group)) {
            groups.remove(key);
            metrics::gauge!("switchboard_shared_subscriptions").decrement(1.0);
        }
    }
}

impl Drop for Membership {
    fn drop(&mut self) {
        // Lock order: registry, then group (as in `join`), so that a join cannot slip into a
        // group that is being emptied and stopped.
        let mut groups = lock::lock(&self.fanout.groups);
        let mut members = lock::lock(&self.group.members);
        members.try_remove(self.slot);
        if members.is_empty() {
            self.group.stop.cancel();
            if groups.get(&self.key).is_some_and(|g| Arc::ptr_eq(g, &self.group)) {
                groups.remove(&self.key);
                metrics::gauge!("switchboard_shared_subscriptions").decrement(1.0);
            }
        }
    }
}

/// Runs a group's operation once and fans each result out to the members.
async fn run_group(
    fanout: Fanout,
    key: GroupKey,
    group: Arc<Group>,
    schema: AppSchema,
    request: async_graphql::Request,
    consumer: SlowConsumer,
) {
    let mut results = schema.execute_stream(request);
    let end = loop {
        tokio::select! {
            _ = group.stop.cancelled() => break None,
            _ = fanout.shutdown.cancelled() => break None,
            // The group itself fell behind the broker: every member is behind.
            () = consumer.slow() => break Some(true),
            item = results.next() => match item {
                Some(mut response) => {
                    add_codes(&mut response);
                    fanout.executions.fetch_add(1, Ordering::Relaxed);
                    deliver(&group, &response);
                }
                None => break Some(false),
            },
        }
    };
    fanout.forget(&key, &group);
    if let Some(lagged) = end {
        let members = lock::lock(&group.members);
        for (_, member) in members.iter() {
            if lagged {
                member.deliveries.owner().mark_slow();
            } else {
                // A member whose queue has no room for this is behind anyway: the offer marks it.
                member.deliveries.offer(Delivery { membership: member.membership, payload: None });
            }
        }
    }
}

fn deliver(group: &Group, response: &Response) {
    let payload: Payload = Arc::new(serde_json::to_string(response).expect("responses serialise"));
    metrics::counter!("switchboard_subscription_executions_total").increment(1);
    let members = lock::lock(&group.members);
    let mut delivered = 0u64;
    for (_, member) in members.iter() {
        let delivery = Delivery { membership: member.membership, payload: Some(payload.clone()) };
        if member.deliveries.offer(delivery) == Offer::Queued {
            delivered += 1;
        }
    }
    metrics::counter!("switchboard_events_delivered_total", "channel" => "graphql").increment(delivered);
}
