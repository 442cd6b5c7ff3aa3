//! The one operation runner: what an operation *is*, from a prepared request to the item handed
//! to a transport, for every transport (graphql-ws in both dialects, SSE in both modes). A
//! transport only frames and writes what [`Operations::poll_next`] gives it.
//!
//! - Identity and limits: each operation runs for its viewer, from its client's address (what an
//!   anonymous viewer's store reads and replays count against), and a connection runs at most
//!   `WS_MAX_OPERATIONS` (`WS_MAX_OPERATIONS_ANONYMOUS` without a user) at once.
//! - The guard: requests are checked and parsed by [`Documents`], once per distinct text.
//! - Authorisation is the resolvers'; sharing is decided here, outside them: every subscription
//!   runs with an [`EventSource`], and once its resolver has asked for the events of a key, it
//!   joins the shared group for that key (`super::fanout`), resuming through a shared replay
//!   when it has a cursor. Anything else (queries, mutations, the console's subscriptions, a
//!   refusal) runs on its own, polled here.
//! - The seam: a resuming member's group results wait until its replay is out, and those at or
//!   below the replay's head are dropped.
//! - Slow consumers: every queue feeding a connection marks its [`SlowConsumer`], which the
//!   transport watches.
//! - Counting: an event's result is counted as delivered when it is handed to the transport,
//!   here and nowhere else, under the transport's channel.

use std::collections::VecDeque;
use std::sync::Arc;
use std::task::{Context, Poll};

use async_graphql::{PathSegment, Response, ServerError};
use futures::StreamExt;
use futures::stream::BoxStream;
use tokio::sync::mpsc;

use super::documents::{Documents, Prepared};
use super::error::{ApiError, add_codes, failed_before_execution, to_json, too_many_operations};
use super::fanout::{Delivery, Execution, Fanout, GroupKey, MemberReplay, Membership, Payload, ReplaySlot, Resuming};
use super::schema::AppSchema;
use super::source::EventSource;
use crate::auth::Viewer;
use crate::commerce::Commerce;
use crate::connections::budget::ClientAddr;
use crate::connections::{Connections, SubscriptionGuard};
use crate::events::slow_consumer::{self, Feed, SlowConsumer};
use crate::store::Reader;

/// What every transport runs operations with; one per server, cheap to clone.
#[derive(Clone)]
pub struct Runner(Arc<Inner>);

struct Inner {
    schema: AppSchema,
    documents: Documents,
    fanout: Fanout,
    commerce: Arc<Commerce>,
    connections: Connections,
    /// Room in each connection's queue of shared results, and in a resuming member's buffer.
    queue: usize,
    /// `WS_MAX_OPERATIONS`, and `WS_MAX_OPERATIONS_ANONYMOUS`.
    max_operations: (usize, usize),
    /// The subscription fields that take `after`: those whose resolvers return the events of a
    /// key from their [`EventSource`] (see [`event_fields`]).
    event_fields: Vec<String>,
}

/// Which transport results are handed to: what they are counted under
/// (`switchboard_events_delivered_total{channel}`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Channel {
    /// graphql-ws, both dialects.
    GraphqlWs,
    Sse,
}

impl Channel {
    pub fn label(self) -> &'static str {
        match self {
            Channel::GraphqlWs => "graphql",
            Channel::Sse => "sse",
        }
    }
}

/// An operation to start: a prepared request, its variables, and who it runs for.
pub struct Start {
    pub prepared: Prepared,
    /// The variables as JSON (`Null` when there are none).
    pub variables: serde_json::Value,
    pub viewer: Viewer,
    /// Where the request came from.
    pub client: ClientAddr,
    /// The cursor a subscription resumes from when its field has no `after` (SSE's
    /// `Last-Event-ID`).
    pub resume_from: Option<String>,
}

impl Start {
    fn reader(&self) -> Reader {
        match self.viewer {
            Some(_) => Reader::SignedIn,
            None => Reader::Anonymous(self.client.0),
        }
    }
}

/// What an operation produced, for its transport to frame.
#[derive(Debug)]
pub enum Output {
    Next {
        id: Arc<str>,
        result: Json,
        /// The log position of the event the result came from; 0 for none.
        position: u64,
    },
    /// Refused before anything ran (the guard, a limit, the viewer's checks at subscribe time, a
    /// cursor that cannot be served): graphql-ws answers `error`, SSE a `next` with the errors and
    /// `complete`.
    Refused {
        id: Arc<str>,
        errors: Vec<ServerError>,
    },
    Complete {
        id: Arc<str>,
    },
}

/// A serialised execution result: shared by a group, or this operation's own.
#[derive(Debug)]
pub enum Json {
    Shared(Payload),
    Own(String),
}

impl Json {
    pub fn as_str(&self) -> &str {
        match self {
            Json::Shared(payload) => payload.as_str(),
            Json::Own(json) => json,
        }
    }

    /// A result made of errors alone.
    pub fn errors(errors: Vec<ServerError>) -> Self {
        let mut response = Response::from_errors(errors);
        add_codes(&mut response);
        Json::Own(to_json(&response))
    }
}

impl Runner {
    pub fn new(
        schema: AppSchema,
        documents: Documents,
        fanout: Fanout,
        commerce: Arc<Commerce>,
        connections: Connections,
        config: &crate::config::Config,
    ) -> Self {
        let max_operations = (config.max_operations(true), config.max_operations(false));
        let queue = config.subscriber_queue.max(1);
        let event_fields = event_fields(&schema.sdl());
        Self(Arc::new(Inner { schema, documents, fanout, commerce, connections, queue, max_operations, event_fields }))
    }

    pub fn schema(&self) -> &AppSchema {
        &self.0.schema
    }

    pub fn documents(&self) -> &Documents {
        &self.0.documents
    }

    pub fn fanout(&self) -> &Fanout {
        &self.0.fanout
    }

    /// Checks and parses a request's text (once per distinct text) and selects its operation.
    pub fn prepare(&self, query: &str, operation_name: Option<&str>) -> Result<Prepared, ServerError> {
        self.0.documents.prepare(query, operation_name)
    }

    /// The cursor of a log position.
    pub fn cursor(&self, position: u64) -> String {
        self.0.commerce.log().cursor(position)
    }

    /// The log position of a cursor this log wrote.
    pub fn position_of(&self, cursor: &str) -> Result<u64, crate::events::log::ResumeError> {
        self.0.commerce.log().position_of(cursor)
    }

    /// Where a subscription made now starts (what `connection_ack` carries): read from the
    /// broker, not the store, because every connection pays for it (a store read was +20 % of
    /// the CPU of a connection in `switchboard-bench connect`, 221 against 183 µs).
    pub fn head_cursor(&self) -> String {
        self.cursor(self.0.commerce.broker().delivered_through())
    }

    /// How many operations one connection may run at once.
    pub fn max_operations(&self, signed_in: bool) -> usize {
        if signed_in { self.0.max_operations.0 } else { self.0.max_operations.1 }
    }

    /// Runs a query or mutation to its one response (GraphQL over HTTP).
    pub async fn execute(&self, start: &Start) -> Response {
        let mut response = self.0.schema.execute(self.request(start, None)).await;
        add_codes(&mut response);
        response
    }

    fn request(&self, start: &Start, source: Option<&EventSource>) -> async_graphql::Request {
        let request = start.prepared.request(&start.variables).data(start.viewer.clone()).data(start.client);
        match source {
            Some(source) => request.data(source.clone()),
            None => request,
        }
    }

    /// A subscription's execution, with an event source of its own.
    fn execution(&self, start: &Start) -> Execution {
        let source = EventSource::new(start.resume_from.clone());
        let results = self.0.schema.execute_stream(self.request(start, Some(&source)));
        Execution { results, source }
    }
}

/// The subscription fields of `sdl` that take an `after` argument: every field that streams
/// events does (the contract: any of them resumes from a cursor), and nothing else.
fn event_fields(sdl: &str) -> Vec<String> {
    use async_graphql::parser::types::{TypeKind, TypeSystemDefinition};
    let Ok(document) = async_graphql::parser::parse_schema(sdl) else { return Vec::new() };
    document
        .definitions
        .iter()
        .filter_map(|definition| match definition {
            TypeSystemDefinition::Type(t) if t.node.name.node == "Subscription" => match &t.node.kind {
                TypeKind::Object(object) => Some(object),
                _ => None,
            },
            _ => None,
        })
        .flat_map(|object| &object.fields)
        .filter(|field| field.node.arguments.iter().any(|a| a.node.name.node == "after"))
        .map(|field| field.node.name.node.to_string())
        .collect()
}

/// One connection's operations (a graphql-ws socket, a distinct-connections SSE stream, a
/// single-connection reservation); see the module docs.
pub struct Operations {
    runner: Runner,
    channel: Channel,
    consumer: SlowConsumer,
    operations: Vec<(Arc<str>, Operation)>,
    /// What the shared groups this connection belongs to send it, and the feed they use.
    deliveries: mpsc::Receiver<Delivery>,
    feed: Feed<Delivery>,
    /// Outputs decided outside any stream (a refusal at start), sent first.
    ready: VecDeque<Output>,
}

enum Operation {
    /// Executed here: queries, mutations, subscriptions whose resolver has not asked for a key
    /// yet (or never does: the console's), refusals.
    Own {
        results: BoxStream<'static, Response>,
        /// A subscription's source and what started it, until it joins a group.
        subscription: Option<(EventSource, Box<Start>)>,
        /// Whether anything was sent for it yet: only a first response can be a refusal.
        started: bool,
        /// Counts a subscription while it is live: from its start for one that streams no
        /// events of a key (the console's), from joining its group for one that does.
        _counted: Option<SubscriptionGuard>,
    },
    /// A member of a shared group.
    Shared {
        membership: Membership,
        /// The head of the log its replay was read up to: group results at or below it are in
        /// the replay (0 for a member that did not resume).
        seam: u64,
        resume: Option<Box<Resume>>,
        _counted: SubscriptionGuard,
    },
}

/// A resuming member until its replay, and what the group sent meanwhile, are out.
struct Resume {
    slot: Arc<ReplaySlot>,
    /// The replay's results still to send (`None` until it is ready).
    replay: Option<VecDeque<Payload>>,
    /// The group's results that came meanwhile.
    held: VecDeque<Delivery>,
    /// The subscription ended inside the replay.
    ended: bool,
}

impl Operations {
    /// No operations yet; the queues mark `consumer` slow when they overflow.
    pub fn new(runner: Runner, channel: Channel, consumer: SlowConsumer) -> Self {
        let (feed, deliveries) = slow_consumer::queue(runner.0.queue, &consumer);
        Self { runner, channel, consumer, operations: Vec::new(), deliveries, feed, ready: VecDeque::new() }
    }

    pub fn runner(&self) -> &Runner {
        &self.runner
    }

    pub fn consumer(&self) -> &SlowConsumer {
        &self.consumer
    }

    pub fn contains(&self, id: &str) -> bool {
        self.operations.iter().any(|(i, _)| &**i == id)
    }

    /// How many operations are running.
    pub fn len(&self) -> usize {
        self.operations.len()
    }

    pub fn is_empty(&self) -> bool {
        self.operations.is_empty()
    }

    /// The ids of the operations running.
    pub fn ids(&self) -> Vec<Arc<str>> {
        self.operations.iter().map(|(id, _)| id.clone()).collect()
    }

    /// Starts an operation under `id` (which the caller made sure is free), or refuses it past
    /// the connection's limit. A subscription to events is settled before this returns: its
    /// resolver has checked the viewer and it has joined its group (or been refused), so that
    /// the next message the transport handles finds it live, as it finds a query started.
    pub async fn start(&mut self, id: Arc<str>, start: Start) {
        let signed_in = start.viewer.is_some();
        let limit = self.runner.max_operations(signed_in);
        if self.operations.len() >= limit {
            return self.refuse(id, vec![too_many_operations(limit, signed_in)]);
        }
        let operation = match start.prepared.root_field() {
            Some(field) => {
                let events = self.runner.0.event_fields.iter().any(|f| *f == field.name.as_str());
                let counted = (!events).then(|| self.runner.0.connections.subscription_of(&field.name));
                let Execution { results, source } = self.runner.execution(&start);
                let subscription = Some((source, Box::new(start)));
                Operation::Own { results, subscription, started: false, _counted: counted }
            }
            None => {
                let results = self.runner.0.schema.execute_stream(self.runner.request(&start, None));
                Operation::Own { results, subscription: None, started: false, _counted: None }
            }
        };
        // A first push would make room for four (`Vec`'s smallest growth step): most connections
        // hold one subscription for their whole life, so the first gets room for just itself.
        if self.operations.capacity() == 0 {
            self.operations.reserve_exact(1);
        }
        self.operations.push((id.clone(), operation));
        std::future::poll_fn(|cx| self.settle(&id, cx)).await;
    }

    /// Runs a new operation until it is settled: a subscription to events until its resolver
    /// has asked for its key (it then joins its group) or refused; anything else for one turn.
    /// What it produces meanwhile waits in `ready`.
    fn settle(&mut self, id: &str, cx: &mut Context<'_>) -> Poll<()> {
        let Some(at) = self.operations.iter().position(|(i, _)| &**i == id) else { return Poll::Ready(()) };
        let (id, Operation::Own { results, subscription, started, _counted }) = &mut self.operations[at] else {
            return Poll::Ready(());
        };
        let awaits_key = subscription.is_some() && _counted.is_none();
        match results.poll_next_unpin(cx) {
            Poll::Ready(Some(mut response)) => {
                add_codes(&mut response);
                let id = id.clone();
                let first = !std::mem::replace(started, true);
                let output = if first && failed_before_execution(&response, subscription.is_some()) {
                    self.operations.swap_remove(at);
                    Output::Refused { id, errors: response.errors }
                } else {
                    Output::Next { id, result: Json::Own(to_json(&response)), position: 0 }
                };
                self.ready.push_back(output);
                Poll::Ready(())
            }
            Poll::Ready(None) => {
                let id = id.clone();
                self.operations.swap_remove(at);
                self.ready.push_back(Output::Complete { id });
                Poll::Ready(())
            }
            Poll::Pending if subscription.as_ref().is_some_and(|(source, _)| source.asked().is_some()) => {
                if let Some(refusal) = self.share(at) {
                    self.ready.push_back(refusal);
                }
                Poll::Ready(())
            }
            Poll::Pending if awaits_key => Poll::Pending,
            Poll::Pending => Poll::Ready(()),
        }
    }

    /// Answers `id` with `errors` without running anything.
    pub fn refuse(&mut self, id: Arc<str>, errors: Vec<ServerError>) {
        self.ready.push_back(Output::Refused { id, errors });
    }

    /// Stops an operation; nothing more is sent for it. False when there was none.
    pub fn stop(&mut self, id: &str) -> bool {
        self.remove(id).is_some()
    }

    fn remove(&mut self, id: &str) -> Option<Operation> {
        let at = self.operations.iter().position(|(i, _)| &**i == id)?;
        Some(self.operations.swap_remove(at).1)
    }

    /// The next output of any operation, counted as delivered when it is an event's result.
    pub fn poll_next(&mut self, cx: &mut Context<'_>) -> Poll<Output> {
        let output = std::task::ready!(self.poll_output(cx));
        if let Output::Next { position, .. } = &output
            && *position > 0
        {
            self.runner.0.connections.count_delivered(self.channel.label(), 1);
        }
        Poll::Ready(output)
    }

    fn poll_output(&mut self, cx: &mut Context<'_>) -> Poll<Output> {
        if let Some(output) = self.ready.pop_front() {
            return Poll::Ready(output);
        }
        // Resuming members' replays, and what their groups sent meanwhile, before anything newer.
        if let Some(output) = self.poll_resumes(cx) {
            return Poll::Ready(output);
        }
        // Shared deliveries next: they are the bulk of the traffic, and the cheapest.
        while let Poll::Ready(Some(delivery)) = self.deliveries.poll_recv(cx) {
            if let Some(output) = self.on_delivery(delivery) {
                return Poll::Ready(output);
            }
        }
        self.poll_own(cx)
    }

    fn poll_resumes(&mut self, cx: &mut Context<'_>) -> Option<Output> {
        for at in 0..self.operations.len() {
            let (id, Operation::Shared { seam, resume: Some(resume), .. }) = &mut self.operations[at] else { continue };
            let replay = match &mut resume.replay {
                Some(replay) => replay,
                None => match resume.slot.poll_take(cx) {
                    Poll::Pending => continue,
                    Poll::Ready(MemberReplay::Refused(errors)) => {
                        let id = id.clone();
                        self.operations.swap_remove(at);
                        return Some(Output::Refused { id, errors });
                    }
                    Poll::Ready(MemberReplay::Replayed { payloads, through, ended }) => {
                        *seam = through;
                        resume.ended = ended;
                        resume.replay.insert(payloads.into())
                    }
                },
            };
            if let Some(payload) = replay.pop_front() {
                let position = payload.position;
                return Some(Output::Next { id: id.clone(), result: Json::Shared(payload), position });
            }
            if resume.ended {
                let id = id.clone();
                self.operations.swap_remove(at);
                return Some(Output::Complete { id });
            }
            // The replay is out: what the group sent meanwhile, past the seam; then live.
            while let Some(delivery) = resume.held.pop_front() {
                match delivery.payload {
                    Some(payload) if payload.position > *seam => {
                        let position = payload.position;
                        return Some(Output::Next { id: id.clone(), result: Json::Shared(payload), position });
                    }
                    Some(_) => {}
                    None => {
                        let id = id.clone();
                        self.operations.swap_remove(at);
                        return Some(Output::Complete { id });
                    }
                }
            }
            if let (_, Operation::Shared { resume, .. }) = &mut self.operations[at] {
                *resume = None;
            }
        }
        None
    }

    /// The output a group's delivery becomes, if its operation is still running and live.
    fn on_delivery(&mut self, delivery: Delivery) -> Option<Output> {
        let at = self.operations.iter().position(
            |(_, op)| matches!(op, Operation::Shared { membership, .. } if membership.id == delivery.membership),
        )?;
        let (id, Operation::Shared { seam, resume, .. }) = &mut self.operations[at] else { return None };
        if let Some(resume) = resume {
            if resume.held.len() >= self.runner.0.queue {
                self.consumer.mark_slow(); // the replay is too long for what arrives meanwhile
            } else {
                resume.held.push_back(delivery);
            }
            return None;
        }
        match delivery.payload {
            // At or below the seam: published after the replay had read it from the log.
            Some(payload) if payload.position <= *seam => None,
            Some(payload) => {
                let position = payload.position;
                Some(Output::Next { id: id.clone(), result: Json::Shared(payload), position })
            }
            None => {
                let id = id.clone();
                self.operations.swap_remove(at);
                Some(Output::Complete { id })
            }
        }
    }

    fn poll_own(&mut self, cx: &mut Context<'_>) -> Poll<Output> {
        let mut at = 0;
        while at < self.operations.len() {
            let (id, Operation::Own { results, subscription, started, .. }) = &mut self.operations[at] else {
                at += 1;
                continue;
            };
            match results.poll_next_unpin(cx) {
                Poll::Ready(Some(mut response)) => {
                    add_codes(&mut response);
                    let id = id.clone();
                    let first = !std::mem::replace(started, true);
                    if first && failed_before_execution(&response, subscription.is_some()) {
                        self.operations.swap_remove(at);
                        return Poll::Ready(Output::Refused { id, errors: response.errors });
                    }
                    return Poll::Ready(Output::Next { id, result: Json::Own(to_json(&response)), position: 0 });
                }
                Poll::Ready(None) => {
                    let id = id.clone();
                    self.operations.swap_remove(at);
                    return Poll::Ready(Output::Complete { id });
                }
                Poll::Pending => {
                    if subscription.as_ref().is_some_and(|(source, _)| source.asked().is_some()) {
                        if let Some(output) = self.share(at) {
                            return Poll::Ready(output);
                        }
                        // A resuming member's replay may be ready at once.
                        if let Some(output) = self.poll_resumes(cx) {
                            return Poll::Ready(output);
                        }
                    }
                    at += 1;
                }
            }
        }
        Poll::Pending
    }

    /// The subscription at `at` has asked for the events of a key: it joins the group for that
    /// key, and the replay for its cursor when it resumes. Returns its refusal when the cursor is
    /// not one.
    fn share(&mut self, at: usize) -> Option<Output> {
        let (id, operation) = self.operations.swap_remove(at);
        let Operation::Own { results, subscription: Some((source, start)), .. } = operation else {
            unreachable!("only a subscription is shared")
        };
        let asked = source.asked().expect("asked");
        let field = start.prepared.root_field().expect("a subscription has a root field");
        let log = self.runner.0.commerce.log();
        let after = match asked.after.as_deref().map(|cursor| log.position_of(cursor)).transpose() {
            Ok(after) => after,
            Err(refused) => {
                let error = async_graphql::Error::from(ApiError::from(refused))
                    .into_server_error(field.pos)
                    .with_path(vec![PathSegment::Field(field.name.to_string())]);
                return Some(Output::Refused { id, errors: vec![error] });
            }
        };
        let document = &start.prepared.document;
        let key = GroupKey::new(
            document.text.clone(),
            start.prepared.operation_name.clone(),
            &start.variables,
            field.after_variable.as_deref(),
            asked.key,
        );
        let runner = &self.runner;
        let resuming = after.map(|after| Resuming {
            after,
            reader: start.reader(),
            field: field.clone(),
            execution: || runner.execution(&start),
        });
        let joined = runner.0.fanout.join(key, Execution { results, source }, self.feed.clone(), resuming);
        let resume =
            joined.replay.map(|slot| Box::new(Resume { slot, replay: None, held: VecDeque::new(), ended: false }));
        let counted = self.runner.0.connections.subscription_of(&field.name);
        let shared = Operation::Shared { membership: joined.membership, seam: 0, resume, _counted: counted };
        self.operations.push((id, shared));
        let last = self.operations.len() - 1;
        self.operations.swap(at, last);
        None
    }
}

impl std::fmt::Debug for Operations {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Operations").field("running", &self.operations.len()).finish()
    }
}

#[cfg(test)]
mod tests {
    /// A connection with one subscription keeps room for one operation, not `Vec`'s usual four.
    #[test]
    fn an_operation_is_small() {
        let size = std::mem::size_of::<super::Operation>();
        assert!(size <= 192, "an operation grew to {size} bytes");
    }
}
