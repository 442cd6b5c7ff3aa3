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

use async_graphql::{Response, ServerError};
use futures::StreamExt;
use futures::stream::BoxStream;
use slab::Slab;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::AppSchema;
use super::error::{add_codes, failed_before_execution};
use super::subscription::EventPosition;
use crate::lock;
use crate::pubsub::{Key, Subscription};
use crate::registry::{Registry, SubscriptionGuard};
use crate::slow_consumer::{Feed, Offer, SlowConsumer};

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
    /// The result as JSON (`{"data": ...}`).
    pub fn as_str(&self) -> &str {
        &self.json
    }
}

/// A broker subscription found by a probe, with the consumer its overflow marks slow.
pub struct Source {
    pub field: &'static str,
    pub key: Key,
    pub subscription: Subscription,
    pub consumer: SlowConsumer,
    /// The cursor the subscriber resumes from, if it does: it replays on its own (see
    /// [`ReplayOnly`]) and takes the group's results from the seam on.
    pub after: Option<String>,
}

/// In the request data of a resuming member's own run: the resolver replays from the log only
/// (no live part) and records where the replay stopped, the seam, and whether the whole replay
/// was read (a subscription can end within it: `orderUpdated` at its order's deletion).
#[derive(Clone, Default, Debug)]
pub struct ReplayOnly(Arc<Seam>);

#[derive(Default, Debug)]
struct Seam {
    through: AtomicU64,
    exhausted: std::sync::atomic::AtomicBool,
}

impl ReplayOnly {
    pub fn set_through(&self, through: u64) {
        self.0.through.store(through, Ordering::Relaxed);
    }

    /// The log head the replay read up to: group results at or below it are in the replay.
    pub fn through(&self) -> u64 {
        self.0.through.load(Ordering::Relaxed)
    }

    /// The replayed events, marking the seam exhausted when read to the end.
    pub fn track<T: Send + 'static>(
        &self,
        events: impl IntoIterator<Item = T, IntoIter: Send + 'static>,
    ) -> futures::stream::BoxStream<'static, T> {
        let seam = self.0.clone();
        futures::stream::iter(events.into_iter().map(Some).chain(std::iter::once(None)))
            .filter_map(move |event| {
                if event.is_none() {
                    seam.exhausted.store(true, Ordering::Relaxed);
                }
                futures::future::ready(event)
            })
            .boxed()
    }

    /// Whether the subscription read its whole replay: if not, it ended inside it and the
    /// member is complete, with nothing to take from the group.
    pub fn exhausted(&self) -> bool {
        self.0.exhausted.load(Ordering::Relaxed)
    }
}

/// A resuming member while its replay runs: the group's results wait here, and when the replay
/// has ended those past the seam go out, in order. Bounded like any queue: past `limit` the
/// consumer is slow. It stays with the member after the replay, because the group may still
/// deliver events at or below the seam then: an event is published after its commit, so the
/// replay can read it from the log before its publication has reached the group.
#[derive(Debug)]
pub struct Resume {
    pub seam: ReplayOnly,
    held: std::collections::VecDeque<Delivery>,
    limit: usize,
    /// Whether the replay produced a result yet (only a first result can be a refusal).
    pub replayed: bool,
    /// The replay has ended: results are no longer held, only screened.
    done: bool,
}

impl Resume {
    pub fn new(seam: ReplayOnly, limit: usize) -> Self {
        Self { seam, held: Default::default(), limit: limit.max(1), replayed: false, done: false }
    }

    /// Whether the member's own replay is still running (its results are then held).
    pub fn replaying(&self) -> bool {
        !self.done
    }

    /// Holds a group result until the replay is done; false when there is no more room.
    pub fn hold(&mut self, delivery: Delivery) -> bool {
        if self.held.len() >= self.limit {
            return false;
        }
        self.held.push_back(delivery);
        true
    }

    /// The replay has ended: what the group sent meanwhile, in order; like every later result, it
    /// goes out only if [`Resume::admits`] it.
    pub fn finish(&mut self) -> std::collections::VecDeque<Delivery> {
        self.done = true;
        std::mem::take(&mut self.held)
    }

    /// After the replay: whether a group result is new to this member (past the seam, or the
    /// group's end).
    pub fn admits(&self, delivery: &Delivery) -> bool {
        delivery.payload.as_ref().is_none_or(|p| p.position > self.seam.through())
    }
}

/// The name of the variable that feeds the root field's `after` argument, if one does: two
/// subscribers that differ only in where they resume share a group's live results, so that
/// variable is left out of the group key.
pub fn after_variable(query: &str, operation_name: Option<&str>) -> Option<String> {
    use async_graphql::parser::types::{DocumentOperations, Selection};
    let document = async_graphql::parser::parse_query(query).ok()?;
    let operation = match (&document.operations, operation_name) {
        (DocumentOperations::Single(op), _) => op,
        (DocumentOperations::Multiple(ops), Some(name)) => ops.get(name)?,
        (DocumentOperations::Multiple(ops), None) if ops.len() == 1 => ops.values().next()?,
        _ => return None,
    };
    let [field] = operation.node.selection_set.node.items.as_slice() else { return None };
    let Selection::Field(field) = &field.node else { return None };
    let (_, value) = field.node.arguments.iter().find(|(name, _)| name.node == "after")?;
    match &value.node {
        async_graphql_value::Value::Variable(name) => Some(name.to_string()),
        _ => None,
    }
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
    /// The variables as JSON text, without the one that feeds `after` (see [`after_variable`]).
    pub variables: Arc<str>,
    pub audience: Key,
}

impl GroupKey {
    pub fn new(
        query: &str,
        operation_name: Option<&str>,
        variables: Option<&serde_json::Value>,
        audience: Key,
    ) -> Self {
        let variables = match (variables, after_variable(query, operation_name)) {
            (Some(serde_json::Value::Object(vars)), Some(after)) => {
                let mut vars = vars.clone();
                vars.remove(&after);
                serde_json::Value::Object(vars).to_string()
            }
            (Some(vars), _) => vars.to_string(),
            (None, _) => "null".to_owned(),
        };
        Self {
            query: query.into(),
            operation_name: operation_name.map(Into::into),
            variables: variables.into(),
            audience,
        }
    }
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
        let registry = counted.registry().clone();
        let run =
            run_group(self.clone(), key.clone(), group.clone(), schema.clone(), request, source.consumer, registry);
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

/// What became of a subscription offered to a shared group.
pub enum Shared {
    /// A member of the group; when resuming, its replay is to be run by the transport first
    /// (the results, then `None`), holding the group's results in the [`Resume`] meanwhile.
    Joined(Membership, Option<Replaying>),
    /// Refused at subscribe time (the viewer's checks, validation): these errors are the answer.
    Refused(Vec<ServerError>),
    /// Not one source (or not a subscription after all, or a resume the transport cannot take):
    /// the transport runs it itself.
    NotShareable,
}

/// A resuming member's own replay, and where the group's results wait until it is over.
pub struct Replaying {
    pub replay: BoxStream<'static, Option<Response>>,
    pub resume: Box<Resume>,
}

/// What identifies an operation for sharing, apart from its audience.
pub struct Operation<'a> {
    pub query: &'a str,
    pub operation_name: Option<&'a str>,
    pub variables: Option<&'a serde_json::Value>,
}

impl Fanout {
    /// Probes a subscription (the viewer's checks run, the broker source is found) and joins the
    /// shared group for its audience; every transport offers its subscriptions through this.
    /// `request` builds the operation's request as the transport would run it (viewer included);
    /// it is called for the probe, for a new group's run and for a resuming member's replay. A
    /// transport that cannot run a replay beside a membership passes `resumes: false`, and
    /// resuming subscriptions are then not shared.
    pub async fn share(
        &self,
        schema: &AppSchema,
        registry: &Registry,
        operation: Operation<'_>,
        request: impl Fn() -> async_graphql::Request,
        deliveries: Feed<Delivery>,
        resumes: bool,
    ) -> Shared {
        let probe = Probe::default();
        let first = schema.execute_stream(request().data(probe.clone())).next().await;
        if let Some(mut response) = first {
            add_codes(&mut response);
            return if failed_before_execution(&response, true) {
                Shared::Refused(response.errors)
            } else {
                Shared::NotShareable
            };
        }
        let Some(source) = probe.take_single() else { return Shared::NotShareable };
        if source.after.is_some() && !resumes {
            return Shared::NotShareable;
        }
        let key = GroupKey::new(operation.query, operation.operation_name, operation.variables, source.key.clone());
        let after = source.after.clone();
        let counted = registry.subscription(source.field);
        let queue = deliveries.capacity();
        let membership = self.join(schema, key, request(), source, deliveries, counted);
        let replaying = after.map(|_| {
            let seam = ReplayOnly::default();
            let replay = schema
                .execute_stream(request().data(seam.clone()))
                .map(Some)
                .chain(futures::stream::once(futures::future::ready(None)))
                .boxed();
            Replaying { replay, resume: Box::new(Resume::new(seam, queue)) }
        });
        Shared::Joined(membership, replaying)
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
    registry: Registry,
) {
    let positions = EventPosition::default();
    let mut results = schema.execute_stream(request.data(positions.clone()));
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
                    deliver(&group, &response, positions.get(), &registry);
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

fn deliver(group: &Group, response: &Response, position: u64, registry: &Registry) {
    let json = serde_json::to_string(response).expect("responses serialise");
    let payload: Payload = Arc::new(Serialized { json, position });
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
    registry.count_delivered(delivered);
}
