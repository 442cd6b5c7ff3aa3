//! One graphql-ws connection's protocol, in either dialect: messages in, frames out, its close
//! codes. The socket itself (liveness, pings, the timer, batched writes, the close handshake) is
//! [`crate::socket::Connection`]'s; this is the [`Handler`] it drives.
//!
//! Operations run two ways: a subscription that can be shared joins a group of identical ones
//! (`graphql::fanout`) and receives its serialised results through the connection's delivery
//! queue; anything else runs here, as a stream polled by the connection. Both queues mark the
//! connection slow when they overflow, and it is then closed with 1013, never skipped past.

use std::collections::VecDeque;
use std::task::{Context, Poll};

use async_graphql::{Response, ServerError, Variables};
use axum::extract::ws::{Message, WebSocket};
use futures::stream::{self, BoxStream};
use futures::{StreamExt, future};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_stream::StreamMap;
use tracing::{Instrument, debug_span};

use super::protocol::{ClientMessage, Dialect, ServerMessage, SubscribePayload};
use crate::app::AppState;
use crate::auth::{self, User};
use crate::budget::ClientAddr;
use crate::graphql::EventPosition;
use crate::graphql::error::{add_codes, failed_before_execution, too_many_operations};
use crate::graphql::fanout::{self, Delivery, Membership, Resume};
use crate::graphql::guard::{self, OperationKind};
use crate::registry::Permit;
use crate::slow_consumer::{self, Feed, SlowConsumer};
use crate::socket::close::{self, Close};
use crate::socket::{self, Connection, Handler, Incoming, Out};

/// What became of a subscription offered to a shared group.
enum Shared {
    Joined,
    /// Refused at subscribe time: answered with `error`.
    Refused(Vec<ServerError>),
    /// Not one source (or not a subscription after all): run it on this connection.
    NotShareable,
}

enum Operation {
    /// Executed by this connection: queries, mutations, and subscriptions that cannot be shared.
    Local {
        subscription: bool,
        /// Whether anything was sent for it yet: only a first response can become an `error`.
        started: bool,
        /// For a subscription, the log position of the event behind its latest result: 0 while
        /// none came from an event, as for the console's `serverStats`, whose snapshots are not
        /// events and are not counted as delivered ones.
        position: EventPosition,
    },
    /// A member of a shared group (see `graphql::fanout`).
    Shared {
        membership: Membership,
        /// The id, JSON-encoded once, for splicing into `next` frames.
        id_json: String,
        /// While a resuming member replays on its own (its replay is in `streams` under its id),
        /// the group's results wait here; after it, results at or below the seam are dropped.
        resume: Option<Box<Resume>>,
    },
}

pub struct GraphqlWs {
    state: AppState,
    dialect: Dialect,
    /// The client's address: what an anonymous viewer's store reads and replays count against.
    client: ClientAddr,
    header_token: Option<String>,
    /// `connection_init` must arrive by then (else 4408).
    init_deadline: Instant,
    /// `connection_init` has been received (a second one is refused).
    initialised: bool,
    /// `connection_ack` has been sent; `viewer` is who the connection acts for.
    acked: bool,
    viewer: Option<User>,
    expires: Option<Instant>,
    /// The connection's slow-consumer signal, for the queues of the operations it runs.
    consumer: SlowConsumer,
    /// Each local operation's results, then `None` when it completes.
    streams: StreamMap<String, BoxStream<'static, Option<Response>>>,
    operations: Operations,
    /// What the shared groups this connection belongs to send it, and the feed they use.
    deliveries: mpsc::Receiver<Delivery>,
    deliveries_tx: Feed<Delivery>,
    /// Group results released when a resuming member's replay ended, to send before new ones.
    released: VecDeque<Delivery>,
}

/// A connection's operations by id. A vector, not a map: a connection runs a handful at most
/// (`WS_MAX_OPERATIONS` caps it), and an idle connection with one subscription should not carry
/// a hash table's buckets.
#[derive(Default)]
struct Operations(Vec<(String, Operation)>);

impl Operations {
    fn contains(&self, id: &str) -> bool {
        self.0.iter().any(|(i, _)| i == id)
    }

    fn len(&self) -> usize {
        self.0.len()
    }

    fn insert(&mut self, id: String, operation: Operation) {
        // A first push would make room for four (`Vec`'s smallest growth step): most connections
        // hold one subscription for their whole life, so the first gets room for just itself.
        if self.0.capacity() == 0 {
            self.0.reserve_exact(1);
        }
        self.0.push((id, operation));
    }

    fn get_mut(&mut self, id: &str) -> Option<&mut Operation> {
        self.0.iter_mut().find(|(i, _)| i == id).map(|(_, op)| op)
    }

    fn remove(&mut self, id: &str) -> Option<Operation> {
        let at = self.0.iter().position(|(i, _)| i == id)?;
        Some(self.0.swap_remove(at).1)
    }

    /// The id, the JSON-encoded id and the resume state of the shared operation with this
    /// membership.
    fn shared(&mut self, membership: u64) -> Option<(&str, &str, &mut Option<Box<Resume>>)> {
        self.0.iter_mut().find_map(|(id, op)| match op {
            Operation::Shared { membership: m, id_json, resume } if m.id == membership => {
                Some((id.as_str(), id_json.as_str(), resume))
            }
            _ => None,
        })
    }
}

/// Serves one upgraded socket (admitted with `permit`) until it closes; `None` is a client that
/// offered no subprotocol we speak (closed 4406).
///
/// Not an `async fn`: the connection is built before the returned future exists, so the future
/// holds it once rather than beside the arguments it was built from. Every byte of an idle
/// connection's task counts, times tens of thousands.
///
/// The arguments after the socket come as one tuple so that `socket::task_size` can name this
/// function's future in the size test below.
pub fn start(
    socket: WebSocket,
    (state, permit, client, dialect, header_token): (AppState, Permit, ClientAddr, Option<Dialect>, Option<String>),
) -> impl Future<Output = ()> + Send {
    let settings = socket::Settings::new(&state.config, state.shutdown.clone());
    let connection = Connection::new(socket, permit, settings);
    let Some(dialect) = dialect else {
        let refusal = Close::new(close::SUBPROTOCOL_NOT_ACCEPTABLE, "Subprotocol not acceptable");
        return futures::future::Either::Left(Box::pin(connection.refuse(refusal)));
    };
    let protocol = match dialect {
        Dialect::TransportWs => "graphql-transport-ws",
        Dialect::Legacy => "graphql-ws",
    };
    let span = debug_span!("graphql_ws", protocol, user = tracing::field::Empty);
    let consumer = connection.consumer().clone();
    let (deliveries_tx, deliveries) = slow_consumer::queue(state.config.subscriber_queue, &consumer);
    let handler = GraphqlWs {
        init_deadline: Instant::now() + state.config.init_timeout(),
        deliveries,
        deliveries_tx,
        state,
        dialect,
        client,
        header_token,
        initialised: false,
        acked: false,
        viewer: None,
        expires: None,
        consumer,
        streams: StreamMap::new(),
        operations: Operations::default(),
        released: VecDeque::new(),
    };
    futures::future::Either::Right(connection.run(handler).instrument(span))
}

impl Handler for GraphqlWs {
    const SLOW_REASON: &'static str = "subscriber too slow: reconnect and resume with after: <last cursor>";

    async fn on_message(&mut self, message: Incoming, out: &mut Out<'_>) -> Result<(), Close> {
        match message {
            Incoming::Text(text) => self.on_text(out, text.as_str()).await,
            Incoming::Binary(_) => Err(Close::new(close::BAD_REQUEST, "binary frames are not supported")),
        }
    }

    fn poll_outgoing(&mut self, cx: &mut Context<'_>) -> Poll<Message> {
        // Results held during a replay first: they come before anything newer.
        while let Some(delivery) = self.released.pop_front() {
            if let Some(frame) = self.frame_for(delivery) {
                return Poll::Ready(Message::Text(frame.into()));
            }
        }
        // Shared deliveries next: they are the bulk of the traffic, and the cheapest.
        while let Poll::Ready(Some(delivery)) = self.deliveries.poll_recv(cx) {
            if let Some(frame) = self.frame_for(delivery) {
                return Poll::Ready(Message::Text(frame.into()));
            }
        }
        while !self.streams.is_empty() {
            let Poll::Ready(Some((id, item))) = self.streams.poll_next_unpin(cx) else { break };
            if let Some(frame) = self.on_result(id, item) {
                return Poll::Ready(Message::Text(frame.into()));
            }
        }
        Poll::Pending
    }

    fn deadline(&self) -> Option<Instant> {
        if self.initialised { self.expires } else { Some(self.init_deadline) }
    }

    fn on_deadline(&mut self) -> Close {
        if self.initialised {
            Close::new(close::FORBIDDEN, "Forbidden: token expired")
        } else {
            Close::new(close::INIT_TIMEOUT, "Connection initialisation timeout")
        }
    }

    fn on_heartbeat(&mut self, out: &mut Out<'_>) {
        if self.dialect == Dialect::Legacy && self.acked {
            self.send(out, ServerMessage::KeepAlive);
        }
    }
}

impl GraphqlWs {
    fn send(&self, out: &mut Out<'_>, message: ServerMessage<'_>) {
        out.text(message.to_json(self.dialect));
    }

    /// Sends an `error` for one operation, whose errors get codes like every other.
    fn send_error(&self, out: &mut Out<'_>, id: &str, errors: Vec<ServerError>) {
        let mut response = Response::from_errors(errors);
        add_codes(&mut response);
        self.send(out, ServerMessage::Error { id, errors: &response.errors });
    }

    async fn on_text(&mut self, out: &mut Out<'_>, text: &str) -> Result<(), Close> {
        let message = match ClientMessage::parse(self.dialect, text) {
            Ok(message) => message,
            Err(invalid) => {
                metrics::counter!("switchboard_rejected_messages_total", "channel" => "graphql", "reason" => "invalid")
                    .increment(1);
                return match self.dialect {
                    Dialect::TransportWs => Err(Close::new(close::BAD_REQUEST, invalid.to_string())),
                    // subscriptions-transport-ws answers with an error and keeps the socket.
                    Dialect::Legacy => {
                        self.send(out, ServerMessage::ConnectionError(&invalid.to_string()));
                        Ok(())
                    }
                };
            }
        };
        match message {
            ClientMessage::ConnectionInit(payload) => self.on_init(out, payload),
            ClientMessage::Ping(payload) => {
                self.send(out, ServerMessage::Pong(payload.as_ref()));
                Ok(())
            }
            ClientMessage::Pong => Ok(()),
            ClientMessage::Subscribe { id, payload } => self.on_subscribe(out, id, payload).await,
            ClientMessage::Complete { id } => {
                // Stop the source and say nothing more for this id; unknown ids are ignored.
                self.forget(&id);
                Ok(())
            }
            ClientMessage::Terminate => Err(Close::new(close::NORMAL, "terminated")),
        }
    }

    fn on_init(&mut self, out: &mut Out<'_>, payload: Option<serde_json::Value>) -> Result<(), Close> {
        if self.initialised {
            return Err(Close::new(close::TOO_MANY_INITS, "Too many initialisation requests"));
        }
        self.initialised = true;
        let token = payload.as_ref().and_then(auth::token_in_params).or(self.header_token.as_deref());
        if let Some(token) = token {
            let user = match self.state.keys.verify(token) {
                Ok(user) => user,
                Err(refusal) => {
                    let why = refusal.to_string();
                    return Err(self.refuse_init(out, &why, Close::new(close::FORBIDDEN, format!("Forbidden: {why}"))));
                }
            };
            // The user is known only now: their share of connections is checked here, and a
            // user over it is closed with 1013, which graphql-ws clients retry with backoff.
            if let Err(refused) = out.permit().sign_in(&user.id) {
                return Err(self.refuse_init(out, &refused.to_string(), Close::too_many_connections()));
            }
            tracing::Span::current().record("user", user.id.as_str());
            self.expires = Some(user.expiry_deadline());
            self.viewer = Some(user);
        } else if let Err(refused) = out.permit().stay_anonymous() {
            // Admitted on probation from the room kept for signed-in users, and it has no token:
            // 1013, which graphql-ws clients retry with backoff.
            let why = refused.to_string();
            return Err(self.refuse_init(out, &why, Close::new(close::TRY_AGAIN_LATER, why.clone())));
        }
        // Where a subscription made now starts, for a client to subscribe from (`after`) before it
        // has an event of its own: read from the broker, not the store, because every connection
        // pays for it (a store read was +20 % of the CPU of a connection in `switchboard-bench
        // connect`, 221 against 183 µs).
        let commerce = &self.state.commerce;
        let cursor = commerce.log().cursor(commerce.broker().delivered_through());
        self.acked = true;
        self.send(out, ServerMessage::ConnectionAck(&cursor));
        if self.dialect == Dialect::Legacy {
            self.send(out, ServerMessage::KeepAlive);
        }
        Ok(())
    }

    /// `close`, for a refused `connection_init`; the legacy dialect hears why first.
    fn refuse_init(&self, out: &mut Out<'_>, why: &str, close: Close) -> Close {
        if self.dialect == Dialect::Legacy {
            self.send(out, ServerMessage::ConnectionError(why));
        }
        close
    }

    async fn on_subscribe(&mut self, out: &mut Out<'_>, id: String, payload: SubscribePayload) -> Result<(), Close> {
        if !self.acked {
            return match self.dialect {
                Dialect::TransportWs => Err(Close::new(close::UNAUTHORIZED, "Unauthorized")),
                Dialect::Legacy => {
                    let refusal = ServerError::new("send connection_init first", None);
                    self.send_error(out, &id, vec![refusal]);
                    Ok(())
                }
            };
        }
        if self.operations.contains(&id) {
            match self.dialect {
                Dialect::TransportWs => {
                    return Err(Close::new(close::SUBSCRIBER_EXISTS, format!("Subscriber for {id} already exists")));
                }
                // subscriptions-transport-ws replaces the old operation.
                Dialect::Legacy => self.forget(&id),
            }
        }
        let limit = self.state.config.max_operations(self.viewer.is_some());
        if self.operations.len() >= limit {
            self.send_error(out, &id, vec![too_many_operations(limit, self.viewer.is_some())]);
            return Ok(());
        }
        let kind = match guard::check(&payload.query, payload.operation_name.as_deref(), self.state.query_limits) {
            Ok(kind) => kind,
            Err(refusal) => {
                self.send_error(out, &id, vec![refusal]);
                return Ok(());
            }
        };
        let subscription = kind == Some(OperationKind::Subscription);
        if subscription {
            match self.try_share(&id, &payload).await {
                Shared::Joined => return Ok(()),
                Shared::Refused(errors) => {
                    self.send_error(out, &id, errors);
                    return Ok(());
                }
                Shared::NotShareable => {}
            }
        }
        let position = EventPosition::default();
        let request = self.request(&payload).data(self.consumer.clone()).data(position.clone());
        let results = self.state.schema.execute_stream(request).map(Some).chain(stream::once(future::ready(None)));
        self.streams.insert(id.clone(), results.boxed());
        self.operations.insert(id, Operation::Local { subscription, started: false, position });
        Ok(())
    }

    fn request(&self, payload: &SubscribePayload) -> async_graphql::Request {
        request(&self.viewer, self.client, payload)
    }

    /// Offers the subscription to a shared group (see `Fanout::share`). A resuming member replays
    /// on its own, then takes the group's results from the seam on.
    async fn try_share(&mut self, id: &str, payload: &SubscribePayload) -> Shared {
        let operation = fanout::Operation {
            query: &payload.query,
            operation_name: payload.operation_name.as_deref(),
            variables: payload.variables.as_ref(),
        };
        let state = &self.state;
        let deliveries = self.deliveries_tx.clone();
        let (viewer, client) = (&self.viewer, self.client);
        let shared = state.fanout.share(
            &state.schema,
            &state.registry,
            operation,
            || request(viewer, client, payload),
            deliveries,
            true,
        );
        match shared.await {
            fanout::Shared::Joined(membership, replaying) => {
                let id_json = serde_json::to_string(id).expect("strings serialise");
                let resume = replaying.map(|replaying| {
                    self.streams.insert(id.to_owned(), replaying.replay);
                    replaying.resume
                });
                self.operations.insert(id.to_owned(), Operation::Shared { membership, id_json, resume });
                Shared::Joined
            }
            fanout::Shared::Refused(errors) => Shared::Refused(errors),
            fanout::Shared::NotShareable => Shared::NotShareable,
        }
    }

    /// Ends an operation on our side, whatever its kind.
    fn forget(&mut self, id: &str) {
        self.streams.remove(id);
        self.operations.remove(id);
    }

    /// The frame a delivery becomes, if its operation is still ours and not replaying.
    fn frame_for(&mut self, delivery: Delivery) -> Option<String> {
        let (id, id_json, resume) = self.operations.shared(delivery.membership)?;
        if let Some(resume) = resume {
            if resume.replaying() {
                if !resume.hold(delivery) {
                    self.consumer.mark_slow(); // the replay is too long for what arrives meanwhile
                }
                return None;
            }
            if !resume.admits(&delivery) {
                return None; // published after the replay had read it from the log
            }
        }
        match delivery.payload {
            Some(payload) => {
                let kind = if self.dialect == Dialect::Legacy { "data" } else { "next" };
                let parts = ["{\"id\":", id_json, ",\"type\":\"", kind, "\",\"payload\":", payload.as_str(), "}"];
                // Exactly the length: a `Vec` whose capacity is its length becomes `Bytes`
                // (tungstenite's frame payload) without another allocation.
                let mut frame = String::with_capacity(parts.iter().map(|p| p.len()).sum());
                parts.iter().for_each(|p| frame.push_str(p));
                Some(frame)
            }
            None => {
                let id = id.to_owned();
                self.forget(&id);
                Some(ServerMessage::Complete { id: &id }.to_json(self.dialect))
            }
        }
    }

    /// The frame a local operation's result (or a resuming member's replay) becomes, if any.
    fn on_result(&mut self, id: String, item: Option<Response>) -> Option<String> {
        let Some(mut response) = item else {
            if let Some(Operation::Shared { resume, .. }) = self.operations.get_mut(&id) {
                // The replay is over: release what the group sent meanwhile, past the seam; or,
                // if the subscription ended inside the replay, end it.
                let resume = resume.as_mut().filter(|r| r.replaying())?;
                if resume.seam.exhausted() {
                    let released = resume.finish();
                    self.released.extend(released);
                    return None;
                }
                self.operations.remove(&id);
                return Some(ServerMessage::Complete { id: &id }.to_json(self.dialect));
            }
            // The source ended: `complete`, unless the client already completed it.
            self.operations.remove(&id)?;
            return Some(ServerMessage::Complete { id: &id }.to_json(self.dialect));
        };
        add_codes(&mut response);
        let (subscription, first, event) = match self.operations.get_mut(&id)? {
            Operation::Local { subscription, started, position } => {
                (*subscription, !std::mem::replace(started, true), position.get() > 0)
            }
            Operation::Shared { resume: Some(resume), .. } => {
                let first = !resume.replayed;
                resume.replayed = true;
                (true, first, true)
            }
            Operation::Shared { .. } => return None,
        };
        if first && failed_before_execution(&response, subscription) {
            // An `error` ends the operation; no `complete` follows it.
            self.operations.remove(&id);
            self.streams.remove(&id);
            return Some(ServerMessage::Error { id: &id, errors: &response.errors }.to_json(self.dialect));
        }
        if subscription && event {
            metrics::counter!("switchboard_events_delivered_total", "channel" => "graphql").increment(1);
            self.state.registry.count_delivered(1);
        }
        Some(ServerMessage::Next { id: &id, payload: &response }.to_json(self.dialect))
    }
}

/// The request that runs `payload` for `viewer`, from `client`.
fn request(viewer: &Option<User>, client: ClientAddr, payload: &SubscribePayload) -> async_graphql::Request {
    let mut request = async_graphql::Request::new(payload.query.clone()).data(viewer.clone()).data(client);
    request.operation_name = payload.operation_name.clone();
    if let Some(variables) = &payload.variables {
        request.variables = Variables::from_json(variables.clone());
    }
    request
}

#[cfg(test)]
mod tests {
    /// An idle connection's task is this future and nothing else: nothing it holds while idle is
    /// boxed (see `socket::Connection::run`), so this is every byte of it. 1,496 bytes when
    /// measured (it was 4.1 KB before the handlers were boxed and `start` stopped holding its
    /// arguments twice); the limit leaves room for little more.
    #[test]
    fn an_idle_connection_task_stays_small() {
        let size = crate::socket::task_size(&super::start);
        assert!(size <= 1600, "an idle graphql-ws connection's task grew to {size} bytes");
    }

    /// A connection with one subscription keeps room for one operation, not `Vec`'s usual four
    /// (≈ 0.7 KB of an idle connection's heap); later ones grow as usual.
    #[test]
    fn one_operation_takes_room_for_one() {
        let local = || super::Operation::Local { subscription: true, started: false, position: Default::default() };
        let mut operations = super::Operations::default();
        operations.insert("1".into(), local());
        assert_eq!(operations.0.capacity(), 1);
        operations.insert("2".into(), local());
        operations.insert("3".into(), local());
        assert!(operations.contains("3") && operations.len() == 3);
        assert!(operations.0.capacity() >= 3);
    }
}
