//! Shared subscriptions: subscribers that ask for the same operation with the same variables and
//! the same audience share one execution and one serialisation per event, and those that resume
//! from the same place share one replay.
//!
//! Without this, 10k clients watching one product would each run async-graphql's resolver and
//! serialiser for every stock change: 10k executions of identical work. Here the first subscriber
//! of a given *(query, operation name, variables, broker key)* starts a [`Group`] task that runs the
//! operation once and hands the serialised payload (an `Arc`) to every member's connection, which
//! only frames it with its own id.
//!
//! The broker key is the audience: it is what the subscription resolver chose after checking the
//! viewer (`Key::User(id)` for notifications, `Key::CustomerOrders(id)` for a customer's
//! `orderEvents`, `Key::AllOrders` for staff, `Key::Order(id)` for anyone allowed to see that
//! order). Sharing across viewers is sound because no payload type resolves differently for
//! different viewers once the key is fixed; a field that did would have to join the key.
//!
//! How a subscriber's key is found without executing twice per event: each subscriber's own
//! execution runs its resolver (the viewer's checks) up to the point where it asks its
//! [`EventSource`] for the events of a key. The operation runner (`super::operations`) reads the
//! key there and joins the group for it here. A new group adopts that execution (and feeds it a
//! broker subscription made at that moment); otherwise the execution is dropped, or, for a
//! resume, feeds a shared replay (see [`replay`]).

mod replay;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use async_graphql::Response;
use futures::StreamExt;
use futures::stream::BoxStream;
use slab::Slab;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use replay::{MemberReplay, ReplaySlot};

use super::documents::RootField;
use super::error::{add_codes, to_json};
use super::source::EventSource;
use crate::events::log::EventLog;
use crate::events::slow_consumer::{Feed, SlowConsumer};
use crate::events::{Broker, Key};
use crate::lock;
use crate::store::Reader;

/// What a connection receives from the groups it belongs to. Sixteen bytes, because every
/// connection's queue allocates its first block of these up front.
#[derive(Debug)]
pub struct Delivery {
    /// Which membership it is for (ids can be reused after `complete`; memberships cannot).
    pub membership: u64,
    /// A serialised execution result shared by every member, or `None` when the source ended.
    pub payload: Option<Payload>,
}

/// A thin pointer to one execution's result, shared by every member.
pub type Payload = Arc<Serialized>;

/// One execution result, serialised once for every member, with the log position of the event
/// it came from: where a resuming member's replay meets the group, and what the SSE transport
/// sends as the event's `id:` (its cursor, even when the operation did not select `cursor`).
#[derive(Debug)]
pub struct Serialized {
    json: String,
    /// 0 when the result came from no event (the source ended with an error, say).
    pub position: u64,
}

impl Serialized {
    fn new(response: &mut Response, position: u64) -> Payload {
        add_codes(response);
        Arc::new(Self { json: to_json(response), position })
    }

    /// The result as JSON (`{"data": ...}`).
    pub fn as_str(&self) -> &str {
        &self.json
    }
}

/// A subscription execution: its responses, and the source its resolver asked for events.
pub struct Execution {
    pub results: BoxStream<'static, Response>,
    pub source: EventSource,
}

/// What makes two subscriptions the same: the full texts (not hashes: a collision would send one
/// query's results to another) and the audience.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct GroupKey {
    pub query: Arc<str>,
    pub operation_name: Option<Arc<str>>,
    /// The variables as JSON text, without the one that feeds `after`: two subscribers that
    /// differ only in where they resume share a group's live results.
    pub variables: Arc<str>,
    pub audience: Key,
}

impl GroupKey {
    pub fn new(
        query: Arc<str>,
        operation_name: Option<Arc<str>>,
        variables: &serde_json::Value,
        after_variable: Option<&str>,
        audience: Key,
    ) -> Self {
        let variables = match (variables, after_variable) {
            (serde_json::Value::Object(vars), Some(after)) if vars.contains_key(after) => {
                let mut vars = vars.clone();
                vars.remove(after);
                serde_json::Value::Object(vars).to_string()
            }
            (vars, _) => vars.to_string(),
        };
        Self { query, operation_name, variables: variables.into(), audience }
    }
}

struct Member {
    membership: u64,
    /// The member's connection queue (shared by all its memberships), which marks the connection
    /// slow when full.
    deliveries: Feed<Delivery>,
}

struct Group {
    state: Mutex<GroupState>,
    /// How many of its results a replay keeps for members that join it late.
    room: usize,
    /// Cancelled when the last member leaves.
    stop: CancellationToken,
}

struct GroupState {
    members: Slab<Member>,
    /// Results delivered so far: the number of the next one (resuming members use it to tell
    /// what reached them live from what came before they joined).
    delivered: u64,
    /// The replays of members resuming, shared by those from the same place.
    replays: replay::Replays,
}

/// The groups of one server; cheap to clone.
#[derive(Clone)]
pub struct Fanout(Arc<Inner>);

struct Inner {
    groups: Mutex<HashMap<GroupKey, Arc<Group>>>,
    next_membership: AtomicU64,
    /// Live executions by this server's groups: the proof that they share the work, per app
    /// (the metric of the same name is per process, shared by every server a test process
    /// starts).
    executions: AtomicU64,
    /// Replays read from the log for resuming members (one per place resumed from, however many
    /// resume from there together).
    replays_read: AtomicU64,
    broker: Broker,
    log: EventLog,
    /// A group's room for events it has not executed yet.
    queue: usize,
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
}

/// A member resuming: where from, for whom the log is read, and how to run the operation once
/// more should the replay need an execution of its own.
pub struct Resuming<F> {
    /// The log position of the cursor resumed from.
    pub after: u64,
    pub reader: Reader,
    /// The subscription's root field (a refused replay's errors name it).
    pub field: RootField,
    pub execution: F,
}

/// What joining a group gave.
pub struct Joined {
    pub membership: Membership,
    /// For a resuming member: where its replay will be, once read and executed.
    pub replay: Option<Arc<ReplaySlot>>,
}

impl Fanout {
    pub fn new(broker: Broker, log: EventLog, queue: usize, tracker: TaskTracker, shutdown: CancellationToken) -> Self {
        Self(Arc::new(Inner {
            groups: Default::default(),
            next_membership: AtomicU64::new(1),
            executions: Default::default(),
            replays_read: Default::default(),
            broker,
            log,
            queue: queue.max(1),
            tracker,
            shutdown,
        }))
    }

    /// Joins the group for `key` with the member's queue `deliveries`, starting the group when
    /// there is none. `execution` is the member's own, whose resolver asked for the events of
    /// `key.audience`: a new group adopts it; otherwise it serves the member's replay, if that
    /// needs one, or is dropped. A resuming member also joins the replay of those resuming from
    /// the same place (`resuming.execution` makes an execution for a replay that needs one when
    /// the member's own went to the group).
    pub fn join<F: FnOnce() -> Execution>(
        &self,
        key: GroupKey,
        execution: Execution,
        deliveries: Feed<Delivery>,
        resuming: Option<Resuming<F>>,
    ) -> Joined {
        let inner = &self.0;
        let id = inner.next_membership.fetch_add(1, Ordering::Relaxed);
        let member = Member { membership: id, deliveries };
        let mut groups = lock::lock(&inner.groups);
        let (group, slot, spare) = match groups.get(&key) {
            Some(group) => {
                let mut state = lock::lock(&group.state);
                let slot = state.members.insert(member);
                drop(state);
                (group.clone(), slot, Some(execution))
            }
            None => {
                let mut members = Slab::new();
                let slot = members.insert(member);
                let state = GroupState { members, delivered: 0, replays: Default::default() };
                let group =
                    Arc::new(Group { state: Mutex::new(state), room: inner.queue, stop: CancellationToken::new() });
                groups.insert(key.clone(), group.clone());
                metrics::gauge!("switchboard_shared_subscriptions").increment(1.0);
                // The group's broker subscription is made now, before any replay of a member
                // is read: that order makes the seam exact (see `event_log`).
                let consumer = SlowConsumer::new();
                let live = inner.broker.subscribe(key.audience.clone(), inner.queue, &consumer);
                execution.source.feed(live.boxed());
                inner.tracker.spawn(run_group(self.clone(), key.clone(), group.clone(), execution, consumer));
                (group, slot, None)
            }
        };
        drop(groups);
        let replay = resuming.map(|resuming| {
            let mut state = lock::lock(&group.state);
            let joined_at = state.delivered;
            let (slot, started) = state.replays.join(id, resuming.after, joined_at);
            drop(state);
            if let Some(batch) = started {
                let execution = spare.unwrap_or_else(resuming.execution);
                let Resuming { after, reader, field, .. } = resuming;
                let read = replay::Read { id: batch, audience: key.audience.clone(), after, reader, field };
                inner.tracker.spawn(replay::run(self.clone(), group.clone(), read, execution));
            }
            slot
        });
        Joined { membership: Membership { id, key, slot, group, fanout: self.clone() }, replay }
    }

    /// Number of groups (distinct shared subscriptions) running.
    pub fn group_count(&self) -> usize {
        lock::lock(&self.0.groups).len()
    }

    /// Live executions of shared subscriptions by this server so far (one per event per group).
    pub fn executions(&self) -> u64 {
        self.0.executions.load(Ordering::Relaxed)
    }

    /// Replays read from the log so far (one per place resumed from, however many resumed from
    /// it together).
    pub fn replays_read(&self) -> u64 {
        self.0.replays_read.load(Ordering::Relaxed)
    }

    fn forget(&self, key: &GroupKey, group: &Arc<Group>) {
        let mut groups = lock::lock(&self.0.groups);
        if groups.get(key).is_some_and(|g| Arc::ptr_eq(g, group)) {
            groups.remove(key);
            metrics::gauge!("switchboard_shared_subscriptions").decrement(1.0);
        }
    }
}

impl Drop for Membership {
    fn drop(&mut self) {
        // Lock order: the groups, then one group (as in `join`), so that a join cannot slip into
        // a group that is being emptied and stopped.
        let mut groups = lock::lock(&self.fanout.0.groups);
        let mut state = lock::lock(&self.group.state);
        state.members.try_remove(self.slot);
        state.replays.leave(self.id);
        if state.members.is_empty() {
            self.group.stop.cancel();
            if groups.get(&self.key).is_some_and(|g| Arc::ptr_eq(g, &self.group)) {
                groups.remove(&self.key);
                metrics::gauge!("switchboard_shared_subscriptions").decrement(1.0);
            }
        }
    }
}

/// Runs a group's execution and fans each result out to the members.
async fn run_group(fanout: Fanout, key: GroupKey, group: Arc<Group>, execution: Execution, consumer: SlowConsumer) {
    let Execution { mut results, source } = execution;
    let end = loop {
        tokio::select! {
            _ = group.stop.cancelled() => break None,
            _ = fanout.0.shutdown.cancelled() => break None,
            // The group itself fell behind the broker: every member is behind.
            () = consumer.slow() => break Some(true),
            item = results.next() => match item {
                Some(mut response) => {
                    fanout.0.executions.fetch_add(1, Ordering::Relaxed);
                    metrics::counter!("switchboard_subscription_executions_total").increment(1);
                    deliver(&group, Serialized::new(&mut response, source.position()));
                }
                None => break Some(false),
            },
        }
    };
    fanout.forget(&key, &group);
    if let Some(lagged) = end {
        let state = lock::lock(&group.state);
        for (_, member) in state.members.iter() {
            if lagged {
                member.deliveries.owner().mark_slow();
            } else {
                // A member whose queue has no room for this is behind anyway: the offer marks it.
                member.deliveries.offer(Delivery { membership: member.membership, payload: None });
            }
        }
    }
}

/// Hands one result to every member (counted as delivered when each connection hands it to its
/// transport, not here), and to the replays that members joining later will take it from.
fn deliver(group: &Group, payload: Payload) {
    let mut state = lock::lock(&group.state);
    let number = state.delivered;
    state.delivered += 1;
    for (_, member) in state.members.iter() {
        member.deliveries.offer(Delivery { membership: member.membership, payload: Some(payload.clone()) });
    }
    state.replays.record(number, &payload, group.room);
}
