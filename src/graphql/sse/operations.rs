//! The operations one event stream carries (one in distinct-connections mode, any number behind a
//! single-connection reservation), run the way the graphql-ws transport runs them: a subscription
//! that can be shared joins its group (`graphql::fanout`) and receives the group's serialised
//! results through this runner's delivery queue; anything else executes here, as a stream that
//! the owner polls. Both queues mark the owner's [`SlowConsumer`] when they overflow.
//!
//! Every result comes out as an [`Output`] with the log position of the event it came from, so
//! that the stream can send that event's cursor as the SSE `id:`.

use std::collections::VecDeque;
use std::sync::Arc;
use std::task::{Context, Poll};

use async_graphql::{Response, ServerError};
use futures::stream::{self, BoxStream};
use futures::{StreamExt, future};
use tokio::sync::mpsc;
use tokio_stream::StreamMap;

use crate::app::AppState;
use crate::auth::Viewer;
use crate::budget::ClientAddr;
use crate::graphql::error::{add_codes, to_json};
use crate::graphql::fanout::{self, Delivery, Membership, Payload, Shared};
use crate::graphql::guard::OperationKind;
use crate::graphql::{EventPosition, ResumeFrom};
use crate::slow_consumer::{self, Feed, SlowConsumer};

/// An operation as the client sent it, checked by the guard.
pub struct Operation {
    pub query: String,
    pub operation_name: Option<String>,
    /// The variables as JSON (`Null` when there are none).
    pub variables: serde_json::Value,
    pub kind: OperationKind,
    pub viewer: Viewer,
    /// Where the request came from.
    pub client: ClientAddr,
    /// The cursor in `Last-Event-ID`, if the request carried one.
    pub resume: Option<String>,
}

impl Operation {
    fn request(&self) -> async_graphql::Request {
        let mut request = async_graphql::Request::new(self.query.clone()).data(self.viewer.clone()).data(self.client);
        request.operation_name = self.operation_name.clone();
        if !self.variables.is_null() {
            request.variables = async_graphql::Variables::from_json(self.variables.clone());
        }
        if let Some(cursor) = &self.resume {
            request = request.data(ResumeFrom(cursor.clone()));
        }
        request
    }
}

/// What an operation produced.
pub enum Output {
    Next {
        id: Arc<str>,
        result: Json,
        /// The log position of the event the result came from; 0 for none.
        position: u64,
    },
    Complete {
        id: Arc<str>,
    },
}

/// A serialised execution result: shared by a group, or this stream's own.
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

type Results = BoxStream<'static, Option<(Response, u64)>>;

/// One stream's operations by id; see the module docs.
pub struct Operations {
    state: AppState,
    consumer: SlowConsumer,
    /// Executed here: queries, mutations, subscriptions that cannot be shared. Each stream ends
    /// with `None`.
    local: StreamMap<Arc<str>, Results>,
    /// Shared subscriptions, by membership.
    shared: Vec<(Arc<str>, Membership)>,
    deliveries: mpsc::Receiver<Delivery>,
    deliveries_tx: Feed<Delivery>,
    /// Outputs decided outside a stream (a refusal at subscribe time), sent first.
    ready: VecDeque<Output>,
}

impl Operations {
    /// An empty runner whose queues mark `consumer` slow when they overflow.
    pub fn new(state: AppState, consumer: SlowConsumer) -> Self {
        let (deliveries_tx, deliveries) = slow_consumer::queue(state.config.subscriber_queue, &consumer);
        Self {
            state,
            consumer,
            local: StreamMap::new(),
            shared: Vec::new(),
            deliveries,
            deliveries_tx,
            ready: VecDeque::new(),
        }
    }

    pub fn consumer(&self) -> &SlowConsumer {
        &self.consumer
    }

    pub fn contains(&self, id: &str) -> bool {
        self.local.contains_key(id) || self.shared.iter().any(|(i, _)| &**i == id)
    }

    /// How many operations are running.
    pub fn len(&self) -> usize {
        self.local.len() + self.shared.len()
    }

    /// The ids of the operations running.
    pub fn ids(&self) -> Vec<Arc<str>> {
        self.local.keys().cloned().chain(self.shared.iter().map(|(id, _)| id.clone())).collect()
    }

    /// Starts `operation` under `id` (which the caller made sure is free).
    pub async fn start(&mut self, id: Arc<str>, operation: Operation) {
        // A resuming subscription is never shared (the probe would find no source), so it is not
        // probed either.
        if operation.kind == OperationKind::Subscription && operation.resume.is_none() {
            let key = fanout::Operation {
                query: &operation.query,
                operation_name: operation.operation_name.as_deref(),
                variables: Some(&operation.variables),
            };
            let state = &self.state;
            let deliveries = self.deliveries_tx.clone();
            // No replay beside a membership here yet: a subscription resuming with `after` runs
            // on this stream (`resumes: false`).
            let shared =
                state.fanout.share(&state.schema, &state.registry, key, || operation.request(), deliveries, false);
            match shared.await {
                Shared::Joined(membership, _) => {
                    // Room for one at first, not the four a first push makes: a membership is
                    // 184 bytes, and most streams hold one for their whole life (every
                    // distinct-connections stream does), so an idle subscriber would carry 552
                    // bytes of empty slots. Later pushes grow the usual way.
                    if self.shared.capacity() == 0 {
                        self.shared.reserve_exact(1);
                    }
                    self.shared.push((id, membership));
                    return;
                }
                Shared::Refused(errors) => {
                    self.refuse(id, errors);
                    return;
                }
                Shared::NotShareable => {}
            }
        }
        let position = EventPosition::default();
        let request = operation.request().data(self.consumer.clone()).data(position.clone());
        let results = self
            .state
            .schema
            .execute_stream(request)
            .map(move |response| Some((response, position.get())))
            .chain(stream::once(future::ready(None)));
        self.local.insert(id, results.boxed());
    }

    /// Answers `id` with `errors` and completes it, without running anything: a refusal made
    /// before execution, which the protocol sends as a `next`.
    pub fn refuse(&mut self, id: Arc<str>, errors: Vec<ServerError>) {
        self.ready.push_back(Output::Next { id: id.clone(), result: Json::errors(errors), position: 0 });
        self.ready.push_back(Output::Complete { id });
    }

    /// The cursor of a log position (none for 0: a result that came from no event).
    pub fn cursor(&self, position: u64) -> Option<String> {
        (position > 0).then(|| self.state.commerce.log().cursor(position))
    }

    /// Stops an operation; nothing more is sent for it. False when there was none.
    pub fn stop(&mut self, id: &str) -> bool {
        let local = self.local.remove(id).is_some();
        let before = self.shared.len();
        self.shared.retain(|(i, _)| &**i != id);
        local || self.shared.len() != before
    }

    /// The next output of any operation.
    pub fn poll_next(&mut self, cx: &mut Context<'_>) -> Poll<Output> {
        if let Some(output) = self.ready.pop_front() {
            return Poll::Ready(output);
        }
        // Shared deliveries first: they are the bulk of the traffic, and the cheapest.
        while let Poll::Ready(Some(delivery)) = self.deliveries.poll_recv(cx) {
            let Some(at) = self.shared.iter().position(|(_, m)| m.id == delivery.membership) else { continue };
            return Poll::Ready(match delivery.payload {
                Some(payload) => {
                    let id = self.shared[at].0.clone();
                    let position = payload.position;
                    Output::Next { id, result: Json::Shared(payload), position }
                }
                None => Output::Complete { id: self.shared.swap_remove(at).0 },
            });
        }
        if let Poll::Ready(Some((id, item))) = self.local.poll_next_unpin(cx) {
            return Poll::Ready(match item {
                Some((mut response, position)) => {
                    add_codes(&mut response);
                    if position > 0 {
                        // Shared results are counted by their group; this one is the stream's own.
                        self.state.registry.count_delivered(1);
                    }
                    Output::Next { id, result: Json::Own(to_json(&response)), position }
                }
                None => {
                    self.local.remove(&id);
                    Output::Complete { id }
                }
            });
        }
        Poll::Pending
    }
}
